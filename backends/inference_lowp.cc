#include "backends/inference_lowp.h"

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
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

// The ATen program of CompiledStage for int8 (see inference_lowp.h for why there are
// two programs): at::mkldnn tensors in float, and LibTorch's quantized ops (qengine
// "onednn") for int8. This is the precision branch's CompiledStage as it was, on the ATen path
// that preceded the raw oneDNN primitives of inference.cc. It also runs in fp32, for one use
// only: the float activations int8 calibrates on (stage_calibration_inputs below), which must be
// the same float numbers calibrate_int8 sees, bit for bit.
//
// Design notes of that path, from measurements with LibTorch 1.13.1 (Debian, oneDNN 2.6.3) at
// one thread, ResNet-50 batch 8 on an AVX-512 CPU (fp32; inference.cc is now faster):
// - Convolutions are at::mkldnn_convolution on blocked (nChw16c) tensors with weights reordered
//   once: the kernels PyTorch's optimize_for_inference uses, at 105-135 GFLOP/s.
// - ReLU cannot be fused into those convs through ATen: in-place ReLU on the blocked tensor
//   costs ~1% of the stage, the residual add ~4%.
// - Activations are cached between runs on 2 MiB transparent huge pages (allocation_cache.h).

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
  bool ceil_mode = false;
  int64_t start_dim = 1, end_dim = -1;
  mutable nn::AnyModule module;  // forward() is not const
  std::vector<int> release;      // registers whose last use is this instruction
  at::Tensor folded;             // kConv under int8: the folded float weights, dense
  c10::IValue packed;            // kConv under int8: the prepacked quantized weights
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
  Compiler(const Shape& in_shape, bool force_fallback, Precision precision)
      : force_fallback_(force_fallback), precision_(precision) {
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
    std::vector<int> last_use(regs_.size(), -1);
    for (size_t i = 0; i < instrs_.size(); ++i) {
      for (int r : {instrs_[i].a, instrs_[i].b})
        if (r >= 0) last_use[r] = static_cast<int>(i);
      for (int r : instrs_[i].srcs) last_use[r] = static_cast<int>(i);
    }
    last_use[out] = static_cast<int>(instrs_.size());  // the result outlives the program
    // A register lives as long as any view of it (views come after their source).
    for (size_t r = regs_.size(); r-- > 0;) {
      if (regs_[r].alias_of >= 0)
        last_use[regs_[r].alias_of] = std::max(last_use[regs_[r].alias_of], last_use[r]);
    }
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

  int mkldnn(int x) {
    if (regs_[x].layout == Layout::kMkldnn) return x;
    if (auto it = mkldnn_of_.find(x); it != mkldnn_of_.end()) return it->second;
    if (regs_[x].shape.size() != 3) throw Unsupported{"oneDNN ops need NCHW tensors"};
    Instr in = op(Code::kToMkldnn, "to_mkldnn");
    in.a = x;
    int y = emit(std::move(in), Reg{Layout::kMkldnn, regs_[x].shape, true});
    mkldnn_of_[x] = y;
    return y;
  }

  int dense(int x) {
    if (regs_[x].layout == Layout::kDense) return x;
    if (auto it = dense_of_.find(x); it != dense_of_.end()) return it->second;
    Instr in = op(Code::kToDense, "to_dense");
    in.a = x;
    int y = emit(std::move(in), Reg{Layout::kDense, regs_[x].shape, true});
    dense_of_[x] = y;
    return y;
  }

 private:
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
    if (auto* b = as<models::BottleneckImpl>(m)) {
      int y = conv2d(fold(*b->conv1, b->bn1.get()), x, true, name + ".conv1+bn1+relu");
      y = conv2d(fold(*b->conv2, b->bn2.get()), y, true, name + ".conv2+bn2+relu");
      y = conv2d(fold(*b->conv3, b->bn3.get()), y, false, name + ".conv3+bn3");
      return residual(b->downsample, x, y, name);
    }
    if (auto* b = as<models::BasicBlockImpl>(m)) {
      int y = conv2d(fold(*b->conv1, b->bn1.get()), x, true, name + ".conv1+bn1+relu");
      y = conv2d(fold(*b->conv2, b->bn2.get()), y, false, name + ".conv2+bn2");
      return residual(b->downsample, x, y, name);
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
    in.weight = se.fc1->weight.detach().flatten(1).t().contiguous().to(dtype_);
    in.bias = se.fc1->bias.detach().to(dtype_, false, true);
    in.weight2 = se.fc2->weight.detach().flatten(1).t().contiguous().to(dtype_);
    in.bias2 = se.fc2->bias.detach().to(dtype_, false, true);
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
    in.weight = c.weight.detach().to(dtype_, false, true);
    if (c.bias.defined()) in.bias = c.bias.detach().to(dtype_, false, true);
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

  int residual(const nn::Sequential& downsample, int x, int y, const std::string& name) {
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
    return add(y, identity, true, name + ".add+relu");
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
    // Reordered once into the blocked layout oneDNN picks for this conv, so that no run
    // reorders weights.
    in.weight = at::mkldnn_reorder_conv2d_weight(f.weight.to_mkldnn(dtype_), f.padding, f.stride,
                                                 f.dilation, f.groups);
    in.bias = f.bias;  // float32 also under bf16: oneDNN adds it in the f32 accumulator
    if (precision_ == Precision::kInt8) in.folded = f.weight;
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
    return emit(std::move(in), Reg{Layout::kMkldnn, regs_[a].shape, false});
  }

  int relu(int x, const std::string& name) {
    Instr in = op(Code::kRelu, name);
    in.a = x;
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
    // Stored [in, out]: OpenBLAS runs x * W^T 2.5x faster at batch 8 from this layout than from
    // a transposed view of [out, in].
    in.weight = l.weight.detach().t().contiguous().to(dtype_);
    if (l.bias.defined()) in.bias = l.bias.detach().to(dtype_, false, true);
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
    in.weight = scale.to(dtype_).view({1, -1, 1, 1});
    in.bias = shift.to(dtype_).view({1, -1, 1, 1});
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
  Precision precision_;
  at::ScalarType dtype_ = at::kFloat;  // of the float weights and activations (also under int8)
  std::vector<Instr> instrs_;
  std::vector<Reg> regs_;
  std::vector<std::string> fallbacks_;
  std::map<int, int> mkldnn_of_, dense_of_;  // conversions already emitted, by source register
  std::string note_;                         // why the next fallback happens
};

// Per-tensor affine uint8 parameters of one activation register (int8).
struct QParams {
  double scale = 1;
  int64_t zero_point = 0;
  bool operator==(const QParams& o) const { return scale == o.scale && zero_point == o.zero_point; }
};

// The range [min(lo, 0), max(hi, 0)] onto codes 0..255, as PyTorch's MinMaxObserver does for
// quint8. The scale is rounded to float, the precision the int8 kernels keep it in.
QParams qparams_of(double lo, double hi) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  QParams q;
  q.scale = static_cast<float>(std::max((hi - lo) / 255.0, 1e-8));
  q.zero_point = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(-lo / q.scale)), 0, 255);
  return q;
}

