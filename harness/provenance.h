#pragma once
// Where a result came from: build, library versions, hosts, command line.

#include "harness/clock.h"
#include "results/record.h"

#include <mpi.h>

#include <string>

namespace quilt::harness {

/// Git commit the binary was built from (or "unknown"), and whether the tree had changes.
std::string build_git_commit();
bool build_git_dirty();
/// "1.13.1" from LibTorch's headers.
std::string torch_version();
/// "1.10.8" from the HDF5 library in use.
std::string hdf5_version();

/// Fills everything that does not need the experiment. Collective over `comm` (gathers host
/// names); the returned value is complete on rank 0 only.
results::Provenance collect_provenance(const std::string& command_line, MPI_Comm comm);

}  // namespace quilt::harness
