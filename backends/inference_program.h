#pragma once
// Internal to backends/ (not an interface): the program a CompiledStage runs (inference.h). Its
// instructions and registers, the oneDNN formats and helpers they use, and int8 quantization.
// inference_compiler.h builds the program, inference_prims.cc makes its oneDNN primitives,
// inference_exec.cc runs it.

#include "models/model.h"

#include <ATen/core/Tensor.h>
#include <dnnl.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace quilt::backends::detail {

using models::Shape;

enum class Layout { kDense, kMkldnn };

enum class Code {
  kToMkldnn,
  kToDense,
  kConv,  // oneDNN conv on blocked tensors, BN folded, optional fused ReLU (in place)
  kAdd,   // residual add of b into a, optional ReLU
  kRelu,
  kMaxPool,        // on blocked tensors
  kAvgPool,        // adaptive average pool on blocked tensors
  kFlatten,        // dense view
  kLinear,         // dense GEMM (OpenBLAS), optional ReLU
  kBatchNorm,      // standalone eval BatchNorm2d on dense tensors
  kFallback,       // a LibTorch call (a graph node, a module): dense registers in, one out
  kUnpack,         // a dense view of a register: per-sample elements [offset, offset +
                   // numel(view)) as shape `view` (a packed tensor, a reshape), no copy
  kPack,           // dense [N, total] from several registers, flattened and concatenated
  kCat,            // channel concatenation of dense registers (UNet's skip + upsampled)
  kConvTranspose,  // dense at::conv_transpose2d
  kSilu,           // x * sigmoid(x), on blocked or dense tensors
  kSqueezeExcite,  // dense: x * sigmoid(fc2(silu(fc1(mean_hw(x))))), the 1x1 convs as GEMMs
                   // (hard_gate: relu after fc1, hardsigmoid as the gate)
  kHardswish,      // x * relu6(x + 3) / 6, on blocked or dense tensors
  // Sequence models (a ViT's [T, E] tokens per sample), dense (inference_sequence.cc):
  kDenseAdd,   // a + b (b a register, or the constant `weight` broadcast), optional ReLU
  kLayerNorm,  // over the last dimension, `weight` and `bias` (may be undefined), `eps`
  kGelu,       // exact, or the tanh approximation (`hard_gate`)
  kAttention,  // self-attention: `groups` heads, qkv projection weight/bias, output weight2/bias2
};

constexpr size_t kNumCodes = static_cast<size_t>(Code::kAttention) + 1;

/// Whether a table with one entry per Code lists them in the enum's order, so that it can be
/// indexed by the code (`static_assert(in_code_order(kTable))`).
template <typename Entry, size_t N>
constexpr bool in_code_order(const Entry (&table)[N]) {
  for (size_t i = 0; i < N; ++i)
    if (table[i].code != static_cast<Code>(i)) return false;
  return N == kNumCodes;
}

/// The op kind of `c` as OpInfo::kind names it ("conv", "to_mkldnn", ...).
const char* kind_of(Code c);

// oneDNN. Blocked registers are 1-D float tensors holding [batch, C, H, W] in the layout
// blocked_tag(C) picks; their primitives are made on first use for each batch size.
using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

/// The CPU engine all primitives run on.
dnnl::engine& cpu_engine();

/// The calling thread's oneDNN stream: two CompiledStages may run in two threads.
dnnl::stream& cpu_stream();

constexpr auto kBf16 = dnnl::memory::data_type::bf16;
constexpr auto kU8 = dnnl::memory::data_type::u8;
constexpr auto kS8 = dnnl::memory::data_type::s8;
using DataType = dnnl::memory::data_type;

// How a oneDNN op stores the blocked registers it reads (a, b) and writes, which the precision
// decides: f32 in nChw16c (fp32); bf16 in nChw16c (bf16); int8 codes in channels-last
// (int8: u8 for a register calibrated non-negative, s8 otherwise, symmetric: real = scale *
// code). Dense registers are float32, except a wire input / output in bf16 or int8 codes.
struct Format {
  DataType src = kF32, src2 = kF32, dst = kF32;
  bool channels_last = false;
  bool int8 = false;
  bool winograd = true;  // convs: let oneDNN pick Winograd where it has it
  float src_scale = 1, src2_scale = 1, dst_scale = 1;  // int8 only
};

Tag blocked_tag(int64_t channels, bool channels_last);
/// Channels per block of the layout blocked_tag(channels, channels_last) gives: all of them for
/// nhwc, 16 or 8 for nChw16c / nChw8c, 1 for nchw.
int64_t channel_block(int64_t channels, bool channels_last);
dnnl::memory::desc blocked_md(int64_t n, const Shape& s, DataType dt, bool channels_last);
dnnl::memory::desc plain_md(int64_t n, const Shape& s, DataType dt);
at::ScalarType scalar_type_of(DataType dt);
DataType dt_of(at::ScalarType t);
/// A fresh blocked register for n samples of shape s (the tags never pad channels: exactly
/// numel elements).
at::Tensor blocked_buffer(int64_t n, const Shape& s, DataType dt);
/// A register's buffer seen as `dt` (an int8 op may write u8 codes over an s8 register).
at::Tensor as_dtype(const at::Tensor& t, DataType dt);

