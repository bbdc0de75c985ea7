#pragma once
// Convolution for training at small feature maps. A convolution whose output is a single pixel
// (ResNet's last stage at 28x28 or 32x32 inputs: 3x3 convolutions on 1x1 or 2x2 maps) only ever
// multiplies the kernel taps that land inside the input; the rest meet zero padding. oneDNN's
// backward pass for such a layer runs one small GEMM per sample (batch 64: 64 rank-1 updates of
// a 512x4608 weight gradient) and costs about seven forward passes. As a matrix product over the
// taps that land inside the input the layer is one GEMM per direction, with the same result.

#include <torch/nn/modules/conv.h>
#include <torch/types.h>

namespace quilt::models {

/// True when conv2d_forward() takes the single-GEMM path for `conv` on inputs of shape `input`
/// ({N, C, H, W}): groups 1, dilation 1, zero padding, and an output of 1x1 pixels.
bool conv2d_is_gemm(const torch::nn::Conv2dImpl& conv, torch::IntArrayRef input);

/// `conv` applied to x ({N, C, H, W}): the same values and gradients (to float rounding) as
/// conv->forward(x), through one matrix product over the in-range taps when conv2d_is_gemm()
/// holds (weight gradients of taps that only meet padding are exactly 0, as in the convolution),
/// through conv->forward(x) otherwise or while tracing (a trace records the conv). Differentiable;
/// shares conv's parameters.
torch::Tensor conv2d_forward(torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

}  // namespace quilt::models
