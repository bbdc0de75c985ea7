#include "models/batch_norm_act.h"

#include "models/resnet.h"
#include "tests/models/reference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

namespace quilt::models {
namespace {

using testing::reference_forward;
using testing::rel_err;

struct BnCase {
  int64_t n, c, h, w;
  bool residual, relu;
  std::optional<double> momentum = 0.1;
};

std::string name_of(const ::testing::TestParamInfo<BnCase>& info) {
  const BnCase& c = info.param;
  return std::to_string(c.n) + "x" + std::to_string(c.c) + "x" + std::to_string(c.h) + "x" +
         std::to_string(c.w) + (c.residual ? "_res" : "") + (c.relu ? "_relu" : "") +
         (c.momentum ? "" : "_cumulative");
}

class BatchNormAct : public ::testing::TestWithParam<BnCase> {};

// Output, gradients (input, residual, weight, bias) and the running statistics after three steps
// of the fused path against the module's operations on an identical module.
TEST_P(BatchNormAct, MatchesTheModuleOverSteps) {
  const BnCase c = GetParam();
  torch::manual_seed(7);
  auto options = torch::nn::BatchNorm2dOptions(c.c);
  if (c.momentum) {
    options.momentum(*c.momentum);
  } else {
    options.momentum(c10::nullopt);
  }
  torch::nn::BatchNorm2d fused(options), plain(options);
  {
    torch::NoGradGuard no_grad;
    auto w = torch::rand({c.c}) + 0.5, b = torch::randn({c.c});
    for (auto* bn : {&fused, &plain}) {
      (*bn)->weight.copy_(w);
      (*bn)->bias.copy_(b);
    }
  }
  auto cl = torch::MemoryFormat::ChannelsLast;
  for (int step = 0; step < 3; ++step) {
    // An offset per channel and step, so the mean matters and the statistics move.
    auto x =
        (torch::randn({c.n, c.c, c.h, c.w}) * 2 + torch::randn({1, c.c, 1, 1}) * 3).contiguous(cl);
    auto r = c.residual ? torch::randn({c.n, c.c, c.h, c.w}).contiguous(cl) : torch::Tensor();
    auto g = torch::randn({c.n, c.c, c.h, c.w});  // upstream gradient
    auto run = [&](torch::nn::BatchNorm2d& bn, bool take_fused) {
      bn->zero_grad();
      auto xi = x.clone().requires_grad_(true);
      auto ri = c.residual ? r.clone().requires_grad_(true) : torch::Tensor();
      if (take_fused) EXPECT_TRUE(batch_norm_act_is_fused(*bn, xi, ri));
      torch::Tensor y;
      if (take_fused) {
        y = batch_norm_act(*bn, xi, ri, c.relu);
      } else {
        y = bn->forward(xi);
        if (c.residual) y = y + ri;
        if (c.relu) y = torch::relu(y);
      }
      (y * g).sum().backward();
      std::vector<torch::Tensor> out{y.detach(), xi.grad().clone(), bn->weight.grad().clone(),
                                     bn->bias.grad().clone()};
      if (c.residual) out.push_back(ri.grad().clone());
      return out;
    };
    const auto want = run(plain, false);
    const auto got = run(fused, true);
    const std::vector<std::string> what{"output", "input grad", "weight grad", "bias grad",
                                        "residual grad"};
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].sizes(), want[i].sizes()) << what[i];
      EXPECT_LT(rel_err(got[i], want[i]), 2e-5) << what[i] << " at step " << step;
    }
    EXPECT_TRUE(got[0].is_contiguous(cl));
    EXPECT_TRUE(got[1].is_contiguous(cl));
    EXPECT_LT(rel_err(fused->running_mean, plain->running_mean), 1e-5) << "step " << step;
    EXPECT_LT(rel_err(fused->running_var, plain->running_var), 1e-5) << "step " << step;
    EXPECT_EQ(fused->num_batches_tracked.item<int64_t>(), step + 1);
    EXPECT_EQ(plain->num_batches_tracked.item<int64_t>(), step + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BatchNormAct,
    ::testing::Values(BnCase{16, 8, 7, 7, false, true},    // ResNet-18 w8 layer1: bn1 + relu
                      BnCase{16, 8, 7, 7, true, true},     // bn2 + residual + relu
                      BnCase{16, 16, 4, 4, false, false},  // downsample: bn alone
                      BnCase{64, 64, 1, 1, true, true},    // layer4 on 1x1 maps
                      BnCase{4, 3, 5, 6, true, true},      // a count without a fixed kernel
                      BnCase{2, 12, 31, 9, false, true},   // rows not a multiple of the block
                      BnCase{9, 256, 3, 3, true, false},   // wide, residual without relu
                      BnCase{6, 24, 5, 5, true, true},     // groups of 8 counted at run time
                      BnCase{5, 8, 4, 4, false, true, std::nullopt}),  // cumulative average
    name_of);

// A large common offset: the statistics come from two-pass sums, not from sum(x^2) - mean^2
// (which in float loses the whole variance here). Momentum 1: the running statistics are the
// batch's mean and unbiased variance.
TEST(BatchNormActNumerics, LargeMeanKeepsTheVariance) {
  torch::manual_seed(1);
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(8).momentum(1.0));
  auto x = (torch::randn({32, 8, 6, 6}, torch::kDouble) * 0.01 + 1000.0).to(torch::kFloat);
  batch_norm_act(*bn, x.contiguous(torch::MemoryFormat::ChannelsLast), {}, false);
  auto xd = x.to(torch::kDouble);  // the float input, exactly
  auto mean = xd.mean({0, 2, 3});
  auto var = xd.var({0, 2, 3}, /*unbiased=*/true);
  EXPECT_LT(rel_err(bn->running_mean.to(torch::kDouble), mean), 1e-7);
  EXPECT_LT(rel_err(bn->running_var.to(torch::kDouble), var), 1e-4);
}

