#include "backends/inference.h"

#include "backends/board.h"
#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "tests/backends/test_models.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <regex>

namespace quilt::backends {
namespace {

using models::Shape;
using testing::base_model;
using testing::relative_error;

constexpr double kTolerance = 1e-4;

torch::Tensor random_input(const Shape& shape, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> s = {batch};
  s.insert(s.end(), shape.begin(), shape.end());
  return torch::randn(s);
}

// Whether the compiler must know every block of a stage (kNone) or may fall back to the modules'
// own forward for some (UNet's packed units, MBConv), which must keep them exact.
enum class Fallback { kNone, kAllowed };

// Every stage of `qm`, compiled, against forward_stage in eval mode; and the chained stages
// against the whole model. Without fallback the stage is also all on the fast path and returns
// dense fp32; with it, it states the stage's shapes.
void expect_stages_match(models::QuiltModel qm, int64_t batch, const std::string& what,
                         Fallback fallback = Fallback::kNone) {
  qm->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor x = random_input(qm->stage(0).in_shape, batch, 7);
  torch::Tensor chained = x;
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    SCOPED_TRACE(fmt::format("{} stage {}", what, k));
    torch::Tensor in = random_input(qm->stage(k).in_shape, batch, 11 + k);
    torch::Tensor ref = qm->forward_stage(k, in);
    CompiledStage stage(*qm, k, batch);
    if (fallback == Fallback::kNone) {
      EXPECT_TRUE(stage.fallbacks().empty()) << stage.summary();
    } else {
      EXPECT_EQ(stage.in_shape(), qm->stage(k).in_shape);
      EXPECT_EQ(stage.out_shape(), qm->stage(k).out_shape);
    }
    torch::Tensor in_copy = in.clone();
    torch::Tensor out = stage.run(in);
    EXPECT_TRUE(torch::equal(in, in_copy)) << "the input was modified";
    ASSERT_EQ(out.sizes(), ref.sizes());
    EXPECT_TRUE(out.is_contiguous());
    if (fallback == Fallback::kNone) {
      EXPECT_FALSE(out.is_mkldnn());
      EXPECT_EQ(out.scalar_type(), torch::kFloat);
    }
    EXPECT_LE(relative_error(out, ref), kTolerance) << stage.summary();
    // A second run reuses cached buffers and must give the same result.
    EXPECT_TRUE(torch::equal(stage.run(in), out));
    chained = stage.run(chained);
  }
  EXPECT_LE(relative_error(chained, qm->forward(x)), kTolerance);
}

struct ResNetCase {
  std::string arch;
  double rate;
  int64_t kernel;
};

void PrintTo(const ResNetCase& c, std::ostream* os) {
  *os << c.arch << " R=" << c.rate << " kernel=" << c.kernel;
}

std::string case_name(const ::testing::TestParamInfo<ResNetCase>& info) {
  return fmt::format("{}_R{}_k{}", info.param.arch, static_cast<int>(info.param.rate),
                     info.param.kernel);
}

class ResNetEveryCut : public ::testing::TestWithParam<ResNetCase> {};
class ResNetSingleCut : public ::testing::TestWithParam<ResNetCase> {};

// All cuts at once: every stage has a decoder before it and an encoder after it (R > 1).
TEST_P(ResNetEveryCut, StagesMatchReference) {
  const ResNetCase& c = GetParam();
  static std::map<std::string, models::Model> bases;
  auto it = bases.find(c.arch);
  if (it == bases.end()) it = bases.emplace(c.arch, base_model(c.arch, {3, 64, 64})).first;
  models::Model base = it->second;
  std::vector<std::string> cuts;
  for (const auto& cut : base->cuts()) cuts.push_back(cut.name);
  torch::manual_seed(3);
  models::QuiltModel qm(base, cuts, models::AutoencoderOptions{c.rate, c.kernel});
  expect_stages_match(qm, 2, fmt::format("{} R={} k={}", c.arch, c.rate, c.kernel));
}

INSTANTIATE_TEST_SUITE_P(
    Backends, ResNetEveryCut,
    ::testing::Values(ResNetCase{"resnet18", 1, 1}, ResNetCase{"resnet18", 64, 1},
                      ResNetCase{"resnet18", 64, 3}, ResNetCase{"resnet50", 1, 1},
                      ResNetCase{"resnet50", 64, 1}, ResNetCase{"resnet50", 64, 3}),
    case_name);

// One cut at a time: stages that start at the model input or end at the head. The stage
// boundaries (after_stem, after_layerN) and the first cut inside a layer; the other cuts inside
// layers are covered by ResNetEveryCut.
TEST_P(ResNetSingleCut, StagesMatchReference) {
  const ResNetCase& c = GetParam();
  models::Model base = base_model(c.arch, {3, 32, 32});
  static const std::regex boundary("after_(stem|layer[0-9])");
  bool inside_done = false;
  for (const auto& cut : base->cuts()) {
    if (!std::regex_match(cut.name, boundary)) {
      if (inside_done) continue;
      inside_done = true;
    }
    torch::manual_seed(4);
    models::QuiltModel qm(base, {cut.name}, models::AutoencoderOptions{c.rate, c.kernel});
    expect_stages_match(qm, 2, fmt::format("{} {} R={}", c.arch, cut.name, c.rate));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ResNetSingleCut,
                         ::testing::Values(ResNetCase{"resnet18", 1, 1},
                                           ResNetCase{"resnet18", 64, 1},
                                           ResNetCase{"resnet50", 1, 1},
                                           ResNetCase{"resnet50", 64, 1}),
                         case_name);

// The benchmark's configuration at full size: ResNet-50, 224x224, cut after layer3, R = 64.
TEST(InferenceTest, ResNet50At224MatchesReference) {
  models::Model base = base_model("resnet50", {3, 224, 224}, 1000);
  torch::manual_seed(5);
  models::QuiltModel qm(base, {"after_layer3"}, models::AutoencoderOptions{64, 1});
  expect_stages_match(qm, 1, "resnet50 224 after_layer3 R=64");
}

TEST(InferenceTest, MlpStagesWithRate512MatchReference) {
  models::Model base = base_model("mlp", {64});
  for (auto cuts : std::vector<std::vector<std::string>>{
           {"after_hidden1"}, {"after_hidden2"}, {"after_hidden1", "after_hidden2"}}) {
    torch::manual_seed(6);
    models::QuiltModel qm(base, cuts, models::AutoencoderOptions{512, 1});
    expect_stages_match(qm, 4, fmt::format("mlp {}", fmt::join(cuts, "+")));
  }
}

TEST(InferenceTest, MlpStagesWithoutAutoencoderMatchReference) {
  models::Model base = base_model("mlp", {64});
  models::QuiltModel qm(base, {"after_hidden1"}, models::AutoencoderOptions{1, 1});
  expect_stages_match(qm, 3, "mlp R=1");
}

TEST(InferenceTest, FastPathHasNoFallbackAndFoldsBatchNorm) {
  models::Model base = base_model("resnet50", {3, 64, 64});
  models::QuiltModel qm(base, {"after_layer3"}, models::AutoencoderOptions{64, 1});
  CompiledStage s0(*qm, 0, 8), s1(*qm, 1, 8);
  std::map<std::string, int> kinds;
  for (const auto& op : s0.ops()) ++kinds[op.kind];
  // stem conv + 13 blocks x 3 convs + 3 downsample convs + the encoder.
  EXPECT_EQ(kinds["conv"], 1 + 13 * 3 + 3 + 1);
  EXPECT_EQ(kinds["add"], 0) << "residual adds are fused into conv3 (sum post-op)";
  EXPECT_EQ(kinds["to_mkldnn"], 1);
  EXPECT_EQ(kinds["batch_norm"], 0);
  EXPECT_EQ(kinds["fallback"], 0);
  EXPECT_EQ(kinds["relu"], 0) << "ReLUs are fused into conv and add";
  for (const auto& op : s1.ops()) ++kinds[op.kind + "_1"];
  EXPECT_EQ(kinds["avg_pool_1"], 1);
  EXPECT_EQ(kinds["linear_1"], 1);
  EXPECT_NE(s0.summary().find("no fallback"), std::string::npos) << s0.summary();
}

// A module type the compiler has never heard of, in place of a unit.
class OpaqueImpl : public torch::nn::Module {
 public:
  explicit OpaqueImpl(torch::nn::AnyModule inner) : inner_(std::move(inner)) {
    register_module("inner", inner_.ptr());
  }
  torch::Tensor forward(torch::Tensor x) { return inner_.forward(x) * 0.5 + 0.25; }

 private:
  torch::nn::AnyModule inner_;
};
TORCH_MODULE(Opaque);

// ResNet whose units can be swapped after the QuiltModel did its shape inference.
class SwappableResNet : public models::ResNetImpl {
 public:
  using ResNetImpl::ResNetImpl;
  void set_unit(size_t i, torch::nn::AnyModule m) { units_[i].module = std::move(m); }
  void wrap_unit(size_t i) { set_unit(i, torch::nn::AnyModule(Opaque(units_[i].module))); }
};

TEST(InferenceTest, UnknownModuleCompilesByOperationAndStaysCorrect) {
  auto impl = std::make_shared<SwappableResNet>(18, Shape{3, 32, 32}, 10);
  testing::randomize_batch_norm(*impl, 8);
  models::Model base(std::static_pointer_cast<models::ModelImpl>(impl));
  torch::manual_seed(9);
  models::QuiltModel qm(base, {"after_layer2"}, models::AutoencoderOptions{64, 1});
  const size_t unit = base->cut("after_layer2").after_unit;  // the last unit of stage 0
  const std::string name = base->units()[unit].name;
  impl->wrap_unit(unit);
  qm->eval();
  torch::NoGradGuard no_grad;
  CompiledStage s0(*qm, 0, 2);
  // The compiler lowers by operation: the unknown module's convs are on the fast path, and
  // only its two scalar ops (* 0.5, + 0.25) run on their own, named after the unit.
  ASSERT_EQ(s0.fallbacks().size(), 2u) << s0.summary();
  for (const auto& f : s0.fallbacks()) EXPECT_EQ(f.rfind(name, 0), 0u) << f;
  EXPECT_NE(s0.summary().find("fallback: " + name), std::string::npos) << s0.summary();
  torch::Tensor x = random_input({3, 32, 32}, 2, 10);
  EXPECT_LE(relative_error(s0.run(x), qm->forward_stage(0, x)), kTolerance);
}

// Layers the summary knows but the fast path does not: AvgPool2d, reflect-padded conv,
// a standalone BatchNorm. They fall back one by one inside an otherwise fast Sequential.
TEST(InferenceTest, UnsupportedLayersInsideSequentialFallBack) {
  namespace nn = torch::nn;
  auto impl = std::make_shared<SwappableResNet>(18, Shape{3, 32, 32}, 10);
  models::Model base(std::static_pointer_cast<models::ModelImpl>(impl));
  models::QuiltModel qm(base, {"after_stem"}, models::AutoencoderOptions{1, 1});
  qm->eval();
  nn::Sequential seq(
      nn::Conv2d(nn::Conv2dOptions(64, 64, 3).padding(1)), nn::BatchNorm2d(64), nn::ReLU(),
      nn::Conv2d(nn::Conv2dOptions(64, 64, 3).padding(1).padding_mode(torch::kReflect)),
      nn::AvgPool2d(nn::AvgPool2dOptions(1)), nn::BatchNorm2d(64), nn::Dropout(0.5),
      nn::Identity());
  testing::randomize_batch_norm(*seq, 12);
  seq->eval();
  // In place of unit 1, the first block of layer1 (64 channels in and out).
  impl->set_unit(1, nn::AnyModule(models::SequentialUnit(seq)));
  CompiledStage s1(*qm, 1, 2);
  EXPECT_EQ(s1.fallbacks().size(), 2u) << s1.summary();  // the reflect conv and the AvgPool2d
  torch::NoGradGuard no_grad;
  torch::Tensor x = random_input(qm->stage(1).in_shape, 2, 13);
  EXPECT_LE(relative_error(s1.run(x), qm->forward_stage(1, x)), kTolerance) << s1.summary();
}

TEST(InferenceTest, ForceFallbackRunsTheReferencePath) {
  models::Model base = base_model("resnet18", {3, 32, 32});
  models::QuiltModel qm(base, {"after_layer1"}, models::AutoencoderOptions{64, 3});
  qm->eval();
  CompileOptions o;
  o.force_fallback = true;
  CompiledStage s1(*qm, 1, 2, o);
  for (const auto& op : s1.ops()) EXPECT_EQ(op.kind, "fallback");
  torch::NoGradGuard no_grad;
  torch::Tensor x = random_input(qm->stage(1).in_shape, 2, 14);
  EXPECT_TRUE(torch::allclose(s1.run(x), qm->forward_stage(1, x)));
}

TEST(InferenceTest, RejectsBadStageAndInput) {
  models::Model base = base_model("mlp", {64});
  models::QuiltModel qm(base, {"after_hidden1"}, models::AutoencoderOptions{1, 1});
  EXPECT_THROW(CompiledStage(*qm, 2, 1), BoardError);
  CompiledStage s(*qm, 0, 1);
  EXPECT_THROW(s.run(torch::zeros({1, 65})), c10::Error);
  EXPECT_THROW(s.run(torch::zeros({1, 64}, torch::kDouble)), c10::Error);
}

TEST(InferenceTest, ProfiledRunTimesEveryOp) {
  models::Model base = base_model("resnet18", {3, 32, 32});
  models::QuiltModel qm(base, {"after_layer2"}, models::AutoencoderOptions{1, 1});
  CompiledStage s(*qm, 0, 2);
  std::vector<double> t;
  torch::Tensor x = random_input({3, 32, 32}, 2, 15);
  torch::Tensor out = s.run_profiled(x, t);
  ASSERT_EQ(t.size(), s.ops().size());
  for (double v : t) EXPECT_GE(v, 0.0);
  EXPECT_TRUE(torch::equal(out, s.run(x)));
}

}  // namespace
}  // namespace quilt::backends

