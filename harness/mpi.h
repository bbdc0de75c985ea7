#pragma once
// Thin checked wrappers around the MPI calls the harness uses. Every return code is checked;
// a failure throws MpiError naming the call.

#include <mpi.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness::mpi {

class MpiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws MpiError("<what>: <MPI error string>") when rc != MPI_SUCCESS.
void check(int rc, const char* what);

/// MPI_Init_thread / MPI_Finalize for the lifetime of main(). Sets MPI_ERRORS_RETURN on
/// MPI_COMM_WORLD so errors come back as codes (then as MpiError) instead of aborting.
class Environment {
 public:
  Environment(int* argc, char*** argv);
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
};

int rank(MPI_Comm comm = MPI_COMM_WORLD);
int size(MPI_Comm comm = MPI_COMM_WORLD);
/// This process's host name (MPI_Get_processor_name).
std::string processor_name();
/// "Open MPI v4.1.4, ..." (MPI_Get_library_version), first line.
std::string library_version();

/// Logical AND of `ok` over all ranks (blocks; every rank must call it).
bool all_ok(bool ok, MPI_Comm comm = MPI_COMM_WORLD);
/// Gathers one string per rank on `root`; other ranks get an empty vector. Blocks.
std::vector<std::string> gather_strings(const std::string& mine, int root = 0,
                                        MPI_Comm comm = MPI_COMM_WORLD);
/// Broadcasts a string from root. Blocks.
std::string broadcast_string(std::string text, int root = 0, MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace quilt::harness::mpi
