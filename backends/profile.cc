#include "backends/profile.h"

#include "backends/board.h"
#include "backends/emulator.h"
#include "backends/inference.h"
#include "backends/torchscript_stage.h"
#include "common/text.h"
#include "common/yaml_reader.h"
#include "models/quilt_model.h"
#include "partitioners/error.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

namespace quilt::backends {
namespace {

// name -> YAML text of backends/profiles/<name>.yaml, embedded at configure time.
const std::map<std::string, std::string>& builtins() {
  static const std::map<std::string, std::string> kBuiltins = {
#include "backends/builtin_profiles.inc"
  };
  return kBuiltins;
}

std::string format_profile_error(const std::string& file, int line, const std::string& key,
                                 const std::string& message) {
  std::string where = line > 0 ? fmt::format("{}:{}", file, line) : file;
  if (key.empty()) return fmt::format("{}: {}", where, message);
  return fmt::format("{}: `{}`: {}", where, key, message);
}

// Strict reading of one YAML map (common/yaml_reader.h), every error a ProfileError naming
// source:line and the dotted key.
class Reader : public common::YamlReader {
 public:
  explicit Reader(const std::string& source)
      : YamlReader([source](int line, int, const std::string& key, const std::string& message) {
          throw ProfileError(source, line, key, message);
        }) {}

  // Every key of `map` must be in `valid`; returns key -> (key node, value node).
  std::map<std::string, std::pair<YAML::Node, YAML::Node>> entries(
      const YAML::Node& map, const std::string& prefix,
      const std::vector<std::string>& valid) const {
    std::map<std::string, std::pair<YAML::Node, YAML::Node>> out;
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) fail(kv.first, prefix, "keys must be plain names");
      const std::string key = kv.first.Scalar();
      const std::string dotted = prefix.empty() ? key : prefix + "." + key;
      if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
        fail(kv.first, dotted,
             fmt::format("unknown key in a board profile; valid keys{}: {}",
                         prefix.empty() ? "" : " of " + prefix, fmt::join(valid, ", ")));
      }
      if (out.count(key)) fail(kv.first, dotted, "given twice; give each key once");
      out.emplace(key, std::make_pair(kv.first, kv.second));
    }
    return out;
  }

  double real(const YAML::Node& n, const std::string& key, const std::string& range,
              const std::function<bool(double)>& ok) const {
    const std::optional<double> v = parse<double>(n);
    if (!v) fail(n, key, fmt::format("must be a number ({}), got `{}`", range, shown(n)));
    if (!ok(*v)) fail(n, key, fmt::format("{} is out of range; it must be {}", n.Scalar(), range));
    return *v;
  }

  int64_t integer(const YAML::Node& n, const std::string& key) const {
    const std::optional<int64_t> v = parse<int64_t>(n);
    if (!v || *v < 0) fail(n, key, fmt::format("must be an integer >= 0, got `{}`", shown(n)));
    return *v;
  }

 private:
  static std::string shown(const YAML::Node& n) {
    return n.IsScalar() ? n.Scalar() : "a collection";
  }
};

bool positive_finite(double v) { return std::isfinite(v) && v > 0; }
bool non_negative_finite(double v) { return std::isfinite(v) && v >= 0; }
bool positive_or_inf(double v) { return !std::isnan(v) && v > 0; }

// Round-trip precision for doubles; YAML spells infinity ".inf".
std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  return fmt::format("{}", v);  // shortest representation that reads back exactly
}

std::string quoted(const std::string& s) {
  YAML::Emitter out;
  out << YAML::DoubleQuoted << s;
  return out.c_str();
}

using Entries = std::map<std::string, std::pair<YAML::Node, YAML::Node>>;

// The document of a board profile: a non-empty YAML mapping, else a ProfileError.
YAML::Node load_profile_root(const std::string& text, const std::string& source, const Reader& r) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ProfileError(source, e.mark.line >= 0 ? e.mark.line + 1 : 0, "",
                       fmt::format("malformed YAML: {}", e.msg));
  }
  if (!root.IsDefined() || root.IsNull()) {
    throw ProfileError(source, 0, "",
                       "the board profile is empty; it needs at least `name` and `peak_flops`");
  }
  if (!root.IsMap()) r.fail(root, "", "a board profile must be a YAML mapping of keys to values");
  return root;
}

// The value of optional key `key` checked against `ok` (`range` says what is valid in words).
std::optional<double> optional_real(const Reader& r, const Entries& e, const char* key,
                                    const std::string& range,
                                    const std::function<bool(double)>& ok) {
  auto it = e.find(key);
  if (it == e.end()) return std::nullopt;
  return r.real(it->second.second, key, range, ok);
}

