#include "backends/inference.h"

#include "backends/allocation_cache.h"
#include "backends/board.h"
#include "models/autoencoder.h"
#include "models/efficientnet.h"
#include "models/mlp.h"
#include "models/model.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/unet.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>

// Design notes, from measurements with LibTorch 1.13.1 (Debian, oneDNN 2.6.3) at one thread,
// ResNet-50 batch 8 on an AVX-512 CPU:
// - Convolutions on blocked (nChw16c) tensors with weights reordered once are the kernels
//   PyTorch's optimize_for_inference uses (through at::mkldnn_convolution, 105-135 GFLOP/s).
//   at::conv2d would send 1x1 convs at one thread through im2col + GEMM, much slower.
// - Through ATen, ReLU cannot be fused into those convs (in-place ReLU cost ~1% of the stage, the
//   residual add ~4%), and the conv algorithm is always direct. Channels-last (brgconv) is
//   1.3-1.6x faster than nChw16c for the 1x1 convs of layer1 but has no Winograd 3x3: over a
//   block the two come out about even, so everything stays nChw16c.
// - What the fast path gains over optimize_for_inference is memory: activations are cached
//   between runs on 2 MiB transparent huge pages (allocation_cache.h), which removes page faults
//   and TLB misses worth 5-8% of stage 0.
// - The blocked tensors are ours, not ATen's: plain float buffers in oneDNN's nChw16c (nChw8c,
//   nchw) layout, run through oneDNN primitives created once per batch size (the same libdnnl
//   that LibTorch links). That reaches what ATen does not expose: 3x3 stride-1 convs through
//   oneDNN's algorithm choice (convolution_auto picks its Winograd F(4,3) kernel, 1.5-1.8x the
//   direct kernel's rate at one thread on AVX-512), ReLU fused as a post-op, and the residual
//   add fused into the conv before it as a sum post-op (the conv accumulates into the identity
//   buffer), which removes a full read-read-write pass over the activation per block.

namespace quilt::backends {
namespace {

using models::Shape;
namespace nn = torch::nn;

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
  kFallback,       // the module's own forward, dense in and out
  kUnpack,         // one tensor of a packed batch: a dense view (narrow + view), no copy
  kPack,           // dense [N, total] from several registers, flattened and concatenated
  kCat,            // channel concatenation of dense registers (UNet's skip + upsampled)
  kConvTranspose,  // dense at::conv_transpose2d
  kSilu,           // x * sigmoid(x), on blocked or dense tensors
  kSqueezeExcite,  // dense: x * sigmoid(fc2(silu(fc1(mean_hw(x))))), the 1x1 convs as GEMMs
};

const char* kind_of(Code c) {
  switch (c) {
    case Code::kToMkldnn:
      return "to_mkldnn";
    case Code::kToDense:
      return "to_dense";
    case Code::kConv:
      return "conv";
    case Code::kAdd:
      return "add";
    case Code::kRelu:
      return "relu";
    case Code::kMaxPool:
      return "max_pool";
    case Code::kAvgPool:
      return "avg_pool";
    case Code::kFlatten:
      return "flatten";
    case Code::kLinear:
      return "linear";
    case Code::kBatchNorm:
      return "batch_norm";
    case Code::kFallback:
      return "fallback";
    case Code::kUnpack:
      return "unpack";
    case Code::kPack:
      return "pack";
    case Code::kCat:
      return "cat";
    case Code::kConvTranspose:
      return "conv_transpose";
    case Code::kSilu:
      return "silu";
    case Code::kSqueezeExcite:
      return "squeeze_excite";
  }
  return "?";
}

// oneDNN. Blocked registers are 1-D float tensors holding [batch, C, H, W] in the layout
// blocked_tag(C) picks; their primitives are made on first use for each batch size.
using Tag = dnnl::memory::format_tag;
constexpr auto kF32 = dnnl::memory::data_type::f32;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One stream per thread: two CompiledStages may run in two threads.
dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

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

Tag blocked_tag(int64_t channels, bool channels_last) {
  if (channels_last) return Tag::nhwc;
  return channels % 16 == 0 ? Tag::nChw16c : channels % 8 == 0 ? Tag::nChw8c : Tag::nchw;
}

dnnl::memory::desc blocked_md(int64_t n, const Shape& s, DataType dt, bool channels_last) {
  return {{n, s[0], s[1], s[2]}, dt, blocked_tag(s[0], channels_last)};
}

dnnl::memory::desc plain_md(int64_t n, const Shape& s, DataType dt) {
  return {{n, s[0], s[1], s[2]}, dt, Tag::nchw};
}

at::ScalarType scalar_type_of(DataType dt) {
  switch (dt) {
    case kBf16:
      return at::kBFloat16;
    case kU8:
      return at::kByte;
    case kS8:
      return at::kChar;
    default:
      return at::kFloat;
  }
}

DataType dt_of(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return kBf16;
    case at::kByte:
      return kU8;
    case at::kChar:
      return kS8;
    default:
      return kF32;
  }
}

// The tags above never pad channels: a blocked buffer has exactly numel elements.
at::Tensor blocked_buffer(int64_t n, const Shape& s, DataType dt) {
  return at::empty({n * models::numel(s)}, scalar_type_of(dt));
}

// A register's buffer seen as `dt` (an int8 op may write u8 codes over an s8 register).
at::Tensor as_dtype(const at::Tensor& t, DataType dt) {
  return t.scalar_type() == scalar_type_of(dt) ? t : t.view(scalar_type_of(dt));
}

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

QParams qparams_of(double lo, double hi) {
  QParams q;
  if (!std::isfinite(lo) || !std::isfinite(hi)) return q;
  q.dt = lo >= 0 ? kU8 : kS8;
  const double range = q.dt == kU8 ? hi / 255.0 : std::max(-lo, hi) / 127.0;
  q.scale = static_cast<float>(std::max(range, 1e-8));
  return q;
}

// Float values as codes of q (round to nearest even, saturated), as oneDNN's int8 ops write.
at::Tensor quantize(const at::Tensor& x, const QParams& q) {
  const double lo = q.dt == kU8 ? 0 : -128, hi = q.dt == kU8 ? 255 : 127;
  return at::round(x.to(at::kFloat) / q.scale).clamp_(lo, hi).to(scalar_type_of(q.dt));
}

at::Tensor dequantize(const at::Tensor& codes, const QParams& q) {
  return codes.to(at::kFloat) * q.scale;
}

dnnl::memory wrap(const dnnl::memory::desc& md, const at::Tensor& t) {
  return dnnl::memory(md, cpu_engine(), t.data_ptr());
}

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
  at::Tensor weight2, bias2;  // kSqueezeExcite: fc2 (weight/bias hold fc1)
  std::vector<int64_t> kernel, stride, padding, dilation, output_size;
  std::vector<int> srcs;      // kPack / kCat: the registers, in order
  int64_t offset = 0;         // kUnpack: first element of the tensor within a sample
  std::vector<int64_t> view;  // kUnpack: per-sample shape of the tensor
  int64_t groups = 1;
  int64_t flops = 0;  // per sample, for OpInfo
  bool ceil_mode = false;
  Shape src_shape, dst_shape;    // oneDNN ops: per-sample shapes of a and dst
  std::shared_ptr<Prims> prims;  // oneDNN ops: primitives by batch size, made on demand
  Format format;                 // oneDNN ops: how blocked registers are stored (precision)
  int64_t start_dim = 1, end_dim = -1;
  mutable nn::AnyModule module;  // forward() is not const
  std::vector<int> release;      // registers whose last use is this instruction
};

Instr op(Code code, std::string name) {
  Instr in;
  in.code = code;
  in.name = std::move(name);
  return in;
}

// Compile-time facts about a register.
struct Reg {
  Layout layout = Layout::kDense;
  Shape shape;         // one sample, without the batch dimension
  bool owned = false;  // produced by the program into fresh memory: may be overwritten in place
  int alias_of = -1;   // a view (flatten) or possibly the input itself (fallback) of this register
};

// Raised while compiling a module the fast path cannot express; the nearest enclosing module
// that has an AnyModule runs through the fallback instead.
struct Unsupported {
  std::string why;
};

