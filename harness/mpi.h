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

// ---- Faults: a rank that waits forever, and interruption by a signal ----------------------------

/// Exit codes `quilt run` shares with the watchdog (README.md, "Exit codes").
constexpr int kExitInterrupted = 4;   ///< SIGTERM/SIGINT: finished runs kept, --resume continues
constexpr int kExitOutputFailed = 5;  ///< the result file could not be written mid-sweep
constexpr int kExitStalled = 6;       ///< a rank made no progress for the stall timeout

/// Starts this process's stall watchdog: a thread that, while a StallScope is open on the main
/// thread and neither the scope nor progress() has been touched for `stall_timeout_s`, prints
/// on stderr which rank waited for what and calls MPI_Abort(MPI_COMM_WORLD, kExitStalled).
/// 0 disables the stall check. The same thread ends an interrupted job (a SIGTERM/SIGINT that
/// no agreement point handled within `interrupt_grace_s`) with kExitInterrupted, but never while
/// a result file is being written (WriteScope). Call once, after MPI_Init; `rank` names the
/// process in messages. Environment's destructor stops it.
/// With `stretch_with_load`, on a host whose CPUs are oversubscribed the timeout stretches by
/// stall_stretch of its load (the CLI does so for its default timeout only).
void start_watchdog(double stall_timeout_s, int rank, double interrupt_grace_s = 20,
                    bool stretch_with_load = false);
/// How much the stall timeout stretches on a host with 1-minute load average `load1` and `cpus`
/// online CPUs: load1 / (2 cpus), within [1, 8]. Up to twice as many runnable tasks as CPUs is a
/// busy host, not a starved one (1); at a load of 15 on 2 CPUs a batch can take minutes (3.75).
/// 1 when either figure is missing (load1 <= 0, cpus < 1). Pure.
double stall_stretch(double load1, long cpus);
/// Stops and joins the watchdog thread (idempotent).
void stop_watchdog();

/// While alive, this rank is waiting on its peers for `what` ("the pipeline (stage 1 ...)"): the
/// watchdog counts the time since the scope opened or progress() was last called. Main thread
/// only; scopes nest (the innermost names the wait).
class StallScope {
 public:
  explicit StallScope(std::string what);
  ~StallScope();
  StallScope(const StallScope&) = delete;
  StallScope& operator=(const StallScope&) = delete;
};
/// This rank moved forward (a batch went through): restarts the stall clock. Cheap (an atomic
/// store); call from the main thread.
void progress();

/// While alive, this process is writing the result file: the interrupt grace abort waits.
class WriteScope {
 public:
  WriteScope();
  ~WriteScope();
  WriteScope(const WriteScope&) = delete;
  WriteScope& operator=(const WriteScope&) = delete;
};

/// Installs handlers for SIGTERM and SIGINT that only record the signal (async-signal-safe);
/// the harness polls interrupt_signal() at agreement points and ends cleanly.
void install_interrupt_handlers();
/// The first SIGTERM/SIGINT this process received, or 0.
int interrupt_signal();
/// Logical OR over all ranks of "this rank was interrupted" (blocks; every rank calls it). Returns
/// the signal number of the lowest interrupted rank, or 0.
int any_interrupted(MPI_Comm comm = MPI_COMM_WORLD);

}  // namespace quilt::harness::mpi
