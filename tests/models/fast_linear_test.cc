#include "models/fast_linear.h"

#include "models/zoo.h"
#include "tests/models/reference.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace quilt::models {
namespace {

using testing::rel_err;

struct LinearCase {
  int64_t batch, in, out;
  bool relu, input_grad;
};

class FastLinear : public ::testing::TestWithParam<LinearCase> {};

// Output and gradients (input, weight, bias) of the sgemm path against the module's operations.
TEST_P(FastLinear, ValuesAndGradientsEqualTheModule) {
  const LinearCase c = GetParam();
  torch::manual_seed(4);
  torch::nn::Linear fc(c.in, c.out);
  auto x = torch::randn({c.batch, c.in});
  auto g = torch::randn({c.batch, c.out});
  ASSERT_TRUE(linear_is_gemm(*fc, x));
  auto run = [&](bool fast) {
    fc->zero_grad();
    auto xi = x.clone().requires_grad_(c.input_grad);
    auto y = fast ? linear_act(*fc, xi, c.relu) : fc->forward(xi);
    if (!fast && c.relu) y = torch::relu(y);
    (y * g).sum().backward();
    std::vector<torch::Tensor> r{y.detach(), fc->weight.grad().clone(), fc->bias.grad().clone()};
    if (c.input_grad) r.push_back(xi.grad().clone());
    return r;
  };
  const auto want = run(false);
  const auto got = run(true);
  const std::vector<std::string> what{"output", "weight grad", "bias grad", "input grad"};
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].sizes(), want[i].sizes()) << what[i];
    EXPECT_LT(rel_err(got[i], want[i]), 1e-5) << what[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FastLinear,
                         ::testing::Values(LinearCase{32, 64, 512, true, false},  // mlp-uci fc1
                                           LinearCase{64, 512, 512, true, true},  // fc2
                                           LinearCase{7, 13, 5, false, true},     // odd sizes
                                           LinearCase{1, 3, 1, true, true}));     // one sample

TEST(FastLinear, OtherInputsTakeTheModule) {
  torch::nn::Linear fc(6, 4), no_bias(torch::nn::LinearOptions(6, 4).bias(false));
  EXPECT_FALSE(linear_is_gemm(*fc, torch::randn({2, 3, 6})));   // not a matrix
  EXPECT_FALSE(linear_is_gemm(*fc, torch::randn({6, 2}).t()));  // not contiguous
  EXPECT_FALSE(linear_is_gemm(*fc, torch::randn({2, 6}, torch::kDouble)));
  EXPECT_FALSE(linear_is_gemm(*no_bias, torch::randn({2, 6})));
  auto x = torch::randn({2, 3, 6});
  EXPECT_LT(rel_err(linear_act(*fc, x, true), torch::relu(fc->forward(x))), 1e-6);
}

// Evaluation and inference mode take the sgemm path without an autograd node.
TEST(FastLinear, InferenceModeAndNoGradGiveTheModulesValues) {
  torch::manual_seed(2);
  torch::nn::Linear fc(16, 8);
  auto x = torch::randn({5, 16});
  const auto want = torch::relu(fc->forward(x)).detach();
  {
    c10::InferenceMode guard;
    auto y = linear_act(*fc, x, true);
    EXPECT_LT(rel_err(y, want), 1e-6);
    EXPECT_FALSE(y.requires_grad());
  }
  torch::NoGradGuard no_grad;
  EXPECT_LT(rel_err(linear_act(*fc, x, true), want), 1e-6);
}

// The MLP trains through the sgemm path: loss and gradients equal a copy on the modules' path.
TEST(FastLinear, MlpGradientsEqualTheModules) {
  torch::manual_seed(0);
  auto fast = make_model("mlp", {{64}, 10});
  auto x = torch::randn({32, 64});
  auto y = torch::randint(0, 10, {32}, torch::kLong);
  fast->train();
  fast->zero_grad();
  torch::nn::functional::cross_entropy(fast->forward(x), y).backward();
  auto params = fast->named_parameters();
  // The modules' path by hand: fc1 -> relu -> fc2 -> relu -> fc3.
  auto lin = [&](const std::string& n, const torch::Tensor& in) {
    return torch::nn::functional::linear(in, params[n + ".weight"], params[n + ".bias"]);
  };
  std::vector<torch::Tensor> want_grads;
  {
    std::vector<torch::Tensor> ps;
    for (auto& p : params) ps.push_back(p.value());
    auto out = lin("fc3", torch::relu(lin("fc2", torch::relu(lin("fc1", x)))));
    want_grads = torch::autograd::grad({torch::nn::functional::cross_entropy(out, y)}, ps);
  }
  size_t i = 0;
  for (auto& p : params) {
    EXPECT_LT(rel_err(p.value().grad(), want_grads[i++]), 1e-5) << p.key();
  }
}

}  // namespace
}  // namespace quilt::models