c10::IValue call_op(const char* name, const char* overload, std::vector<c10::IValue> stack) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  op.callBoxed(&stack);
  return std::move(stack.at(0));
}

// Whether an op reads quantized tensors directly (the rest dequantize around a float op).
bool int8_native(Code c) {
  switch (c) {
    case Code::kToMkldnn:
    case Code::kToDense:
    case Code::kConv:
    case Code::kAdd:
    case Code::kRelu:
    case Code::kMaxPool:
    case Code::kAvgPool:
    case Code::kFlatten:
      return true;
    default:
      return false;
  }
}

}  // namespace

struct LowpStage::Impl {
  std::vector<Instr> program;
  int num_regs = 0;
  int out_reg = 0;
  Shape in_shape, out_shape;
  std::vector<std::string> fallbacks;
  CompileOptions options;
  std::unique_ptr<AllocationCache> cache;
  std::vector<at::Tensor> regs;  // used during run() only
  std::vector<QParams> qparams;  // int8: per register, from calibration

  at::ScalarType wire_dtype() const {
    return options.precision == Precision::kInt8 ? at::kByte : at::kFloat;
  }

  void exec(const Instr& in) {
    static at::Tensor no_input;  // kPack and kCat read srcs only
    at::Tensor& a = in.a >= 0 ? regs[in.a] : no_input;
    at::Tensor& dst = regs[in.dst];
    switch (in.code) {
      case Code::kToMkldnn:
        dst = a.is_contiguous() ? a.to_mkldnn() : a.contiguous().to_mkldnn();
        break;
      case Code::kToDense:
        dst = a.to_dense();
        break;
      case Code::kConv:
        dst = at::mkldnn_convolution(a, in.weight, in.bias, in.padding, in.stride, in.dilation,
                                     in.groups);
        if (in.relu) at::relu_(dst);
        break;
      case Code::kAdd:
        if (in.in_place) {
          a.add_(regs[in.b]);
          dst = a;
        } else {
          dst = at::add(a, regs[in.b]);
        }
        if (in.relu) at::relu_(dst);
        break;
      case Code::kRelu:
        dst = in.in_place ? at::relu_(a) : at::relu(a);
        break;
      case Code::kMaxPool:
        dst = at::max_pool2d(a, in.kernel, in.stride, in.padding, in.dilation, in.ceil_mode);
        break;
      case Code::kAvgPool:
        dst = at::adaptive_avg_pool2d(a, in.output_size);
        break;
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
        // oneDNN tensors have sigmoid and same-shape mul but no silu; in place when the
        // input dies here (the conv before it), which saves one fresh buffer per SiLU.
        if (in.in_place) {
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
  }

  at::Tensor quantize(const at::Tensor& x, const QParams& q) const {
    at::Tensor t = at::quantize_per_tensor(x.is_mkldnn() ? x.to_dense() : x, q.scale, q.zero_point,
                                           at::kQUInt8);
    // oneDNN's int8 convs read NHWC; other layouts cost a reorder per conv.
    return t.dim() == 4 ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
  }

  // One instruction on quantized registers (int8).
  void exec_int8(const Instr& in) {
    at::Tensor& dst = regs[in.dst];
    const QParams& q = qparams[in.dst];
    if (!int8_native(in.code)) {
      // Dequantize what the op reads, run its float version, quantize what it makes (except a
      // float result of the stage itself). The registers it read keep their quantized values.
      std::vector<int> reads = in.srcs;
      for (int r : {in.a, in.b})
        if (r >= 0) reads.push_back(r);
      std::vector<std::pair<int, at::Tensor>> saved;
      for (int r : reads) {
        if (regs[r].is_quantized()) {
          saved.emplace_back(r, regs[r]);
          regs[r] = regs[r].dequantize();
        }
      }
      exec(in);
      for (auto& [r, t] : saved)
        if (r != in.dst) regs[r] = std::move(t);
      if (in.dst != out_reg || options.wire_output) dst = quantize(dst, q);
      return;
    }
    const at::Tensor& a = regs[in.a];
    switch (in.code) {
      case Code::kToMkldnn:
      case Code::kToDense:
        dst = a;
        break;
      case Code::kConv:
        dst = call_op(in.relu ? "quantized::conv2d_relu" : "quantized::conv2d", "new",
                      {a, in.packed, q.scale, q.zero_point})
                  .toTensor();
        break;
      case Code::kAdd:
        dst = call_op(in.relu ? "quantized::add_relu" : "quantized::add", "",
                      {a, regs[in.b], q.scale, q.zero_point})
                  .toTensor();
        break;
      case Code::kRelu:
        dst = at::relu(a);
        break;
      case Code::kMaxPool:
        dst = at::max_pool2d(a, in.kernel, in.stride, in.padding, in.dilation, in.ceil_mode);
        break;
      case Code::kAvgPool:
        dst = at::adaptive_avg_pool2d(a, in.output_size);
        break;
      case Code::kFlatten:
        dst = a.contiguous().flatten(in.start_dim, in.end_dim);
        break;
      default:
        TORCH_INTERNAL_ASSERT(false, "not an int8 op: ", kind_of(in.code));
    }
  }

  // The stage input as the program's register 0.
  at::Tensor prepare_input(const at::Tensor& input) const {
    if (options.precision == Precision::kInt8) {
      const QParams& q = qparams.at(0);
      if (!options.wire_input) return quantize(input, q);
      at::Tensor t =
          at::_make_per_tensor_quantized_tensor(input.contiguous(), q.scale, q.zero_point);
      return t.dim() == 4 ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
    }
    return input;
  }

  // The program's result as run() returns it (outside InferenceMode).
  at::Tensor finish_output(at::Tensor out) const {
    if (out.is_mkldnn()) out = out.to_dense();
    if (out.is_quantized()) {
      if (!options.wire_output) return out.dequantize().contiguous();
      // The codes in the calibrated parameters of the output register, which the next stage
      // takes its input in (ops like max pool pass their input's parameters through).
      const QParams& q = qparams.at(out_reg);
      if (out.q_scale() != q.scale || out.q_zero_point() != q.zero_point)
        out = at::quantize_per_tensor(out.dequantize(), q.scale, q.zero_point, at::kQUInt8);
      return out.int_repr().contiguous();
    }
    return out.clone(at::MemoryFormat::Contiguous);
  }

  template <typename Timer>
  at::Tensor execute(const at::Tensor& input, Timer&& timer) {
    const at::ScalarType in_dtype = options.wire_input ? wire_dtype() : at::kFloat;
    TORCH_CHECK(input.scalar_type() == in_dtype, "stage input must be ", in_dtype, ", got ",
                input.scalar_type());
    TORCH_CHECK(input.dim() == static_cast<int64_t>(in_shape.size()) + 1 &&
                    input.sizes().slice(1).vec() == in_shape,
                "stage input must be [batch, ", models::to_string(in_shape), "], got ",
                input.sizes());
    const bool int8 = options.precision == Precision::kInt8;
    std::optional<ScopedAllocationCache> scope;
    if (cache && !int8) scope.emplace(*cache);
    at::Tensor out;
    {
      c10::InferenceMode guard;
      regs.assign(num_regs, at::Tensor());
      regs[0] = prepare_input(input);
      for (size_t i = 0; i < program.size(); ++i) {
        timer(i, [&] {
          const Instr& in = program[i];
          if (int8)
            exec_int8(in);
          else
            exec(in);
          for (int r : in.release) regs[r].reset();
        });
      }
      out = std::move(regs[out_reg]);
      regs.clear();
    }
    // Outside InferenceMode, so that the caller gets an ordinary tensor it may modify in place;
    // below autograd all the same, which the MKLDNN kernels insist on.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return finish_output(std::move(out));
  }

  // int8: runs the float program on the calibration batches, records every register's range,
  // and quantizes the conv weights (per output channel, symmetric).
  void calibrate_int8() {
    if (options.calibration.empty())
      throw BoardError(
          "int8 needs calibration data: give boards.calibration_batches >= 1 (batches of the "
          "experiment's data whose activation ranges fix the quantization)");
    std::vector<double> lo(num_regs, std::numeric_limits<double>::infinity());
    std::vector<double> hi(num_regs, -std::numeric_limits<double>::infinity());
    auto note = [&](int r) {
      if (!regs[r].defined()) return;
      at::Tensor t = regs[r].is_mkldnn() ? regs[r].to_dense() : regs[r];
      auto [mn, mx] = at::aminmax(t);
      lo[r] = std::min(lo[r], mn.item<double>());
      hi[r] = std::max(hi[r], mx.item<double>());
    };
    {
      std::optional<ScopedAllocationCache> scope;
      if (cache) scope.emplace(*cache);
      c10::InferenceMode guard;
      for (const at::Tensor& batch : options.calibration) {
        TORCH_CHECK(batch.scalar_type() == at::kFloat &&
                        batch.dim() == 1 + (int64_t)in_shape.size() &&
                        batch.sizes().slice(1).vec() == in_shape,
                    "calibration batch must be float [batch, ", models::to_string(in_shape),
                    "], got ", batch.sizes());
        regs.assign(num_regs, at::Tensor());
        regs[0] = batch.contiguous();
        note(0);
        for (const Instr& in : program) {
          exec(in);
          note(in.dst);  // before in-place ops of later instructions change it
          for (int r : in.release) regs[r].reset();
        }
        regs.clear();
      }
    }
    qparams.assign(num_regs, QParams{});
    for (int r = 0; r < num_regs; ++r)
      if (std::isfinite(lo[r]) && std::isfinite(hi[r])) qparams[r] = qparams_of(lo[r], hi[r]);
    for (Instr& in : program) {
      if (in.code != Code::kConv) continue;
      const at::Tensor& w = in.folded;
      at::Tensor scale = (w.abs().amax({1, 2, 3}).to(at::kDouble) / 127.0).clamp_min(1e-12);
      at::Tensor qw =
          at::quantize_per_channel(w, scale, at::zeros({w.size(0)}, at::kLong), 0, at::kQInt8);
      std::vector<int64_t> stride = in.stride, padding = in.padding, dilation = in.dilation;
      in.packed = call_op("quantized::conv2d_prepack", "",
                          {qw, in.bias.defined() ? c10::IValue(in.bias) : c10::IValue(), stride,
                           padding, dilation, in.groups});
      in.weight = at::Tensor();  // the float weights are no longer used
      in.folded = at::Tensor();
    }
  }
};

LowpStage::LowpStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
                     const CompileOptions& options)
    : impl_(std::make_unique<Impl>()) {
  if (stage >= model.num_stages())
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s) (0..{})",
                                 stage, model.num_stages(), model.num_stages() - 1));
  if (batch_size < 1) throw BoardError(fmt::format("batch size {} must be >= 1", batch_size));
  TORCH_INTERNAL_ASSERT(options.precision != Precision::kBf16,
                        "bf16 runs inference.cc's oneDNN program, not this one");
  if (options.precision == Precision::kInt8 && options.calibration.empty())
    throw BoardError(
        "int8 needs calibration data: give boards.calibration_batches >= 1 (batches of the "
        "experiment's data whose activation ranges fix the quantization)");
  torch::NoGradGuard no_grad;
  const models::StageSpec& spec = model.stage(stage);
  impl_->in_shape = spec.in_shape;
  impl_->out_shape = spec.out_shape;
  impl_->options = options;
  if (options.cache_allocations)
    impl_->cache = std::make_unique<AllocationCache>(options.huge_pages);
  if (options.precision == Precision::kInt8) {
    // FBGEMM is not in Debian's LibTorch; oneDNN's int8 kernels use AVX-512 VNNI.
    at::globalContext().setQEngine(at::QEngine::ONEDNN);
  }

  Compiler c(spec.in_shape, options.force_fallback, options.precision);
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
  TORCH_INTERNAL_ASSERT(c.regs()[x].shape == spec.out_shape, "stage ", stage,
                        " compiles to output ", models::to_string(c.regs()[x].shape),
                        " but the model says ", models::to_string(spec.out_shape));
  impl_->out_reg = c.finish(x);
  impl_->num_regs = static_cast<int>(c.regs().size());
  impl_->program = std::move(c.instrs());
  impl_->fallbacks = std::move(c.fallbacks());
  if (options.precision == Precision::kInt8) {
    impl_->calibrate_int8();
    impl_->options.calibration.clear();  // not kept: the caller's batches
  }
}

