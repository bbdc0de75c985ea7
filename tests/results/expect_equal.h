#pragma once
// Field-by-field comparison of results records, so that a failure names the field that differs.

#include <gtest/gtest.h>

#include <string>

#include "results/record.h"

namespace quilt::results::testing {

inline void expect_equal(const StageRecord& a, const StageRecord& b, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(a.rank, b.rank);
  EXPECT_EQ(a.host, b.host);
  EXPECT_EQ(a.board, b.board);
  EXPECT_EQ(a.board_description, b.board_description);
  EXPECT_EQ(a.units, b.units);
  EXPECT_EQ(a.in_shape, b.in_shape);
  EXPECT_EQ(a.out_shape, b.out_shape);
  EXPECT_EQ(a.bytes_sent, b.bytes_sent);
  EXPECT_EQ(a.bytes_received, b.bytes_received);
  EXPECT_EQ(a.predicted_compute_s, b.predicted_compute_s);
  EXPECT_EQ(a.predicted_comm_s, b.predicted_comm_s);
  EXPECT_EQ(a.predicted_exec_s, b.predicted_exec_s);
  EXPECT_EQ(a.compute_s, b.compute_s);
  EXPECT_EQ(a.recv_wait_s, b.recv_wait_s);
  EXPECT_EQ(a.send_wait_s, b.send_wait_s);
  EXPECT_EQ(a.h2d_s, b.h2d_s);
  EXPECT_EQ(a.d2h_s, b.d2h_s);
  EXPECT_EQ(a.busy_s, b.busy_s);
  EXPECT_EQ(a.energy_j, b.energy_j);
}

inline void expect_equal(const MetricCheck& a, const MetricCheck& b, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(a.metric, b.metric);
  EXPECT_EQ(a.value, b.value);
  EXPECT_EQ(a.reference, b.reference);
  EXPECT_EQ(a.tolerance, b.tolerance);
  EXPECT_EQ(a.better, b.better);
  EXPECT_EQ(a.passed, b.passed);
}

inline void expect_equal(const RunRecord& a, const RunRecord& b, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.failure, b.failure);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.batch_size, b.batch_size);
  EXPECT_EQ(a.warmup_batches, b.warmup_batches);
  EXPECT_EQ(a.measured_batches, b.measured_batches);
  EXPECT_EQ(a.start_unix_s, b.start_unix_s);
  EXPECT_EQ(a.end_unix_s, b.end_unix_s);
  EXPECT_EQ(a.throughput_sps, b.throughput_sps);
  EXPECT_EQ(a.duration_s, b.duration_s);
  EXPECT_EQ(a.latency_s, b.latency_s);
  EXPECT_EQ(a.latency_p50_s, b.latency_p50_s);
  EXPECT_EQ(a.latency_p90_s, b.latency_p90_s);
  EXPECT_EQ(a.latency_p99_s, b.latency_p99_s);
  EXPECT_EQ(a.cut_names, b.cut_names);
  EXPECT_EQ(a.cut_bytes_per_sample, b.cut_bytes_per_sample);
  EXPECT_EQ(a.cut_wire_bytes_per_sample, b.cut_wire_bytes_per_sample);
  EXPECT_EQ(a.cut_requested_rate, b.cut_requested_rate);
  EXPECT_EQ(a.cut_effective_rate, b.cut_effective_rate);
  EXPECT_EQ(a.max_abs_error, b.max_abs_error);
  EXPECT_EQ(a.failed_rank, b.failed_rank);
  EXPECT_EQ(a.repetitions, b.repetitions);
  EXPECT_EQ(a.repetition_throughput_sps, b.repetition_throughput_sps);
  EXPECT_EQ(a.repetition_duration_s, b.repetition_duration_s);
  EXPECT_EQ(a.throughput_median_sps, b.throughput_median_sps);
  EXPECT_EQ(a.throughput_mean_sps, b.throughput_mean_sps);
  EXPECT_EQ(a.throughput_std_sps, b.throughput_std_sps);
  EXPECT_EQ(a.throughput_ci95_low_sps, b.throughput_ci95_low_sps);
  EXPECT_EQ(a.throughput_ci95_high_sps, b.throughput_ci95_high_sps);
  EXPECT_EQ(a.validity, b.validity);
  EXPECT_EQ(a.invalid_reasons, b.invalid_reasons);
  EXPECT_EQ(a.time_model, b.time_model);
  EXPECT_EQ(a.precision, b.precision);
  EXPECT_EQ(a.element_bytes, b.element_bytes);
  EXPECT_EQ(a.dilation, b.dilation);
  EXPECT_EQ(a.overruns, b.overruns);
  EXPECT_EQ(a.cpu_wait_fraction, b.cpu_wait_fraction);
  EXPECT_EQ(a.energy_j, b.energy_j);
  EXPECT_EQ(a.energy_per_sample_j, b.energy_per_sample_j);
  EXPECT_EQ(a.energy_source, b.energy_source);
  ASSERT_EQ(a.checks.size(), b.checks.size());
  for (size_t k = 0; k < a.checks.size(); ++k) {
    expect_equal(a.checks[k], b.checks[k], where + " check " + std::to_string(k));
  }
  // Training runs: every field is compared in tests/results/training_record_test.cc.
  EXPECT_EQ(a.training.mode, b.training.mode);
  EXPECT_EQ(a.training.epoch, b.training.epoch);
  EXPECT_EQ(a.trace.clock, b.trace.clock);
  EXPECT_EQ(a.trace.dropped_events, b.trace.dropped_events);
  EXPECT_EQ(a.trace.max_batches, b.trace.max_batches);
  EXPECT_EQ(a.trace.phases, b.trace.phases);
  EXPECT_EQ(a.trace.rank, b.trace.rank);
  EXPECT_EQ(a.trace.batch, b.trace.batch);
  EXPECT_EQ(a.trace.repetition, b.trace.repetition);
  EXPECT_EQ(a.trace.phase, b.trace.phase);
  EXPECT_EQ(a.trace.start_s, b.trace.start_s);
  EXPECT_EQ(a.trace.end_s, b.trace.end_s);
  ASSERT_EQ(a.stages.size(), b.stages.size());
  for (size_t k = 0; k < a.stages.size(); ++k) {
    expect_equal(a.stages[k], b.stages[k], where + " stage " + std::to_string(k));
  }
}

