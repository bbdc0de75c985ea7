#pragma once
// The base of Quilt's user-facing error types (no LibTorch, no MPI).

#include <stdexcept>

namespace quilt::common {

/// A user's mistake (bad file, bad value, missing data) rather than a bug. Each folder derives its
/// own type (results::ResultsError, partitioners::PartitionError, ...); the message names the
/// file, key or value at fault and what would be valid. The CLI prints it and exits 2.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace quilt::common
