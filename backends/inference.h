#pragma once
// The emulator's fast inference path: one pipeline stage of a QuiltModel compiled once into a
// flat program of oneDNN (MKLDNN) operations, tuned for one thread per process.

#include "backends/precision.h"

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace quilt::models {
class QuiltModelImpl;
}

namespace quilt::backends {

/// How a stage is compiled.
struct CompileOptions {
  /// Keep the freed activation buffers of one run() for the next (see allocation_cache.h):
  /// avoids the page faults of fresh allocations, which cost ~5% at batch 8.
  bool cache_allocations = true;
  /// With cache_allocations: back large activation buffers with transparent huge pages.
  bool huge_pages = true;
  /// Run every unit through the torch fallback (eval mode, InferenceMode): the slow reference
  /// path, for tests and comparisons.
  bool force_fallback = false;
  /// The number format of the stage (see backends/precision.h): a parameter of the same
  /// lowering onto oneDNN primitives. bf16: conv weights reordered to bf16 once, blocked
  /// activations bf16 (channels-last) end to end through oneDNN's bf16 kernels (f32
  /// accumulation, f32 bias). int8: conv weights per output channel symmetric s8, every
  /// blocked activation register per tensor symmetric (u8 where it was non-negative on
  /// `calibration`, else s8) with the range it took there; convs (ReLU and residual sums
  /// fused), adds, ReLU, pools and reorders run as oneDNN int8 primitives with output scales.
  /// In both, the dense ops (linear, batch norm, fallbacks, ...) run in float32.
  Precision precision = Precision::kFp32;
  /// int8 only, required there: float32 stage inputs [batch, in_shape...] (one tensor per
  /// calibration batch) whose activation ranges fix the quantization. The same batches give
  /// the same quantization, bit for bit.
  std::vector<at::Tensor> calibration;
  /// Whether 3x3 stride-1 convs may take oneDNN's Winograd kernel (fp32 only). The float
  /// program int8 calibrates with runs without it (direct convs, on both sides of a cut:
  /// stage_calibration_inputs too): Winograd's weight reorder costs ~0.2 s per conv here,
  /// worth paying only for a program that runs many batches.
  bool winograd = true;
  /// Whether the stage receives its input in the wire format of `precision` (bf16 values, or
  /// int8's uint8 codes: real = scale * (code - zero_point), zero point 0 or 128) rather than
  /// float32; the first stage of a pipeline gets float32.
  bool wire_input = false;
  /// Whether the stage returns its output in the wire format rather than float32; the last
  /// stage of a pipeline returns float32 (dequantized logits).
  bool wire_output = false;
};

/// One op of a compiled stage, for descriptions and per-op profiles.
struct OpInfo {
  std::string kind;   ///< "conv", "add", "relu", "max_pool", "avg_pool", "linear", "to_mkldnn",
                      ///< "to_dense", "flatten", "batch_norm", "fallback", "unpack", "pack",
                      ///< "cat", "conv_transpose", "silu", "squeeze_excite", "hardswish"
  std::string name;   ///< where it comes from ("layer3.2.conv2+bn2+relu", "decoder")
  int64_t flops = 0;  ///< floating-point operations per sample (a multiply-add counts 2); 0 for
                      ///< ops that only move or compare data
};

/// Stage `stage` of a QuiltModel compiled for inference: the decoder of the preceding cut's
/// autoencoder (if any), the base model's units [first_unit, end_unit), the encoder of the
/// following cut (if any). One compiler for every model, lowering by operation: each module's
/// forward is traced into a graph of operations (a TorchScript model's stage is its frozen graph)
/// and each node lowered by its kind (see backends/README.md). BatchNorm is folded into the
/// preceding convolution with its running statistics (eval semantics, whatever the model's
/// training flag), convs, pools, adds and activations run as oneDNN primitives (made once per
/// batch size; convs through convolution_auto, i.e. Winograd for the 3x3 stride-1 convs where
/// oneDNN picks it, weights reordered once), activations stay in oneDNN's blocked layout
/// (nChw16c) from the stage input to the stage output, ReLU is a post-op of the op before it,
/// and a residual add is a sum post-op of the conv of one operand (the conv accumulates into the
/// other's buffer). A node the compiler cannot express runs on its own through LibTorch (a graph
/// that cannot be lowered at all: its whole module, in eval mode under c10::InferenceMode);
/// fallbacks() names them. Packed inputs (cuts where several tensors cross) are unpacked into
/// views, concatenations and transposed convs run dense, and the live tensors are packed again
/// (one copy). Squeeze-excitation runs on dense tensors (a reorder to NCHW and back per block).
/// That is the fp32 program; bf16 and int8 are the same program with other data types in its
/// memory descriptors (see CompileOptions::precision): int8 first runs it in fp32 on the
/// calibration batches to find each register's range.
///
/// The weights are copied at construction: later changes to the model are not seen. Not
/// thread-safe: one thread calls run() at a time (ops may use at::get_num_threads() threads).
class CompiledStage {
 public:
  /// Compiles stage `stage` of `model` for batches of `batch_size` (other batch sizes work too).
  /// Puts the stage's modules into eval mode (to trace them). Throws BoardError if `stage` is
  /// out of range.
  CompiledStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
                const CompileOptions& options = {});
  ~CompiledStage();
  CompiledStage(CompiledStage&&) noexcept;
  CompiledStage& operator=(CompiledStage&&) noexcept;

