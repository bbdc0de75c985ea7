#pragma once
// Internal to backends/: the second program behind CompiledStage, for bf16 and int8.
//
// Why two programs: fp32 runs inference.cc's own program, nChw16c float buffers through raw
// oneDNN primitives (convolution_auto, ReLU and residual adds fused as post-ops), which is
// faster than ATen's MKLDNN tensors but float-only. bf16 and int8 were built on the ATen path
// (at::mkldnn tensors in bf16; LibTorch's quantized ops for static int8 quantization) and keep
// running it here, unchanged: their reference check (run_in_precision) is bit-exact and both
// sides of a cut must calibrate on the same float numbers, which this program guarantees.
// The next step is bf16 / int8 on the raw primitives of inference.cc (bf16 memory descriptors,
// int8 with output scales and zero points), after which this file goes away.

#include "backends/inference.h"

namespace quilt::backends {

/// Stage `stage` of a QuiltModel compiled into the ATen program, in options.precision (bf16,
/// int8, or fp32 for int8's calibration inputs). The contract of each member is that of the
/// CompiledStage member of the same name; CompiledStage delegates to it for bf16 and int8.
class LowpStage {
 public:
  LowpStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
            const CompileOptions& options = {});
  ~LowpStage();
  LowpStage(LowpStage&&) noexcept;
  LowpStage& operator=(LowpStage&&) noexcept;

  at::Tensor run(const at::Tensor& input);
  at::Tensor run_profiled(const at::Tensor& input, std::vector<double>& op_seconds);
  std::vector<OpInfo> ops() const;
  const std::vector<std::string>& fallbacks() const;
  std::string summary() const;
  at::ScalarType input_dtype() const;
  at::ScalarType output_dtype() const;
  std::pair<double, int64_t> input_quantization() const;
  std::pair<double, int64_t> output_quantization() const;
  Precision precision() const;
  const std::vector<int64_t>& in_shape() const;
  const std::vector<int64_t>& out_shape() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quilt::backends
