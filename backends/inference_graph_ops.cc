// Graph nodes lowered by operation kind onto the program: convs with the eval BatchNorm and the
// ReLU that follow them folded in, residual adds (fused into convs later, see
// Compiler::fuse_residual_adds), pools, squeeze-excitation (pool -> 1x1 conv -> SiLU -> 1x1 conv
// -> sigmoid -> scale), views of packed tensors, concatenations, dense layers. A node none of
// these takes, or one whose arguments they cannot express, falls back (inference_graph.cc).

#include "backends/inference_graph_lowering.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <unordered_map>

namespace quilt::backends::detail {
namespace {

std::vector<int64_t> two(std::vector<int64_t> v) {
  if (v.size() == 1) v.push_back(v[0]);
  if (v.size() != 2) throw Unsupported{"a 2-D op with other than 2 sizes"};
  return v;
}

bool is_conv(const Node* n) {
  const std::string k = n->kind().toQualString();
  return k == "aten::_convolution" || k == "aten::conv2d";
}

}  // namespace

bool GraphLowering::lower_op(Node* n) {
  using Lower = bool (GraphLowering::*)(Node*);
  static const std::unordered_map<std::string, Lower> kOps = {
      {"aten::_convolution", &GraphLowering::conv},
      {"aten::conv2d", &GraphLowering::conv},
      {"aten::conv_transpose2d", &GraphLowering::conv},
      {"aten::batch_norm", &GraphLowering::batch_norm},
      {"aten::relu", &GraphLowering::eltwise},
      {"aten::relu_", &GraphLowering::eltwise},
      {"aten::silu", &GraphLowering::eltwise},
      {"aten::silu_", &GraphLowering::eltwise},
      {"aten::hardswish", &GraphLowering::eltwise},
      {"aten::hardswish_", &GraphLowering::eltwise},
      {"aten::add", &GraphLowering::add},
      {"aten::add_", &GraphLowering::add},
      {"aten::max_pool2d", &GraphLowering::pool},
      {"aten::adaptive_avg_pool2d", &GraphLowering::pool},
      {"aten::flatten", &GraphLowering::reshape},
      {"aten::view", &GraphLowering::reshape},
      {"aten::reshape", &GraphLowering::reshape},
      {"aten::narrow", &GraphLowering::slice},
      {"aten::slice", &GraphLowering::slice},
      {"aten::cat", &GraphLowering::cat},
      {"aten::linear", &GraphLowering::linear},
      {"aten::addmm", &GraphLowering::linear},
      {"aten::mm", &GraphLowering::linear},
      {"aten::matmul", &GraphLowering::linear},
      {"aten::layer_norm", &GraphLowering::layer_norm},
      {"aten::gelu", &GraphLowering::gelu},
      {"aten::gelu_", &GraphLowering::gelu},
      {"aten::_native_multi_head_attention", &GraphLowering::attention},
      {"aten::dropout", &GraphLowering::identity},
      {"aten::dropout_", &GraphLowering::identity},
      {"aten::feature_dropout", &GraphLowering::identity},
      {"aten::alpha_dropout", &GraphLowering::identity},
      {"aten::detach", &GraphLowering::identity},
      {"aten::contiguous", &GraphLowering::identity},
      {"aten::clone", &GraphLowering::identity},
  };
  auto it = kOps.find(n->kind().toQualString());
  if (it == kOps.end() || !(this->*(it->second))(n)) return false;
  mutated(n);
  return true;
}

std::optional<BatchNormParams> GraphLowering::bn_params(Node* bn) const {
  // aten::batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
  // cudnn_enabled)
  BatchNormParams p;
  try {
    if (constant(bn->input(5)).toBool()) return std::nullopt;  // training: batch statistics
    p.weight = tensor(bn->input(1));
    p.bias = tensor(bn->input(2));
    p.mean = tensor(bn->input(3));
    p.var = tensor(bn->input(4));
    if (!constant(bn->input(7)).isScalar()) return std::nullopt;
    p.eps = constant(bn->input(7)).toScalar().toDouble();
  } catch (const Unsupported&) {
    return std::nullopt;
  }
  if (!p.mean.defined() || !p.var.defined()) return std::nullopt;
  return p;
}

Node* GraphLowering::fuse_relu(Value*& v, std::string& nm, std::vector<Node*>& fused) {
  Node* r = sole_user(v, "aten::relu");
  if (r == nullptr) return nullptr;
  fused.push_back(r);
  v = r->output();
  nm += "+relu";
  return r;
}

bool GraphLowering::conv(Node* n) {
  const std::string k = n->kind().toQualString();
  const int x = reg(n->input(0));
  FoldedConv f;
  f.weight = tensor(n->input(1));
  f.bias = tensor(n->input(2));
  if (!f.weight.defined() || f.weight.dim() != 4) throw Unsupported{"a conv that is not 2-D"};
  f.kernel = {f.weight.size(2), f.weight.size(3)};
  f.stride = two(ints(n->input(3)));
  bool transposed = k == "aten::conv_transpose2d";
  std::vector<int64_t> output_padding = {0, 0};
  if (transposed) {  // (input, weight, bias, stride, padding, output_padding, groups, dilation)
    f.padding = two(ints(n->input(4)));
    output_padding = two(ints(n->input(5)));
    f.groups = int_of(n->input(6));
    f.dilation = two(ints(n->input(7)));
  } else {  // conv2d: (..., padding, dilation, groups); _convolution: (..., padding, dilation,
            // transposed, output_padding, groups, ...)
    if (!constant(n->input(4)).isIntList()) throw Unsupported{"conv padding given as a string"};
    f.padding = two(ints(n->input(4)));
    f.dilation = two(ints(n->input(5)));
    if (k == "aten::_convolution") {
      transposed = constant(n->input(6)).toBool();
      output_padding = two(ints(n->input(7)));
      f.groups = int_of(n->input(8));
    } else {
      f.groups = int_of(n->input(6));
    }
  }
  if (transposed) {
    set_reg(n->output(), c_.conv_transpose(f, output_padding, x, name("conv_transpose")));
    return true;
  }
  Value* out = n->output();
  std::string nm = name("conv");
  std::vector<Node*> fused;
  std::optional<BatchNormParams> bn;
  if (Node* b = sole_user(out, "aten::batch_norm"); b != nullptr && (bn = bn_params(b))) {
    fused.push_back(b);
    out = b->output();
    nm += "+bn";
  }
  const bool relu = fuse_relu(out, nm, fused) != nullptr;
  const int y = c_.conv2d(fold(f, bn ? &*bn : nullptr), x, relu, nm);
  bind_fused(n, fused, y);
  return true;
}

bool GraphLowering::batch_norm(Node* n) {
  std::optional<BatchNormParams> bn = bn_params(n);
  if (!bn) return false;
  set_reg(n->output(), c_.batch_norm(*bn, reg(n->input(0)), name("batch_norm")));
  return true;
}

bool GraphLowering::eltwise(Node* n) {
  std::string k = n->kind().toUnqualString();
  if (k.back() == '_') k.pop_back();
  const Code code = k == "relu" ? Code::kRelu : k == "silu" ? Code::kSilu : Code::kHardswish;
  set_reg(n->output(), c_.eltwise(code, reg(n->input(0)), name(k)));
  return true;
}

bool GraphLowering::add(Node* n) {
  const Val& b = val(n->input(1));
  const bool const_b = b.kind == Val::kConst && b.c.isTensor();
  if ((b.kind != Val::kReg && !const_b) || val(n->input(2)).kind != Val::kConst ||
      !constant(n->input(2)).isScalar() || constant(n->input(2)).toScalar().toDouble() != 1.0)
    return false;
  const int a = reg(n->input(0));
  Value* out = n->output();
  std::string nm = name("add");
  std::vector<Node*> fused;
  fuse_relu(out, nm, fused);
  // NCHW tensors add on oneDNN (and fuse into the conv before); tokens and the like densely.
  const bool nchw = c_.regs()[a].shape.size() == 3 && !const_b;
  const int y = nchw ? c_.add(a, b.reg, !fused.empty(), nm)
                     : c_.dense_add(a, const_b ? -1 : b.reg,
                                    const_b ? b.c.toTensor() : at::Tensor(), !fused.empty(), nm);
  bind_fused(n, fused, y);
  return true;
}

bool GraphLowering::pool(Node* n) {
  const int x = reg(n->input(0));
  if (n->kind().toQualString() == std::string("aten::adaptive_avg_pool2d")) {
    if (squeeze_excite(n)) return true;
    set_reg(n->output(), c_.adaptive_avg_pool(two(ints(n->input(1))), x, name("avgpool")));
    return true;
  }
  // max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
  const std::vector<int64_t> k = two(ints(n->input(1)));
  std::vector<int64_t> s = ints(n->input(2));
  s = s.empty() ? k : two(s);
  if (two(ints(n->input(4))) != std::vector<int64_t>{1, 1}) throw Unsupported{"dilated max pool"};
  set_reg(n->output(), c_.max_pool(k, s, two(ints(n->input(3))), constant(n->input(5)).toBool(), x,
                                   name("maxpool")));
  return true;
}

// adaptive_avg_pool2d(x, 1) -> 1x1 conv -> SiLU -> 1x1 conv -> sigmoid -> * x (EfficientNet's),
// or with ReLU and hardsigmoid (MobileNetV3's), each value read by the next op only: one
// kSqueezeExcite on dense tensors.
bool GraphLowering::squeeze_excite(Node* pool) {
  if (ints(pool->input(1)) != std::vector<int64_t>{1, 1} &&
      ints(pool->input(1)) != std::vector<int64_t>{1})
    return false;
  std::vector<at::Tensor> w, b;
  std::vector<Node*> chain;
  bool hard = false;
  Value* v = pool->output();
  for (const char* step : {"conv", "act", "conv", "gate"}) {
    if (v->uses().size() != 1) return false;
    Node* u = v->uses()[0].user;
    if (done_.count(u) != 0 || u->input(0) != v) return false;
    std::string k = u->kind().toQualString();
    if (k.back() == '_') k.pop_back();
    if (std::string(step) == "act") {
      if (k != "aten::silu" && k != "aten::relu") return false;
      hard = k == "aten::relu";
    } else if (std::string(step) == "gate") {
      if (k != (hard ? "aten::hardsigmoid" : "aten::sigmoid")) return false;
    } else {
      if (!is_conv(u)) return false;
      try {
        at::Tensor wt = tensor(u->input(1)), bt = tensor(u->input(2));
        const bool plain = ints(u->input(3)) == std::vector<int64_t>{1, 1} &&
                           constant(u->input(4)).isIntList() &&
                           two(ints(u->input(4))) == std::vector<int64_t>{0, 0};
        const int64_t groups =
            int_of(u->input(u->kind().toQualString() == std::string("aten::conv2d") ? 6 : 8));
        if (!plain || groups != 1 || !wt.defined() || !bt.defined() || wt.dim() != 4 ||
            wt.size(2) != 1 || wt.size(3) != 1)
          return false;
        w.push_back(wt.flatten(1));
        b.push_back(bt);
      } catch (const Unsupported&) {
        return false;
      }
    }
    chain.push_back(u);
    v = u->output();
  }
  if (v->uses().size() != 1) return false;
  Node* mul = v->uses()[0].user;
  if (mul->kind().toQualString() != std::string("aten::mul") || mul->inputs().size() != 2)
    return false;
  Value* other = mul->input(0) == v ? mul->input(1) : mul->input(0);
  if (other != pool->input(0)) return false;
  const int y =
      c_.squeeze_excite(w[0], b[0], w[1], b[1], hard, reg(pool->input(0)), name("squeeze_excite"));
  chain.push_back(mul);
  for (Node* u : chain) done_.insert(u);
  set_reg(mul->output(), y);
  return true;
}

bool GraphLowering::reshape(Node* n) {
  const int x = reg(n->input(0));
  const Shape& s = c_.regs()[x].shape;
  const int64_t rank = static_cast<int64_t>(s.size()) + 1, numel = models::numel(s);
  Shape out;
  if (n->kind().toQualString() == std::string("aten::flatten")) {
    int64_t start = int_of(n->input(1)), end = int_of(n->input(2));
    if (start < 0) start += rank;
    if (end < 0) end += rank;
    if (start < 1) throw Unsupported{"a flatten across the batch dimension"};
    if (start == 1 && end == rank - 1) {
      set_reg(n->output(), c_.flatten(x, name("flatten")));
      return true;
    }
    int64_t merged = 1;
    for (int64_t d = start; d <= end; ++d) merged *= s[d - 1];
    out.assign(s.begin(), s.begin() + (start - 1));
    out.push_back(merged);
    out.insert(out.end(), s.begin() + end, s.end());
  } else {
    // The batch dimension stays first: the batch size (x.size(0)), -1, or the size a trace
    // recorded for it.
    const Val& l = val(n->input(1));
    std::vector<int64_t> target;
    if (l.kind == Val::kInts && !l.ints.empty() && l.batch_at[0]) {
      target = l.ints;
      for (size_t i = 1; i < target.size(); ++i)
        if (l.batch_at[i]) throw Unsupported{"a view with the batch size twice"};
    } else {
      target = ints(n->input(1));
      if (target.empty() || (target[0] != -1 && target[0] != trace_batch_))
        throw Unsupported{"a view that does not keep the batch dimension"};
    }
    out.assign(target.begin() + 1, target.end());
    int64_t known = 1, free = -1;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] == -1 && free < 0 && target[0] != -1) {
        free = static_cast<int64_t>(i);
      } else {
        known *= out[i];
      }
    }
    if (free >= 0 && known > 0) out[free] = numel / known;
    if (models::numel(out) != numel || known <= 0) throw Unsupported{"a view of another size"};
  }
  set_reg(n->output(), c_.view(x, 0, out, name("view")));
  return true;
}

