#include "cli/models_cmd.h"

#include "cli/cli.h"
#include "cli/profile_cmd.h"
#include "common/model_width.h"
#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/torchscript.h"
#include "models/torchscript_profile.h"
#include "models/zoo.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

// The options of `quilt summary`.
struct SummaryArgs {
  models::ModelOptions opts;
  double rate = 1;
  std::string arch, file;
  std::vector<std::string> cuts;
};

// Parses `quilt summary`'s command line into `a`; false when --help was printed.
bool parse_summary(int argc, char** argv, SummaryArgs& a) {
  cli::Parser p("summary",
                "Per-unit shapes, FLOPs and parameters of a model, and the bytes "
                "that cross each cut point with and without the autoencoder.");
  p.positional("ARCH", "a model of `quilt models` (or --file)", &a.arch, false)
      .option("--file", "PATH",
              "a TorchScript file (torch.jit.save of a scripted or traced model) instead of "
              "ARCH; needs --input",
              &a.file)
      .option("--input", "C,H,W",
              "per-sample input shape (default: the model's; required with --file)",
              [&](const std::string& v) { a.opts.input_shape = cli::parse_shape(v); })
      .option("--classes", "N", "number of classes (default: the model's)", &a.opts.num_classes, 1)
      .option("--width", "W",
              "channel multiplier of a ResNet's stem and stages, in (0, 4] (default 1)",
              [&](const std::string& v) {
                a.opts.width = std::stod(v);
                if (!common::valid_model_width(a.opts.width))
                  throw std::invalid_argument("must be a number in (0, 4]");
              })
      .option("--rate", "R", "autoencoder reduction rate at the cuts (default 1: none)", &a.rate,
              1.0)
      .option("--cut", "NAME",
              "show only this cut (repeatable); with --file, a cut that is not a default one is "
              "added to the model (`quilt models --file` lists them)",
              [&](const std::string& v) { a.cuts.push_back(v); })
      .example("quilt summary resnet50 --rate 64 --cut after_layer3")
      .example("quilt summary --file m.pt --input 3,224,224");
  return p.parse(argc, argv);
}

// The usage mistake in `a` (printed as is), or empty.
std::string summary_usage_error(const SummaryArgs& a) {
  if (a.arch.empty() == a.file.empty()) {
    return fmt::format(
        "quilt summary: give a model of `quilt models` or --file PATH (a "
        "TorchScript file), one of them; the zoo has: {}",
        fmt::join(models::model_names(), ", "));
  }
  if (!a.file.empty() && a.opts.input_shape.empty()) {
    return "quilt summary: --file needs --input, the per-sample input shape of the "
           "TorchScript model (e.g. 3,224,224)";
  }
  if (!a.file.empty() && (a.opts.num_classes > 0 || a.opts.width != 1.0)) {
    return "quilt summary: --classes and --width do not apply with --file (the "
           "TorchScript model is what it is)";
  }
  return {};
}

// The summary of the model `a` names. A TorchScript unit's weights are constants of its frozen
// graph, and its operations beyond the top level (attention inside an `if`) have no LibTorch
// module: for a file, the profile counts them (models/torchscript_profile.h).
models::ModelSummary summarize(const SummaryArgs& a) {
  auto model = a.file.empty() ? models::make_model(a.arch, a.opts)
                              : load_torchscript_file(a.file, a.opts.input_shape, a.cuts);
  if (a.file.empty()) return models::summarize(model);
  const auto& ts = dynamic_cast<const models::TorchScriptModelImpl&>(*model.ptr());
  models::ModelSummary s = models::summarize_torchscript(ts, models::profile_torchscript(ts));
  s.arch = a.file + " (torchscript)";
  return s;
}

