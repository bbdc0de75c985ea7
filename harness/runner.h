#pragma once
// Runs an experiment under MPI: validates it against the zoo and the rank count, runs every
// run of the sweep through the pipeline, gathers measurements on rank 0, and writes the result
// file after each run (atomically, so a killed job keeps every finished run).

#include "harness/experiment.h"
#include "results/record.h"

#include <mpi.h>

#include <string>

namespace quilt::harness {

struct RunOptions {
  std::string output;        ///< overrides the experiment's output path when not empty
  std::string command_line;  ///< recorded in provenance
  bool print = true;         ///< rank 0 prints progress and the summary table
};

/// Checks what parsing cannot: model names, cut names, weights files, rates, and that the
/// number of ranks equals boards.count for every run. Throws ConfigError. Every rank calls it
/// (no communication); ranks == 0 skips the rank-count check.
void check_experiment(const Experiment& experiment, int ranks);

/// Runs every run of `experiment`. Collective over `comm`. Returns the record (complete on rank
/// 0). Runs that fail in set-up on any rank are recorded as failed with the rank and reason.
results::ExperimentRecord run_experiment(const Experiment& experiment, const RunOptions& options,
                                         MPI_Comm comm);

/// The human summary table of a finished experiment (rank 0 prints it).
std::string summary_table(const results::ExperimentRecord& record);

}  // namespace quilt::harness
