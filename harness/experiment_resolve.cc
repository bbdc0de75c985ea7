#include "common/model_width.h"
#include "harness/experiment_parts.h"
#include "harness/hash.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

namespace quilt::harness::detail {

using common::join;

namespace {

// The sections of the document as one run sees them (the file's values, with the scale's and the
// sweep's values for this run on top): `section("model")` checks the section's keys once more and
// gives its nodes.
class Sections {
 public:
  Sections(const Reader& r, const YAML::Node& root, const Overrides& overrides)
      : r_(r), root_(root), overrides_(overrides) {}
  Section operator()(const std::string& name) const {
    YAML::Node n = root_[name];
    if (n.IsDefined() && !n.IsNull()) {
      for (const auto& [sec, keys] : schema())
        if (sec == name) r_.check_keys(n, name, keys);
    }
    return Section(n, name, overrides_);
  }
  /// The whole document (for errors about a missing section).
  const YAML::Node& root() const { return root_; }

 private:
  const Reader& r_;
  const YAML::Node& root_;
  const Overrides& overrides_;
};

// The `model` section: reads and checks its keys into the run and records its parameters.
void resolve_model(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section model = section("model");
  if (!model["arch"])
    r.fail(section.root()["model"].IsDefined() ? section.root()["model"] : section.root(),
           "model.arch", "is required (e.g. `arch: resnet50`)");
  run.model.arch = r.text(model["arch"], "model.arch");
  if (auto n = model["input"]) {
    if (!n.IsSequence() || n.size() == 0 || n.size() > 3)
      r.fail(n, "model.input", "must be a list of 1 to 3 positive integers, e.g. [3, 224, 224]");
    for (const auto& d : n) run.model.input.push_back(r.integer(d, "model.input", 1, 1 << 16));
  }
  if (auto n = model["classes"]) run.model.classes = r.integer(n, "model.classes", 1, 1 << 24);
  if (auto n = model["width"]) {
    // The range is open at 0, which r.real's closed ranges cannot say.
    run.model.width = r.scalar<double>(n, "model.width", "a number");
    if (!common::valid_model_width(run.model.width))
      r.fail(n, "model.width",
             fmt::format("must be a number in (0, {}] (a channel multiplier of the stem and "
                         "every stage; 1 = the paper's model), got {}",
                         common::kMaxModelWidth, clip(n.Scalar())));
    if (run.model.width != 1.0 && !common::arch_has_width(run.model.arch))
      r.fail(n, "model.width",
             fmt::format("`{}` has no width multiplier; only {} take one (leave the key out or "
                         "set 1)",
                         clip(run.model.arch), common::kArchsWithWidth));
  }
  if (auto n = model["weights"]) run.model.weights = r.text(n, "model.weights");
  if (run.model.weights.empty())
    r.fail(model["weights"], "model.weights", "must be `random` or a state_dict file");
  if (auto n = model["seed"]) run.model.seed = r.integer(n, "model.seed", 0, INT64_MAX);
  if (auto n = model["path"]) {
    if (run.model.arch != "torchscript")
      r.fail(n, "model.path", "only applies with `arch: torchscript` (a TorchScript file)");
    run.model.path = r.text(n, "model.path");
  } else if (run.model.arch == "torchscript") {
    r.fail(model["arch"], "model.path",
           "is required with `arch: torchscript`: the file torch.jit.save wrote");
  }
  if (run.model.arch == "torchscript" && run.model.input.empty())
    r.fail(model["arch"], "model.input",
           "is required with `arch: torchscript`: the per-sample input shape, e.g. [3, 224, 224]");
  std::vector<std::string> dims;
  for (auto d : run.model.input) dims.push_back(std::to_string(d));
  P["model.arch"] = run.model.arch;
  P["model.input"] = list_text(dims);
  P["model.classes"] = std::to_string(run.model.classes);
  P["model.weights"] = run.model.weights;
  P["model.seed"] = std::to_string(run.model.seed);
  // Recorded only for TorchScript models, so that the ids of zoo runs stay what they were.
  if (!run.model.path.empty()) P["model.path"] = run.model.path;
  // Only when not 1, for the same reason: absent means 1 (results/SCHEMA.md).
  if (run.model.width != 1.0) P["model.width"] = fmt::format("{}", run.model.width);
}

// The `data` section: reads and checks its keys into the run and records its parameters.
void resolve_data(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section data = section("data");
  if (auto n = data["kind"]) run.data.kind = choose(r, n, "data.kind", kDataKindNames);
  if (auto n = data["path"]) run.data.path = r.text(n, "data.path");
  if (auto n = data["seed"]) run.data.seed = r.integer(n, "data.seed", 0, INT64_MAX);
  if (auto n = data["augment"]) run.data.augment = r.boolean(n, "data.augment");
  if (auto n = data["train_samples"])
    run.data.train_samples = r.integer(n, "data.train_samples", 0, INT64_MAX);
  P["data.kind"] = to_string(run.data.kind);
  P["data.path"] = run.data.path;
  P["data.seed"] = std::to_string(run.data.seed);
  P["data.augment"] = run.data.augment ? "true" : "false";
  P["data.train_samples"] = std::to_string(run.data.train_samples);
}

// The `boards` section: reads and checks its keys into the run and records its parameters.
void resolve_boards(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section boards = section("boards");
  if (auto n = boards["count"]) run.boards.count = r.integer(n, "boards.count", 1, 4096);
  if (auto n = boards["backend"])
    run.boards.backend = choose(r, n, "boards.backend", kBackendNames);
  if (auto n = boards["profile"]) run.boards.profile = r.text(n, "boards.profile");
  if (auto n = boards["time_model"])
    run.boards.time_model = choose(r, n, "boards.time_model", kTimeModelNames);
  if (auto n = boards["threads"]) run.boards.threads = r.integer(n, "boards.threads", 1, 1024);
  if (auto n = boards["xclbin"]) run.boards.xclbin = r.text(n, "boards.xclbin");
  if (auto n = boards["devices"]) {
    run.boards.devices = name_list(r, n, "boards.devices");
    if (static_cast<int>(run.boards.devices.size()) != run.boards.count)
      r.fail(n, "boards.devices",
             fmt::format("lists {} device(s) for {} board(s); give one per board or none",
                         run.boards.devices.size(), run.boards.count));
  }
  if (run.boards.backend == Backend::kXrt && run.boards.xclbin.empty())
    r.fail(boards["backend"], "boards.xclbin",
           "is required with `backend: xrt` (the kernel binary)");
  if (auto n = boards["fallback"])
    run.boards.fallback = choose(r, n, "boards.fallback", kFallbackNames);
  // A real board runs in real time: it cannot stretch or model its own clock.
  if (run.boards.backend == Backend::kXrt && run.boards.time_model != TimeModel::kMeasured)
    r.fail(boards["time_model"], "boards.time_model",
           fmt::format("`{}` cannot be honoured by `backend: xrt` (a real board's time is "
                       "measured); use `measured`, or the emulator for dilated/modeled time",
                       to_string(run.boards.time_model)));
  P["boards.count"] = std::to_string(run.boards.count);
  P["boards.backend"] = to_string(run.boards.backend);
  P["boards.profile"] = run.boards.profile;
  P["boards.time_model"] = to_string(run.boards.time_model);
  P["boards.threads"] = std::to_string(run.boards.threads);
  P["boards.xclbin"] = run.boards.xclbin;
  P["boards.devices"] = list_text(run.boards.devices);
  if (auto n = boards["precision"])
    run.boards.precision = choose(r, n, "boards.precision", backends::kPrecisionNames);
  if (auto n = boards["calibration_batches"])
    run.boards.calibration_batches = r.integer(n, "boards.calibration_batches", 1, 100000);
  if (run.boards.precision == backends::Precision::kInt8 && run.boards.calibration_batches < 1)
    r.fail(boards["precision"], "boards.calibration_batches",
           "int8 needs calibration data: set boards.calibration_batches to the number of batches "
           "(>= 1) of the experiment's data whose activation ranges fix the quantization");
  // Recorded only when stated, so that the ids of runs without them stay what they were.
  if (run.boards.precision) P["boards.precision"] = precision_name(run.boards.precision);
  if (run.boards.calibration_batches > 0)
    P["boards.calibration_batches"] = std::to_string(run.boards.calibration_batches);
  // Only xrt runs can fall back; recording it for them alone keeps other runs' ids unchanged.
  if (run.boards.backend == Backend::kXrt) P["boards.fallback"] = to_string(run.boards.fallback);
}

// The `links` section: reads and checks its keys into the run and records its parameters.
void resolve_links(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section links = section("links");
  if (auto n = links["h2d_gbps"]) run.links.h2d_gbps = r.real(n, "links.h2d_gbps", 1e-6, 1e6);
  if (auto n = links["d2h_gbps"]) run.links.d2h_gbps = r.real(n, "links.d2h_gbps", 1e-6, 1e6);
  if (auto n = links["latency_s"]) run.links.latency_s = r.real(n, "links.latency_s", 0, 10);
  P["links.h2d_gbps"] = fmt::format("{}", run.links.h2d_gbps);
  P["links.d2h_gbps"] = fmt::format("{}", run.links.d2h_gbps);
  P["links.latency_s"] = fmt::format("{}", run.links.latency_s);
  if (auto n = links["mpi_gbps"]) run.links.mpi_gbps = r.real(n, "links.mpi_gbps", 1e-6, 1e6);
  if (auto n = links["mpi_latency_s"])
    run.links.mpi_latency_s = r.real(n, "links.mpi_latency_s", 0, 10);
  // Recorded only when stated, so that the ids of runs without them stay what they were.
  if (run.links.mpi_gbps > 0) P["links.mpi_gbps"] = fmt::format("{}", run.links.mpi_gbps);
  if (run.links.mpi_latency_s > 0)
    P["links.mpi_latency_s"] = fmt::format("{}", run.links.mpi_latency_s);
}

// The `partition` section: reads and checks its keys into the run and records its parameters.
void resolve_partition(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section partition = section("partition");
  if (auto n = partition["cuts"]) {
    if (n.IsScalar() && n.Scalar() == "auto") {
      run.partition.automatic = true;
    } else {
      run.partition.cuts = name_list(r, n, "partition.cuts");
    }
  }
  if (auto n = partition["objective"])
    run.partition.objective = choose(r, n, "partition.objective", kObjectiveNames);
  if (auto n = partition["fixed"]) {
    if (!run.partition.automatic)
      r.fail(n, "partition.fixed", "only applies with `cuts: auto` (explicit cuts are all fixed)");
    run.partition.fixed = name_list(r, n, "partition.fixed");
  }
  // Training runs place autoencoders at the cuts in one model and use boards.count ranks for
  // data parallelism; pipeline runs need one cut between every two boards.
  const bool training = [&] {
    Section t = section("training");
    auto n = t["mode"];
    return n && n.IsScalar() && n.Scalar() != kNoTrainingMode;
  }();
  if (!training && !run.partition.automatic &&
      static_cast<int>(run.partition.cuts.size()) != run.boards.count - 1) {
    YAML::Node where = partition["cuts"] ? partition["cuts"] : section.root()["boards"];
    r.fail(where, "partition.cuts",
           fmt::format("{} board(s) need {} cut(s), got {} ({}); or use `cuts: auto`",
                       run.boards.count, run.boards.count - 1, run.partition.cuts.size(),
                       run.partition.cuts.empty() ? "none" : join(run.partition.cuts)));
  }
  if (run.partition.automatic &&
      static_cast<int>(run.partition.fixed.size()) > run.boards.count - 1)
    r.fail(partition["fixed"], "partition.fixed",
           fmt::format("{} fixed cut(s) but {} board(s) have only {} cut(s)",
                       run.partition.fixed.size(), run.boards.count, run.boards.count - 1));
  run.model.cuts = run.partition.automatic ? run.partition.fixed : run.partition.cuts;
  P["partition.cuts"] = run.partition.automatic ? "auto" : list_text(run.partition.cuts);
  P["partition.objective"] = objective_name(run.partition.objective);
  P["partition.fixed"] = list_text(run.partition.fixed);
}

// The `autoencoder` section: reads and checks its keys into the run and records its parameters.
void resolve_autoencoder(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section ae = section("autoencoder");
  if (auto n = ae["kind"])
    run.autoencoder.kind = choose(r, n, "autoencoder.kind", kAutoencoderKindNames);
  if (auto n = ae["rate"]) run.autoencoder.rate = r.real(n, "autoencoder.rate", 1.0, 1e9);
  if (auto n = ae["kernel"]) {
    run.autoencoder.kernel = r.integer(n, "autoencoder.kernel", 1, 15);
    if (run.autoencoder.kernel % 2 == 0)
      r.fail(n, "autoencoder.kernel",
             fmt::format("must be odd (got {}; valid: 1, 3, 5, ..., 15)", run.autoencoder.kernel));
  }
  P["autoencoder.kind"] = to_string(run.autoencoder.kind);
  P["autoencoder.rate"] = fmt::format("{}", run.autoencoder.rate);
  P["autoencoder.kernel"] = std::to_string(run.autoencoder.kernel);
}

// training.lr_floor and training.hold_epochs (after lr_schedule and converge_window): a floor
// and a hold need cosine, a hold needs a floor above 0 and room for the convergence window.
void resolve_floor_and_hold(const Reader& r, const Section& t, TrainingConfig& tr) {
  if (auto n = t["lr_floor"]) {
    tr.lr_floor = r.real(n, "training.lr_floor", 0, 1);
    if (tr.lr_floor >= 1)
      r.fail(n, "training.lr_floor", "must be below 1: a fraction of training.lr, e.g. 0.05");
    if (tr.lr_floor > 0 && tr.lr_schedule == trainers::LrSchedule::kConstant)
      r.fail(n, "training.lr_floor",
             "needs `lr_schedule: cosine`: a constant rate has no floor to decay to");
  }
  if (auto n = t["hold_epochs"]) {
    tr.hold_epochs = r.integer(n, "training.hold_epochs", 0, 1 << 20);
    if (tr.hold_epochs > 0 && tr.lr_schedule == trainers::LrSchedule::kConstant)
      r.fail(n, "training.hold_epochs",
             "needs `lr_schedule: cosine` (a constant rate is held already; use epochs)");
    if (tr.hold_epochs > 0 && !(tr.lr_floor > 0))
      r.fail(n, "training.hold_epochs",
             "needs training.lr_floor > 0 (e.g. 0.05): epochs held at a rate of 0 would be "
             "flat whether or not the model had converged");
    if (tr.hold_epochs > 0 && tr.hold_epochs < tr.converge_window)
      r.fail(n, "training.hold_epochs",
             fmt::format("{} is fewer than training.converge_window = {}: the rule judges held "
                         "epochs only, so it could never be met; hold at least {}",
                         tr.hold_epochs, tr.converge_window, tr.converge_window));
  }
}

// The `training` section: reads and checks its keys into the run and records its parameters.
void resolve_training(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section t = section("training");
  auto& tr = run.training;
  if (auto n = t["mode"]) {
    const auto name = r.choice(n, "training.mode", training_mode_names());
    if (name != kNoTrainingMode) tr.mode = common::enum_parse(trainers::kModeNames, name);
  }
  if (auto n = t["epochs"]) tr.epochs = r.integer(n, "training.epochs", 1, 1 << 20);
  if (auto n = t["batch"]) tr.batch = r.integer(n, "training.batch", 1, 1 << 20);
  if (auto n = t["lr"]) tr.lr = r.real(n, "training.lr", 1e-12, 100);
  if (auto n = t["lr_schedule"])
    tr.lr_schedule = choose(r, n, "training.lr_schedule", trainers::kLrScheduleNames);
  if (auto n = t["optimizer"])
    tr.optimizer = choose(r, n, "training.optimizer", trainers::kOptimizerNames);
  if (auto n = t["momentum"]) tr.momentum = r.real(n, "training.momentum", 0, 1);
  if (auto n = t["weight_decay"]) tr.weight_decay = r.real(n, "training.weight_decay", 0, 1);
  if (auto n = t["freeze_epochs"])
    tr.freeze_epochs = r.integer(n, "training.freeze_epochs", 0, 1 << 20);
  if (auto n = t["settle_tolerance"])
    tr.settle_tolerance = r.real(n, "training.settle_tolerance", 0, 1e6);
  if (auto n = t["checkpoint"]) tr.checkpoint = r.text(n, "training.checkpoint");
  if (auto n = t["test_samples"])
    tr.test_samples = r.integer(n, "training.test_samples", 0, INT64_MAX);
  if (auto n = t["pretrain_epochs"])
    tr.pretrain_epochs = r.integer(n, "training.pretrain_epochs", 0, 1 << 20);
  if (auto n = t["pretrain_samples"])
    tr.pretrain_samples = r.integer(n, "training.pretrain_samples", 0, INT64_MAX);
  if (auto n = t["seed"])
    tr.seed = static_cast<uint64_t>(r.integer(n, "training.seed", 0, 1LL << 40));
  if (auto n = t["converge_window"]) {
    tr.converge_window = r.integer(n, "training.converge_window", 0, 1 << 20);
    if (tr.converge_window == 1)
      r.fail(n, "training.converge_window",
             "1 epoch is always flat; use 0 (no rule) or a window of 2 or more epochs (e.g. 3)");
  }
  if (auto n = t["converge_margin_pt"])
    tr.converge_margin_pt = r.real(n, "training.converge_margin_pt", 0, 100);
  resolve_floor_and_hold(r, t, tr);
  if (tr.mode == trainers::Mode::kFreeze && run.autoencoder.rate == 1)
    r.fail(t["mode"], "training.mode",
           "`freeze` trains the autoencoders first, but `autoencoder.rate` is 1 (no autoencoder); "
           "set a rate above 1 or use `finetune`");
  P["training.mode"] = to_string(tr.mode);
  if (tr.mode) {
    P["training.epochs"] = std::to_string(tr.epochs);
    P["training.batch"] = std::to_string(tr.batch);
    P["training.lr"] = fmt::format("{}", tr.lr);
    P["training.optimizer"] = trainers::to_string(tr.optimizer);
    // Recorded only when not the default, so that earlier files and caches keep their keys.
    if (tr.lr_schedule != trainers::LrSchedule::kConstant)
      P["training.lr_schedule"] = trainers::to_string(tr.lr_schedule);
    if (tr.lr_floor > 0) P["training.lr_floor"] = fmt::format("{}", tr.lr_floor);
    if (tr.hold_epochs > 0) P["training.hold_epochs"] = std::to_string(tr.hold_epochs);
    P["training.momentum"] = fmt::format("{}", tr.momentum);
    P["training.weight_decay"] = fmt::format("{}", tr.weight_decay);
    P["training.freeze_epochs"] = std::to_string(tr.freeze_epochs);
    P["training.settle_tolerance"] = fmt::format("{}", tr.settle_tolerance);
    P["training.checkpoint"] = tr.checkpoint;
    // Only when set, so that the ids of runs written before these keys existed do not change.
    if (tr.test_samples > 0) P["training.test_samples"] = std::to_string(tr.test_samples);
    if (tr.pretrain_epochs > 0) P["training.pretrain_epochs"] = std::to_string(tr.pretrain_epochs);
    if (tr.pretrain_samples > 0)
      P["training.pretrain_samples"] = std::to_string(tr.pretrain_samples);
    if (tr.seed > 0) P["training.seed"] = std::to_string(tr.seed);
    if (tr.converge_window > 0) {
      P["training.converge_window"] = std::to_string(tr.converge_window);
      P["training.converge_margin_pt"] = fmt::format("{}", tr.converge_margin_pt);
    }
  }
}

// The `measurement` section: reads and checks its keys into the run and records its parameters.
void resolve_measurement(const Reader& r, const Sections& section, RunConfig& run) {
  auto& P = run.params;
  Section m = section("measurement");
  auto& ms = run.measurement;
  if (auto n = m["batch"]) ms.batch = r.integer(n, "measurement.batch", 1, 1 << 20);
  if (auto n = m["warmup_batches"])
    ms.warmup_batches = r.integer(n, "measurement.warmup_batches", 0, 1 << 20);
  if (auto n = m["batches"]) ms.batches = r.integer(n, "measurement.batches", 2, 1 << 24);
  if (auto n = m["samples"]) {
    if (m["batches"])
      r.fail(n, "measurement.samples",
             "give either `samples` or `batches` per repetition, not both");
    int64_t samples = r.integer(n, "measurement.samples", 1, INT64_MAX / 2);
    // At least two batches: throughput is measured between batch completions.
    ms.batches = std::max<int64_t>(2, (samples + ms.batch - 1) / ms.batch);
  }
  if (auto n = m["repetitions"]) ms.repetitions = r.integer(n, "measurement.repetitions", 1, 1000);
  if (auto n = m["min_duration_s"])
    ms.min_duration_s = r.real(n, "measurement.min_duration_s", 0, 1e6);
  if (auto n = m["min_samples"])
    ms.min_samples = r.integer(n, "measurement.min_samples", 0, INT64_MAX);
  // Only in the parameters when given, so that the ids of runs written before these keys existed
  // stay the same.
  if (auto n = m["max_cpu_wait"]) {
    ms.max_cpu_wait = r.real(n, "measurement.max_cpu_wait", 0, 1);
    P["measurement.max_cpu_wait"] = fmt::format("{}", ms.max_cpu_wait);
  }
  if (auto n = m["max_cv"]) {
    ms.max_cv = r.real(n, "measurement.max_cv", 0, 1e6);
    P["measurement.max_cv"] = fmt::format("{}", ms.max_cv);
  }
  if (auto n = m["check_outputs"]) ms.check_outputs = r.boolean(n, "measurement.check_outputs");
  if (auto n = m["tolerance"]) ms.tolerance = r.real(n, "measurement.tolerance", 0, 1);
  if (auto n = m["trace"]) {
    bool on = false;
    const std::string valid =
        fmt::format("must be true, false or the number of batches to keep per rank (1..{})",
                    MeasurementConfig::kMaxTraceBatches);
    if (!n.IsScalar()) r.fail(n, "measurement.trace", valid);
    if (YAML::convert<bool>::decode(n, on)) {
      ms.trace = on ? MeasurementConfig::kTraceOn : 0;
      P["measurement.trace"] = on ? "true" : "false";
    } else {
      int64_t v = 0;
      if (!YAML::convert<int64_t>::decode(n, v) || v < 1 || v > MeasurementConfig::kMaxTraceBatches)
        r.fail(n, "measurement.trace", fmt::format("{} (got `{}`)", valid, n.Scalar()));
      ms.trace = v;
      // Only when given: run ids (hashes of params) of files without the key stay the same.
      P["measurement.trace"] = std::to_string(v);
    }
  }
  P["measurement.batch"] = std::to_string(ms.batch);
  P["measurement.warmup_batches"] = std::to_string(ms.warmup_batches);
  P["measurement.batches"] = std::to_string(ms.batches);
  P["measurement.repetitions"] = std::to_string(ms.repetitions);
  P["measurement.min_duration_s"] = fmt::format("{}", ms.min_duration_s);
  P["measurement.min_samples"] = std::to_string(ms.min_samples);
  P["measurement.check_outputs"] = ms.check_outputs ? "true" : "false";
  P["measurement.tolerance"] = fmt::format("{}", ms.tolerance);
}

// The sections in the order their keys are checked (the first error in this order is reported).
using SectionResolver = void (*)(const Reader& r, const Sections& section, RunConfig& run);
constexpr SectionResolver kSectionResolvers[] = {
    resolve_model,     resolve_data,        resolve_boards,   resolve_links,
    resolve_partition, resolve_autoencoder, resolve_training, resolve_measurement};

}  // namespace

RunConfig resolve_run(const Reader& r, const YAML::Node& root, const Overrides& overrides) {
  RunConfig run;
  const Sections section(r, root, overrides);
  for (SectionResolver resolve : kSectionResolvers) resolve(r, section, run);

  std::string canonical;
  for (const auto& [k, v] : run.params) canonical += k + "=" + v + "\n";
  run.id = hex_digest(canonical).substr(0, 12);
  return run;
}

}  // namespace quilt::harness::detail
