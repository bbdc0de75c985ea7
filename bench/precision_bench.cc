// Stage compute per precision at one thread: ResNet-50 cut after layer3 (stage 0 = stem ..
// layer3 + encoder, stage 1 = decoder + layer4 + head), batch 8, 224x224, R = 1 and 64, each
// stage compiled by backends::CompiledStage in fp32, bf16 and int8 (two calibration batches),
// taking and returning what it would on the wire. items/s = images/s; the speed-up of a
// precision is its items/s over the fp32 row of the same stage and rate. Run (one line):
//   build/release/bench/quilt_bench_precision --benchmark_repetitions=3
//     --benchmark_report_aggregates_only=true

#include "backends/inference.h"
#include "backends/precision.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

namespace {

using quilt::backends::CompiledStage;
using quilt::backends::CompileOptions;
using quilt::backends::Precision;

constexpr int64_t kBatch = 8;

quilt::models::Model resnet50() {
  static quilt::models::Model base = [] {
    torch::manual_seed(0);
    auto m = quilt::models::make_model("resnet50");
    m->eval();
    return m;
  }();
  return base;
}

void stage_bench(benchmark::State& state, Precision precision, size_t stage, double rate) {
  torch::manual_seed(1);
  quilt::models::QuiltModel qm(resnet50(), {"after_layer3"},
                               quilt::models::AutoencoderOptions{rate, 1});
  qm->eval();
  std::vector<int64_t> shape = {kBatch};
  const auto& in_shape = qm->stage(0).in_shape;
  shape.insert(shape.end(), in_shape.begin(), in_shape.end());
  torch::manual_seed(2);
  std::vector<at::Tensor> model_inputs = {torch::randn(shape), torch::randn(shape)};
  CompileOptions o;
  o.precision = precision;
  o.wire_input = stage > 0;
  o.wire_output = stage + 1 < qm->num_stages();
  if (precision == Precision::kInt8)
    o.calibration = quilt::backends::stage_calibration_inputs(*qm, stage, model_inputs);
  // The stage's input as it arrives: through the stages before it in this precision.
  std::vector<at::Tensor> x = {model_inputs[0]};
  for (size_t s = 0; s < stage; ++s) {
    CompileOptions p = o;
    p.wire_input = s > 0;
    p.wire_output = true;
    if (precision == Precision::kInt8)
      p.calibration = quilt::backends::stage_calibration_inputs(*qm, s, model_inputs);
    x[0] = CompiledStage(*qm, s, kBatch, p).run(x[0]);
  }
  CompiledStage compiled(*qm, stage, kBatch, o);
  for (int i = 0; i < 2; ++i) compiled.run(x[0]);
  for (auto _ : state) {
    at::Tensor out = compiled.run(x[0]);
    benchmark::DoNotOptimize(out.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.SetLabel(compiled.summary().substr(0, 60));
}

void register_all() {
  for (double rate : {1.0, 64.0})
    for (size_t stage : {0, 1})
      for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kInt8})
        benchmark::RegisterBenchmark(fmt::format("stage{}/R{}/{}", stage, static_cast<int>(rate),
                                                 quilt::backends::precision_name(p))
                                         .c_str(),
                                     [=](benchmark::State& st) { stage_bench(st, p, stage, rate); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);  // one thread per rank, as under mpirun
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
