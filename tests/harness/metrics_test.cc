#include "harness/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace quilt::harness
