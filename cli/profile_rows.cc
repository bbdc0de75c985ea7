#include "cli/profile_rows.h"

#include "backends/emulator.h"
#include "models/torchscript.h"
#include "models/torchscript_profile.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <fstream>

namespace quilt::harness::profile {
namespace {

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

}  // namespace

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

std::vector<backends::UnitTiming> measure_units(const models::Model& model, const Args& a) {
  fmt::print(stderr,
             "measuring {} unit(s) of {}: batch {}, {} warm-up + {} timed run(s) each, {} "
             "thread(s)\n",
             model->units().size(), model->arch(), a.timing.batch, a.timing.warmup,
             a.timing.repeats, a.timing.threads);
  return backends::measure_unit_times(model, a.timing);
}

namespace {

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
  s = models::summarize_torchscript(ts, units);
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

}  // namespace

std::vector<Row> collect_rows(const models::Model& model, const Args& a, models::ModelSummary& s) {
  std::optional<std::vector<backends::UnitTiming>> timings;
  if (!a.file.empty()) {
    if (a.measure) timings = measure_units(model, a);
    return torchscript_rows(model, a, s, timings ? &*timings : nullptr);
  }
  s = models::summarize(model);
  if (a.measure) timings = measure_units(model, a);
  std::vector<Row> rows = make_rows(model, s, timings ? &*timings : nullptr);
  if (a.units_only) return rows;
  add_layers(model, rows);
  if (a.measure) {
    size_t num_layers = 0;
    for (const Row& r : rows) num_layers += r.layers.size();
    fmt::print(stderr, "measuring {} layer(s) of {} eagerly: batch {}, {} warm-up + {} timed\n",
               num_layers, model->arch(), a.timing.batch, a.timing.warmup, a.timing.repeats);
    measure_layers(model, a.timing, rows);
  }
  return rows;
}

}  // namespace quilt::harness::profile
