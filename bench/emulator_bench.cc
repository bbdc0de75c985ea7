// Stage compute of the emulator board at one thread: ResNet-50 cut after layer3 (stage 0 = stem
// .. layer3 + encoder, stage 1 = decoder + layer4 + head), batch 8, 224x224, R = 1 and 64.
// items/s = images/s. Each benchmark is repeated; the median repetition is what counts
// (bench/emulator_vs_pytorch.py reads it from --benchmark_format=json).

#include "backends/emulator.h"
#include "backends/null_board.h"
#include "bench/bench_util.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <map>
#include <memory>

namespace {

using quilt::backends::Board;
using quilt::backends::CompileOptions;
using quilt::backends::EmulatorBoard;
using quilt::backends::NullBoard;
using quilt::bench::batched;
using quilt::bench::time_batches;

constexpr int64_t kBatch = 8;

quilt::models::QuiltModel quilt_model(double rate) {
  torch::manual_seed(1);
  quilt::models::QuiltModel qm(quilt::bench::shared_resnet50(), {"after_layer3"},
                               quilt::models::AutoencoderOptions{rate, 1});
  qm->eval();
  return qm;
}

void run_board(benchmark::State& state, Board& board, const quilt::models::QuiltModel& qm,
               size_t stage) {
  torch::manual_seed(2);
  at::Tensor input = torch::randn(batched(kBatch, qm->stage(stage).in_shape));
  board.load({qm.ptr(), stage, kBatch});
  for (int i = 0; i < 2; ++i) board.run(input);  // warm-up beyond load()'s own
  time_batches(state, kBatch, [&] { return board.run(input); });
  state.SetLabel(board.description());
}

void register_all() {
  // The emulator's fast path, then the same stage through the modules' own forward (eager
  // LibTorch, force_fallback): what the fast path saves.
  struct Path {
    std::string name;
    bool eager;
    int repetitions;
  };
  for (double rate : {1.0, 64.0}) {
    for (size_t stage : {0, 1}) {
      const std::string suffix = fmt::format("stage:{}/R:{}/batch:{}", stage, rate, kBatch);
      for (const Path& p : {Path{"emulator", false, 5}, Path{"eager", true, 3}}) {
        benchmark::RegisterBenchmark(("resnet50_after_layer3/" + p.name + "/" + suffix).c_str(),
                                     [=](benchmark::State& s) {
                                       auto qm = quilt_model(rate);
                                       CompileOptions o;
                                       o.force_fallback = p.eager;
                                       EmulatorBoard board(o);
                                       run_board(s, board, qm, stage);
                                     })
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.6)
            ->Repetitions(p.repetitions)
            ->ReportAggregatesOnly(true)
            ->UseRealTime();
      }
    }
  }
  // The harness-overhead board: what a run costs when the board does nothing.
  benchmark::RegisterBenchmark("resnet50_after_layer3/null/stage:0/R:64/batch:8",
                               [](benchmark::State& s) {
                                 auto qm = quilt_model(64);
                                 NullBoard board;
                                 run_board(s, board, qm, 0);
                               })
      ->Unit(benchmark::kMicrosecond);
}

// UNet cut across its skips (after_down2: three tensors cross, R = 4, batch 2 at 3x128x128) and
// EfficientNet-B0 at the paper's cut (after_features.4, R = 8, batch 8 at 224x224): each stage on
// the fast path and eagerly (force_fallback), one repetition each.
void register_zoo() {
  struct Case {
    std::string arch, cut;
    quilt::models::Shape input;
    int64_t classes, batch;
    double rate;
  };
  for (const Case& c : {Case{"unet", "after_down2", {3, 128, 128}, 2, 2, 4.0},
                        Case{"efficientnet_b0", "after_features.4", {3, 224, 224}, 1000, 8, 8.0}}) {
    for (size_t stage : {0, 1}) {
      for (bool eager : {false, true}) {
        const std::string name = fmt::format("{}_{}/{}/stage:{}/R:{}/batch:{}", c.arch, c.cut,
                                             eager ? "eager" : "emulator", stage, c.rate, c.batch);
        benchmark::RegisterBenchmark(
            name.c_str(),
            [=](benchmark::State& s) {
              torch::manual_seed(0);
              auto base = quilt::models::make_model(c.arch, {c.input, c.classes});
              quilt::models::QuiltModel qm(base, {c.cut},
                                           quilt::models::AutoencoderOptions{c.rate, 1});
              qm->eval();
              CompileOptions o;
              o.force_fallback = eager;
              EmulatorBoard board(o);
              at::Tensor input = torch::randn(batched(c.batch, qm->stage(stage).in_shape));
              board.load({qm.ptr(), stage, c.batch});
              board.run(input);
              time_batches(s, c.batch, [&] { return board.run(input); });
              s.SetLabel(board.description());
            })
            ->Unit(benchmark::kMillisecond)
            ->MinTime(0.5)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return quilt::bench::main_at_one_thread(argc, argv, [] {
    register_all();
    register_zoo();
  });
}
