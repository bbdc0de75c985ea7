#include "models/quilt_model.h"

#include "models/mlp.h"
#include "models/resnet.h"
#include "models/summary.h"
#include "models/zoo.h"
#include "tests/models/error_of.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

namespace quilt::models {
namespace {

Model small_resnet18() {
  torch::manual_seed(0);
  return to_model(ResNet(18, Shape{3, 64, 64}, 10));
}

using testing::error_of;

TEST(QuiltModel, RateOneEqualsBaseExactly) {
  Model base = small_resnet18();
  QuiltModel quilt(base, {"after_layer1", "after_layer3"}, AutoencoderOptions{});
  quilt->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 64, 64});
  EXPECT_TRUE(torch::equal(quilt->forward(x), base->forward(x)));
  EXPECT_EQ(quilt->num_stages(), 3u);
  for (size_t k = 0; k < 2; ++k) EXPECT_TRUE(quilt->autoencoder(k).is_empty());
  EXPECT_TRUE(quilt->autoencoder_parameters().empty());
  // Same parameters and names as the base model: a base checkpoint is a QuiltModel checkpoint.
  std::vector<std::string> a, b;
  for (const auto& p : quilt->named_parameters()) a.push_back(p.key());
  for (const auto& p : base->named_parameters()) b.push_back(p.key());
  EXPECT_EQ(a, b);
  EXPECT_EQ(quilt->named_buffers().size(), base->named_buffers().size());
}

TEST(QuiltModel, StagesComposeToFullForward) {
  Model base = small_resnet18();
  QuiltModel quilt(base, {"after_stem", "after_layer2", "after_layer3"}, AutoencoderOptions{4, 3});
  quilt->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 3, 64, 64});
  torch::Tensor y = x;
  for (size_t k = 0; k < quilt->num_stages(); ++k) {
    y = quilt->forward_stage(k, y);
    Shape expected = quilt->stage(k).out_shape;
    expected.insert(expected.begin(), 2);
    EXPECT_EQ(y.sizes().vec(), expected) << "stage " << k;
  }
  EXPECT_TRUE(torch::equal(y, quilt->forward(x)));
  // What crosses is encoded: 64 -> 16 channels after the stem.
  EXPECT_EQ(quilt->stage(0).out_shape, (Shape{16, 16, 16}));
  EXPECT_EQ(quilt->stage(1).in_shape, (Shape{16, 16, 16}));
  EXPECT_EQ(quilt->stage(3).out_shape, (Shape{10}));
  EXPECT_ANY_THROW(quilt->forward_stage(4, x));
}

TEST(QuiltModel, AutoencoderNamesAreStable) {
  Model base = make_model("resnet50");
  QuiltModel quilt(base, {"after_layer3"}, AutoencoderOptions{4, 1});
  std::set<std::string> names;
  for (const auto& p : quilt->named_parameters()) names.insert(p.key());
  for (const char* name : {"ae_after_layer3.encoder.weight", "ae_after_layer3.encoder.bias",
                           "ae_after_layer3.decoder.weight", "ae_after_layer3.decoder.bias",
                           "conv1.weight", "layer3.5.bn3.bias", "fc.bias"}) {
    EXPECT_TRUE(names.count(name)) << name;
  }
  EXPECT_EQ(names.size(), base->named_parameters().size() + 4);
  EXPECT_EQ(quilt->autoencoder_parameters().size(), 4u);
  ASSERT_FALSE(quilt->autoencoder(0).is_empty());
  EXPECT_EQ(quilt->autoencoder(0)->code_shape(), (Shape{256, 14, 14}));
}

TEST(QuiltModel, TrafficPerCut) {
  Model base = make_model("resnet50");
  QuiltModel quilt(base, {"after_layer1", "after_layer3"}, AutoencoderOptions{7.5, 1});
  ASSERT_EQ(quilt->traffic().size(), 2u);
  const CutTraffic& t = quilt->traffic()[1];
  EXPECT_EQ(t.cut, "after_layer3");
  EXPECT_EQ(t.shape, (Shape{1024, 14, 14}));
  EXPECT_EQ(t.wire_shape, (Shape{137, 14, 14}));
  EXPECT_EQ(t.bytes_per_sample, 1024 * 14 * 14 * 4);
  EXPECT_EQ(t.wire_bytes_per_sample, 137 * 14 * 14 * 4);
  EXPECT_DOUBLE_EQ(t.requested_rate, 7.5);
  EXPECT_DOUBLE_EQ(t.effective_rate, 1024.0 / 137.0);
  EXPECT_EQ(quilt->traffic()[0].wire_shape, (Shape{35, 56, 56}));  // ceil(256 / 7.5)

  QuiltModel baseline(base, {"after_layer3"}, AutoencoderOptions{});
  const CutTraffic& b = baseline->traffic()[0];
  EXPECT_EQ(b.wire_shape, b.shape);
  EXPECT_EQ(b.wire_bytes_per_sample, b.bytes_per_sample);
  EXPECT_DOUBLE_EQ(b.effective_rate, 1.0);
}

