#pragma once
// EfficientNet-B0, layer for layer as torchvision defines it (same module names, so a
// torchvision state_dict loads: 5,288,548 parameters at 1000 classes). Units, one per MBConv
// block: features.0 (stem conv 3x3/2 + BN + SiLU), features.1.0, features.2.0, features.2.1, ...,
// features.7.0, features.8 (conv 1x1 to 1280 + BN + SiLU), head (avgpool, flatten, classifier).
// A cut follows every unit but the head, named like ResNet's: after_features.N.i after block i
// of stage N when it is not the stage's last, after_features.N after the last block of stage N
// (and after features.0 and features.8). torchvision's features.N is stage N+1 of Table 1 of
// the EfficientNet paper, so the QuiltNet paper's cut "after stage 5" is after_features.4
// (80x14x14 at 224x224). 19 units, 18 cuts.

#include "models/model.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

namespace quilt::models {

/// A Sequential with a plain Tensor -> Tensor forward, so that Sequentials can nest (as
/// torchvision's Conv2dNormActivation, itself a Sequential, nests in MBConv's block and the
/// stages in features); children are named 0, 1, ... like any Sequential's.
class NestedSequentialImpl : public torch::nn::SequentialImpl {
 public:
  using SequentialImpl::SequentialImpl;
  /// Runs the children in order.
  torch::Tensor forward(torch::Tensor x) { return SequentialImpl::forward(std::move(x)); }
};
TORCH_MODULE(NestedSequential);

/// torchvision.ops.SqueezeExcitation with SiLU and Sigmoid: x *
/// sigmoid(fc2(silu(fc1(avgpool(x))))), fc1/fc2 are 1x1 convs with bias.
class SqueezeExcitationImpl : public torch::nn::Module {
 public:
  /// fc1: channels -> squeeze, fc2: squeeze -> channels.
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze);
  /// x: {N, channels, H, W}; same shape out.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(SqueezeExcitation);

/// torchvision.models.efficientnet.MBConv: block = Sequential(expand 1x1 conv+BN+SiLU (when the
/// expand ratio is not 1), depthwise kxk conv+BN+SiLU, SqueezeExcitation, project 1x1 conv+BN),
/// plus the input when stride is 1 and channels are unchanged, through stochastic depth (row
/// mode: in training each sample's residual branch is dropped with probability
/// stochastic_depth_prob and the survivors scaled by 1/(1-p); identity in eval).
class MBConvImpl : public torch::nn::Module {
 public:
  /// As torchvision's MBConv(MBConvConfig(expand_ratio, kernel, stride, in, out), p).
  MBConvImpl(int64_t expand_ratio, int64_t kernel, int64_t stride, int64_t in_channels,
             int64_t out_channels, double stochastic_depth_prob);
  /// x: {N, in_channels, H, W}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential block{nullptr};
  bool use_res_connect = false;
  double stochastic_depth_prob = 0;
};
TORCH_MODULE(MBConv);

/// The head as a unit: adaptive avgpool to 1x1 -> flatten -> classifier (Dropout(0.2), Linear);
/// a view on the model's classifier.
class EfficientNetHeadImpl : public torch::nn::Module {
 public:
  /// Shares (does not copy) classifier.
  explicit EfficientNetHeadImpl(torch::nn::Sequential classifier);
  /// x: {N, 1280, H, W} -> {N, num_classes}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential classifier;
};
TORCH_MODULE(EfficientNetHead);

/// torchvision's efficientnet_b0 (width 1.0, depth 1.0, dropout 0.2, stochastic depth 0.2,
/// BatchNorm eps 1e-5). Parameters and buffers carry torchvision's names
/// (features.0.0.weight, features.1.0.block.1.fc1.bias, classifier.1.weight, ...). Initialised
/// like torchvision: conv weights kaiming_normal (fan_out), conv biases 0, BN weight 1 / bias 0,
/// Linear uniform(+-1/sqrt(out_features)) with bias 0.
class EfficientNetImpl : public ModelImpl {
 public:
  /// input_shape {C, H, W} (C input channels for features.0.0; H, W >= 1), num_classes >= 1.
  /// Throws ModelError otherwise.
  EfficientNetImpl(const Shape& input_shape, int64_t num_classes);

  torch::nn::Sequential features{nullptr};
  torch::nn::Sequential classifier{nullptr};
};
TORCH_MODULE(EfficientNet);

}  // namespace quilt::models
