#pragma once
// The data-projection layers the paper interposes at a cut: one encoder layer and one decoder
// layer. Conv2d C -> ceil(C/R) -> C for feature maps (kernel configurable, "same" padding),
// Linear for 1-D tensors and over the last dimension of 2-D ones (token sequences).

#include "common/chained_setter.h"
#include "models/model.h"

#include <torch/nn/modules/container/any.h>

#include <memory>

namespace quilt::models {

/// How to build an autoencoder. rate = 1 means no autoencoder (the baseline).
struct AutoencoderOptions {
  double rate = 1.0;   ///< requested reduction rate R (finite, >= 1)
  int64_t kernel = 1;  ///< encoder/decoder kernel size for feature maps (odd, >= 1)

  /// Chained setters.
  QUILT_CHAINED_SETTER(AutoencoderOptions, double, rate)
  QUILT_CHAINED_SETTER(AutoencoderOptions, int64_t, kernel)
};

/// Throws ModelError unless `options` is valid: rate finite and >= 1, kernel odd and >= 1.
void validate(const AutoencoderOptions& options);

/// Channels (or features) of the encoded tensor: ceil(C / R), at least 1 (so R > C leaves one
/// channel). A quotient within 1e-9 of an integer counts as that integer. Throws ModelError
/// for channels < 1 or an invalid rate.
int64_t encoded_channels(int64_t channels, double rate);

/// The reduction actually achieved: C / ceil(C / R) (<= R). This is what results record.
double effective_rate(int64_t channels, double rate);

/// The dimension of a per-sample shape that an autoencoder shrinks: the channels of {C, H, W},
/// the features of {F}, the last (feature) dimension of {T, F} (a sequence, e.g. a ViT's
/// tokens). Throws ModelError for other ranks.
size_t coded_dim(const Shape& shape);

/// Shape of the encoded tensor for a cut of shape `shape` ({F}, {T, F} or {C, H, W}): the
/// dimension coded_dim() becomes encoded_channels(). Throws ModelError for other ranks.
Shape encoded_shape(const Shape& shape, double rate);

/// Encoder + decoder for one crossing tensor. For {C, H, W}: encoder = Conv2d(C, ceil(C/R),
/// kernel, padding kernel/2, bias), decoder = Conv2d(ceil(C/R), C, same). For {F}: Linear
/// layers (the kernel is ignored); for {T, F}: the same Linear layers over the last dimension,
/// applied to each of the T tokens. Registered as "encoder" and "decoder", so the parameters are
/// encoder.weight, encoder.bias, decoder.weight, decoder.bias. Initialised like PyTorch's
/// default for these layers.
class AutoencoderImpl : public torch::nn::Module {
 public:
  /// Throws ModelError if rate < 1 or not finite, kernel is even or < 1, or the shape is not
  /// 1-D, 2-D or 3-D.
  AutoencoderImpl(const Shape& shape, const AutoencoderOptions& options);
  /// {N, ...shape} -> {N, ...code_shape}.
  torch::Tensor encode(torch::Tensor x);
  /// {N, ...code_shape} -> {N, ...shape}.
  torch::Tensor decode(torch::Tensor x);
  /// decode(encode(x)): what a single-process reference of the cut computes.
  torch::Tensor forward(torch::Tensor x) { return decode(encode(std::move(x))); }

  /// Shape of one sample of the tensor at the cut ({C, H, W} or {F}).
  const Shape& shape() const { return shape_; }
  /// Shape of one encoded sample (what crosses the link).
  const Shape& code_shape() const { return code_shape_; }
  /// The options it was built with.
  const AutoencoderOptions& options() const { return options_; }
  /// Holds a torch::nn::Conv2d (3-D shapes) or a torch::nn::Linear (1-D and 2-D shapes).
  torch::nn::AnyModule& encoder() { return encoder_; }
  torch::nn::AnyModule& decoder() { return decoder_; }
  const torch::nn::AnyModule& encoder() const { return encoder_; }
  const torch::nn::AnyModule& decoder() const { return decoder_; }

 private:
  Shape shape_, code_shape_;
  AutoencoderOptions options_;
  torch::nn::AnyModule encoder_, decoder_;
};

/// Holder of AutoencoderImpl (as TORCH_MODULE(Autoencoder) would declare it), plus a
/// constructor that accepts braced lists: Autoencoder({1024, 14, 14}, {4.0, 1}).
class Autoencoder : public torch::nn::ModuleHolder<AutoencoderImpl> {
 public:
  using torch::nn::ModuleHolder<AutoencoderImpl>::ModuleHolder;
  using Impl = AutoencoderImpl;
  Autoencoder(const Shape& shape, const AutoencoderOptions& options)
      : ModuleHolder(std::make_shared<AutoencoderImpl>(shape, options)) {}
};

}  // namespace quilt::models
