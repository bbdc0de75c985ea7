#pragma once
// Writing an ExperimentRecord to an HDF5 results file (layout: results/SCHEMA.md).

#include <string>

#include "results/error.h"
#include "results/record.h"

namespace quilt::results {

/// Writes `record` to the HDF5 file `path` (layout of results/SCHEMA.md, schema kSchemaVersion),
/// replacing any file there atomically: the data goes to "<path>.tmp.<pid>" in the same
/// directory, which is closed, fsync'ed and then rename()d over `path` (and the directory is
/// fsync'ed). A process killed at any moment leaves either the previous complete file or the new
/// complete file at `path`, never a partial one; at worst a stale "<path>.tmp.<pid>" remains.
/// On failure the temporary file is removed, `path` is untouched and ResultsError says why (the
/// file, the object path and HDF5's or the OS's reason). Blocks on disk I/O; call from one
/// process (rank 0) at a time per `path`. Run ids must be unique, non-empty, without '/', and
/// strings must not contain NUL bytes.
void write_experiment(const std::string& path, const ExperimentRecord& record);

}  // namespace quilt::results
