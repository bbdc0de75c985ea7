#include "models/mlp.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::models {
namespace {

TEST(Mlp, LayersUnitsAndCuts) {
  Mlp mlp(Shape{64}, 10);
  std::vector<std::string> names;
  for (const auto& p : mlp->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                             "fc3.weight", "fc3.bias"}));
  int64_t params = 0;
  for (const auto& p : mlp->parameters()) params += p.numel();
  EXPECT_EQ(params, 64 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
  ASSERT_EQ(mlp->units().size(), 3u);
  EXPECT_EQ(mlp->units()[0].name, "hidden1");
  EXPECT_EQ(mlp->units()[1].name, "hidden2");
  EXPECT_EQ(mlp->units()[2].name, "out");
  ASSERT_EQ(mlp->cuts().size(), 2u);
  EXPECT_EQ(mlp->cut("after_hidden1").shape, (Shape{512}));
  EXPECT_EQ(mlp->cut("after_hidden1").after_unit, 0u);
  EXPECT_EQ(mlp->cut("after_hidden2").shape, (Shape{512}));
  EXPECT_EQ(mlp->arch(), "mlp");
}

TEST(Mlp, ForwardIsLinearReluLinearReluLinear) {
  torch::manual_seed(0);
  Mlp mlp(Shape{6}, 3, 5, 4);
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 6});
  const auto h1 = torch::relu(torch::nn::functional::linear(x, mlp->fc1->weight, mlp->fc1->bias));
  const auto h2 = torch::relu(torch::nn::functional::linear(h1, mlp->fc2->weight, mlp->fc2->bias));
  const auto y = torch::nn::functional::linear(h2, mlp->fc3->weight, mlp->fc3->bias);
  EXPECT_TRUE(torch::allclose(mlp->forward(x), y));
  EXPECT_TRUE(torch::allclose(mlp->forward_units(x, 0, 1), h1));
}

TEST(Mlp, RejectsImageShapes) {
  try {
    Mlp(Shape{1, 28, 28}, 10);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("flatten"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Mlp(Shape{64}, 0), ModelError);
  EXPECT_THROW(Mlp(Shape{64}, 10, 0, 512), ModelError);
}

}  // namespace
}  // namespace quilt::models
