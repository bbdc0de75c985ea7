#include "harness/provenance.h"

#include "backends/xrt_board.h"
#include "harness/build_info.h"
#include "harness/mpi.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <torch/version.h>

namespace quilt::harness {

std::string build_git_commit() { return kBuildGitCommit; }
bool build_git_dirty() { return kBuildGitDirty; }

std::string torch_version() { return TORCH_VERSION; }

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  if (H5get_libversion(&major, &minor, &release) < 0) return "unknown";
  return fmt::format("{}.{}.{}", major, minor, release);
}

results::Provenance collect_provenance(const std::string& command_line, MPI_Comm comm) {
  results::Provenance p;
  p.quilt_version = kQuiltVersion;
  p.git_commit = build_git_commit();
  p.git_dirty = build_git_dirty();
  p.torch_version = torch_version();
  p.mpi_version = mpi::library_version();
  p.hdf5_version = hdf5_version();
  p.xrt_version = backends::xrt_version();  // "not built" without the XRT backend
  p.compiler = kCompiler;
  p.command_line = command_line;
  p.hosts = mpi::gather_strings(mpi::processor_name(), 0, comm);
  p.created_utc = utc_now_iso8601();
  return p;
}

}  // namespace quilt::harness