// A narrow / slice of a packed batch [N, total] along the features: one tensor's view.
bool GraphLowering::slice(Node* n) {
  const int x = reg(n->input(0));
  const Shape& s = c_.regs()[x].shape;
  int64_t dim = int_of(n->input(1));
  if (s.size() != 1 || (dim != 1 && dim != -1)) return false;
  int64_t start = 0, length = 0;
  if (n->kind().toQualString() == std::string("aten::narrow")) {
    start = int_of(n->input(2));
    length = int_of(n->input(3));
  } else {
    const c10::IValue& a = constant(n->input(2));
    const c10::IValue& e = constant(n->input(3));
    start = a.isNone() ? 0 : a.toInt();
    int64_t end = e.isNone() ? s[0] : std::min(e.toInt(), s[0]);
    if (int_of(n->input(4)) != 1 || start < 0 || end < 0) return false;
    length = end - start;
  }
  if (start < 0 || length < 0 || start + length > s[0]) return false;
  set_reg(n->output(), c_.view(x, start, Shape{length}, name("unpack")));
  return true;
}

bool GraphLowering::cat(Node* n) {
  const Val& l = val(n->input(0));
  if (l.kind != Val::kRegs || l.regs.empty()) return false;
  if (std::find(l.regs.begin(), l.regs.end(), -1) != l.regs.end()) return false;
  const size_t rank = c_.regs()[l.regs[0]].shape.size();
  for (int r : l.regs)
    if (c_.regs()[r].shape.size() != rank) return false;
  int64_t dim = int_of(n->input(1));
  if (dim < 0) dim += static_cast<int64_t>(rank) + 1;
  if (dim != 1 || (rank != 1 && rank != 3)) return false;
  set_reg(n->output(), rank == 1 ? c_.pack(l.regs, name("pack")) : c_.concat(l.regs, name("cat")));
  return true;
}

