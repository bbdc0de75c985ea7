#include "models/resnet.h"

#include "models/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <set>

namespace quilt::models {
namespace {

int64_t count(const std::vector<torch::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

std::set<std::string> keys(const torch::OrderedDict<std::string, torch::Tensor>& dict) {
  std::set<std::string> k;
  for (const auto& item : dict) k.insert(item.key());
  return k;
}

TEST(ResNet, ParameterCountsMatchTorchvision) {
  EXPECT_EQ(count(ResNet(18, Shape{3, 224, 224}, 1000)->parameters()), 11689512);
  EXPECT_EQ(count(ResNet(50, Shape{3, 224, 224}, 1000)->parameters()), 25557032);
}

TEST(ResNet, TorchvisionNamesAndNoUnitDuplicates) {
  ResNet r50(50, Shape{3, 224, 224}, 1000);
  const auto params = r50->named_parameters();
  const auto buffers = r50->named_buffers();
  const auto names = keys(params);
  EXPECT_EQ(names.size(), params.size());
  EXPECT_EQ(params.size(), 161u);   // torchvision resnet50: 161 parameters
  EXPECT_EQ(buffers.size(), 159u);  // 53 BatchNorms x (running_mean, running_var, count)
  for (const char* name : {"conv1.weight", "bn1.weight", "bn1.bias", "layer1.0.conv1.weight",
                           "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
                           "layer4.2.bn3.bias", "fc.weight", "fc.bias"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  const auto buffer_names = keys(buffers);
  for (const char* name : {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
                           "layer1.0.downsample.1.running_mean"}) {
    EXPECT_TRUE(buffer_names.count(name)) << name;
  }
  EXPECT_EQ(buffers["bn1.num_batches_tracked"].scalar_type(), torch::kLong);
  // Units are views: nothing is registered under a unit's name.
  for (const auto& name : names) {
    EXPECT_NE(name.rfind("stem.", 0), 0u) << name;
    EXPECT_NE(name.rfind("head.", 0), 0u) << name;
    EXPECT_EQ(name.find(".seq."), std::string::npos) << name;
  }

  ResNet r18(18, Shape{3, 224, 224}, 1000);
  const auto names18 = keys(r18->named_parameters());
  EXPECT_EQ(r18->named_parameters().size(), 62u);
  EXPECT_FALSE(names18.count("layer1.0.downsample.0.weight"));
  EXPECT_TRUE(names18.count("layer2.0.downsample.0.weight"));
  EXPECT_TRUE(names18.count("layer4.1.conv2.weight"));
}

TEST(ResNet, UnitsAndCutShapes) {
  ResNet r50(50, Shape{3, 224, 224}, 1000);
  std::vector<std::string> units;
  for (const auto& u : r50->units()) units.push_back(u.name);
  EXPECT_EQ(units, (std::vector<std::string>{
                       "stem", "layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1",
                       "layer2.2", "layer2.3", "layer3.0", "layer3.1", "layer3.2", "layer3.3",
                       "layer3.4", "layer3.5", "layer4.0", "layer4.1", "layer4.2", "head"}));
  // A cut after every unit but the head; stage boundaries keep their stage names.
  const std::vector<std::pair<std::string, Shape>> expected50 = {
      {"after_stem", {64, 56, 56}},       {"after_layer1.0", {256, 56, 56}},
      {"after_layer1.1", {256, 56, 56}},  {"after_layer1", {256, 56, 56}},
      {"after_layer2.0", {512, 28, 28}},  {"after_layer2.1", {512, 28, 28}},
      {"after_layer2.2", {512, 28, 28}},  {"after_layer2", {512, 28, 28}},
      {"after_layer3.0", {1024, 14, 14}}, {"after_layer3.1", {1024, 14, 14}},
      {"after_layer3.2", {1024, 14, 14}}, {"after_layer3.3", {1024, 14, 14}},
      {"after_layer3.4", {1024, 14, 14}}, {"after_layer3", {1024, 14, 14}},
      {"after_layer4.0", {2048, 7, 7}},   {"after_layer4.1", {2048, 7, 7}},
      {"after_layer4", {2048, 7, 7}}};
  ASSERT_EQ(r50->cuts().size(), expected50.size());
  for (size_t i = 0; i < expected50.size(); ++i) {
    EXPECT_EQ(r50->cuts()[i].name, expected50[i].first);
    EXPECT_EQ(r50->cuts()[i].after_unit, i);
    EXPECT_EQ(r50->cuts()[i].shape, expected50[i].second) << expected50[i].first;
  }
  EXPECT_EQ(r50->cut("after_layer3").shape, (Shape{1024, 14, 14}));
  EXPECT_EQ(r50->cut("after_layer3").after_unit, 13u);  // layer3.5, the last block of layer3

  ResNet r18(18, Shape{3, 224, 224}, 1000);
  std::vector<std::string> cuts18;
  for (const auto& c : r18->cuts()) cuts18.push_back(c.name);
  EXPECT_EQ(cuts18, (std::vector<std::string>{"after_stem", "after_layer1.0", "after_layer1",
                                              "after_layer2.0", "after_layer2", "after_layer3.0",
                                              "after_layer3", "after_layer4.0", "after_layer4"}));
  EXPECT_EQ(r18->units().size(), 10u);
  EXPECT_EQ(r18->cut("after_stem").shape, (Shape{64, 56, 56}));
  EXPECT_EQ(r18->cut("after_layer1").shape, (Shape{64, 56, 56}));
  EXPECT_EQ(r18->cut("after_layer3").shape, (Shape{256, 14, 14}));
  EXPECT_EQ(r18->cut("after_layer4").shape, (Shape{512, 7, 7}));
}

TEST(ResNet, UnknownCutListsValidOnes) {
  ResNet r50(50, Shape{3, 224, 224}, 1000);
  try {
    r50->cut("layer9");
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_STREQ(e.what(),
                 "unknown cut \"layer9\" for resnet50; valid cuts: after_stem, after_layer1.0, "
                 "after_layer1.1, after_layer1, after_layer2.0, after_layer2.1, after_layer2.2, "
                 "after_layer2, after_layer3.0, after_layer3.1, after_layer3.2, after_layer3.3, "
                 "after_layer3.4, after_layer3, after_layer4.0, after_layer4.1, after_layer4");
  }
}

TEST(ResNet, FashionMnistInput) {
  torch::manual_seed(0);
  ResNet r18(18, Shape{1, 28, 28}, 10);
  EXPECT_EQ(r18->conv1->weight.sizes(), torch::IntArrayRef({64, 1, 7, 7}));
  EXPECT_EQ(r18->fc->weight.sizes(), torch::IntArrayRef({10, 512}));
  EXPECT_EQ(r18->cut("after_stem").shape, (Shape{64, 7, 7}));
  EXPECT_EQ(r18->cut("after_layer4").shape, (Shape{512, 1, 1}));
  r18->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(r18->forward(torch::randn({3, 1, 28, 28})).sizes(), torch::IntArrayRef({3, 10}));
}

TEST(ResNet, TorchvisionInitialisation) {
  torch::manual_seed(0);
  ResNet r50(50, Shape{3, 224, 224}, 1000);
  // kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels * kh * kw)).
  const auto& w = r50->layer3->ptr(0)->as<Bottleneck>()->conv2->weight;  // 256x256x3x3
  EXPECT_NEAR(w.std().item<double>(), std::sqrt(2.0 / (256 * 9)), 0.003);
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 0.002);
  for (const auto& m : r50->modules(false)) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      EXPECT_TRUE(torch::all(bn->weight == 1).item<bool>());
      EXPECT_TRUE(torch::all(bn->bias == 0).item<bool>());
      EXPECT_TRUE(torch::all(bn->running_var == 1).item<bool>());
    }
  }
  EXPECT_EQ(r50->conv1->options.bias(), false);
  EXPECT_FALSE(r50->fc->bias.sum().item<double>() == 0.0);  // PyTorch's default Linear init
}

TEST(ResNet, ForwardUnitsComposeAndViewsShareLayers) {
  torch::manual_seed(0);
  ResNet r18(18, Shape{3, 64, 64}, 7);
  r18->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 64, 64});
  const auto full = r18->forward(x);
  EXPECT_EQ(full.sizes(), torch::IntArrayRef({2, 7}));
  const auto mid = r18->forward_units(x, 0, 5);  // stem, layer1.0-1, layer2.0-1
  EXPECT_EQ(mid.sizes(), torch::IntArrayRef({2, 128, 8, 8}));
  EXPECT_TRUE(torch::equal(r18->forward_units(mid, 5, 10), full));
  // Block units are the model's own blocks (torchvision names unchanged, nothing registered
  // twice).
  EXPECT_EQ(r18->units()[3].name, "layer2.0");
  EXPECT_EQ(r18->units()[3].module.ptr().get(), r18->layer2->ptr(0).get());
  EXPECT_EQ(r18->named_parameters().size(), r18->parameters().size());
  EXPECT_TRUE(r18->named_parameters().contains("layer2.0.downsample.0.weight"));
  // The stem view holds the model's own layers.
  auto* stem = r18->units()[0].module.ptr()->as<ResNetStem>();
  ASSERT_NE(stem, nullptr);
  EXPECT_EQ(stem->conv1.ptr(), r18->conv1.ptr());
  EXPECT_FALSE(stem->bn1->is_training());
  EXPECT_ANY_THROW(r18->forward_units(x, 4, 2));
}

