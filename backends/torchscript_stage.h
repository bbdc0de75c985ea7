#pragma once
// The emulator's path for TorchScript models (models/torchscript.h): a stage's segments as one
// graph, frozen and passed through LibTorch's torch::jit::optimize_for_inference.

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quilt::models {
class QuiltModelImpl;
}

namespace quilt::backends {

/// Whether `model`'s base model is a TorchScript model (arch "torchscript").
bool is_torchscript(const models::QuiltModelImpl& model);

/// Stage `stage` of a QuiltModel over a TorchScript model, compiled for inference: the base
/// model's units [first_unit, end_unit) as one TorchScript graph, frozen and optimised by
/// torch::jit::optimize_for_inference (conv-BN folding, oneDNN layouts where it chooses them);
/// the decoder of the preceding cut's autoencoder and the encoder of the following one run as
/// LibTorch modules under c10::InferenceMode. The weights are copied at construction. Not
/// thread-safe: one thread calls run() at a time.
class TorchScriptStage {
 public:
  /// Throws BoardError if `stage` is out of range or the base model is not TorchScript.
  TorchScriptStage(models::QuiltModelImpl& model, size_t stage);
  ~TorchScriptStage();
  TorchScriptStage(TorchScriptStage&&) noexcept;
  TorchScriptStage& operator=(TorchScriptStage&&) noexcept;

  /// Runs one batch [batch, in_shape...] (not modified); returns a new contiguous float tensor
  /// [batch, out_shape...]. Blocks. Matches QuiltModelImpl::forward_stage in eval mode to float
  /// rounding.
  at::Tensor run(const at::Tensor& input);
  /// Shape of one input / output sample of the stage (packed where several tensors cross).
  const std::vector<int64_t>& in_shape() const;
  const std::vector<int64_t>& out_shape() const;
  /// One line: "TorchScript stage: 83 graph nodes after optimize_for_inference".
  std::string summary() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quilt::backends
