// quilt: the command-line entry point. `quilt run` is launched under mpirun (one rank per
// board); the other commands run in a single process without MPI.

#include "backends/xrt_board.h"
#include "harness/boards_cmd.h"
#include "harness/collect_cmd.h"
#include "harness/experiment.h"
#include "harness/mpi.h"
#include "harness/planning.h"
#include "harness/profile_cmd.h"
#include "harness/provenance.h"
#include "harness/report.h"
#include "harness/reproduce_cmd.h"
#include "harness/runner.h"
#include "harness/slurm.h"
#include "harness/trace_cmd.h"
#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/zoo.h"
#include "results/error.h"
#include "results/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cstdio>
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

const char* kUsage = R"(usage: quilt <command> [args]

commands:
  run FILE [options]         run an experiment; launch under mpirun with one rank per board:
                             mpirun -n <boards.count> quilt run experiments/quickstart.yaml
      --output PATH          result file (default: the experiment's `output`)
      --resume               keep the runs the file completed, run the rest (refuses a file
                             from another experiment)
      --overwrite            replace an existing result file (default: refuse)
      --keep-going           record a failed run and go on (default)
      --fail-fast            stop at the first failed run
      --run-index N          run only the N-th run of the sweep (0-based; for job arrays)
      --scale NAME           pick one of the file's `scales:` (e.g. here, paper)
      --stall-timeout S      end the job (exit 6) when a rank waits on its peers S seconds
                             without progress: a dead rank, host or link (default 60; 0 = never)
  validate FILE... [--scale NAME]
                             check experiment files (syntax, keys, models, cuts) without MPI
  plan FILE [--scale NAME]   list the runs a file expands to, with cuts and bytes per cut
      --slurm [PATH]         instead, write an sbatch job array (one task per run, each
                             resuming its own result file) to PATH or stdout; options:
                             --partition P --time-limit-s S --boards N --runs-per-task N
                             --max-parallel N --build-dir DIR --output-dir DIR
                             --launcher srun|mpirun
  report FILE.h5... [--compare BASE.h5 [--by KEY,KEY]]
                             each run's metrics, validity and PASS/FAIL against references;
                             several files: one table across them; --compare: each file
                             against BASE, runs paired by the parameters that vary (or --by)
  collect FILE.h5... -o TABLE.csv
                             every run of the files as one CSV row (quilt.results.runs())
  trace FILE.h5 [--run ID] -o trace.json
                             a run's merged multi-rank timeline (measurement.trace) as a
                             Chrome trace-event file for ui.perfetto.dev or chrome://tracing
  models                     list the model zoo and each model's cut points
  summary ARCH [--input C,H,W] [--classes N] [--rate R] [--cut NAME]
                             per-unit shapes, FLOPs, parameters and bytes per cut
  profile MODEL [--input C,H,W] [--classes N] [--measure] [--batch N] [--repeats N]
          [--threads N] [--output FILE.csv|FILE.json]
                             per unit (block): shapes, FLOPs, params, bytes; --measure adds the
                             forward time of each unit on the emulator's fast path
  calibrate MODEL --profile NAME|FILE --output FILE.yaml [--batch N] [--repeats N]
                             fit a board profile's efficiency and overhead to measured unit
                             times; prints the fit's error
  boards [--size MIB[,MIB...]] [--repeats N] [--device N] [--xclbin FILE] [--no-bandwidth]
                             the XRT devices (Alveo boards) here: name, BDF, loaded xclbin,
                             power; host<->board DMA bandwidth of each (default sizes 4,16,64
                             MiB, median of 5); the built-in board profiles. Exit 1 when XRT is
                             not built or no device is found. XCL_EMULATION_MODE=noop: XRT's
                             noop shim (no board; numbers meaningless)
  reproduce [--scale here|smoke|paper] [--out DIR]
                             the whole paper: every experiment under mpirun, every analysis
                             script, one report DIR/index.html + report.md (quilt reproduce -h)
  version                    versions of Quilt and the libraries it was built with

exit codes: 0 success, 1 a run failed, 2 bad input (the message says where), 3 internal error,
  4 interrupted (SIGTERM/SIGINT; finished runs kept, --resume continues), 5 the result file could
  not be written mid-sweep (disk full, I/O error; earlier runs kept), 6 a rank stalled
)";

