#pragma once
// `quilt reproduce`: every experiment of the paper, each under mpirun (srun inside a SLURM
// allocation) with its rank count, every analysis script on the outputs, and one report
// (index.html + report.md, built by analysis/report.py). No LibTorch, no MPI in this process:
// the experiments run in child processes.

#include <string>
#include <vector>

namespace quilt::harness {

/// One experiment file of the paper, in the order `quilt reproduce` runs them.
struct PaperExperiment {
  std::string name;   ///< file stem under experiments/, also the result file stem
  std::string paper;  ///< what it reproduces, e.g. "Fig. 5"
};

/// The paper's experiments (experiments/*.yaml without the quickstart), pipeline ones first.
const std::vector<PaperExperiment>& paper_experiments();

/// Options of `quilt reproduce` (`quilt reproduce --help`).
struct ReproduceOptions {
  std::string scale = "here";     ///< scale of every file: here | smoke | paper
  std::string out_dir;            ///< results, logs, analysis outputs, report; default below
  std::string launcher = "auto";  ///< auto (srun when SLURM_JOB_ID is set) | mpirun | srun
  std::vector<std::string> only;  ///< run just these experiments (names); empty = all
  int jobs = 1;  ///< slots: experiments run at the same time, an experiment of r ranks takes r
  std::string source_dir;                   ///< where experiments/ and analysis/ are
  std::string quilt_exe;                    ///< the quilt binary the runs use (this one)
  std::string python = "/usr/bin/python3";  ///< interpreter of the analysis scripts
  std::string python_path;                  ///< directory of the `quilt` Python module
};

/// Parses argv[2..] of `quilt reproduce` and fills the defaults (directories from the binary's
/// own location and the build's source directory, overridable with the environment variables
/// QUILT_SOURCE_DIR, QUILT_PYTHON and QUILT_PYTHONPATH). Throws ConfigError on bad arguments.
ReproduceOptions parse_reproduce_args(int argc, char** argv);

/// Runs the whole reproduction; blocks until every child is done. Experiments start in file
/// order as slots free up (`jobs` slots; one of r ranks takes min(r, jobs)). Progress goes to
/// stdout (a live line on a terminal, plain lines otherwise). A failed experiment or script is
/// recorded and the rest go on. Writes DIR/reproduce.json, DIR/logs/, DIR/index.html and
/// DIR/report.md. Returns the exit code: 0 everything succeeded, 1 an experiment, a script or
/// the report failed (the report says which), 128 + signal when interrupted by SIGINT/SIGTERM
/// (the children are stopped, what finished is kept and reported).
int run_reproduce(const ReproduceOptions& options);

/// `quilt reproduce ARGS`: parse_reproduce_args then run_reproduce.
int cmd_reproduce(int argc, char** argv);

}  // namespace quilt::harness
