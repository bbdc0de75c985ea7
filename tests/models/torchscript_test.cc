// TorchScript models (bring your own model): torchvision families that are not in the zoo,
// scripted and traced by tests/models/make_torchscript_fixture.py, cut at default and named
// points, with and without autoencoders, against the unsplit scripted model's output.

#include "models/torchscript.h"
#include "backends/inference.h"
#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/zoo.h"
#include "tests/models/fixture.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace quilt::models {
namespace {

using testing::fixture;
using testing::read_f32;
using testing::relative_error;

const Shape kImage = {3, 32, 32};

Model load(const std::string& name, std::vector<std::string> cuts = {}) {
  ModelOptions o;
  o.path = fixture(name + ".pt");
  o.input_shape = kImage;
  o.cuts = std::move(cuts);
  return make_model(kTorchScriptArch, o);
}

// The scripted model's own output on the fixture's input, against a QuiltModel cut at `cuts`.
double error_of(const std::string& name, const std::vector<std::string>& cuts, double rate = 1) {
  torch::NoGradGuard no_grad;
  auto qm = QuiltModel(load(name, cuts), cuts, AutoencoderOptions{rate, 1});
  qm->eval();
  const auto x = read_f32(name + "_input.f32", {2, 3, 32, 32});
  const auto y = read_f32(name + "_output.f32", {2, 10});
  const auto out = qm->forward(x);
  EXPECT_EQ(out.sizes(), y.sizes());
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  // Stage by stage, as the pipeline runs it, gives the same as forward().
  torch::Tensor t = x;
  for (size_t k = 0; k < qm->num_stages(); ++k) t = qm->forward_stage(k, t);
  EXPECT_LT(relative_error(t, out), 1e-6);
  return relative_error(out, y);
}

std::string expect_model_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ModelError";
  return "";
}

TEST(TorchScript, DefaultCutsAreTopLevelSubmodules) {
  torch::NoGradGuard no_grad;
  auto m = load("mobilenet_v3_small");
  EXPECT_EQ(m->arch(), "torchscript");
  EXPECT_EQ(m->cut_names(), "after_features, after_avgpool");
  EXPECT_EQ(m->cut("after_features").shape, (Shape{576, 1, 1}));
  EXPECT_EQ(m->num_classes(), 10);
  auto vit = load("vit");
  EXPECT_EQ(vit->cut_names(), "after_encoder");
  EXPECT_EQ(vit->cut("after_encoder").shape, (Shape{17, 64}));
}

TEST(TorchScript, UnsplitEqualsScriptedModel) {
  for (const char* name : {"mobilenet_v3_small", "vgg11", "vit"})
    EXPECT_LT(error_of(name, {}), 1e-4) << name;
}

TEST(TorchScript, TwoAndThreeStagesEqualUnsplit) {
  EXPECT_LT(error_of("mobilenet_v3_small", {"after_features"}), 1e-4);
  EXPECT_LT(error_of("mobilenet_v3_small", {"after_features.4", "after_features"}), 1e-4);
  EXPECT_LT(error_of("vgg11", {"after_features"}), 1e-4);
  EXPECT_LT(error_of("vgg11", {"after_features.5", "after_avgpool"}), 1e-4);
  EXPECT_LT(error_of("vit", {"after_encoder"}), 1e-4);
  EXPECT_LT(error_of("vit", {"after_encoder.layers.encoder_layer_0", "after_encoder"}), 1e-4);
}

TEST(TorchScript, SkipAcrossTheCutSendsEveryLiveTensor) {
  torch::NoGradGuard no_grad;
  // Inside a ViT encoder block, after ln_2: the residual stream and ln_2's output both cross.
  const std::string vit_cut = "after_encoder.layers.encoder_layer_0.ln_2";
  auto vit = load("vit", {vit_cut});
  const auto& c = vit->cut(vit_cut);
  ASSERT_EQ(c.tensors.size(), 2u);
  EXPECT_EQ(c.tensors[0].shape, (Shape{17, 64}));
  EXPECT_EQ(c.tensors[1].shape, (Shape{17, 64}));
  EXPECT_EQ(c.shape, (Shape{2 * 17 * 64}));
  EXPECT_LT(error_of("vit", {vit_cut}), 1e-4);
  EXPECT_LT(error_of("vit", {vit_cut, "after_encoder"}), 1e-4);
  // Inside an inverted residual block of MobileNetV3 (features.5 has a skip): the block's input
  // crosses beside the expanded tensor.
  const std::string mb_cut = "after_features.5.block.0";
  auto mb = load("mobilenet_v3_small", {mb_cut});
  EXPECT_EQ(mb->cut(mb_cut).tensors.size(), 2u);
  EXPECT_LT(error_of("mobilenet_v3_small", {mb_cut}), 1e-4);
  EXPECT_LT(error_of("mobilenet_v3_small", {mb_cut, "after_features"}), 1e-4);
}