std::vector<int64_t> vec2(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

int64_t pooled(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t eff = d * (k - 1) + 1;
  int64_t num = in + 2 * p - eff;
  int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  // As in PyTorch: the last window must start inside the input or the left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

std::string type_name(const nn::Module& m) { return m.name(); }

// A conv with BN folded into its weights, ready for at::mkldnn_convolution.
struct FoldedConv {
  at::Tensor weight;  // dense [out, in/groups, kh, kw]
  at::Tensor bias;    // dense [out] or undefined
  std::vector<int64_t> kernel, stride, padding, dilation;
  int64_t groups = 1;
  std::string name;
};

FoldedConv fold(const nn::Conv2dImpl& conv, const nn::BatchNorm2dImpl* bn) {
  const auto& o = conv.options;
  if (!c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()))
    throw Unsupported{"conv padding mode other than zeros"};
  if (o.transposed()) throw Unsupported{"transposed conv"};
  FoldedConv f;
  f.kernel = vec2(o.kernel_size());
  f.stride = vec2(o.stride());
  f.dilation = vec2(o.dilation());
  f.groups = o.groups();
  if (auto* p = c10::get_if<torch::ExpandingArray<2>>(&o.padding())) {
    f.padding = vec2(*p);
  } else if (c10::holds_alternative<torch::enumtype::kValid>(o.padding())) {
    f.padding = {0, 0};
  } else {  // kSame: symmetric only when the padding total is even (stride 1 by definition)
    for (int i = 0; i < 2; ++i) {
      const int64_t total = f.dilation[i] * (f.kernel[i] - 1);
      if (total % 2 != 0) throw Unsupported{"asymmetric 'same' padding"};
      f.padding.push_back(total / 2);
    }
  }
  // Fold in double so that the folded weights are as close to the reference as float allows.
  at::Tensor w = conv.weight.detach().to(at::kDouble);
  at::Tensor b = conv.bias.defined() ? conv.bias.detach().to(at::kDouble) : at::Tensor();
  if (bn != nullptr) {
    if (!bn->options.track_running_stats() || !bn->running_mean.defined())
      throw Unsupported{"BatchNorm without running statistics"};
    at::Tensor scale = (bn->running_var.detach().to(at::kDouble) + bn->options.eps()).rsqrt();
    if (bn->options.affine()) scale = scale * bn->weight.detach().to(at::kDouble);
    at::Tensor shift = -bn->running_mean.detach().to(at::kDouble) * scale;
    if (b.defined()) shift = shift + b * scale;
    if (bn->options.affine()) shift = shift + bn->bias.detach().to(at::kDouble);
    w = w * scale.view({-1, 1, 1, 1});
    b = shift;
  }
  f.weight = w.to(at::kFloat).contiguous();
  if (b.defined()) f.bias = b.to(at::kFloat).contiguous();
  return f;
}

template <typename T>
const T* as(const std::shared_ptr<nn::Module>& m) {
  return dynamic_cast<const T*>(m.get());
}

class Compiler {
 public:
  Compiler(const Shape& in_shape, bool force_fallback) : force_fallback_(force_fallback) {
    regs_.push_back(Reg{Layout::kDense, in_shape, false});
  }

  int input() const { return 0; }
  std::vector<Instr>& instrs() { return instrs_; }
  std::vector<Reg>& regs() { return regs_; }
  std::vector<std::string>& fallbacks() { return fallbacks_; }

  // Compiles one module that can fall back as a whole.
  int any(const nn::AnyModule& m, int x, const std::string& name) {
    if (!force_fallback_) {
      Checkpoint cp = checkpoint();
      try {
        return module(m.ptr(), x, name);
      } catch (const Unsupported& u) {
        restore(cp);
        note_ = fmt::format("{} ({})", name, u.why);
      }
    }
    return fallback(m, x, name);
  }

  // Compiles a list of modules run in order, fusing Conv2d + BatchNorm2d + ReLU.
  int sequence(const std::vector<nn::AnyModule>& mods, int x, const std::string& prefix) {
    for (size_t i = 0; i < mods.size(); ++i) {
      const auto& m = mods[i].ptr();
      const std::string name =
          prefix.empty() ? std::to_string(i) : prefix + "." + std::to_string(i);
      if (auto* conv = as<nn::Conv2dImpl>(m); conv != nullptr && !force_fallback_) {
        const nn::BatchNorm2dImpl* bn = nullptr;
        bool relu = false;
        size_t j = i + 1;
        if (j < mods.size() && (bn = as<nn::BatchNorm2dImpl>(mods[j].ptr())) != nullptr) ++j;
        if (j < mods.size() && is_relu(mods[j].ptr())) relu = true, ++j;
        Checkpoint cp = checkpoint();
        try {
          x = conv2d(fold(*conv, bn), x, relu, name);
          i = j - 1;
          continue;
        } catch (const Unsupported&) {
          restore(cp);  // compile the conv alone below, falling back if need be
        }
      }
      x = any(mods[i], x, name);
    }
    return x;
  }

  // Decides in-place ops and register lifetimes. `out` (the result) is converted to dense by
  // the caller, outside InferenceMode.
  int finish(int out) {
    out = fuse_residual_adds(out);
    std::vector<int> last_use = last_uses(out);
    for (size_t i = 0; i < instrs_.size(); ++i) {
      Instr& in = instrs_[i];
      if (in.code == Code::kAdd || in.code == Code::kRelu || in.code == Code::kSilu) {
        // Overwrite a only if nothing reads it later (its aliases included) and we made it.
        in.in_place = regs_[in.a].owned && last_use[in.a] == static_cast<int>(i) &&
                      (in.b < 0 || in.b != in.a);
        regs_[in.dst].owned = true;
      }
    }
    for (size_t r = 0; r < regs_.size(); ++r) {
      if (last_use[r] >= 0 && last_use[r] < static_cast<int>(instrs_.size()))
        instrs_[last_use[r]].release.push_back(static_cast<int>(r));
    }
    return out;
  }

  // Index of the instruction that reads each register last (instrs_.size() for `out`, which
  // outlives the program); a register lives as long as any view of it.
  std::vector<int> last_uses(int out) const {
    std::vector<int> last_use(regs_.size(), -1);
    for (size_t i = 0; i < instrs_.size(); ++i) {
      for (int r : {instrs_[i].a, instrs_[i].b})
        if (r >= 0) last_use[r] = static_cast<int>(i);
      for (int r : instrs_[i].srcs) last_use[r] = static_cast<int>(i);
    }
    last_use[out] = static_cast<int>(instrs_.size());
    for (size_t r = regs_.size(); r-- > 0;) {  // views come after their source
      if (regs_[r].alias_of >= 0)
        last_use[regs_[r].alias_of] = std::max(last_use[regs_[r].alias_of], last_use[r]);
    }
    return last_use;
  }

  // A residual add a + b where a comes from a conv (without ReLU) that only the add reads, and
  // b is a blocked buffer this program made that exists before that conv and that nothing reads
  // after it: the conv accumulates into b (oneDNN sum post-op, then the add's ReLU), and the add
  // disappears. Returns the result register, renamed if it was such an add.
  int fuse_residual_adds(int out) {
    for (size_t i = 0; i < instrs_.size(); ++i) {
      const Instr& add = instrs_[i];
      if (add.code != Code::kAdd) continue;
      const int a = add.a, b = add.b, sum = add.dst;
      int j = -1, made_b = -1;
      for (size_t k = 0; k < i; ++k) {
        if (instrs_[k].dst == a) j = static_cast<int>(k);
        if (instrs_[k].dst == b) made_b = static_cast<int>(k);
      }
      if (j < 0 || made_b < 0 || made_b >= j || a == b) continue;
      Instr& conv = instrs_[j];
      if (conv.code != Code::kConv || conv.relu || conv.b >= 0) continue;
      if (!regs_[b].owned || regs_[b].layout != Layout::kMkldnn) continue;
      const std::vector<int> last_use = last_uses(out);
      if (last_use[a] != static_cast<int>(i) || last_use[b] != static_cast<int>(i)) continue;
      bool read_between = false;  // b is overwritten when the conv runs
      for (size_t k = j + 1; k < i; ++k) {
        const Instr& r = instrs_[k];
        read_between = read_between || r.a == b || r.b == b ||
                       std::find(r.srcs.begin(), r.srcs.end(), b) != r.srcs.end();
      }
      if (read_between) continue;
      conv.b = b;
      conv.relu = add.relu;
      const size_t dot = add.name.rfind('.');
      conv.name += "+" + add.name.substr(dot == std::string::npos ? 0 : dot + 1);
      instrs_.erase(instrs_.begin() + static_cast<std::ptrdiff_t>(i));
      for (size_t k = i; k < instrs_.size(); ++k) {
        Instr& r = instrs_[k];
        if (r.a == sum) r.a = a;
        if (r.b == sum) r.b = a;
        for (int& src : r.srcs)
          if (src == sum) src = a;
      }
      for (Reg& reg : regs_)
        if (reg.alias_of == sum) reg.alias_of = a;
      if (out == sum) out = a;
      --i;
    }
    return out;
  }

  int mkldnn(int x) {
    if (regs_[x].layout == Layout::kMkldnn) return x;
    if (auto it = mkldnn_of_.find(x); it != mkldnn_of_.end()) return it->second;
    if (regs_[x].shape.size() != 3) throw Unsupported{"oneDNN ops need NCHW tensors"};
    Instr in = op(Code::kToMkldnn, "to_mkldnn");
    in.a = x;
    onednn(in, regs_[x].shape, regs_[x].shape);
    int y = emit(std::move(in), Reg{Layout::kMkldnn, regs_[x].shape, true});
    mkldnn_of_[x] = y;
    return y;
  }

  int dense(int x) {
    if (regs_[x].layout == Layout::kDense) return x;
    if (auto it = dense_of_.find(x); it != dense_of_.end()) return it->second;
    Instr in = op(Code::kToDense, "to_dense");
    in.a = x;
    onednn(in, regs_[x].shape, regs_[x].shape);
    int y = emit(std::move(in), Reg{Layout::kDense, regs_[x].shape, true});
    dense_of_[x] = y;
    return y;
  }

 private:
  static void onednn(Instr& in, const Shape& src, const Shape& dst) {
    in.src_shape = src;
    in.dst_shape = dst;
    in.prims = std::make_shared<Prims>();
  }

  struct Checkpoint {
    size_t instrs, regs, fallbacks;
    std::map<int, int> mkldnn_of, dense_of;
  };
  Checkpoint checkpoint() const {
    return {instrs_.size(), regs_.size(), fallbacks_.size(), mkldnn_of_, dense_of_};
  }
  void restore(const Checkpoint& cp) {
    instrs_.resize(cp.instrs);
    regs_.resize(cp.regs);
    fallbacks_.resize(cp.fallbacks);
    mkldnn_of_ = cp.mkldnn_of;
    dense_of_ = cp.dense_of;
  }

  int emit(Instr in, Reg reg) {
    in.dst = static_cast<int>(regs_.size());
    regs_.push_back(std::move(reg));
    instrs_.push_back(std::move(in));
    return instrs_.back().dst;
  }

  static bool is_relu(const std::shared_ptr<nn::Module>& m) {
    auto* r = as<nn::ReLUImpl>(m);
    return r != nullptr;
  }

  int module(const std::shared_ptr<nn::Module>& m, int x, const std::string& name) {
    if (auto* u = as<models::SequentialUnitImpl>(m)) return seq(*u->seq, x, name);
    if (auto* s = as<nn::SequentialImpl>(m)) return seq(*s, x, name);
    if (auto* s = as<models::ResNetStemImpl>(m)) {
      x = conv2d(fold(*s->conv1, s->bn1.get()), x, true, "conv1+bn1+relu");
      return max_pool(*s->maxpool, x, "maxpool");
    }
    // The shortcut first, so that the last conv of the block can accumulate into it (see
    // fuse_residual_adds).
    if (auto* b = as<models::BottleneckImpl>(m)) {
      const int identity = shortcut(b->downsample, x, name);
      int y = conv2d(fold(*b->conv1, b->bn1.get()), x, true, name + ".conv1+bn1+relu");
      y = conv2d(fold(*b->conv2, b->bn2.get()), y, true, name + ".conv2+bn2+relu");
      y = conv2d(fold(*b->conv3, b->bn3.get()), y, false, name + ".conv3+bn3");
      return add(y, identity, true, name + ".add+relu");
    }
    if (auto* b = as<models::BasicBlockImpl>(m)) {
      const int identity = shortcut(b->downsample, x, name);
      int y = conv2d(fold(*b->conv1, b->bn1.get()), x, true, name + ".conv1+bn1+relu");
      y = conv2d(fold(*b->conv2, b->bn2.get()), y, false, name + ".conv2+bn2");
      return add(y, identity, true, name + ".add+relu");
    }
    if (auto* h = as<models::ResNetHeadImpl>(m)) {
      x = adaptive_avg_pool(std::vector<int64_t>{1, 1}, x, "avgpool");
      x = flatten(1, -1, x, "flatten");
      return linear(*h->fc, x, false, "fc");
    }
    if (auto* l = as<models::LinearReluImpl>(m)) return linear(*l->fc, x, true, name);
    if (auto* u = as<models::UNetUnitImpl>(m)) return unet_unit(*u, x, name);
    if (as<nn::SiLUImpl>(m) != nullptr) return silu(x, name);
    if (auto* se = as<models::SqueezeExcitationImpl>(m)) return squeeze_excite(*se, x, name);
    if (auto* b = as<models::MBConvImpl>(m)) {
      const int y = seq(*b->block, x, name + ".block");
      // Stochastic depth is the identity in eval.
      return b->use_res_connect ? add(y, x, false, name + ".add") : y;
    }
    if (auto* h = as<models::EfficientNetHeadImpl>(m)) {
      x = adaptive_avg_pool(std::vector<int64_t>{1, 1}, x, "avgpool");
      x = flatten(1, -1, x, "flatten");
      return seq(*h->classifier, x, "classifier");
    }
    if (auto* d = as<models::DoubleConvImpl>(m))
      return seq(*d->double_conv, x, name + ".double_conv");
    if (auto* d = as<models::DownImpl>(m)) return seq(*d->maxpool_conv, x, name + ".maxpool_conv");
    if (auto* o = as<models::OutConvImpl>(m))
      return conv2d(fold(*o->conv, nullptr), x, false, name);
    if (auto* c = as<models::CutCodecImpl>(m)) return cut_codec(*c, x, name);
    if (auto* c = as<nn::Conv2dImpl>(m)) return conv2d(fold(*c, nullptr), x, false, name);
    if (auto* l = as<nn::LinearImpl>(m)) return linear(*l, x, false, name);
    if (is_relu(m)) return relu(x, name);
    if (auto* p = as<nn::MaxPool2dImpl>(m)) return max_pool(*p, x, name);
    if (auto* p = as<nn::AdaptiveAvgPool2dImpl>(m)) {
      std::vector<int64_t> size;
      for (const auto& e : *p->options.output_size()) {
        if (!e.has_value()) throw Unsupported{"adaptive pool with a free output dimension"};
        size.push_back(*e);
      }
      return adaptive_avg_pool(size, x, name);
    }
    if (auto* f = as<nn::FlattenImpl>(m))
      return flatten(f->options.start_dim(), f->options.end_dim(), x, name);
    if (auto* bn = as<nn::BatchNorm2dImpl>(m)) return batch_norm(*bn, x, name);
    if (as<nn::DropoutImpl>(m) != nullptr || as<nn::IdentityImpl>(m) != nullptr) return x;
    throw Unsupported{"no fast path for " + type_name(*m)};
  }

  // Views of the tensors of a packed register (the register itself for one shape).
  std::vector<int> unpack(int x, const std::vector<Shape>& shapes, const std::string& name) {
    if (shapes.size() == 1) {
      if (regs_[x].shape != shapes[0]) throw Unsupported{"unpacked shape mismatch"};
      return {x};
    }
    x = dense(x);
    if (regs_[x].shape != models::packed_shape(shapes)) throw Unsupported{"packed shape mismatch"};
    std::vector<int> out;
    int64_t offset = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      Instr in = op(Code::kUnpack, fmt::format("{}.unpack{}", name, i));
      in.a = x;
      in.offset = offset;
      in.view = shapes[i];
      offset += models::numel(shapes[i]);
      out.push_back(emit(std::move(in), Reg{Layout::kDense, shapes[i], false, x}));
    }
    return out;
  }

  // The packed register of `xs` (xs[0] itself for one).
  int pack(const std::vector<int>& xs, const std::string& name) {
    if (xs.size() == 1) return xs[0];
    Instr in = op(Code::kPack, name + ".pack");
    std::vector<Shape> shapes;
    for (int x : xs) {
      in.srcs.push_back(dense(x));
      shapes.push_back(regs_[x].shape);
    }
    return emit(std::move(in), Reg{Layout::kDense, models::packed_shape(shapes), true});
  }

  int unet_unit(const models::UNetUnitImpl& u, int x, const std::string& name) {
    std::vector<int> xs = unpack(x, u.in_shapes(), name);
    using Kind = models::UNetUnitImpl::Kind;
    if (u.kind() == Kind::kMerge) {
      auto* up = u.layer()->as<models::UpImpl>();
      if (up == nullptr || xs.size() < 2) throw Unsupported{"UNet merge unit without Up"};
      const int skip = xs[xs.size() - 2];
      int y = conv_transpose(*up->up, xs.back(), name + ".up");
      y = concat({skip, y}, name + ".cat");
      y = seq(*up->conv->double_conv, y, name + ".conv.double_conv");
      xs.resize(xs.size() - 2);
      xs.push_back(y);
    } else {
      const int y = module(u.layer(), xs.back(), name);
      if (u.kind() == Kind::kReplace) {
        xs.back() = y;
      } else {
        xs.push_back(y);
      }
    }
    return pack(xs, name);
  }

  int cut_codec(const models::CutCodecImpl& c, int x, const std::string& name) {
    std::vector<int> xs = unpack(x, c.in_shapes(), name);
    for (size_t i = 0; i < xs.size(); ++i) {
      auto ae = c.autoencoders()[i];
      const auto& layer = c.encodes() ? ae->encoder() : ae->decoder();
      xs[i] = module(layer.ptr(), xs[i], fmt::format("{}.{}", name, i));
    }
    return pack(xs, name);
  }

  int silu(int x, const std::string& name) {
    Instr in = op(Code::kSilu, name);
    in.a = x;
    if (regs_[x].layout == Layout::kMkldnn) onednn(in, regs_[x].shape, regs_[x].shape);
    return emit(std::move(in), Reg{regs_[x].layout, regs_[x].shape, false});
  }

  int squeeze_excite(const models::SqueezeExcitationImpl& se, int x, const std::string& name) {
    x = dense(x);
    const Shape& s = regs_[x].shape;
    const auto& o1 = se.fc1->options;
    const auto& o2 = se.fc2->options;
    auto one_by_one = [](const auto& o) {
      return (*o.kernel_size())[0] == 1 && (*o.kernel_size())[1] == 1 && o.groups() == 1 &&
             (*o.stride())[0] == 1 && (*o.stride())[1] == 1;
    };
    if (s.size() != 3 || s[0] != o1.in_channels() || !one_by_one(o1) || !one_by_one(o2) ||
        !se.fc1->bias.defined() || !se.fc2->bias.defined())
      throw Unsupported{"squeeze-excitation other than 1x1 convs with bias on NCHW"};
    Instr in = op(Code::kSqueezeExcite, name);
    in.a = x;
    // [in, out] matrices for addmm, as linear() stores them.
    in.weight = se.fc1->weight.detach().flatten(1).t().contiguous();
    in.bias = se.fc1->bias.detach().clone();
    in.weight2 = se.fc2->weight.detach().flatten(1).t().contiguous();
    in.bias2 = se.fc2->bias.detach().clone();
    return emit(std::move(in), Reg{Layout::kDense, s, true});
  }

  int conv_transpose(const nn::ConvTranspose2dImpl& c, int x, const std::string& name) {
    const auto& o = c.options;
    if (!c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()))
      throw Unsupported{"transposed conv padding mode other than zeros"};
    x = dense(x);
    const Shape& s = regs_[x].shape;
    if (s.size() != 3 || s[0] != o.in_channels())
      throw Unsupported{"transposed conv input " + models::to_string(s)};
    Instr in = op(Code::kConvTranspose, name);
    in.a = x;
    in.kernel = vec2(o.kernel_size());
    in.stride = vec2(o.stride());
    const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
    if (pad == nullptr) throw Unsupported{"transposed conv with 'valid'/'same' padding"};
    in.padding = vec2(*pad);
    in.output_size = vec2(o.output_padding());
    in.dilation = vec2(o.dilation());
    in.groups = o.groups();
    in.weight = c.weight.detach().clone();
    if (c.bias.defined()) in.bias = c.bias.detach().clone();
    Shape out = {o.out_channels()};
    for (int i = 0; i < 2; ++i)
      out.push_back((s[1 + i] - 1) * in.stride[i] - 2 * in.padding[i] +
                    in.dilation[i] * (in.kernel[i] - 1) + in.output_size[i] + 1);
    return emit(std::move(in), Reg{Layout::kDense, out, true});
  }

  int concat(const std::vector<int>& xs, const std::string& name) {
    Instr in = op(Code::kCat, name);
    Shape out;
    for (int x : xs) {
      const int d = dense(x);
      const Shape& s = regs_[d].shape;
      if (out.empty()) {
        out = s;
      } else {
        if (s.size() != 3 || s[1] != out[1] || s[2] != out[2])
          throw Unsupported{"concatenation of " + models::to_string(s)};
        out[0] += s[0];
      }
      in.srcs.push_back(d);
    }
    return emit(std::move(in), Reg{Layout::kDense, out, true});
  }

  int seq(const nn::SequentialImpl& s, int x, const std::string& name) {
    std::vector<nn::AnyModule> mods(s.begin(), s.end());
    return sequence(mods, x, name);
  }

  // The identity branch of a residual block: x, or x through the downsample conv + bn.
  int shortcut(const nn::Sequential& downsample, int x, const std::string& name) {
    int identity = x;
    if (downsample) {
      std::vector<nn::AnyModule> mods(downsample->begin(), downsample->end());
      if (mods.size() == 2 && as<nn::Conv2dImpl>(mods[0].ptr()) &&
          as<nn::BatchNorm2dImpl>(mods[1].ptr())) {
        identity =
            conv2d(fold(*as<nn::Conv2dImpl>(mods[0].ptr()), as<nn::BatchNorm2dImpl>(mods[1].ptr())),
                   x, false, name + ".downsample");
      } else {
        throw Unsupported{"downsample other than conv + bn"};
      }
    }
    return identity;
  }

  int conv2d(FoldedConv f, int x, bool relu, const std::string& name) {
    x = mkldnn(x);
    const Shape& s = regs_[x].shape;
    if (s[0] != f.weight.size(1) * f.groups)
      throw Unsupported{
          fmt::format("conv expects {} channels, gets {}", f.weight.size(1) * f.groups, s[0])};
    Shape out = {f.weight.size(0)};
    for (int i = 0; i < 2; ++i)
      out.push_back(pooled(s[1 + i], f.kernel[i], f.stride[i], f.padding[i], f.dilation[i], false));
    Instr in = op(Code::kConv, name);
    in.a = x;
    in.relu = relu;
    in.flops = 2 * models::numel(out) * (s[0] / f.groups) * f.kernel[0] * f.kernel[1];
    // Dense here; reordered once per batch size into the layout oneDNN picks for the conv.
    in.weight = f.weight;
    in.bias = f.bias;
    onednn(in, s, out);
    in.kernel = f.kernel;
    in.stride = f.stride;
    in.padding = f.padding;
    in.dilation = f.dilation;
    in.groups = f.groups;
    return emit(std::move(in), Reg{Layout::kMkldnn, out, true});
  }

  int add(int a, int b, bool relu, const std::string& name) {
    a = mkldnn(a);
    b = mkldnn(b);
    if (regs_[a].shape != regs_[b].shape)
      throw Unsupported{fmt::format("residual add of {} and {}", models::to_string(regs_[a].shape),
                                    models::to_string(regs_[b].shape))};
    Instr in = op(Code::kAdd, name);
    in.a = a;
    in.b = b;
    in.relu = relu;
    onednn(in, regs_[a].shape, regs_[a].shape);
    return emit(std::move(in), Reg{Layout::kMkldnn, regs_[a].shape, false});
  }

  int relu(int x, const std::string& name) {
    Instr in = op(Code::kRelu, name);
    in.a = x;
    if (regs_[x].layout == Layout::kMkldnn) onednn(in, regs_[x].shape, regs_[x].shape);
    return emit(std::move(in), Reg{regs_[x].layout, regs_[x].shape, false});
  }

  int max_pool(const nn::MaxPool2dImpl& p, int x, const std::string& name) {
    const auto& o = p.options;
    std::vector<int64_t> k = vec2(o.kernel_size()), s = vec2(o.stride()), pad = vec2(o.padding()),
                         d = vec2(o.dilation());
    if (d[0] != 1 || d[1] != 1) throw Unsupported{"dilated max pool"};
    x = mkldnn(x);
    const Shape& in_shape = regs_[x].shape;
    Shape out = {in_shape[0]};
    for (int i = 0; i < 2; ++i)
      out.push_back(pooled(in_shape[1 + i], k[i], s[i], pad[i], 1, o.ceil_mode()));
    Instr in = op(Code::kMaxPool, name);
    in.a = x;
    onednn(in, in_shape, out);
    in.kernel = k;
    in.stride = s;
    in.padding = pad;
    in.dilation = d;
    in.ceil_mode = o.ceil_mode();
    return emit(std::move(in), Reg{Layout::kMkldnn, out, true});
  }

  int adaptive_avg_pool(const std::vector<int64_t>& size, int x, const std::string& name) {
    if (size.size() != 2) throw Unsupported{"adaptive pool output of rank != 2"};
    x = mkldnn(x);
    const Shape& s = regs_[x].shape;
    // oneDNN pools with a fixed window: the input must divide evenly.
    if (s[1] % size[0] != 0 || s[2] % size[1] != 0)
      throw Unsupported{"adaptive pool with uneven windows"};
    Instr in = op(Code::kAvgPool, name);
    in.a = x;
    in.output_size = size;
    onednn(in, s, Shape{s[0], size[0], size[1]});
    return emit(std::move(in), Reg{Layout::kMkldnn, Shape{s[0], size[0], size[1]}, true});
  }

  int flatten(int64_t start, int64_t end, int x, const std::string& name) {
    x = dense(x);
    const Shape& s = regs_[x].shape;
    const int64_t rank = static_cast<int64_t>(s.size()) + 1;  // with the batch dimension
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    if (start != 1 || end != rank - 1) throw Unsupported{"flatten other than (1, -1)"};
    Instr in = op(Code::kFlatten, name);
    in.a = x;
    in.start_dim = start;
    in.end_dim = end;
    return emit(std::move(in), Reg{Layout::kDense, Shape{models::numel(s)}, false, x});
  }

  int linear(const nn::LinearImpl& l, int x, bool relu, const std::string& name) {
    x = dense(x);
    const Shape& s = regs_[x].shape;
    if (s.size() != 1 || s[0] != l.weight.size(1))
      throw Unsupported{
          fmt::format("linear of {} features on {}", l.weight.size(1), models::to_string(s))};
    Instr in = op(Code::kLinear, name);
    in.a = x;
    in.relu = relu;
    in.flops = 2 * l.weight.size(0) * l.weight.size(1);
    // Stored [in, out]: OpenBLAS runs x * W^T 2.5x faster at batch 8 from this layout than from
    // a transposed view of [out, in].
    in.weight = l.weight.detach().t().contiguous();
    if (l.bias.defined()) in.bias = l.bias.detach().clone();
    return emit(std::move(in), Reg{Layout::kDense, Shape{l.weight.size(0)}, true});
  }

  int batch_norm(const nn::BatchNorm2dImpl& bn, int x, const std::string& name) {
    if (!bn.options.track_running_stats() || !bn.running_mean.defined())
      throw Unsupported{"BatchNorm without running statistics"};
    x = dense(x);
    if (regs_[x].shape.size() != 3) throw Unsupported{"BatchNorm2d on a tensor that is not NCHW"};
    at::Tensor scale = (bn.running_var.detach().to(at::kDouble) + bn.options.eps()).rsqrt();
    if (bn.options.affine()) scale = scale * bn.weight.detach().to(at::kDouble);
    at::Tensor shift = -bn.running_mean.detach().to(at::kDouble) * scale;
    if (bn.options.affine()) shift = shift + bn.bias.detach().to(at::kDouble);
    Instr in = op(Code::kBatchNorm, name);
    in.a = x;
    in.weight = scale.to(at::kFloat).view({1, -1, 1, 1});
    in.bias = shift.to(at::kFloat).view({1, -1, 1, 1});
    return emit(std::move(in), Reg{Layout::kDense, regs_[x].shape, true});
  }

  int fallback(const nn::AnyModule& m, int x, const std::string& name) {
    x = dense(x);
    m.ptr()->eval();
    // The output shape of an unknown module is found by running it once on zeros.
    Shape in_shape = regs_[x].shape;
    Shape batch_shape = {1};
    batch_shape.insert(batch_shape.end(), in_shape.begin(), in_shape.end());
    at::Tensor probe;
    {
      c10::InferenceMode guard;
      nn::AnyModule copy = m;  // shares the module
      probe = copy.forward<at::Tensor>(at::zeros(batch_shape));
    }
    Shape out(probe.sizes().begin() + 1, probe.sizes().end());
    Instr in = op(Code::kFallback, name);
    in.a = x;
    in.module = m;
    fallbacks_.push_back(note_.empty() ? fmt::format("{} ({})", name, type_name(*m.ptr())) : note_);
    note_.clear();
    return emit(std::move(in), Reg{Layout::kDense, out, false, x});
  }

  bool force_fallback_;
  std::vector<Instr> instrs_;
  std::vector<Reg> regs_;
  std::vector<std::string> fallbacks_;
  std::map<int, int> mkldnn_of_, dense_of_;  // conversions already emitted, by source register
  std::string note_;                         // why the next fallback happens
};

}  // namespace

