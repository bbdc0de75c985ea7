#include "harness/runner.h"

#include "backends/inference.h"
#include "backends/precision.h"
#include "backends/registry.h"
#include "backends/xrt_board.h"
#include "harness/clock.h"
#include "harness/cpu_wait.h"
#include "harness/metrics.h"
#include "harness/mpi.h"
#include "harness/output.h"
#include "harness/pack.h"
#include "harness/pipeline.h"
#include "harness/planning.h"
#include "harness/provenance.h"
#include "harness/report.h"
#include "harness/time_model.h"
#include "harness/trace.h"
#include "harness/training.h"
#include "models/quilt_model.h"
#include "models/state_dict.h"
#include "models/zoo.h"
#include "results/reader.h"
#include "results/writer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

namespace quilt::harness {

namespace {

// Whether a weights file holds autoencoders too (a QuiltModel's state_dict, as training runs
// save it: keys "ae_<cut>..."): then it loads into the QuiltModel, not into the base model.
bool has_autoencoder_weights(const std::string& path) {
  for (const auto& [key, tensor] : models::read_state_dict(path))
    if (key.rfind("ae_", 0) == 0) return true;
  return false;
}

std::string stage_units(const models::QuiltModelImpl& qm, size_t k) {
  const auto& spec = qm.stage(k);
  const auto& units = qm.base()->units();
  std::string s = units.at(spec.first_unit).name;
  if (spec.end_unit - spec.first_unit > 1) s += ".." + units.at(spec.end_unit - 1).name;
  if (k > 0 && qm.has_autoencoder(k - 1)) s = "decoder+" + s;
  if (k + 1 < qm.num_stages() && qm.has_autoencoder(k)) s += "+encoder";
  return s;
}

// Seeded with data.seed + seed_offset: the measured batches use offset 0, int8 calibration
// kCalibrationSeedOffset (other batches of the same data).
std::vector<at::Tensor> make_inputs(const RunConfig& run, const models::Shape& input_shape,
                                    int64_t count, uint64_t seed_offset = 0) {
  torch::manual_seed(run.data.seed + seed_offset);
  std::vector<int64_t> shape = {run.measurement.batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  std::vector<at::Tensor> pool;
  for (int64_t i = 0; i < count; ++i) pool.push_back(torch::randn(shape));
  return pool;
}

std::string pack_stage(const results::StageRecord& s, const std::vector<double>& end_s) {
  Packer p;
  p.put(s.rank);
  p.put(s.host);
  p.put(s.board);
  p.put(s.board_description);
  p.put(s.units);
  p.put(s.in_shape);
  p.put(s.out_shape);
  p.put(s.bytes_sent);
  p.put(s.bytes_received);
  p.put(s.compute_s);
  p.put(s.recv_wait_s);
  p.put(s.send_wait_s);
  p.put(s.predicted_compute_s);
  p.put(s.predicted_comm_s);
  p.put(s.predicted_exec_s);
  p.put(s.h2d_s);
  p.put(s.d2h_s);
  p.put(s.energy_j);
  p.put(end_s);
  return p.bytes();
}

results::StageRecord unpack_stage(const std::string& bytes, std::vector<double>* end_s) {
  results::StageRecord s;
  Unpacker u(bytes);
  u.get(s.rank);
  u.get(s.host);
  u.get(s.board);
  u.get(s.board_description);
  u.get(s.units);
  u.get(s.in_shape);
  u.get(s.out_shape);
  u.get(s.bytes_sent);
  u.get(s.bytes_received);
  u.get(s.compute_s);
  u.get(s.recv_wait_s);
  u.get(s.send_wait_s);
  u.get(s.predicted_compute_s);
  u.get(s.predicted_comm_s);
  u.get(s.predicted_exec_s);
  u.get(s.h2d_s);
  u.get(s.d2h_s);
  u.get(s.energy_j);
  u.get(*end_s);
  return s;
}

// Input pool size: two distinct batches, so a stage cannot get away with caching its result.
constexpr int64_t kInputPool = 2;
constexpr uint64_t kCalibrationSeedOffset = 0x5eed;
// dilated: the stretch factor is the slowest stage's real/modeled compute ratio times this.
constexpr double kDilationMargin = 1.3;
// dilated: ... and at least so much that every board's paced batch lasts this long (wall).
constexpr double kMinPacedBatchS = 0.05;

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

void check_experiment(const Experiment& experiment, int ranks) {
  std::map<std::string, models::Model> bases;
  for (const auto& run : experiment.runs) {
    auto where = [&](const std::string& key, const std::string& message) {
      std::string swept;
      for (const auto& [k, v] : run.swept)
        swept += fmt::format("{}{}={}", swept.empty() ? "" : ", ", k, clip(v));
      return ConfigError(
          experiment.path, 0, 0, key,
          swept.empty() ? message : fmt::format("{} (in the run with {})", message, swept));
    };
    if (ranks > 0 && run.boards.count != ranks) {
      throw where("boards.count",
                  fmt::format("the experiment needs {} boards, one MPI rank each, but {} rank(s) "
                              "were started; run it with `mpirun -n {} quilt run {}`",
                              run.boards.count, ranks, run.boards.count, experiment.path));
    }
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
      throw where("model.weights",
                  fmt::format("weights file `{}` does not exist (give a state_dict saved with "
                              "torch.save, or `random`)",
                              clip(run.model.weights)));
    if (torchscript && run.training.mode != "none")
      throw where("training.mode",
                  fmt::format("training is not supported for TorchScript models (their weights "
                              "are frozen into the graph); use `mode: none`, got `{}`",
                              run.training.mode));
    std::string key =
        run.params.at("model.arch") + run.params.at("model.input") + run.params.at("model.classes");
    if (auto it = run.params.find("model.width"); it != run.params.end()) key += "w" + it->second;
    if (torchscript)
      key += "\n" + run.model.path + "\n" + fmt::format("{}", fmt::join(run.model.cuts, ","));
    try {
      if (!bases.count(key)) {
        torch::NoGradGuard no_grad;
        models::ModelOptions opts;
        opts.input_shape = run.model.input;
        opts.num_classes = run.model.classes;
        opts.width = run.model.width;
        opts.path = run.model.path;
        opts.cuts = run.model.cuts;
        bases.emplace(key, models::make_model(run.model.arch, opts));
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
    const auto& base = bases.at(key);
    for (const auto& name : run.partition.automatic ? run.partition.fixed : run.partition.cuts) {
      bool known = false;
      for (const auto& c : base->cuts()) known = known || c.name == name;
      if (!known) {
        std::string valid;
        for (const auto& c : base->cuts()) valid += (valid.empty() ? "" : ", ") + c.name;
        throw where(run.partition.automatic ? "partition.fixed" : "partition.cuts",
                    fmt::format("unknown cut `{}` for {}; valid cuts: {}", clip(name),
                                run.model.arch, valid));
      }
    }
    if (run.partition.automatic && static_cast<size_t>(run.boards.count) > base->cuts().size() + 1)
      throw where(
          "boards.count",
          fmt::format("{} has {} cut point(s), so at most {} boards; got {}", run.model.arch,
                      base->cuts().size(), base->cuts().size() + 1, run.boards.count));
    if (!run.partition.automatic) {
      try {
        models::AutoencoderOptions ae{run.autoencoder.rate, run.autoencoder.kernel};
        models::QuiltModel qm(base, run.partition.cuts, ae);
        for (const auto& t : qm->traffic()) {
          const bool flat = t.tensors.front().shape.size() == 1;  // UNet's skips: all 3-D
          if (run.autoencoder.rate > 1 && ((run.autoencoder.kind == "conv" && flat) ||
                                           (run.autoencoder.kind == "linear" && !flat)))
            throw where("autoencoder.kind",
                        fmt::format("`{}` does not fit cut {} (a {} tensor of shape {}); use "
                                    "`auto`, or `{}`",
                                    run.autoencoder.kind, t.cut, flat ? "1-D" : "feature-map",
                                    models::to_string(t.shape), flat ? "linear" : "conv"));
        }
      } catch (const models::ModelError& e) {
        throw where("partition.cuts", e.what());
      }
    }
    // Pipeline runs: the profile must load and the cuts must be plannable (`auto` searched).
    if (run.training.mode == "none") {
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

namespace {

// Energy: measured by the boards themselves when every board gave a reading (stage energy_j
// already set), else from the board profile's power: per board, busy power while busy (h2d +
// compute + d2h in board time), idle power for the rest of the measured windows, plus link
// energy for the bytes moved between host and board.
void fill_energy(results::RunRecord& rec, const RunPlan& plan) {
  bool from_boards = !rec.stages.empty();
  for (const auto& st : rec.stages) from_boards = from_boards && st.energy_j >= 0;
  double window = 0;
  for (double d : rec.repetition_duration_s) window += d;
  const int64_t batches = rec.repetitions * rec.measured_batches;
  double total = 0;
  bool available = plan.power_busy_w >= 0 && plan.power_idle_w >= 0;
  for (auto& st : rec.stages) {
    double busy = 0;
    for (double x : st.compute_s) busy += x;
    for (double x : st.h2d_s) busy += x;
    for (double x : st.d2h_s) busy += x;
    st.busy_s = busy;
    if (from_boards) {
      total += st.energy_j;
      continue;
    }
    // The model's input and output are float32; tensors between stages are element_bytes each.
    const bool first = &st == &rec.stages.front(), last = &st == &rec.stages.back();
    const double in_bytes = static_cast<double>(first ? sizeof(float) : rec.element_bytes);
    const double out_bytes = static_cast<double>(last ? sizeof(float) : rec.element_bytes);
    const double link_bytes = static_cast<double>(rec.batch_size * batches) *
                              (in_bytes * static_cast<double>(numel(st.in_shape)) +
                               out_bytes * static_cast<double>(numel(st.out_shape)));
    st.energy_j = board_energy_j(busy, window, plan.power_busy_w, plan.power_idle_w, link_bytes,
                                 plan.link_energy_j_per_byte);
    if (st.energy_j < 0) available = false;
    total += st.energy_j;
  }
  const double samples = static_cast<double>(batches * rec.batch_size);
  if ((from_boards || available) && samples > 0) {
    rec.energy_j = total;
    rec.energy_per_sample_j = total / samples;
    rec.energy_source = from_boards ? "board" : "profile";
  }
}

}  // namespace

std::string unavailable_reason(const RunConfig& run) {
  if (run.training.mode == "none" && run.data.kind != "synthetic")
    return fmt::format("data.kind `{}` feeds training; pipeline runs use synthetic inputs",
                       run.data.kind);
  if (run.boards.backend == "xrt" && !backends::xrt_built())
    return "boards.backend `xrt`: this build has no XRT backend (install libxrt-dev and uuid-dev "
           "and reconfigure; -DQUILT_XRT=ON makes it required); valid here: emulator, null";
  if (run.boards.time_model == "measured" &&
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

// "rank 1: reason; rank 2: reason" from one string per rank; the first failing rank.
std::string join_errors(const std::vector<std::string>& errors, int64_t* first_rank) {
  std::string out;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    if (out.empty()) *first_rank = static_cast<int64_t>(r);
    out += fmt::format("{}rank {}: {}", out.empty() ? "" : "; ", r, errors[r]);
  }
  return out;
}

double metric_value(const results::RunRecord& rec, const std::string& metric) {
  if (metric == "throughput_sps") return rec.throughput_sps;
  if (metric == "latency_p50_s") return rec.latency_p50_s;
  if (metric == "latency_p90_s") return rec.latency_p90_s;
  if (metric == "latency_p99_s") return rec.latency_p99_s;
  if (metric == "duration_s") return rec.duration_s;
  if (metric == "max_abs_error") return rec.max_abs_error;
  TORCH_INTERNAL_ASSERT(false, "metric without a value: ", metric);
}

// `index` maps each run id in `runs` to its position (kept in step here), so that a sweep of
// 100,000 runs does not scan every earlier run after each one.
void replace_or_append(std::vector<results::RunRecord>& runs,
                       std::unordered_map<std::string, size_t>& index, results::RunRecord rec) {
  auto [at, added] = index.emplace(rec.id, runs.size());
  if (added)
    runs.push_back(std::move(rec));
  else
    runs[at->second] = std::move(rec);
}

}  // namespace

results::ExperimentRecord run_experiment(const Experiment& experiment, const RunOptions& options,
                                         MPI_Comm comm, RunOutcome* outcome) {
  const int me = mpi::rank(comm), n = mpi::size(comm);
  const bool root = me == 0;
  const std::string output = options.output.empty() ? experiment.output : options.output;

  OutputPlan plan = plan_output(experiment, options, output, comm);
  if (!plan.error.empty()) throw ConfigError(output, 0, 0, "", plan.error);

  // XRT boards: the device, the xclbin and the stage's kernel are checked on every rank before
  // the first run (and before the result file is created), so a board that is not there is bad
  // input (exit 2, nothing written), not a failed run.
  {
    std::set<std::pair<std::string, std::string>> checked;
    std::string error;
    for (const RunConfig& run : experiment.runs) {
      if (run.boards.backend != "xrt" || run.boards.fallback == "emulator" ||
          run.training.mode != "none" || !unavailable_reason(run).empty())
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
                        root            ? all
                        : error.empty() ? "see rank 0"
                                        : error);
    }
  }

  results::ExperimentRecord record;
  if (root && options.resume) record = plan.existing;
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

  // The file exists from the start (with provenance and no runs), so that an output that cannot
  // be written is found before anything runs: bad input, exit 2. --overwrite keeps the old file
  // until the first run replaces it.
  std::optional<results::Appender> appender;
  {
    std::string error;
    if (root && !output.empty()) {
      try {
        mpi::WriteScope writing;
        appender = plan.exists && options.resume
                       ? results::Appender::resume(output, record)
                       : results::Appender::create(output, record, plan.exists);
      } catch (const std::exception& e) {
        error = e.what();
      }
    }
    error = mpi::broadcast_string(error, 0, comm);
    if (!error.empty()) throw ConfigError(output, 0, 0, "", error);
  }
  // Rank 0 only: the first failure to write the file. Every rank learns of it at the next
  // agreement (stop_now) and the job ends with RunOutcome::output_error.
  std::string write_error;
  std::unordered_map<std::string, size_t> run_index;
  for (size_t i = 0; i < record.runs.size(); ++i) run_index.emplace(record.runs[i].id, i);
  auto save = [&](results::RunRecord rec) {
    record.provenance.end_utc = utc_now_iso8601();
    if (appender && write_error.empty()) {
      try {
        mpi::WriteScope writing;
        appender->commit(rec, record.provenance);
      } catch (const std::exception& e) {
        write_error = e.what();
      }
    }
    // A committed run's timeline lives in the file only: rank 0 keeps every run of the sweep in
    // memory for the summary, and must not keep every run's events too.
    if (appender && write_error.empty()) rec.trace = {};
    replace_or_append(record.runs, run_index, std::move(rec));
  };
  // The agreement between runs: whether rank 0 could write the last run, and whether any rank
  // was interrupted. Collective; true when the sweep must stop.
  RunOutcome local_outcome;
  RunOutcome& result = outcome ? *outcome : local_outcome;
  result = RunOutcome{};
  auto stop_now = [&]() {
    mpi::StallScope stall("the other ranks (between runs)");
    int flags[2] = {root && !write_error.empty() ? 1 : 0, mpi::interrupt_signal()};
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_MAX, comm),
               "MPI_Allreduce(stop)");
    if (flags[0]) result.output_error = mpi::broadcast_string(write_error, 0, comm);
    if (flags[1]) result.interrupt_signal = flags[1];
    return flags[0] != 0 || flags[1] != 0;
  };

  backends::BoardRegistry registry;
  backends::register_builtin_boards(registry);
  models::Model cached_base{nullptr};
  std::string base_key;
  bool cached_quilt_weights = false;  // cached_base's weights file holds autoencoders too

  for (size_t r = 0; r < experiment.runs.size(); ++r) {
    const RunConfig& run = experiment.runs[r];
    if (options.run_index >= 0 && static_cast<size_t>(options.run_index) != r) continue;
    const bool skip = std::find(plan.skip.begin(), plan.skip.end(), run.id) != plan.skip.end();
    if (!skip && stop_now()) break;
    if (root && options.print) {
      std::string swept;
      for (const auto& [k, v] : run.swept) swept += fmt::format(" {}={}", k, v);
      fmt::print("[{}/{}] run {}{}{}\n", r + 1, experiment.runs.size(), run.id, swept,
                 skip ? ": complete in the file, skipped" : "");
      if (!skip && run.training.mode != "none") fmt::print("  {}\n", describe_training(run));
      std::fflush(stdout);
    }
    if (skip) continue;
    if (run.training.mode != "none") {  // accuracy runs: harness/training.h
      results::RunRecord rec = run_training(run, {experiment.path, output, options.print}, comm);
      if (root) save(rec);
      if (options.fail_fast && rec.status != "ok") break;
      continue;
    }

    results::RunRecord rec;
    rec.id = run.id;
    rec.params = run.params;
    rec.batch_size = run.measurement.batch;
    rec.warmup_batches = run.measurement.warmup_batches;
    rec.measured_batches = run.measurement.batches;
    rec.repetitions = run.measurement.repetitions;
    rec.start_unix_s = unix_now_s();
    auto fail = [&](const std::vector<std::string>& errors) {
      rec.status = "failed";
      rec.failure = join_errors(errors, &rec.failed_rank);
      rec.end_unix_s = unix_now_s();
      if (options.print) fmt::print("  FAILED: {}\n", rec.failure);
      save(rec);
    };

    // Set-up on every rank; a failure anywhere fails the run everywhere, without a hang.
    at::set_num_threads(run.boards.threads);
    models::QuiltModel qm{nullptr};
    RunPlan plan;
    std::vector<at::Tensor> calibration;  // int8: model inputs of the calibration batches
    std::unique_ptr<backends::Board> board;
    std::string error;
    try {
      torch::NoGradGuard no_grad;
      models::AutoencoderOptions ae{run.autoencoder.rate, run.autoencoder.kernel};
      // Consecutive runs of a sweep often share the base model (only R, cuts or boards
      // change): build it once. Pipeline runs never change its weights.
      const std::string key =
          fmt::format("{}|{}|{}|{}|{}|{}", run.model.arch, fmt::join(run.model.input, "x"),
                      run.model.classes, run.model.weights, run.model.seed, run.model.width);
      if (base_key != key) {
        // The weights file is read once here to see what it holds, not once per run.
        cached_quilt_weights =
            run.model.weights != "random" && has_autoencoder_weights(run.model.weights);
        cached_base = build_base(run.model, !cached_quilt_weights);
        base_key = key;
      }
      models::Model base = cached_base;
      record_resolved_model(&rec.params, base->input_shape(), base->num_classes());
      // The autoencoders' initial weights depend on the seed only, not on the sweep's order.
      torch::manual_seed(run.model.seed + 0x9e3779b97f4a7c15ULL);
      plan = plan_run(run, base, experiment.path);
      qm = models::QuiltModel(base, plan.cuts, ae);
      // Weights saved by a training run (base and autoencoders): the same cuts and rate must
      // have made them, or loading names the key that does not fit.
      if (cached_quilt_weights) models::load_state_dict(*qm, run.model.weights);
      qm->eval();
      backends::StageAssignment assignment{qm.ptr(), static_cast<size_t>(me),
                                           run.measurement.batch};
      assignment.xclbin = run.boards.xclbin;
      assignment.precision = *backends::parse_precision(plan.precision);
      if (assignment.precision == backends::Precision::kInt8) {
        // The same batches on every rank (the experiment's data seed), carried through the
        // float32 stages before this one: each cut gets one quantization on both sides.
        calibration = make_inputs(run, qm->base()->input_shape(), run.boards.calibration_batches,
                                  kCalibrationSeedOffset);
        assignment.calibration = backends::stage_calibration_inputs(*qm, me, calibration);
      }
      if (root && assignment.precision == backends::Precision::kBf16 &&
          !backends::cpu_has_native_bf16())
        fmt::print(stderr,
                   "quilt: warning: run {}: boards.precision bf16 on a CPU without native bf16 "
                   "(no AVX-512 BF16 or AMX): oneDNN emulates it, so the emulator will be slower "
                   "here; the results stay correct\n",
                   run.id);
      if (!run.boards.devices.empty()) assignment.device = run.boards.devices.at(me);
      board = backends::make_loaded_board(registry, run.boards.backend, assignment,
                                          run.boards.fallback == "emulator" ? "emulator" : "");
    } catch (const std::exception& e) {
      error = e.what();
    }
    auto errors = mpi::gather_strings(error, 0, comm);
    if (!mpi::all_ok(error.empty(), comm)) {
      if (root) fail(errors);
      if (options.fail_fast) break;
      continue;
    }
    // SIGTERM (a batch system's time limit): the run in flight is recorded as interrupted and
    // the sweep stops; --resume runs it again. Checked once the boards are loaded (set-up can
    // take seconds, and a launcher that forwards the signal kills soon after) and after each
    // repetition.
    auto interrupted_after = [&](int64_t reps_done) {
      const int sig = mpi::any_interrupted(comm);
      if (sig == 0) return false;
      if (root) {
        rec.status = "interrupted";
        rec.failure = fmt::format("interrupted by signal {} ({}) after {} of {} repetition(s)", sig,
                                  strsignal(sig), reps_done, run.measurement.repetitions);
        rec.end_unix_s = unix_now_s();
        if (options.print) fmt::print("  INTERRUPTED: {}\n", rec.failure), std::fflush(stdout);
        save(rec);
      }
      result.interrupt_signal = sig;
      return true;
    };
    if (interrupted_after(0)) break;
    auto boards = mpi::gather_strings(board->description(), 0, comm);
    if (root) record.provenance.boards = boards;

    const size_t k = static_cast<size_t>(me);
    const auto& spec = qm->stage(k);
    std::vector<int64_t> in_shape = {run.measurement.batch}, out_shape = {run.measurement.batch};
    in_shape.insert(in_shape.end(), spec.in_shape.begin(), spec.in_shape.end());
    out_shape.insert(out_shape.end(), spec.out_shape.begin(), spec.out_shape.end());
    const bool last = me == n - 1;
    const bool check = run.measurement.check_outputs && run.boards.backend != "null";
    std::vector<at::Tensor> pool;
    if (root || (last && check)) pool = make_inputs(run, qm->base()->input_shape(), kInputPool);
    std::vector<at::Tensor> checked;  // last rank: outputs of batches that used pool[0]
    auto on_output = [&](int64_t i, const at::Tensor& out) {
      if (check && i % kInputPool == 0 && checked.size() < 4) checked.push_back(out.clone());
    };

    PipelineOptions popts;
    popts.warmup_batches = run.measurement.warmup_batches;
    popts.batches = run.measurement.batches;
    if (plan.precision == "bf16") popts.wire_dtype = at::kBFloat16;
    if (plan.precision == "int8") popts.wire_dtype = at::kByte;
    const int64_t element_bytes = plan.element_bytes;
    const std::string& time_model = run.boards.time_model;
    // The board's modeled times for one batch (dilated, modeled): the cost model's prediction.
    std::vector<BoardTimes> board_times;
    for (const auto& p : plan.stages)
      board_times.push_back({p.h2d_s, p.compute_s, p.d2h_s, p.mpi_s});
    auto run_once = [&](const PipelineOptions& o) {
      try {
        return run_pipeline(*board, in_shape, out_shape, root ? pool : std::vector<at::Tensor>{},
                            on_output, o, comm);
      } catch (const std::exception& e) {
        // An MPI failure: peers may be blocked in MPI calls waiting for this rank, so the only
        // way out is to abort the job. Every finished run is already safe in the result file.
        std::fprintf(stderr, "quilt: rank %d: run %s: MPI failure in the pipeline: %s\n", me,
                     run.id.c_str(), e.what());
        std::fflush(stderr);
        MPI_Abort(comm, 3);
      }
      return StageTiming{};
    };
    double dilation = 1;
    std::vector<SimulatedStage> simulated;
    bool failed = false, interrupted = false;
    if (time_model == "dilated") {
      // A short unpaced pilot measures how long this CPU takes per batch; one factor for all
      // ranks stretches every modeled time so that the slowest stage still keeps up.
      PipelineOptions pilot = popts;
      pilot.warmup_batches = 1;
      pilot.batches = 2;
      StageTiming t = run_once(pilot);
      double ratio = 0, real = t.compute_s.empty() ? 0 : median(t.compute_s);
      if (board_times[k].compute_s > 0) ratio = real / board_times[k].compute_s;
      double busy = board_times[k].busy_s() > 0 ? board_times[k].busy_s() : 1e300;
      mpi::check(MPI_Allreduce(MPI_IN_PLACE, &ratio, 1, MPI_DOUBLE, MPI_MAX, comm),
                 "MPI_Allreduce(dilation)");
      mpi::check(MPI_Allreduce(MPI_IN_PLACE, &busy, 1, MPI_DOUBLE, MPI_MIN, comm),
                 "MPI_Allreduce(dilation)");
      dilation = ratio > 0 ? ratio * kDilationMargin : 1.0;
      // Paced batches shorter than a few scheduler time slices would measure wake-up jitter.
      if (busy < 1e300) dilation = std::max(dilation, kMinPacedBatchS / busy);
      popts.pacing = {dilation * board_times[k].h2d_s, dilation * board_times[k].compute_s,
                      dilation * board_times[k].d2h_s};
    } else if (time_model == "modeled") {
      // Virtual time: a few real batches carry real tensors through the pipeline for the output
      // check; the times come from simulating the schedule on the profile's numbers.
      simulated =
          simulate_pipeline(board_times, popts.warmup_batches, popts.batches, popts.window_batches);
      popts.warmup_batches = 0;
      popts.batches = kInputPool;
    }
    // The timeline (measurement.trace): the measured pipeline, or the modeled schedule.
    const auto& ms0 = run.measurement;
    TraceRecorder trace(ms0.trace_batches((time_model == "modeled" ? 1 : ms0.repetitions) *
                                          (ms0.warmup_batches + ms0.batches)),
                        7);
    double trace_origin = 0;
    if (time_model == "modeled" && trace.enabled())
      record_simulated(trace, simulated[k], board_times[k], ms0.warmup_batches, me, n);
    else if (time_model != "modeled")
      popts.trace = &trace;
    StageTiming all;  // repetitions one after another
    std::vector<std::vector<double>> rep_start, rep_end;
    // Load (measured, dilated): run-queue delay of this rank's threads over the repetitions.
    const bool real_time = time_model != "modeled";
    double cpu_wait_total_s = 0, cpu_wall_total_s = 0;
    bool cpu_wait_known = real_time;
    for (int64_t rep = 0; rep < run.measurement.repetitions && !failed; ++rep) {
      StageTiming t;
      popts.trace_repetition = static_cast<int32_t>(rep);
      popts.trace_batch_offset = rep * run.measurement.batches;
      const double wait0 = real_time ? cpu_wait_s() : -1, wall0 = unix_now_s();
      if (time_model != "modeled" || rep == 0) t = run_once(popts);
      if (real_time) {
        const double wait1 = cpu_wait_s();
        cpu_wait_known = cpu_wait_known && wait0 >= 0 && wait1 >= 0;
        // A thread that ended during the window takes its share with it: never below 0.
        cpu_wait_total_s += std::max(0.0, wait1 - wait0);
        cpu_wall_total_s += unix_now_s() - wall0;
      }
      if (rep == 0 && time_model != "modeled") trace_origin = t.origin_s;
      auto errs = mpi::gather_strings(t.error, 0, comm);
      if (!mpi::all_ok(t.error.empty(), comm)) {
        if (root) fail(errs);
        failed = true;
        break;
      }
      if (interrupted_after(rep + 1)) {
        interrupted = true;
        failed = true;
        break;
      }
      auto append = [](std::vector<double>& to, const std::vector<double>& from) {
        to.insert(to.end(), from.begin(), from.end());
      };
      if (time_model == "modeled") {
        // Board time from the simulation; the real batches above only checked the outputs.
        const SimulatedStage& sim = simulated[k];
        t.compute_s = sim.compute_s;
        t.h2d_s = sim.h2d_s;
        t.d2h_s = sim.d2h_s;
        t.recv_wait_s = sim.recv_wait_s;
        t.send_wait_s = sim.send_wait_s;
        t.start_s = me == 0 ? sim.start_s : std::vector<double>{};
        t.end_s = last ? sim.end_s : std::vector<double>{};
        const int64_t nb = run.measurement.batches;
        t.bytes_sent = last ? 0 : nb * element_bytes * numel(out_shape);
        t.bytes_received = me == 0 ? 0 : nb * element_bytes * numel(in_shape);
      } else if (dilation != 1) {
        // Everything back to board time.
        for (auto* v : {&t.compute_s, &t.recv_wait_s, &t.send_wait_s, &t.h2d_s, &t.d2h_s,
                        &t.start_s, &t.end_s})
          for (double& x : *v) x /= dilation;
      }
      append(all.compute_s, t.compute_s);
      append(all.recv_wait_s, t.recv_wait_s);
      append(all.send_wait_s, t.send_wait_s);
      append(all.h2d_s, t.h2d_s);
      append(all.d2h_s, t.d2h_s);
      all.overruns += t.overruns;
      // Board-measured energy: summed over repetitions, unavailable if any lacks it.
      all.board_energy_j = rep == 0 ? t.board_energy_j
                           : (all.board_energy_j < 0 || t.board_energy_j < 0)
                               ? -1
                               : all.board_energy_j + t.board_energy_j;
      all.bytes_sent += t.bytes_sent;
      all.bytes_received += t.bytes_received;
      rep_start.push_back(t.start_s);
      rep_end.push_back(t.end_s);
    }
    if (interrupted) break;
    if (failed) {
      if (options.fail_fast) break;
      continue;
    }

    double max_abs = -1, max_rel = -1;
    if (last && check) {
      torch::NoGradGuard no_grad;
      // bf16 / int8: the reference is the same model quantized the same way in one process
      // (backends::run_in_precision), not float32, so the check asks for the same numbers.
      at::Tensor ref =
          plan.precision == "fp32"
              ? qm->forward(pool[0])
              : backends::run_in_precision(*qm, *backends::parse_precision(plan.precision),
                                           calibration, {pool[0]})[0];
      const double ref_max = ref.abs().max().item<double>();
      const double scale = std::max(ref_max, 1e-12);
      max_abs = 0;
      // std::max(x, NaN) is x: a NaN difference must not vanish into an error of 0.
      for (const auto& out : checked) {
        const double d = (out - ref).abs().max().item<double>();
        if (!std::isfinite(d) || !std::isfinite(ref_max)) {
          max_abs = std::numeric_limits<double>::quiet_NaN();
          break;
        }
        max_abs = std::max(max_abs, d);
      }
      max_rel = max_abs / scale;
    }

    results::StageRecord stage;
    stage.rank = me;
    stage.host = mpi::processor_name();
    stage.board = board->backend();
    stage.board_description = board->description();
    stage.units = stage_units(*qm, k);
    stage.in_shape = spec.in_shape;
    stage.out_shape = spec.out_shape;
    stage.bytes_sent = all.bytes_sent;
    stage.bytes_received = all.bytes_received;
    stage.compute_s = all.compute_s;
    stage.recv_wait_s = all.recv_wait_s;
    stage.send_wait_s = all.send_wait_s;
    stage.h2d_s = all.h2d_s;
    stage.d2h_s = all.d2h_s;
    stage.energy_j = time_model == "measured" ? all.board_energy_j : -1;
    stage.predicted_compute_s = plan.stages.at(k).compute_s;
    stage.predicted_comm_s = plan.stages.at(k).comm_s;
    stage.predicted_exec_s = plan.stages.at(k).exec_s;
    std::vector<double> ends;
    for (const auto& e : rep_end) ends.insert(ends.end(), e.begin(), e.end());
    auto packed = mpi::gather_strings(pack_stage(stage, ends), 0, comm);
    if (trace.enabled())
      rec.trace = gather_trace(trace, trace_origin, dilation,
                               time_model == "measured" ? "wall" : "board", comm);
    int64_t overruns = all.overruns;
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, &overruns, 1, MPI_INT64_T, MPI_SUM, comm),
               "MPI_Allreduce(overruns)");
    // The busiest rank's share of waiting for a CPU; -1 on every rank when one could not tell.
    struct {
      double fraction;
      int rank;
    } cpu_wait{cpu_wait_known && cpu_wall_total_s > 0 ? cpu_wait_total_s / cpu_wall_total_s : -1.0,
               me};
    {
      int known = cpu_wait.fraction >= 0 ? 1 : 0;
      mpi::check(MPI_Allreduce(MPI_IN_PLACE, &known, 1, MPI_INT, MPI_MIN, comm),
                 "MPI_Allreduce(cpu_wait)");
      mpi::check(MPI_Allreduce(MPI_IN_PLACE, &cpu_wait, 1, MPI_DOUBLE_INT, MPI_MAXLOC, comm),
                 "MPI_Allreduce(cpu_wait)");
      if (known == 0) cpu_wait.fraction = -1;
    }
    double errs[2] = {max_abs, max_rel};
    mpi::check(MPI_Bcast(errs, 2, MPI_DOUBLE, n - 1, comm), "MPI_Bcast");
    // Known on every rank. -1: no check; NaN (non-finite outputs) fails like a mismatch.
    const bool mismatch = !(errs[1] < 0) && !(errs[1] <= run.measurement.tolerance);
    if (!root) {
      if (options.fail_fast && mismatch) break;
      continue;
    }

    std::vector<double> end_s;
    for (const auto& bytes : packed) {
      std::vector<double> e;
      rec.stages.push_back(unpack_stage(bytes, &e));
      if (!e.empty()) end_s = e;
    }
    const int64_t nb = run.measurement.batches, batch = run.measurement.batch;
    const auto& ms = run.measurement;
    for (int64_t rep = 0; rep < ms.repetitions; ++rep) {
      const double* st = rep_start[rep].data();
      const double* en = end_s.data() + rep * nb;
      double tput = static_cast<double>((nb - 1) * batch) / (en[nb - 1] - en[0]);
      double duration = en[nb - 1] - st[0];
      rec.repetition_throughput_sps.push_back(tput);
      rec.repetition_duration_s.push_back(duration);
      for (int64_t i = 0; i < nb; ++i) rec.latency_s.push_back(en[i] - st[i]);
      if (ms.min_duration_s > 0 && duration < ms.min_duration_s)
        rec.invalid_reasons.push_back(fmt::format(
            "repetition {}: measured window {:.3f} s is shorter than min_duration_s {:g} s; "
            "raise measurement.batches",
            rep, duration, ms.min_duration_s));
      if (ms.min_samples > 0 && nb * batch < ms.min_samples)
        rec.invalid_reasons.push_back(
            fmt::format("repetition {}: {} samples measured, fewer than min_samples {}", rep,
                        nb * batch, ms.min_samples));
    }
    auto stats = summarize(rec.repetition_throughput_sps);
    rec.throughput_sps = stats.median;
    rec.throughput_median_sps = stats.median;
    rec.throughput_mean_sps = stats.mean;
    rec.throughput_std_sps = stats.stddev;
    rec.throughput_ci95_low_sps = stats.ci95_low;
    rec.throughput_ci95_high_sps = stats.ci95_high;
    rec.duration_s = median(rec.repetition_duration_s);
    rec.latency_p50_s = percentile(rec.latency_s, 50);
    rec.latency_p90_s = percentile(rec.latency_s, 90);
    rec.latency_p99_s = percentile(rec.latency_s, 99);
    rec.time_model = time_model;
    rec.dilation = dilation;
    rec.overruns = overruns;
    if (overruns > 0)
      rec.invalid_reasons.push_back(fmt::format(
          "dilated: in {} measured batch(es) the CPU took longer than the paced board time x {:.3g}"
          " (dilation too small for this machine's load); the times of those batches are not "
          "board times",
          overruns, dilation));
    rec.cpu_wait_fraction = cpu_wait.fraction;
    if (ms.max_cpu_wait > 0 && cpu_wait.fraction > ms.max_cpu_wait)
      rec.invalid_reasons.push_back(fmt::format(
          "{}: rank {} waited for a CPU {:.0f}% of the measured time (more than "
          "measurement.max_cpu_wait {:.0f}%): other jobs share this host's CPUs, so the times are "
          "not this board's",
          time_model, cpu_wait.rank, 100 * cpu_wait.fraction, 100 * ms.max_cpu_wait));
    if (real_time && ms.max_cv > 0 && rec.repetition_throughput_sps.size() >= 2 && stats.mean > 0 &&
        stats.stddev / stats.mean > ms.max_cv)
      rec.invalid_reasons.push_back(fmt::format(
          "{}: throughput varies {:.1f}% (stddev / mean) between the {} repetitions, more than "
          "measurement.max_cv {:.1f}%: the host's load changed during the run",
          time_model, 100 * stats.stddev / stats.mean, rec.repetition_throughput_sps.size(),
          100 * ms.max_cv));
    rec.precision = plan.precision;
    rec.element_bytes = element_bytes;
    fill_energy(rec, plan);
    rec.validity = rec.invalid_reasons.empty() ? "valid" : "invalid";
    for (const auto& t : qm->traffic()) {
      rec.cut_names.push_back(t.cut);
      // The model counts float32 bytes; the wire carries element_bytes per element.
      rec.cut_bytes_per_sample.push_back(t.bytes_per_sample / 4 * element_bytes);
      rec.cut_wire_bytes_per_sample.push_back(t.wire_bytes_per_sample / 4 * element_bytes);
      rec.cut_requested_rate.push_back(t.requested_rate);
      rec.cut_effective_rate.push_back(t.effective_rate);
    }
    rec.max_abs_error = errs[0];
    if (plan.searched) {
      std::string chosen;
      for (const auto& c : plan.cuts) chosen += (chosen.empty() ? "" : ", ") + c;
      rec.params["partition.chosen_cuts"] = "[" + chosen + "]";
    }
    rec.status = "ok";
    if (mismatch) {
      rec.status = "failed";
      rec.failed_rank = n - 1;
      rec.failure =
          std::isfinite(errs[1])
              ? fmt::format(
                    "pipeline outputs differ from the single-process model: max relative error "
                    "{:.3g} > measurement.tolerance {:.3g}",
                    errs[1], ms.tolerance)
              : "the outputs are not finite (NaN or Inf in the pipeline's or the single-process "
                "model's outputs; are the weights finite?), so they cannot be checked";
    }
    for (const auto& ref : run.references) {
      results::MetricCheck c;
      c.metric = ref.metric;
      c.value = metric_value(rec, ref.metric);
      c.reference = ref.value;
      c.tolerance = ref.tolerance;
      c.better = ref.better;
      c.passed = ref.better == "higher" ? c.value >= ref.value * (1 - ref.tolerance)
                                        : c.value <= ref.value * (1 + ref.tolerance);
      rec.checks.push_back(c);
    }
    rec.end_unix_s = unix_now_s();
    save(rec);
    if (options.print) {
      fmt::print("  {:.2f} samples/s", rec.throughput_sps);
      if (ms.repetitions > 1)
        fmt::print(" (95% CI {:.2f}..{:.2f}, {} repetitions)", rec.throughput_ci95_low_sps,
                   rec.throughput_ci95_high_sps, ms.repetitions);
      fmt::print(", latency p50 {:.1f} ms", 1e3 * rec.latency_p50_s);
      if (rec.energy_per_sample_j >= 0) fmt::print(", {:.4g} J/sample", rec.energy_per_sample_j);
      if (rec.time_model != "measured")
        fmt::print(" ({} board time{})", rec.time_model,
                   rec.time_model == "dilated" ? fmt::format(", dilation {:.3g}", rec.dilation)
                                               : std::string());
      if (rec.validity != "valid")
        fmt::print("  INVALID: {}", fmt::join(rec.invalid_reasons, "; "));
      for (const auto& c : rec.checks)
        fmt::print("  {} {} {:.4g} vs {:.4g}", c.passed ? "PASS" : "FAIL", c.metric, c.value,
                   c.reference);
      if (rec.status != "ok") fmt::print("  FAILED: {}", rec.failure);
      fmt::print("\n");
      std::fflush(stdout);
    }
    if (options.fail_fast && rec.status != "ok") break;
  }
  // The last run's write (and a signal during it) reaches every rank too.
  stop_now();
  return record;
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
