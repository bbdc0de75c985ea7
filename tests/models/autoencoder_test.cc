#include "models/autoencoder.h"

#include "tests/models/error_of.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace quilt::models {
namespace {

using testing::error_of;

TEST(Autoencoder, ChannelArithmetic) {
  EXPECT_EQ(encoded_channels(1024, 1), 1024);
  EXPECT_EQ(encoded_channels(1024, 4), 256);
  EXPECT_EQ(encoded_channels(1024, 7.5), 137);  // ceil(136.53)
  EXPECT_DOUBLE_EQ(effective_rate(1024, 7.5), 1024.0 / 137.0);
  EXPECT_EQ(encoded_channels(10, 3), 4);
  EXPECT_DOUBLE_EQ(effective_rate(10, 3), 2.5);
  EXPECT_EQ(encoded_channels(512, 512), 1);  // the paper's 512x autoencoder
  // R above C leaves one channel.
  EXPECT_EQ(encoded_channels(64, 100), 1);
  EXPECT_EQ(encoded_channels(3, 1e9), 1);
  EXPECT_DOUBLE_EQ(effective_rate(64, 100), 64.0);
  // Float rates that divide exactly do not round up to an extra channel.
  EXPECT_EQ(encoded_channels(3, 1.5), 2);
  EXPECT_EQ(encoded_channels(100, 100.0 / 3.0), 3);
  EXPECT_EQ(encoded_channels(1000, 1000.0 / 7.0), 7);
}

TEST(Autoencoder, EncodedShape) {
  EXPECT_EQ(encoded_shape({1024, 14, 14}, 4), (Shape{256, 14, 14}));
  EXPECT_EQ(encoded_shape({1024, 14, 14}, 7.5), (Shape{137, 14, 14}));
  EXPECT_EQ(encoded_shape({512}, 512), (Shape{1}));
  EXPECT_EQ(encoded_shape({64, 7, 7}, 1), (Shape{64, 7, 7}));
  // {tokens, features}: the features shrink (a ViT's sequence at a cut).
  EXPECT_EQ(encoded_shape({17, 64}, 4), (Shape{17, 16}));
  EXPECT_THROW(encoded_shape({2, 64, 7, 7}, 2), ModelError);
  EXPECT_THROW(encoded_shape({}, 2), ModelError);
}

TEST(Autoencoder, InvalidOptionsNameTheValue) {
  const std::string low = error_of([] { encoded_channels(64, 0.5); });
  EXPECT_NE(low.find("R = 0.5"), std::string::npos) << low;
  EXPECT_NE(low.find(">= 1"), std::string::npos) << low;
  const std::string nan =
      error_of([] { encoded_channels(64, std::numeric_limits<double>::quiet_NaN()); });
  EXPECT_NE(nan.find("R = nan"), std::string::npos) << nan;
  EXPECT_NE(error_of([] {
              encoded_channels(64, std::numeric_limits<double>::infinity());
            }).find("finite"),
            std::string::npos);
  EXPECT_NE(error_of([] { encoded_channels(0, 2); }).find("0 channels"), std::string::npos);

  const std::string even = error_of([] { Autoencoder(Shape{64, 7, 7}, AutoencoderOptions{2, 2}); });
  EXPECT_NE(even.find("kernel 2"), std::string::npos) << even;
  EXPECT_NE(even.find("odd"), std::string::npos) << even;
  EXPECT_NE(error_of([] {
              Autoencoder(Shape{64, 7, 7}, AutoencoderOptions{2, 0});
            }).find("kernel 0"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Autoencoder(Shape{64, 7, 7}, AutoencoderOptions{0.9, 1});
            }).find("0.9"),
            std::string::npos);
  EXPECT_THROW(Autoencoder(Shape{2, 64, 7, 7}, AutoencoderOptions{2, 1}), ModelError);
  {
    torch::NoGradGuard no_grad;
    Autoencoder seq(Shape{17, 64}, AutoencoderOptions{4, 1});  // Linear over the features
    EXPECT_EQ(seq->code_shape(), (Shape{17, 16}));
    EXPECT_EQ(seq->encode(torch::zeros({2, 17, 64})).sizes(), (torch::IntArrayRef{2, 17, 16}));
    EXPECT_EQ(seq->forward(torch::zeros({2, 17, 64})).sizes(), (torch::IntArrayRef{2, 17, 64}));
  }
}

TEST(Autoencoder, ConvLayersForFeatureMaps) {
  Autoencoder ae(Shape{1024, 14, 14}, AutoencoderOptions{}.set_rate(7.5).set_kernel(3));
  EXPECT_EQ(ae->code_shape(), (Shape{137, 14, 14}));
  auto* enc = ae->encoder().ptr()->as<torch::nn::Conv2d>();
  auto* dec = ae->decoder().ptr()->as<torch::nn::Conv2d>();
  ASSERT_NE(enc, nullptr);
  ASSERT_NE(dec, nullptr);
  EXPECT_EQ(enc->weight.sizes(), torch::IntArrayRef({137, 1024, 3, 3}));
  EXPECT_EQ(dec->weight.sizes(), torch::IntArrayRef({1024, 137, 3, 3}));
  EXPECT_TRUE(enc->bias.defined());
  EXPECT_TRUE(dec->bias.defined());
  std::vector<std::string> names;
  for (const auto& p : ae->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"encoder.weight", "encoder.bias", "decoder.weight",
                                             "decoder.bias"}));
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({2, 1024, 14, 14});
  const auto code = ae->encode(x);
  EXPECT_EQ(code.sizes(), torch::IntArrayRef({2, 137, 14, 14}));
  EXPECT_EQ(ae->decode(code).sizes(), x.sizes());
  EXPECT_EQ(ae->forward(x).sizes(), x.sizes());
}

TEST(Autoencoder, LinearLayersForVectors) {
  Autoencoder ae(Shape{512}, AutoencoderOptions{512, 1});
  auto* enc = ae->encoder().ptr()->as<torch::nn::Linear>();
  ASSERT_NE(enc, nullptr);
  EXPECT_EQ(enc->weight.sizes(), torch::IntArrayRef({1, 512}));
  EXPECT_EQ(ae->code_shape(), (Shape{1}));
  torch::NoGradGuard no_grad;
  EXPECT_EQ(ae->encode(torch::randn({3, 512})).sizes(), torch::IntArrayRef({3, 1}));
  EXPECT_EQ(ae->forward(torch::randn({3, 512})).sizes(), torch::IntArrayRef({3, 512}));
}

}  // namespace
}  // namespace quilt::models