// int8: how a register's real values map to codes (real = scale * code; u8 when the register
// was non-negative on every calibration batch, else s8 over [-127, 127]).
struct QParams {
  DataType dt = kU8;
  float scale = 1;
  bool operator==(const QParams& o) const { return dt == o.dt && scale == o.scale; }
  bool operator!=(const QParams& o) const { return !(*this == o); }
  // The zero point of the codes on the wire, which are uint8: s8 codes travel shifted by 128.
  int64_t wire_zero_point() const { return dt == kS8 ? 128 : 0; }
};

/// The codes of a register whose calibration range was [lo, hi].
QParams qparams_of(double lo, double hi);
/// Float values as codes of q (round to nearest even, saturated), as oneDNN's int8 ops write.
at::Tensor quantize(const at::Tensor& x, const QParams& q);
at::Tensor dequantize(const at::Tensor& codes, const QParams& q);
/// `t`'s storage as a oneDNN memory of descriptor `md` (no copy).
dnnl::memory wrap(const dnnl::memory::desc& md, const at::Tensor& t);

/// What a kFallback instruction runs: a LibTorch call on dense float tensors (a graph node
/// through its JIT operator, a module's forward), the registers `srcs` in order, batch size n.
struct FallbackCall {
  virtual ~FallbackCall() = default;
  virtual at::Tensor run(const std::vector<at::Tensor>& srcs, int64_t n) const = 0;
};

struct Prim {
  dnnl::primitive prim;
  dnnl::memory::desc src, src2, dst;
  dnnl::memory weights, bias;  // conv: weights reordered once into the layout the conv chose
  at::Tensor bias_storage;     // int8 conv: the bias in accumulator units, which `bias` wraps
};

struct Prims {
  std::map<int64_t, Prim> by_batch;  // key: batch size * 16 + data type of the plain side
};

struct Instr {
  Code code = Code::kFallback;
  std::string name;
  int dst = -1, a = -1, b = -1;
  bool relu = false;      // fused ReLU on the op's own output
  bool in_place = false;  // kAdd / kRelu write into register a (decided by finalize())
  at::Tensor weight, bias;
  at::Tensor weight2, bias2;  // kSqueezeExcite: fc2 (weight/bias hold fc1); kAttention: out proj
  // kLinear on tokens, kAttention: the weights as oneDNN tensors [out, in] (inner products)
  at::Tensor packed, packed2;
  std::vector<int64_t> kernel, stride, padding, dilation, output_size;
  std::vector<int> srcs;      // kPack / kCat / kFallback: the registers, in order
  int64_t offset = 0;         // kUnpack: first element of the tensor within a sample
  std::vector<int64_t> view;  // kUnpack: per-sample shape of the tensor
  int64_t groups = 1;
  int64_t flops = 0;  // per sample, for OpInfo
  bool ceil_mode = false;
  bool hard_gate = false;        // kSqueezeExcite: ReLU and hardsigmoid (MobileNetV3's)
  Shape src_shape, dst_shape;    // oneDNN ops: per-sample shapes of a and dst
  std::shared_ptr<Prims> prims;  // oneDNN ops: primitives by batch size, made on demand
  Format format;                 // oneDNN ops: how blocked registers are stored (precision)
  int64_t start_dim = 1, end_dim = -1;
  double eps = 0.0;                          // kLayerNorm
  std::shared_ptr<const FallbackCall> call;  // kFallback
  std::vector<int> release;                  // registers whose last use is this instruction
};

/// A fresh instruction of `code` named `name`.
Instr op(Code code, std::string name);

// Compile-time facts about a register.
struct Reg {
  Layout layout = Layout::kDense;
  Shape shape;         // one sample, without the batch dimension
  bool owned = false;  // produced by the program into fresh memory: may be overwritten in place
  int alias_of = -1;   // a view (flatten) or possibly the input itself (fallback) of this register
};

/// A token GEMM's weight [out, in] as a oneDNN tensor, packed once (inference_sequence.cc).
at::Tensor packed_weight(const at::Tensor& w);
/// x [rows, in] (dense) times `packed` (packed_weight) plus bias: dense [rows, out].
at::Tensor inner_product(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias);

/// Runs a oneDNN instruction on batch size n: src -> dst (src2: the binary op's second input),
/// its primitive made on first use for that batch size (inference_prims.cc). Blocks.
void run_onednn(const Instr& in, int64_t n, const at::Tensor& src, const at::Tensor& dst,
                const at::Tensor* src2 = nullptr);

}  // namespace quilt::backends::detail
