#include "harness/experiment.h"

#include "common/model_width.h"
#include "common/yaml_reader.h"
#include "harness/hash.h"

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace quilt::harness {

using common::join;

namespace {

// The place and the key come from the user too (a path, an unknown key): clipped like values. A
// message longer than any this code writes holds an echoed value that escaped clip().
std::string format_error(const std::string& file, int line, int column, const std::string& key,
                         const std::string& message) {
  std::string where = clip(file);
  if (line > 0) where += fmt::format(":{}:{}", line, column);
  if (key.empty()) return fmt::format("{}: {}", where, clip(message, 4000));
  return fmt::format("{}: `{}`: {}", where, clip(key), clip(message, 4000));
}

// The keys a section accepts, in documentation order. Sweeps and scales may set any of them.
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> kSchema = {
      {"model", {"arch", "input", "classes", "width", "weights", "seed", "path"}},
      {"data", {"kind", "path", "seed", "augment", "train_samples"}},
      {"boards",
       {"count", "backend", "profile", "time_model", "threads", "xclbin", "devices", "fallback",
        "precision", "calibration_batches"}},
      {"links", {"h2d_gbps", "d2h_gbps", "latency_s", "mpi_gbps", "mpi_latency_s"}},
      {"partition", {"cuts", "objective", "fixed"}},
      {"autoencoder", {"kind", "rate", "kernel"}},
      {"training",
       {"mode", "epochs", "batch", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
        "freeze_epochs", "settle_tolerance", "checkpoint", "test_samples", "pretrain_epochs",
        "pretrain_samples", "seed", "converge_window", "converge_margin_pt"}},
      {"measurement",
       {"batch", "warmup_batches", "batches", "samples", "repetitions", "min_duration_s",
        "min_samples", "max_cpu_wait", "max_cv", "check_outputs", "tolerance", "trace"}},
  };
  return kSchema;
}

const std::vector<std::string>& top_level_keys() {
  static const std::vector<std::string> kKeys = {
      "quilt",      "name",      "description",   "model",    "data",        "boards",
      "links",      "partition", "autoencoder",   "training", "measurement", "sweep",
      "references", "scales",    "default_scale", "output"};
  return kKeys;
}

std::string suggestion(const std::string& key, const std::vector<std::string>& valid) {
  return did_you_mean(key, valid, "keys");
}

// Reads one YAML document with the file name at hand for messages (common/yaml_reader.h), failing
// with ConfigErrors.
class Reader : public common::YamlReader {
 public:
  Reader(std::string file, std::string document = "")
      : YamlReader(
            [file](int line, int column, const std::string& key, const std::string& message) {
              throw ConfigError(file, line, column, key, message);
            },
            std::move(document)),
        file_(std::move(file)) {}

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// No list in an experiment file is longer than the most runs a sweep may have; a longer one is
// refused while yaml-cpp streams through the text, before a node tree of millions of values
// exists (a 10^7-value list would take tens of seconds and gigabytes to load, then be refused).
constexpr size_t kMaxListValues = 100000;

class ListLengthGuard : public YAML::EventHandler {
 public:
  explicit ListLengthGuard(const std::string& path) : path_(path) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { item(); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { item(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    item();
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    item();
    open_.push_back({true, 0, mark});
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    item();
    open_.push_back({false, 0, mark});
  }
  void OnMapEnd() override { open_.pop_back(); }

 private:
  struct Open {
    bool sequence;
    size_t items;
    YAML::Mark mark;
  };
  void item() {
    if (open_.empty() || !open_.back().sequence) return;
    if (++open_.back().items > kMaxListValues)
      throw ConfigError(path_, open_.back().mark.line + 1, open_.back().mark.column + 1, "",
                        fmt::format("this list has more than {} values; a sweep may have at most "
                                    "{} runs, and no other list comes close",
                                    kMaxListValues, kMaxListValues));
  }
  const std::string& path_;
  std::vector<Open> open_;
};

void check_list_lengths(const std::string& path, const std::string& text) {
  std::istringstream in(text);
  ListLengthGuard guard(path);
  try {
    // The first document only (check_single_document refuses more): on some junk yaml-cpp
    // returns endless empty documents, as YAML::LoadAll does (bad/syntax-stray-comma.yaml).
    YAML::Parser parser(in);
    parser.HandleNextDocument(guard);
  } catch (const YAML::Exception&) {
    // Syntax errors are YAML::Load's to report, with its messages.
  }
}

// YAML::Load reads the first document and ignores the rest; YAML::LoadAll can loop forever on
// some junk. A document marker at column 0 after content starts another document (inside a
// block scalar, content is indented, so the marker cannot be part of a value).
void check_single_document(const std::string& path, const std::string& text) {
  bool content = false, ended = false;
  int line = 0;
  for (size_t pos = 0; pos < text.size(); ++line) {
    size_t nl = text.find('\n', pos);
    std::string l = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    auto marker = [&](const char* m) {
      return l.rfind(m, 0) == 0 && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    };
    auto second = [&] {
      return ConfigError(path, line + 1, 1, "",
                         "a second YAML document starts here; an experiment file holds one "
                         "document");
    };
    if (marker("---")) {
      if (content || ended) throw second();
      continue;
    }
    if (marker("...")) {
      ended = true;  // only comments, blank lines and directives may follow
      continue;
    }
    size_t first = l.find_first_not_of(" \t\r");
    if (first == std::string::npos || l[first] == '#' || l[0] == '%') continue;
    if (ended) throw second();
    content = true;
  }
}

// yaml-cpp accepts a quoted scalar left open until the end of the file (the rest of the file
// becomes its value); find such quotes in every scalar of the document.
void check_quotes(const Reader& r, const std::string& text, const YAML::Node& node,
                  std::set<std::pair<int, int>>& seen) {
  if (!node.IsDefined()) return;
  // Aliases share their anchor's node (and mark): visit each node once, or a "billion laughs"
  // file would take forever.
  if (!seen.emplace(node.Mark().line, node.Mark().column).second) return;
  if (node.IsMap()) {
    for (const auto& kv : node) {
      check_quotes(r, text, kv.first, seen);
      check_quotes(r, text, kv.second, seen);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_quotes(r, text, item, seen);
  } else if (node.IsScalar() && node.Tag() == "!") {
    size_t pos = r.offset(node.Mark().line, node.Mark().column);
    if (pos >= text.size() || (text[pos] != '"' && text[pos] != '\'')) return;
    const char quote = text[pos];
    for (size_t i = pos + 1; i < text.size(); ++i) {
      if (quote == '"' && text[i] == '\\') {
        ++i;  // an escaped character
      } else if (text[i] == quote) {
        if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
          ++i;  // '' is a quote inside single quotes
        } else {
          return;
        }
      }
    }
    r.fail(node, "", "unterminated quoted string: the quote opened here is never closed");
  }
}

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

std::vector<std::string> all_key_paths() {
  std::vector<std::string> valid;
  for (const auto& [sec, keys] : schema())
    for (const auto& k : keys) valid.push_back(sec + "." + k);
  return valid;
}

// A dotted key that a sweep or scale sets, checked against the schema.
std::string checked_path(const Reader& r, const YAML::Node& key_node, const std::string& where) {
  auto path = r.text(key_node, where);
  auto valid = all_key_paths();
  if (std::find(valid.begin(), valid.end(), path) == valid.end())
    r.fail(key_node, where,
           fmt::format("`{}` is not a key an experiment can set here{}", clip(path),
                       suggestion(path, valid)));
  return path;
}

using Overrides = std::map<std::string, YAML::Node>;

// A section of the document as one run sees it: the file's values, with the scale's and the
// sweep's values for this run on top. Nodes keep their marks, so errors point into the file.
class Section {
 public:
  Section(YAML::Node node, std::string name, const Overrides& overrides)
      : node_(std::move(node)), name_(std::move(name)), overrides_(overrides) {}
  YAML::Node operator[](const std::string& key) const {
    auto it = overrides_.find(name_ + "." + key);
    if (it != overrides_.end()) return it->second;
    if (!node_.IsDefined() || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = node_;  // const access never inserts
    return map[key];
  }

 private:
  YAML::Node node_;
  std::string name_;
  const Overrides& overrides_;
};

std::string list_text(const std::vector<std::string>& v) { return "[" + join(v) + "]"; }

std::vector<std::string> name_list(const Reader& r, const YAML::Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsScalar()) {
    out.push_back(r.text(n, key));
  } else if (n.IsSequence()) {
    for (const auto& c : n) out.push_back(r.text(c, key));
  } else {
    r.fail(n, key, "must be a name or a list of names");
  }
  return out;
}

// An enum-like key: one of its table's names (the message lists them), as the enum.
template <typename E, size_t N>
E choose(const Reader& r, const YAML::Node& n, const std::string& key,
         const common::EnumTable<E, N>& table) {
  return *common::enum_parse(table, r.choice(n, key, common::enum_names(table)));
}

RunConfig resolve_run(const Reader& r, const YAML::Node& root, const Overrides& overrides) {
  RunConfig run;
  auto section = [&](const std::string& name) -> Section {
    YAML::Node n = root[name];
    if (n.IsDefined() && !n.IsNull()) {
      for (const auto& [sec, keys] : schema())
        if (sec == name) r.check_keys(n, name, keys);
    }
    return Section(n, name, overrides);
  };
  auto& P = run.params;

  Section model = section("model");
  if (!model["arch"])
    r.fail(root["model"].IsDefined() ? root["model"] : root, "model.arch",
           "is required (e.g. `arch: resnet50`)");
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
    YAML::Node where = partition["cuts"] ? partition["cuts"] : root["boards"];
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

  std::string canonical;
  for (const auto& [k, v] : run.params) canonical += k + "=" + v + "\n";
  run.id = hex_digest(canonical).substr(0, 12);
  return run;
}

std::vector<Reference> parse_references(const Reader& r, const YAML::Node& node) {
  std::vector<Reference> out;
  if (!node.IsSequence())
    r.fail(node, "references",
           "must be a list of {metric, value, tolerance, better, when} entries");
  for (const auto& item : node) {
    r.check_keys(item, "references", {"metric", "value", "tolerance", "better", "when"});
    Reference ref;
    if (!item["metric"]) r.fail(item, "references.metric", "is required");
    ref.metric = r.choice(item["metric"], "references.metric", metric_names());
    if (!item["value"]) r.fail(item, "references.value", "is required");
    ref.value = r.real(item["value"], "references.value", -1e300, 1e300);
    if (item["tolerance"])
      ref.tolerance = r.real(item["tolerance"], "references.tolerance", 0, 1e6);
    if (item["better"]) ref.better = choose(r, item["better"], "references.better", kBetterNames);
    if (auto w = item["when"]) {
      if (!w.IsMap())
        r.fail(w, "references.when", "must map keys to values, e.g. {autoencoder.rate: 64}");
      for (const auto& kv : w) {
        auto key = checked_path(r, kv.first, "references.when");
        ref.when[key] = scalar_text(kv.second);
      }
    }
    out.push_back(std::move(ref));
  }
  return out;
}

// The value of `key` in a run's params, compared as text and as numbers ("64" == "64.0").
bool param_matches(const std::map<std::string, std::string>& params, const std::string& key,
                   const std::string& want) {
  auto it = params.find(key);
  if (it == params.end()) return false;
  if (it->second == want) return true;
  try {
    size_t a = 0, b = 0;
    double x = std::stod(it->second, &a), y = std::stod(want, &b);
    return a == it->second.size() && b == want.size() && x == y;
  } catch (const std::exception&) {
    return false;
  }
}

using Point = std::vector<std::pair<std::string, YAML::Node>>;

// More runs than this is a mistake, not an experiment (and would exhaust memory).
constexpr size_t kMaxRuns = kMaxListValues;

// Cross product of `points` with one key's list of values.
std::vector<Point> cross(const std::vector<Point>& points, const std::string& key,
                         const YAML::Node& values) {
  std::vector<Point> next;
  for (const auto& p : points)
    for (const auto& v : values) {
      auto q = p;
      q.emplace_back(key, v);
      next.push_back(std::move(q));
    }
  return next;
}

std::vector<Point> expand_sweep(const Reader& r, const YAML::Node& sweep) {
  std::vector<Point> points = {{}};
  if (!sweep.IsDefined() || sweep.IsNull()) return points;
  r.check_keys(sweep, "sweep", {"matrix", "zip", "exclude"});
  std::set<std::string> used;
  auto take = [&](const YAML::Node& key_node, const std::string& where) {
    auto path = checked_path(r, key_node, where);
    if (!used.insert(path).second)
      r.fail(key_node, where, fmt::format("`{}` is swept twice", path));
    return path;
  };
  if (auto matrix = sweep["matrix"]) {
    if (!matrix.IsMap() || matrix.size() == 0)
      r.fail(matrix, "sweep.matrix",
             "must map keys to lists of values, e.g. `autoencoder.rate: [1, 64]`");
    for (const auto& kv : matrix) {
      auto path = take(kv.first, "sweep.matrix");
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        r.fail(kv.second, "sweep.matrix." + path, "must be a non-empty list of values");
      if (points.size() * kv.second.size() > kMaxRuns)
        r.fail(kv.first, "sweep.matrix",
               fmt::format("the sweep expands to more than {} runs: too many runs for one "
                           "experiment (split it, or sweep fewer values)",
                           kMaxRuns));
      points = cross(points, path, kv.second);
    }
  }
  if (auto zip = sweep["zip"]) {
    if (!zip.IsMap() || zip.size() == 0)
      r.fail(zip, "sweep.zip", "must map keys to lists of equal length, advanced together");
    size_t length = 0;
    std::vector<std::pair<std::string, YAML::Node>> lists;
    for (const auto& kv : zip) {
      auto path = take(kv.first, "sweep.zip");
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        r.fail(kv.second, "sweep.zip." + path, "must be a non-empty list of values");
      if (length != 0 && kv.second.size() != length)
        r.fail(kv.second, "sweep.zip." + path,
               fmt::format("has {} values but the other zip lists have {}; zip lists advance "
                           "together and must have equal length",
                           kv.second.size(), length));
      length = kv.second.size();
      lists.emplace_back(path, kv.second);
    }
    if (points.size() * length > kMaxRuns)
      r.fail(zip, "sweep.zip",
             fmt::format("the sweep expands to more than {} runs: too many runs for one "
                         "experiment",
                         kMaxRuns));
    std::vector<Point> next;
    for (const auto& p : points)
      for (size_t i = 0; i < length; ++i) {
        auto q = p;
        for (const auto& [path, values] : lists) q.emplace_back(path, values[i]);
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }
  if (auto exclude = sweep["exclude"]) {
    if (!exclude.IsSequence())
      r.fail(exclude, "sweep.exclude",
             "must be a list of {key: value} maps; a run matching all "
             "keys of one map is left out");
    for (const auto& rule : exclude) {
      if (!rule.IsMap() || rule.size() == 0)
        r.fail(rule, "sweep.exclude", "each entry must be a non-empty {key: value} map");
      std::vector<std::pair<std::string, std::string>> conds;
      for (const auto& kv : rule) {
        auto path = checked_path(r, kv.first, "sweep.exclude");
        if (!used.count(path))
          r.fail(kv.first, "sweep.exclude",
                 fmt::format("`{}` is not swept, so excluding on it would drop every run or none",
                             path));
        conds.emplace_back(path, scalar_text(kv.second));
      }
      size_t before = points.size();
      points.erase(std::remove_if(points.begin(), points.end(),
                                  [&](const Point& p) {
                                    std::map<std::string, std::string> values;
                                    for (const auto& [k, v] : p) values[k] = scalar_text(v);
                                    for (const auto& [k, v] : conds)
                                      if (!param_matches(values, k, v)) return false;
                                    return true;
                                  }),
                   points.end());
      if (points.size() == before)
        r.fail(rule, "sweep.exclude", "matches no run of the sweep (a typo in a value?)");
    }
    if (points.empty()) r.fail(exclude, "sweep.exclude", "leaves no run at all");
  }
  return points;
}

}  // namespace

std::string to_string(Backend v) { return std::string(common::enum_name(kBackendNames, v)); }
std::string to_string(TimeModel v) { return std::string(common::enum_name(kTimeModelNames, v)); }
std::string to_string(Fallback v) { return std::string(common::enum_name(kFallbackNames, v)); }
std::string to_string(AutoencoderKind v) {
  return std::string(common::enum_name(kAutoencoderKindNames, v));
}
std::string to_string(Better v) { return std::string(common::enum_name(kBetterNames, v)); }
std::string to_string(const TrainingMode& v) {
  return std::string(v ? common::enum_name(trainers::kModeNames, *v) : kNoTrainingMode);
}
std::string objective_name(partitioners::Objective v) {
  return std::string(common::enum_name(kObjectiveNames, v));
}
std::string precision_name(const std::optional<backends::Precision>& v) {
  return v ? std::string(common::enum_name(backends::kPrecisionNames, *v)) : std::string();
}

std::vector<std::string> training_mode_names() {
  std::vector<std::string> out = {std::string(kNoTrainingMode)};
  for (const auto& name : common::enum_names(trainers::kModeNames)) out.push_back(name);
  return out;
}

ConfigError::ConfigError(std::string file, int line, int column, std::string key,
                         std::string message)
    : std::runtime_error(format_error(file, line, column, key, message)),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_(std::move(key)),
      message_(std::move(message)) {}

const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> kNames = {"throughput_sps", "latency_p50_s",
                                                  "latency_p90_s",  "latency_p99_s",
                                                  "duration_s",     "max_abs_error"};
  return kNames;
}

Experiment parse_experiment(const std::string& text, const std::string& path,
                            const std::string& scale) {
  Reader r(path, text);
  YAML::Node root;
  check_single_document(path, text);
  check_list_lengths(path, text);
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    // yaml-cpp's message for a tab in the indentation does not say so.
    std::string hint;
    for (size_t i = r.offset(e.mark.line, 0);
         i < text.size() && (text[i] == ' ' || text[i] == '\t'); ++i)
      if (text[i] == '\t') hint = " (this line is indented with a tab; YAML indents with spaces)";
    throw ConfigError(path, e.mark.line + 1, e.mark.column + 1, "",
                      fmt::format("YAML syntax error: {}{}", e.msg, hint));
  }
  std::set<std::pair<int, int>> seen;
  check_quotes(r, text, root, seen);
  if (!root.IsMap()) throw ConfigError(path, 0, 0, "", "must be a YAML mapping of sections");
  r.check_keys(root, "", top_level_keys());

  if (!root["quilt"])
    throw ConfigError(path, 1, 1, "quilt",
                      fmt::format("is required: the format version (`quilt: {}`)", kFormatVersion));
  auto version = r.integer(root["quilt"], "quilt", 1, 1 << 20);
  if (version != kFormatVersion)
    r.fail(root["quilt"], "quilt",
           fmt::format("format version {} is not supported by this build (supported: {})", version,
                       kFormatVersion));

  Experiment e;
  e.path = path;
  e.text = text;
  if (!root["name"]) throw ConfigError(path, 1, 1, "name", "is required (a short identifier)");
  e.name = r.text(root["name"], "name");
  if (e.name.empty() || e.name.find_first_of("/ \t") != std::string::npos)
    r.fail(root["name"], "name", "must be a non-empty identifier without spaces or slashes");
  if (root["description"]) e.description = r.text(root["description"], "description");
  e.output = root["output"] ? r.text(root["output"], "output") : "results/" + e.name + ".h5";

  // Scales: named sets of overrides (e.g. `here` and `paper`), one chosen per invocation.
  Overrides base;
  YAML::Node sweep = root["sweep"];
  std::vector<std::string> scale_names;
  if (auto scales = root["scales"]) {
    if (!scales.IsMap() || scales.size() == 0)
      r.fail(scales, "scales", "must map scale names to {key: value} overrides");
    for (const auto& kv : scales) {
      auto name = r.text(kv.first, "scales");
      if (std::find(scale_names.begin(), scale_names.end(), name) != scale_names.end())
        r.fail(kv.first, "scales." + name, "duplicate key: the scale is defined twice");
      scale_names.push_back(name);
    }
  }
  std::string chosen = scale;
  if (chosen.empty() && root["default_scale"]) {
    chosen = r.text(root["default_scale"], "default_scale");
    if (std::find(scale_names.begin(), scale_names.end(), chosen) == scale_names.end())
      r.fail(root["default_scale"], "default_scale",
             fmt::format("`{}` is not one of the file's scales ({})", clip(chosen),
                         scale_names.empty() ? "none defined" : join(scale_names)));
  }
  if (!chosen.empty()) {
    if (std::find(scale_names.begin(), scale_names.end(), chosen) == scale_names.end())
      throw ConfigError(path, 0, 0, "scales",
                        fmt::format("no scale `{}` in this file; its scales: {}", clip(chosen),
                                    scale_names.empty() ? "none" : join(scale_names)));
    const YAML::Node& scales = root["scales"];
    YAML::Node overrides = scales[chosen];
    if (!overrides.IsMap())
      r.fail(overrides, "scales." + chosen,
             "must map keys to values, e.g. {measurement.batches: 8}");
    std::set<std::string> overridden;
    for (const auto& kv : overrides) {
      if (kv.first.IsScalar() && !overridden.insert(kv.first.Scalar()).second)
        r.fail(kv.first, "scales." + chosen + "." + kv.first.Scalar(),
               "duplicate key: the scale sets it twice");
      if (kv.first.IsScalar() && kv.first.Scalar() == "sweep") {
        sweep = kv.second;
        continue;
      }
      base[checked_path(r, kv.first, "scales." + chosen)] = kv.second;
    }
    e.scale = chosen;
  }

  std::vector<Reference> references;
  if (auto refs = root["references"]) references = parse_references(r, refs);

  std::set<std::string> ids;
  std::vector<bool> reference_used(references.size(), false);
  for (const auto& p : expand_sweep(r, sweep)) {
    Overrides overrides = base;
    for (const auto& [key, value] : p) overrides[key] = value;
    RunConfig run = resolve_run(r, root, overrides);
    run.index = e.runs.size();
    for (const auto& [key, value] : p) run.swept[key] = scalar_text(value);
    if (!ids.insert(run.id).second)
      r.fail(sweep, "sweep",
             "two runs of the sweep resolve to the same parameters (a value listed twice?)");
    for (size_t i = 0; i < references.size(); ++i) {
      bool applies = true;
      for (const auto& [k, v] : references[i].when)
        applies = applies && param_matches(run.params, k, v);
      if (applies) run.references.push_back(references[i]), reference_used[i] = true;
    }
    e.runs.push_back(std::move(run));
  }
  for (size_t i = 0; i < references.size(); ++i)
    if (!reference_used[i])
      r.fail(root["references"][i], "references",
             fmt::format("the reference for `{}` matches no run (check its `when`)",
                         references[i].metric));

  YAML::Emitter resolved;
  resolved << YAML::BeginSeq;
  for (const auto& run : e.runs) {
    resolved << YAML::BeginMap << YAML::Key << "id" << YAML::Value << run.id;
    for (const auto& [k, v] : run.params) resolved << YAML::Key << k << YAML::Value << v;
    resolved << YAML::EndMap;
  }
  resolved << YAML::EndSeq;
  e.resolved = resolved.c_str();

  std::string all;
  for (const auto& run : e.runs) all += run.id + ";";
  e.hash = hex_digest(e.name + "|" + e.scale + "|" + all).substr(0, 16);
  return e;
}

void record_resolved_model(std::map<std::string, std::string>* params,
                           const std::vector<int64_t>& input, int64_t classes) {
  std::vector<std::string> dims;
  for (auto d : input) dims.push_back(std::to_string(d));
  (*params)["model.input"] = list_text(dims);
  (*params)["model.classes"] = std::to_string(classes);
}

std::string describe_training(const RunConfig& run) {
  const TrainingConfig& t = run.training;
  if (!t.mode) return "";
  std::string out = fmt::format("training {}: {}{} epoch(s)", to_string(t.mode),
                                t.converge_window > 0 ? "at most " : "", t.epochs);
  if (t.mode == trainers::Mode::kFreeze && t.freeze_epochs > 0)
    out += fmt::format(" (phase 1 at most {})", t.freeze_epochs);
  out += fmt::format(", batch {}, {} lr {}{}", t.batch, trainers::to_string(t.optimizer), t.lr,
                     t.lr_schedule == trainers::LrSchedule::kConstant
                         ? ""
                         : " " + trainers::to_string(t.lr_schedule));
  std::vector<std::string> data;
  if (run.data.augment) data.push_back("augmented");
  if (run.data.train_samples > 0)
    data.push_back(fmt::format("{} train samples", run.data.train_samples));
  if (!run.data.path.empty()) data.push_back(run.data.path);
  out += fmt::format(", data {}", to_string(run.data.kind));
  if (!data.empty()) out += " (" + join(data) + ")";
  if (t.test_samples > 0) out += fmt::format(", test on {} samples", t.test_samples);
  if (t.pretrain_epochs > 0)
    out += fmt::format(
        ", after {} pretraining epoch(s){}", t.pretrain_epochs,
        t.pretrain_samples > 0 ? fmt::format(" on {} samples", t.pretrain_samples) : std::string());
  if (t.converge_window > 0)
    out += fmt::format(", until test top-1 is flat within {:g} pt over {} epochs",
                       t.converge_margin_pt, t.converge_window);
  if (t.seed > 0) out += fmt::format(", seed {}", t.seed);
  if (!t.checkpoint.empty()) out += fmt::format(", checkpoint {}", t.checkpoint);
  return out;
}

Experiment load_experiment(const std::string& path, const std::string& scale) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path, 0, 0, "", "is a directory, not an experiment file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, 0, "", "cannot open the experiment file (does it exist?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_experiment(ss.str(), path, scale);
}

}  // namespace quilt::harness
