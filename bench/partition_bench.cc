// Cut search speed: a ResNet-50 profile at block granularity (k = 1..8) and a synthetic
// 1000-layer chain (k = 16), both objectives. Targets: <= 10 ms and <= 1 s per search.
//
//   quilt_bench_partition --benchmark_min_time=0.2

#include "partitioners/search.h"

#include <benchmark/benchmark.h>

#include <cassert>
#include <random>
#include <string>
#include <vector>

namespace qp = quilt::partitioners;

namespace {

// torchvision ResNet-50 at 3x224x224, one entry per block. MACs of the convolutions and the fc
// layer (batch-norm, ReLU, pooling and additions not counted); FLOPs = 2 x MACs.
//   stem:  conv7x7 3->64 /2 at 112x112                       = 64*3*49*112*112
//   bottleneck (in C_in, width w, out 4w, output HxW, stride s in the 3x3):
//          1x1 C_in->w at the input resolution + 3x3 w->w at HxW + 1x1 w->4w at HxW
//          (+ 1x1 C_in->4w /s at HxW for the first block of each stage)
//   head:  fc 2048->1000
// Parameters include batch-norm weights and biases (2 per channel); they add up to torchvision's
// 25,557,032.
struct Block {
  const char* name;
  int64_t macs;
  int64_t params;
  qp::Shape out;
};

const std::vector<Block> kResNet50 = {
    {"stem", 118'013'952, 9'536, {64, 56, 56}},
    {"layer1.0", 231'211'008, 75'008, {256, 56, 56}},
    {"layer1.1", 218'365'952, 70'400, {256, 56, 56}},
    {"layer1.2", 218'365'952, 70'400, {256, 56, 56}},
    {"layer2.0", 372'506'624, 379'392, {512, 28, 28}},
    {"layer2.1", 218'365'952, 280'064, {512, 28, 28}},
    {"layer2.2", 218'365'952, 280'064, {512, 28, 28}},
    {"layer2.3", 218'365'952, 280'064, {512, 28, 28}},
    {"layer3.0", 372'506'624, 1'512'448, {1024, 14, 14}},
    {"layer3.1", 218'365'952, 1'117'184, {1024, 14, 14}},
    {"layer3.2", 218'365'952, 1'117'184, {1024, 14, 14}},
    {"layer3.3", 218'365'952, 1'117'184, {1024, 14, 14}},
    {"layer3.4", 218'365'952, 1'117'184, {1024, 14, 14}},
    {"layer3.5", 218'365'952, 1'117'184, {1024, 14, 14}},
    {"layer4.0", 372'506'624, 6'039'552, {2048, 7, 7}},
    {"layer4.1", 218'365'952, 4'462'592, {2048, 7, 7}},
    {"layer4.2", 218'365'952, 4'462'592, {2048, 7, 7}},
    {"head", 2'048'000, 2'049'000, {1000}},
};

qp::ModelProfile resnet50() {
  qp::ModelProfile m;
  m.name = "resnet50";
  m.input_bytes = 3 * 224 * 224 * qp::kFloatBytes;
  int64_t macs = 0, params = 0;
  for (const Block& b : kResNet50) {
    m.layers.push_back(qp::chain_layer(b.name, 2 * b.macs, b.params, b.out));
    macs += b.macs;
    params += b.params;
  }
  assert(macs == 4'089'184'256 && params == 25'557'032);
  (void)macs;
  (void)params;
  return m;
}

// Illustrative Alveo-U200-like boards (the paper's host links: 9.2 / 11.7 GB/s).
qp::BoardProfile fpga(const std::string& name, double peak_flops) {
  qp::BoardProfile b;
  b.name = name;
  b.peak_flops = peak_flops;
  b.efficiency = 0.4;
  b.overhead_s = 1e-4;
  b.link_latency_s = 5e-6;
  b.mpi_gbps = 12.5;
  b.mpi_latency_s = 2e-6;
  return b;
}

std::vector<qp::BoardProfile> boards(int64_t k, bool heterogeneous) {
  std::vector<qp::BoardProfile> out;
  for (int64_t s = 0; s < k; ++s) {
    out.push_back(heterogeneous && s % 2 ? fpga("small", 0.9e12) : fpga("u200", 2.0e12));
  }
  return out;
}

// A 1000-layer chain with log-normal FLOPs and varying output shapes (seeded, reproducible).
qp::ModelProfile chain1000() {
  std::mt19937_64 rng(1000);
  std::lognormal_distribution<double> flops(std::log(5e7), 1.0);
  std::uniform_int_distribution<int64_t> channels(16, 1024), side(4, 56);
  qp::ModelProfile m;
  m.name = "chain1000";
  m.input_bytes = 3 * 224 * 224 * qp::kFloatBytes;
  for (int i = 0; i < 1000; ++i) {
    const int64_t hw = side(rng);
    m.layers.push_back(qp::chain_layer(
        "layer" + std::to_string(i), static_cast<int64_t>(flops(rng)), 0, {channels(rng), hw, hw}));
  }
  return m;
}

void run(benchmark::State& state, const qp::ModelProfile& model,
         const std::vector<qp::BoardProfile>& bds, qp::SearchOptions o) {
  qp::SearchResult r;
  for (auto _ : state) {
    r = qp::search(model, bds, o);
    benchmark::DoNotOptimize(r);
  }
  state.counters["dp_passes"] = static_cast<double>(r.evaluations);
  state.counters["max_exec_ms"] = 1e3 * r.max_exec_s;
  state.counters["imbalance_ms"] = 1e3 * r.imbalance_s;
}

qp::SearchOptions options(int64_t k, qp::Objective objective) {
  qp::SearchOptions o;
  o.stages = k;
  o.objective = objective;
  o.cost.batch = 8;
  o.cost.rate = 64;
  return o;
}

void BM_ResNet50(benchmark::State& state, qp::Objective objective, bool heterogeneous) {
  const int64_t k = state.range(0);
  run(state, resnet50(), boards(k, heterogeneous), options(k, objective));
}

void BM_Chain1000(benchmark::State& state, qp::Objective objective, bool heterogeneous) {
  static const qp::ModelProfile model = chain1000();
  const int64_t k = state.range(0);
  run(state, model, boards(k, heterogeneous), options(k, objective));
}

// The searches timed, in this order: BM_<model>/<objective>[_hetero]/<k> for each k.
struct Series {
  const char* name;
  void (*fn)(benchmark::State&, qp::Objective, bool);
  qp::Objective objective;
  bool heterogeneous;
  std::vector<int64_t> ks;
  benchmark::TimeUnit unit;
};

[[maybe_unused]] const int kRegistered = [] {
  constexpr auto kPaper = qp::Objective::kPaper, kMinMax = qp::Objective::kMinMax;
  const std::vector<int64_t> one_to_eight = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<Series> series = {
      {"BM_ResNet50/paper", BM_ResNet50, kPaper, false, one_to_eight, benchmark::kMicrosecond},
      {"BM_ResNet50/minmax", BM_ResNet50, kMinMax, false, one_to_eight, benchmark::kMicrosecond},
      {"BM_ResNet50/paper_hetero", BM_ResNet50, kPaper, true, {2, 8}, benchmark::kMicrosecond},
      {"BM_Chain1000/paper", BM_Chain1000, kPaper, false, {16}, benchmark::kMillisecond},
      {"BM_Chain1000/minmax", BM_Chain1000, kMinMax, false, {16}, benchmark::kMillisecond},
      {"BM_Chain1000/paper_hetero", BM_Chain1000, kPaper, true, {16}, benchmark::kMillisecond},
      {"BM_Chain1000/minmax_hetero", BM_Chain1000, kMinMax, true, {16}, benchmark::kMillisecond},
  };
  for (const Series& s : series) {
    auto* b = benchmark::RegisterBenchmark(
        s.name, [s](benchmark::State& state) { s.fn(state, s.objective, s.heterogeneous); });
    for (int64_t k : s.ks) b->Arg(k);
    b->Unit(s.unit);
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