bool GraphLowering::linear(Node* n) {
  const std::string k = n->kind().toQualString();
  at::Tensor w_t, bias;
  int x = -1;
  if (k == "aten::linear") {  // (input, weight [out, in], bias)
    x = reg(n->input(0));
    const at::Tensor w = tensor(n->input(1));
    if (!w.defined() || w.dim() != 2) return false;
    w_t = w.t();
    bias = tensor(n->input(2));
  } else if (k == "aten::addmm") {  // (bias, input, weight [in, out], beta, alpha)
    const c10::IValue &beta = constant(n->input(3)), &alpha = constant(n->input(4));
    if (!beta.isScalar() || !alpha.isScalar() || beta.toScalar().toDouble() != 1.0 ||
        alpha.toScalar().toDouble() != 1.0)
      return false;
    bias = tensor(n->input(0));
    x = reg(n->input(1));
    w_t = tensor(n->input(2));
  } else {  // mm / matmul (input, weight [in, out])
    x = reg(n->input(0));
    w_t = tensor(n->input(1));
  }
  if (!w_t.defined() || w_t.dim() != 2 || (bias.defined() && bias.dim() != 1)) return false;
  Value* out = n->output();
  std::string nm = name("linear");
  std::vector<Node*> fused;
  fuse_relu(out, nm, fused);
  const int y = c_.linear(w_t, bias, x, !fused.empty(), nm);
  bind_fused(n, fused, y);
  return true;
}

