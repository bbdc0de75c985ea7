// The cost model checked against hand computations, and the calibration fit.

#include "partitioners/cost_model.h"
#include "partitioners/error.h"
#include "partitioners/profile.h"
#include "tests/partitioners/expect_error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace quilt::partitioners {
namespace {

#define EXPECT_REL(a, b) EXPECT_NEAR((a), (b), 1e-12 * std::abs(b))

// conv {8,4,4} -> conv {16,2,2} -> fc {10}; input 3x8x8.
ModelProfile small_model() {
  ModelProfile m;
  m.name = "small";
  m.input_bytes = 3 * 8 * 8 * 4;
  m.layers = {chain_layer("conv1", 1000, 10, {8, 4, 4}), chain_layer("conv2", 2000, 20, {16, 2, 2}),
              chain_layer("fc", 500, 30, {10})};
  return m;
}

BoardProfile small_board(const std::string& name = "b") {
  BoardProfile b;
  b.name = name;
  b.peak_flops = 1e6;
  b.efficiency = 0.5;
  b.overhead_s = 1e-3;
  b.h2d_gbps = 1;
  b.d2h_gbps = 2;
  b.link_latency_s = 1e-6;
  b.mpi_gbps = 4;
  b.mpi_latency_s = 1e-5;
  return b;
}

TEST(AutoencoderShapes, EncodedChannelsIsCeilAtLeastOne) {
  EXPECT_EQ(encoded_channels(1024, 64), 16);
  EXPECT_EQ(encoded_channels(10, 3), 4);
  EXPECT_EQ(encoded_channels(5, 100), 1);
  EXPECT_EQ(encoded_channels(64, 1), 64);
  EXPECT_EQ(encoded_channels(3, 3 / 1.0), 1);
  EXPECT_EQ(encoded_channels(960, 7.5), 128);
}

TEST(AutoencoderShapes, FlopsAndWireBytes) {
  // Conv C -> ceil(C/R), kernel k, at H x W: 2 * C * C' * k^2 * H * W.
  EXPECT_EQ(autoencoder_flops({1024, 14, 14}, 64, 1), 2 * 1024 * 16 * 14 * 14);
  EXPECT_EQ(autoencoder_flops({1024, 14, 14}, 64, 3), 2 * 1024 * 16 * 9 * 14 * 14);
  EXPECT_EQ(autoencoder_flops({512}, 512, 3), 2 * 512 * 1);  // Linear ignores the kernel
  EXPECT_EQ(autoencoder_flops({1024, 14, 14}, 1, 1), 0);     // R = 1: no autoencoder
  EXPECT_EQ(wire_bytes({{"out", {1024, 14, 14}}}, 64), 16 * 14 * 14 * 4);
  EXPECT_EQ(wire_bytes({{"out", {1024, 14, 14}}}, 1), 1024 * 14 * 14 * 4);
  // UNet-like cut: one autoencoder per crossing tensor.
  EXPECT_EQ(wire_bytes({{"x", {64, 8, 8}}, {"skip", {32, 16, 16}}}, 8), 4 * (8 * 64 + 4 * 256));
  EXPECT_EQ(transfer_s(0, 1, 5), 0);
  EXPECT_REL(transfer_s(2e9, 4, 1e-3), 0.501);
}

TEST(CostModel, StagesMatchHandComputation) {
  CostOptions o;
  o.batch = 4;
  o.rate = 4;
  o.kernel = 3;
  const CostModel cm(small_model(), {small_board("b0"), small_board("b1")}, 2, o);
  // Stage 0 = conv1 on b0 (effective rate 5e5 FLOP/s), then the encoder of {8,4,4} -> {2,4,4}.
  const StageCost s0 = cm.stage(0, 0, 1);
  EXPECT_EQ(s0.board, "b0");
  EXPECT_EQ(s0.flops, 1000);
  EXPECT_EQ(s0.ae_flops, 2 * 8 * 2 * 9 * 16);  // 4608
  EXPECT_EQ(s0.in_bytes, 768);
  EXPECT_EQ(s0.out_bytes, 2 * 4 * 4 * 4);  // 128
  EXPECT_REL(s0.layers_s, 4 * 1000 / 5e5);
  EXPECT_REL(s0.ae_s, 4 * 4608 / 5e5);
  EXPECT_REL(s0.compute_s, 8e-3 + 0.036864 + 1e-3);
  EXPECT_REL(s0.h2d_s, 1e-6 + 4 * 768 / 1e9);
  EXPECT_REL(s0.d2h_s, 1e-6 + 4 * 128 / 2e9);
  EXPECT_REL(s0.mpi_s, 1e-5 + 4 * 128 / 4e9);
  EXPECT_REL(s0.comm_s, 4.072e-6 + 1.256e-6 + 1.0128e-5);
  EXPECT_REL(s0.exec_s, 0.045864 + 1.5456e-5);
  // Stage 1 = conv2 + fc on b1: the decoder, H2D of the wire bytes, D2H of the logits, no MPI.
  const StageCost s1 = cm.stage(1, 1, 3);
  EXPECT_EQ(s1.flops, 2500);
  EXPECT_EQ(s1.ae_flops, 4608);
  EXPECT_EQ(s1.in_bytes, 128);
  EXPECT_EQ(s1.out_bytes, 40);
  EXPECT_REL(s1.compute_s, 0.02 + 0.036864 + 1e-3);
  EXPECT_REL(s1.h2d_s, 1e-6 + 512 / 1e9);
  EXPECT_REL(s1.d2h_s, 1e-6 + 160 / 2e9);
  EXPECT_EQ(s1.mpi_s, 0);
  EXPECT_REL(s1.exec_s, 0.057864 + 1.512e-6 + 1.08e-6);
  EXPECT_EQ(cm.exec_s(0, 0, 1), s0.exec_s);
  EXPECT_EQ(cm.exec_s(1, 1, 3), s1.exec_s);
}

TEST(CostModel, WithoutAutoencoderTheRawTensorCrosses) {
  const CostModel cm(small_model(), {small_board()}, 2, CostOptions{});
  const StageCost s0 = cm.stage(0, 0, 2);
  EXPECT_EQ(s0.ae_flops, 0);
  EXPECT_EQ(s0.ae_s, 0);
  EXPECT_EQ(s0.out_bytes, 16 * 2 * 2 * 4);
  EXPECT_REL(s0.compute_s, 3000 / 5e5 + 1e-3);
  EXPECT_REL(s0.comm_s, (1e-6 + 768 / 1e9) + (1e-6 + 256 / 2e9) + (1e-5 + 256 / 4e9));
}

TEST(CostModel, ElementSizeScalesTheCutButNotTheModelInputOrOutput) {
  CostOptions bf16, int8;
  bf16.element_bytes = 2;
  int8.element_bytes = 1;
  const CostModel f(small_model(), {small_board()}, 2, CostOptions{}),
      h(small_model(), {small_board()}, 2, bf16), q(small_model(), {small_board()}, 2, int8);
  EXPECT_EQ(h.stage(0, 0, 2).out_bytes, f.stage(0, 0, 2).out_bytes / 2);
  EXPECT_EQ(q.stage(0, 0, 2).out_bytes, f.stage(0, 0, 2).out_bytes / 4);
  EXPECT_EQ(q.stage(1, 2, 3).in_bytes, f.stage(1, 2, 3).in_bytes / 4);
  EXPECT_EQ(q.stage(0, 0, 2).in_bytes, f.stage(0, 0, 2).in_bytes);  // float32 model input
  EXPECT_EQ(q.stage(1, 2, 3).out_bytes, f.stage(1, 2, 3).out_bytes);
  EXPECT_LT(q.stage(0, 0, 2).comm_s, f.stage(0, 0, 2).comm_s);
  CostOptions bad;
  bad.element_bytes = 3;
  expect_error([&] { CostModel(small_model(), {small_board()}, 2, bad); },
               {"element_bytes", "4 (fp32), 2 (bf16) or 1 (int8)"});
}

TEST(CostModel, BatchScalesTimesButNotOverheadsOrLatencies) {
  CostOptions one, many;
  many.batch = 32;
  const CostModel a(small_model(), {small_board()}, 2, one),
      b(small_model(), {small_board()}, 2, many);
  const StageCost x = a.stage(0, 0, 2), y = b.stage(0, 0, 2);
  EXPECT_REL(y.layers_s, 32 * x.layers_s);
  EXPECT_EQ(y.overhead_s, x.overhead_s);
  EXPECT_REL(y.h2d_s - 1e-6, 32 * (x.h2d_s - 1e-6));
  EXPECT_REL(y.mpi_s - 1e-5, 32 * (x.mpi_s - 1e-5));
}

TEST(CostModel, MeasuredTimesOverrideFlopsForThatBoardOnly) {
  ModelProfile m = small_model();
  m.layers[1].measured_s["fpga"] = 0.25;  // seconds per sample
  CostOptions o;
  o.batch = 2;
  const CostModel cm(m, {small_board("fpga"), small_board("gpu")}, 2, o);
  EXPECT_REL(cm.stage(0, 0, 2).layers_s, 2 * (1000 / 5e5 + 0.25));
  EXPECT_REL(cm.stage(1, 1, 3).layers_s, 2 * 2500 / 5e5);
}

TEST(CostModel, HeterogeneousBoardsUseTheirOwnFigures) {
  BoardProfile fast = small_board("fast"), slow = small_board("slow");
  fast.peak_flops = 4e6;
  slow.mpi_gbps = 0.5;
  const CostModel cm(small_model(), {slow, fast}, 2, CostOptions{});
  EXPECT_REL(cm.stage(0, 0, 1).mpi_s, 1e-5 + 8 * 4 * 4 * 4 / 0.5e9);
  EXPECT_REL(cm.stage(1, 1, 3).layers_s, 2500 / 2e6);
  EXPECT_REL(compute_s(fast, 1e6, 3), 3 * 1e6 / 2e6 + 1e-3);
}

TEST(CostModel, ExecAgreesWithBreakdownAndLowerBound) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.1, 10);
  ModelProfile m;
  m.input_bytes = 1000;
  for (int i = 0; i < 30; ++i) {
    m.layers.push_back(chain_layer("l" + std::to_string(i), static_cast<int64_t>(u(rng) * 1e6), 0,
                                   {static_cast<int64_t>(u(rng) * 10) + 1, 7, 7}));
  }
  BoardProfile b = small_board();
  b.peak_flops = 1e9;
  CostOptions o;
  o.batch = 3;
  o.rate = 2.5;
  const CostModel cm(m, {b}, 3, o);
  for (int64_t s = 0; s < 3; ++s) {
    for (int64_t a = 0; a < 30; ++a) {
      for (int64_t e = a + 1; e <= 30; ++e) {
        ASSERT_EQ(cm.exec_s(s, a, e), cm.stage(s, a, e).exec_s);
        ASSERT_LE(cm.exec_lower_bound_s(s, a, e), cm.exec_s(s, a, e));
        if (e > a + 1) {
          ASSERT_LE(cm.exec_lower_bound_s(s, a, e - 1), cm.exec_lower_bound_s(s, a, e));
        }
      }
    }
  }
}

