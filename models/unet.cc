#include "models/unet.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/pooling.h>
#include <torch/torch.h>

namespace quilt::models {

using torch::nn::BatchNorm2d;
using torch::nn::Conv2d;
using torch::nn::Conv2dOptions;

DoubleConvImpl::DoubleConvImpl(int64_t in_channels, int64_t out_channels) {
  double_conv = register_module(
      "double_conv",
      torch::nn::Sequential(
          Conv2d(Conv2dOptions(in_channels, out_channels, 3).padding(1).bias(false)),
          BatchNorm2d(out_channels), torch::nn::ReLU(),
          Conv2d(Conv2dOptions(out_channels, out_channels, 3).padding(1).bias(false)),
          BatchNorm2d(out_channels), torch::nn::ReLU()));
}

torch::Tensor DoubleConvImpl::forward(torch::Tensor x) { return double_conv->forward(x); }

DownImpl::DownImpl(int64_t in_channels, int64_t out_channels) {
  maxpool_conv = register_module(
      "maxpool_conv", torch::nn::Sequential(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)),
                                            DoubleConv(in_channels, out_channels)));
}

torch::Tensor DownImpl::forward(torch::Tensor x) { return maxpool_conv->forward(x); }

UpImpl::UpImpl(int64_t in_channels, int64_t out_channels) {
  up = register_module(
      "up", torch::nn::ConvTranspose2d(
                torch::nn::ConvTranspose2dOptions(in_channels, in_channels / 2, 2).stride(2)));
  conv = register_module("conv", DoubleConv(in_channels, out_channels));
}

torch::Tensor UpImpl::forward(torch::Tensor x, torch::Tensor skip) {
  x = up->forward(x);
  TORCH_CHECK(x.sizes() == skip.sizes(), "Up: upsampled ", x.sizes(), " does not match skip ",
              skip.sizes());
  return conv->forward(torch::cat({skip, x}, 1));
}

OutConvImpl::OutConvImpl(int64_t in_channels, int64_t out_channels) {
  conv = register_module("conv", Conv2d(Conv2dOptions(in_channels, out_channels, 1)));
}

torch::Tensor OutConvImpl::forward(torch::Tensor x) { return conv->forward(x); }

UNetUnitImpl::UNetUnitImpl(Kind kind, std::shared_ptr<torch::nn::Module> layer,
                           std::vector<Shape> in_shapes, std::vector<Shape> out_shapes)
    : kind_(kind),
      layer_(std::move(layer)),
      in_shapes_(std::move(in_shapes)),
      out_shapes_(std::move(out_shapes)) {
  // Registered in the view only (as the other zoo views do), so that the unit's parameters
  // count; the model registers the layer under its own name.
  register_module("layer", layer_);
}

torch::Tensor UNetUnitImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> xs = unpack(x, in_shapes_);
  switch (kind_) {
    case Kind::kReplace:
      if (auto* d = layer_->as<DoubleConvImpl>()) {
        xs.back() = d->forward(xs.back());
      } else {
        xs.back() = layer_->as<OutConvImpl>()->forward(xs.back());
      }
      break;
    case Kind::kPush:
      xs.push_back(layer_->as<DownImpl>()->forward(xs.back()));
      break;
    case Kind::kMerge: {
      torch::Tensor y = layer_->as<UpImpl>()->forward(xs.back(), xs[xs.size() - 2]);
      xs.resize(xs.size() - 2);
      xs.push_back(std::move(y));
      break;
    }
  }
  return pack(xs);
}

UNetImpl::UNetImpl(const Shape& input_shape, int64_t num_classes) : ModelImpl("unet") {
  if (input_shape.size() != 3 || input_shape[0] < 1 || input_shape[1] < 16 || input_shape[2] < 16 ||
      input_shape[1] % 16 != 0 || input_shape[2] % 16 != 0) {
    throw ModelError(fmt::format(
        "{}: input shape {} must be {{channels, height, width}} with height and width positive "
        "multiples of 16 (four 2x2 poolings), e.g. 3x256x256 or 3x32x32",
        arch_, to_string(input_shape)));
  }
  if (num_classes < 1) {
    throw ModelError(fmt::format("{}: num_classes {} must be >= 1", arch_, num_classes));
  }
  input_shape_ = input_shape;
  num_classes_ = num_classes;
  const int64_t h = input_shape[1], w = input_shape[2];

  inc = register_module("inc", DoubleConv(input_shape[0], 64));
  down1 = register_module("down1", Down(64, 128));
  down2 = register_module("down2", Down(128, 256));
  down3 = register_module("down3", Down(256, 512));
  down4 = register_module("down4", Down(512, 1024));
  up1 = register_module("up1", Up(1024, 512));
  up2 = register_module("up2", Up(512, 256));
  up3 = register_module("up3", Up(256, 128));
  up4 = register_module("up4", Up(128, 64));
  outc = register_module("outc", OutConv(64, num_classes));

  // The live tensors, oldest first, as names and shapes; each unit maps one list to the next.
  std::vector<CutTensor> live = {{"input", input_shape}};
  auto shapes = [](const std::vector<CutTensor>& ts) {
    std::vector<Shape> out;
    for (const auto& t : ts) out.push_back(t.shape);
    return out;
  };
  auto unit = [&](const std::string& name, UNetUnitImpl::Kind kind,
                  std::shared_ptr<torch::nn::Module> layer, const Shape& out) {
    std::vector<CutTensor> next = live;
    if (kind == UNetUnitImpl::Kind::kReplace) {
      next.back() = {name, out};
    } else if (kind == UNetUnitImpl::Kind::kPush) {
      next.push_back({name, out});
    } else {
      next.resize(next.size() - 2);
      next.push_back({name, out});
    }
    add_unit(name,
             torch::nn::AnyModule(UNetUnit(kind, std::move(layer), shapes(live), shapes(next))));
    live = std::move(next);
  };
  using Kind = UNetUnitImpl::Kind;
  unit("inc", Kind::kReplace, inc.ptr(), {64, h, w});
  add_cut("after_inc", live);
  const std::array<Down, 4> downs = {down1, down2, down3, down4};
  for (int i = 0; i < 4; ++i) {
    const int64_t f = int64_t{2} << i;  // 2, 4, 8, 16
    unit(fmt::format("down{}", i + 1), Kind::kPush, downs[i].ptr(), {128 << i, h / f, w / f});
    add_cut(fmt::format("after_down{}", i + 1), live);
  }
  const std::array<Up, 4> ups = {up1, up2, up3, up4};
  for (int i = 0; i < 4; ++i) {
    const int64_t f = int64_t{8} >> i;  // 8, 4, 2, 1
    unit(fmt::format("up{}", i + 1), Kind::kMerge, ups[i].ptr(), {512 >> i, h / f, w / f});
    add_cut(fmt::format("after_up{}", i + 1), live);
  }
  unit("outc", Kind::kReplace, outc.ptr(), {num_classes, h, w});
  finish();
}

}  // namespace quilt::models
