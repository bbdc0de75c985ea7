#include "harness/experiment.h"

#include "harness/experiment_parts.h"
#include "harness/hash.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace quilt::harness {

using common::join;
using namespace detail;

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

namespace {

// The document: one YAML mapping of known sections, in the format version this build reads.
YAML::Node load_document(const Reader& r, const std::string& text, const std::string& path) {
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
  return root;
}

// Scales: named sets of overrides (e.g. `here` and `paper`), one chosen per invocation. Returns
// the chosen scale's overrides and sets e->scale; a scale's `sweep` replaces `*sweep`.
Overrides scale_overrides(const Reader& r, const YAML::Node& root, const std::string& scale,
                          YAML::Node* sweep, Experiment* e) {
  const std::string& path = r.file();
  Overrides base;
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
        *sweep = kv.second;
        continue;
      }
      base[checked_path(r, kv.first, "scales." + chosen)] = kv.second;
    }
    e->scale = chosen;
  }
  return base;
}

// The runs of the sweep's points, each with the references that apply to it; every reference
// must apply to some run.
void resolve_runs(const Reader& r, const YAML::Node& root, const YAML::Node& sweep,
                  const Overrides& base, Experiment* e) {
  std::vector<Reference> references;
  if (auto refs = root["references"]) references = parse_references(r, refs);

  std::set<std::string> ids;
  std::vector<bool> reference_used(references.size(), false);
  for (const auto& p : expand_sweep(r, sweep)) {
    Overrides overrides = base;
    for (const auto& [key, value] : p) overrides[key] = value;
    RunConfig run = resolve_run(r, root, overrides);
    run.index = e->runs.size();
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
    e->runs.push_back(std::move(run));
  }
  for (size_t i = 0; i < references.size(); ++i)
    if (!reference_used[i])
      r.fail(root["references"][i], "references",
             fmt::format("the reference for `{}` matches no run (check its `when`)",
                         references[i].metric));
}

// The resolved runs as YAML (Experiment::resolved).
std::string resolved_yaml(const std::vector<RunConfig>& runs) {
  YAML::Emitter resolved;
  resolved << YAML::BeginSeq;
  for (const auto& run : runs) {
    resolved << YAML::BeginMap << YAML::Key << "id" << YAML::Value << run.id;
    for (const auto& [k, v] : run.params) resolved << YAML::Key << k << YAML::Value << v;
    resolved << YAML::EndMap;
  }
  resolved << YAML::EndSeq;
  return resolved.c_str();
}

}  // namespace

Experiment parse_experiment(const std::string& text, const std::string& path,
                            const std::string& scale) {
  Reader r(path, text);
  YAML::Node root = load_document(r, text, path);

  Experiment e;
  e.path = path;
  e.text = text;
  if (!root["name"]) throw ConfigError(path, 1, 1, "name", "is required (a short identifier)");
  e.name = r.text(root["name"], "name");
  if (e.name.empty() || e.name.find_first_of("/ \t") != std::string::npos)
    r.fail(root["name"], "name", "must be a non-empty identifier without spaces or slashes");
  if (root["description"]) e.description = r.text(root["description"], "description");
  e.output = root["output"] ? r.text(root["output"], "output") : "results/" + e.name + ".h5";

  YAML::Node sweep = root["sweep"];
  Overrides base = scale_overrides(r, root, scale, &sweep, &e);
  resolve_runs(r, root, sweep, base, &e);
  e.resolved = resolved_yaml(e.runs);

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
  std::string out =
      fmt::format("training {}: {}{} epoch(s)", to_string(t.mode),
                  t.converge_window > 0 && t.hold_epochs == 0 ? "at most " : "", t.epochs);
  if (t.mode == trainers::Mode::kFreeze && t.freeze_epochs > 0)
    out += fmt::format(" (phase 1 at most {})", t.freeze_epochs);
  out += fmt::format(", batch {}, {} lr {}{}", t.batch, trainers::to_string(t.optimizer), t.lr,
                     t.lr_schedule == trainers::LrSchedule::kConstant
                         ? ""
                         : " " + trainers::to_string(t.lr_schedule));
  if (t.lr_floor > 0) out += fmt::format(" to {:g} x lr", t.lr_floor);
  if (t.hold_epochs > 0) out += fmt::format(", then at most {} epoch(s) held there", t.hold_epochs);
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
    out += fmt::format(", until test top-1 is flat within {:g} pt over {}{} epochs",
                       t.converge_margin_pt, t.converge_window, t.hold_epochs > 0 ? " held" : "");
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