TEST(CostModel, RejectsInvalidInput) {
  BoardProfile b = small_board("u200");
  b.peak_flops = 0;
  expect_error([&] { CostModel(small_model(), {b}, 2, {}); }, {"u200", "peak_flops", "> 0"});
  b = small_board("u200");
  b.efficiency = 1.5;
  expect_error([&] { CostModel(small_model(), {b}, 2, {}); }, {"efficiency", "(0, 1]"});
  b = small_board();
  b.h2d_gbps = 0;
  expect_error([&] { CostModel(small_model(), {b}, 2, {}); }, {"h2d_gbps"});
  expect_error(
      [&] {
        CostModel(small_model(), {small_board(), small_board(), small_board()}, 2, {});
      },
      {"3 board profiles for 2 stages", "one per stage"});
  expect_error([&] { CostModel(small_model(), {small_board()}, 0, {}); }, {"stages", ">= 1"});
  CostOptions o;
  o.rate = 0.5;
  expect_error([&] { CostModel(small_model(), {small_board()}, 2, o); }, {"rate", ">= 1"});
  o = CostOptions{};
  o.kernel = 2;
  expect_error([&] { CostModel(small_model(), {small_board()}, 2, o); }, {"kernel", "odd"});
  o = CostOptions{};
  o.batch = 0;
  expect_error([&] { CostModel(small_model(), {small_board()}, 2, o); }, {"batch"});
  ModelProfile m = small_model();
  m.layers[2].name = "conv1";
  expect_error([&] { CostModel(m, {small_board()}, 2, {}); }, {"'conv1' appears twice"});
  m = small_model();
  m.layers[0].crossing.clear();
  expect_error([&] { CostModel(m, {small_board()}, 2, {}); },
               {"conv1", "no crossing tensor", "cut_allowed"});
  m = small_model();
  m.layers[1].crossing[0].shape = {1, 2, 3, 4};
  expect_error([&] { CostModel(m, {small_board()}, 2, {}); }, {"conv2", "1x2x3x4", "{C, H, W}"});
  m = small_model();
  m.layers.clear();
  expect_error([&] { CostModel(m, {small_board()}, 2, {}); }, {"no layers"});
}

