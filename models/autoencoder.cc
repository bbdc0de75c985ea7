#include "models/autoencoder.h"

#include "common/autoencoder_rate.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

namespace quilt::models {

void validate(const AutoencoderOptions& options) {
  if (!common::valid_rate(options.rate)) {
    throw ModelError(fmt::format(
        "invalid autoencoder rate R = {}: R must be a finite number >= 1 (1 = no autoencoder)",
        options.rate));
  }
  if (!common::valid_kernel(options.kernel)) {
    throw ModelError(fmt::format(
        "invalid autoencoder kernel {}: the kernel must be odd and >= 1 (1, 3, 5, ...) so that "
        "\"same\" padding keeps the spatial size",
        options.kernel));
  }
}

int64_t encoded_channels(int64_t channels, double rate) {
  validate(AutoencoderOptions{rate, 1});
  if (channels < 1) {
    throw ModelError(fmt::format("cannot encode {} channels: need at least 1", channels));
  }
  return common::encoded_channels(channels, rate);
}

double effective_rate(int64_t channels, double rate) {
  return static_cast<double>(channels) / static_cast<double>(encoded_channels(channels, rate));
}

size_t coded_dim(const Shape& shape) {
  if (shape.empty() || shape.size() > 3) {
    throw ModelError(
        fmt::format("cannot put an autoencoder on a tensor of shape {}: it needs {{features}}, "
                    "{{tokens, features}} or {{channels, height, width}}",
                    to_string(shape)));
  }
  return shape.size() == 2 ? 1 : 0;
}

Shape encoded_shape(const Shape& shape, double rate) {
  const size_t d = coded_dim(shape);
  Shape out = shape;
  out[d] = encoded_channels(shape[d], rate);
  return out;
}

AutoencoderImpl::AutoencoderImpl(const Shape& shape, const AutoencoderOptions& options)
    : shape_(shape), options_(options) {
  validate(options);
  code_shape_ = encoded_shape(shape, options.rate);
  const size_t d = coded_dim(shape_);
  const int64_t c = shape_[d], code = code_shape_[d];
  if (shape_.size() == 3) {
    using torch::nn::Conv2dOptions;
    const int64_t k = options.kernel;
    encoder_ = torch::nn::AnyModule(register_module(
        "encoder", torch::nn::Conv2d(Conv2dOptions(c, code, k).padding(k / 2).bias(true))));
    decoder_ = torch::nn::AnyModule(register_module(
        "decoder", torch::nn::Conv2d(Conv2dOptions(code, c, k).padding(k / 2).bias(true))));
  } else {
    encoder_ = torch::nn::AnyModule(register_module("encoder", torch::nn::Linear(c, code)));
    decoder_ = torch::nn::AnyModule(register_module("decoder", torch::nn::Linear(code, c)));
  }
}

torch::Tensor AutoencoderImpl::encode(torch::Tensor x) {
  return encoder_.forward<torch::Tensor>(std::move(x));
}

torch::Tensor AutoencoderImpl::decode(torch::Tensor x) {
  return decoder_.forward<torch::Tensor>(std::move(x));
}

}  // namespace quilt::models
