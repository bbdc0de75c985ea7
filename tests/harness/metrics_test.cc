#include "harness/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>

namespace quilt::harness {
namespace {

TEST(Metrics, PercentilesInterpolate) {
  std::vector<double> v = {4, 1, 3, 2, 5};
  EXPECT_DOUBLE_EQ(median(v), 3);
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 4.6);
  EXPECT_DOUBLE_EQ(mean(v), 3);
  EXPECT_TRUE(std::isnan(median({})));
}

TEST(Metrics, SummaryHasStudentTConfidenceInterval) {
  std::vector<double> v = {10, 12, 11, 13, 9};
  auto s = summarize(v);
  EXPECT_DOUBLE_EQ(s.mean, 11);
  EXPECT_DOUBLE_EQ(s.median, 11);
  EXPECT_NEAR(s.stddev, std::sqrt(2.5), 1e-12);
  double half = 2.776 * std::sqrt(2.5) / std::sqrt(5.0);
  EXPECT_NEAR(s.ci95_low, 11 - half, 1e-9);
  EXPECT_NEAR(s.ci95_high, 11 + half, 1e-9);
  auto one = summarize({5});
  EXPECT_EQ(one.ci95_low, 5);
  EXPECT_EQ(one.ci95_high, 5);
  EXPECT_EQ(one.stddev, 0);
  EXPECT_NEAR(t_quantile_975(1000), 1.96, 0.01);
}

// One repetition of 3 batches of 2 samples: entered at 0, 1, 2 s, left at 2, 3, 4 s.
RunMeasurements three_batches() {
  RunMeasurements m;
  m.start_s = {{0, 1, 2}};
  m.end_s = {2, 3, 4};
  m.time_model = "measured";
  m.cpu_wait_fraction = 0.5;
  m.cpu_wait_rank = 1;
  return m;
}

TEST(Aggregation, ThroughputLatencyAndValidityRules) {
  MeasurementConfig ms;
  ms.batch = 2;
  ms.batches = 3;
  ms.repetitions = 1;
  ms.min_duration_s = 10;
  ms.min_samples = 100;
  ms.max_cpu_wait = 0.1;
  results::RunRecord rec;
  aggregate_timing(rec, ms, three_batches());
  // (3 - 1) batches x 2 samples between the first and the last batch's end (2 s).
  EXPECT_DOUBLE_EQ(rec.throughput_sps, 2.0);
  EXPECT_DOUBLE_EQ(rec.duration_s, 4.0);
  EXPECT_DOUBLE_EQ(rec.latency_p50_s, 2.0);
  EXPECT_EQ(rec.time_model, "measured");
  EXPECT_DOUBLE_EQ(rec.cpu_wait_fraction, 0.5);
  ASSERT_EQ(rec.invalid_reasons.size(), 3u);  // min_duration_s, min_samples, max_cpu_wait
  EXPECT_NE(rec.invalid_reasons[0].find("min_duration_s"), std::string::npos);
  EXPECT_NE(rec.invalid_reasons[1].find("min_samples"), std::string::npos);
  EXPECT_NE(rec.invalid_reasons[2].find("rank 1 waited for a CPU 50%"), std::string::npos);
}

TEST(Aggregation, OutputCheckFailsOnMismatchAndNaN) {
  EXPECT_FALSE(output_mismatch(-1, 1e-3));  // not checked
  EXPECT_FALSE(output_mismatch(1e-4, 1e-3));
  EXPECT_TRUE(output_mismatch(1e-2, 1e-3));
  EXPECT_TRUE(output_mismatch(std::nan(""), 1e-3));
  results::RunRecord ok, bad, nan;
  apply_output_check(ok, 0.5, 1e-4, 1e-3, 2);
  EXPECT_EQ(ok.status, "ok");
  EXPECT_DOUBLE_EQ(ok.max_abs_error, 0.5);
  apply_output_check(bad, 0.5, 1e-2, 1e-3, 2);
  EXPECT_EQ(bad.status, "failed");
  EXPECT_EQ(bad.failed_rank, 2);
  EXPECT_NE(bad.failure.find("measurement.tolerance"), std::string::npos);
  apply_output_check(nan, std::nan(""), std::nan(""), 1e-3, 2);
  EXPECT_EQ(nan.status, "failed");
  EXPECT_NE(nan.failure.find("not finite"), std::string::npos);
}

TEST(Aggregation, ReferencesAndProfileEnergy) {
  results::RunRecord rec;
  rec.throughput_sps = 95;
  rec.latency_p50_s = 0.2;
  Reference higher{"throughput_sps", 100, 0.1, Better::kHigher, {}};
  Reference lower{"latency_p50_s", 0.1, 0.5, Better::kLower, {}};
  check_references(rec, {higher, lower});
  ASSERT_EQ(rec.checks.size(), 2u);
  EXPECT_TRUE(rec.checks[0].passed);   // 95 >= 100 x 0.9
  EXPECT_FALSE(rec.checks[1].passed);  // 0.2 > 0.1 x 1.5
  EXPECT_THROW(metric_value(rec, "no_such_metric"), std::logic_error);

  // One stage busy 1 s of a 4 s window at 10 W busy, 1 W idle, no link energy: 13 J.
  results::RunRecord e;
  e.batch_size = 2;
  e.measured_batches = 3;
  e.repetitions = 1;
  e.repetition_duration_s = {4};
  results::StageRecord st;
  st.compute_s = {0.5, 0.25, 0.25};
  e.stages = {st};
  fill_energy(e, {10, 1, 0});
  EXPECT_DOUBLE_EQ(e.stages[0].busy_s, 1.0);
  EXPECT_DOUBLE_EQ(e.energy_j, 13.0);
  EXPECT_DOUBLE_EQ(e.energy_per_sample_j, 13.0 / 6);
  EXPECT_EQ(e.energy_source, "profile");
}

}  // namespace
}  // namespace quilt::harness