struct CompiledStage::Impl {
  std::vector<Instr> program;
  int num_regs = 0;
  int out_reg = 0;
  Shape in_shape, out_shape;
  std::vector<std::string> fallbacks;
  CompileOptions options;
  std::unique_ptr<AllocationCache> cache;
  std::vector<at::Tensor> regs;  // used during run() only
  // bf16 / int8: the dtype of the stage's output when it comes out of a to_dense (the wire
  // format: bf16, or int8's u8 / s8 codes), and whether a wire input goes to float32 first
  // (something other than a to_mkldnn reads it).
  at::ScalarType out_dense_dtype = at::kFloat;
  bool input_to_float = false;
  // int8: the codes each register holds as the program runs (passed through by ops that keep
  // their input's codes: ReLU, pools, reorders); the quantization of the wire input / output
  // (from the ranges of registers 0 and out_reg); and the codes the output comes out in.
  std::vector<QParams> q;
  QParams q_in, q_out, q_out_codes;

  at::ScalarType wire_dtype() const {
    switch (options.precision) {
      case Precision::kBf16:
        return at::kBFloat16;
      case Precision::kInt8:
        return at::kByte;
      case Precision::kFp32:
        break;
    }
    return at::kFloat;
  }
  at::ScalarType input_dtype() const { return options.wire_input ? wire_dtype() : at::kFloat; }
  at::ScalarType output_dtype() const { return options.wire_output ? wire_dtype() : at::kFloat; }