TEST(QuiltModel, StageSpecsAccountUnitsAndAutoencoders) {
  Model base = make_model("resnet50");
  const ModelSummary s = summarize(base);
  QuiltModel quilt(base, {"after_layer3"}, AutoencoderOptions{4, 1});
  ASSERT_EQ(quilt->num_stages(), 2u);
  const StageSpec& s0 = quilt->stage(0);
  const StageSpec& s1 = quilt->stage(1);
  EXPECT_EQ(s0.first_unit, 0u);
  EXPECT_EQ(s0.end_unit, 14u);  // stem + 3 + 4 + 6 blocks
  EXPECT_EQ(s1.first_unit, 14u);
  EXPECT_EQ(s1.end_unit, 18u);
  EXPECT_EQ(s0.in_shape, (Shape{3, 224, 224}));
  EXPECT_EQ(s0.out_shape, (Shape{256, 14, 14}));
  EXPECT_EQ(s1.in_shape, (Shape{256, 14, 14}));
  EXPECT_EQ(s1.out_shape, (Shape{1000}));
  const int64_t ae_macs = 1024 * 256 * 14 * 14;  // each of encoder and decoder, 1x1 conv
  EXPECT_EQ(s0.macs + s1.macs, s.macs + 2 * ae_macs);
  EXPECT_EQ(s1.flops, 2 * s1.macs);
  EXPECT_EQ(s0.params + s1.params, s.params + 2 * (1024 * 256) + 256 + 1024);
}

TEST(QuiltModel, MultipleAutoencodersForFourBoards) {
  Model base = small_resnet18();
  QuiltModel quilt(base, {"after_layer1", "after_layer2", "after_layer3"},
                   AutoencoderOptions{2, 1});
  EXPECT_EQ(quilt->num_stages(), 4u);
  EXPECT_EQ(quilt->autoencoder_parameters().size(), 12u);
  torch::NoGradGuard no_grad;
  quilt->eval();
  EXPECT_EQ(quilt->forward(torch::randn({1, 3, 64, 64})).sizes(), torch::IntArrayRef({1, 10}));
}

TEST(QuiltModel, MlpWithThePapers512xAutoencoder) {
  Model base = make_model("mlp");
  QuiltModel quilt(base, {"after_hidden1"}, AutoencoderOptions{512, 1});
  EXPECT_EQ(quilt->traffic()[0].wire_shape, (Shape{1}));
  EXPECT_NE(quilt->autoencoder(0)->encoder().ptr()->as<torch::nn::Linear>(), nullptr);
  EXPECT_EQ(quilt->forward(torch::randn({4, 64})).sizes(), torch::IntArrayRef({4, 10}));
}

TEST(QuiltModel, TrainAndEvalReachEverything) {
  Model base = small_resnet18();
  QuiltModel quilt(base, {"after_layer2"}, AutoencoderOptions{2, 1});
  quilt->eval();
  EXPECT_FALSE(base->is_training());
  EXPECT_FALSE(base->as<ResNet>()->bn1->is_training());
  EXPECT_FALSE(quilt->autoencoder(0)->is_training());
  quilt->train();
  EXPECT_TRUE(base->is_training());
  EXPECT_TRUE(base->as<ResNet>()->layer4->is_training());
}

TEST(QuiltModel, BlockCutsGetAutoencodersWithoutDots) {
  Model base = make_model("resnet18", ModelOptions{{3, 32, 32}, 10});
  QuiltModel quilt(base, {"after_layer1.0", "after_layer3"}, AutoencoderOptions{4, 1});
  EXPECT_EQ(autoencoder_module_name("after_layer1.0"), "ae_after_layer1_0");
  EXPECT_EQ(autoencoder_module_name("after_layer3"), "ae_after_layer3");
  std::set<std::string> names;
  for (const auto& p : quilt->named_parameters()) names.insert(p.key());
  EXPECT_TRUE(names.count("ae_after_layer1_0.encoder.weight"));
  EXPECT_TRUE(names.count("ae_after_layer3.decoder.bias"));
  ASSERT_EQ(quilt->num_stages(), 3u);
  EXPECT_EQ(quilt->stage(0).end_unit, 2u);  // stem, layer1.0
  EXPECT_EQ(quilt->stage(1).end_unit, 7u);  // layer1.1 .. layer3.1
  EXPECT_EQ(quilt->traffic()[0].shape, (Shape{64, 8, 8}));
  quilt->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(quilt->forward(torch::randn({2, 3, 32, 32})).sizes(), torch::IntArrayRef({2, 10}));
}

TEST(QuiltModel, BadCutsNameTheCutAndTheValidOnes) {
  Model base = make_model("resnet50");
  EXPECT_EQ(error_of([&] { QuiltModel(base, {"layer9"}, AutoencoderOptions{}); }),
            "unknown cut \"layer9\" for resnet50; valid cuts: after_stem, after_layer1.0, "
            "after_layer1.1, after_layer1, after_layer2.0, after_layer2.1, after_layer2.2, "
            "after_layer2, after_layer3.0, after_layer3.1, after_layer3.2, after_layer3.3, "
            "after_layer3.4, after_layer3, after_layer4.0, after_layer4.1, after_layer4");
  const std::string twice = error_of([&] {
    QuiltModel(base, {"after_layer1", "after_layer1"}, AutoencoderOptions{});
  });
  EXPECT_NE(twice.find("\"after_layer1\" given twice"), std::string::npos) << twice;
  const std::string order = error_of([&] {
    QuiltModel(base, {"after_layer3", "after_layer1"}, AutoencoderOptions{});
  });
  EXPECT_NE(order.find("model order"), std::string::npos) << order;
  EXPECT_NE(order.find("after_layer1"), std::string::npos) << order;
  EXPECT_NE(error_of([&] {
              QuiltModel(base, {"after_layer3"}, AutoencoderOptions{0.5, 1});
            }).find("R = 0.5"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              QuiltModel(base, {"after_layer3"}, AutoencoderOptions{4, 4});
            }).find("kernel 4"),
            std::string::npos);
  QuiltModel whole(base, {}, AutoencoderOptions{4, 1});
  EXPECT_EQ(whole->num_stages(), 1u);
  EXPECT_TRUE(whole->traffic().empty());
}

}  // namespace
}  // namespace quilt::models