namespace quilt::backends {
namespace {

// How many ops of each kind the compiled stages of `qm` hold, all of which must be on the fast
// path (no fallbacks).
std::map<std::string, int> fast_path_op_kinds(models::QuiltModel qm, int64_t batch) {
  std::map<std::string, int> kinds;
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    CompiledStage stage(*qm, k, batch);
    EXPECT_TRUE(stage.fallbacks().empty()) << stage.summary();
    for (const auto& op : stage.ops()) ++kinds[op.kind];
  }
  return kinds;
}

// A UNet cut across the skips (after_down2: inc, down1, down2 cross, packed) and after up3
// (inc, up3), with one autoencoder per crossing tensor.
TEST(InferenceTest, UNetStagesAcrossSkipsMatchReference) {
  models::Model base = base_model("unet", {3, 32, 32}, 2);
  for (double rate : {1.0, 4.0}) {
    torch::manual_seed(10);
    models::QuiltModel qm(base, {"after_down2", "after_up3"}, models::AutoencoderOptions{rate, 1});
    expect_stages_match(qm, 2, fmt::format("unet R={}", rate), Fallback::kAllowed);
    // All on the fast path: unpack views, packs, one transposed conv per up unit.
    std::map<std::string, int> kinds = fast_path_op_kinds(qm, 2);
    EXPECT_EQ(kinds["conv_transpose"], 4);
    EXPECT_EQ(kinds["cat"], 4);
    EXPECT_GT(kinds["unpack"], 0);
    EXPECT_GT(kinds["pack"], 0);
    EXPECT_EQ(kinds["fallback"], 0);
  }
}

// Without autoencoders the stages chained on the fast path equal the base model.
TEST(InferenceTest, UNetEveryCutWithoutAutoencoderEqualsBaseModel) {
  models::Model base = base_model("unet", {3, 32, 32}, 2);
  std::vector<std::string> cuts;
  for (const auto& c : base->cuts()) cuts.push_back(c.name);
  models::QuiltModel qm(base, cuts, models::AutoencoderOptions{});
  qm->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = random_input({3, 32, 32}, 2, 12);
  torch::Tensor y = x;
  for (size_t k = 0; k < qm->num_stages(); ++k) y = CompiledStage(*qm, k, 2).run(y);
  EXPECT_LE(relative_error(y, base->forward(x)), kTolerance);
}

TEST(InferenceTest, EfficientNetStagesMatchReference) {
  models::Model base = base_model("efficientnet_b0", {3, 64, 64}, 10);
  for (double rate : {1.0, 8.0}) {
    torch::manual_seed(13);
    models::QuiltModel qm(base, {"after_features.4"}, models::AutoencoderOptions{rate, 1});
    expect_stages_match(qm, 2, fmt::format("efficientnet_b0 R={}", rate), Fallback::kAllowed);
  }
  // On the fast path: every MBConv's squeeze-excitation, SiLU after the stem, expand and
  // depthwise convs (not after the project convs), BN folded everywhere.
  models::QuiltModel qm(base, {"after_features.4"}, models::AutoencoderOptions{8, 1});
  std::map<std::string, int> kinds = fast_path_op_kinds(qm, 2);
  EXPECT_EQ(kinds["squeeze_excite"], 16);
  EXPECT_EQ(kinds["silu"], 1 + 15 * 2 + 1 + 1);  // stem, 15 blocks x 2 + features.1.0, last
  EXPECT_EQ(kinds["batch_norm"], 0);
  EXPECT_EQ(kinds["linear"], 1);
}

}  // namespace
}  // namespace quilt::backends