  static int64_t batch_of(const Instr& in, const at::Tensor& blocked) {
    return blocked.numel() / models::numel(in.src_shape);
  }

  // The primitive of a oneDNN instruction for batch size n, made on first use. `plain` is the
  // data type of the dense side of a reorder (kToMkldnn's source, kToDense's destination).
  static const Prim& prim_for(const Instr& in, int64_t n, DataType plain = kF32) {
    auto& cache = in.prims->by_batch;
    const int64_t key = 16 * n + static_cast<int64_t>(plain);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    using namespace dnnl;
    engine& eng = cpu_engine();
    Prim p;
    const Format& f = in.format;
    p.src = blocked_md(n, in.src_shape, f.src, f.channels_last);
    p.src2 = blocked_md(n, in.src_shape, f.src2, f.channels_last);
    p.dst = blocked_md(n, in.dst_shape, f.dst, f.channels_last);
    auto dims2 = [](const std::vector<int64_t>& v) { return memory::dims{v[0], v[1]}; };
    // int8 reorders between float and codes scale; between codes of one register they copy.
    auto reorder_attr = [&](float scale) {
      primitive_attr attr;
      if (f.int8 && plain == kF32) attr.set_output_scales(0, {scale});
      return attr;
    };
    switch (in.code) {
      case Code::kToMkldnn:
        p.src = plain_md(n, in.src_shape, plain);
        p.prim = reorder(
            reorder::primitive_desc(eng, p.src, eng, p.dst, reorder_attr(1.0f / f.dst_scale)));
        break;
      case Code::kToDense:
        p.dst = plain_md(n, in.dst_shape, plain);
        p.prim =
            reorder(reorder::primitive_desc(eng, p.src, eng, p.dst, reorder_attr(f.src_scale)));
        break;
      case Code::kConv: {
        const int64_t oc = in.weight.size(0), icg = in.weight.size(1), g = in.groups;
        const memory::dims w_dims = g == 1
                                        ? memory::dims{oc, icg, in.kernel[0], in.kernel[1]}
                                        : memory::dims{g, oc / g, icg, in.kernel[0], in.kernel[1]};
        const memory::desc bias_md =
            in.bias.defined() ? memory::desc({oc}, kF32, Tag::x) : memory::desc();
        // int8: weights per output channel symmetric s8; the s32 accumulator times
        // src_scale * w_scale[oc] / dst_scale gives the codes of dst, and the bias is added
        // to the accumulator (so it is stored in accumulator units).
        at::Tensor w_scale, w_codes;
        primitive_attr attr;
        post_ops ops;
        if (f.int8) {
          w_scale = (in.weight.abs().amax({1, 2, 3}) / 127.0).clamp_min(1e-12);
          w_codes = at::round(in.weight / w_scale.view({-1, 1, 1, 1}))
                        .clamp_(-127, 127)
                        .to(at::kChar)
                        .contiguous();
          at::Tensor out_scale = (w_scale * (f.src_scale / f.dst_scale)).contiguous();
          attr.set_output_scales(
              2, std::vector<float>(out_scale.data_ptr<float>(),
                                    out_scale.data_ptr<float>() + out_scale.numel()));
          if (in.bias.defined())
            p.bias_storage = (in.bias / (w_scale * f.src_scale)).to(at::kFloat).contiguous();
          if (in.b >= 0) ops.append_sum(f.src2_scale / f.dst_scale, f.src2);
        } else if (in.b >= 0) {
          ops.append_sum(1.0f);
        }
        if (in.relu) ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
        attr.set_post_ops(ops);
        const DataType w_dt = f.int8 ? kS8 : f.src;
        const memory::dims dilation = {in.dilation[0] - 1, in.dilation[1] - 1};
        auto make = [&](algorithm alg) {
          convolution_forward::desc d(
              prop_kind::forward_inference, alg, p.src, memory::desc(w_dims, w_dt, Tag::any),
              bias_md, p.dst, dims2(in.stride), dilation, dims2(in.padding), dims2(in.padding));
          return convolution_forward::primitive_desc(d, attr, eng);
        };
        // convolution_auto lets oneDNN take its Winograd kernel where it expects it to be
        // faster (3x3, stride 1); direct where auto has no implementation.
        convolution_forward::primitive_desc pd;
        try {
          pd = make(f.winograd ? algorithm::convolution_auto : algorithm::convolution_direct);
        } catch (const dnnl::error&) {
          pd = make(algorithm::convolution_direct);
        }
        p.prim = convolution_forward(pd);
        const at::Tensor& w = f.int8 ? w_codes : in.weight;
        memory plain({w_dims, f.int8 ? kS8 : kF32, g == 1 ? Tag::oihw : Tag::goihw}, eng,
                     w.data_ptr());
        p.weights = memory(pd.weights_desc(), eng);
        reorder(plain, p.weights).execute(cpu_stream(), plain, p.weights);
        cpu_stream().wait();
        if (in.bias.defined())
          p.bias = memory(bias_md, eng, (f.int8 ? p.bias_storage : in.bias).data_ptr());
        break;
      }
      case Code::kAdd: {
        primitive_attr attr;
        if (in.relu) {
          post_ops ops;
          ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
          attr.set_post_ops(ops);
        }
        if (f.int8) {
          attr.set_scales(DNNL_ARG_SRC_0, 0, {f.src_scale / f.dst_scale});
          attr.set_scales(DNNL_ARG_SRC_1, 0, {f.src2_scale / f.dst_scale});
        }
        p.prim = binary(binary::primitive_desc(
            binary::desc(algorithm::binary_add, p.src, p.src2, p.dst), attr, eng));
        break;
      }
      case Code::kRelu:
      case Code::kSilu:
        p.prim = eltwise_forward(eltwise_forward::primitive_desc(
            eltwise_forward::desc(
                prop_kind::forward_inference,
                in.code == Code::kRelu ? algorithm::eltwise_relu : algorithm::eltwise_swish, p.src,
                in.code == Code::kRelu ? 0.0f : 1.0f, 0.0f),
            eng));
        break;
      case Code::kMaxPool: {
        // Symmetric padding, more on the right where ceil_mode adds a window.
        memory::dims pad_r = dims2(in.padding);
        for (int i = 0; i < 2; ++i)
          pad_r[i] =
              std::max<int64_t>(pad_r[i], (in.dst_shape[1 + i] - 1) * in.stride[i] + in.kernel[i] -
                                              in.src_shape[1 + i] - in.padding[i]);
        p.prim = pooling_forward(pooling_forward::primitive_desc(
            pooling_forward::desc(prop_kind::forward_inference, algorithm::pooling_max, p.src,
                                  p.dst, dims2(in.stride), dims2(in.kernel), dims2(in.padding),
                                  pad_r),
            eng));
        break;
      }
      case Code::kAvgPool: {
        const memory::dims k = {in.src_shape[1] / in.dst_shape[1],
                                in.src_shape[2] / in.dst_shape[2]};
        p.prim = pooling_forward(pooling_forward::primitive_desc(
            pooling_forward::desc(prop_kind::forward_inference,
                                  algorithm::pooling_avg_exclude_padding, p.src, p.dst, k, k,
                                  {0, 0}, {0, 0}),
            eng));
        break;
      }
      default:
        TORCH_INTERNAL_ASSERT(false, "no oneDNN primitive for ", kind_of(in.code));
    }
    return cache.emplace(key, std::move(p)).first->second;
  }