LowpStage::~LowpStage() = default;
LowpStage::LowpStage(LowpStage&&) noexcept = default;
LowpStage& LowpStage::operator=(LowpStage&&) noexcept = default;

at::Tensor LowpStage::run(const at::Tensor& input) {
  return impl_->execute(input, [](size_t, auto&& f) { f(); });
}

at::Tensor LowpStage::run_profiled(const at::Tensor& input, std::vector<double>& op_seconds) {
  op_seconds.resize(impl_->program.size(), 0.0);
  return impl_->execute(input, [&](size_t i, auto&& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    op_seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
}

std::vector<OpInfo> LowpStage::ops() const {
  std::vector<OpInfo> out;
  for (const auto& in : impl_->program) out.push_back(OpInfo{kind_of(in.code), in.name, 0});
  return out;
}

const std::vector<std::string>& LowpStage::fallbacks() const { return impl_->fallbacks; }

std::string LowpStage::summary() const {
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

at::ScalarType LowpStage::input_dtype() const {
  return impl_->options.wire_input ? impl_->wire_dtype() : at::kFloat;
}
at::ScalarType LowpStage::output_dtype() const {
  return impl_->options.wire_output ? impl_->wire_dtype() : at::kFloat;
}
std::pair<double, int64_t> LowpStage::input_quantization() const {
  if (impl_->qparams.empty()) return {1.0, 0};
  return {impl_->qparams[0].scale, impl_->qparams[0].zero_point};
}
std::pair<double, int64_t> LowpStage::output_quantization() const {
  if (impl_->qparams.empty()) return {1.0, 0};
  return {impl_->qparams[impl_->out_reg].scale, impl_->qparams[impl_->out_reg].zero_point};
}
Precision LowpStage::precision() const { return impl_->options.precision; }

const std::vector<int64_t>& LowpStage::in_shape() const { return impl_->in_shape; }
const std::vector<int64_t>& LowpStage::out_shape() const { return impl_->out_shape; }

// The float inputs int8 calibrates on come from this file's fp32 program, the one
// calibrate_int8 runs on them: stage k's output register and stage k+1's input register then see
// the same float numbers, so both sides of a cut derive the same scale and zero point. (The fp32
// program of inference.cc rounds differently: Winograd convs, fused post-ops.)
std::vector<at::Tensor> stage_calibration_inputs(models::QuiltModelImpl& model, size_t stage,
                                                 const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs;
  for (const auto& x : inputs) xs.push_back(x.to(at::kFloat).contiguous());
  for (size_t s = 0; s < stage; ++s) {
    CompileOptions o;
    o.cache_allocations = false;
    LowpStage compiled(model, s, xs.empty() ? 1 : xs[0].size(0), o);
    for (auto& x : xs) x = compiled.run(x);
  }
  return xs;
}

}  // namespace quilt::backends
