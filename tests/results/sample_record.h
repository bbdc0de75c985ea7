#pragma once
// A fully populated ExperimentRecord for tests and for the quilt_results_example program: every
// field set to a distinct, non-default value so that a field lost in a round trip shows.

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "results/record.h"

namespace quilt::results::testing {

/// One pipeline stage whose values are derived from `run_index` and `k` so that stages differ.
inline StageRecord make_sample_stage(int run_index, int k) {
  StageRecord s;
  s.rank = k;
  s.host = "node" + std::to_string(k) + ".cluster";
  s.board = k % 2 == 0 ? "emulator" : "null";
  s.board_description = "CPU emulator (1 thread, oneDNN), stage " + std::to_string(k);
  s.units = "layer" + std::to_string(k) + "..layer" + std::to_string(k + 1);
  s.in_shape = {64 + k, 56, 56};
  s.out_shape = {128 + k, 28, 28};
  s.bytes_sent = 1000000 + 1000 * run_index + k;
  s.bytes_received = 2000000 + 1000 * run_index + k;
  s.predicted_compute_s = 0.5 + k;
  s.predicted_comm_s = 0.25 + k;
  s.predicted_exec_s = 0.75 + 2 * k;
  for (int b = 0; b < 5; ++b) {
    s.compute_s.push_back(0.01 * (b + 1) + 0.001 * k + 1e-6 * run_index);
    s.recv_wait_s.push_back(0.002 * (b + 1) + 0.0001 * k);
    s.send_wait_s.push_back(0.003 * (b + 1) + 0.0002 * k);
    if (k % 2 == 0) {  // a board with transfers; the other stages have none (empty datasets)
      s.h2d_s.push_back(0.0005 * (b + 1));
      s.d2h_s.push_back(0.0007 * (b + 1));
    }
  }
  s.busy_s = 0.125 + k;
  s.energy_j = k == 1 ? -1 : 12.5 + k;
  return s;
}

/// One run with `stage_count` stages; `index` makes its values unique.
inline RunRecord make_sample_run(const std::string& id, int index, int stage_count) {
  RunRecord r;
  r.id = id;
  r.status = index % 3 == 2 ? "failed" : "ok";
  r.failure = r.status == "failed" ? "backend error: out of memory on rank 1" : "";
  r.params = {{"model", "resnet50"},
              {"autoencoder.rate", std::to_string(1 << index)},
              {"backend", "emulator"},
              {"stages", std::to_string(stage_count)}};
  r.batch_size = 8 + index;
  r.warmup_batches = 3;
  r.measured_batches = 5;
  r.start_unix_s = 1.7e9 + 10.25 * index;
  r.end_unix_s = r.start_unix_s + 12.5;
  r.throughput_sps = 123.456 + index;
  r.duration_s = 4.0 + 0.5 * index;
  r.latency_s = {0.11, 0.12, 0.13 + index, 0.14, 0.15};
  r.latency_p50_s = 0.13;
  r.latency_p90_s = 0.145;
  r.latency_p99_s = 0.1499;
  for (int c = 0; c + 1 < stage_count; ++c) {
    r.cut_names.push_back("layer" + std::to_string(c + 1));
    r.cut_bytes_per_sample.push_back(802816 >> c);
    r.cut_wire_bytes_per_sample.push_back((802816 >> c) / (1 << index));
    r.cut_requested_rate.push_back(static_cast<double>(1 << index));
    r.cut_effective_rate.push_back(static_cast<double>(1 << index) * 0.999);
  }
  r.max_abs_error = index == 0 ? -1.0 : 1.5e-6 * index;
  r.failed_rank = r.status == "failed" ? 1 : -1;
  // Run 1 has 12 checks, so that check "10" sorts before "2" by name as its stages do.
  r.repetitions = 3 + index;  // vectors below: one entry per repetition
  for (int i = 0; i < r.repetitions; ++i) {
    r.repetition_throughput_sps.push_back(120.0 + index + 0.75 * i);
    r.repetition_duration_s.push_back(1.25 + 0.125 * i + 0.01 * index);
  }
  r.throughput_median_sps = 121.5 + index;
  r.throughput_mean_sps = 121.625 + index;
  r.throughput_std_sps = 0.875 + 0.0625 * index;
  r.throughput_ci95_low_sps = 119.5 + index;
  r.throughput_ci95_high_sps = 123.75 + index;
  r.validity = index == 1 ? "invalid" : "valid";
  r.time_model = index == 1 ? "dilated" : "modeled";
  r.precision = index == 1 ? "bf16" : "int8";
  r.element_bytes = index == 1 ? 2 : 1;
  r.dilation = index == 1 ? 412.5 : 1;
  r.overruns = index;
  r.cpu_wait_fraction = 0.015625 * (index + 1);
  r.energy_j = 25.5 + index;
  r.energy_per_sample_j = 0.125 + index;
  r.energy_source = index == 1 ? "board" : "profile";
  if (index == 1) {
    r.invalid_reasons = {"measured window 1.25 s is shorter than measurement.min_duration_s = 2 s",
                         "4 samples, fewer than measurement.min_samples = \"64\""};
  }
  const int check_count = index == 1 ? 12 : 2;
  for (int c = 0; c < check_count; ++c) {
    MetricCheck m;
    m.metric = c % 2 == 0 ? "throughput_sps" : "latency_p99_s";
    m.value = 100.5 + c + index;
    m.reference = 110.25 + c;
    m.tolerance = 0.05 + 0.01 * c;
    m.better = c % 2 == 0 ? "higher" : "lower";
    m.passed = (c + index) % 2 == 0;
    r.checks.push_back(m);
  }
  for (int k = 0; k < stage_count; ++k) r.stages.push_back(make_sample_stage(index, k));
  if (index == 0) {  // one traced run: two ranks, two phases each
    r.trace.clock = "wall";
    r.trace.dropped_events = 3;
    r.trace.max_batches = 2;
    r.trace.phases = {"recv_wait", "compute"};
    r.trace.rank = {0, 0, 1, 1};
    r.trace.batch = {-1, 0, -1, 0};
    r.trace.repetition = {0, 0, 0, 0};
    r.trace.phase = {1, 1, 0, 1};
    r.trace.start_s = {0.0, 0.25, 0.0, 0.5};
    r.trace.end_s = {0.25, 0.5, 0.375, 0.75};
  }
  return r;
}

/// A training record (not part of make_sample_record's runs): `mode` "freeze" sets every field
/// to a non-default value; "proxy" has the NaN accuracies and no precision of a proxy run.
inline TrainingRecord make_sample_training(const std::string& mode) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  TrainingRecord t;
  t.mode = mode;
  t.dataset = "fashion-mnist";
  t.data_source = "/usr/share/datasets/fashion-mnist";
  t.stand_in = "Fashion-MNIST (28x28 grey, 10 classes) instead of ImageNet/CIFAR-10";
  t.train_samples = 6000;
  t.test_samples = 2000;
  t.classes = 10;
  t.ranks = 2;
  t.global_batch = 64;
  t.phase1_epochs = mode == "freeze" ? 1 : 0;
  t.epoch = {1, 2, 3};
  t.phase = mode == "freeze" ? std::vector<std::string>{"freeze", "unfreeze", "unfreeze"}
                             : std::vector<std::string>{"proxy", "proxy", "proxy"};
  t.train_loss = {1.5, 0.75, 0.5};
  t.train_top1 = mode == "proxy" ? std::vector<double>{kNaN, kNaN, kNaN}
                                 : std::vector<double>{0.5, 0.75, 0.875};
  t.test_loss = {1.25, 0.625, 0.4375};
  t.test_top1 = {0.625, 0.75, 0.8125};
  t.test_top5 = {0.875, 0.9375, 0.96875};
  t.epoch_s = {10.5, 11.25, 9.75};
  t.samples_per_s = {571.4, 533.3, 615.4};
  t.final_test_loss = 0.4375;
  t.final_top1 = 0.8125;
  t.final_top5 = 0.96875;
  t.train_s = 31.5;
  t.full_epoch_s = mode == "proxy" ? 42.0 : -1;
  t.proxy_speedup = mode == "proxy" ? 12.5 : -1;
  t.checkpoint = "results/ck-abc.pt";
  t.pretrained = "2 epoch(s) from scratch on 8000 samples of fashion-mnist in this run";
  t.pretrain_top1 = mode == "proxy" ? kNaN : 0.84375;
  if (mode != "proxy") {
    t.converged = 1;
    t.converge_window = 3;
    t.converge_margin_pt = 0.3;
  }
  t.precision = mode == "proxy" ? "" : "int8";
  t.precision_top1 = mode == "proxy" ? kNaN : 0.78125;
  t.precision_agreement = mode == "proxy" ? kNaN : 0.953125;
  return t;
}