  // Runs a oneDNN instruction on batch size n: src -> dst (src2: the binary op's second input).
  static void run_onednn(const Instr& in, int64_t n, const at::Tensor& src, const at::Tensor& dst,
                         const at::Tensor* src2 = nullptr) {
    const Prim& p = prim_for(in, n,
                             in.code == Code::kToMkldnn  ? dt_of(src.scalar_type())
                             : in.code == Code::kToDense ? dt_of(dst.scalar_type())
                                                         : kF32);
    std::unordered_map<int, dnnl::memory> args;
    switch (in.code) {
      case Code::kToMkldnn:
      case Code::kToDense:
        args = {{DNNL_ARG_FROM, wrap(p.src, src)}, {DNNL_ARG_TO, wrap(p.dst, dst)}};
        break;
      case Code::kConv:
        args = {{DNNL_ARG_SRC, wrap(p.src, src)},
                {DNNL_ARG_WEIGHTS, p.weights},
                {DNNL_ARG_DST, wrap(p.dst, dst)}};
        if (p.bias) args[DNNL_ARG_BIAS] = p.bias;
        break;
      case Code::kAdd:
        args = {{DNNL_ARG_SRC_0, wrap(p.src, src)},
                {DNNL_ARG_SRC_1, wrap(p.src2, *src2)},
                {DNNL_ARG_DST, wrap(p.dst, dst)}};
        break;
      default:
        args = {{DNNL_ARG_SRC, wrap(p.src, src)}, {DNNL_ARG_DST, wrap(p.dst, dst)}};
    }
    p.prim.execute(cpu_stream(), args);
    cpu_stream().wait();
  }

