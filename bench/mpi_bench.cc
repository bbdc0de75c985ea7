// The harness's own measurements of its transport and pipeline, each stated as a ratio against
// a reference measured in the same run (run under mpirun -n 2):
//   1. 8 MiB activations through the pipeline vs a raw MPI_Send/MPI_Recv ping-pong (target >= 0.90)
//   2. per-hop latency of a 4 KiB tensor through null boards vs raw MPI latency (target <= +20 us)
//   3. K=2 emulator pipeline throughput vs 1 / slowest stage measured alone (target >= 0.95)
// Usage: mpirun -n 2 quilt_bench_mpi [--skip-model] [--json PATH]

#include "backends/registry.h"
#include "common/allocator.h"
#include "harness/metrics.h"
#include "harness/mpi.h"
#include "harness/pipeline.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace quilt;
using harness::now_s;

// Returns a preallocated tensor of `floats` per sample: the transport without compute.
class PassBoard : public backends::Board {
 public:
  PassBoard(int64_t batch, int64_t floats) : out_(at::zeros({batch, floats})) {}
  std::string backend() const override { return "pass"; }
  std::string description() const override { return "returns a preallocated tensor"; }
  void load(const backends::StageAssignment&) override {}
  at::Tensor run(const at::Tensor&) override { return out_; }

 private:
  at::Tensor out_;
};