// The emulator's stage compiler lowers a ViT by operation (MultiheadAttention's run-time branches
// folded to its inference path; LayerNorm, GELU, token GEMMs, attention as ops), with only the
// shape ops left to per-node calls, and each compiled stage equals the model's own stage.
TEST(TorchScript, VitStagesCompileByOperationAndMatch) {
  torch::NoGradGuard no_grad;
  const std::vector<std::string> cuts = {"after_encoder.layers.encoder_layer_0.ln_2",
                                         "after_encoder"};
  auto qm = QuiltModel(load("vit", cuts), cuts, AutoencoderOptions{1.0, 1});
  qm->eval();
  torch::Tensor x = read_f32("vit_input.f32", {2, 3, 32, 32});
  for (size_t k = 0; k < qm->num_stages(); ++k) {
    backends::CompiledStage stage(*qm, k, 2);
    const std::string summary = stage.summary();
    EXPECT_EQ(summary.find("whole graph"), std::string::npos) << summary;
    for (const std::string& f : stage.fallbacks())
      EXPECT_EQ(f.find("no lowering for aten::layer_norm"), std::string::npos) << f;
    if (k < 2) EXPECT_NE(summary.find("attention"), std::string::npos) << summary;
    const torch::Tensor want = qm->forward_stage(k, x);
    EXPECT_LT(relative_error(stage.run(x), want), 1e-4) << "stage " << k << ": " << summary;
    x = want;
  }
}

TEST(TorchScript, AutoencodersAtAnyRank) {
  torch::NoGradGuard no_grad;
  // 4-D at the cut: Conv2d; 2-D (after avgpool+flatten is in the next stage, so 3-D 576x1x1);
  // 3-D sequences: Linear over the features.
  auto vit = QuiltModel(load("vit", {"after_encoder"}), {"after_encoder"}, {4.0, 1});
  EXPECT_EQ(vit->traffic()[0].wire_shape, (Shape{17, 16}));
  EXPECT_DOUBLE_EQ(vit->traffic()[0].effective_rate, 4.0);
  EXPECT_TRUE(vit->autoencoder(0)->encoder().ptr()->as<torch::nn::Linear>() != nullptr);
  const std::string skip = "after_encoder.layers.encoder_layer_0.ln_2";
  auto vit2 = QuiltModel(load("vit", {skip}), {skip}, {8.0, 1});
  EXPECT_EQ(vit2->autoencoders(0).size(), 2u);
  EXPECT_EQ(vit2->traffic()[0].wire_shape, (Shape{2 * 17 * 8}));
  auto mb =
      QuiltModel(load("mobilenet_v3_small", {"after_features.4"}), {"after_features.4"}, {4.0, 1});
  EXPECT_TRUE(mb->autoencoder(0)->encoder().ptr()->as<torch::nn::Conv2d>() != nullptr);
  for (const auto& [name, cuts] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"vit", {"after_encoder"}},
           {"vit", {skip, "after_encoder"}},
           {"mobilenet_v3_small", {"after_features.4", "after_avgpool"}},
           {"vgg11", {"after_features", "after_avgpool"}}}) {
    const double e = error_of(name, cuts, 4.0);
    EXPECT_TRUE(std::isfinite(e)) << name;  // untrained autoencoders: not equal, but they run
  }
  // A 2-D tensor at a cut: VGG after its classifier's first layer.
  auto vgg = QuiltModel(load("vgg11", {"after_classifier.1"}), {"after_classifier.1"}, {4.0, 1});
  EXPECT_EQ(vgg->traffic()[0].wire_shape, (Shape{16}));
}

TEST(TorchScript, SummaryCountsMacs) {
  auto vgg = load("vgg11");
  const auto s = summarize(vgg);
  // VGG-11's convolutions at 32x32 plus its classifier: well above 100 MMACs per sample.
  EXPECT_GT(s.macs, 100'000'000);
  EXPECT_EQ(s.units.size(), 3u);
}