  void exec(const Instr& in) {
    static at::Tensor no_input;  // kPack and kCat read srcs only
    at::Tensor& a = in.a >= 0 ? regs[in.a] : no_input;
    at::Tensor& dst = regs[in.dst];
    switch (in.code) {
      case Code::kToMkldnn: {
        // float32, or a wire input already in the register's format (bf16, int8 codes).
        at::Tensor src =
            dt_of(a.scalar_type()) != kF32 ? a.contiguous() : a.contiguous().to(at::kFloat);
        dst = blocked_buffer(src.size(0), in.dst_shape, in.format.dst);
        run_onednn(in, src.size(0), src, dst);
        break;
      }
      case Code::kToDense: {
        const int64_t n = batch_of(in, a);
        std::vector<int64_t> shape = {n};
        shape.insert(shape.end(), in.dst_shape.begin(), in.dst_shape.end());
        // float32, or the wire format when this is the stage's output (no second pass).
        dst = at::empty(shape, in.dst == out_reg ? out_dense_dtype : at::kFloat);
        run_onednn(in, n, a, dst);
        break;
      }
      case Code::kConv: {
        // With a sum post-op (in.b), the conv accumulates into register b's buffer.
        const int64_t n = batch_of(in, a);
        dst = in.b >= 0 ? as_dtype(regs[in.b], in.format.dst)
                        : blocked_buffer(n, in.dst_shape, in.format.dst);
        run_onednn(in, n, a, dst);
        break;
      }
      case Code::kAdd: {
        const int64_t n = batch_of(in, a);
        dst = in.in_place ? as_dtype(a, in.format.dst)
                          : blocked_buffer(n, in.dst_shape, in.format.dst);
        run_onednn(in, n, a, dst, &regs[in.b]);
        break;
      }
      case Code::kRelu:
        if (in.prims) {
          const int64_t n = batch_of(in, a);
          dst = in.in_place ? a : blocked_buffer(n, in.dst_shape, in.format.dst);
          run_onednn(in, n, a, dst);
        } else {
          dst = in.in_place ? at::relu_(a) : at::relu(a);
        }
        break;
      case Code::kMaxPool:
      case Code::kAvgPool: {
        const int64_t n = batch_of(in, a);
        dst = blocked_buffer(n, in.dst_shape, in.format.dst);
        run_onednn(in, n, a, dst);
        break;
      }
      case Code::kFlatten:
        dst = a.flatten(in.start_dim, in.end_dim);
        break;
      case Code::kLinear:
        dst = in.bias.defined() ? at::addmm(in.bias, a, in.weight) : at::mm(a, in.weight);
        if (in.relu) at::relu_(dst);
        break;
      case Code::kBatchNorm:
        dst = at::addcmul(in.bias, a, in.weight);
        break;
      case Code::kFallback:
        dst = in.module.forward<at::Tensor>(a);
        break;
      case Code::kUnpack: {
        std::vector<int64_t> view = {a.size(0)};
        view.insert(view.end(), in.view.begin(), in.view.end());
        dst = a.narrow(1, in.offset, models::numel(in.view)).view(view);
        break;
      }
      case Code::kPack: {
        std::vector<at::Tensor> parts;
        for (int r : in.srcs) parts.push_back(regs[r].reshape({regs[r].size(0), -1}));
        dst = at::cat(parts, 1);
        break;
      }
      case Code::kCat: {
        std::vector<at::Tensor> parts;
        for (int r : in.srcs) parts.push_back(regs[r]);
        dst = at::cat(parts, 1);
        break;
      }
      case Code::kSilu:
        // In place when the input dies here (the conv before it), which saves one fresh buffer
        // per SiLU.
        if (in.prims && in.format.int8) {
          // oneDNN has no int8 swish: through float, elementwise on the codes (any layout).
          const QParams qa{in.format.src, in.format.src_scale};
          const QParams qd{in.format.dst, in.format.dst_scale};
          at::Tensor x = dequantize(a, qa);
          dst = quantize(x.mul_(at::sigmoid(x)), qd);
        } else if (in.prims) {
          const int64_t n = batch_of(in, a);
          dst = in.in_place ? a : blocked_buffer(n, in.dst_shape, in.format.dst);
          run_onednn(in, n, a, dst);
        } else if (in.in_place) {
          a.mul_(at::sigmoid(a));
          dst = a;
        } else {
          dst = at::mul(a, at::sigmoid(a));
        }
        break;
      case Code::kSqueezeExcite: {
        at::Tensor scale = at::addmm(in.bias, a.mean({2, 3}), in.weight);
        at::silu_(scale);
        scale = at::addmm(in.bias2, scale, in.weight2).sigmoid_();
        dst = a * scale.view({scale.size(0), scale.size(1), 1, 1});
        break;
      }
      case Code::kConvTranspose:
        dst = at::conv_transpose2d(a, in.weight, in.bias, in.stride, in.padding, in.output_size,
                                   in.groups, in.dilation);
        break;
    }
    for (int r : in.release) regs[r].reset();
  }

