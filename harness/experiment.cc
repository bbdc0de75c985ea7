#include "harness/experiment.h"

#include "harness/hash.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace quilt::harness {

namespace {

std::string format_error(const std::string& file, int line, int column, const std::string& key,
                         const std::string& message) {
  std::string where = file;
  if (line > 0) where += fmt::format(":{}:{}", line, column);
  if (key.empty()) return fmt::format("{}: {}", where, message);
  return fmt::format("{}: `{}`: {}", where, key, message);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// The keys a section accepts, in documentation order. Sweeps may set any of them.
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> kSchema = {
      {"model", {"arch", "input", "classes", "weights", "seed"}},
      {"data", {"kind", "seed"}},
      {"boards", {"count", "backend", "threads"}},
      {"partition", {"cuts"}},
      {"autoencoder", {"rate", "kernel"}},
      {"measurement", {"batch", "warmup_batches", "batches", "check_outputs", "tolerance"}},
  };
  return kSchema;
}

const std::vector<std::string>& top_level_keys() {
  static const std::vector<std::string> kKeys = {
      "quilt",     "name",        "description", "model", "data",  "boards",
      "partition", "autoencoder", "measurement", "sweep", "output"};
  return kKeys;
}

std::string suggestion(const std::string& key, const std::vector<std::string>& valid) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& v : valid) {
    size_t d = edit_distance(key, v);
    // Also catch "reduction_rate" -> "rate": a valid key that is a suffix of the unknown one.
    if (key.size() > v.size() && key.compare(key.size() - v.size(), v.size(), v) == 0) d = 1;
    if (d < best_d) best_d = d, best = v;
  }
  if (best_d <= std::max<size_t>(2, key.size() / 3))
    return fmt::format("; did you mean `{}`?", best);
  return fmt::format("; valid keys: {}", join(valid));
}

