// The pipeline schedule simulation of the `modeled` time model, against closed forms.
#include "harness/time_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace quilt::harness {
namespace {

double steady_throughput(const SimulatedStage& last, int64_t batch = 1) {
  const auto& e = last.end_s;
  return static_cast<double>((e.size() - 1) * batch) / (e.back() - e.front());
}

TEST(SimulatePipeline, OneStageRunsBackToBack) {
  auto sim = simulate_pipeline({{0.1, 1.0, 0.2, 0}}, 2, 5);
  ASSERT_EQ(sim.size(), 1u);
  ASSERT_EQ(sim[0].end_s.size(), 5u);
  EXPECT_DOUBLE_EQ(sim[0].start_s[0], 2 * 1.3);  // after two warm-up batches
  EXPECT_NEAR(steady_throughput(sim[0]), 1 / 1.3, 1e-12);
  for (double w : sim[0].recv_wait_s) EXPECT_EQ(w, 0);
  EXPECT_EQ(sim[0].h2d_s, std::vector<double>(5, 0.1));
  EXPECT_EQ(sim[0].compute_s, std::vector<double>(5, 1.0));
  EXPECT_EQ(sim[0].d2h_s, std::vector<double>(5, 0.2));
}

TEST(SimulatePipeline, SlowestBoardBoundsThroughputAndFastOnesWait) {
  // Stage 1 is the bottleneck (3 s busy); stages 0 and 2 take 1 s.
  std::vector<BoardTimes> b = {{0, 1, 0, 0.01}, {0.5, 2, 0.5, 0.01}, {0, 1, 0, 0}};
  auto sim = simulate_pipeline(b, 4, 20);
  EXPECT_NEAR(steady_throughput(sim[2]), 1.0 / 3, 1e-9);
  // Downstream of the bottleneck, the last stage waits ~2 s per batch for its input.
  EXPECT_NEAR(sim[2].recv_wait_s[10], 2.0, 1e-9);
  // Upstream, rank 0 is held back by the bottleneck: through its sends (at most two in flight)
  // and the credit window, it cannot run ahead.
  double waits = std::accumulate(sim[0].send_wait_s.begin(), sim[0].send_wait_s.end(), 0.0);
  EXPECT_GT(waits, 1.0);
}

TEST(SimulatePipeline, SlowLinkBoundsThroughput) {
  // 1 s of compute per stage, 2.5 s per transfer: the link is the bottleneck.
  auto sim = simulate_pipeline({{0, 1, 0, 2.5}, {0, 1, 0, 0}}, 3, 12);
  EXPECT_NEAR(steady_throughput(sim[1]), 1 / 2.5, 1e-9);
}

TEST(SimulatePipeline, WindowOfOneIsLatencyBound) {
  // One batch in flight: each batch goes through both stages and the link before the next.
  auto sim = simulate_pipeline({{0, 1, 0, 0.5}, {0, 2, 0, 0}}, 1, 6, 1);
  EXPECT_NEAR(steady_throughput(sim[1]), 1 / 3.5, 1e-9);
  for (size_t i = 0; i < sim[1].end_s.size(); ++i)
    EXPECT_NEAR(sim[1].end_s[i] - sim[0].start_s[i], 3.5, 1e-9);
}

TEST(SimulatePipeline, LatencyIsTheSumOfTheStagesWhenNothingQueues) {
  // Equal stages, default window: no queueing once the pipeline is full.
  auto sim = simulate_pipeline({{0.1, 1, 0.1, 0.2}, {0.1, 1, 0.1, 0}}, 2, 8);
  for (size_t i = 0; i < sim[1].end_s.size(); ++i)
    EXPECT_NEAR(sim[1].end_s[i] - sim[0].start_s[i], 1.2 + 0.2 + 1.2, 1e-9);
  EXPECT_NEAR(steady_throughput(sim[1]), 1 / 1.2, 1e-9);
}

TEST(SimulatePipeline, RejectsBadInput) {
  EXPECT_THROW(simulate_pipeline({}, 0, 3), std::invalid_argument);
  EXPECT_THROW(simulate_pipeline({{0, 1, 0, 0}}, 0, 0), std::invalid_argument);
  EXPECT_THROW(simulate_pipeline({{0, -1, 0, 0}}, 0, 3), std::invalid_argument);
  EXPECT_THROW(simulate_pipeline({{0, 1, 0, std::numeric_limits<double>::infinity()}}, 0, 3),
               std::invalid_argument);
}

TEST(BoardEnergy, BusyIdleAndLink) {
  // 2 s busy at 100 W, 3 s idle at 20 W, 1e9 bytes at 1e-10 J/byte.
  EXPECT_DOUBLE_EQ(board_energy_j(2, 5, 100, 20, 1e9, 1e-10), 200 + 60 + 0.1);
  // Busy longer than the window (rounding): no negative idle time.
  EXPECT_DOUBLE_EQ(board_energy_j(5, 4, 10, 1, 0, 0), 50);
  EXPECT_LT(board_energy_j(1, 2, -1, 20, 0, 0), 0);
  EXPECT_LT(board_energy_j(1, 2, 100, -1, 0, 0), 0);
}

}  // namespace
}  // namespace quilt::harness