  template <typename Timer>
  at::Tensor execute(const at::Tensor& input, Timer&& timer) {
    TORCH_CHECK(input.scalar_type() == input_dtype(), "stage input must be ", input_dtype(),
                ", got ", input.scalar_type());
    TORCH_CHECK(input.dim() == static_cast<int64_t>(in_shape.size()) + 1 &&
                    input.sizes().slice(1).vec() == in_shape,
                "stage input must be [batch, ", models::to_string(in_shape), "], got ",
                input.sizes());
    std::optional<ScopedAllocationCache> scope;
    if (cache) scope.emplace(*cache);
    at::Tensor out;
    {
      c10::InferenceMode guard;
      regs.assign(num_regs, at::Tensor());
      regs[0] = prepare_input(input);
      for (size_t i = 0; i < program.size(); ++i) {
        timer(i, [&] { exec(program[i]); });
      }
      out = std::move(regs[out_reg]);
      regs.clear();
    }
    // Outside InferenceMode, so that the caller gets an ordinary tensor it may modify in place;
    // below autograd all the same, which the MKLDNN kernels insist on.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    if (options.precision == Precision::kInt8 && options.wire_output) return wire_codes(out);
    if (out.scalar_type() != output_dtype()) return out.to(output_dtype()).contiguous();
    return out.is_mkldnn() ? out.to_dense() : out.clone(at::MemoryFormat::Contiguous);
  }

  // The stage input as register 0: int8 wire codes as the program's codes (s8 travels as
  // uint8 + 128), or float32 where something other than a to_mkldnn reads the input.
  at::Tensor prepare_input(const at::Tensor& input) const {
    if (options.precision == Precision::kInt8 && options.wire_input) {
      at::Tensor codes = q_in.dt == kS8 ? input.to(at::kShort).sub_(128).to(at::kChar) : input;
      return input_to_float ? dequantize(codes, q_in) : codes;
    }
    return input_to_float ? input.to(at::kFloat) : input;
  }

  // int8: the stage's result as uint8 wire codes in q_out, the quantization the next stage
  // derives for its input from the same calibration.
  at::Tensor wire_codes(const at::Tensor& out) const {
    at::Tensor codes;
    if (dt_of(out.scalar_type()) == kF32) {
      codes = quantize(out, q_out);
    } else if (q_out_codes != q_out) {
      codes = quantize(dequantize(out, q_out_codes), q_out);
    } else {
      codes = out.clone(at::MemoryFormat::Contiguous);
    }
    if (q_out.dt == kS8) codes = codes.to(at::kShort).add_(128).to(at::kByte);
    return codes.contiguous();
  }

  // int8: runs the float program on the calibration batches and records the range of every
  // register, then lowers the same program to int8: each register's codes (u8 or s8, scale),
  // each oneDNN op's data types and scales, conv weights per output channel (prim_for).
  void calibrate_int8() {
    std::vector<double> lo(num_regs, std::numeric_limits<double>::infinity());
    std::vector<double> hi(num_regs, -std::numeric_limits<double>::infinity());
    auto note = [&](int r) {
      if (!regs[r].defined()) return;
      auto [mn, mx] = at::aminmax(regs[r]);
      lo[r] = std::min(lo[r], mn.item<double>());
      hi[r] = std::max(hi[r], mx.item<double>());
    };
    {
      std::optional<ScopedAllocationCache> scope;
      if (cache) scope.emplace(*cache);
      c10::InferenceMode guard;
      for (const at::Tensor& batch : options.calibration) {
        TORCH_CHECK(batch.scalar_type() == at::kFloat &&
                        batch.dim() == 1 + static_cast<int64_t>(in_shape.size()) &&
                        batch.sizes().slice(1).vec() == in_shape,
                    "calibration batch must be float [batch, ", models::to_string(in_shape),
                    "], got ", batch.sizes());
        regs.assign(num_regs, at::Tensor());
        regs[0] = batch.contiguous();
        note(0);
        for (const Instr& in : program) {
          exec(in);
          note(in.dst);  // before in-place ops of later instructions change it
        }
        regs.clear();
      }
    }
    std::vector<QParams> own(num_regs);
    for (int r = 0; r < num_regs; ++r) own[r] = qparams_of(lo[r], hi[r]);
    q = own;
    for (const Instr& in : program) {
      const bool keeps_codes = in.code == Code::kToMkldnn || in.code == Code::kToDense ||
                               in.code == Code::kMaxPool || in.code == Code::kAvgPool ||
                               (in.code == Code::kRelu && in.prims);
      if (keeps_codes) q[in.dst] = q[in.a];
    }
    for (Instr& in : program) {
      if (!in.prims) continue;
      Format f;
      f.int8 = true;
      f.channels_last = true;
      if (in.a >= 0) f.src = q[in.a].dt, f.src_scale = q[in.a].scale;
      if (in.b >= 0) f.src2 = q[in.b].dt, f.src2_scale = q[in.b].scale;
      f.dst = q[in.dst].dt;
      f.dst_scale = q[in.dst].scale;
      in.format = f;
      in.prims = std::make_shared<Prims>();  // the float primitives of calibration go
    }
    q_in = own[0];
    q_out = own[out_reg];
    q_out_codes = q[out_reg];
    if (options.wire_output) {
      for (const Instr& in : program)
        if (in.dst == out_reg && in.code == Code::kToDense)
          out_dense_dtype = scalar_type_of(q[out_reg].dt);
    }
  }
};

