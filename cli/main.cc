// quilt: the command-line entry point. `quilt run` is launched under mpirun (one rank per
// board); the other commands run in a single process without MPI.

#include "backends/xrt_board.h"
#include "cli/boards_cmd.h"
#include "cli/cli.h"
#include "cli/collect_cmd.h"
#include "cli/models_cmd.h"
#include "cli/profile_cmd.h"
#include "cli/reproduce_cmd.h"
#include "cli/trace_cmd.h"
#include "common/allocator.h"
#include "harness/experiment.h"
#include "harness/mpi.h"
#include "harness/planning.h"
#include "harness/provenance.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/slurm.h"
#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/torchscript.h"
#include "models/zoo.h"
#include "results/error.h"
#include "results/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

using quilt::harness::ConfigError;

constexpr int kExitOk = 0;
constexpr int kExitRunsFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitInternal = 3;
constexpr int kExitInterrupted = quilt::harness::mpi::kExitInterrupted;    // 4
constexpr int kExitOutputFailed = quilt::harness::mpi::kExitOutputFailed;  // 5
constexpr double kDefaultStallTimeoutS = 60;

std::string join_args(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

const char* kExitCodes =
    "exit codes: 0 all runs succeeded, 1 a run failed, 2 bad input (every rank exits, nothing is "
    "written), 3 internal error, 4 interrupted (SIGTERM/SIGINT; finished runs kept, --resume "
    "continues), 5 the result file could not be written mid-sweep (disk full, I/O error; earlier "
    "runs kept), 6 a rank stalled (--stall-timeout)";

const char* kScaleHelp = "pick one of the file's `scales:` (e.g. here, paper)";

int cmd_validate(int argc, char** argv) {
  std::string scale;
  std::vector<std::string> files;
  quilt::harness::cli::Parser p(
      "validate",
      "Check experiment files (syntax, keys, models, cuts) without MPI; exit 0 when "
      "every file is valid, 2 otherwise.");
  p.positional("FILE", "experiment files", &files, 1, SIZE_MAX)
      .option("--scale", "NAME", kScaleHelp, &scale)
      .example("quilt validate experiments/*.yaml");
  if (!p.parse(argc, argv)) return kExitOk;
  int rc = kExitOk;
  for (const auto& file : files) {
    try {
      auto e = quilt::harness::load_experiment(file, scale);
      quilt::harness::check_experiment(e, 0);
      fmt::print("{}: ok ({} run(s){})\n", file, e.runs.size(),
                 e.scale.empty() ? "" : ", scale " + e.scale);
    } catch (const ConfigError& e) {
      fmt::print(stderr, "{}\n", e.what());
      rc = kExitUsage;
    }
  }
  return rc;
}

// `quilt plan`'s arguments; --slurm [PATH] and its options write a job array instead of the plan.
struct PlanArgs {
  std::string scale, file;
  bool slurm = false;
  std::string slurm_path;
  quilt::harness::SlurmOptions so;
};

quilt::harness::cli::Parser plan_parser(PlanArgs* a) {
  quilt::harness::cli::Parser p(
      "plan",
      "The runs an experiment file expands to, without running them: per run the model, boards, "
      "swept values, the measurement or training plan, the cuts (searched ones included), the "
      "predicted stage times and the bytes per cut. With --slurm, an sbatch job array instead.");
  auto slurm_only = [&](const std::string& help) { return help + " (with --slurm)"; };
  p.positional("FILE", "an experiment file", &a->file)
      .option("--scale", "NAME", kScaleHelp, &a->scale)
      .optional_value(
          "--slurm", "PATH",
          "write an sbatch job array (one task per run, each resuming its own result file) to "
          "PATH, or to stdout without PATH",
          [](const std::string& next) {
            return next.rfind("--", 0) != 0 && next.find(".yaml") == std::string::npos;
          },
          [a](const std::string& v) {
            a->slurm = true;
            a->slurm_path = v;
          })
      .option("--partition", "P", slurm_only("SLURM partition"), &a->so.partition)
      .option("--time-limit-s", "S", slurm_only("time limit per task, seconds"),
              &a->so.time_limit_s, 0)
      .option("--boards", "N", slurm_only("boards (MPI ranks) per task"), &a->so.boards_count, 0)
      .option("--runs-per-task", "N", slurm_only("runs per array task"), &a->so.runs_per_task, 0)
      .option("--max-parallel", "N", slurm_only("array tasks running at once"),
              &a->so.max_parallel_tasks, 0)
      .option("--build-dir", "DIR", slurm_only("the build holding bin/quilt"), &a->so.build_dir)
      .option("--output-dir", "DIR", slurm_only("where the tasks write their result files"),
              &a->so.output_dir)
      .option("--launcher", "srun|mpirun", slurm_only("how a task starts its ranks"),
              &a->so.launcher)
      .example("quilt plan experiments/quickstart.yaml")
      .example("quilt plan experiments/efficiency.yaml --slurm jobs.sbatch --partition gpu",
               "then: sbatch jobs.sbatch");
  return p;
}

// The sbatch job array of `e` to PATH, or to stdout without one.
void write_slurm(const quilt::harness::Experiment& e, const PlanArgs& a) {
  const std::string& slurm_path = a.slurm_path;
  std::string script = quilt::harness::slurm_job_array(e, a.so);
  if (slurm_path.empty()) {
    fmt::print("{}", script);
  } else {
    std::ofstream out(slurm_path);
    out << script;
    if (!out.flush())
      throw ConfigError(slurm_path, 0, 0, "--slurm", "cannot write the job script there");
    fmt::print(stderr, "wrote {} ({} run(s)); submit with: sbatch {}\n", slurm_path, e.runs.size(),
               slurm_path);
  }
}

// One run's plan: model, boards, swept values, network link, cuts, predicted stage times and
// the bytes per cut (or why it cannot run in this build).
void print_run_plan(const quilt::harness::Experiment& e, const quilt::harness::RunConfig& run) {
  auto base = quilt::models::make_model(run.model.arch, quilt::harness::model_options(run.model));
  std::vector<std::string> cuts = run.partition.cuts;
  quilt::harness::RunPlan plan;
  if (!run.training.mode) {
    plan = quilt::harness::plan_run(run, base, e.path);
    cuts = plan.cuts;
  }
  quilt::models::QuiltModel qm(base, cuts, quilt::harness::autoencoder_options(run.autoencoder));
  std::string arch = run.model.width == 1.0
                         ? run.model.arch
                         : fmt::format("{} (width {})", run.model.arch, run.model.width);
  if (run.model.arch == quilt::models::kTorchScriptArch)
    arch = fmt::format("{} ({})", arch, run.model.path);
  if (!run.training.mode)
    fmt::print("run {} (#{}): {} on {} x {} board(s), batch {}, {} x ({} + {} warm-up) batches\n",
               run.id, run.index, arch, run.boards.count, to_string(run.boards.backend),
               run.measurement.batch, run.measurement.repetitions, run.measurement.batches,
               run.measurement.warmup_batches);
  else  // Training runs: their own plan; the measurement keys do not apply.
    fmt::print("run {} (#{}): {} on {} rank(s), {}\n", run.id, run.index, arch, run.boards.count,
               quilt::harness::describe_training(run));
  for (const auto& [k, v] : run.swept) fmt::print("    {} = {}\n", k, v);
  auto why = quilt::harness::unavailable_reason(run);
  if (!why.empty()) {
    fmt::print("    not runnable in this build: {}\n", why);
    return;
  }
  if (run.links.mpi_gbps > 0 || run.links.mpi_latency_s > 0)
    fmt::print(
        "    network link: {} GB/s, {} s latency per hop (links.mpi_gbps, "
        "links.mpi_latency_s{})\n",
        run.links.mpi_gbps > 0 ? fmt::format("{}", run.links.mpi_gbps) : "profile's",
        run.links.mpi_latency_s,
        run.boards.time_model == quilt::harness::TimeModel::kMeasured
            ? "; measured time: the network must be "
              "shaped to it, e.g. tests/hosts/testbed.sh "
              "shape-from"
            : "");
  if (plan.searched)
    fmt::print("    cuts chosen by the search ({}, {:.3f} ms): {}\n", plan.objective,
               1e3 * plan.objective_s, fmt::join(plan.cuts, ", "));
  for (size_t k = 0; k < plan.stages.size(); ++k)
    fmt::print(
        "    stage {} {}: predicted {:.2f} ms per batch (compute {:.2f}, comm {:.2f}; "
        "profile {})\n",
        k, plan.stages[k].units, 1e3 * plan.stages[k].exec_s, 1e3 * plan.stages[k].compute_s,
        1e3 * plan.stages[k].comm_s, plan.profile);
  // Bytes in the boards' precision (the model counts float32).
  for (const auto& t : qm->traffic())
    fmt::print("    cut {}: {} -> {} per sample ({} -> {} B in {}, effective R {:.2f})\n", t.cut,
               quilt::models::to_string(t.shape), quilt::models::to_string(t.wire_shape),
               t.bytes_per_sample / 4 * plan.element_bytes,
               t.wire_bytes_per_sample / 4 * plan.element_bytes,
               quilt::backends::precision_name(plan.precision), t.effective_rate);
}

int cmd_plan(int argc, char** argv) {
  PlanArgs a;
  quilt::harness::cli::Parser p = plan_parser(&a);
  if (!p.parse(argc, argv)) return kExitOk;
  std::vector<std::string> files{a.file};
  auto e = quilt::harness::load_experiment(files[0], a.scale);
  quilt::harness::check_experiment(e, 0);
  if (a.slurm) {
    write_slurm(e, a);
    return kExitOk;
  }
  fmt::print("{}: {} run(s), output {}, experiment hash {}{}\n", e.name, e.runs.size(), e.output,
             e.hash, e.scale.empty() ? "" : ", scale " + e.scale);
  torch::NoGradGuard no_grad;
  for (const auto& run : e.runs) print_run_plan(e, run);
  return kExitOk;
}

int cmd_version(int argc, char** argv) {
  quilt::harness::cli::Parser p("version",
                                "Versions of Quilt and the libraries it was built with.");
  p.example("quilt version");
  if (!p.parse(argc, argv)) return kExitOk;
  fmt::print("quilt {} (git {}{})\nLibTorch {}\nHDF5 {}\n", "0.1.0",
             quilt::harness::build_git_commit(), quilt::harness::build_git_dirty() ? ", dirty" : "",
             quilt::harness::torch_version(), quilt::harness::hdf5_version());
  fmt::print("XRT {}\n", quilt::backends::xrt_version());
  return kExitOk;
}

quilt::harness::cli::Parser run_parser(quilt::harness::RunOptions* options, std::string* file,
                                       std::string* scale, double* stall_timeout_s) {
  quilt::harness::cli::Parser p(
      "run",
      "Run an experiment: every run of its sweep, one MPI rank per board, results into one HDF5 "
      "file (each run appended and committed as it finishes). Launch under mpirun with -n equal to "
      "the "
      "file's boards.count.");
  p.positional("FILE", "an experiment file (experiments/README.md)", file)
      .option("--output", "PATH", "result file (default: the experiment's `output`)",
              &options->output)
      .flag("--resume",
            "keep the runs the file completed, run the rest (refuses a file from another "
            "experiment)",
            &options->resume)
      .flag("--overwrite", "replace an existing result file (default: refuse)", &options->overwrite)
      .flag("--keep-going", "record a failed run and go on (default)",
            [options] { options->fail_fast = false; })
      .flag("--fail-fast", "stop at the first failed run", &options->fail_fast)
      .option("--run-index", "N", "run only the N-th run of the sweep (0-based; for job arrays)",
              &options->run_index, 0)
      .option("--scale", "NAME", kScaleHelp, scale)
      .option("--stall-timeout", "S",
              "end the job (exit 6) when a rank waits on its peers S seconds without progress: "
              "a dead rank, host or link (default 60, stretched on a host loaded beyond twice its "
              "CPUs; 0 = never)",
              [stall_timeout_s](const std::string& v) {
                size_t used = 0;
                const double x = std::stod(v, &used);
                if (used != v.size() || !(x >= 0) || x > 1e7)
                  throw std::invalid_argument("seconds, 0 (never) or more");
                *stall_timeout_s = x;
              })
      .note(kExitCodes)
      .example("mpirun -n 2 quilt run experiments/quickstart.yaml --overwrite")
      .example("mpirun -n 2 quilt run experiments/efficiency.yaml --resume --output eff.h5",
               "continue a sweep that was killed");
  return p;
}

// Loads and checks the experiment for `quilt run` on n ranks: the error message, empty when
// every run that --run-index selects can run here.
std::string load_for_run(const std::string& file, const std::string& scale,
                         const quilt::harness::RunOptions& options, int n,
                         quilt::harness::Experiment* out) {
  quilt::harness::Experiment& experiment = *out;
  try {
    experiment = quilt::harness::load_experiment(file, scale);
    if (options.run_index >= static_cast<int64_t>(experiment.runs.size()))
      throw ConfigError(file, 0, 0, "--run-index",
                        fmt::format("run {} does not exist; the sweep has runs 0..{}",
                                    options.run_index, experiment.runs.size() - 1));
    quilt::harness::check_experiment(experiment, n);
    for (const auto& run : experiment.runs) {
      if (options.run_index >= 0 && static_cast<size_t>(options.run_index) != run.index) continue;
      auto why = quilt::harness::unavailable_reason(run);
      if (!why.empty())
        throw ConfigError(file, 0, 0, "", fmt::format("run {} cannot run here: {}", run.id, why));
    }
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The first non-empty message of the ranks' errors.
std::string first_error(const std::vector<std::string>& errors) {
  for (const auto& e : errors)
    if (!e.empty()) return e;
  return "";
}

// Rank 0 after the sweep: the summary table, what stopped it, and the exit code.
int run_summary(const quilt::results::ExperimentRecord& record,
                const quilt::harness::RunOutcome& outcome, const std::string& out) {
  int rc = kExitOk;
  fmt::print("{}", quilt::harness::summary_table(record));
  for (const auto& r : record.runs)
    if (r.status != "ok") rc = kExitRunsFailed;
  if (outcome.interrupt_signal) {
    fmt::print(stderr,
               "quilt: interrupted by signal {} ({}); {} keeps every finished run; continue "
               "with --resume\n",
               outcome.interrupt_signal, strsignal(outcome.interrupt_signal), out);
    rc = kExitInterrupted;
  }
  if (!outcome.output_error.empty()) {
    fmt::print(stderr, "quilt: error: the sweep stopped: {}\n", outcome.output_error);
    rc = kExitOutputFailed;
  }
  return rc;
}

// Every rank parses and checks; all must agree before anything runs or is written.
int cmd_run(int argc, char** argv) {
  quilt::harness::RunOptions options;
  options.command_line = join_args(argc, argv);
  std::string file, scale, error;
  double stall_timeout_s = kDefaultStallTimeoutS;
  // --help before MPI starts; only the first rank prints it under mpirun.
  if (quilt::harness::cli::wants_help(argc, argv)) {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    if (rank == nullptr) rank = std::getenv("PMI_RANK");
    if (rank == nullptr || std::string(rank) == "0")
      std::fputs(run_parser(&options, &file, &scale, &stall_timeout_s).help().c_str(), stdout);
    return kExitOk;
  }
  try {
    run_parser(&options, &file, &scale, &stall_timeout_s).parse(argc, argv);
  } catch (const ConfigError& e) {
    error = e.what();
  }
  namespace mpi = quilt::harness::mpi;
  mpi::Environment env(&argc, &argv);
  mpi::install_interrupt_handlers();
  const int me = mpi::rank(), n = mpi::size();
  if (options.resume && options.overwrite && error.empty())
    error = "quilt run: --resume and --overwrite exclude each other";
  quilt::harness::Experiment experiment;
  if (error.empty()) error = load_for_run(file, scale, options, n, &experiment);
  // The option can differ between ranks only by a broken launcher; rank 0's value wins.
  mpi::check(MPI_Bcast(&stall_timeout_s, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD), "MPI_Bcast");
  // The default timeout stretches with the host's load; one given on the command line is taken
  // as given (tests and users who chose it mean it).
  mpi::start_watchdog(n > 1 ? stall_timeout_s : 0, me, 20.0,
                      stall_timeout_s == kDefaultStallTimeoutS);
  auto errors = mpi::gather_strings(error);
  if (!mpi::all_ok(error.empty())) {
    if (me == 0) fmt::print(stderr, "quilt: error: {}\n", first_error(errors));
    return kExitUsage;
  }
  if (me == 0) {
    fmt::print("quilt: {} ({} run(s){}) on {} rank(s) -> {}\n", experiment.name,
               experiment.runs.size(),
               experiment.scale.empty() ? "" : ", scale " + experiment.scale, n,
               options.output.empty() ? experiment.output : options.output);
    std::fflush(stdout);
  }
  quilt::results::ExperimentRecord record;
  quilt::harness::RunOutcome outcome;
  try {
    record = quilt::harness::run_experiment(experiment, options, MPI_COMM_WORLD, &outcome);
  } catch (const ConfigError& e) {
    // Thrown on every rank alike (the output-file decision is shared).
    if (me == 0) fmt::print(stderr, "quilt: error: {}\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    // Thrown on this rank alone: the others may be waiting for it in MPI, and returning would
    // leave them there (MPI_Finalize waits for everyone). The message first, then the abort.
    fmt::print(stderr, "quilt: rank {}: internal error: {}; aborting the job (exit {})\n", me,
               e.what(), kExitInternal);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitInternal);
    return kExitInternal;
  }
  int rc = kExitOk;
  if (me == 0)
    rc = run_summary(record, outcome, options.output.empty() ? experiment.output : options.output);
  mpi::check(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  quilt::common::keep_freed_memory();  // a training step's memory is reused, not re-faulted
  // To add a command: one line here; see harness/README.md.
  const std::vector<quilt::harness::cli::Command> commands = {
      {"run", "run an experiment (under mpirun, one rank per board)", cmd_run},
      {"validate", "check experiment files without MPI", cmd_validate},
      {"plan", "the runs a file expands to: cuts, predicted times, training plans; --slurm",
       cmd_plan},
      {"report", "each run's metrics, validity and PASS/FAIL; several files; --compare BASE",
       quilt::harness::cmd_report},
      {"collect", "every run of result files as one CSV row (quilt.results.runs())",
       quilt::harness::cmd_collect},
      {"trace", "a run's merged multi-rank timeline as Chrome trace-event JSON",
       quilt::harness::cmd_trace},
      {"reproduce", "the whole paper: every experiment, every analysis script, one report",
       quilt::harness::cmd_reproduce},
      {"models", "the model zoo and each model's cut points", quilt::harness::cmd_models},
      {"summary", "per-unit shapes, FLOPs, parameters and bytes per cut of a model",
       quilt::harness::cmd_summary},
      {"profile", "per-unit FLOPs, bytes and (--measure) measured time of a model",
       quilt::harness::cmd_profile},
      {"calibrate", "fit a board profile to measured unit times", quilt::harness::cmd_calibrate},
      {"boards", "the XRT boards here: devices, power, DMA bandwidth; the board profiles",
       quilt::harness::cmd_boards},
      {"version", "versions of Quilt and the libraries it was built with", cmd_version},
  };
  try {
    return quilt::harness::cli::dispatch(commands, argc, argv);
  } catch (const ConfigError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
    return kExitUsage;
  } catch (const quilt::results::ResultsError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
    return kExitUsage;
  } catch (const quilt::models::ModelError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    fmt::print(stderr, "quilt: internal error: {}\n", e.what());
    return kExitInternal;
  }
}
