#include "cli/profile_cmd.h"

#include "backends/board.h"
#include "backends/emulator.h"
#include "backends/profile.h"
#include "cli/cli.h"
#include "harness/experiment.h"
#include "models/summary.h"
#include "models/torchscript.h"
#include "models/torchscript_profile.h"
#include "models/zoo.h"
#include "partitioners/cost_model.h"
#include "partitioners/error.h"
#include "partitioners/from_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

// A mistake on the command line; the message names the option.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string command;
  std::string model;
  models::ModelOptions model_options;
  bool measure = false;
  bool units_only = false;
  backends::UnitTimingOptions timing;
  std::string output;
  std::string profile;
  std::string file;               // --file: a TorchScript model instead of MODEL
  std::vector<std::string> cuts;  // --cut: its cuts beyond the default ones
};

models::Shape parse_shape(const std::string& text) {
  models::Shape shape;
  size_t pos = 0;
  while (true) {
    const size_t sep = text.find_first_of(",x", pos);
    const std::string part = text.substr(pos, sep == std::string::npos ? sep : sep - pos);
    try {
      size_t used = 0;
      const long long v = std::stoll(part, &used);
      if (used != part.size() || v <= 0) throw std::invalid_argument(part);
      shape.push_back(v);
    } catch (const std::exception&) {
      throw UsageError(fmt::format(
          "--input: `{}` is not a shape; give positive sizes such as 3,224,224 or 64", text));
    }
    if (sep == std::string::npos) break;
    pos = sep + 1;
  }
  return shape;
}

