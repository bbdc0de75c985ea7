#pragma once
// SLURM job arrays for large sweeps. `quilt plan --slurm` writes the script that
// slurm_job_array() makes: one array task per run (or per chunk of runs), each task one MPI job of
// boards.count ranks running `quilt run FILE --run-index N --output DIR/NAME.N.h5 --resume`.
// A single experiment as one job is experiments/slurm/run.sbatch; both are described in
// experiments/slurm/README.md.

#include "harness/experiment.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::harness {

/// How a generated job array is submitted and where it writes. Paths are written into the script
/// as given: relative ones are relative to the directory `sbatch` is called in.
struct SlurmOptions {
  std::string partition;       ///< `--partition`; empty = the cluster's default partition
  int64_t time_limit_s = 0;    ///< `--time` of each array task; 0 = the partition's default
  int boards_count = 0;        ///< keep only runs with this boards.count; 0 = all runs (must agree)
  int runs_per_task = 1;       ///< runs each array task makes, one after another (>= 1)
  int max_parallel_tasks = 0;  ///< array throttle (`--array=...%N`); 0 = no limit
  std::string build_dir = "build/release";  ///< the binary is <build_dir>/bin/quilt
  std::string output_dir = "results";       ///< run N writes <output_dir>/<name>.N.h5
  std::string experiment_path;              ///< the file the tasks run; empty = Experiment::path
  std::string launcher = "srun";            ///< "srun" (srun --mpi=pmix) or "mpirun"
  std::vector<std::string> extra_sbatch;    ///< more directives, one per line; "#SBATCH " optional
};

/// The distinct boards.count values of the runs of `experiment`, ascending. A job array has one
/// `--ntasks`, so a sweep over boards.count needs one array per value (SlurmOptions::boards_count).
std::vector<int> slurm_board_counts(const Experiment& experiment);

/// The text of an sbatch script that runs the runs of `experiment` as a job array: `--ntasks` =
/// their boards.count, `--cpus-per-task` = their largest boards.threads, `--requeue` with
/// `--open-mode=append` logs (`<name>-<array job id>_<task>.out` in the submit directory), and each
/// run resumed from its own result file. Array task T runs the runs at positions
/// [T * runs_per_task, (T + 1) * runs_per_task) of the selected runs, so with runs_per_task = 1
/// and boards_count = 0 the task id is the run index. Pure: reads nothing, runs nothing.
/// Throws ConfigError (file `<slurm options>` or the experiment's path) when the experiment has no
/// runs, its runs disagree on boards.count and boards_count is 0, no run has boards_count, or an
/// option is out of range.
std::string slurm_job_array(const Experiment& experiment, const SlurmOptions& options);

}  // namespace quilt::harness