TEST(TorchScript, ListsEveryCutWithShapes) {
  const auto cuts = torchscript_cuts(fixture("vit.pt"), kImage);
  bool saw_skip = false, saw_invalid = false;
  for (const auto& c : cuts) {
    if (c.name == "after_encoder.layers.encoder_layer_0.ln_2") {
      saw_skip = true;
      EXPECT_TRUE(c.invalid.empty()) << c.invalid;
      EXPECT_EQ(c.bytes_per_sample, 2 * 17 * 64 * 4);
    }
    if (c.name == "after_conv_proj") {
      saw_invalid = true;  // the batch size and patch counts (ints) still cross here
      EXPECT_NE(c.invalid.find("only tensors cross"), std::string::npos) << c.invalid;
    }
  }
  EXPECT_TRUE(saw_skip);
  EXPECT_TRUE(saw_invalid);
}

TEST(TorchScript, StateDictWeightsLoad) {
  torch::NoGradGuard no_grad;
  auto m = load("mobilenet_v3_small", {"after_features"});
  auto* ts = dynamic_cast<TorchScriptModelImpl*>(m.get());
  ASSERT_NE(ts, nullptr);
  ts->load_weights(fixture("mobilenet_v3_small_sd.pt"));
  const auto x = read_f32("mobilenet_v3_small_input.f32", {2, 3, 32, 32});
  const auto y = read_f32("mobilenet_v3_small_sd_output.f32", {2, 10});
  EXPECT_LT(relative_error(m->forward(x), y), 1e-4);
  auto msg = expect_model_error([&] { ts->load_weights(fixture("not_torchscript.pt")); });
  EXPECT_NE(msg.find("does not have"), std::string::npos) << msg;
}

TEST(TorchScript, BadInputsNameWhatIsValid) {
  // The options of the TorchScript file `path` taking `input`, cut at `cuts`.
  const auto options = [](const std::string& path, Shape input, std::vector<std::string> cuts) {
    ModelOptions o;
    o.path = path;
    o.input_shape = std::move(input);
    o.cuts = std::move(cuts);
    return o;
  };
  // The message of the ModelError that make_model throws for those options.
  const auto error_for = [&](const std::string& path, Shape input,
                             std::vector<std::string> cuts = {}) {
    const ModelOptions o = options(path, std::move(input), std::move(cuts));
    return expect_model_error([&] { make_model(kTorchScriptArch, o); });
  };
  auto msg = error_for("/nonexistent/m.pt", kImage);
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  msg = error_for(fixture("not_torchscript.pt"), kImage);
  EXPECT_NE(msg.find("is not a TorchScript file"), std::string::npos) << msg;
  msg = expect_model_error([&] { load("vit", {"after_nothing"}); });
  EXPECT_NE(msg.find("unknown cut \"after_nothing\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("after_encoder.layers.encoder_layer_0"), std::string::npos) << msg;
  msg = error_for(fixture("vit.pt"), {3, 40, 40});
  EXPECT_NE(msg.find("rejects input 3x40x40"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Wrong image height"), std::string::npos) << msg;
  msg = error_for(fixture("tuple_output.pt"), {8});
  EXPECT_NE(msg.find("output count"), std::string::npos) << msg;
  msg = error_for(fixture("two_inputs.pt"), {8});
  EXPECT_NE(msg.find("takes 2 argument(s)"), std::string::npos) << msg;
  EXPECT_EQ(make_model(kTorchScriptArch, options(fixture("loop.pt"), {8}, {}))->cut_names(),
            "after_head");
  msg = error_for(fixture("loop.pt"), {8}, {"after_body"});
  EXPECT_NE(msg.find("inside a loop"), std::string::npos) << msg;
  EXPECT_NE(msg.find("valid cuts: after_head"), std::string::npos) << msg;
  msg = error_for(fixture("branch.pt"), {8}, {"after_odd"});
  EXPECT_NE(msg.find("inside an `if`"), std::string::npos) << msg;
  msg = expect_model_error([&] { QuiltModel(load("vit"), {"after_nothing"}, {1.0, 1}); });
  EXPECT_NE(msg.find("valid cuts: after_encoder"), std::string::npos) << msg;
}

}  // namespace
}  // namespace quilt::models