// Reads one YAML document with the file name at hand for messages.
class Reader {
 public:
  Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                         const std::string& message) const {
    int line = 0, column = 0;
    if (node.IsDefined() && node.Mark().line >= 0) {
      line = node.Mark().line + 1;
      column = node.Mark().column + 1;
    }
    throw ConfigError(file_, line, column, key, message);
  }

  void check_keys(const YAML::Node& map, const std::string& section,
                  const std::vector<std::string>& valid) const {
    if (!map.IsMap()) fail(map, section, "must be a mapping of keys");
    for (const auto& kv : map) {
      auto key = kv.first.as<std::string>();
      if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
        std::string where = section.empty() ? "the top level" : fmt::format("`{}`", section);
        throw ConfigError(file_, kv.first.Mark().line + 1, kv.first.Mark().column + 1,
                          section.empty() ? key : section + "." + key,
                          fmt::format("unknown key in {}{}", where, suggestion(key, valid)));
      }
    }
  }

  template <typename T>
  T scalar(const YAML::Node& node, const std::string& key, const char* type_name) const {
    if (!node.IsScalar()) fail(node, key, fmt::format("must be {}", type_name));
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, key, fmt::format("must be {} (got `{}`)", type_name, node.Scalar()));
    }
  }

  int64_t integer(const YAML::Node& n, const std::string& key, int64_t lo, int64_t hi) const {
    auto v = scalar<int64_t>(n, key, "an integer");
    if (v < lo || v > hi) fail(n, key, fmt::format("must be in [{}, {}] (got {})", lo, hi, v));
    return v;
  }

  double real(const YAML::Node& n, const std::string& key, double lo, double hi) const {
    auto v = scalar<double>(n, key, "a number");
    if (!std::isfinite(v) || v < lo || v > hi)
      fail(n, key, fmt::format("must be a finite number in [{}, {}] (got {})", lo, hi, n.Scalar()));
    return v;
  }

  std::string text(const YAML::Node& n, const std::string& key) const {
    return scalar<std::string>(n, key, "a string");
  }

  bool boolean(const YAML::Node& n, const std::string& key) const {
    return scalar<bool>(n, key, "true or false");
  }

  std::string choice(const YAML::Node& n, const std::string& key,
                     const std::vector<std::string>& valid) const {
    auto v = text(n, key);
    if (std::find(valid.begin(), valid.end(), v) == valid.end())
      fail(n, key, fmt::format("`{}` is not valid; valid values: {}", v, join(valid)));
    return v;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

struct SweepKey {
  std::string section, key, path;
  YAML::Node path_node;
};

SweepKey parse_sweep_key(const Reader& r, const YAML::Node& key_node, const std::string& where) {
  auto path = key_node.as<std::string>();
  auto dot = path.find('.');
  std::vector<std::string> valid;
  for (const auto& [sec, keys] : schema())
    for (const auto& k : keys) valid.push_back(sec + "." + k);
  if (dot == std::string::npos || std::find(valid.begin(), valid.end(), path) == valid.end()) {
    r.fail(
        key_node, where,
        fmt::format("`{}` is not a key an experiment can sweep{}", path, suggestion(path, valid)));
  }
  return {path.substr(0, dot), path.substr(dot + 1), path, key_node};
}

using Overrides = std::map<std::string, YAML::Node>;

// A section of the document as one run sees it: the file's values, with the sweep's values for
// this run on top. Nodes keep their marks, so errors point into the file.
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
  const YAML::Node& node() const { return node_; }

 private:
  YAML::Node node_;
  std::string name_;
  const Overrides& overrides_;
};

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
  if (auto n = model["weights"]) run.model.weights = r.text(n, "model.weights");
  if (auto n = model["seed"]) run.model.seed = r.integer(n, "model.seed", 0, INT64_MAX);

  Section data = section("data");
  if (auto n = data["kind"]) run.data.kind = r.choice(n, "data.kind", {"synthetic"});
  if (auto n = data["seed"]) run.data.seed = r.integer(n, "data.seed", 0, INT64_MAX);

  Section boards = section("boards");
  if (auto n = boards["count"]) run.boards.count = r.integer(n, "boards.count", 1, 4096);
  if (auto n = boards["backend"])
    run.boards.backend = r.choice(n, "boards.backend", {"emulator", "null"});
  if (auto n = boards["threads"]) run.boards.threads = r.integer(n, "boards.threads", 1, 1024);

  Section partition = section("partition");
  if (auto n = partition["cuts"]) {
    if (n.IsScalar()) {
      run.partition.cuts.push_back(r.text(n, "partition.cuts"));
    } else if (n.IsSequence()) {
      for (const auto& c : n) run.partition.cuts.push_back(r.text(c, "partition.cuts"));
    } else {
      r.fail(n, "partition.cuts", "must be a cut name or a list of cut names");
    }
  }
  if (static_cast<int>(run.partition.cuts.size()) != run.boards.count - 1) {
    YAML::Node where = partition["cuts"] ? partition["cuts"] : root["boards"];
    r.fail(where, "partition.cuts",
           fmt::format("{} boards need {} cut(s), got {} ({})", run.boards.count,
                       run.boards.count - 1, run.partition.cuts.size(),
                       run.partition.cuts.empty() ? "none" : join(run.partition.cuts)));
  }

  Section ae = section("autoencoder");
  if (auto n = ae["rate"]) {
    run.autoencoder.rate = r.real(n, "autoencoder.rate", 1.0, 1e9);
  }
  if (auto n = ae["kernel"]) {
    run.autoencoder.kernel = r.integer(n, "autoencoder.kernel", 1, 15);
    if (run.autoencoder.kernel % 2 == 0)
      r.fail(n, "autoencoder.kernel", fmt::format("must be odd (got {})", run.autoencoder.kernel));
  }

  Section m = section("measurement");
  if (auto n = m["batch"]) run.measurement.batch = r.integer(n, "measurement.batch", 1, 1 << 20);
  if (auto n = m["warmup_batches"])
    run.measurement.warmup_batches = r.integer(n, "measurement.warmup_batches", 0, 1 << 20);
  if (auto n = m["batches"])
    run.measurement.batches = r.integer(n, "measurement.batches", 2, 1 << 24);
  if (auto n = m["check_outputs"])
    run.measurement.check_outputs = r.boolean(n, "measurement.check_outputs");
  if (auto n = m["tolerance"]) run.measurement.tolerance = r.real(n, "measurement.tolerance", 0, 1);

  // The resolved parameters, for the run id and the result file.
  auto shape_text = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + "]";
  };
  run.params["model.arch"] = run.model.arch;
  run.params["model.input"] = shape_text(run.model.input);
  run.params["model.classes"] = std::to_string(run.model.classes);
  run.params["model.weights"] = run.model.weights;
  run.params["model.seed"] = std::to_string(run.model.seed);
  run.params["data.kind"] = run.data.kind;
  run.params["data.seed"] = std::to_string(run.data.seed);
  run.params["boards.count"] = std::to_string(run.boards.count);
  run.params["boards.backend"] = run.boards.backend;
  run.params["boards.threads"] = std::to_string(run.boards.threads);
  run.params["partition.cuts"] = "[" + join(run.partition.cuts) + "]";
  run.params["autoencoder.rate"] = fmt::format("{}", run.autoencoder.rate);
  run.params["autoencoder.kernel"] = std::to_string(run.autoencoder.kernel);
  run.params["measurement.batch"] = std::to_string(run.measurement.batch);
  run.params["measurement.warmup_batches"] = std::to_string(run.measurement.warmup_batches);
  run.params["measurement.batches"] = std::to_string(run.measurement.batches);
  run.params["measurement.check_outputs"] = run.measurement.check_outputs ? "true" : "false";
  run.params["measurement.tolerance"] = fmt::format("{}", run.measurement.tolerance);

  std::string canonical;
  for (const auto& [k, v] : run.params) canonical += k + "=" + v + "\n";
  run.id = hex_digest(canonical).substr(0, 12);
  return run;
}

}  // namespace

