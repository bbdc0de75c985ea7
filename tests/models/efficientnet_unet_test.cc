// EfficientNet-B0 and UNet: structure, cuts, shape inference, packed skip tensors, and the
// autoencoders QuiltModel puts on every tensor that crosses a cut.

#include "models/efficientnet.h"
#include "models/quilt_model.h"
#include "models/summary.h"
#include "models/unet.h"
#include "models/zoo.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>

namespace quilt::models {
namespace {

std::vector<std::string> tensor_names(const CutPoint& c) {
  std::vector<std::string> names;
  for (const auto& t : c.tensors) names.push_back(t.name);
  return names;
}

TEST(EfficientNet, UnitsCutsAndParameters) {
  Model m = make_model("efficientnet_b0");
  EXPECT_EQ(m->input_shape(), (Shape{3, 224, 224}));
  EXPECT_EQ(m->num_classes(), 1000);
  EXPECT_EQ(count_params(*m), 5288548);  // torchvision's efficientnet_b0
  ASSERT_EQ(m->units().size(), 19u);
  EXPECT_EQ(m->units().front().name, "features.0");
  EXPECT_EQ(m->units()[1].name, "features.1.0");
  EXPECT_EQ(m->units()[2].name, "features.2.0");
  EXPECT_EQ(m->units()[17].name, "features.8");
  EXPECT_EQ(m->units().back().name, "head");
  EXPECT_EQ(m->cuts().size(), 18u);
  EXPECT_EQ(m->cut_names(),
            "after_features.0, after_features.1, after_features.2.0, after_features.2, "
            "after_features.3.0, after_features.3, after_features.4.0, after_features.4.1, "
            "after_features.4, after_features.5.0, after_features.5.1, after_features.5, "
            "after_features.6.0, after_features.6.1, after_features.6.2, after_features.6, "
            "after_features.7, after_features.8");
  // The paper's "after stage 5" (EfficientNet's Table 1 numbering).
  EXPECT_EQ(m->cut("after_features.4").shape, (Shape{80, 14, 14}));
  EXPECT_EQ(m->cut("after_features.8").shape, (Shape{1280, 7, 7}));
  for (const auto& c : m->cuts()) EXPECT_EQ(c.tensors.size(), 1u) << c.name;
}

TEST(EfficientNet, MacsCountDepthwiseConvsPerGroup) {
  const ModelSummary s = summarize(make_model("efficientnet_b0"));
  // torchvision lists 0.39 GFLOPS (multiply-adds) for efficientnet_b0.
  EXPECT_NEAR(static_cast<double>(s.macs), 0.3855e9, 0.005e9);
  // features.1.0: depthwise 3x3 on 32x112x112 (one input channel per output), SE 32->8->32,
  // project 1x1 32->16.
  const int64_t dw = 32 * 112 * 112 * 9, se = 32 * 8 + 8 * 32, project = 16 * 112 * 112 * 32;
  EXPECT_EQ(s.units[1].macs, dw + se + project);
}

TEST(EfficientNet, ForwardShapesAndStochasticDepth) {
  torch::manual_seed(0);
  Model m = make_model("efficientnet_b0", {{3, 64, 64}, 10});
  m->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 64, 64});
  EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
  // A block with a residual and stochastic depth 1 drops its branch in training (identity),
  // keeps it in eval.
  MBConv block(6, 3, 1, 16, 16, 1.0);
  const torch::Tensor y = torch::randn({3, 16, 8, 8});
  block->train();
  EXPECT_TRUE(torch::equal(block->forward(y), y));
  block->eval();
  EXPECT_FALSE(torch::equal(block->forward(y), y));
  EXPECT_TRUE(torch::allclose(block->forward(y), block->block->forward(y) + y));
}

TEST(UNet, UnitsCutsAndCrossingTensors) {
  Model m = make_model("unet");
  EXPECT_EQ(m->input_shape(), (Shape{3, 256, 256}));
  EXPECT_EQ(m->num_classes(), 2);
  EXPECT_EQ(count_params(*m), 31037698);  // milesial/Pytorch-UNet, bilinear=False, 3 -> 2
  ASSERT_EQ(m->units().size(), 10u);
  EXPECT_EQ(m->cut_names(),
            "after_inc, after_down1, after_down2, after_down3, after_down4, after_up1, "
            "after_up2, after_up3, after_up4");
  using Names = std::vector<std::string>;
  EXPECT_EQ(tensor_names(m->cut("after_inc")), (Names{"inc"}));
  EXPECT_EQ(tensor_names(m->cut("after_down2")), (Names{"inc", "down1", "down2"}));
  EXPECT_EQ(tensor_names(m->cut("after_down4")),
            (Names{"inc", "down1", "down2", "down3", "down4"}));
  EXPECT_EQ(tensor_names(m->cut("after_up1")), (Names{"inc", "down1", "down2", "up1"}));
  EXPECT_EQ(tensor_names(m->cut("after_up3")), (Names{"inc", "up3"}));
  EXPECT_EQ(tensor_names(m->cut("after_up4")), (Names{"up4"}));
  EXPECT_EQ(m->cut("after_inc").shape, (Shape{64, 256, 256}));
  EXPECT_EQ(m->cut("after_up4").shape, (Shape{64, 256, 256}));
  const CutPoint& c = m->cut("after_down2");
  EXPECT_EQ(c.tensors[2].shape, (Shape{256, 64, 64}));
  EXPECT_EQ(c.shape, (Shape{64 * 256 * 256 + 128 * 128 * 128 + 256 * 64 * 64}));
}