// Returns nullopt when --help was printed.
std::optional<Args> parse(int argc, char** argv, bool calibrate) {
  Args a;
  a.command = calibrate ? "calibrate" : "profile";
  if (calibrate) a.measure = true;
  cli::Parser p(a.command,
                calibrate ? "Measure every unit of a model on the emulator's fast path and fit a "
                            "board profile's efficiency and overhead_s to the times (peak FLOP/s "
                            "kept); writes the fitted profile and prints the fit's error."
                          : "Per unit (block) of a model: shapes, FLOPs, parameters, bytes; under "
                            "each unit its leaf layers. --measure adds the forward time of each "
                            "unit and layer on the emulator's fast path.");
  p.positional("MODEL", "a model of `quilt models` (or --file)", &a.model, false)
      .option("--file", "PATH",
              "a TorchScript file (torch.jit.save of a scripted or traced model) instead of "
              "MODEL; needs --input",
              &a.file)
      .option("--cut", "NAME",
              "with --file: a cut beyond the default ones (repeatable; `quilt models --file` "
              "lists them)",
              [&](const std::string& v) { a.cuts.push_back(v); })
      .option("--input", "C,H,W",
              "per-sample input shape (default: the model's; required with "
              "--file)",
              [&](const std::string& v) { a.model_options.input_shape = parse_shape(v); })
      .option("--classes", "N", "number of classes (default: the model's)",
              &a.model_options.num_classes, 1);
  if (calibrate) {
    p.option("--profile", "NAME|FILE",
             fmt::format("the board profile to start from (built-in: {})",
                         fmt::join(backends::builtin_board_profiles(), ", ")),
             &a.profile)
        .option("--output", "FILE.yaml", "where to write the fitted profile", &a.output);
  } else {
    p.flag("--measure", "also measure each unit's and layer's forward time", &a.measure)
        .flag("--units-only", "leave the per-layer rows out", &a.units_only)
        .option("--output", "FILE.csv|FILE.json", "also write the rows to a file", &a.output);
  }
  p.option("--batch", "N", "samples per timed forward (default 1)", &a.timing.batch, 1)
      .option("--repeats", "N", "timed runs per unit, median kept (default 20)", &a.timing.repeats,
              1)
      .option("--warmup", "N", "untimed runs per unit first (default 3)", &a.timing.warmup, 0)
      .option("--threads", "N", "intra-op threads while measuring (default 1)", &a.timing.threads,
              1);
  if (calibrate)
    p.example("quilt calibrate resnet50 --profile cpu --output cpu.yaml --batch 8");
  else
    p.example("quilt profile resnet50 --measure --units-only")
        .example("quilt profile mlp --input 30 --classes 2 --output mlp.json")
        .example("quilt profile --file m.pt --input 3,224,224 --measure --output m.csv")
        .note(
            "With --file, the rows under each unit are the operations of its frozen graph "
            "(named by the submodule they come from, `type` is the aten op; an `if` that the "
            "input decides is replaced by the branch it takes); FLOPs are 2 x MACs of "
            "conv/linear/matmul plus a count for elementwise, norm and pooling ops (see "
            "models/torchscript_profile.h); --measure times each unit as the emulator runs "
            "it and each operation alone in the TorchScript interpreter.");
  if (calibrate)
    p.example("quilt calibrate --file m.pt --input 3,224,224 --profile cpu --output cpu.yaml");
  if (!p.parse(argc, argv)) return std::nullopt;
  if (!a.file.empty()) {
    if (!a.model.empty()) {
      throw UsageError(fmt::format(
          "give a zoo model or --file, not both (got MODEL `{}` and --file {})", a.model, a.file));
    }
    if (a.model_options.input_shape.empty()) {
      throw UsageError(fmt::format(
          "--file needs --input, the per-sample input shape of the TorchScript model (e.g. "
          "3,224,224)"));
    }
    if (a.model_options.num_classes > 0) {
      throw UsageError(
          "--classes does not apply with --file: the TorchScript model's output is "
          "what it computes");
    }
  } else if (!a.cuts.empty()) {
    throw UsageError("--cut applies with --file only (a zoo model's units are fixed)");
  }
  if (a.model.empty() && a.file.empty()) {
    throw UsageError(fmt::format(
        "`quilt {}` needs a model name or --file PATH (a TorchScript file); the zoo has: {}",
        a.command, fmt::join(models::model_names(), ", ")));
  }
  if (calibrate && a.profile.empty()) {
    throw UsageError(
        fmt::format("`quilt calibrate` needs --profile NAME|FILE (built-in: {}) to start from",
                    fmt::join(backends::builtin_board_profiles(), ", ")));
  }
  if (calibrate && a.output.empty()) {
    throw UsageError("`quilt calibrate` needs --output FILE.yaml for the fitted profile");
  }
  return a;
}

// One leaf layer under its unit; measured seconds per batch, eagerly.
struct LayerRow {
  models::LayerSummary layer;
  std::optional<double> measured_s;
  int64_t param_bytes = 0;  // --file only: bytes of the frozen weights it reads
};

// One row per unit; measured seconds per batch (a group timed as one is split by FLOPs).
struct Row {
  models::UnitSummary unit;
  std::string cut_after;  // empty when no cut follows the unit
  std::optional<double> measured_s;
  std::vector<LayerRow> layers;
  int64_t param_bytes = 0;  // --file only
};

std::vector<Row> make_rows(const models::Model& model, const models::ModelSummary& summary,
                           const std::vector<backends::UnitTiming>* timings) {
  std::vector<Row> rows;
  for (size_t i = 0; i < summary.units.size(); ++i) {
    Row r;
    r.unit = summary.units[i];
    for (const auto& c : model->cuts()) {
      if (c.after_unit == i) r.cut_after = c.name;
    }
    rows.push_back(std::move(r));
  }
  if (timings) {
    for (const auto& t : *timings) {
      int64_t flops = 0;
      for (size_t u = t.first_unit; u < t.end_unit; ++u) flops += rows[u].unit.flops;
      const double n = static_cast<double>(t.end_unit - t.first_unit);
      for (size_t u = t.first_unit; u < t.end_unit; ++u) {
        rows[u].measured_s = flops > 0 ? t.median_s * static_cast<double>(rows[u].unit.flops) /
                                             static_cast<double>(flops)
                                       : t.median_s / n;
      }
    }
  }
  return rows;
}