ConfigError::ConfigError(std::string file, int line, int column, std::string key,
                         std::string message)
    : std::runtime_error(format_error(file, line, column, key, message)),
      file_(std::move(file)),
      line_(line),
      column_(column),
      key_(std::move(key)) {}

Experiment parse_experiment(const std::string& text, const std::string& path) {
  Reader r(path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path, e.mark.line + 1, e.mark.column + 1, "",
                      fmt::format("YAML syntax error: {}", e.msg));
  }
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

  // Sweep: matrix (cross product) of key -> list of values.
  std::vector<std::vector<std::pair<SweepKey, YAML::Node>>> points = {{}};
  if (auto sweep = root["sweep"]) {
    r.check_keys(sweep, "sweep", {"matrix"});
    if (auto matrix = sweep["matrix"]) {
      if (!matrix.IsMap() || matrix.size() == 0)
        r.fail(matrix, "sweep.matrix",
               "must map keys to lists of values, e.g. `autoencoder.rate: [1, 64]`");
      for (const auto& kv : matrix) {
        SweepKey key = parse_sweep_key(r, kv.first, "sweep.matrix");
        const YAML::Node& values = kv.second;
        if (!values.IsSequence() || values.size() == 0)
          r.fail(values, "sweep.matrix." + key.path, "must be a non-empty list of values");
        std::vector<std::vector<std::pair<SweepKey, YAML::Node>>> next;
        for (const auto& p : points)
          for (const auto& v : values) {
            auto q = p;
            q.emplace_back(key, v);
            next.push_back(std::move(q));
          }
        points = std::move(next);
      }
    }
  }

  std::set<std::string> ids;
  for (const auto& p : points) {
    Overrides overrides;
    for (const auto& [key, value] : p) overrides[key.path] = value;
    RunConfig run = resolve_run(r, root, overrides);
    for (const auto& [key, value] : p) run.swept[key.path] = scalar_text(value);
    if (!ids.insert(run.id).second)
      throw ConfigError(path, 0, 0, "sweep",
                        "two runs of the sweep resolve to the same parameters");
    e.runs.push_back(std::move(run));
  }

  std::string all;
  for (const auto& run : e.runs) all += run.id + ";";
  e.hash = hex_digest(e.name + "|" + e.output + "|" + all).substr(0, 16);
  return e;
}

Experiment load_experiment(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, 0, "", "cannot open the experiment file (does it exist?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_experiment(ss.str(), path);
}

}  // namespace quilt::harness
