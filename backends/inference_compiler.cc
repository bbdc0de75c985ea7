// The structure of a stage's program: modules walked in order, blocks of the model zoo, conv +
// BN + ReLU runs, residual adds fused into convs, in-place ops and register lifetimes. The
// single ops are lowered in inference_lowering.cc.

#include "backends/inference_compiler.h"

#include "models/autoencoder.h"
#include "models/efficientnet.h"
#include "models/mlp.h"
#include "models/model.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/unet.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>

namespace quilt::backends::detail {

int Compiler::any(const nn::AnyModule& m, int x, const std::string& name) {
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

int Compiler::sequence(const std::vector<nn::AnyModule>& mods, int x, const std::string& prefix) {
  for (size_t i = 0; i < mods.size(); ++i) {
    const auto& m = mods[i].ptr();
    const std::string name = prefix.empty() ? std::to_string(i) : prefix + "." + std::to_string(i);
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

int Compiler::finish(int out) {
  out = fuse_residual_adds(out);
  std::vector<int> last_use = last_uses(out);
  for (size_t i = 0; i < instrs_.size(); ++i) {
    Instr& in = instrs_[i];
    if (in.code == Code::kAdd || in.code == Code::kRelu || in.code == Code::kSilu) {
      // Overwrite a only if nothing reads it later (its aliases included) and we made it.
      in.in_place =
          regs_[in.a].owned && last_use[in.a] == static_cast<int>(i) && (in.b < 0 || in.b != in.a);
      regs_[in.dst].owned = true;
    }
  }
  for (size_t r = 0; r < regs_.size(); ++r) {
    if (last_use[r] >= 0 && last_use[r] < static_cast<int>(instrs_.size()))
      instrs_[last_use[r]].release.push_back(static_cast<int>(r));
  }
  return out;
}

std::vector<int> Compiler::last_uses(int out) const {
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
int Compiler::fuse_residual_adds(int out) {
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

Compiler::Checkpoint Compiler::checkpoint() const {
  return {instrs_.size(), regs_.size(), fallbacks_.size(), mkldnn_of_, dense_of_};
}

void Compiler::restore(const Checkpoint& cp) {
  instrs_.resize(cp.instrs);
  regs_.resize(cp.regs);
  fallbacks_.resize(cp.fallbacks);
  mkldnn_of_ = cp.mkldnn_of;
  dense_of_ = cp.dense_of;
}

int Compiler::emit(Instr in, Reg reg) {
  in.dst = static_cast<int>(regs_.size());
  regs_.push_back(std::move(reg));
  instrs_.push_back(std::move(in));
  return instrs_.back().dst;
}

bool Compiler::is_relu(const std::shared_ptr<nn::Module>& m) {
  auto* r = as<nn::ReLUImpl>(m);
  return r != nullptr;
}

int Compiler::module(const std::shared_ptr<nn::Module>& m, int x, const std::string& name) {
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
  if (as<nn::SiLUImpl>(m) != nullptr) return eltwise(Code::kSilu, x, name);
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
  if (auto* o = as<models::OutConvImpl>(m)) return conv2d(fold(*o->conv, nullptr), x, false, name);
  if (auto* c = as<models::CutCodecImpl>(m)) return cut_codec(*c, x, name);
  if (auto* c = as<nn::Conv2dImpl>(m)) return conv2d(fold(*c, nullptr), x, false, name);
  if (auto* l = as<nn::LinearImpl>(m)) return linear(*l, x, false, name);
  if (is_relu(m)) return eltwise(Code::kRelu, x, name);
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

std::vector<int> Compiler::unpack(int x, const std::vector<Shape>& shapes,
                                  const std::string& name) {
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

int Compiler::pack(const std::vector<int>& xs, const std::string& name) {
  if (xs.size() == 1) return xs[0];
  Instr in = op(Code::kPack, name + ".pack");
  std::vector<Shape> shapes;
  for (int x : xs) {
    in.srcs.push_back(dense(x));
    shapes.push_back(regs_[x].shape);
  }
  return emit(std::move(in), Reg{Layout::kDense, models::packed_shape(shapes), true});
}

int Compiler::unet_unit(const models::UNetUnitImpl& u, int x, const std::string& name) {
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

int Compiler::cut_codec(const models::CutCodecImpl& c, int x, const std::string& name) {
  std::vector<int> xs = unpack(x, c.in_shapes(), name);
  for (size_t i = 0; i < xs.size(); ++i) {
    auto ae = c.autoencoders()[i];
    const auto& layer = c.encodes() ? ae->encoder() : ae->decoder();
    xs[i] = module(layer.ptr(), xs[i], fmt::format("{}.{}", name, i));
  }
  return pack(xs, name);
}

int Compiler::seq(const nn::SequentialImpl& s, int x, const std::string& name) {
  std::vector<nn::AnyModule> mods(s.begin(), s.end());
  return sequence(mods, x, name);
}

int Compiler::shortcut(const nn::Sequential& downsample, int x, const std::string& name) {
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

}  // namespace quilt::backends::detail