TEST(BatchNormActPath, OnlyChannelsLastTrainingIsFused) {
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(8));
  auto cl = torch::randn({4, 8, 3, 3}).contiguous(torch::MemoryFormat::ChannelsLast);
  auto nchw = torch::randn({4, 8, 3, 3});
  EXPECT_TRUE(batch_norm_act_is_fused(*bn, cl, {}));
  EXPECT_FALSE(batch_norm_act_is_fused(*bn, nchw, {}));
  EXPECT_FALSE(batch_norm_act_is_fused(*bn, cl, nchw));  // residual's layout differs
  EXPECT_FALSE(batch_norm_act_is_fused(*bn, cl.to(torch::kDouble), {}));
  EXPECT_FALSE(batch_norm_act_is_fused(*bn, torch::randn({1, 8, 1, 1}), {}));  // 1 value/channel
  bn->eval();
  EXPECT_FALSE(batch_norm_act_is_fused(*bn, cl, {}));
  // Evaluation takes the module's path: running statistics, no count.
  auto y = batch_norm_act(*bn, cl, {}, true);
  EXPECT_LT(rel_err(y, torch::relu(bn->forward(cl))), 1e-6);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 0);
  torch::nn::BatchNorm2d plain(torch::nn::BatchNorm2dOptions(8).affine(false));
  EXPECT_FALSE(batch_norm_act_is_fused(*plain, cl, {}));
}

// What the trainer runs at the `here` scale: ResNet-18 at width 1/8 on 1x28x28, weights and
// input channels-last, so every BatchNorm takes the fused path; loss, gradients and running
// statistics equal the modules' path.
TEST(BatchNormActPath, ChannelsLastResNet18TrainsAsTheModules) {
  torch::manual_seed(0);
  auto cl = torch::MemoryFormat::ChannelsLast;
  ResNet fused(18, Shape{1, 28, 28}, 10, 0.125), plain(18, Shape{1, 28, 28}, 10, 0.125);
  {
    torch::NoGradGuard no_grad;
    auto src = fused->named_parameters();
    for (auto& p : plain->named_parameters()) p.value().copy_(src[p.key()]);
    for (auto* m : {&fused, &plain}) {
      for (auto& p : (*m)->parameters()) {
        if (p.dim() == 4) p.set_data(p.contiguous(cl));
      }
    }
  }
  fused->train();
  plain->train();
  auto x = torch::randn({16, 1, 28, 28}).contiguous(cl);
  auto y = torch::randint(0, 10, {16}, torch::kLong);
  auto step = [&](ResNetImpl& m, bool take_fused) {
    m.zero_grad();
    auto out = take_fused ? m.forward(x) : reference_forward(m, x);
    torch::nn::functional::cross_entropy(out, y).backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : m.parameters()) g.push_back(p.grad().clone());
    return std::make_pair(out.detach(), g);
  };
  const auto want = step(*plain, false);
  const auto got = step(*fused, true);
  EXPECT_LT(rel_err(got.first, want.first), 1e-5);
  const auto names = fused->named_parameters().keys();
  ASSERT_EQ(got.second.size(), want.second.size());
  for (size_t i = 0; i < want.second.size(); ++i) {
    EXPECT_LT(rel_err(got.second[i], want.second[i]), 1e-4) << names[i];
  }
  auto plain_buffers = plain->named_buffers();
  for (const auto& b : fused->named_buffers()) {
    if (b.value().is_floating_point()) {
      EXPECT_LT(rel_err(b.value(), plain_buffers[b.key()]), 1e-5) << b.key();
    } else {
      EXPECT_TRUE(torch::equal(b.value(), plain_buffers[b.key()])) << b.key();
    }
  }
}

}  // namespace
}  // namespace quilt::models