inline void expect_equal(const Provenance& a, const Provenance& b) {
  SCOPED_TRACE("provenance");
  EXPECT_EQ(a.quilt_version, b.quilt_version);
  EXPECT_EQ(a.git_commit, b.git_commit);
  EXPECT_EQ(a.git_dirty, b.git_dirty);
  EXPECT_EQ(a.torch_version, b.torch_version);
  EXPECT_EQ(a.mpi_version, b.mpi_version);
  EXPECT_EQ(a.hdf5_version, b.hdf5_version);
  EXPECT_EQ(a.xrt_version, b.xrt_version);
  EXPECT_EQ(a.compiler, b.compiler);
  EXPECT_EQ(a.command_line, b.command_line);
  EXPECT_EQ(a.hosts, b.hosts);
  EXPECT_EQ(a.experiment_path, b.experiment_path);
  EXPECT_EQ(a.experiment_text, b.experiment_text);
  EXPECT_EQ(a.resolved_experiment, b.resolved_experiment);
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.boards, b.boards);
  EXPECT_EQ(a.created_utc, b.created_utc);
  EXPECT_EQ(a.start_utc, b.start_utc);
  EXPECT_EQ(a.end_utc, b.end_utc);
}

/// Compares every field of two experiment records with EXPECT_EQ (doubles exactly: HDF5 stores
/// IEEE doubles bit for bit).
inline void expect_equal(const ExperimentRecord& a, const ExperimentRecord& b) {
  EXPECT_EQ(a.schema_version, b.schema_version);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.experiment_hash, b.experiment_hash);
  expect_equal(a.provenance, b.provenance);
  ASSERT_EQ(a.runs.size(), b.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) {
    expect_equal(a.runs[i], b.runs[i], "run " + std::to_string(i) + " (" + a.runs[i].id + ")");
  }
}

}  // namespace quilt::results::testing
