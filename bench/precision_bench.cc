// Stage compute per precision at one thread: ResNet-50 cut after layer3 (stage 0 = stem ..
// layer3 + encoder, stage 1 = decoder + layer4 + head), batch 8, 224x224, R = 1 and 64, each
// stage compiled by backends::CompiledStage in fp32, bf16 and int8 (two calibration batches),
// taking and returning what it would on the wire. items/s = images/s; the speed-up of a
// precision is its items/s over the fp32 row of the same stage and rate. Run (one line):
//   build/release/bench/quilt_bench_precision --benchmark_repetitions=3
//     --benchmark_report_aggregates_only=true

#include "backends/inference.h"
#include "backends/precision.h"
#include "bench/bench_util.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

namespace {

using quilt::backends::CompiledStage;
using quilt::backends::CompileOptions;
using quilt::backends::Precision;

constexpr int64_t kBatch = 8;

void stage_bench(benchmark::State& state, Precision precision, size_t stage, double rate) {
  torch::manual_seed(1);
  quilt::models::QuiltModel qm(quilt::bench::shared_resnet50(), {"after_layer3"},
                               quilt::models::AutoencoderOptions{rate, 1});
  qm->eval();
  const std::vector<int64_t> shape = quilt::bench::batched(kBatch, qm->stage(0).in_shape);
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
  quilt::bench::time_batches(state, kBatch, [&] { return compiled.run(x[0]); });
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
  return quilt::bench::main_at_one_thread(argc, argv, register_all);
}