TEST(ResNet, InvalidOptions) {
  EXPECT_THROW(ResNet(34, Shape{3, 224, 224}, 1000), ModelError);
  EXPECT_THROW(ResNet(18, Shape{3, 224}, 1000), ModelError);
  EXPECT_THROW(ResNet(18, Shape{0, 224, 224}, 1000), ModelError);
  EXPECT_THROW(ResNet(18, Shape{3, 224, 224}, 0), ModelError);
  try {
    ResNet(101, Shape{3, 224, 224}, 1000);
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("valid depths: 18, 50"), std::string::npos);
  }
}

// Expected counts from the layer arithmetic of torchvision's ResNet with every width scaled
// (round(64 w), round(128 w), ...): at width 1 the same arithmetic gives 11689512 / 25557032.
TEST(ResNet, WidthScalesStemAndStages) {
  struct Case {
    int depth;
    Shape input;
    int64_t classes;
    double width;
    int64_t params;
    std::array<int64_t, 4> stage_channels;  // after layer1..4 (times 4 for ResNet-50)
  };
  for (const Case& c : {Case{18, {1, 28, 28}, 10, 0.25, 701818, {16, 32, 64, 128}},
                        Case{18, {1, 28, 28}, 10, 0.5, 2798314, {32, 64, 128, 256}},
                        Case{18, {1, 28, 28}, 10, 0.1, 113532, {6, 13, 26, 51}},
                        Case{50, {3, 224, 224}, 1000, 0.25, 1993976, {64, 128, 256, 512}},
                        Case{50, {3, 224, 224}, 1000, 0.5, 6917640, {128, 256, 512, 1024}}}) {
    SCOPED_TRACE("resnet" + std::to_string(c.depth) + " width " + std::to_string(c.width));
    ModelOptions o;
    o.input_shape = c.input;
    o.num_classes = c.classes;
    o.width = c.width;
    Model m = make_model(c.depth == 18 ? "resnet18" : "resnet50", o);
    EXPECT_EQ(count(m->parameters()), c.params);
    auto* r = dynamic_cast<ResNetImpl*>(m.get());
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->width(), c.width);
    EXPECT_EQ(r->conv1->options.out_channels(), ResNetImpl::scaled_planes(64, c.width));
    EXPECT_EQ(r->fc->options.in_features(), c.stage_channels[3]);
    for (int s = 0; s < 4; ++s) {
      const auto& cut = m->cut("after_layer" + std::to_string(s + 1));
      ASSERT_EQ(cut.tensors.size(), 1u);
      EXPECT_EQ(cut.tensors[0].shape[0], c.stage_channels[s]) << "after_layer" << s + 1;
    }
    m->eval();
    torch::NoGradGuard no_grad;
    auto y = m->forward(torch::randn({2, c.input[0], c.input[1], c.input[2]}));
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, c.classes}));
  }
  // Tiny widths keep at least one channel.
  EXPECT_EQ(ResNetImpl::scaled_planes(64, 0.001), 1);
  EXPECT_EQ(ResNetImpl::scaled_planes(64, 4.0), 256);
}

TEST(ResNet, WidthOneIsTodaysModelBitForBit) {
  ModelOptions o;
  o.input_shape = {1, 28, 28};
  o.num_classes = 10;
  o.width = 1.0;
  torch::manual_seed(7);
  Model a = make_model("resnet18", o);
  torch::manual_seed(7);
  Model b = to_model(ResNet(18, Shape{1, 28, 28}, 10));
  const auto pa = a->named_parameters();
  const auto pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
}

TEST(ResNet, WidthErrors) {
  for (double w : {0.0, -1.0, 4.5, std::nan("")}) {
    ModelOptions o;
    o.width = w;
    EXPECT_THROW(make_model("resnet18", o), ModelError) << w;
  }
  for (const char* arch : {"mlp", "unet", "efficientnet_b0"}) {
    ModelOptions o;
    o.width = 0.5;
    try {
      make_model(arch, o);
      ADD_FAILURE() << arch << " took a width";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("has no width multiplier"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("resnet18, resnet50"), std::string::npos) << e.what();
    }
  }
  // Width 1 is accepted by every arch (the default).
  ModelOptions one;
  one.width = 1.0;
  EXPECT_NO_THROW(make_model("mlp", one));
}

}  // namespace
}  // namespace quilt::models
