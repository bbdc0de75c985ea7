#include "cli/profile_cmd.h"
#include "cli/profile_rows.h"

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

using profile::Args;
using profile::LayerRow;
using profile::Row;
using profile::UsageError;

// The options of `quilt profile` (calibrate: of `quilt calibrate`), bound to `a`.
void add_options(cli::Parser& p, Args& a, bool calibrate) {
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
              [&](const std::string& v) { a.model_options.input_shape = cli::parse_shape(v); })
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
}

// The usage examples and notes of --help.
void add_examples(cli::Parser& p, bool calibrate) {
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
}

// Throws UsageError for options that do not go together or are missing.
void check(const Args& a, bool calibrate) {
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
  add_options(p, a, calibrate);
  add_examples(p, calibrate);
  if (!p.parse(argc, argv)) return std::nullopt;
  check(a, calibrate);
  return a;
}

// The model of MODEL, or of --file.
models::Model make(const Args& a) {
  if (a.file.empty()) return models::make_model(a.model, a.model_options);
  return load_torchscript_file(a.file, a.model_options.input_shape, a.cuts);
}

// The line about the model and, with --measure, how the times were taken.
void print_preamble(const Args& a, const models::ModelSummary& s, const std::vector<Row>& rows) {
  const bool file = !a.file.empty();
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
  if (!a.measure) return;
  fmt::print(
      "measured: each unit {} (backends::CompiledStage), median of {} run(s) after {} warm-up, "
      "batch {}, {} thread(s), {}\n",
      file ? "frozen and compiled alone as the emulator runs it"
           : "compiled alone on the emulator fast path",
      a.timing.repeats, a.timing.warmup, a.timing.batch, a.timing.threads,
      backends::cpu_model_name());
  if (a.units_only) return;
  fmt::print("{}\n",
             file ? "operations (indented): each run alone as a one-node graph by the TorchScript "
                    "interpreter on the inputs a run of its unit gave (not optimised, no BN "
                    "folding; interpreter overhead of a few us included), same repeats; their sum "
                    "is not the unit's time"
                  : "layers (indented): each leaf layer's own forward run eagerly (LibTorch "
                    "module, InferenceMode, no BN folding), same repeats; their sum is not the "
                    "unit's time");
}

// One line per unit and, indented under it, one per layer (or graph operation).
void print_table(const Args& a, const models::ModelSummary& s, const std::vector<Row>& rows) {
  const bool file = !a.file.empty();
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
}

int run_profile(const Args& a) {
  torch::manual_seed(0);
  const models::Model model = make(a);
  models::ModelSummary s;
  const std::vector<Row> rows = profile::collect_rows(model, a, s);
  print_preamble(a, s, rows);
  print_table(a, s, rows);
  if (!a.output.empty()) {
    profile::write_rows(a.output, a, s, rows);
    fmt::print(stderr, "wrote {}\n", a.output);
  }
  return kExitOk;
}

int run_calibrate(const Args& a) {
  backends::BoardProfileFile file = backends::load_board_profile(a.profile);
  torch::manual_seed(0);
  const models::Model model = make(a);
  const models::ModelSummary s = models::summarize(model);
  const std::vector<backends::UnitTiming> timings = profile::measure_units(model, a);

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
    return is_calibrate ? run_calibrate(*a) : run_profile(*a);
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
