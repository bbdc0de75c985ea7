#pragma once
// The one error type of partitioners/.

#include <stdexcept>

namespace quilt::partitioners {

/// A user's mistake in a partitioning request: an invalid layer profile or board profile, a stage
/// count that cannot be met, an unknown or forbidden fixed cut, too few calibration samples. The
/// message names the offending value and what would be valid.
class PartitionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace quilt::partitioners
