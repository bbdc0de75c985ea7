// Lowering of single ops onto the program's instructions: BN folded into convs, shapes
// inferred, weights laid out for the kernel that will run them.

#include "backends/inference_compiler.h"

#include "models/model.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace quilt::backends::detail {
namespace {

int64_t pooled(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
  const int64_t eff = d * (k - 1) + 1;
  int64_t num = in + 2 * p - eff;
  int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
  // As in PyTorch: the last window must start inside the input or the left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

}  // namespace

std::string type_name(const nn::Module& m) { return m.name(); }

FoldedConv fold(FoldedConv f, const BatchNormParams* bn) {
  // Fold in double so that the folded weights are as close to the reference as float allows.
  at::Tensor w = f.weight.detach().to(at::kDouble);
  at::Tensor b = f.bias.defined() ? f.bias.detach().to(at::kDouble) : at::Tensor();
  if (bn != nullptr) {
    if (!bn->mean.defined() || !bn->var.defined())
      throw Unsupported{"BatchNorm without running statistics"};
    at::Tensor scale = (bn->var.detach().to(at::kDouble) + bn->eps).rsqrt();
    if (bn->weight.defined()) scale = scale * bn->weight.detach().to(at::kDouble);
    at::Tensor shift = -bn->mean.detach().to(at::kDouble) * scale;
    if (b.defined()) shift = shift + b * scale;
    if (bn->bias.defined()) shift = shift + bn->bias.detach().to(at::kDouble);
    w = w * scale.view({-1, 1, 1, 1});
    b = shift;
  }
  f.weight = w.to(at::kFloat).contiguous();
  f.bias = b.defined() ? b.to(at::kFloat).contiguous() : at::Tensor();
  return f;
}

void Compiler::onednn(Instr& in, const Shape& src, const Shape& dst) {
  in.src_shape = src;
  in.dst_shape = dst;
  in.prims = std::make_shared<Prims>();
}

int Compiler::mkldnn(int x) { return convert(x, Layout::kMkldnn); }

int Compiler::dense(int x) { return convert(x, Layout::kDense); }

int Compiler::convert(int x, Layout layout) {
  if (regs_[x].layout == layout) return x;
  const bool to_mkldnn = layout == Layout::kMkldnn;
  std::map<int, int>& converted = to_mkldnn ? mkldnn_of_ : dense_of_;
  if (auto it = converted.find(x); it != converted.end()) return it->second;
  if (to_mkldnn && regs_[x].shape.size() != 3) throw Unsupported{"oneDNN ops need NCHW tensors"};
  Instr in = to_mkldnn ? op(Code::kToMkldnn, "to_mkldnn") : op(Code::kToDense, "to_dense");
  in.a = x;
  onednn(in, regs_[x].shape, regs_[x].shape);
  int y = emit(std::move(in), Reg{layout, regs_[x].shape, true});
  converted[x] = y;
  return y;
}

int Compiler::eltwise(Code code, int x, const std::string& name) {
  Instr in = op(code, name);
  in.a = x;
  if (regs_[x].layout == Layout::kMkldnn) onednn(in, regs_[x].shape, regs_[x].shape);
  return emit(std::move(in), Reg{regs_[x].layout, regs_[x].shape, false});
}

int Compiler::squeeze_excite(const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                             const at::Tensor& b2, bool hard_gate, int x, const std::string& name) {
  // A blocked input stays blocked (exec_squeeze_excite reads its layout); a dense one, dense.
  const Layout layout = regs_[x].layout;
  const Shape& s = regs_[x].shape;
  if (s.size() != 3 || w1.dim() != 2 || w2.dim() != 2 || s[0] != w1.size(1) ||
      w2.size(1) != w1.size(0) || w2.size(0) != s[0] || !b1.defined() || !b2.defined())
    throw Unsupported{"squeeze-excitation other than 1x1 convs with bias on NCHW"};
  Instr in = op(Code::kSqueezeExcite, name);
  in.a = x;
  in.hard_gate = hard_gate;
  // [in, out] matrices for addmm, as linear() stores them.
  in.weight = w1.detach().t().contiguous();
  in.bias = b1.detach().clone();
  in.weight2 = w2.detach().t().contiguous();
  in.bias2 = b2.detach().clone();
  if (layout == Layout::kMkldnn) onednn(in, s, s);
  return emit(std::move(in), Reg{layout, s, true});
}

int Compiler::conv_transpose(const FoldedConv& c, const std::vector<int64_t>& output_padding, int x,
                             const std::string& name) {
  x = dense(x);
  const Shape& s = regs_[x].shape;
  if (s.size() != 3 || s[0] != c.weight.size(0))
    throw Unsupported{"transposed conv input " + models::to_string(s)};
  Instr in = op(Code::kConvTranspose, name);
  in.a = x;
  in.kernel = c.kernel;
  in.stride = c.stride;
  in.padding = c.padding;
  in.output_size = output_padding;
  in.dilation = c.dilation;
  in.groups = c.groups;
  in.weight = c.weight.detach().clone();
  if (c.bias.defined()) in.bias = c.bias.detach().clone();
  Shape out = {c.weight.size(1) * c.groups};
  for (int i = 0; i < 2; ++i)
    out.push_back((s[1 + i] - 1) * in.stride[i] - 2 * in.padding[i] +
                  in.dilation[i] * (in.kernel[i] - 1) + in.output_size[i] + 1);
  in.flops = 2 * models::numel(s) * c.weight.size(1) * c.kernel[0] * c.kernel[1];
  return emit(std::move(in), Reg{Layout::kDense, out, true});
}

int Compiler::concat(const std::vector<int>& xs, const std::string& name) {
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

int Compiler::conv2d(FoldedConv f, int x, bool relu, const std::string& name) {
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

int Compiler::add(int a, int b, bool relu, const std::string& name) {
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

int Compiler::max_pool(const std::vector<int64_t>& k, const std::vector<int64_t>& s,
                       const std::vector<int64_t>& pad, bool ceil_mode, int x,
                       const std::string& name) {
  if (k.size() != 2 || s.size() != 2 || pad.size() != 2) throw Unsupported{"max pool not 2-D"};
  x = mkldnn(x);
  const Shape& in_shape = regs_[x].shape;
  Shape out = {in_shape[0]};
  for (int i = 0; i < 2; ++i)
    out.push_back(pooled(in_shape[1 + i], k[i], s[i], pad[i], 1, ceil_mode));
  Instr in = op(Code::kMaxPool, name);
  in.a = x;
  onednn(in, in_shape, out);
  in.kernel = k;
  in.stride = s;
  in.padding = pad;
  in.dilation = {1, 1};
  in.ceil_mode = ceil_mode;
  return emit(std::move(in), Reg{Layout::kMkldnn, out, true});
}

int Compiler::adaptive_avg_pool(const std::vector<int64_t>& size, int x, const std::string& name) {
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

int Compiler::view(int x, int64_t offset, const Shape& shape, const std::string& name) {
  x = dense(x);
  if (offset < 0 || offset + models::numel(shape) > models::numel(regs_[x].shape))
    throw Unsupported{fmt::format("view of {} elements at {} of {}", models::numel(shape), offset,
                                  models::to_string(regs_[x].shape))};
  if (offset == 0 && shape == regs_[x].shape) return x;
  Instr in = op(Code::kUnpack, name);
  in.a = x;
  in.offset = offset;
  in.view = shape;
  return emit(std::move(in), Reg{Layout::kDense, shape, false, x});
}

int Compiler::flatten(int x, const std::string& name) {
  x = dense(x);
  Instr in = op(Code::kFlatten, name);
  in.a = x;
  in.start_dim = 1;
  in.end_dim = -1;
  return emit(std::move(in), Reg{Layout::kDense, Shape{models::numel(regs_[x].shape)}, false, x});
}

int Compiler::pack(const std::vector<int>& xs, const std::string& name) {
  if (xs.size() == 1) return flatten(xs[0], name);
  Instr in = op(Code::kPack, name);
  std::vector<Shape> shapes;
  for (int x : xs) {
    in.srcs.push_back(dense(x));
    shapes.push_back(regs_[x].shape);
  }
  return emit(std::move(in), Reg{Layout::kDense, models::packed_shape(shapes), true});
}

int Compiler::linear(const at::Tensor& weight_t, const at::Tensor& bias, int x, bool relu,
                     const std::string& name) {
  x = dense(x);
  const Shape& s = regs_[x].shape;
  if (weight_t.dim() == 2 && s.size() == 2 && s[1] == weight_t.size(0)) {
    // Tokens [T, in] per sample: one oneDNN inner product over the batch's N T rows, the
    // weight packed once (see inference_sequence.cc).
    Instr in = op(Code::kLinear, name);
    in.a = x;
    in.relu = relu;
    in.flops = 2 * s[0] * weight_t.size(0) * weight_t.size(1);
    in.packed = packed_weight(weight_t.t());
    if (bias.defined()) in.bias = bias.detach().to(at::kFloat).clone();
    return emit(std::move(in), Reg{Layout::kDense, Shape{s[0], weight_t.size(1)}, true});
  }
  if (weight_t.dim() != 2 || s.size() != 1 || s[0] != weight_t.size(0))
    throw Unsupported{
        fmt::format("linear of {} features on {}", weight_t.size(0), models::to_string(s))};
  Instr in = op(Code::kLinear, name);
  in.a = x;
  in.relu = relu;
  in.flops = 2 * weight_t.size(0) * weight_t.size(1);
  // Stored [in, out]: OpenBLAS runs x * W^T 2.5x faster at batch 8 from this layout than from
  // a transposed view of [out, in].
  in.weight = weight_t.detach().to(at::kFloat).contiguous().clone();
  if (bias.defined()) in.bias = bias.detach().to(at::kFloat).clone();
  return emit(std::move(in), Reg{Layout::kDense, Shape{weight_t.size(1)}, true});
}

int Compiler::batch_norm(const BatchNormParams& bn, int x, const std::string& name) {
  if (!bn.mean.defined() || !bn.var.defined())
    throw Unsupported{"BatchNorm without running statistics"};
  x = dense(x);
  if (regs_[x].shape.size() != 3) throw Unsupported{"BatchNorm2d on a tensor that is not NCHW"};
  at::Tensor scale = (bn.var.detach().to(at::kDouble) + bn.eps).rsqrt();
  if (bn.weight.defined()) scale = scale * bn.weight.detach().to(at::kDouble);
  at::Tensor shift = -bn.mean.detach().to(at::kDouble) * scale;
  if (bn.bias.defined()) shift = shift + bn.bias.detach().to(at::kDouble);
  Instr in = op(Code::kBatchNorm, name);
  in.a = x;
  in.weight = scale.to(at::kFloat).view({1, -1, 1, 1});
  in.bias = shift.to(at::kFloat).view({1, -1, 1, 1});
  return emit(std::move(in), Reg{Layout::kDense, regs_[x].shape, true});
}

}  // namespace quilt::backends::detail