// layer_norm(input, normalized_shape, weight, bias, eps, cudnn_enable) over the last dimension.
bool GraphLowering::layer_norm(Node* n) {
  const int x = reg(n->input(0));
  const Shape& s = c_.regs()[x].shape;
  if (s.empty() || ints(n->input(1)) != std::vector<int64_t>{s.back()}) return false;
  const c10::IValue& eps = constant(n->input(4));
  if (!eps.isScalar()) return false;
  set_reg(n->output(), c_.layer_norm(tensor(n->input(2)), tensor(n->input(3)),
                                     eps.toScalar().toDouble(), x, name("layer_norm")));
  return true;
}

// gelu(self, approximate="none" | "tanh")
bool GraphLowering::gelu(Node* n) {
  const int x = reg(n->input(0));
  bool tanh = false;
  if (n->inputs().size() > 1) {
    const c10::IValue& a = constant(n->input(1));
    if (!a.isString() || (a.toStringRef() != "none" && a.toStringRef() != "tanh")) return false;
    tanh = a.toStringRef() == "tanh";
  }
  set_reg(n->output(), c_.gelu(tanh, x, name("gelu")));
  return true;
}

// MultiheadAttention's fast path: _native_multi_head_attention(query, key, value, embed_dim,
// num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, need_weights, ...), lowered for
// self-attention without a mask. Its second output (the weights) stays unknown.
bool GraphLowering::attention(Node* n) {
  const int q = reg(n->input(0));
  if (reg(n->input(1)) != q || reg(n->input(2)) != q) return false;
  if (!constant(n->input(9)).isNone()) return false;  // a mask
  set_reg(n->output(0),
          c_.attention(int_of(n->input(4)), tensor(n->input(5)), tensor(n->input(6)),
                       tensor(n->input(7)), tensor(n->input(8)), q, name("attention")));
  return true;
}

bool GraphLowering::identity(Node* n) {
  const std::string k = n->kind().toUnqualString();
  if (k.find("dropout") != std::string::npos && constant(n->input(2)).toBool()) return false;
  set(n->output(), val(n->input(0)));
  return val(n->input(0)).kind == Val::kReg;
}

}  // namespace quilt::backends::detail
