// The convergence rule (trainers/converge.h): flat = the last `window` values within `margin`.
#include "trainers/converge.h"

#include <gtest/gtest.h>

#include <limits>

namespace quilt::trainers {
namespace {

TEST(Converge, FlatWhenTheLastWindowLiesWithinTheMargin) {
  // Rising, then three epochs within 0.3 points (fractions: 0.003).
  const std::vector<double> top1 = {0.70, 0.80, 0.85, 0.900, 0.902, 0.901};
  EXPECT_TRUE(is_flat(top1, 3, 0.003));
  EXPECT_FALSE(is_flat(top1, 4, 0.003));  // 0.85 is in a window of 4
  EXPECT_TRUE(is_flat(top1, 4, 0.06));
}

TEST(Converge, NotFlatWhileStillMoving) {
  EXPECT_FALSE(is_flat({0.80, 0.81, 0.82, 0.83}, 3, 0.003));
  // Exactly the margin counts as flat (max - min <= margin).
  EXPECT_TRUE(is_flat({0.80, 0.803, 0.801}, 3, 0.003));
  EXPECT_FALSE(is_flat({0.80, 0.8031, 0.801}, 3, 0.003));
}

TEST(Converge, NeedsAWindowOfTwoOrMoreAndEnoughFiniteValues) {
  EXPECT_FALSE(is_flat({0.9, 0.9}, 3, 0.003));  // too few epochs
  EXPECT_FALSE(is_flat({0.9, 0.9, 0.9}, 1, 0.003));
  EXPECT_FALSE(is_flat({0.9, 0.9, 0.9}, 0, 0.003));
  EXPECT_FALSE(is_flat({}, 2, 0.003));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(is_flat({0.9, nan, 0.9}, 3, 0.003));  // an epoch without evaluation
  EXPECT_TRUE(is_flat({nan, 0.9, 0.9}, 2, 0.0));     // only the window counts
}

}  // namespace
}  // namespace quilt::trainers