// The first of the module holders `Holders` that `m` is, called on x; nullopt when none.
template <class... Holders>
std::optional<torch::Tensor> forward_as(torch::nn::Module& m, const torch::Tensor& x) {
  std::optional<torch::Tensor> y;
  // Stops at the first match (the casts are inside the timed loop).
  auto try_one = [&](auto* layer) {
    if (layer) y = layer->forward(x);
    return layer != nullptr;
  };
  (try_one(m.as<Holders>()) || ...);
  return y;
}

// Runs one leaf layer's own forward; nullopt for a type this does not know how to call.
std::optional<torch::Tensor> run_layer(torch::nn::Module& m, const torch::Tensor& x) {
  namespace nn = torch::nn;
  return forward_as<nn::Conv2d, nn::ConvTranspose2d, nn::BatchNorm2d, nn::ReLU, nn::SiLU,
                    nn::Sigmoid, nn::MaxPool2d, nn::AvgPool2d, nn::AdaptiveAvgPool2d, nn::Flatten,
                    nn::Linear, nn::Dropout, nn::Identity>(m, x);
}

// Times every leaf layer's forward on a random input of its own shape: eval mode,
// InferenceMode, --threads threads, --warmup untimed runs, median of --repeats (the CPU runs
// synchronously, so the wall clock around the call is the layer's time).
void measure_layers(const models::Model& model, const backends::UnitTimingOptions& o,
                    std::vector<Row>& rows) {
  const int threads_before = at::get_num_threads();
  at::set_num_threads(static_cast<int>(o.threads));
  model.ptr()->eval();
  torch::manual_seed(o.seed);
  c10::InferenceMode guard;
  for (Row& row : rows) {
    for (LayerRow& l : row.layers) {
      std::vector<int64_t> size = {o.batch};
      size.insert(size.end(), l.layer.in_shape.begin(), l.layer.in_shape.end());
      const torch::Tensor x = torch::randn(size);
      if (!run_layer(*l.layer.module, x)) continue;
      for (int64_t i = 0; i < o.warmup; ++i) run_layer(*l.layer.module, x);
      std::vector<double> times;
      for (int64_t i = 0; i < o.repeats; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        torch::Tensor y = *run_layer(*l.layer.module, x);
        times.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(times.begin(), times.end());
      const size_t n = times.size();
      l.measured_s = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    }
  }
  at::set_num_threads(threads_before);
}

void add_layers(const models::Model& model, std::vector<Row>& rows) {
  size_t r = 0;
  for (models::LayerSummary& l : models::summarize_layers(model)) {
    while (r < rows.size() && rows[r].unit.name != l.unit) ++r;
    TORCH_INTERNAL_ASSERT(r < rows.size(), "layer ", l.name, " of an unknown unit ", l.unit);
    rows[r].layers.push_back(LayerRow{std::move(l), std::nullopt});
  }
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_shape(const models::Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

// The CSV table: one row per unit, each followed by its layer rows.
std::string csv_text(const Args& a, const std::vector<Row>& rows) {
  const double batch = static_cast<double>(a.timing.batch);
  // Unit rows have an empty `layer`; each is followed by its layer rows (same `unit`).
  // --file adds each row's MACs and weight bytes (a zoo model's are in `quilt summary`).
  const bool file = !a.file.empty();
  std::string text =
      "unit,in_shape,out_shape,flops,params,out_bytes,cut_after,measured_s,measured_s_per_"
      "sample,layer,type";
  text += file ? ",macs,param_bytes\n" : "\n";
  auto extra = [&](int64_t macs, int64_t param_bytes) {
    return file ? fmt::format(",{},{}\n", macs, param_bytes) : std::string("\n");
  };
  auto time = [&](const std::optional<double>& t, double per) {
    return t ? fmt::format("{}", *t / per) : std::string();
  };
  for (const auto& r : rows) {
    text += fmt::format("{},{},{},{},{},{},{},{},{},,", r.unit.name,
                        models::to_string(r.unit.in_shape), models::to_string(r.unit.out_shape),
                        r.unit.flops, r.unit.params, r.unit.out_bytes, r.cut_after,
                        time(r.measured_s, 1), time(r.measured_s, batch));
    text += extra(r.unit.macs, r.param_bytes);
    for (const auto& l : r.layers) {
      text += fmt::format("{},{},{},{},{},{},,{},{},{},{}", r.unit.name,
                          models::to_string(l.layer.in_shape), models::to_string(l.layer.out_shape),
                          l.layer.flops, l.layer.params, l.layer.out_bytes, time(l.measured_s, 1),
                          time(l.measured_s, batch), l.layer.name, l.layer.type);
      text += extra(l.layer.macs, l.param_bytes);
    }
  }
  return text;
}

// The JSON document: the model, the measurement settings when measured, then the units with
// their layers.
std::string json_text(const Args& a, const models::ModelSummary& s, const std::vector<Row>& rows) {
  const double batch = static_cast<double>(a.timing.batch);
  const bool file = !a.file.empty();
  auto extra = [&](int64_t macs, int64_t param_bytes) {
    return file ? fmt::format(", \"macs\": {}, \"param_bytes\": {}", macs, param_bytes)
                : std::string();
  };
  std::string text = fmt::format(
      "{{\n  \"model\": {},\n  \"input_shape\": {},\n  \"num_classes\": {},\n  \"flops\": {},\n"
      "  \"params\": {},\n  \"measured\": {},\n",
      json_string(s.arch), json_shape(s.input_shape), s.num_classes, s.flops, s.params,
      a.measure ? "true" : "false");
  if (file) {
    text += fmt::format("  \"file\": {},\n  \"macs\": {},\n  \"flops_convention\": {},\n",
                        json_string(a.file), s.macs,
                        json_string("2 x MACs of conv/linear/matmul + elementwise, norm and "
                                    "pooling counts (models/torchscript_profile.h)"));
  }
  if (a.measure) {
    text += fmt::format(
        "  \"batch\": {},\n  \"threads\": {},\n  \"repeats\": {},\n  \"warmup\": {},\n"
        "  \"method\": {},\n  \"layer_method\": {},\n  \"cpu\": {},\n",
        a.timing.batch, a.timing.threads, a.timing.repeats, a.timing.warmup,
        json_string(file ? "each unit frozen and compiled alone by backends::CompiledStage "
                           "(as the emulator runs it); median"
                         : "each unit compiled alone by backends::CompiledStage; median"),
        json_string(file ? "each graph operation run alone as a one-node graph by the "
                           "TorchScript interpreter on the inputs a run of its unit gave; median"
                         : "each leaf layer's own forward, eager LibTorch in InferenceMode; "
                           "median"),
        json_string(backends::cpu_model_name()));
  }
  text += "  \"units\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    text += fmt::format(
        "    {{\"name\": {}, \"in_shape\": {}, \"out_shape\": {}, \"flops\": {}, \"params\": {}, "
        "\"out_bytes\": {}, \"cut_after\": {}",
        json_string(r.unit.name), json_shape(r.unit.in_shape), json_shape(r.unit.out_shape),
        r.unit.flops, r.unit.params, r.unit.out_bytes,
        r.cut_after.empty() ? "null" : json_string(r.cut_after));
    text += extra(r.unit.macs, r.param_bytes);
    if (r.measured_s) {
      text += fmt::format(", \"measured_s\": {}, \"measured_s_per_sample\": {}", *r.measured_s,
                          *r.measured_s / batch);
    }
    if (!r.layers.empty()) {
      text += ", \"layers\": [\n";
      for (size_t j = 0; j < r.layers.size(); ++j) {
        const LayerRow& l = r.layers[j];
        text += fmt::format(
            "      {{\"name\": {}, \"type\": {}, \"in_shape\": {}, \"out_shape\": {}, "
            "\"flops\": {}, \"params\": {}, \"out_bytes\": {}",
            json_string(l.layer.name), json_string(l.layer.type), json_shape(l.layer.in_shape),
            json_shape(l.layer.out_shape), l.layer.flops, l.layer.params, l.layer.out_bytes);
        text += extra(l.layer.macs, l.param_bytes);
        if (l.measured_s) {
          text += fmt::format(", \"measured_s\": {}, \"measured_s_per_sample\": {}", *l.measured_s,
                              *l.measured_s / batch);
        }
        text += j + 1 < r.layers.size() ? "},\n" : "}\n";
      }
      text += "    ]";
    }
    text += i + 1 < rows.size() ? "},\n" : "}\n";
  }
  text += "  ]\n}\n";
  return text;
}

void write_rows(const std::string& path, const Args& a, const models::ModelSummary& s,
                const std::vector<Row>& rows) {
  const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  const bool csv = path.size() >= 4 && path.compare(path.size() - 4, 4, ".csv") == 0;
  if (!json && !csv) {
    throw UsageError(fmt::format("--output {}: the file name must end in .csv or .json", path));
  }
  const std::string text = csv ? csv_text(a, rows) : json_text(a, s, rows);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw UsageError(fmt::format("--output {}: cannot write the file", path));
}

std::vector<backends::UnitTiming> measure(const models::Model& model, const Args& a) {
  fmt::print(stderr,
             "measuring {} unit(s) of {}: batch {}, {} warm-up + {} timed run(s) each, {} "
             "thread(s)\n",
             model->units().size(), model->arch(), a.timing.batch, a.timing.warmup,
             a.timing.repeats, a.timing.threads);
  return backends::measure_unit_times(model, a.timing);
}

// The model of MODEL, or of --file.
models::Model make(const Args& a) {
  if (a.file.empty()) return models::make_model(a.model, a.model_options);
  return load_torchscript_file(a.file, a.model_options.input_shape, a.cuts);
}

// --file: the rows of a TorchScript model, one layer row per graph operation.
std::vector<Row> torchscript_rows(const models::Model& model, const Args& a,
                                  models::ModelSummary& s,
                                  const std::vector<backends::UnitTiming>* timings) {
  const auto& ts = dynamic_cast<const models::TorchScriptModelImpl&>(*model.ptr());
  std::vector<models::TorchScriptUnitProfile> units = models::profile_torchscript(ts);
  if (a.measure && !a.units_only) {
    int64_t n = 0;
    for (const auto& u : units) n += static_cast<int64_t>(u.nodes.size());
    fmt::print(stderr,
               "measuring {} graph operation(s) of {} alone in the TorchScript interpreter: batch "
               "{}, {} warm-up + {} timed\n",
               n, a.file, a.timing.batch, a.timing.warmup, a.timing.repeats);
    models::measure_torchscript_nodes(
        ts, {a.timing.batch, a.timing.warmup, a.timing.repeats, a.timing.threads, a.timing.seed},
        units);
  }
  s.arch = model->arch();
  s.input_shape = model->input_shape();
  s.num_classes = model->num_classes();
  s.cuts = model->cuts();
  for (const auto& u : units) {
    models::UnitSummary us;
    us.name = u.name;
    us.in_shape = u.in_shape;
    us.out_shape = u.out_shape;
    us.macs = u.macs;
    us.flops = u.flops;
    us.params = u.params;
    us.out_bytes = u.out_bytes;
    s.units.push_back(us);
    s.macs += u.macs;
    s.flops += u.flops;
    s.params += u.params;
  }
  std::vector<Row> rows = make_rows(model, s, timings);
  for (size_t i = 0; i < units.size(); ++i) {
    rows[i].param_bytes = units[i].param_bytes;
    if (a.units_only) continue;
    for (const auto& n : units[i].nodes) {
      LayerRow l;
      l.layer.unit = units[i].name;
      l.layer.name = n.name;
      l.layer.type = n.op;
      l.layer.in_shape = n.in_shape;
      l.layer.out_shape = n.out_shape;
      l.layer.macs = n.macs;
      l.layer.flops = n.flops;
      l.layer.params = n.params;
      l.layer.out_bytes = n.out_bytes;
      l.measured_s = n.measured_s;
      l.param_bytes = n.param_bytes;
      rows[i].layers.push_back(std::move(l));
    }
  }
  return rows;
}

int profile(const Args& a) {
  torch::manual_seed(0);
  const models::Model model = make(a);
  const bool file = !a.file.empty();
  models::ModelSummary s;
  std::optional<std::vector<backends::UnitTiming>> timings;
  std::vector<Row> rows;
  if (file) {
    if (a.measure) timings = measure(model, a);
    rows = torchscript_rows(model, a, s, timings ? &*timings : nullptr);
  } else {
    s = models::summarize(model);
    if (a.measure) timings = measure(model, a);
    rows = make_rows(model, s, timings ? &*timings : nullptr);
    if (!a.units_only) {
      add_layers(model, rows);
      size_t num_layers = 0;
      for (const Row& r : rows) num_layers += r.layers.size();
      if (a.measure) {
        fmt::print(stderr, "measuring {} layer(s) of {} eagerly: batch {}, {} warm-up + {} timed\n",
                   num_layers, model->arch(), a.timing.batch, a.timing.warmup, a.timing.repeats);
        measure_layers(model, a.timing, rows);
      }
    }
  }

  if (file) {
    int64_t param_bytes = 0;
    for (const Row& r : rows) param_bytes += r.param_bytes;
    fmt::print(
        "{} (torchscript) input {}: {} unit(s), {:.4f} GFLOPs/sample ({:.4f} of them 2 x MACs of "
        "conv/linear/matmul, what the cost model counts), {} parameters ({} bytes, frozen)\n",
        a.file, models::to_string(s.input_shape), rows.size(), s.flops * 1e-9, 2 * s.macs * 1e-9,
        s.params, param_bytes);
  } else {
    fmt::print("{} input {} classes {}: {} unit(s), {:.4f} GFLOPs/sample, {} parameters\n", s.arch,
               models::to_string(s.input_shape), s.num_classes, rows.size(), s.flops * 1e-9,
               s.params);
  }
  if (a.measure && file) {
    fmt::print(
        "measured: each unit frozen and compiled alone as the emulator runs it "
        "(backends::CompiledStage), median of {} run(s) after {} warm-up, batch {}, {} "
        "thread(s), {}\n",
        a.timing.repeats, a.timing.warmup, a.timing.batch, a.timing.threads,
        backends::cpu_model_name());
    if (!a.units_only) {
      fmt::print(
          "operations (indented): each run alone as a one-node graph by the TorchScript "
          "interpreter on the inputs a run of its unit gave (not optimised, no BN folding; "
          "interpreter overhead of a few us included), same repeats; their sum is not the "
          "unit's time\n");
    }
  } else if (a.measure) {
    fmt::print(
        "measured: each unit compiled alone on the emulator fast path (backends::CompiledStage), "
        "median of {} run(s) after {} warm-up, batch {}, {} thread(s), {}\n",
        a.timing.repeats, a.timing.warmup, a.timing.batch, a.timing.threads,
        backends::cpu_model_name());
    if (!a.units_only) {
      fmt::print(
          "layers (indented): each leaf layer's own forward run eagerly (LibTorch module, "
          "InferenceMode, no BN folding), same repeats; their sum is not the unit's time\n");
    }
  }
  size_t width = 10;
  for (const Row& r : rows) {
    width = std::max(width, r.unit.name.size());
    for (const LayerRow& l : r.layers) width = std::max(width, l.layer.name.size() + 2);
  }
  // A small TorchScript model (the fixtures: a few MFLOPs) in MFLOPs, so its rows are not 0.
  const bool mega = file && s.flops < 1e9;
  const double flop_scale = mega ? 1e-6 : 1e-9;
  std::string header = fmt::format("{:<{}} {:>14} {:>14} {:>10} {:>10} {:>11}", "unit", width, "in",
                                   "out", mega ? "MFLOPs" : "GFLOPs", "params", "out bytes");
  if (a.measure) header += fmt::format(" {:>11} {:>10}", "ms/batch", "GFLOP/s");
  if (!a.units_only) header += "  type";
  fmt::print("{}\n", header);
  auto measured = [&](const std::optional<double>& t, int64_t flops) {
    if (!a.measure) return std::string();
    if (!t) return fmt::format(" {:>11} {:>10}", "-", "-");
    return fmt::format(" {:>11.4f} {:>10.2f}", *t * 1e3,
                       *t > 0 ? flops * static_cast<double>(a.timing.batch) / *t * 1e-9 : 0.0);
  };
  double total_s = 0;
  for (const Row& r : rows) {
    if (r.measured_s) total_s += *r.measured_s;
    fmt::print("{:<{}} {:>14} {:>14} {:>10.4f} {:>10} {:>11}{}{}\n", r.unit.name, width,
               models::to_string(r.unit.in_shape), models::to_string(r.unit.out_shape),
               r.unit.flops * flop_scale, r.unit.params, r.unit.out_bytes,
               measured(r.measured_s, r.unit.flops), a.units_only ? "" : "  unit");
    for (const LayerRow& l : r.layers) {
      fmt::print("{:<{}} {:>14} {:>14} {:>10.4f} {:>10} {:>11}{}  {}\n", "  " + l.layer.name, width,
                 models::to_string(l.layer.in_shape), models::to_string(l.layer.out_shape),
                 l.layer.flops * flop_scale, l.layer.params, l.layer.out_bytes,
                 measured(l.measured_s, l.layer.flops), l.layer.type);
    }
  }
  if (a.measure) {
    fmt::print("sum of units: {:.4f} ms/batch ({:.2f} samples/s through one board)\n",
               total_s * 1e3, total_s > 0 ? static_cast<double>(a.timing.batch) / total_s : 0.0);
  }
  if (!a.output.empty()) {
    write_rows(a.output, a, s, rows);
    fmt::print(stderr, "wrote {}\n", a.output);
  }
  return kExitOk;
}

int calibrate(const Args& a) {
  backends::BoardProfileFile file = backends::load_board_profile(a.profile);
  torch::manual_seed(0);
  const models::Model model = make(a);
  const models::ModelSummary s = models::summarize(model);
  const std::vector<backends::UnitTiming> timings = measure(model, a);

  std::vector<partitioners::CalibrationSample> samples;
  std::vector<std::string> names;
  for (const auto& t : timings) {
    double flops = 0;
    for (size_t u = t.first_unit; u < t.end_unit; ++u) {
      flops += static_cast<double>(s.units[u].flops);
    }
    samples.push_back({flops * static_cast<double>(a.timing.batch), t.median_s});
    names.push_back(t.name);
  }
  const partitioners::CalibrationResult fit = partitioners::calibrate(file.board, samples);

  fmt::print("{} on {} (batch {}, {} thread(s), median of {}), board profile {} ({})\n", s.arch,
             backends::cpu_model_name(), a.timing.batch, a.timing.threads, a.timing.repeats,
             file.board.name, file.source);
  fmt::print("{:<12} {:>12} {:>12} {:>12} {:>9}\n", "unit", "GFLOP/batch", "measured ms",
             "fitted ms", "error");
  for (size_t i = 0; i < samples.size(); ++i) {
    const double predicted = partitioners::compute_s(fit.board, samples[i].flops, 1);
    fmt::print("{:<12} {:>12.4f} {:>12.4f} {:>12.4f} {:>8.1f}%\n", names[i],
               samples[i].flops * 1e-9, samples[i].measured_s * 1e3, predicted * 1e3,
               100 * (predicted - samples[i].measured_s) / samples[i].measured_s);
  }
  fmt::print(
      "fit: time = flops / ({:.4g} FLOP/s x efficiency {:.4f}) + overhead {:.3g} s "
      "(efficiency was {:.4f}, overhead {:.3g} s)\n",
      fit.board.peak_flops, fit.board.efficiency, fit.board.overhead_s, file.board.efficiency,
      file.board.overhead_s);
  fmt::print("fit quality over {} unit(s): mean relative error {:.2f}%, R^2 {:.4f}\n", fit.samples,
             100 * fit.mean_relative_error, fit.r_squared);

  backends::BoardProfileFile out = file;
  out.board = fit.board;
  out.source.clear();
  backends::CalibrationInfo info;
  info.model = a.file.empty() ? s.arch : a.file;
  info.input = models::to_string(s.input_shape);
  info.batch = a.timing.batch;
  info.threads = a.timing.threads;
  info.repeats = a.timing.repeats;
  info.samples = fit.samples;
  info.mean_relative_error = fit.mean_relative_error;
  info.r_squared = fit.r_squared;
  info.host = backends::cpu_model_name();
  out.calibration = info;
  // A profile calibrated again keeps its original description, not a growing chain of notes.
  constexpr const char* kFitted = " -- efficiency and overhead_s fitted by quilt calibrate";
  std::string base = file.description.empty() ? file.board.name : file.description;
  if (const size_t at = base.find(kFitted); at != std::string::npos) base.resize(at);
  out.description = fmt::format("{}{} ({} {}, batch {}, {} thread(s))", base, kFitted, s.arch,
                                info.input, info.batch, info.threads);
  backends::save_board_profile(a.output, out);
  fmt::print("wrote {}\n", a.output);
  return kExitOk;
}

int guarded(int argc, char** argv, bool is_calibrate) {
  try {
    const std::optional<Args> a = parse(argc, argv, is_calibrate);
    if (!a) return kExitOk;
    return is_calibrate ? calibrate(*a) : profile(*a);
  } catch (const ConfigError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
  } catch (const UsageError& e) {
    fmt::print(stderr, "quilt {}: error: {}\n", is_calibrate ? "calibrate" : "profile", e.what());
  } catch (const backends::ProfileError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
  } catch (const partitioners::PartitionError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
  } catch (const models::ModelError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
  } catch (const backends::BoardError& e) {
    fmt::print(stderr, "quilt: error: {}\n", e.what());
  }
  return kExitUsage;
}

}  // namespace

models::Model load_torchscript_file(const std::string& path, const models::Shape& input,
                                    const std::vector<std::string>& cuts) {
  models::ModelOptions options;
  options.path = path;
  options.input_shape = input;
  options.cuts = cuts;
  try {
    return models::make_model(models::kTorchScriptArch, options);
  } catch (const models::ModelError& e) {
    // The model's messages name the experiment's keys; here the options stand for them.
    std::string m = e.what();
    for (const auto& [key, option] : {std::pair<std::string, std::string>{"model.path:", "--file"},
                                      {"model.input:", "--input"}}) {
      if (m.rfind(key, 0) == 0) m = option + ":" + m.substr(key.size());
    }
    if (m.rfind("unknown cut", 0) == 0 || m.rfind("cut \"", 0) == 0) m = "--cut: " + m;
    throw models::ModelError(m);
  }
}

int cmd_profile(int argc, char** argv) { return guarded(argc, argv, false); }

int cmd_calibrate(int argc, char** argv) { return guarded(argc, argv, true); }

}  // namespace quilt::harness
