// The emulator's TorchScript path (the frozen stage lowered by backends/inference.h's compiler,
// backends/torchscript_stage.h) at one thread, stage by stage,
// for bench/torchscript_vs_pytorch.py: writes each stage's unoptimised module (stage<k>.pt) so
// that Python can optimise and time the very same graph, and prints one line per stage:
//   stage <k> median_s <seconds per batch>
// Usage: quilt_bench_torchscript MODEL.pt C,H,W BATCH OUT_DIR REPEATS [CUT...]

#include "backends/inference.h"
#include "common/allocator.h"
#include "models/quilt_model.h"
#include "models/torchscript.h"
#include "models/zoo.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 6) {
    fmt::print(stderr, "usage: {} MODEL.pt C,H,W BATCH OUT_DIR REPEATS [CUT...]\n", argv[0]);
    return 2;
  }
  quilt::common::keep_freed_memory();  // as `quilt` runs
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  quilt::models::ModelOptions o;
  o.path = argv[1];
  std::stringstream dims(argv[2]);
  for (std::string d; std::getline(dims, d, ',');) o.input_shape.push_back(std::stoll(d));
  const int64_t batch = std::stoll(argv[3]);
  const std::string out_dir = argv[4];
  const int repeats = std::atoi(argv[5]);
  for (int i = 6; i < argc; ++i) o.cuts.push_back(argv[i]);
  auto base = quilt::models::make_model(quilt::models::kTorchScriptArch, o);
  quilt::models::QuiltModel qm(base, o.cuts, {1.0, 1});
  qm->eval();
  auto* ts = dynamic_cast<quilt::models::TorchScriptModelImpl*>(base.get());
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    const auto& spec = qm->stage(k);
    ts->stage_module(spec.first_unit, spec.end_unit).save(fmt::format("{}/stage{}.pt", out_dir, k));
    quilt::backends::CompiledStage stage(*qm, k, batch);
    std::vector<int64_t> shape = {batch};
    shape.insert(shape.end(), spec.in_shape.begin(), spec.in_shape.end());
    const at::Tensor x = torch::randn(shape);
    for (int i = 0; i < 3; ++i) stage.run(x);
    std::vector<double> times;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      at::Tensor y = stage.run(x);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    fmt::print("stage {} median_s {:.6e} in {}\n", k, times[times.size() / 2],
               quilt::models::to_string(spec.in_shape));
    fmt::print(stderr, "stage {}: {}\n", k, stage.summary());
  }
  return 0;
}