/// An experiment with three runs in an order that is not alphabetical, one failed, and one with
/// 12 stages (so that stage "10" sorts before "2" by name).
inline ExperimentRecord make_sample_record() {
  ExperimentRecord e;
  e.name = "efficiency";
  e.experiment_hash = "9f86d081884c7d65";
  Provenance& p = e.provenance;
  p.quilt_version = "0.1.0";
  p.git_commit = "0123456789abcdef0123456789abcdef01234567";
  p.git_dirty = true;
  p.torch_version = "2.1.2";
  p.mpi_version = "Open MPI v4.1.4";
  p.hdf5_version = "1.10.8";
  p.xrt_version = "not built";
  p.compiler = "GCC 12.2.0";
  p.command_line = "mpirun -n 2 quilt run experiments/efficiency.yaml";
  p.hosts = {"node0.cluster", "node1.cluster"};
  p.experiment_path = "experiments/efficiency.yaml";
  p.experiment_text = "name: efficiency\nmodel: resnet50\nsweep:\n  autoencoder.rate: [1, 2, 4]\n";
  p.resolved_experiment =
      "runs:\n  - id: r-zz01\n    autoencoder.rate: 1\n  - id: r-aa02\n    autoencoder.rate: 2\n";
  p.scale = "small";
  p.boards = {"CPU emulator (1 thread, oneDNN)", "null backend"};
  p.created_utc = "2024-05-01T12:34:56Z";
  p.start_utc = "2024-05-01T13:00:00Z";
  p.end_utc = "2024-05-01T13:05:42Z";
  e.runs.push_back(make_sample_run("r-zz01", 0, 2));
  e.runs.push_back(make_sample_run("r-aa02", 1, 12));
  e.runs.push_back(make_sample_run("r-mm03", 2, 3));
  return e;
}

}  // namespace quilt::results::testing