// Raw ping-pong between ranks 0 and 1: median one-way time for `bytes`.
double raw_one_way_s(int64_t bytes, int iters) {
  const int me = harness::mpi::rank();
  std::vector<char> buf(static_cast<size_t>(bytes));
  std::vector<double> samples;
  for (int i = 0; i < iters + 5; ++i) {
    harness::mpi::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    double t0 = now_s();
    if (me == 0) {
      harness::mpi::check(
          MPI_Send(buf.data(), static_cast<int>(bytes), MPI_BYTE, 1, 7, MPI_COMM_WORLD),
          "MPI_Send");
      harness::mpi::check(MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_BYTE, 1, 7,
                                   MPI_COMM_WORLD, MPI_STATUS_IGNORE),
                          "MPI_Recv");
    } else if (me == 1) {
      harness::mpi::check(MPI_Recv(buf.data(), static_cast<int>(bytes), MPI_BYTE, 0, 7,
                                   MPI_COMM_WORLD, MPI_STATUS_IGNORE),
                          "MPI_Recv");
      harness::mpi::check(
          MPI_Send(buf.data(), static_cast<int>(bytes), MPI_BYTE, 0, 7, MPI_COMM_WORLD),
          "MPI_Send");
    }
    if (i >= 5) samples.push_back((now_s() - t0) / 2);
  }
  double v = harness::median(samples);
  harness::mpi::check(MPI_Bcast(&v, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return v;
}

struct PipeResult {
  double throughput_bps = 0;  // payload bytes per second at the last rank, steady state
  double latency_p50_s = 0;
};

// Streams batches of `floats` float32 through PassBoards; results valid on every rank.
PipeResult pipeline_pass(int64_t floats, int64_t batches, int window) {
  const int me = harness::mpi::rank(), n = harness::mpi::size();
  PassBoard board(1, floats);
  std::vector<at::Tensor> pool = {at::zeros({1, floats})};
  harness::PipelineOptions o;
  o.warmup_batches = 5;
  o.batches = batches;
  o.window_batches = window;
  auto t = harness::run_pipeline(board, {1, floats}, {1, floats}, pool, nullptr, o, MPI_COMM_WORLD);
  // Gather rank 0's start times and the last rank's end times on rank 0.
  std::vector<double> ends(static_cast<size_t>(batches));
  if (me == n - 1 && me != 0)
    harness::mpi::check(
        MPI_Send(t.end_s.data(), static_cast<int>(batches), MPI_DOUBLE, 0, 9, MPI_COMM_WORLD),
        "MPI_Send");
  if (me == 0) {
    if (n > 1)
      harness::mpi::check(MPI_Recv(ends.data(), static_cast<int>(batches), MPI_DOUBLE, n - 1, 9,
                                   MPI_COMM_WORLD, MPI_STATUS_IGNORE),
                          "MPI_Recv");
    else
      ends = t.end_s;
  }
  PipeResult r;
  if (me == 0) {
    double bytes = static_cast<double>(floats * 4);
    r.throughput_bps = bytes * static_cast<double>(batches - 1) / (ends.back() - ends.front());
    std::vector<double> lat;
    for (int64_t i = 0; i < batches; ++i) lat.push_back(ends[i] - t.start_s[i]);
    r.latency_p50_s = harness::median(lat);
  }
  double v[2] = {r.throughput_bps, r.latency_p50_s};
  harness::mpi::check(MPI_Bcast(v, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return {v[0], v[1]};
}

struct ModelResult {
  double rate = 1;
  double stage_alone_s[2] = {0, 0};
  double pipeline_sps = 0;
  double bound_sps = 0;
};

// ResNet-50 cut after layer3 on two emulator boards at one thread per rank.
ModelResult model_pipeline(double rate, int64_t batch, int64_t batches) {
  const int me = harness::mpi::rank();
  at::set_num_threads(1);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  models::QuiltModel qm(models::make_model("resnet50"), {"after_layer3"}, {rate, 1});
  qm->eval();
  backends::BoardRegistry registry;
  backends::register_builtin_boards(registry);
  auto board = registry.make("emulator");
  board->load({qm.ptr(), static_cast<size_t>(me), batch});
  std::vector<int64_t> in_shape = {batch};
  for (auto d : qm->stage(me).in_shape) in_shape.push_back(d);
  at::Tensor input = at::randn(in_shape);

  ModelResult r;
  r.rate = rate;
  // Each stage alone: the other rank waits at the barrier, so one core is busy.
  for (int s = 0; s < 2; ++s) {
    harness::mpi::check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    double med = 0;
    if (me == s) {
      for (int i = 0; i < 2; ++i) board->run(input);
      std::vector<double> t;
      for (int64_t i = 0; i < batches; ++i) {
        double t0 = now_s();
        board->run(input);
        t.push_back(now_s() - t0);
      }
      med = harness::median(t);
    }
    harness::mpi::check(MPI_Bcast(&med, 1, MPI_DOUBLE, s, MPI_COMM_WORLD), "MPI_Bcast");
    r.stage_alone_s[s] = med;
  }
  harness::PipelineOptions o;
  o.warmup_batches = 2;
  o.batches = batches;
  std::vector<at::Tensor> pool;
  if (me == 0) pool = {at::randn(in_shape), at::randn(in_shape)};
  std::vector<int64_t> out_shape = {batch};
  for (auto d : qm->stage(me).out_shape) out_shape.push_back(d);
  auto t = harness::run_pipeline(*board, in_shape, out_shape, pool, nullptr, o, MPI_COMM_WORLD);
  double sps = 0;
  if (me == 1)
    sps = static_cast<double>((batches - 1) * batch) / (t.end_s.back() - t.end_s.front());
  harness::mpi::check(MPI_Bcast(&sps, 1, MPI_DOUBLE, 1, MPI_COMM_WORLD), "MPI_Bcast");
  r.pipeline_sps = sps;
  r.bound_sps = static_cast<double>(batch) / std::max(r.stage_alone_s[0], r.stage_alone_s[1]);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  common::keep_freed_memory();  // as `quilt` runs
  harness::mpi::Environment env(&argc, &argv);
  const int me = harness::mpi::rank();
  if (harness::mpi::size() != 2) {
    if (me == 0) std::fprintf(stderr, "quilt_bench_mpi: run with mpirun -n 2\n");
    return 2;
  }
  bool skip_model = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--skip-model")
      skip_model = true;
    else if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
  }
  at::set_num_threads(1);

  // Raw and pipeline measurements alternate over several trials and the medians are compared,
  // so that noise from other processes on the machine hits both sides alike.
  const int64_t big = 8 << 20, small = 4 << 10;
  const int trials = 5;
  std::vector<double> raw_big_bw, pipe_big_bw, raw_small_s, pipe_small_s;
  for (int t = 0; t < trials; ++t) {
    raw_big_bw.push_back(static_cast<double>(big) / raw_one_way_s(big, 20));
    pipe_big_bw.push_back(pipeline_pass(big / 4, 30, 0).throughput_bps);
    raw_small_s.push_back(raw_one_way_s(small, 1000));
    pipe_small_s.push_back(pipeline_pass(small / 4, 1000, 1).latency_p50_s);
  }
  const double raw_bw = harness::median(raw_big_bw), pipe_bw = harness::median(pipe_big_bw);
  const double raw_small = harness::median(raw_small_s);
  const double pipe_small = harness::median(pipe_small_s);

  std::vector<ModelResult> models;
  if (!skip_model)
    for (double rate : {1.0, 64.0}) models.push_back(model_pipeline(rate, 8, 12));

  if (me == 0) {
    double bw_ratio = pipe_bw / raw_bw;
    double hop_over_us = 1e6 * (pipe_small - raw_small);
    fmt::print("transport (2 ranks, one host; medians of {} alternating trials)\n", trials);
    fmt::print(
        "  8 MiB: raw ping-pong {:.2f} GB/s, pipeline {:.2f} GB/s, ratio {:.3f} (target >= "
        "0.90) {}\n",
        raw_bw / 1e9, pipe_bw / 1e9, bw_ratio, bw_ratio >= 0.9 ? "PASS" : "FAIL");
    fmt::print(
        "  4 KiB: raw one-way {:.1f} us, pipeline hop p50 {:.1f} us, overhead {:+.1f} us "
        "(target <= +20) {}\n",
        1e6 * raw_small, 1e6 * pipe_small, hop_over_us, hop_over_us <= 20 ? "PASS" : "FAIL");
    for (const auto& m : models) {
      double ratio = m.pipeline_sps / m.bound_sps;
      fmt::print(
          "ResNet-50 after_layer3, R={:g}, batch 8, 1 thread/rank: stage alone {:.1f} / {:.1f} ms, "
          "bound {:.2f} img/s, pipeline {:.2f} img/s, ratio {:.3f} (target >= 0.95) {}\n",
          m.rate, 1e3 * m.stage_alone_s[0], 1e3 * m.stage_alone_s[1], m.bound_sps, m.pipeline_sps,
          ratio, ratio >= 0.95 ? "PASS" : "FAIL");
    }
    if (!json_path.empty()) {
      std::ofstream out(json_path);
      out << fmt::format(
          "{{\"raw_8mib_gbps\": {}, \"pipeline_8mib_gbps\": {}, \"bandwidth_ratio\": {},"
          " \"raw_4kib_one_way_us\": {}, \"pipeline_4kib_hop_us\": {}, \"hop_overhead_us\": {},"
          " \"models\": [",
          raw_bw / 1e9, pipe_bw / 1e9, bw_ratio, 1e6 * raw_small, 1e6 * pipe_small, hop_over_us);
      for (size_t i = 0; i < models.size(); ++i)
        out << fmt::format(
            "{}{{\"rate\": {}, \"stage0_s\": {}, \"stage1_s\": {}, \"pipeline_sps\": {}, "
            "\"bound_sps\": {}}}",
            i ? ", " : "", models[i].rate, models[i].stage_alone_s[0], models[i].stage_alone_s[1],
            models[i].pipeline_sps, models[i].bound_sps);
      out << "]}\n";
    }
  }
  return 0;
}
