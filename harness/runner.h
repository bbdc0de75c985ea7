#pragma once
// Runs an experiment under MPI: validates it against the zoo and the rank count, runs every
// run of the sweep through the pipeline, gathers measurements on rank 0, and appends each
// finished run to the result file (committed, so a killed job keeps every finished run).

#include "harness/experiment.h"
#include "results/record.h"

#include <mpi.h>

#include <string>

namespace quilt::harness {

struct RunOptions {
  std::string output;        ///< overrides the experiment's output path when not empty
  std::string command_line;  ///< recorded in provenance
  bool print = true;         ///< rank 0 prints progress and the summary table
  bool resume = false;       ///< keep the runs the output file completed, run the rest
  bool overwrite = false;    ///< replace an existing output file (default: refuse)
  bool fail_fast = false;    ///< stop at the first failed run (default: keep going)
  int64_t run_index = -1;    ///< run only this run of the sweep (0-based); -1 = all
};

/// How a sweep ended, known alike on every rank (run_experiment's agreements).
struct RunOutcome {
  /// Non-empty: rank 0 could not write a run to the result file (a full disk, an I/O error); the
  /// sweep stopped there and the file holds every run committed before. The OS's reason included.
  std::string output_error;
  /// Non-zero: the signal (SIGTERM, SIGINT) that stopped the sweep; the run in flight, if any, is
  /// recorded with status "interrupted".
  int interrupt_signal = 0;
};

/// Checks what parsing cannot: model names, cut names, weights files, rates, and that the
/// number of ranks equals boards.count for every run. Throws ConfigError. Every rank calls it
/// (no communication); ranks == 0 skips the rank-count check.
void check_experiment(const Experiment& experiment, int ranks);

/// Why this build cannot run `run` (a capability it does not have yet), or empty. `quilt
/// validate` accepts such files; `quilt run` refuses them with this reason (exit 2).
std::string unavailable_reason(const RunConfig& run);

/// Runs every run of `experiment`. Collective over `comm`. Returns the record (complete on rank
/// 0). A run that fails on any rank (set-up error, board exception, non-finite output, output
/// mismatch) is recorded as failed with the rank and reason, and the sweep goes on unless
/// fail_fast. Rank 0 holds an exclusive lock on the output file for the whole call and appends
/// each finished run to it (results::Appender). Throws ConfigError (on every rank, before any
/// run) when the output path is not usable (not a regular file, a directory that cannot be made,
/// a file that cannot be created, locked by another job), when the file exists and neither
/// resume nor overwrite allows it, or when resume finds a file from another experiment. A write
/// that fails mid-sweep, or a SIGTERM/SIGINT on any rank, stops the sweep at the next run (or
/// repetition) on every rank; `outcome` (optional) says which.
results::ExperimentRecord run_experiment(const Experiment& experiment, const RunOptions& options,
                                         MPI_Comm comm, RunOutcome* outcome = nullptr);

/// The human summary table of a finished experiment (rank 0 prints it).
std::string summary_table(const results::ExperimentRecord& record);

}  // namespace quilt::harness
