#pragma once
// The one error type of partitioners/.

#include "common/error.h"

namespace quilt::partitioners {

/// A user's mistake in a partitioning request: an invalid layer profile or board profile, a stage
/// count that cannot be met, an unknown or forbidden fixed cut, too few calibration samples. The
/// message names the offending value and what would be valid.
struct PartitionError : common::UserError {
  using common::UserError::UserError;
};

}  // namespace quilt::partitioners