std::string join_args(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find_first_of(",x", pos);
    std::string part =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    try {
      size_t used = 0;
      long long v = std::stoll(part, &used);
      if (used != part.size() || v <= 0) throw std::invalid_argument(part);
      shape.push_back(v);
    } catch (const std::exception&) {
      throw ConfigError("<command line>", 0, 0, "--input",
                        fmt::format("`{}` is not a shape; use e.g. 3,224,224", text));
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return shape;
}

int cmd_models() {
  torch::NoGradGuard no_grad;
  for (const auto& name : quilt::models::model_names()) {
    auto model = quilt::models::make_model(name);
    fmt::print("{:<10} input {:<10} classes {:<5} cuts:", name,
               quilt::models::to_string(model->input_shape()), model->num_classes());
    for (const auto& c : model->cuts()) {
      // Several crossing tensors (UNet's skips): each, in packed order.
      std::vector<std::string> parts;
      for (const auto& t : c.tensors)
        parts.push_back(c.tensors.size() > 1 ? t.name + " " + quilt::models::to_string(t.shape)
                                             : quilt::models::to_string(t.shape));
      fmt::print(" {} ({})", c.name, fmt::join(parts, " + "));
    }
    fmt::print("\n");
  }
  return kExitOk;
}

int cmd_summary(int argc, char** argv) {
  if (argc < 3) throw ConfigError("<command line>", 0, 0, "summary", "needs a model name");
  quilt::models::ModelOptions opts;
  double rate = 1;
  std::vector<std::string> cuts;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw ConfigError("<command line>", 0, 0, a, "needs a value");
      return argv[++i];
    };
    if (a == "--input")
      opts.input_shape = parse_shape(value());
    else if (a == "--classes")
      opts.num_classes = std::stoll(value());
    else if (a == "--rate")
      rate = std::stod(value());
    else if (a == "--cut")
      cuts.push_back(value());
    else
      throw ConfigError("<command line>", 0, 0, a, "unknown option for `quilt summary`");
  }
  torch::NoGradGuard no_grad;
  auto model = quilt::models::make_model(argv[2], opts);
  auto s = quilt::models::summarize(model);
  fmt::print("{} input {} classes {}: {:.3f} GFLOPs/sample, {} parameters\n", s.arch,
             quilt::models::to_string(s.input_shape), s.num_classes, s.flops / 1e9, s.params);
  fmt::print("{:<10} {:>16} {:>16} {:>12} {:>12} {:>14}\n", "unit", "in", "out", "GFLOPs", "params",
             "out B/sample");
  for (const auto& u : s.units)
    fmt::print("{:<10} {:>16} {:>16} {:>12.4f} {:>12} {:>14}\n", u.name,
               quilt::models::to_string(u.in_shape), quilt::models::to_string(u.out_shape),
               u.flops / 1e9, u.params, u.out_bytes);
  fmt::print("\n{:<14} {:>16} {:>14} {:>16} {:>14} {:>8}\n", "cut", "shape", "B/sample", "encoded",
             "wire B/sample", "eff. R");
  for (const auto& c : s.cuts) {
    bool selected = cuts.empty() || std::find(cuts.begin(), cuts.end(), c.name) != cuts.end();
    if (!selected) continue;
    // Several crossing tensors (UNet): packed shapes, bytes summed over the tensors.
    const auto t = quilt::models::cut_traffic(c, {rate, 1});
    fmt::print("{:<14} {:>16} {:>14} {:>16} {:>14} {:>8.2f}\n", c.name,
               quilt::models::to_string(t.shape), t.bytes_per_sample,
               quilt::models::to_string(t.wire_shape), t.wire_bytes_per_sample, t.effective_rate);
  }
  return kExitOk;
}

// Pulls `--scale NAME` out of argv[first..]; returns the remaining arguments.
std::vector<std::string> take_scale(int argc, char** argv, int first, std::string* scale) {
  std::vector<std::string> rest;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--scale") {
      if (i + 1 >= argc) throw ConfigError("<command line>", 0, 0, "--scale", "needs a name");
      *scale = argv[++i];
    } else {
      rest.push_back(a);
    }
  }
  return rest;
}

