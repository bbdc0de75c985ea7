#pragma once
// What the LibTorch benchmark programs of bench/ share: the ResNet-50 they cut, batched input
// shapes, the timed loop over a stage's runs, and main() at one thread.

#include "common/allocator.h"
#include "models/model.h"
#include "models/zoo.h"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace quilt::bench {

/// ResNet-50 at 224x224 (seed 0, eval mode), built once per process: the QuiltModels of every
/// rate share it.
inline models::Model shared_resnet50() {
  static models::Model base = [] {
    torch::manual_seed(0);
    auto m = models::make_model("resnet50");
    m->eval();
    return m;
  }();
  return base;
}

/// `shape` with the batch dimension `batch` in front.
inline std::vector<int64_t> batched(int64_t batch, const models::Shape& shape) {
  std::vector<int64_t> out = {batch};
  out.insert(out.end(), shape.begin(), shape.end());
  return out;
}

/// The timed loop: `run` (one batch of `batch` items through a stage, returning its output) once
/// per iteration of `state`; items/s counts the samples. A template, so that the loop calls
/// `run` directly.
template <typename Run>
void time_batches(benchmark::State& state, int64_t batch, Run&& run) {
  for (auto _ : state) {
    at::Tensor out = run();
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

/// main() of a benchmark program at one thread, as under mpirun with one rank per board:
/// `register_benchmarks`, then the benchmarks the command line selects, with the torch thread
/// count in the context. Returns the exit code (1 for an unknown argument).
inline int main_at_one_thread(int argc, char** argv,
                              const std::function<void()>& register_benchmarks) {
  common::keep_freed_memory();  // as `quilt` runs: freed tensors reused, not re-faulted
  at::set_num_threads(1);
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace quilt::bench
