#pragma once
// UNet (Ronneberger et al. 2015) in the layout of the widespread PyTorch implementation
// (milesial/Pytorch-UNet, bilinear=False), with its module names, so its state_dict loads:
// inc = DoubleConv(C, 64); down1..down4 = MaxPool2d(2) + DoubleConv (128, 256, 512, 1024);
// up1..up4 = ConvTranspose2d(c, c/2, 2, stride 2), concat [skip, upsampled], DoubleConv
// (512, 256, 128, 64); outc = Conv2d(64, classes, 1). DoubleConv = (conv3x3 pad 1 no bias, BN,
// ReLU) x 2. Parameter names: inc.double_conv.0.weight, down1.maxpool_conv.1.double_conv.0.weight,
// up1.up.weight, up1.conv.double_conv.3.weight, outc.conv.bias, ...
//
// Units: inc, down1..down4, up1..up4, outc; a cut after each but outc. Inside the U several
// tensors are live (the skips the expansive path still needs), so those cuts carry them all in
// the packed form of model.h, named after the unit that produced each, oldest first:
//   after_inc    inc                                 after_up1  inc down1 down2 up1
//   after_down1  inc down1                           after_up2  inc down1 up2
//   after_down2  inc down1 down2                     after_up3  inc up3
//   after_down3  inc down1 down2 down3               after_up4  up4
//   after_down4  inc down1 down2 down3 down4
// Units between packed cuts take and return the packed batch [N, total]: each unpacks views
// (no copy), runs its layer, and packs the live tensors again (one copy of all of them per unit
// boundary; that is the price of a single tensor per pipeline link).
//
// Input {C, H, W} with H and W multiples of 16 (the original pads odd sizes inside Up; this one
// refuses them). Output: {classes, H, W} per-pixel logits.

#include "models/model.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

namespace quilt::models {

/// (conv3x3 pad 1 no bias => BN => ReLU) x 2, as Sequential double_conv (indices 0..5).
class DoubleConvImpl : public torch::nn::Module {
 public:
  DoubleConvImpl(int64_t in_channels, int64_t out_channels);
  /// {N, in, H, W} -> {N, out, H, W}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential double_conv{nullptr};
};
TORCH_MODULE(DoubleConv);

/// maxpool_conv = Sequential(MaxPool2d(2), DoubleConv(in, out)).
class DownImpl : public torch::nn::Module {
 public:
  DownImpl(int64_t in_channels, int64_t out_channels);
  /// {N, in, H, W} -> {N, out, H/2, W/2}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential maxpool_conv{nullptr};
};
TORCH_MODULE(Down);

/// up = ConvTranspose2d(in, in/2, 2, stride 2); conv = DoubleConv(in, out) on cat([skip, up(x)]).
class UpImpl : public torch::nn::Module {
 public:
  UpImpl(int64_t in_channels, int64_t out_channels);
  /// x: {N, in, H, W}, skip: {N, in/2, 2H, 2W} -> {N, out, 2H, 2W}.
  torch::Tensor forward(torch::Tensor x, torch::Tensor skip);
  torch::nn::ConvTranspose2d up{nullptr};
  DoubleConv conv{nullptr};
};
TORCH_MODULE(Up);

/// conv = Conv2d(in, out, 1) with bias.
class OutConvImpl : public torch::nn::Module {
 public:
  OutConvImpl(int64_t in_channels, int64_t out_channels);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(OutConv);

/// One UNet unit as a view on the model's layer: takes the live tensors (packed when several),
/// applies its layer and returns the live tensors after it (packed when several).
/// kReplace (inc, outc): the last tensor becomes layer(last). kPush (down): layer(last) is
/// appended. kMerge (up): the last two (skip, x) become up(x, skip).
class UNetUnitImpl : public torch::nn::Module {
 public:
  enum class Kind { kReplace, kPush, kMerge };
  /// `layer` is a DoubleConv, Down, Up or OutConv of the model (shared); in_shapes the live
  /// tensors it receives, in packed order.
  UNetUnitImpl(Kind kind, std::shared_ptr<torch::nn::Module> layer, std::vector<Shape> in_shapes,
               std::vector<Shape> out_shapes);
  /// x: [N, ...packed_shape(in_shapes)] -> [N, ...packed_shape(out_shapes)].
  torch::Tensor forward(torch::Tensor x);

  Kind kind() const { return kind_; }
  const std::shared_ptr<torch::nn::Module>& layer() const { return layer_; }
  const std::vector<Shape>& in_shapes() const { return in_shapes_; }
  const std::vector<Shape>& out_shapes() const { return out_shapes_; }

 private:
  Kind kind_;
  std::shared_ptr<torch::nn::Module> layer_;
  std::vector<Shape> in_shapes_, out_shapes_;
};
TORCH_MODULE(UNetUnit);

/// milesial/Pytorch-UNet's UNet(n_channels = input C, n_classes = num_classes, bilinear=False),
/// 31,037,698 parameters for 3 -> 2. Initialised with LibTorch's (= PyTorch's) default layer
/// init, as the original.
class UNetImpl : public ModelImpl {
 public:
  /// input_shape {C, H, W} with H, W positive multiples of 16; num_classes >= 1. Throws
  /// ModelError otherwise.
  UNetImpl(const Shape& input_shape, int64_t num_classes);

  DoubleConv inc{nullptr};
  Down down1{nullptr}, down2{nullptr}, down3{nullptr}, down4{nullptr};
  Up up1{nullptr}, up2{nullptr}, up3{nullptr}, up4{nullptr};
  OutConv outc{nullptr};
};
TORCH_MODULE(UNet);

}  // namespace quilt::models
