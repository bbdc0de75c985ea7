#pragma once
// Reading an HDF5 results file (layout: results/SCHEMA.md) back into plain value types.

#include <string>

#include "results/error.h"
#include "results/record.h"

namespace quilt::results {

/// Reads the results file `path` written by write_experiment, runs in the order they were
/// written. Accepts any schema_version from 1 up to kSchemaVersion; the record's schema_version
/// is the file's. Throws ResultsError naming the file (and object path) when the file is missing,
/// is not HDF5, is an HDF5 file that is not a Quilt result (no 'quilt_format' attribute on "/"),
/// was written by a newer Quilt (schema_version > kSchemaVersion), or lacks or mistypes an
/// object the schema requires. Opens the file read-only; safe while a writer replaces it.
ExperimentRecord read_experiment(const std::string& path);

}  // namespace quilt::results
