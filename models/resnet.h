#pragma once
// ResNet-18 and ResNet-50, layer for layer as torchvision defines them (same module names, so a
// torchvision state_dict loads). Units, one per residual block: stem (conv1, bn1, relu,
// maxpool), layer1.0, layer1.1, ..., layer4.<last> (each one BasicBlock or Bottleneck, named as
// torchvision names the block), head (avgpool, flatten, fc). A cut follows every unit but the
// head: after_stem; after_layerN.i after block i of stage N when it is not the stage's last; and
// after_layerN after the last block of stage N (the stage boundaries keep their names; the
// paper's "between stage 3 and 4" of ResNet-50 is after_layer3). ResNet-50 has 18 units and 17
// cuts, ResNet-18 10 units and 9 cuts.

#include "models/model.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

namespace quilt::models {

/// torchvision.models.resnet.BasicBlock (expansion 1): conv3x3(stride)-bn-relu-conv3x3-bn, plus
/// the identity or downsample, then relu.
class BasicBlockImpl : public torch::nn::Module {
 public:
  /// Output channels = planes; downsample = Sequential(conv1x1(inplanes, planes, stride), bn).
  BasicBlockImpl(int64_t inplanes, int64_t planes, int64_t stride, bool downsample);
  /// Runs the block; x: {N, inplanes, H, W}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};  ///< conv1x1 + bn, or null
};
TORCH_MODULE(BasicBlock);

/// torchvision.models.resnet.Bottleneck (expansion 4, stride on the 3x3 conv as in v1.5).
class BottleneckImpl : public torch::nn::Module {
 public:
  /// Output channels = 4 * planes; downsample = Sequential(conv1x1(inplanes, 4 * planes,
  /// stride), bn).
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, bool downsample);
  /// Runs the block; x: {N, inplanes, H, W}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};  ///< conv1x1 + bn, or null
};
TORCH_MODULE(Bottleneck);

/// The stem as a unit: conv1 -> bn1 -> relu -> maxpool (a view on the model's layers).
class ResNetStemImpl : public torch::nn::Module {
 public:
  /// Shares (does not copy) the given layers.
  ResNetStemImpl(torch::nn::Conv2d conv1, torch::nn::BatchNorm2d bn1, torch::nn::MaxPool2d maxpool);
  /// x: {N, C, H, W} input images.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::MaxPool2d maxpool;
};
TORCH_MODULE(ResNetStem);

/// The head as a unit: adaptive avgpool to 1x1 -> flatten -> fc (a view on the model's layers).
class ResNetHeadImpl : public torch::nn::Module {
 public:
  /// Shares (does not copy) fc.
  explicit ResNetHeadImpl(torch::nn::Linear fc);
  /// x: {N, C, H, W} features -> {N, num_classes} logits.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Linear fc;
};
TORCH_MODULE(ResNetHead);

/// torchvision's resnet18 / resnet50 (v1.5). Parameters and buffers carry torchvision's names
/// (conv1.weight, bn1.running_mean, layer1.0.downsample.0.weight, fc.bias, ...), so
/// load_state_dict() reads a torchvision state_dict. Initialised like torchvision: conv weights
/// kaiming_normal (fan_out, relu), BN weight 1 and bias 0, fc PyTorch's default.
class ResNetImpl : public ModelImpl {
 public:
  /// depth 18 or 50. input_shape {C, H, W}: conv1 takes C input channels (a model with C != 3,
  /// e.g. {1, 28, 28} for Fashion-MNIST, cannot load ImageNet weights: conv1.weight's shape
  /// differs). num_classes >= 1 (fc's output). width in (0, 4] multiplies the channels of the
  /// stem and of every stage (64, 128, 256, 512 planes), each rounded to the nearest integer and
  /// at least 1; 1.0 is torchvision's model exactly. Throws ModelError for anything else.
  ResNetImpl(int depth, const Shape& input_shape, int64_t num_classes, double width = 1.0);
  /// 18 or 50.
  int depth() const { return depth_; }
  /// The channel multiplier the model was built with (1.0 = torchvision's widths).
  double width() const { return width_; }
  /// Channels of `planes` (64, 128, 256 or 512 in torchvision) at this width: round(planes *
  /// width), at least 1.
  static int64_t scaled_planes(int64_t planes, double width);

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  torch::nn::MaxPool2d maxpool{nullptr};
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  // The stem, the four stages and fc, registered under torchvision's names.
  void build_layers();
  // The units (stem, one per residual block, head) and the cuts between them.
  void add_units();

  int depth_ = 0;
  double width_ = 1.0;
};
TORCH_MODULE(ResNet);

}  // namespace quilt::models
