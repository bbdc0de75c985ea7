// Per-op profile of one emulator stage at one thread: ResNet-50 cut after layer3 (the
// quickstart), batch 8. For each op of the compiled program: the median over --repeats runs of
// wall time and, for convs and linears, its GFLOP/s; the stage total also by thread CPU time
// (which other load on the machine disturbs less than wall time); then
// the time per op kind and the whole stage's GFLOP/s.
//
//   quilt_bench_stage_profile [--stage 0|1] [--rate R] [--repeats N] [--ops]
//
// --ops prints every op; without it only the totals per kind and the stage line.

#include "backends/inference.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <vector>

namespace {

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  size_t stage = 0;
  double rate = 1;
  int repeats = 7;
  bool all_ops = false;
  for (int i = 1; i < argc; ++i) {
    auto value = [&] {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", argv[i]);
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--stage")) {
      stage = std::stoul(value());
    } else if (!std::strcmp(argv[i], "--rate")) {
      rate = std::stod(value());
    } else if (!std::strcmp(argv[i], "--repeats")) {
      repeats = std::stoi(value());
    } else if (!std::strcmp(argv[i], "--ops")) {
      all_ops = true;
    } else {
      fmt::print(stderr, "usage: {} [--stage 0|1] [--rate R] [--repeats N] [--ops]\n", argv[0]);
      return 2;
    }
  }
  if (stage > 1 || repeats < 1 || rate < 1) {
    fmt::print(stderr, "--stage must be 0 or 1, --repeats >= 1, --rate >= 1\n");
    return 2;
  }
  at::set_num_threads(1);
  constexpr int64_t kBatch = 8;
  torch::manual_seed(0);
  auto base = quilt::models::make_model("resnet50");
  base->eval();
  torch::manual_seed(1);
  quilt::models::QuiltModel qm(base, {"after_layer3"}, quilt::models::AutoencoderOptions{rate, 1});
  qm->eval();
  quilt::backends::CompiledStage s(*qm, stage, kBatch);
  std::vector<int64_t> shape = {kBatch};
  for (int64_t d : s.in_shape()) shape.push_back(d);
  torch::manual_seed(2);
  at::Tensor x = torch::randn(shape);
  for (int i = 0; i < 3; ++i) s.run(x);

  const auto ops = s.ops();
  std::vector<std::vector<double>> per_op(ops.size());
  std::vector<double> stage_cpu, stage_wall;
  for (int r = 0; r < repeats; ++r) {
    std::vector<double> t;
    const double c0 = thread_cpu_s();
    const auto w0 = std::chrono::steady_clock::now();
    s.run(x);
    stage_wall.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
    stage_cpu.push_back(thread_cpu_s() - c0);
    // Per op (wall clock, CompiledStage::run_profiled) in a separate run, so that the clock
    // reads do not disturb the stage totals above.
    std::vector<double> op_s;
    s.run_profiled(x, op_s);
    for (size_t i = 0; i < ops.size(); ++i) per_op[i].push_back(op_s[i]);
  }

  int64_t stage_flops = 0;
  std::map<std::string, double> by_kind;
  std::map<std::string, int64_t> flops_by_kind;
  std::vector<std::string> kinds;
  if (all_ops) fmt::print("{:<16} {:<40} {:>9} {:>9}\n", "kind", "op", "ms", "GFLOP/s");
  for (size_t i = 0; i < ops.size(); ++i) {
    const double t = median(per_op[i]);
    const int64_t f = ops[i].flops * kBatch;
    stage_flops += f;
    if (!by_kind.count(ops[i].kind)) kinds.push_back(ops[i].kind);
    by_kind[ops[i].kind] += t;
    flops_by_kind[ops[i].kind] += f;
    if (all_ops)
      fmt::print("{:<16} {:<40} {:>9.3f} {:>9}\n", ops[i].kind, ops[i].name, 1e3 * t,
                 f ? fmt::format("{:.1f}", 1e-9 * f / t) : "");
  }
  const double cpu = median(stage_cpu), wall = median(stage_wall);
  double op_sum = 0;
  for (auto& [k, t] : by_kind) op_sum += t;
  fmt::print("stage {} R={} batch {}: {}\n", stage, rate, kBatch, s.summary());
  for (const auto& k : kinds)
    fmt::print("  {:<16} {:>9.2f} ms {:>5.1f}%{}\n", k, 1e3 * by_kind[k], 100 * by_kind[k] / op_sum,
               flops_by_kind[k]
                   ? fmt::format("  {:.1f} GFLOP/s", 1e-9 * flops_by_kind[k] / by_kind[k])
                   : "");
  fmt::print(
      "stage: {:.2f} ms CPU, {:.2f} ms wall (median of {}), {:.2f} GFLOP, {:.1f} GFLOP/s (CPU), "
      "{:.2f} img/s (CPU)\n",
      1e3 * cpu, 1e3 * wall, repeats, 1e-9 * stage_flops, 1e-9 * stage_flops / cpu, kBatch / cpu);
  return 0;
}