  /// Runs one batch: `input` is a tensor [batch, in_shape...] of input_dtype() (any layout, not
  /// modified); returns a new contiguous dense tensor [batch, out_shape...] of output_dtype()
  /// that the caller owns. Blocks. In fp32, matches QuiltModelImpl::forward_stage in eval mode
  /// to float rounding.
  at::Tensor run(const at::Tensor& input);

  /// Like run(), and adds the wall time of each op to `op_seconds` (resized to ops().size()).
  at::Tensor run_profiled(const at::Tensor& input, std::vector<double>& op_seconds);

  /// The ops of the program, in execution order.
  std::vector<OpInfo> ops() const;
  /// The ops that run through the fallback ("layer1.0.mul1 (no lowering for aten::mul)"), in
  /// program order (empty when the whole stage is on the fast path).
  const std::vector<std::string>& fallbacks() const;
  /// One line: "37 ops: 20 conv (BN folded), 6 add, ...; no fallback".
  std::string summary() const;

  /// The dtype run() takes / returns: float32, or the wire format of options().precision
  /// (bfloat16; uint8 codes for int8) where options().wire_input / wire_output say so.
  at::ScalarType input_dtype() const;
  at::ScalarType output_dtype() const;
  /// int8: the scale and zero point of the input / output codes (real = scale * (code - zp)),
  /// fixed by calibration; {1, 0} in other precisions.
  std::pair<double, int64_t> input_quantization() const;
  std::pair<double, int64_t> output_quantization() const;
  Precision precision() const;

  /// Shape of one input / output sample of the stage.
  const std::vector<int64_t>& in_shape() const;
  const std::vector<int64_t>& out_shape() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The float32 inputs of stage `stage` for the model inputs `inputs` (each [batch, in_shape...]
/// of the model): stages 0..stage-1 run through fp32 CompiledStages (the program int8
/// calibrates with), the way every rank of a pipeline computes them, so that each rank derives
/// the same int8 calibration for a cut (the output register of stage k and the input of stage
/// k+1 see the same float values). Blocks.
std::vector<at::Tensor> stage_calibration_inputs(models::QuiltModelImpl& model, size_t stage,
                                                 const std::vector<at::Tensor>& inputs);

/// The whole model in one process the way a pipeline in `precision` computes it: every stage
/// compiled in that precision (int8: calibrated on `calibration`, model inputs), wire-format
/// tensors between them. The reference of the pipeline's output check in bf16 / int8. Returns
/// float32 outputs for each of `inputs`. Blocks.
std::vector<at::Tensor> run_in_precision(models::QuiltModelImpl& model, Precision precision,
                                         const std::vector<at::Tensor>& calibration,
                                         const std::vector<at::Tensor>& inputs);

}  // namespace quilt::backends
