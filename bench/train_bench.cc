// Training throughput of trainers::train() at one thread: one epoch of SGD (momentum 0.9) over
// synthetic data per iteration, as a user's training run spends it (shuffle, batch gather,
// forward, cross-entropy, backward, step, running loss and accuracy). items/s = samples/s.
// bench/train_vs_pytorch.py runs the same loop in Python with python3-torch and compares, one
// repetition of each side at a time, alternating (pass --benchmark_repetitions=N for a median).

#include "models/quilt_model.h"
#include "models/zoo.h"
#include "trainers/train.h"

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

namespace {

using namespace quilt;

struct Case {
  std::string arch;
  models::Shape input;
  int64_t samples;  // per epoch (one benchmark iteration)
};

void train_epochs(benchmark::State& state, const Case& c, int64_t batch) {
  torch::manual_seed(0);
  models::QuiltModel model(models::make_model(c.arch, {c.input, 10}), {}, {});
  trainers::DataOptions d;
  d.synthetic_shape = c.input;
  d.synthetic_classes = 10;
  d.synthetic_samples = c.samples * 2;
  d.test_fraction = 0.5;
  auto data = trainers::make_synthetic(d);
  data.test = {data.test.x.narrow(0, 0, 0), data.test.y.narrow(0, 0, 0)};  // no evaluation
  trainers::TrainOptions o;
  o.epochs = 1;
  o.batch_size = batch;
  o.lr = 0.01;
  o.momentum = 0.9;
  o.eval_every_epoch = false;
  o.progress.style = trainers::ProgressStyle::kSilent;
  trainers::train(model, data, o);  // warm-up: allocator, oneDNN kernels
  for (auto _ : state) {
    auto r = trainers::train(model, data, o);
    if (!r.ok) state.SkipWithError(r.failure.c_str());
    benchmark::DoNotOptimize(r.samples);
  }
  state.SetItemsProcessed(state.iterations() * data.train.size());
}

void register_all() {
  const std::vector<Case> cases = {{"resnet18", {3, 32, 32}, 512}, {"mlp", {784}, 8192}};
  for (const auto& c : cases) {
    const int64_t batch = 64;
    benchmark::RegisterBenchmark(
        fmt::format("train/{}/input:{}/batch:{}", c.arch, models::to_string(c.input), batch)
            .c_str(),
        [=](benchmark::State& s) { train_epochs(s, c, batch); })
        ->Unit(benchmark::kMillisecond)
        ->MinTime(1.0)
        ->UseRealTime();
  }
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("torch_threads", std::to_string(at::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