bool in_unit_interval(double v) { return v > 0 && v <= 1; }

// The real-valued keys of partitioners::BoardProfile, in the order they are checked.
struct BoardReal {
  const char* key;
  const char* range;
  bool (*ok)(double);
  double partitioners::BoardProfile::*field;
};

const BoardReal kBoardReals[] = {
    {"peak_flops", "finite and > 0 FLOP/s", positive_finite,
     &partitioners::BoardProfile::peak_flops},
    {"efficiency", "in (0, 1]", in_unit_interval, &partitioners::BoardProfile::efficiency},
    {"overhead_s", "finite and >= 0 seconds", non_negative_finite,
     &partitioners::BoardProfile::overhead_s},
    {"h2d_gbps", "> 0 GB/s (.inf = free)", positive_or_inf, &partitioners::BoardProfile::h2d_gbps},
    {"d2h_gbps", "> 0 GB/s (.inf = free)", positive_or_inf, &partitioners::BoardProfile::d2h_gbps},
    {"link_latency_s", "finite and >= 0 seconds", non_negative_finite,
     &partitioners::BoardProfile::link_latency_s},
    {"mpi_gbps", "> 0 GB/s (.inf = free)", positive_or_inf, &partitioners::BoardProfile::mpi_gbps},
    {"mpi_latency_s", "finite and >= 0 seconds", non_negative_finite,
     &partitioners::BoardProfile::mpi_latency_s},
};

// name, description and the cost model's numbers (a key not given keeps its default).
void parse_board(const Reader& r, const Entries& e, BoardProfileFile& p) {
  auto& b = p.board;
  b.name = r.text(e.at("name").second, "name");
  if (b.name.empty()) r.fail(e.at("name").second, "name", "must not be empty");
  if (e.count("description")) p.description = r.text(e.at("description").second, "description");
  for (const BoardReal& k : kBoardReals)
    b.*k.field = optional_real(r, e, k.key, k.range, k.ok).value_or(b.*k.field);
}

// Power and link energy, with busy power >= idle power.
void parse_power(const Reader& r, const Entries& e, BoardProfileFile& p) {
  p.power_idle_w = optional_real(r, e, "power_idle_w", "finite and >= 0 W", non_negative_finite);
  p.power_busy_w = optional_real(r, e, "power_busy_w", "finite and >= 0 W", non_negative_finite);
  if (p.power_idle_w && p.power_busy_w && *p.power_busy_w < *p.power_idle_w) {
    r.fail(e.at("power_busy_w").second, "power_busy_w",
           fmt::format("{} W is below power_idle_w = {} W; busy power must be >= idle power",
                       *p.power_busy_w, *p.power_idle_w));
  }
  p.link_energy_j_per_byte =
      optional_real(r, e, "link_energy_j_per_byte", "finite and >= 0 J/byte", non_negative_finite);
}

// The `calibration` mapping that quilt calibrate writes.
CalibrationInfo parse_calibration(const Reader& r, const YAML::Node& c) {
  if (!c.IsMap()) r.fail(c, "calibration", "must be a mapping (written by quilt calibrate)");
  const auto ce = r.entries(c, "calibration",
                            {"model", "input", "batch", "threads", "repeats", "samples",
                             "mean_relative_error", "r_squared", "host"});
  CalibrationInfo info;
  auto field = [&](const char* key) -> const YAML::Node* {
    auto it = ce.find(key);
    return it == ce.end() ? nullptr : &it->second.second;
  };
  const std::string pre = "calibration.";
  if (auto* n = field("model")) info.model = r.text(*n, pre + "model");
  if (auto* n = field("input")) info.input = r.text(*n, pre + "input");
  if (auto* n = field("host")) info.host = r.text(*n, pre + "host");
  if (auto* n = field("batch")) info.batch = r.integer(*n, pre + "batch");
  if (auto* n = field("threads")) info.threads = r.integer(*n, pre + "threads");
  if (auto* n = field("repeats")) info.repeats = r.integer(*n, pre + "repeats");
  if (auto* n = field("samples")) info.samples = r.integer(*n, pre + "samples");
  if (auto* n = field("mean_relative_error"))
    info.mean_relative_error =
        r.real(*n, pre + "mean_relative_error", "finite and >= 0", non_negative_finite);
  if (auto* n = field("r_squared"))
    info.r_squared = r.real(*n, pre + "r_squared", "finite and <= 1",
                            [](double v) { return std::isfinite(v) && v <= 1; });
  return info;
}

}  // namespace

