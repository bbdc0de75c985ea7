// Training throughput of trainers::train() at one thread: one epoch of SGD (momentum 0.9) or Adam
// over synthetic data per iteration, as a user's training run spends it (shuffle, batch gather,
// forward, cross-entropy, backward, step, running loss and accuracy). items/s = samples/s.
// bench/train_vs_pytorch.py runs the same loop in Python with python3-torch and compares, one
// repetition of each side at a time, alternating (pass --benchmark_repetitions=N for a median).

#include "bench/bench_util.h"
#include "models/quilt_model.h"
#include "models/zoo.h"
#include "trainers/train.h"

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <cstdlib>

namespace {

using namespace quilt;

// One model, batch and optimizer; bench/train_vs_pytorch.py has the same table (CASES).
struct Case {
  std::string name;  // train/<name>/...
  std::string arch;
  models::Shape input;
  int64_t samples;  // per epoch (one benchmark iteration)
  int64_t batch = 64;
  trainers::OptimizerKind optimizer = trainers::OptimizerKind::kSgd;
  double lr = 0.01;
  double weight_decay = 0.0;
  std::vector<std::string> cuts = {};  // autoencoders (kernel 1) at these cuts
  double rate = 1.0;
  double width = 1.0;  // model.width of the ResNets (the `here` scale trains 0.125)
};

void train_epochs(benchmark::State& state, const Case& c) {
  torch::manual_seed(0);
  models::QuiltModel model(models::make_model(c.arch, {c.input, 10, "", {}, c.width}), c.cuts,
                           models::AutoencoderOptions{c.rate, 1});
  trainers::DataOptions d;
  d.synthetic_shape = c.input;
  d.synthetic_classes = 10;
  d.synthetic_samples = c.samples * 2;
  d.test_fraction = 0.5;
  auto data = trainers::make_synthetic(d);
  data.test = {data.test.x.narrow(0, 0, 0), data.test.y.narrow(0, 0, 0)};  // no evaluation
  trainers::TrainOptions o;
  o.epochs = 1;
  o.batch_size = c.batch;
  o.optimizer = c.optimizer;
  o.lr = c.lr;
  o.momentum = 0.9;
  o.weight_decay = c.weight_decay;
  o.eval_every_epoch = false;
  o.progress.style = trainers::ProgressStyle::kSilent;
  trainers::train(model, data, o);  // warm-up: allocator, oneDNN kernels
  // QUILT_BENCH_TRACE=FILE: one more epoch under LibTorch's profiler, written to FILE as a Chrome
  // trace (every operator call, forward and backward; bench/trace_ops.py sums it by operator).
  if (const char* trace = std::getenv("QUILT_BENCH_TRACE")) {
    torch::autograd::profiler::RecordProfile profile(std::string{trace});
    trainers::train(model, data, o);
  }
  for (auto _ : state) {
    auto r = trainers::train(model, data, o);
    if (!r.ok) state.SkipWithError(r.failure.c_str());
    benchmark::DoNotOptimize(r.samples);
  }
  state.SetItemsProcessed(state.iterations() * data.train.size());
}

void register_all() {
  using trainers::OptimizerKind;
  // The first two are the historical pair (3x32x32 ResNet-18, the 784-512-512-10 MLP); the rest
  // are what the accuracy experiments train at their `here` scale: ResNet-18 on 1x28x28
  // Fashion-MNIST with SGD (accuracy, interposition_accuracy, weight_freezing), with an R=64
  // autoencoder after layer3, with Adam (tradeoff), and the UCI MLP (feasibility); then the
  // ResNet-18 cases again at width 1/8, which is what `here` trains now.
  std::vector<Case> cases = {
      {"resnet18", "resnet18", {3, 32, 32}, 512},
      {"mlp", "mlp", {784}, 8192},
      {"resnet18-fmnist", "resnet18", {1, 28, 28}, 512, 64, OptimizerKind::kSgd, 0.05, 5e-4},
      {"resnet18-fmnist-ae64",
       "resnet18",
       {1, 28, 28},
       512,
       64,
       OptimizerKind::kSgd,
       0.05,
       5e-4,
       {"after_layer3"},
       64.0},
      {"resnet18-fmnist-adam", "resnet18", {1, 28, 28}, 512, 64, OptimizerKind::kAdam, 0.001},
      {"mlp-uci", "mlp", {64}, 4096, 32, OptimizerKind::kAdam, 0.001},
  };
  // What the `here` scale trains since issue 10: the three Fashion-MNIST ResNet-18 cases at
  // width 1/8 (8..64 channels), "resnet18w8-*", on 2048 samples per epoch (the narrow model is
  // fast; 512 would time too short an epoch).
  const std::string full = "resnet18", fmnist = "resnet18-fmnist";
  for (size_t i = 0, n = cases.size(); i < n; ++i) {
    if (cases[i].name.rfind(fmnist, 0) != 0) continue;
    Case narrow = cases[i];
    narrow.name = "resnet18w8" + narrow.name.substr(full.size());
    narrow.samples = 2048;
    narrow.width = 0.125;
    cases.push_back(narrow);
  }
  for (const auto& c : cases) {
    benchmark::RegisterBenchmark(
        fmt::format("train/{}/input:{}/batch:{}", c.name, models::to_string(c.input), c.batch)
            .c_str(),
        [=](benchmark::State& s) { train_epochs(s, c); })
        ->Unit(benchmark::kMillisecond)
        ->MinTime(1.0)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  return quilt::bench::main_at_one_thread(argc, argv, register_all);
}
