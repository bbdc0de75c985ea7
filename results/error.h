#pragma once
// The one error type of results/.

#include "common/error.h"

namespace quilt::results {

/// A user-facing error about a results file: missing, unreadable, not a Quilt file, written by a
/// newer Quilt, or an HDF5 or OS call that failed. The message names the file and, where there is
/// one, the object path inside it ("out.h5:/runs/ab12 attribute 'status'").
struct ResultsError : common::UserError {
  using common::UserError::UserError;
};

}  // namespace quilt::results