ProfileError::ProfileError(std::string file, int line, std::string key, const std::string& message)
    : std::runtime_error(format_profile_error(file, line, key, message)),
      file_(std::move(file)),
      line_(line),
      key_(std::move(key)) {}

std::vector<std::string> builtin_board_profiles() {
  std::vector<std::string> names;
  for (const auto& [name, text] : builtins()) names.push_back(name);
  return names;
}

BoardProfileFile parse_board_profile(const std::string& text, const std::string& source) {
  Reader r(source);
  const YAML::Node root = load_profile_root(text, source, r);
  const auto e =
      r.entries(root, "",
                {"name", "description", "peak_flops", "efficiency", "overhead_s", "h2d_gbps",
                 "d2h_gbps", "link_latency_s", "mpi_gbps", "mpi_latency_s", "power_idle_w",
                 "power_busy_w", "link_energy_j_per_byte", "precision", "calibration"});
  for (const char* required : {"name", "peak_flops"}) {
    if (!e.count(required)) {
      r.fail(root, required, "missing; every board profile needs `name` and `peak_flops`");
    }
  }
  BoardProfileFile p;
  p.source = source;
  parse_board(r, e, p);
  parse_power(r, e, p);
  if (e.count("precision")) {
    const YAML::Node& n = e.at("precision").second;
    p.precision = r.text(n, "precision");
    if (!parse_precision(p.precision))
      r.fail(n, "precision",
             fmt::format("`{}` is not a precision; valid: {}", p.precision,
                         common::join(precision_names())));
  }
  if (e.count("calibration")) p.calibration = parse_calibration(r, e.at("calibration").second);
  // The per-field checks above cover partitioners::validate; this keeps the two in step.
  try {
    partitioners::validate(p.board, fmt::format("board profile '{}'", p.board.name));
  } catch (const partitioners::PartitionError& err) {
    throw ProfileError(source, 0, "", err.what());
  }
  return p;
}

std::vector<std::string> board_profile_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("QUILT_PROFILE_PATH")) {
    std::stringstream list(env);
    for (std::string d; std::getline(list, d, ':');)
      if (!d.empty()) dirs.push_back(d);
  }
  // An installed quilt: <prefix>/bin/quilt beside <prefix>/share/quilt/profiles.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto dir = exe.parent_path().parent_path() / "share" / "quilt" / "profiles";
    if (std::filesystem::is_directory(dir, ec)) dirs.push_back(dir.string());
  }
  return dirs;
}