TEST(UNet, RefusesSizesThatDoNotHalveFourTimes) {
  EXPECT_THROW(make_model("unet", {{3, 40, 40}, 2}), ModelError);
  EXPECT_THROW(make_model("unet", {{3, 32}, 2}), ModelError);
  EXPECT_NO_THROW(make_model("unet", {{1, 16, 48}, 3}));
}

// The packed units give exactly what the original forward computes.
TEST(UNet, UnitsEqualTheOriginalForward) {
  torch::manual_seed(0);
  UNet u(Shape{3, 32, 32}, 3);
  u->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::Tensor x1 = u->inc(x), x2 = u->down1(x1), x3 = u->down2(x2), x4 = u->down3(x3),
                x5 = u->down4(x4);
  torch::Tensor y = u->up1(x5, x4);
  y = u->up2(y, x3);
  y = u->up3(y, x2);
  y = u->up4(y, x1);
  const torch::Tensor expected = u->outc(y);
  const torch::Tensor got = u->forward(x);
  EXPECT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(got, expected));
  // What crosses after_down2 is inc, down1, down2 flattened and concatenated per sample.
  const torch::Tensor packed = u->forward_units(x, 0, 3);
  EXPECT_TRUE(torch::equal(packed, torch::cat({x1.flatten(1), x2.flatten(1), x3.flatten(1)}, 1)));
}

TEST(UNet, ShapeInferenceOfConvTransposeAndPackedUnits) {
  const ModelSummary s = summarize(make_model("unet", {{3, 32, 32}, 2}));
  // up1: transposed conv 1024 -> 512, 2x2, on a 2x2 map: 2*2 input pixels x 1024 x 512 x 4.
  const int64_t up = 2 * 2 * 1024 * 512 * 4;
  const int64_t conv = 4 * 4 * 512 * 1024 * 9 + 4 * 4 * 512 * 512 * 9;
  EXPECT_EQ(s.units[5].name, "up1");
  EXPECT_EQ(s.units[5].macs, up + conv);
  EXPECT_EQ(s.units[5].out_shape,
            (Shape{64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8 + 512 * 4 * 4}));
  EXPECT_EQ(s.units.back().out_shape, (Shape{2, 32, 32}));
}

// Every leaf layer has a row, named as in the state_dict, and the rows add up to the units.
TEST(Summary, LayerRowsAddUpToUnits) {
  for (const auto& arch : model_names()) {
    SCOPED_TRACE(arch);
    ModelOptions o;
    if (arch == "unet") o.input_shape = {3, 32, 32};
    Model m = make_model(arch, o);
    const ModelSummary s = summarize(m);
    const std::vector<LayerSummary> layers = summarize_layers(m);
    std::map<std::string, int64_t> macs, params;
    std::set<std::string> names;
    for (const auto& l : layers) {
      macs[l.unit] += l.macs;
      params[l.unit] += l.params;
      EXPECT_TRUE(names.insert(l.name).second) << "layer listed twice: " << l.name;
      EXPECT_EQ(l.flops, 2 * l.macs);
      EXPECT_EQ(l.out_bytes, 4 * numel(l.out_shape));
    }
    for (const auto& u : s.units) {
      EXPECT_EQ(macs[u.name], u.macs) << u.name;
      EXPECT_EQ(params[u.name], u.params) << u.name;
    }
  }
  const std::vector<LayerSummary> layers = summarize_layers(make_model("efficientnet_b0"));
  ASSERT_FALSE(layers.empty());
  EXPECT_EQ(layers[0].name, "features.0.0");
  EXPECT_EQ(layers[0].type, "Conv2d");
  EXPECT_EQ(layers[0].out_shape, (Shape{32, 112, 112}));
  const auto se = std::find_if(layers.begin(), layers.end(), [](const LayerSummary& l) {
    return l.name == "features.1.0.block.1.fc1";
  });
  ASSERT_NE(se, layers.end());
  EXPECT_EQ(se->in_shape, (Shape{32, 1, 1}));
  EXPECT_EQ(se->macs, 32 * 8);
  EXPECT_EQ(layers.back().name, "classifier.1");
  const auto up = summarize_layers(make_model("unet", {{3, 32, 32}, 2}));
  const auto t =
      std::find_if(up.begin(), up.end(), [](const LayerSummary& l) { return l.name == "up1.up"; });
  ASSERT_NE(t, up.end());
  EXPECT_EQ(t->type, "ConvTranspose2d");
  EXPECT_EQ(t->in_shape, (Shape{1024, 2, 2}));
  EXPECT_EQ(t->out_shape, (Shape{512, 4, 4}));
}

