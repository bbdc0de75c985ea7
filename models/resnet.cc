#include "models/resnet.h"

#include "common/model_width.h"
#include "models/batch_norm_act.h"
#include "models/fast_conv.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/init.h>
#include <algorithm>
#include <cmath>

namespace quilt::models {
namespace {

using torch::nn::BatchNorm2d;
using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;

Conv2d conv3x3(int64_t in, int64_t out, int64_t stride) {
  return Conv2d(Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

Conv2d conv1x1(int64_t in, int64_t out, int64_t stride) {
  return Conv2d(Conv2dOptions(in, out, 1).stride(stride).bias(false));
}

torch::nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Sequential(conv1x1(in, out, stride), BatchNorm2d(out));
}

// Sequential(conv, bn) of make_downsample, with the convolution through conv2d_forward and the
// normalisation through batch_norm_act.
torch::Tensor downsample_forward(torch::nn::Sequential& downsample, const torch::Tensor& x) {
  auto y = conv2d_forward(*downsample[0]->as<torch::nn::Conv2dImpl>(), x);
  return batch_norm_act(*downsample[1]->as<torch::nn::BatchNorm2dImpl>(), y, {}, /*relu=*/false);
}

// torchvision: kaiming_normal_(fan_out, relu) for every conv, BN weight 1 / bias 0; fc keeps
// PyTorch's default Linear init (which LibTorch's Linear already applied).
void init_weights(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& m : model.modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
}

}  // namespace

// Registration order follows torchvision's __init__, so named_parameters() lists the same
// names in the same order.
BasicBlockImpl::BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, bool downsample) {
  conv1 = register_module("conv1", conv3x3(inplanes, planes, stride));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, 1));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  if (downsample) {
    this->downsample = register_module("downsample", make_downsample(inplanes, planes, stride));
  }
}

// bn + relu and bn + residual + relu through batch_norm_act (one fused operation in
// channels-last training, the module's operations otherwise).
torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  torch::Tensor out = batch_norm_act(*bn1, conv2d_forward(*conv1, x));
  out = conv2d_forward(*conv2, out);
  return batch_norm_act(*bn2, out, downsample.is_empty() ? x : downsample_forward(downsample, x));
}

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, bool downsample) {
  constexpr int64_t kExpansion = 4;
  conv1 = register_module("conv1", conv1x1(inplanes, planes, 1));
  bn1 = register_module("bn1", BatchNorm2d(planes));
  conv2 = register_module("conv2", conv3x3(planes, planes, stride));
  bn2 = register_module("bn2", BatchNorm2d(planes));
  conv3 = register_module("conv3", conv1x1(planes, planes * kExpansion, 1));
  bn3 = register_module("bn3", BatchNorm2d(planes * kExpansion));
  if (downsample) {
    this->downsample =
        register_module("downsample", make_downsample(inplanes, planes * kExpansion, stride));
  }
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  torch::Tensor out = batch_norm_act(*bn1, conv2d_forward(*conv1, x));
  out = batch_norm_act(*bn2, conv2d_forward(*conv2, out));
  out = conv2d_forward(*conv3, out);
  return batch_norm_act(*bn3, out, downsample.is_empty() ? x : downsample_forward(downsample, x));
}

// The views register the shared layers inside themselves (never in the model), so that
// unit.module.ptr()->parameters() describes the unit.
ResNetStemImpl::ResNetStemImpl(Conv2d conv1, BatchNorm2d bn1, torch::nn::MaxPool2d maxpool)
    : conv1(std::move(conv1)), bn1(std::move(bn1)), maxpool(std::move(maxpool)) {
  register_module("conv1", this->conv1);
  register_module("bn1", this->bn1);
  register_module("maxpool", this->maxpool);
}

torch::Tensor ResNetStemImpl::forward(torch::Tensor x) {
  return maxpool(batch_norm_act(*bn1, conv1(std::move(x))));
}

ResNetHeadImpl::ResNetHeadImpl(torch::nn::Linear fc) : fc(std::move(fc)) {
  register_module("fc", this->fc);
}