BoardProfileFile load_board_profile(const std::string& name_or_path) {
  const auto& table = builtins();
  auto it = table.find(name_or_path);
  if (it != table.end()) return parse_board_profile(it->second, "built-in:" + name_or_path);
  const bool looks_like_path = name_or_path.find('/') != std::string::npos ||
                               name_or_path.find(".yaml") != std::string::npos ||
                               name_or_path.find(".yml") != std::string::npos;
  std::string path = name_or_path;
  std::ifstream in(path, std::ios::binary);
  // A bare name: <name>.yaml in the profile folders.
  const auto dirs = looks_like_path ? std::vector<std::string>{} : board_profile_dirs();
  for (size_t d = 0; !in && d < dirs.size(); ++d) {
    path = (std::filesystem::path(dirs[d]) / (name_or_path + ".yaml")).string();
    in = std::ifstream(path, std::ios::binary);
  }
  if (!in) {
    throw ProfileError(
        name_or_path, 0, "",
        fmt::format("{}; built-in board profiles: {} (or the path of a profile .yaml file{})",
                    looks_like_path ? "cannot open the board profile file"
                                    : "no built-in board profile and no file of that name",
                    fmt::join(builtin_board_profiles(), ", "),
                    dirs.empty() ? std::string()
                                 : fmt::format(", or NAME.yaml in {}", fmt::join(dirs, ", "))));
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse_board_profile(text.str(), path);
}

std::string to_yaml(const BoardProfileFile& p) {
  const auto& b = p.board;
  std::string out;
  if (!p.description.empty()) {
    std::istringstream lines(p.description);
    for (std::string line; std::getline(lines, line);) out += "# " + line + "\n";
  }
  out += fmt::format("name: {}\n", quoted(b.name));
  if (!p.description.empty()) out += fmt::format("description: {}\n", quoted(p.description));
  out += fmt::format("peak_flops: {}\n", number(b.peak_flops));
  out += fmt::format("efficiency: {}\n", number(b.efficiency));
  out += fmt::format("overhead_s: {}\n", number(b.overhead_s));
  out += fmt::format("h2d_gbps: {}\n", number(b.h2d_gbps));
  out += fmt::format("d2h_gbps: {}\n", number(b.d2h_gbps));
  out += fmt::format("link_latency_s: {}\n", number(b.link_latency_s));
  out += fmt::format("mpi_gbps: {}\n", number(b.mpi_gbps));
  out += fmt::format("mpi_latency_s: {}\n", number(b.mpi_latency_s));
  if (p.power_idle_w) out += fmt::format("power_idle_w: {}\n", number(*p.power_idle_w));
  if (p.power_busy_w) out += fmt::format("power_busy_w: {}\n", number(*p.power_busy_w));
  if (p.link_energy_j_per_byte) {
    out += fmt::format("link_energy_j_per_byte: {}\n", number(*p.link_energy_j_per_byte));
  }
  if (!p.precision.empty()) out += fmt::format("precision: {}\n", p.precision);
  if (p.calibration) {
    const auto& c = *p.calibration;
    out += "calibration:\n";
    out += fmt::format("  model: {}\n  input: {}\n  host: {}\n", quoted(c.model), quoted(c.input),
                       quoted(c.host));
    out += fmt::format("  batch: {}\n  threads: {}\n  repeats: {}\n  samples: {}\n", c.batch,
                       c.threads, c.repeats, c.samples);
    out += fmt::format("  mean_relative_error: {}\n  r_squared: {}\n",
                       number(c.mean_relative_error), number(c.r_squared));
  }
  return out;
}

void save_board_profile(const std::string& path, const BoardProfileFile& profile) {
  try {
    partitioners::validate(profile.board, fmt::format("board profile '{}'", profile.board.name));
  } catch (const partitioners::PartitionError& err) {
    throw ProfileError(path, 0, "", fmt::format("not saved: {}", err.what()));
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << to_yaml(profile);
  if (!out.flush()) {
    throw ProfileError(path, 0, "", "cannot write the board profile file there");
  }
}

std::vector<UnitTiming> measure_unit_times(const models::Model& model,
                                           const UnitTimingOptions& options) {
  if (options.batch < 1 || options.repeats < 1 || options.warmup < 0 || options.threads < 1) {
    throw BoardError(fmt::format(
        "unit timing needs batch >= 1, repeats >= 1, warmup >= 0 and threads >= 1 (got batch {}, "
        "repeats {}, warmup {}, threads {})",
        options.batch, options.repeats, options.warmup, options.threads));
  }
  std::vector<std::string> cuts;
  for (const auto& c : model->cuts()) cuts.push_back(c.name);
  models::QuiltModel qm(model, cuts, models::AutoencoderOptions{1.0, 1});
  qm->eval();

  const int previous_threads = at::get_num_threads();
  at::set_num_threads(static_cast<int>(options.threads));
  struct RestoreThreads {
    int n;
    ~RestoreThreads() { at::set_num_threads(n); }
  } restore{previous_threads};

  torch::NoGradGuard no_grad;
  torch::manual_seed(options.seed);
  const auto& units = model->units();
  std::vector<UnitTiming> timings;
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    const models::StageSpec& spec = qm->stage(k);
    // Zoo and TorchScript stages alike run as the emulator runs them: lowered by CompiledStage.
    auto stage = std::make_shared<CompiledStage>(*qm, k, options.batch);
    auto run = [stage](const at::Tensor& x) { return stage->run(x); };
    std::vector<int64_t> shape = {options.batch};
    shape.insert(shape.end(), spec.in_shape.begin(), spec.in_shape.end());
    const at::Tensor input = torch::randn(shape);
    for (int64_t i = 0; i < options.warmup; ++i) run(input);
    UnitTiming t;
    t.first_unit = spec.first_unit;
    t.end_unit = spec.end_unit;
    t.name = units[spec.first_unit].name;
    if (spec.end_unit - spec.first_unit > 1) t.name += ".." + units[spec.end_unit - 1].name;
    for (int64_t i = 0; i < options.repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      at::Tensor out = run(input);
      const auto t1 = std::chrono::steady_clock::now();
      // The result's storage is touched after the clock stops so the compiler keeps the run.
      TORCH_INTERNAL_ASSERT(out.defined());
      t.runs_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    std::vector<double> sorted = t.runs_s;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    t.median_s = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    t.min_s = sorted.front();
    t.max_s = sorted.back();
    timings.push_back(std::move(t));
  }
  return timings;
}

}  // namespace quilt::backends
