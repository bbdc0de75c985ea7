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

}  // namespace
}  // namespace quilt::harness
