#include "models/efficientnet.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/torch.h>

#include <array>
#include <cmath>

namespace quilt::models {
namespace {

using torch::nn::BatchNorm2d;
using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;

// torchvision.ops.Conv2dNormActivation: a Sequential of conv (no bias, padding (k-1)/2), BN and,
// unless `silu` is false, SiLU; so its parameters are named <prefix>.0.weight, <prefix>.1.weight.
NestedSequential conv_norm_activation(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                      int64_t groups, bool silu) {
  NestedSequential seq;
  seq->push_back(Conv2d(Conv2dOptions(in, out, kernel)
                            .stride(stride)
                            .padding((kernel - 1) / 2)
                            .groups(groups)
                            .bias(false)));
  seq->push_back(BatchNorm2d(out));
  if (silu) seq->push_back(torch::nn::SiLU());
  return seq;
}

// torchvision's _make_divisible(v, 8) as MBConvConfig.adjust_channels uses it.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t out =
      std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(out) < 0.9 * v) out += divisor;
  return out;
}

struct StageConfig {
  int64_t expand, kernel, stride, in, out, layers;
};

// Table 1 of the EfficientNet paper, as torchvision's _efficientnet_conf("efficientnet_b0").
constexpr std::array<StageConfig, 7> kB0 = {{{1, 3, 1, 32, 16, 1},
                                             {6, 3, 2, 16, 24, 2},
                                             {6, 5, 2, 24, 40, 2},
                                             {6, 3, 2, 40, 80, 3},
                                             {6, 5, 1, 80, 112, 3},
                                             {6, 5, 2, 112, 192, 4},
                                             {6, 3, 1, 192, 320, 1}}};
constexpr double kStochasticDepth = 0.2;
constexpr double kDropout = 0.2;

}  // namespace

SqueezeExcitationImpl::SqueezeExcitationImpl(int64_t channels, int64_t squeeze) {
  fc1 = register_module("fc1", Conv2d(Conv2dOptions(channels, squeeze, 1)));
  fc2 = register_module("fc2", Conv2d(Conv2dOptions(squeeze, channels, 1)));
}

torch::Tensor SqueezeExcitationImpl::forward(torch::Tensor x) {
  torch::Tensor scale = torch::adaptive_avg_pool2d(x, {1, 1});
  scale = torch::sigmoid(fc2(torch::silu(fc1(scale))));
  return scale * x;
}

MBConvImpl::MBConvImpl(int64_t expand_ratio, int64_t kernel, int64_t stride, int64_t in_channels,
                       int64_t out_channels, double stochastic_depth_prob)
    : use_res_connect(stride == 1 && in_channels == out_channels),
      stochastic_depth_prob(stochastic_depth_prob) {
  TORCH_INTERNAL_ASSERT(stride == 1 || stride == 2, "MBConv stride ", stride);
  const int64_t expanded = make_divisible(static_cast<double>(in_channels * expand_ratio));
  NestedSequential layers;
  if (expanded != in_channels)
    layers->push_back(conv_norm_activation(in_channels, expanded, 1, 1, 1, true));
  layers->push_back(conv_norm_activation(expanded, expanded, kernel, stride, expanded, true));
  layers->push_back(SqueezeExcitation(expanded, std::max<int64_t>(1, in_channels / 4)));
  layers->push_back(conv_norm_activation(expanded, out_channels, 1, 1, 1, false));
  block = register_module(
      "block",
      torch::nn::Sequential(std::static_pointer_cast<torch::nn::SequentialImpl>(layers.ptr())));
}

torch::Tensor MBConvImpl::forward(torch::Tensor x) {
  torch::Tensor result = block->forward(x);
  if (!use_res_connect) return result;
  if (is_training() && stochastic_depth_prob > 0) {
    // torchvision.ops.stochastic_depth(mode="row"): one Bernoulli draw per sample.
    const double survival = 1.0 - stochastic_depth_prob;
    std::vector<int64_t> size(static_cast<size_t>(result.dim()), 1);
    size[0] = result.size(0);
    torch::Tensor noise = torch::empty(size, result.options()).bernoulli_(survival);
    if (survival > 0) noise.div_(survival);
    result = result * noise;
  }
  return result + x;
}

EfficientNetHeadImpl::EfficientNetHeadImpl(torch::nn::Sequential classifier)
    : classifier(std::move(classifier)) {
  register_module("classifier", this->classifier);
}

torch::Tensor EfficientNetHeadImpl::forward(torch::Tensor x) {
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return classifier->forward(torch::flatten(x, 1));
}

EfficientNetImpl::EfficientNetImpl(const Shape& input_shape, int64_t num_classes)
    : ModelImpl("efficientnet_b0") {
  set_image_io(input_shape, num_classes);

  NestedSequential f;
  f->push_back(conv_norm_activation(input_shape[0], kB0[0].in, 3, 2, 1, true));
  int64_t total_blocks = 0;
  for (const auto& c : kB0) total_blocks += c.layers;
  int64_t block_id = 0;
  for (const auto& c : kB0) {
    NestedSequential stage;
    for (int64_t b = 0; b < c.layers; ++b) {
      const double p =
          kStochasticDepth * static_cast<double>(block_id) / static_cast<double>(total_blocks);
      stage->push_back(
          MBConv(c.expand, c.kernel, b == 0 ? c.stride : 1, b == 0 ? c.in : c.out, c.out, p));
      ++block_id;
    }
    f->push_back(stage);
  }
  const int64_t last_in = kB0.back().out, last_out = 4 * last_in;
  f->push_back(conv_norm_activation(last_in, last_out, 1, 1, 1, true));
  features = register_module(
      "features",
      torch::nn::Sequential(std::static_pointer_cast<torch::nn::SequentialImpl>(f.ptr())));
  classifier = register_module(
      "classifier", torch::nn::Sequential(torch::nn::Dropout(torch::nn::DropoutOptions(kDropout)),
                                          torch::nn::Linear(last_out, num_classes)));

  torch::NoGradGuard no_grad;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) torch::nn::init::zeros_(conv->bias);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<torch::nn::Linear>()) {
      const double range = 1.0 / std::sqrt(static_cast<double>(fc->options.out_features()));
      torch::nn::init::uniform_(fc->weight, -range, range);
      torch::nn::init::zeros_(fc->bias);
    }
  }

  auto sequential_at = [&](size_t i) {
    return torch::nn::Sequential(
        std::dynamic_pointer_cast<torch::nn::SequentialImpl>(features->ptr(i)));
  };
  add_unit("features.0", torch::nn::AnyModule(SequentialUnit(sequential_at(0))));
  add_cut("after_features.0");
  for (size_t s = 1; s <= kB0.size(); ++s) {
    const torch::nn::Sequential stage = sequential_at(s);
    for (size_t b = 0; b < stage->size(); ++b) {
      add_unit(fmt::format("features.{}.{}", s, b), *(stage->begin() + b));
      add_cut(b + 1 == stage->size() ? fmt::format("after_features.{}", s)
                                     : fmt::format("after_features.{}.{}", s, b));
    }
  }
  const size_t last = kB0.size() + 1;
  add_unit(fmt::format("features.{}", last),
           torch::nn::AnyModule(SequentialUnit(sequential_at(last))));
  add_cut(fmt::format("after_features.{}", last));
  add_unit("head", torch::nn::AnyModule(EfficientNetHead(classifier)));
  finish();
}

}  // namespace quilt::models