void print_summary(const SummaryArgs& a, const models::ModelSummary& s) {
  fmt::print("{} input {} classes {}{}: {:.3f} GFLOPs/sample{}, {} parameters\n", s.arch,
             models::to_string(s.input_shape), s.num_classes,
             a.opts.width != 1.0 ? fmt::format(" width {}", a.opts.width) : "", s.flops / 1e9,
             a.file.empty() ? ""
                            : fmt::format(" ({:.3f} of them 2 x MACs of conv/linear/matmul; "
                                          "`quilt profile --file` has every operation)",
                                          2 * s.macs / 1e9),
             s.params);
  fmt::print("{:<10} {:>16} {:>16} {:>12} {:>12} {:>14}\n", "unit", "in", "out", "GFLOPs", "params",
             "out B/sample");
  for (const auto& u : s.units)
    fmt::print("{:<10} {:>16} {:>16} {:>12.4f} {:>12} {:>14}\n", u.name,
               models::to_string(u.in_shape), models::to_string(u.out_shape), u.flops / 1e9,
               u.params, u.out_bytes);
  fmt::print("\n{:<14} {:>16} {:>14} {:>16} {:>14} {:>8}\n", "cut", "shape", "B/sample", "encoded",
             "wire B/sample", "eff. R");
  for (const auto& c : s.cuts) {
    if (!a.cuts.empty() && std::find(a.cuts.begin(), a.cuts.end(), c.name) == a.cuts.end())
      continue;
    // Several crossing tensors (UNet): packed shapes, bytes summed over the tensors.
    const auto t = models::cut_traffic(c, {a.rate, 1});
    fmt::print("{:<14} {:>16} {:>14} {:>16} {:>14} {:>8.2f}\n", c.name, models::to_string(t.shape),
               t.bytes_per_sample, models::to_string(t.wire_shape), t.wire_bytes_per_sample,
               t.effective_rate);
  }
}

}  // namespace

int cmd_models(int argc, char** argv) {
  std::string file;
  models::Shape input;
  cli::Parser p(
      "models",
      "The model zoo: each model's input, classes and cut points; with --file, every cut of a "
      "TorchScript model (arch `torchscript`) with what crosses it.");
  p.option("--file", "PATH", "a TorchScript file (torch.jit.save of a scripted or traced model)",
           &file)
      .option("--input", "C,H,W",
              "per-sample input shape of the TorchScript model (required "
              "with --file)",
              [&](const std::string& v) { input = cli::parse_shape(v); })
      .example("quilt models")
      .example("quilt models --file m.pt --input 3,224,224");
  if (!p.parse(argc, argv)) return kExitOk;
  torch::NoGradGuard no_grad;
  if (!file.empty()) {
    if (input.empty()) {
      fmt::print(stderr,
                 "quilt models: --file needs --input (the per-sample shape, e.g. "
                 "3,224,224)\n");
      return kExitUsage;
    }
    const auto cuts = models::torchscript_cuts(file, input);
    fmt::print(
        "{} input {}: cuts (default = a top-level submodule's end), what crosses, "
        "float32 bytes per sample\n",
        file, models::to_string(input));
    size_t valid = 0;
    for (const auto& c : cuts) {
      if (!c.invalid.empty()) continue;
      ++valid;
      std::vector<std::string> parts;
      for (const auto& t : c.tensors)
        parts.push_back(c.tensors.size() > 1 ? t.name + " " + models::to_string(t.shape)
                                             : models::to_string(t.shape));
      fmt::print("  {:<48} {:<8} {:>12} B  {}\n", c.name, c.top_level ? "default" : "",
                 c.bytes_per_sample, fmt::join(parts, " + "));
    }
    fmt::print("{} valid cut(s); {} other submodule end(s) cannot be cuts", valid,
               cuts.size() - valid);
    std::vector<std::string> invalid;
    for (const auto& c : cuts)
      if (!c.invalid.empty() && c.top_level) invalid.push_back(c.name + ": " + c.invalid);
    if (!invalid.empty()) fmt::print(" (top-level ones: {})", fmt::join(invalid, "; "));
    fmt::print("\n");
    return kExitOk;
  }
  for (const auto& name : models::model_names()) {
    auto model = models::make_model(name);
    fmt::print("{:<10} input {:<10} classes {:<5} cuts:", name,
               models::to_string(model->input_shape()), model->num_classes());
    for (const auto& c : model->cuts()) {
      // Several crossing tensors (UNet's skips): each, in packed order.
      std::vector<std::string> parts;
      for (const auto& t : c.tensors)
        parts.push_back(c.tensors.size() > 1 ? t.name + " " + models::to_string(t.shape)
                                             : models::to_string(t.shape));
      fmt::print(" {} ({})", c.name, fmt::join(parts, " + "));
    }
    fmt::print("\n");
  }
  return kExitOk;
}

int cmd_summary(int argc, char** argv) {
  SummaryArgs a;
  if (!parse_summary(argc, argv, a)) return kExitOk;
  if (const std::string error = summary_usage_error(a); !error.empty()) {
    fmt::print(stderr, "{}\n", error);
    return kExitUsage;
  }
  torch::NoGradGuard no_grad;
  print_summary(a, summarize(a));
  return kExitOk;
}

}  // namespace quilt::harness
