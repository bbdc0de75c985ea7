#include "models/summary.h"

#include "models/autoencoder.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::models {
namespace {

TEST(Summary, ResNetMacsMatchTheReferenceCounts) {
  // Conv + linear multiply-accumulates, as counted from torchvision with forward hooks.
  const ModelSummary r50 = summarize(make_model("resnet50"));
  EXPECT_EQ(r50.macs, 4089184256);  // the usual "4.09 GFLOPs" of ResNet-50
  EXPECT_EQ(r50.flops, 2 * r50.macs);
  EXPECT_EQ(r50.params, 25557032);
  const ModelSummary r18 = summarize(make_model("resnet18"));
  EXPECT_EQ(r18.macs, 1814073344);
  EXPECT_EQ(r18.params, 11689512);
  EXPECT_EQ(summarize(make_model("resnet18", ModelOptions{{1, 28, 28}, 10})).macs, 33010944);
  EXPECT_EQ(summarize(make_model("resnet50", ModelOptions{{3, 65, 47}, 1000})).macs, 328987136);
}

TEST(Summary, UnitsPartitionTheModel) {
  const ModelSummary s = summarize(make_model("resnet50"));
  ASSERT_EQ(s.units.size(), 18u);
  int64_t macs = 0, params = 0;
  for (const auto& u : s.units) {
    macs += u.macs;
    params += u.params;
    EXPECT_EQ(u.flops, 2 * u.macs);
    EXPECT_EQ(u.out_bytes, numel(u.out_shape) * 4);
  }
  EXPECT_EQ(macs, s.macs);
  EXPECT_EQ(params, s.params);
  EXPECT_EQ(s.units[0].name, "stem");
  EXPECT_EQ(s.units[0].in_shape, (Shape{3, 224, 224}));
  EXPECT_EQ(s.units[0].out_shape, (Shape{64, 56, 56}));
  EXPECT_EQ(s.units[0].macs, 118013952);  // conv1: 64*112*112 * 3*7*7
  EXPECT_EQ(s.units[1].name, "layer1.0");
  EXPECT_EQ(s.units[1].out_shape, (Shape{256, 56, 56}));
  // layer1.0: conv1 64->64 1x1, conv2 64->64 3x3, conv3 64->256 1x1, downsample 64->256 1x1.
  EXPECT_EQ(s.units[1].macs, 56 * 56 * (64 * 64 + 64 * 64 * 9 + 64 * 256 + 64 * 256));
  EXPECT_EQ(s.units[13].name, "layer3.5");
  EXPECT_EQ(s.units[13].out_shape, (Shape{1024, 14, 14}));
  EXPECT_EQ(s.units[17].name, "head");
  EXPECT_EQ(s.units[17].out_shape, (Shape{1000}));
  EXPECT_EQ(s.units[17].macs, 2048 * 1000);
  EXPECT_EQ(s.units[17].params, 2048 * 1000 + 1000);
  EXPECT_EQ(s.cuts.size(), 17u);
  EXPECT_NE(to_string(s).find("layer3.5"), std::string::npos);
}

TEST(Summary, ShapeInferenceAgreesWithForward) {
  torch::manual_seed(0);
  for (const Shape& input : {Shape{3, 65, 47}, Shape{1, 28, 28}, Shape{3, 9, 9}}) {
    for (int depth : {18, 50}) {
      Model m = to_model(ResNet(depth, input, 5));
      const ModelSummary s = summarize(m);
      m->eval();
      torch::NoGradGuard no_grad;
      Shape batch = input;
      batch.insert(batch.begin(), 1);
      torch::Tensor x = torch::randn(batch);
      for (size_t i = 0; i < m->units().size(); ++i) {
        x = m->forward_units(x, i, i + 1);
        EXPECT_EQ(Shape(x.sizes().begin() + 1, x.sizes().end()), s.units[i].out_shape)
            << "resnet" << depth << " " << to_string(input) << " unit " << s.units[i].name;
      }
    }
  }
}

TEST(Summary, GenericLayers) {
  torch::nn::Sequential seq(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1)),
      torch::nn::BatchNorm2d(8), torch::nn::ReLU(),
      torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).ceil_mode(true)),
      torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).groups(4).padding(torch::kSame)),
      torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(2)),
      torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions({3, 3})),
      torch::nn::Flatten(), torch::nn::Dropout(0.5), torch::nn::Linear(72, 4));
  Shape out;
  const int64_t macs = module_macs(*seq, {3, 33, 30}, &out);
  seq->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(seq->forward(torch::randn({1, 3, 33, 30})).sizes(), torch::IntArrayRef({1, 4}));
  EXPECT_EQ(out, (Shape{4}));
  // conv1 17x15 outputs; maxpool (ceil) -> 8x7; grouped same conv 8x7; linear 72x4.
  EXPECT_EQ(macs, 8 * 17 * 15 * 3 * 9 + 8 * 8 * 7 * 2 * 9 + 72 * 4);
  EXPECT_EQ(module_flops(*seq, {3, 33, 30}, nullptr), 2 * macs);
}

TEST(Summary, AutoencoderAndQuiltModel) {
  Autoencoder ae(Shape{1024, 14, 14}, AutoencoderOptions{4, 3});
  Shape out;
  EXPECT_EQ(module_macs(*ae, {1024, 14, 14}, &out), 2 * 256 * 14 * 14 * 1024 * 9);
  EXPECT_EQ(out, (Shape{1024, 14, 14}));
  EXPECT_THROW(module_macs(*ae, {512, 14, 14}, nullptr), ModelError);

  Model base = make_model("resnet18");
  QuiltModel quilt(base, {"after_layer2"}, AutoencoderOptions{2, 1});
  EXPECT_EQ(module_macs(*quilt, {3, 224, 224}, &out),
            summarize(base).macs + 2 * 128 * 64 * 28 * 28);
  EXPECT_EQ(out, (Shape{1000}));
}

TEST(Summary, ErrorsNameTheLayer) {
  torch::nn::Conv1d conv1d(torch::nn::Conv1dOptions(3, 4, 3));
  try {
    module_macs(*conv1d, {3, 10}, nullptr);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("Conv1d"), std::string::npos) << e.what();
  }
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(3, 4, 3));
  try {
    module_macs(*conv, {5, 10, 10}, nullptr);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("expects 3 input channels"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(module_macs(*conv, {3, 2, 2}, nullptr), ModelError);  // smaller than the kernel
  EXPECT_EQ(count_params(*conv), 4 * 3 * 9 + 4);
}

}  // namespace
}  // namespace quilt::models
