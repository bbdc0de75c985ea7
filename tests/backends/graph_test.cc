// One compiler: the stage compiler lowers by operation. A module it has never seen (defined
// only here) compiles to the fast path from its traced graph, and a TorchScript model's stages
// (the models_torchscript fixture) lower to the same program with few or no fallbacks.

#include "backends/inference.h"

#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/zoo.h"
#include "tests/backends/test_models.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>

namespace quilt::backends {
namespace {

namespace nn = torch::nn;
using models::Shape;
using testing::relative_error;

// A residual block nobody told the backends about: conv-BN-ReLU, conv-BN, a 1x1 projection
// shortcut, the add and its ReLU, a SiLU and a shape-keeping max pool.
class TestBlockImpl : public nn::Module {
 public:
  explicit TestBlockImpl(int64_t c)
      : a(register_module("a", nn::Conv2d(nn::Conv2dOptions(c, c, 3).padding(1)))),
        b(register_module("b", nn::Conv2d(nn::Conv2dOptions(c, c, 3).padding(1)))),
        proj(register_module("proj", nn::Conv2d(nn::Conv2dOptions(c, c, 1)))),
        bn_a(register_module("bn_a", nn::BatchNorm2d(c))),
        bn_b(register_module("bn_b", nn::BatchNorm2d(c))) {}
  torch::Tensor forward(torch::Tensor x) {
    torch::Tensor y = torch::relu(bn_a(a(x)));
    y = bn_b(b(y));
    y = torch::relu(y + proj(x));
    return torch::max_pool2d(torch::silu(y), 3, 1, 1);
  }
  nn::Conv2d a, b, proj;
  nn::BatchNorm2d bn_a, bn_b;
};
TORCH_MODULE(TestBlock);

// ResNet whose units can be swapped after the QuiltModel did its shape inference.
class SwappableResNet : public models::ResNetImpl {
 public:
  using ResNetImpl::ResNetImpl;
  void set_unit(size_t i, nn::AnyModule m) { units_[i].module = std::move(m); }
};

std::map<std::string, int> op_kinds(const CompiledStage& s) {
  std::map<std::string, int> kinds;
  for (const auto& op : s.ops()) ++kinds[op.kind];
  return kinds;
}

TEST(GraphTest, ModuleUnknownToTheBackendsRunsOnTheFastPath) {
  auto impl = std::make_shared<SwappableResNet>(18, Shape{3, 32, 32}, 10);
  models::Model base(std::static_pointer_cast<models::ModelImpl>(impl));
  models::QuiltModel qm(base, {"after_layer1"}, models::AutoencoderOptions{1, 1});
  TestBlock block(64);
  testing::randomize_batch_norm(*block, 21);
  impl->set_unit(1, nn::AnyModule(block));  // layer1.0: 64 channels at 8x8 in and out
  testing::randomize_batch_norm(*impl, 23);
  qm->eval();
  torch::NoGradGuard no_grad;
  CompiledStage s0(*qm, 0, 2);
  EXPECT_TRUE(s0.fallbacks().empty()) << s0.summary();
  std::map<std::string, int> kinds = op_kinds(s0);
  EXPECT_EQ(kinds["conv"], 1 + 3 + 2) << s0.summary();  // stem, the block, layer1.1
  EXPECT_EQ(kinds["add"], 0) << "the block's add is a sum post-op of a conv: " << s0.summary();
  EXPECT_EQ(kinds["batch_norm"], 0) << s0.summary();
  EXPECT_EQ(kinds["relu"], 0) << s0.summary();
  EXPECT_EQ(kinds["silu"], 1) << s0.summary();
  EXPECT_EQ(kinds["max_pool"], 2) << s0.summary();
  torch::manual_seed(22);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  EXPECT_LE(relative_error(s0.run(x), qm->forward_stage(0, x)), 1e-4) << s0.summary();
  // Other batch sizes than the compiled (and traced) ones.
  const torch::Tensor x5 = torch::randn({5, 3, 32, 32});
  EXPECT_LE(relative_error(s0.run(x5), qm->forward_stage(0, x5)), 1e-4);
}

std::string fixture_dir() {
  if (const char* d = std::getenv("QUILT_TORCHSCRIPT_FIXTURE_DIR")) return d;
  return QUILT_TORCHSCRIPT_FIXTURE_DIR;
}

struct ScriptCase {
  std::string model;
  std::vector<std::string> cuts;
  size_t max_fallbacks;  // per stage
};

void PrintTo(const ScriptCase& c, std::ostream* os) {
  *os << c.model << " " << fmt::format("{}", fmt::join(c.cuts, "+"));
}

class TorchScriptStages : public ::testing::TestWithParam<ScriptCase> {};

// Each stage of a TorchScript model compiled by the one compiler equals the scripted model's
// stage (forward_stage) at 1e-4, at the compiled batch size and another, with at most
// max_fallbacks nodes off the program.
TEST_P(TorchScriptStages, LowerToTheProgramAndMatch) {
  const ScriptCase& c = GetParam();
  const std::string path = fixture_dir() + "/" + c.model + ".pt";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no fixture " << path;
  models::ModelOptions o;
  o.path = path;
  o.input_shape = {3, 32, 32};
  o.cuts = c.cuts;
  models::Model base = models::make_model(models::kTorchScriptArch, o);
  models::QuiltModel qm(base, c.cuts, models::AutoencoderOptions{1, 1});
  qm->eval();
  torch::NoGradGuard no_grad;
  torch::manual_seed(31);
  torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::Tensor chained = x;
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    SCOPED_TRACE(fmt::format("stage {}", k));
    CompiledStage stage(*qm, k, 2);
    EXPECT_LE(stage.fallbacks().size(), c.max_fallbacks) << stage.summary();
    std::cout << c.model << " stage " << k << ": " << stage.summary() << "\n";
    std::vector<int64_t> shape = {3};
    shape.insert(shape.end(), qm->stage(k).in_shape.begin(), qm->stage(k).in_shape.end());
    const torch::Tensor in = torch::randn(shape);
    EXPECT_LE(relative_error(stage.run(in), qm->forward_stage(k, in)), 1e-4) << stage.summary();
    chained = stage.run(chained);
  }
  EXPECT_LE(relative_error(chained, qm->forward(x)), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Backends, TorchScriptStages,
    ::testing::Values(
        ScriptCase{"vgg11", {"after_features"}, 1},
        ScriptCase{"vgg11", {"after_features.5", "after_avgpool"}, 1},
        ScriptCase{"mobilenet_v3_small", {"after_features"}, 40},
        ScriptCase{"mobilenet_v3_small", {"after_features.5.block.0", "after_features"}, 40},
        ScriptCase{"vit", {"after_encoder"}, 50},
        ScriptCase{"vit", {"after_encoder.layers.encoder_layer_0.ln_2", "after_encoder"}, 50}),
    [](const ::testing::TestParamInfo<ScriptCase>& info) {
      std::string n = info.param.model + "_" + std::to_string(info.param.cuts.size());
      return n;
    });

}  // namespace
}  // namespace quilt::backends