torch::Tensor ResNetHeadImpl::forward(torch::Tensor x) {
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  return fc(torch::flatten(x, 1));
}

int64_t ResNetImpl::scaled_planes(int64_t planes, double width) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(planes) * width));
}

ResNetImpl::ResNetImpl(int depth, const Shape& input_shape, int64_t num_classes, double width)
    : ModelImpl(fmt::format("resnet{}", depth)), depth_(depth), width_(width) {
  if (depth != 18 && depth != 50) {
    throw ModelError(fmt::format("unsupported ResNet depth {}; valid depths: 18, 50", depth));
  }
  if (!common::valid_model_width(width)) {
    throw ModelError(
        fmt::format("{}: width {} must be in (0, {}]", arch_, width, common::kMaxModelWidth));
  }
  set_image_io(input_shape, num_classes);
  build_layers();
  init_weights(*this);
  add_units();
  finish();
}

void ResNetImpl::build_layers() {
  // torchvision's widths (64, 128, 256, 512) at width 1; the multiplier scales each one.
  auto planes_of = [this](int64_t planes) { return scaled_planes(planes, width_); };
  const int64_t stem = planes_of(64);
  conv1 = register_module(
      "conv1", Conv2d(Conv2dOptions(input_shape_[0], stem, 7).stride(2).padding(3).bias(false)));
  bn1 = register_module("bn1", BatchNorm2d(stem));
  maxpool = register_module(
      "maxpool", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));

  const bool bottleneck = depth_ == 50;
  const int64_t expansion = bottleneck ? 4 : 1;
  const std::array<int64_t, 4> blocks =
      bottleneck ? std::array<int64_t, 4>{3, 4, 6, 3} : std::array<int64_t, 4>{2, 2, 2, 2};
  int64_t inplanes = stem;
  auto make_layer = [&](int64_t planes, int64_t num_blocks, int64_t stride) {
    torch::nn::Sequential layer;
    for (int64_t b = 0; b < num_blocks; ++b) {
      const int64_t s = b == 0 ? stride : 1;
      const bool downsample = b == 0 && (s != 1 || inplanes != planes * expansion);
      if (bottleneck) {
        layer->push_back(Bottleneck(inplanes, planes, s, downsample));
      } else {
        layer->push_back(BasicBlock(inplanes, planes, s, downsample));
      }
      inplanes = planes * expansion;
    }
    return layer;
  };
  layer1 = register_module("layer1", make_layer(planes_of(64), blocks[0], 1));
  layer2 = register_module("layer2", make_layer(planes_of(128), blocks[1], 2));
  layer3 = register_module("layer3", make_layer(planes_of(256), blocks[2], 2));
  layer4 = register_module("layer4", make_layer(planes_of(512), blocks[3], 2));
  fc = register_module("fc", torch::nn::Linear(planes_of(512) * expansion, num_classes_));
}

void ResNetImpl::add_units() {
  add_unit("stem", torch::nn::AnyModule(ResNetStem(conv1, bn1, maxpool)));
  add_cut("after_stem");
  // One unit per residual block (the finest granularity at which a ResNet has a single tensor
  // crossing): the cut after the last block of a stage keeps the stage's name (after_layerN),
  // the others are named after their block (after_layerN.i). The AnyModule holds the block
  // itself (a shared holder), so parameters stay registered under layerN.i.* in the model only.
  const std::array<torch::nn::Sequential, 4> layers = {layer1, layer2, layer3, layer4};
  for (size_t i = 0; i < layers.size(); ++i) {
    const size_t num_blocks = layers[i]->size();
    for (size_t b = 0; b < num_blocks; ++b) {
      add_unit(fmt::format("layer{}.{}", i + 1, b), *(layers[i]->begin() + b));
      add_cut(b + 1 == num_blocks ? fmt::format("after_layer{}", i + 1)
                                  : fmt::format("after_layer{}.{}", i + 1, b));
    }
  }
  add_unit("head", torch::nn::AnyModule(ResNetHead(fc)));
}

}  // namespace quilt::models