CompiledStage::CompiledStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
                             const CompileOptions& options)
    : impl_(std::make_unique<Impl>()) {
  if (stage >= model.num_stages())
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s) (0..{})",
                                 stage, model.num_stages(), model.num_stages() - 1));
  if (batch_size < 1) throw BoardError(fmt::format("batch size {} must be >= 1", batch_size));
  torch::NoGradGuard no_grad;
  const models::StageSpec& spec = model.stage(stage);
  impl_->in_shape = spec.in_shape;
  impl_->out_shape = spec.out_shape;
  impl_->options = options;
  if (options.precision == Precision::kInt8 && options.calibration.empty())
    throw BoardError(
        "int8 needs calibration data: give boards.calibration_batches >= 1 (batches of the "
        "experiment's data whose activation ranges fix the quantization)");
  if (options.cache_allocations)
    impl_->cache = std::make_unique<AllocationCache>(options.huge_pages);

  Compiler c(spec.in_shape, options.force_fallback);
  int x = c.input();
  // A cut where several tensors cross has a CutCodec (unpack, one autoencoder per tensor,
  // pack), which runs through the fallback.
  if (stage > 0) {
    if (auto m = model.decoder_module(stage - 1); !m.is_empty()) x = c.any(m, x, "decoder");
  }
  const auto& units = model.base()->units();
  for (size_t u = spec.first_unit; u < spec.end_unit; ++u)
    x = c.any(units[u].module, x, units[u].name);
  if (stage + 1 < model.num_stages()) {
    if (auto m = model.encoder_module(stage); !m.is_empty()) x = c.any(m, x, "encoder");
  }
  if (c.regs()[x].layout == Layout::kMkldnn) x = c.dense(x);
  TORCH_INTERNAL_ASSERT(c.regs()[x].shape == spec.out_shape, "stage ", stage,
                        " compiles to output ", models::to_string(c.regs()[x].shape),
                        " but the model says ", models::to_string(spec.out_shape));
  impl_->out_reg = c.finish(x);
  impl_->num_regs = static_cast<int>(c.regs().size());
  impl_->program = std::move(c.instrs());
  impl_->fallbacks = std::move(c.fallbacks());
  // The precision is a property of the lowering's memory descriptors: the same program, its
  // blocked registers (and conv weights) in bf16 (accumulation in f32 inside oneDNN), or in
  // int8 codes with the scales calibration gives (calibrate_int8).
  if (!options.winograd)
    for (Instr& in : impl_->program) in.format.winograd = false;
  if (options.precision == Precision::kBf16) {
    Format f;
    f.src = f.src2 = f.dst = kBf16;
    // nChw16c like fp32: oneDNN 2.6 runs bf16 convs there (jit_bf16) about as fast as in nhwc
    // (brgconv), measured side by side; so the layout is the same in fp32 and bf16.
    for (Instr& in : impl_->program) in.format = f;
    if (options.wire_output) impl_->out_dense_dtype = at::kBFloat16;
  } else if (options.precision == Precision::kInt8) {
    for (Instr& in : impl_->program) in.format.winograd = false;  // as stage_calibration_inputs
    impl_->calibrate_int8();
    impl_->options.calibration.clear();  // not kept: the caller's batches
  }
  for (const Instr& in : impl_->program) {
    if (options.precision != Precision::kFp32 && options.wire_input && in.code != Code::kToMkldnn &&
        (in.a == 0 || in.b == 0 || std::find(in.srcs.begin(), in.srcs.end(), 0) != in.srcs.end()))
      impl_->input_to_float = true;
  }
}

CompiledStage::~CompiledStage() = default;
CompiledStage::CompiledStage(CompiledStage&&) noexcept = default;
CompiledStage& CompiledStage::operator=(CompiledStage&&) noexcept = default;

at::Tensor CompiledStage::run(const at::Tensor& input) {
  return impl_->execute(input, [](size_t, auto&& f) { f(); });
}

at::Tensor CompiledStage::run_profiled(const at::Tensor& input, std::vector<double>& op_seconds) {
  op_seconds.resize(impl_->program.size(), 0.0);
  return impl_->execute(input, [&](size_t i, auto&& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    op_seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
}

std::vector<OpInfo> CompiledStage::ops() const {
  std::vector<OpInfo> out;
  for (const auto& in : impl_->program) out.push_back(OpInfo{kind_of(in.code), in.name, in.flops});
  return out;
}

const std::vector<std::string>& CompiledStage::fallbacks() const { return impl_->fallbacks; }

std::string CompiledStage::summary() const {
  std::map<std::string, int> count;
  std::vector<std::string> order;
  for (const auto& in : impl_->program) {
    std::string k = kind_of(in.code);
    if (count[k]++ == 0) order.push_back(k);
  }
  std::vector<std::string> parts;
  for (const auto& k : order) parts.push_back(fmt::format("{} {}", count[k], k));
  return fmt::format("{} ops: {}; {}", impl_->program.size(), fmt::join(parts, ", "),
                     impl_->fallbacks.empty()
                         ? std::string("no fallback")
                         : fmt::format("fallback: {}", fmt::join(impl_->fallbacks, ", ")));
}

at::ScalarType CompiledStage::input_dtype() const { return impl_->input_dtype(); }
at::ScalarType CompiledStage::output_dtype() const { return impl_->output_dtype(); }
// fp32 and bf16 have no quantization.
std::pair<double, int64_t> CompiledStage::input_quantization() const {
  if (impl_->options.precision != Precision::kInt8) return {1.0, 0};
  return {impl_->q_in.scale, impl_->q_in.wire_zero_point()};
}
std::pair<double, int64_t> CompiledStage::output_quantization() const {
  if (impl_->options.precision != Precision::kInt8) return {1.0, 0};
  return {impl_->q_out.scale, impl_->q_out.wire_zero_point()};
}
Precision CompiledStage::precision() const { return impl_->options.precision; }

const std::vector<int64_t>& CompiledStage::in_shape() const { return impl_->in_shape; }
const std::vector<int64_t>& CompiledStage::out_shape() const { return impl_->out_shape; }

// The float inputs int8 calibrates on come from the fp32 program, the one calibrate_int8 runs on
// them: stage k's output register and stage k+1's input register then see the same float
// numbers, so both sides of a cut derive the same quantization.
std::vector<at::Tensor> stage_calibration_inputs(models::QuiltModelImpl& model, size_t stage,
                                                 const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs;
  for (const auto& x : inputs) xs.push_back(x.to(at::kFloat).contiguous());
  for (size_t s = 0; s < stage; ++s) {
    CompileOptions o;
    o.cache_allocations = false;
    o.winograd = false;  // the float program of calibrate_int8
    CompiledStage compiled(model, s, xs.empty() ? 1 : xs[0].size(0), o);
    for (auto& x : xs) x = compiled.run(x);
  }
  return xs;
}

std::vector<at::Tensor> run_in_precision(models::QuiltModelImpl& model, Precision precision,
                                         const std::vector<at::Tensor>& calibration,
                                         const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs = inputs;
  std::vector<at::Tensor> cal = calibration;
  const size_t n = model.num_stages();
  for (size_t s = 0; s < n; ++s) {
    CompileOptions o;
    o.cache_allocations = false;
    o.precision = precision;
    o.wire_input = s > 0;
    o.wire_output = s + 1 < n;
    if (precision == Precision::kInt8) o.calibration = stage_calibration_inputs(model, s, cal);
    CompiledStage compiled(model, s, xs.empty() ? 1 : xs[0].size(0), o);
    for (auto& x : xs) x = compiled.run(x);
  }
  return xs;
}

}  // namespace quilt::backends