int cmd_validate(int argc, char** argv) {
  std::string scale;
  auto files = take_scale(argc, argv, 2, &scale);
  if (files.empty())
    throw ConfigError("<command line>", 0, 0, "validate", "needs experiment files");
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

int cmd_plan(int argc, char** argv) {
  std::string scale;
  auto args = take_scale(argc, argv, 2, &scale);
  // --slurm [PATH] and its options write a job array instead of the plan.
  bool slurm = false;
  std::string slurm_path;
  quilt::harness::SlurmOptions so;
  std::vector<std::string> files;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw ConfigError("<command line>", 0, 0, a, "needs a value");
      return args[++i];
    };
    auto number = [&]() -> int64_t {
      std::string v = value();
      try {
        size_t used = 0;
        long long x = std::stoll(v, &used);
        if (used == v.size() && x >= 0) return x;
      } catch (const std::exception&) {
      }
      throw ConfigError("<command line>", 0, 0, a,
                        fmt::format("needs a non-negative integer (got `{}`)", v));
    };
    if (a == "--slurm") {
      slurm = true;
      if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0 &&
          args[i + 1].find(".yaml") == std::string::npos)
        slurm_path = args[++i];
    } else if (a == "--partition") {
      so.partition = value();
    } else if (a == "--time-limit-s") {
      so.time_limit_s = number();
    } else if (a == "--boards") {
      so.boards_count = static_cast<int>(number());
    } else if (a == "--runs-per-task") {
      so.runs_per_task = static_cast<int>(number());
    } else if (a == "--max-parallel") {
      so.max_parallel_tasks = static_cast<int>(number());
    } else if (a == "--build-dir") {
      so.build_dir = value();
    } else if (a == "--output-dir") {
      so.output_dir = value();
    } else if (a == "--launcher") {
      so.launcher = value();
    } else if (a.rfind("--", 0) == 0) {
      throw ConfigError("<command line>", 0, 0, a, "unknown option for `quilt plan`");
    } else {
      files.push_back(a);
    }
  }
  if (files.size() != 1)
    throw ConfigError("<command line>", 0, 0, "plan", "needs one experiment file");
  auto e = quilt::harness::load_experiment(files[0], scale);
  quilt::harness::check_experiment(e, 0);
  if (slurm) {
    std::string script = quilt::harness::slurm_job_array(e, so);
    if (slurm_path.empty()) {
      fmt::print("{}", script);
    } else {
      std::ofstream out(slurm_path);
      out << script;
      if (!out.flush())
        throw ConfigError(slurm_path, 0, 0, "--slurm", "cannot write the job script there");
      fmt::print(stderr, "wrote {} ({} run(s)); submit with: sbatch {}\n", slurm_path,
                 e.runs.size(), slurm_path);
    }
    return kExitOk;
  }
  fmt::print("{}: {} run(s), output {}, experiment hash {}{}\n", e.name, e.runs.size(), e.output,
             e.hash, e.scale.empty() ? "" : ", scale " + e.scale);
  torch::NoGradGuard no_grad;
  for (const auto& run : e.runs) {
    quilt::models::ModelOptions opts;
    opts.input_shape = run.model.input;
    opts.num_classes = run.model.classes;
    auto base = quilt::models::make_model(run.model.arch, opts);
    std::vector<std::string> cuts = run.partition.cuts;
    quilt::harness::RunPlan plan;
    if (run.training.mode == "none") {
      plan = quilt::harness::plan_run(run, base, e.path);
      cuts = plan.cuts;
    }
    quilt::models::QuiltModel qm(base, cuts, {run.autoencoder.rate, run.autoencoder.kernel});
    fmt::print("run {} (#{}): {} on {} x {} board(s), batch {}, {} x ({} + {} warm-up) batches\n",
               run.id, run.index, run.model.arch, run.boards.count, run.boards.backend,
               run.measurement.batch, run.measurement.repetitions, run.measurement.batches,
               run.measurement.warmup_batches);
    for (const auto& [k, v] : run.swept) fmt::print("    {} = {}\n", k, v);
    auto why = quilt::harness::unavailable_reason(run);
    if (!why.empty()) {
      fmt::print("    not runnable in this build: {}\n", why);
      continue;
    }
    if (run.links.mpi_gbps > 0 || run.links.mpi_latency_s > 0)
      fmt::print(
          "    network link: {} GB/s, {} s latency per hop (links.mpi_gbps, "
          "links.mpi_latency_s{})\n",
          run.links.mpi_gbps > 0 ? fmt::format("{}", run.links.mpi_gbps) : "profile's",
          run.links.mpi_latency_s,
          run.boards.time_model == "measured" ? "; measured time: the network must be "
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
    for (const auto& t : qm->traffic())
      fmt::print("    cut {}: {} -> {} per sample ({} -> {} B, effective R {:.2f})\n", t.cut,
                 quilt::models::to_string(t.shape), quilt::models::to_string(t.wire_shape),
                 t.bytes_per_sample, t.wire_bytes_per_sample, t.effective_rate);
  }
  return kExitOk;
}

int cmd_version() {
  fmt::print("quilt {} (git {}{})\nLibTorch {}\nHDF5 {}\n", "0.1.0",
             quilt::harness::build_git_commit(), quilt::harness::build_git_dirty() ? ", dirty" : "",
             quilt::harness::torch_version(), quilt::harness::hdf5_version());
  fmt::print("XRT {}\n", quilt::backends::xrt_version());
  return kExitOk;
}

