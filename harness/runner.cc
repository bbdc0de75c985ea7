#include "harness/runner.h"

#include "backends/xrt_board.h"
#include "harness/clock.h"
#include "harness/metrics.h"
#include "harness/mpi.h"
#include "harness/output.h"
#include "harness/pipeline_run.h"
#include "harness/planning.h"
#include "harness/provenance.h"
#include "harness/report.h"
#include "harness/result_sink.h"
#include "harness/sweep.h"
#include "harness/training.h"
#include "models/quilt_model.h"
#include "models/torchscript.h"
#include "models/zoo.h"
#include "results/reader.h"
#include "results/writer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

namespace quilt::harness {

namespace {

// A ConfigError about `run` of `experiment`: names the run by its swept values.
struct RunPlace {
  const Experiment& experiment;
  const RunConfig& run;
  ConfigError operator()(const std::string& key, const std::string& message) const {
    std::string swept;
    for (const auto& [k, v] : run.swept)
      swept += fmt::format("{}{}={}", swept.empty() ? "" : ", ", k, clip(v));
    return ConfigError(
        experiment.path, 0, 0, key,
        swept.empty() ? message : fmt::format("{} (in the run with {})", message, swept));
  }
};

// The base model of `run` (built once per arch, input, classes and TorchScript file), or the
// ConfigError naming the key at fault.
const models::Model& checked_base(const RunConfig& run, const RunPlace& where,
                                  std::map<std::string, models::Model>& bases) {
  const bool torchscript = run.model.arch == models::kTorchScriptArch;
  std::string key =
      run.params.at("model.arch") + run.params.at("model.input") + run.params.at("model.classes");
  if (auto it = run.params.find("model.width"); it != run.params.end()) key += "w" + it->second;
  if (torchscript)
    key += "\n" + run.model.path + "\n" + fmt::format("{}", fmt::join(run.model.cuts, ","));
  try {
    if (!bases.count(key)) {
      torch::NoGradGuard no_grad;
      bases.emplace(key, models::make_model(run.model.arch, model_options(run.model)));
    }
  } catch (const models::ModelError& e) {
    // TorchScript errors name their own key (model.path, model.input, partition.cuts).
    if (torchscript) {
      std::string what = e.what();
      std::string key = "partition.cuts";
      for (const char* k : {"model.path", "model.input", "model.weights"})
        if (what.rfind(std::string(k) + ": ", 0) == 0) {
          key = k;
          what = what.substr(key.size() + 2);
        }
      throw where(key, what);
    }
    throw where("model.input", e.what());
  } catch (const std::exception& e) {
    // LibTorch's allocation failures (c10::Error, std::bad_alloc) for absurd sizes.
    std::string what = e.what();
    throw where("model", fmt::format("cannot build {} with input {} and {} classes: {}",
                                     run.model.arch, run.params.at("model.input"),
                                     run.model.classes, what.substr(0, what.find('\n'))));
  }
  return bases.at(key);
}

// The model: its name, weights file, and whether it can train.
void check_model(const RunConfig& run, const RunPlace& where) {
  const auto names = models::model_names();
  const bool torchscript = run.model.arch == models::kTorchScriptArch;
  if (!torchscript && std::find(names.begin(), names.end(), run.model.arch) == names.end()) {
    std::string valid;
    for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
    valid += ", torchscript (with model.path: a TorchScript file)";
    throw where("model.arch",
                fmt::format("unknown model `{}`; valid models: {}", clip(run.model.arch), valid));
  }
  if (run.model.weights != "random" && !std::filesystem::exists(run.model.weights))
    throw where("model.weights", fmt::format("weights file `{}` does not exist (give a state_dict "
                                             "saved with torch.save, or `random`)",
                                             clip(run.model.weights)));
}

// The classes of the run's data known without reading it; 0 where only the files say
// (tensor-folder). As trainers::load_dataset and harness::detail::load_data make them.
int64_t known_classes(const RunConfig& run, int64_t outputs) {
  switch (run.data.kind) {
    case DataKind::kSynthetic:
      return std::max<int64_t>(2, std::min<int64_t>(outputs, 10));
    case DataKind::kFashionMnist:
    case DataKind::kCifar10:
    case DataKind::kUciDigits:
      return 10;
    case DataKind::kUciIris:
    case DataKind::kUciWine:
      return 3;
    case DataKind::kUciBreastCancer:
      return 2;
    default:
      return 0;
  }
}

// A TorchScript model asked to train: it has parameters, its graph before freezing can be cut
// where the run cuts, and it is a classifier of the data's classes ([N, classes] out).
void check_torchscript_training(const RunConfig& run, const models::Model& base,
                                const RunPlace& where) {
  const auto* ts = dynamic_cast<const models::TorchScriptModelImpl*>(base.get());
  if (ts == nullptr || !run.training.mode) return;
  if (ts->parameters().empty())
    throw where("training.mode",
                fmt::format("`{}` needs trainable weights: {}; valid for this model: `mode: none`",
                            to_string(run.training.mode), ts->training_error()));
  if (!ts->training_error().empty()) throw where("partition.cuts", ts->training_error());
  const models::Shape out = ts->unit_out_shapes(ts->units().size() - 1).front();
  if (out.size() != 1)
    throw where("model.path",
                fmt::format("training needs a classifier, whose output is [N, classes]; the "
                            "TorchScript model `{}` returns [N, {}] for input {}; valid: a model "
                            "that returns [N, classes], or `training.mode: none` to run this one",
                            clip(run.model.path), fmt::join(out, ", "),
                            models::to_string(ts->input_shape())));
  const int64_t classes = known_classes(run, out[0]);
  if (classes > out[0])
    throw where("data.kind",
                fmt::format("`{}` has {} classes but the TorchScript model `{}` has {} output(s) "
                            "([N, {}]); valid: data with at most {} classes, or a model with {} "
                            "outputs",
                            to_string(run.data.kind), classes, clip(run.model.path), out[0], out[0],
                            out[0], classes));
}

// The cuts of `run` on `base`: known names, few enough boards, autoencoders that fit.
void check_cuts(const RunConfig& run, const models::Model& base, const RunPlace& where) {
  for (const auto& name : run.partition.automatic ? run.partition.fixed : run.partition.cuts) {
    bool known = false;
    for (const auto& c : base->cuts()) known = known || c.name == name;
    if (!known) {
      std::string valid;
      for (const auto& c : base->cuts()) valid += (valid.empty() ? "" : ", ") + c.name;
      throw where(run.partition.automatic ? "partition.fixed" : "partition.cuts",
                  fmt::format("unknown cut `{}` for {}; valid cuts: {}", clip(name), run.model.arch,
                              valid));
    }
  }
  if (run.partition.automatic && static_cast<size_t>(run.boards.count) > base->cuts().size() + 1)
    throw where("boards.count",
                fmt::format("{} has {} cut point(s), so at most {} boards; got {}", run.model.arch,
                            base->cuts().size(), base->cuts().size() + 1, run.boards.count));
  if (run.partition.automatic) return;
  try {
    models::QuiltModel qm(base, run.partition.cuts, autoencoder_options(run.autoencoder));
    for (const auto& t : qm->traffic()) {
      const bool flat = t.tensors.front().shape.size() == 1;  // UNet's skips: all 3-D
      const AutoencoderKind kind = run.autoencoder.kind;
      if (run.autoencoder.rate > 1 &&
          ((kind == AutoencoderKind::kConv && flat) || (kind == AutoencoderKind::kLinear && !flat)))
        throw where(
            "autoencoder.kind",
            fmt::format("`{}` does not fit cut {} (a {} tensor of shape {}); use "
                        "`auto`, or `{}`",
                        to_string(kind), t.cut, flat ? "1-D" : "feature-map",
                        models::to_string(t.shape),
                        to_string(flat ? AutoencoderKind::kLinear : AutoencoderKind::kConv)));
    }
  } catch (const models::ModelError& e) {
    throw where("partition.cuts", e.what());
  }
}

}  // namespace

void check_experiment(const Experiment& experiment, int ranks) {
  std::map<std::string, models::Model> bases;
  for (const auto& run : experiment.runs) {
    const RunPlace where{experiment, run};
    if (ranks > 0 && run.boards.count != ranks) {
      throw where("boards.count",
                  fmt::format("the experiment needs {} boards, one MPI rank each, but {} rank(s) "
                              "were started; run it with `mpirun -n {} quilt run {}`",
                              run.boards.count, ranks, run.boards.count, experiment.path));
    }
    check_model(run, where);
    const models::Model& base = checked_base(run, where, bases);
    check_cuts(run, base, where);
    check_torchscript_training(run, base, where);
    // Pipeline runs: the profile must load and the cuts must be plannable (`auto` searched).
    if (!run.training.mode) {
      try {
        plan_run(run, base, experiment.path);
      } catch (const ConfigError& e) {
        throw where(e.key(), e.message());
      }
    }
    if (!run.data.path.empty() && !std::filesystem::exists(run.data.path))
      throw where("data.path", fmt::format("`{}` does not exist", run.data.path));
    std::string training_key;
    if (auto why = training_config_error(run, &training_key); !why.empty())
      throw where(training_key, why);
  }
}

std::string unavailable_reason(const RunConfig& run) {
  if (!run.training.mode && run.data.kind != DataKind::kSynthetic)
    return fmt::format("data.kind `{}` feeds training; pipeline runs use synthetic inputs",
                       to_string(run.data.kind));
  if (run.boards.backend == Backend::kXrt && !backends::xrt_built())
    return "boards.backend `xrt`: this build has no XRT backend (install libxrt-dev and uuid-dev "
           "and reconfigure; -DQUILT_XRT=ON makes it required); valid here: emulator, null";
  if (run.boards.time_model == TimeModel::kMeasured &&
      (run.links.h2d_gbps > 0 || run.links.d2h_gbps > 0 || run.links.latency_s > 0))
    return "links: h2d_gbps, d2h_gbps and latency_s model the host<->board link, which only "
           "the dilated and modeled time models have; under `measured` the link is this "
           "machine's (use boards.time_model: dilated or modeled; links.mpi_gbps and "
           "links.mpi_latency_s, the network between ranks, are allowed under measured)";
  return "";
}

namespace {

// Rank 0's decision about the output file, shared with every rank: the runs to skip, or an
// error that stops the experiment before anything runs. Rank 0 holds the output's lock from here
// to the end of the job.
struct OutputPlan {
  std::string error;
  std::vector<std::string> skip;       // ids of runs already complete (status ok) in the file
  bool exists = false;                 // rank 0: a regular file is at the output path
  results::ExperimentRecord existing;  // rank 0 only
  OutputLock lock;                     // rank 0 only
};

OutputPlan plan_output(const Experiment& experiment, const RunOptions& options,
                       const std::string& output, MPI_Comm comm) {
  OutputPlan plan;
  // Everything rank 0 does alone is caught here and shared: a rank that throws alone would leave
  // the others waiting in the broadcast below.
  if (mpi::rank(comm) == 0 && !output.empty()) {
    try {
      plan.exists = check_output_path(output);
      plan.lock = OutputLock::acquire(output, "experiment " + experiment.name);
      if (plan.exists && options.resume) {
        try {
          plan.existing = results::read_experiment(output);
        } catch (const std::exception& e) {
          throw ConfigError(output, 0, 0, "--resume",
                            fmt::format("cannot read the file to continue it: {}", e.what()));
        }
        if (plan.existing.experiment_hash != experiment.hash) {
          plan.error = fmt::format(
              "--resume refused: the file holds experiment `{}` (hash {}), not this one "
              "(`{}`, hash {}); the experiment file or its scale changed. Use another --output or "
              "--overwrite",
              clip(plan.existing.name), plan.existing.experiment_hash, experiment.name,
              experiment.hash);
        }
        for (const auto& run : plan.existing.runs)
          if (run.status == "ok") plan.skip.push_back(run.id);
      } else if (plan.exists && !options.overwrite) {
        plan.error =
            "already exists; pass --resume to continue it (finished runs are kept and skipped) "
            "or --overwrite to replace it";
      }
    } catch (const ConfigError& e) {
      // Thrown again below with the output as the place.
      plan.error = e.key().empty() ? e.message() : fmt::format("`{}`: {}", e.key(), e.message());
    } catch (const std::exception& e) {
      plan.error = e.what();
    }
    if (!plan.error.empty()) plan.lock = OutputLock();
  }
  plan.error = mpi::broadcast_string(plan.error, 0, comm);
  std::string skip;
  for (const auto& id : plan.skip) skip += id + "\n";
  skip = mpi::broadcast_string(skip, 0, comm);
  plan.skip.clear();
  for (size_t pos = 0; pos < skip.size();) {
    size_t nl = skip.find('\n', pos);
    plan.skip.push_back(skip.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return plan;
}

// XRT boards: the device, the xclbin and the stage's kernel are checked on every rank before
// the first run (and before the result file is created), so a board that is not there is bad
// input (exit 2, nothing written), not a failed run.
void check_xrt_boards(const Experiment& experiment, MPI_Comm comm) {
  const int me = mpi::rank(comm);
  std::set<std::pair<std::string, std::string>> checked;
  std::string error;
  for (const RunConfig& run : experiment.runs) {
    if (run.boards.backend != Backend::kXrt || run.boards.fallback == Fallback::kEmulator ||
        run.training.mode || !unavailable_reason(run).empty())
      continue;
    const std::string device =
        run.boards.devices.empty() ? "" : run.boards.devices.at(static_cast<size_t>(me));
    if (!checked.insert({device, run.boards.xclbin}).second) continue;
    try {
      backends::check_xrt_stage(device, run.boards.xclbin, "", static_cast<size_t>(me));
    } catch (const std::exception& e) {
      error = fmt::format("rank {}: {}", me, e.what());
      break;
    }
  }
  auto errors = mpi::gather_strings(error, 0, comm);
  if (!mpi::all_ok(error.empty(), comm)) {
    std::string all;
    for (const auto& e : errors)
      if (!e.empty()) all += (all.empty() ? "" : "; ") + e;
    // Every rank throws the same error (rank 0 knows all of them; the others their own).
    throw ConfigError(experiment.path, 0, 0, "boards",
                      me == 0         ? all
                      : error.empty() ? "see rank 0"
                                      : error);
  }
}

// The experiment's record before any run: what a resumed file held (rank 0), and provenance.
results::ExperimentRecord start_record(const Experiment& experiment, const RunOptions& options,
                                       OutputPlan& plan, MPI_Comm comm) {
  results::ExperimentRecord record;
  if (mpi::rank(comm) == 0 && options.resume) record = std::move(plan.existing);
  record.name = experiment.name;
  record.experiment_hash = experiment.hash;
  std::string created = record.provenance.created_utc;
  record.provenance = collect_provenance(options.command_line, comm);
  if (!created.empty()) record.provenance.created_utc = created;
  record.provenance.experiment_path = experiment.path;
  record.provenance.experiment_text = experiment.text;
  record.provenance.resolved_experiment = experiment.resolved;
  record.provenance.scale = experiment.scale;
  record.provenance.start_utc = utc_now_iso8601();
  return record;
}

// The file exists from the start (with provenance and no runs), so that an output that cannot
// be written is found before anything runs: bad input, exit 2. --overwrite keeps the old file
// until the first run replaces it. Rank 0 gets the sink (none without an output path).
std::unique_ptr<Hdf5Sink> open_result_file(const results::ExperimentRecord& record,
                                           const RunOptions& options, const OutputPlan& plan,
                                           const std::string& output, MPI_Comm comm) {
  std::unique_ptr<Hdf5Sink> sink;
  std::string error;
  if (mpi::rank(comm) == 0 && !output.empty()) {
    try {
      mpi::WriteScope writing;
      sink = std::make_unique<Hdf5Sink>(
          plan.exists && options.resume ? results::Appender::resume(output, record)
                                        : results::Appender::create(output, record, plan.exists));
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  error = mpi::broadcast_string(error, 0, comm);
  if (!error.empty()) throw ConfigError(output, 0, 0, "", error);
  return sink;
}

}  // namespace

results::ExperimentRecord run_experiment(const Experiment& experiment, const RunOptions& options,
                                         MPI_Comm comm, RunOutcome* outcome) {
  const bool root = mpi::rank(comm) == 0;
  const std::string output = options.output.empty() ? experiment.output : options.output;

  OutputPlan plan = plan_output(experiment, options, output, comm);
  if (!plan.error.empty()) throw ConfigError(output, 0, 0, "", plan.error);
  check_xrt_boards(experiment, comm);
  results::ExperimentRecord record = start_record(experiment, options, plan, comm);
  std::unique_ptr<Hdf5Sink> file = open_result_file(record, options, plan, output, comm);
  RunOutcome local_outcome;
  Sweep sweep(std::move(record), std::move(file), options.print, outcome ? *outcome : local_outcome,
              comm);

  PipelineRunner pipeline(experiment, options, sweep, comm);
  for (size_t r = 0; r < experiment.runs.size(); ++r) {
    const RunConfig& run = experiment.runs[r];
    if (options.run_index >= 0 && static_cast<size_t>(options.run_index) != r) continue;
    const bool skip = std::find(plan.skip.begin(), plan.skip.end(), run.id) != plan.skip.end();
    if (!skip && sweep.stop_now()) break;
    if (root) sweep.started(run, r, experiment.runs.size(), skip);
    if (skip) continue;
    if (run.training.mode) {  // accuracy runs: harness/training.h
      results::RunRecord rec = run_training(run, {experiment.path, output, options.print}, comm);
      if (root) sweep.finished(run, rec);
      if (options.fail_fast && rec.status != "ok") break;
      continue;
    }
    if (pipeline.run(run)) break;
  }
  // The last run's write (and a signal during it) reaches every rank too.
  sweep.stop_now();
  return std::move(sweep.record());
}
std::string summary_table(const results::ExperimentRecord& record) {
  std::string out;
  out += fmt::format("\n{}: {} run(s)\n", record.name, record.runs.size());
  bool any_pipeline = false, any_training = false;
  for (const auto& run : record.runs)
    (run.training.mode.empty() ? any_pipeline : any_training) = true;
  // Each kind of run under its own header: training runs first, then pipeline runs.
  if (any_training) {
    out += training_summary_header();
    for (const auto& run : record.runs)
      if (!run.training.mode.empty()) out += training_summary_line(run);
  }
  if (!any_pipeline) return out;
  if (any_training) out += "\n";
  out += fmt::format(
      "{:<12} {:>7} {:>7} {:>11} {:>9} {:>13} {:>13} | {:>5} {:<28} {:>11} {:>11} {:>11}\n", "run",
      "R", "eff. R", "samples/s", "p50 ms", "B/sample@cut", "wire B/sample", "stage", "units",
      "compute ms", "recv wait", "send wait");
  for (const auto& run : record.runs) {
    auto rate = run.params.count("autoencoder.rate") ? run.params.at("autoencoder.rate") : "-";
    std::string eff =
        run.cut_effective_rate.empty() ? "-" : fmt::format("{:.1f}", run.cut_effective_rate[0]);
    std::string bytes =
        run.cut_bytes_per_sample.empty() ? "-" : std::to_string(run.cut_bytes_per_sample[0]);
    std::string wire = run.cut_wire_bytes_per_sample.empty()
                           ? "-"
                           : std::to_string(run.cut_wire_bytes_per_sample[0]);
    if (!run.training.mode.empty()) continue;
    if (run.status != "ok" && run.stages.empty()) {
      out += fmt::format("{:<12} {:>7} FAILED: {}\n", run.id, rate, run.failure);
      continue;
    }
    for (size_t s = 0; s < run.stages.size(); ++s) {
      const auto& st = run.stages[s];
      auto ms = [](const std::vector<double>& v) { return fmt::format("{:.1f}", 1e3 * median(v)); };
      if (s == 0) {
        out += fmt::format("{:<12} {:>7} {:>7} {:>11.2f} {:>9.1f} {:>13} {:>13} |", run.id, rate,
                           eff, run.throughput_sps, 1e3 * run.latency_p50_s, bytes, wire);
      } else {
        out += fmt::format("{:<12} {:>7} {:>7} {:>11} {:>9} {:>13} {:>13} |", "", "", "", "", "",
                           "", "");
      }
      out += fmt::format(" {:>5} {:<28} {:>11} {:>11} {:>11}\n", s, st.units, ms(st.compute_s),
                         ms(st.recv_wait_s), ms(st.send_wait_s));
    }
    if (run.status != "ok") out += fmt::format("{:<12} FAILED: {}\n", "", run.failure);
  }
  out +=
      "compute/recv wait/send wait: median per batch. B/sample: bytes of one sample crossing "
      "the cut without / with the autoencoder, in the run's precision (float32: 4 per "
      "element).\n";
  return out;
}

}  // namespace quilt::harness