TEST(Calibrate, RecoversEfficiencyAndOverheadFromNoisyData) {
  BoardProfile b;
  b.name = "u200";
  b.peak_flops = 1e12;
  const double eff = 0.35, overhead = 2e-3;
  std::mt19937_64 rng(42);
  std::normal_distribution<double> noise(0, 0.005);
  std::uniform_real_distribution<double> flops(1e8, 2e10);
  std::vector<CalibrationSample> xs;
  for (int i = 0; i < 200; ++i) {
    const double f = flops(rng);
    xs.push_back({f, (f / (b.peak_flops * eff) + overhead) * (1 + noise(rng))});
  }
  const CalibrationResult r = calibrate(b, xs);
  EXPECT_NEAR(r.board.efficiency, eff, 0.01 * eff);
  EXPECT_NEAR(r.board.overhead_s, overhead, 0.15 * overhead);
  EXPECT_EQ(r.board.peak_flops, b.peak_flops);
  EXPECT_EQ(r.board.name, "u200");
  EXPECT_GT(r.r_squared, 0.999);
  EXPECT_LT(r.mean_relative_error, 0.01);
  EXPECT_EQ(r.samples, 200);
}

TEST(Calibrate, ExactDataIsFitExactly) {
  BoardProfile b;
  b.peak_flops = 2e9;
  std::vector<CalibrationSample> xs;
  for (double f : {1e6, 5e6, 2e7}) xs.push_back({f, f / (2e9 * 0.5) + 1e-4});
  const CalibrationResult r = calibrate(b, xs);
  EXPECT_NEAR(r.board.efficiency, 0.5, 1e-12);
  EXPECT_NEAR(r.board.overhead_s, 1e-4, 1e-15);
  EXPECT_NEAR(r.r_squared, 1, 1e-12);
  EXPECT_NEAR(r.mean_relative_error, 0, 1e-12);
}