TEST(QuiltModelUNet, OneAutoencoderPerCrossingTensor) {
  torch::manual_seed(0);
  Model base = make_model("unet", {{3, 32, 32}, 2});
  QuiltModel q(base, {"after_down2", "after_up4"}, AutoencoderOptions{4, 1});
  ASSERT_EQ(q->traffic().size(), 2u);
  const CutTraffic& t = q->traffic()[0];
  ASSERT_EQ(t.tensors.size(), 3u);
  EXPECT_EQ(t.wire_tensor_shapes, (std::vector<Shape>{{16, 32, 32}, {32, 16, 16}, {64, 8, 8}}));
  EXPECT_EQ(t.bytes_per_sample, 4 * (64 * 32 * 32 + 128 * 16 * 16 + 256 * 8 * 8));
  EXPECT_EQ(t.wire_bytes_per_sample, 4 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8));
  EXPECT_EQ(t.wire_shape, (Shape{16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8}));
  EXPECT_DOUBLE_EQ(t.effective_rate, 4.0);
  EXPECT_EQ(q->autoencoders(0).size(), 3u);
  EXPECT_THROW(q->autoencoder(0), ModelError);
  EXPECT_EQ(q->autoencoders(1).size(), 1u);
  EXPECT_EQ(q->autoencoder(1)->code_shape(), (Shape{16, 32, 32}));
  EXPECT_EQ(q->stage(0).out_shape, t.wire_shape);
  EXPECT_EQ(q->stage(1).in_shape, t.wire_shape);

  std::set<std::string> keys;
  for (const auto& p : q->named_parameters()) keys.insert(p.key());
  for (const char* k : {"ae_after_down2.0.encoder.weight", "ae_after_down2.1.decoder.bias",
                        "ae_after_down2.2.encoder.bias", "ae_after_up4.encoder.weight",
                        "inc.double_conv.0.weight", "up1.up.weight", "outc.conv.bias"}) {
    EXPECT_EQ(keys.count(k), 1u) << k;
  }
  // Autoencoder 1 works on down1 (128 channels).
  EXPECT_EQ(q->named_parameters()["ae_after_down2.1.encoder.weight"].sizes(),
            (std::vector<int64_t>{32, 128, 1, 1}));
  EXPECT_EQ(q->autoencoder_parameters().size(), 4u * 4u);

  q->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::Tensor wire = q->forward_stage(0, x);
  EXPECT_EQ(wire.sizes(), (std::vector<int64_t>{2, t.wire_shape[0]}));
  // Encoding the packed tensor is encoding each tensor with its own autoencoder.
  const torch::Tensor packed = base->forward_units(x, 0, 3);
  const auto parts = unpack(packed, {{64, 32, 32}, {128, 16, 16}, {256, 8, 8}});
  std::vector<torch::Tensor> codes;
  for (size_t i = 0; i < 3; ++i) {
    Autoencoder ae = q->autoencoders(0)[i];
    codes.push_back(ae->encode(parts[i]));
  }
  EXPECT_TRUE(torch::allclose(wire, pack(codes)));
  torch::Tensor y = q->forward_stage(2, q->forward_stage(1, wire));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 2, 32, 32}));
  EXPECT_TRUE(torch::equal(y, q->forward(x)));
  EXPECT_EQ(module_macs(*q, {3, 32, 32}, nullptr),
            q->stage(0).macs + q->stage(1).macs + q->stage(2).macs);
}

TEST(QuiltModelUNet, WithoutAutoencodersStagesEqualTheBaseModel) {
  torch::manual_seed(0);
  Model base = make_model("unet", {{3, 32, 32}, 2});
  base->eval();
  std::vector<std::string> cuts;
  for (const auto& c : base->cuts()) cuts.push_back(c.name);
  QuiltModel q(base, cuts, AutoencoderOptions{});
  EXPECT_EQ(q->num_stages(), 10u);
  for (size_t k = 0; k + 1 < q->num_stages(); ++k) {
    EXPECT_FALSE(q->has_autoencoder(k));
    EXPECT_EQ(q->traffic()[k].wire_bytes_per_sample, q->traffic()[k].bytes_per_sample);
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(q->forward(x), base->forward(x)));
}

TEST(QuiltModelEfficientNet, PaperCutWithRate8) {
  torch::manual_seed(0);
  Model base = make_model("efficientnet_b0", {{3, 64, 64}, 10});
  QuiltModel q(base, {"after_features.4"}, AutoencoderOptions{8, 1});
  EXPECT_EQ(q->traffic()[0].wire_shape, (Shape{10, 4, 4}));
  EXPECT_DOUBLE_EQ(q->traffic()[0].effective_rate, 8.0);
  EXPECT_EQ(q->autoencoder(0)->shape(), (Shape{80, 4, 4}));
}

}  // namespace
}  // namespace quilt::models
