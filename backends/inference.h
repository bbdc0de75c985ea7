#pragma once
// The emulator's fast inference path: one pipeline stage of a QuiltModel compiled once into a
// flat program of oneDNN (MKLDNN) operations, tuned for one thread per process.

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
};

/// One op of a compiled stage, for descriptions and per-op profiles.
struct OpInfo {
  std::string kind;   ///< "conv", "add", "relu", "max_pool", "avg_pool", "linear", "to_mkldnn",
                      ///< "to_dense", "flatten", "batch_norm", "fallback", "unpack", "pack",
                      ///< "cat", "conv_transpose", "silu", "squeeze_excite"
  std::string name;   ///< where it comes from ("layer3.2.conv2+bn2+relu", "decoder")
  int64_t flops = 0;  ///< floating-point operations per sample (a multiply-add counts 2); 0 for
                      ///< ops that only move or compare data
};

/// Stage `stage` of a QuiltModel compiled for inference: the decoder of the preceding cut's
/// autoencoder (if any), the base model's units [first_unit, end_unit), the encoder of the
/// following cut (if any). BatchNorm is folded into the preceding convolution with its running
/// statistics (eval semantics, whatever the model's training flag), convs, pools, adds and
/// activations run as oneDNN primitives (made once per batch size; convs through
/// convolution_auto, i.e. Winograd for the 3x3 stride-1 convs where oneDNN picks it, weights
/// reordered once), activations stay in oneDNN's blocked layout (nChw16c) from the stage input
/// to the stage output, ReLU is a post-op of the op before it, and a residual add is a sum
/// post-op of the conv before it (the conv accumulates into the identity buffer). A module the
/// compiler does not know runs through its own forward() in eval mode under c10::InferenceMode
/// (correct, slower); fallbacks() names them. UNet's units and the codecs of cuts with several
/// tensors compile too: packed inputs are unpacked into views, the skip concatenation and
/// transposed convs run dense, and the live tensors are packed again (one copy). EfficientNet's
/// MBConv blocks compile to folded convs (depthwise ones too) on blocked tensors, SiLU as x *
/// sigmoid(x) on them, and squeeze-excitation on dense tensors (a reorder to NCHW and back per
/// block).
///
/// The weights are copied at construction: later changes to the model are not seen. Not
/// thread-safe: one thread calls run() at a time (ops may use at::get_num_threads() threads).
class CompiledStage {
 public:
  /// Compiles stage `stage` of `model` for batches of `batch_size` (other batch sizes work too).
  /// Puts the modules that fall back into eval mode. Throws BoardError if `stage` is out of
  /// range.
  CompiledStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
                const CompileOptions& options = {});
  ~CompiledStage();
  CompiledStage(CompiledStage&&) noexcept;
  CompiledStage& operator=(CompiledStage&&) noexcept;

  /// Runs one batch: `input` is a float tensor [batch, in_shape...] (any layout, not modified);
  /// returns a new contiguous dense float tensor [batch, out_shape...] that the caller owns.
  /// Blocks. Matches QuiltModelImpl::forward_stage in eval mode to float rounding.
  at::Tensor run(const at::Tensor& input);

  /// Like run(), and adds the wall time of each op to `op_seconds` (resized to ops().size()).
  at::Tensor run_profiled(const at::Tensor& input, std::vector<double>& op_seconds);

  /// The ops of the program, in execution order.
  std::vector<OpInfo> ops() const;
  /// Type names of the modules that run through the fallback, in program order (empty when the
  /// whole stage is on the fast path).
  const std::vector<std::string>& fallbacks() const;
  /// One line: "37 ops: 20 conv (BN folded), 6 add, ...; no fallback".
  std::string summary() const;

  /// Shape of one input / output sample of the stage.
  const std::vector<int64_t>& in_shape() const;
  const std::vector<int64_t>& out_shape() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quilt::backends