// Every rank parses and checks; all must agree before anything runs or is written.
int cmd_run(int argc, char** argv) {
  namespace mpi = quilt::harness::mpi;
  mpi::Environment env(&argc, &argv);
  mpi::install_interrupt_handlers();
  const int me = mpi::rank(), n = mpi::size();
  quilt::harness::RunOptions options;
  options.command_line = join_args(argc, argv);
  std::string file, scale, error;
  double stall_timeout_s = kDefaultStallTimeoutS;
  for (int i = 2; i < argc && error.empty(); ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        error = fmt::format("quilt run: {} needs a value", a);
        return "";
      }
      return argv[++i];
    };
    if (a == "--output")
      options.output = value();
    else if (a == "--resume")
      options.resume = true;
    else if (a == "--overwrite")
      options.overwrite = true;
    else if (a == "--fail-fast")
      options.fail_fast = true;
    else if (a == "--keep-going")
      options.fail_fast = false;
    else if (a == "--scale")
      scale = value();
    else if (a == "--stall-timeout") {
      std::string v = value();
      try {
        size_t used = 0;
        stall_timeout_s = std::stod(v, &used);
        if (used != v.size() || !(stall_timeout_s >= 0) || stall_timeout_s > 1e7)
          throw std::invalid_argument(v);
      } catch (const std::exception&) {
        error =
            fmt::format("quilt run: --stall-timeout needs seconds, 0 (never) or more (got `{}`)",
                        quilt::harness::clip(v));
      }
    } else if (a == "--run-index") {
      std::string v = value();
      try {
        size_t used = 0;
        options.run_index = std::stoll(v, &used);
        if (used != v.size() || options.run_index < 0) throw std::invalid_argument(v);
      } catch (const std::exception&) {
        error = fmt::format("quilt run: --run-index needs a run number from 0 (got `{}`)", v);
      }
    } else if (a.rfind("--", 0) == 0) {
      error = fmt::format("quilt run: unknown option `{}`\n{}", quilt::harness::clip(a), kUsage);
    } else if (file.empty()) {
      file = a;
    } else {
      error = fmt::format("quilt run: one experiment file, got `{}` and `{}`", file, a);
    }
  }
  if (options.resume && options.overwrite && error.empty())
    error = "quilt run: --resume and --overwrite exclude each other";
  if (file.empty() && error.empty())
    error = fmt::format("quilt run: needs an experiment file\n{}", kUsage);
  quilt::harness::Experiment experiment;
  if (error.empty()) {
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
      error = e.what();
    }
  }
  // The option can differ between ranks only by a broken launcher; rank 0's value wins.
  mpi::check(MPI_Bcast(&stall_timeout_s, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD), "MPI_Bcast");
  mpi::start_watchdog(n > 1 ? stall_timeout_s : 0, me);
  auto errors = mpi::gather_strings(error);
  if (!mpi::all_ok(error.empty())) {
    if (me == 0) {
      std::string first;
      for (const auto& e : errors)
        if (!e.empty()) {
          first = e;
          break;
        }
      fmt::print(stderr, "quilt: error: {}\n", first);
    }
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
  if (me == 0) {
    fmt::print("{}", quilt::harness::summary_table(record));
    for (const auto& r : record.runs)
      if (r.status != "ok") rc = kExitRunsFailed;
    const std::string& out = options.output.empty() ? experiment.output : options.output;
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
  }
  mpi::check(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "run") return cmd_run(argc, argv);
    if (cmd == "validate") return cmd_validate(argc, argv);
    if (cmd == "plan") return cmd_plan(argc, argv);
    if (cmd == "models") return cmd_models();
    if (cmd == "summary") return cmd_summary(argc, argv);
    if (cmd == "version") return cmd_version();
    if (cmd == "report") return quilt::harness::cmd_report(argc, argv);
    if (cmd == "collect") return quilt::harness::cmd_collect(argc, argv);
    if (cmd == "profile") return quilt::harness::cmd_profile(argc, argv);
    if (cmd == "calibrate") return quilt::harness::cmd_calibrate(argc, argv);
    if (cmd == "boards") return quilt::harness::cmd_boards(argc, argv);
    if (cmd == "trace") return quilt::harness::cmd_trace(argc, argv);
    if (cmd == "reproduce") return quilt::harness::cmd_reproduce(argc, argv);
    fmt::print(stderr, "quilt: unknown command `{}`\n{}", cmd, kUsage);
    return kExitUsage;
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
