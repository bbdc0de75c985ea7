#include "models/fast_conv.h"

#include "models/resnet.h"
#include "tests/models/reference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace quilt::models {
namespace {

using testing::reference_forward;
using testing::rel_err;

struct ConvCase {
  int64_t in, out, kernel, stride, pad, size;
  bool bias;
  bool gemm;  // expected path
};

class FastConv : public ::testing::TestWithParam<ConvCase> {};

// Output, input gradient, weight gradient and bias gradient of conv2d_forward against
// Conv2dImpl::forward on the same module and data.
TEST_P(FastConv, ValuesAndGradientsEqualTheConvolution) {
  const ConvCase c = GetParam();
  torch::manual_seed(3);
  torch::nn::Conv2d conv(
      torch::nn::Conv2dOptions(c.in, c.out, c.kernel).stride(c.stride).padding(c.pad).bias(c.bias));
  auto x = torch::randn({5, c.in, c.size, c.size});
  EXPECT_EQ(conv2d_is_gemm(*conv, x.sizes()), c.gemm);

  auto run = [&](bool fast) {
    conv->zero_grad();
    auto xi = x.clone().requires_grad_(true);
    auto y = fast ? conv2d_forward(*conv, xi) : conv->forward(xi);
    auto g = torch::ones_like(y).cumsum(1).sin();  // a fixed, non-uniform upstream gradient
    (y * g).sum().backward();
    std::vector<torch::Tensor> r{y.detach(), xi.grad().clone(), conv->weight.grad().clone()};
    if (c.bias) r.push_back(conv->bias.grad().clone());
    return r;
  };
  const auto ref = run(false);
  const auto fast = run(true);
  ASSERT_EQ(fast.size(), ref.size());
  const std::vector<std::string> what{"output", "input grad", "weight grad", "bias grad"};
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(fast[i].sizes(), ref[i].sizes()) << what[i];
    EXPECT_LT(rel_err(fast[i], ref[i]), 1e-5) << what[i];
  }
  // Taps that only meet padding get exactly zero gradient, as in the convolution.
  if (c.gemm && c.kernel == 3 && c.pad == 1 && c.size == 1) {
    EXPECT_EQ(fast[2].select(2, 0).abs().max().item<float>(), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FastConv,
    ::testing::Values(ConvCase{16, 8, 3, 1, 1, 1, false, true},   // ResNet layer4 3x3 on 1x1
                      ConvCase{8, 16, 3, 2, 1, 2, false, true},   // layer4.0.conv1 on 2x2
                      ConvCase{8, 16, 1, 2, 0, 2, false, true},   // downsample 1x1 s2 on 2x2
                      ConvCase{6, 4, 3, 1, 0, 3, true, true},     // valid 3x3 on 3x3, bias
                      ConvCase{6, 4, 5, 1, 2, 1, true, true},     // 5x5 "same" on 1x1
                      ConvCase{6, 4, 3, 2, 1, 1, false, true},    // stride 2 on 1x1
                      ConvCase{8, 8, 3, 1, 1, 2, false, false},   // 2x2 output: convolution
                      ConvCase{3, 8, 7, 2, 3, 12, false, false},  // stem-like
                      ConvCase{8, 8, 1, 1, 0, 4, true, false}));

// Channels-last weights (as the trainer keeps them): the same values and gradients, and the
// weight's gradient in the weight's own strides, so that AccumulateGrad keeps it without a copy.
TEST(FastConv, ChannelsLastWeightsGetChannelsLastGradients) {
  torch::manual_seed(5);
  const auto cl = torch::MemoryFormat::ChannelsLast;
  for (const auto& c :
       {ConvCase{16, 8, 3, 1, 1, 1, false, true}, ConvCase{8, 16, 3, 2, 1, 2, true, true},
        ConvCase{8, 16, 1, 2, 0, 2, false, true}}) {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(c.in, c.out, c.kernel)
                               .stride(c.stride)
                               .padding(c.pad)
                               .bias(c.bias));
    {
      torch::NoGradGuard no_grad;
      conv->weight.set_data(conv->weight.contiguous(cl));
    }
    auto x = torch::randn({5, c.in, c.size, c.size}).contiguous(cl);
    auto run = [&](bool fast) {
      conv->zero_grad();
      auto xi = x.clone().requires_grad_(true);
      auto y = fast ? conv2d_forward(*conv, xi) : conv->forward(xi);
      (y * torch::ones_like(y).cumsum(1).sin()).sum().backward();
      return std::vector<torch::Tensor>{y.detach(), xi.grad().clone(), conv->weight.grad()};
    };
    const auto want = run(false);
    const auto got = run(true);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_LT(rel_err(got[i], want[i]), 1e-5) << i;
    for (int64_t d = 0; d < 4; ++d) {  // strides of size-1 dimensions do not matter
      if (conv->weight.size(d) > 1) EXPECT_EQ(got[2].stride(d), conv->weight.stride(d)) << d;
    }
    EXPECT_TRUE(got[1].is_contiguous(cl));
  }
}

TEST(FastConv, GroupedAndDilatedTakeTheConvolution) {
  torch::nn::Conv2d grouped(torch::nn::Conv2dOptions(8, 8, 3).padding(1).groups(2));
  torch::nn::Conv2d dilated(torch::nn::Conv2dOptions(8, 8, 3).padding(2).dilation(2));
  EXPECT_FALSE(conv2d_is_gemm(*grouped, {2, 8, 1, 1}));
  EXPECT_FALSE(conv2d_is_gemm(*dilated, {2, 8, 1, 1}));
  EXPECT_FALSE(conv2d_is_gemm(*grouped, {8, 1, 1}));  // not a batch
}

// The training path of the accuracy experiments (ResNet-18 on 1x28x28: layer4 runs on 1x1
// maps and takes the GEMM path) gives the reference path's loss and gradients.
TEST(FastConv, ResNet18GradientsEqualTheReferencePath) {
  torch::manual_seed(0);
  ResNet model(18, Shape{1, 28, 28}, 10);
  model->train();
  auto x = torch::randn({8, 1, 28, 28});
  auto y = torch::randint(0, 10, {8}, torch::kLong);
  auto grads = [&](bool fast) {
    model->zero_grad();
    auto out = fast ? model->forward(x) : reference_forward(*model, x);
    torch::nn::functional::cross_entropy(out, y).backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : model->parameters()) g.push_back(p.grad().clone());
    return std::make_pair(out.detach(), g);
  };
  const auto ref = grads(false);
  const auto fast = grads(true);
  EXPECT_LT(rel_err(fast.first, ref.first), 1e-5);
  ASSERT_EQ(fast.second.size(), ref.second.size());
  const auto names = model->named_parameters().keys();
  for (size_t i = 0; i < ref.second.size(); ++i) {
    EXPECT_LT(rel_err(fast.second[i], ref.second[i]), 1e-4) << names[i];
  }
}

}  // namespace
}  // namespace quilt::models
