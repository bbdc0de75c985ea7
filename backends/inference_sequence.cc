// The stage compiler's ops for sequence models (a ViT's encoder: [T, E] tokens per sample), on
// dense tensors: residual and positional adds, LayerNorm, GELU, self-attention, and the token
// GEMMs of linear layers and attention as oneDNN inner products with weights packed once.
// At one thread a [520, 128] x [128, 384] GEMM took 321 us through oneDNN against 537 us through
// OpenBLAS (python3-torch, this host), and MultiheadAttention's fast path runs its projections
// through OpenBLAS.

#include "backends/inference_compiler.h"
#include "backends/inference_stage.h"
#include "models/model.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

namespace quilt::backends {
namespace detail {

at::Tensor inner_product(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& bias) {
  return at::mkldnn_linear(x.contiguous().to_mkldnn(), packed, bias).to_dense();
}

at::Tensor packed_weight(const at::Tensor& w) {
  return w.detach().to(at::kFloat).contiguous().to_mkldnn();
}

namespace {

at::Tensor plain(const at::Tensor& t) {
  return t.defined() ? t.detach().to(at::kFloat).contiguous().clone() : t;
}

}  // namespace

int Compiler::dense_add(int a, int b, const at::Tensor& c, bool relu, const std::string& name) {
  a = dense(a);
  const Shape& s = regs_[a].shape;
  Instr in = op(Code::kDenseAdd, name);
  in.a = a;
  in.relu = relu;
  if (b >= 0) {
    b = dense(b);
    if (regs_[b].shape != s)
      throw Unsupported{
          fmt::format("add of {} and {}", models::to_string(s), models::to_string(regs_[b].shape))};
    in.b = b;
  } else {
    // A constant [1, ...] or [...] of the per-sample shape (a positional embedding).
    at::Tensor k = c.dim() == static_cast<int64_t>(s.size()) + 1 && c.size(0) == 1 ? c[0] : c;
    if (k.sizes().vec() != s)
      throw Unsupported{fmt::format("add of {} and a constant [{}]", models::to_string(s),
                                    fmt::join(c.sizes(), ", "))};
    in.weight = plain(k);
  }
  in.flops = models::numel(s);
  return emit(std::move(in), Reg{Layout::kDense, s, true});
}

int Compiler::layer_norm(const at::Tensor& weight, const at::Tensor& bias, double eps, int x,
                         const std::string& name) {
  x = dense(x);
  const Shape& s = regs_[x].shape;
  for (const at::Tensor* t : {&weight, &bias})
    if (t->defined() && (t->dim() != 1 || t->size(0) != s.back()))
      throw Unsupported{"a LayerNorm whose affine parameters are not over the last dimension"};
  Instr in = op(Code::kLayerNorm, name);
  in.a = x;
  in.weight = plain(weight);
  in.bias = plain(bias);
  in.eps = eps;
  in.flops = 8 * models::numel(s);
  return emit(std::move(in), Reg{Layout::kDense, s, true});
}

int Compiler::gelu(bool tanh, int x, const std::string& name) {
  x = dense(x);
  Instr in = op(Code::kGelu, name);
  in.a = x;
  in.hard_gate = tanh;
  in.flops = 8 * models::numel(regs_[x].shape);
  return emit(std::move(in), Reg{Layout::kDense, regs_[x].shape, true});
}

int Compiler::attention(int64_t heads, const at::Tensor& qkv_w, const at::Tensor& qkv_b,
                        const at::Tensor& proj_w, const at::Tensor& proj_b, int x,
                        const std::string& name) {
  x = dense(x);
  const Shape& s = regs_[x].shape;
  if (s.size() != 2) throw Unsupported{"attention on a tensor that is not [tokens, features]"};
  const int64_t t = s[0], e = s[1];
  if (heads < 1 || e % heads != 0 || qkv_w.dim() != 2 || qkv_w.size(0) != 3 * e ||
      qkv_w.size(1) != e || proj_w.dim() != 2 || proj_w.size(0) != e || proj_w.size(1) != e)
    throw Unsupported{fmt::format("attention of {} heads on {}", heads, models::to_string(s))};
  Instr in = op(Code::kAttention, name);
  in.a = x;
  in.groups = heads;
  in.packed = packed_weight(qkv_w);
  in.bias = plain(qkv_b);
  in.packed2 = packed_weight(proj_w);
  in.bias2 = plain(proj_b);
  in.flops = 2 * t * e * 4 * e + 4 * t * t * e;
  return emit(std::move(in), Reg{Layout::kDense, s, true});
}

}  // namespace detail

void CompiledStage::Impl::exec_dense_add(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const at::Tensor& b = in.b >= 0 ? regs[in.b] : in.weight;
  dst = in.in_place ? a.add_(b) : at::add(a, b);
  if (in.relu) dst.relu_();
}

void CompiledStage::Impl::exec_layer_norm(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  dst = at::layer_norm(a, {a.size(-1)}, in.weight, in.bias, in.eps);
}

void CompiledStage::Impl::exec_gelu(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const char* approximate = in.hard_gate ? "tanh" : "none";
  dst = in.in_place ? at::gelu_(a, approximate) : at::gelu(a, approximate);
}

void CompiledStage::Impl::exec_attention(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const int64_t n = a.size(0), t = a.size(1), e = a.size(2), h = in.groups, d = e / h;
  // [n t, 3e] -> q, k, v as [n h, t, d]
  at::Tensor qkv = detail::inner_product(a.reshape({n * t, e}), in.packed, in.bias)
                       .view({n, t, 3, h, d})
                       .permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0].mul(1.0 / std::sqrt(static_cast<double>(d))).reshape({n * h, t, d});
  at::Tensor k = qkv[1].reshape({n * h, t, d});
  at::Tensor v = qkv[2].reshape({n * h, t, d});
  at::Tensor w = at::bmm(q, k.transpose(1, 2));
  w = at::_softmax(w, -1, false);
  at::Tensor o = at::bmm(w, v).view({n, h, t, d}).permute({0, 2, 1, 3}).reshape({n * t, e});
  dst = detail::inner_product(o, in.packed2, in.bias2).view({n, t, e});
}

}  // namespace quilt::backends