TEST(Calibrate, NegativeOverheadIsRefitThroughTheOrigin) {
  BoardProfile b;
  b.peak_flops = 1e9;
  // Time = f / 5e8 - 1e-3 would need a negative overhead.
  const std::vector<CalibrationSample> xs = {{1e6, 1e-3}, {2e6, 3e-3}, {3e6, 5e-3}};
  const CalibrationResult r = calibrate(b, xs);
  EXPECT_EQ(r.board.overhead_s, 0);
  EXPECT_NEAR(r.board.efficiency, 1.0 / (1e9 * (1e-3 * 1e6 + 3e-3 * 2e6 + 5e-3 * 3e6) / 14e12),
              1e-12);
}

TEST(Calibrate, RejectsUnusableSamples) {
  BoardProfile b;
  b.name = "u200";
  b.peak_flops = 1e12;
  expect_error([&] { calibrate(b, {}); }, {"u200", "0 sample", "at least 2"});
  expect_error([&] { calibrate(b, {{1e9, 1e-2}}); }, {"1 sample", "at least 2"});
  expect_error([&] { calibrate(b, {{1e9, 1e-2}, {1e9, 2e-2}}); }, {"same FLOPs"});
  expect_error([&] { calibrate(b, {{1e9, 2e-2}, {2e9, 1e-2}}); }, {"does not grow", "negative"});
  expect_error([&] { calibrate(b, {{1e9, 1e-6}, {2e9, 2e-6}}); }, {"exceeds 1", "peak_flops"});
  expect_error([&] { calibrate(b, {{1e9, 1e-2}, {2e9, -1}}); }, {"sample 1", "measured_s"});
  BoardProfile z;
  expect_error([&] { calibrate(z, {{1e9, 1e-2}, {2e9, 2e-2}}); }, {"peak_flops"});
}

}  // namespace
}  // namespace quilt::partitioners
