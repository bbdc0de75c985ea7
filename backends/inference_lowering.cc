// Lowering of single ops onto the program's instructions: BN folded into convs, shapes
// inferred, weights laid out for the kernel that will run them, and the fallback for modules
// the fast path cannot express.

#include "backends/inference_compiler.h"

#include "models/efficientnet.h"
#include "models/model.h"

#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/torch.h>

namespace quilt::backends::detail {
namespace {

std::vector<int64_t> vec2(const torch::ExpandingArray<2>& a) { return {(*a)[0], (*a)[1]}; }

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

int Compiler::squeeze_excite(const models::SqueezeExcitationImpl& se, int x,
                             const std::string& name) {
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

int Compiler::conv_transpose(const nn::ConvTranspose2dImpl& c, int x, const std::string& name) {
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

int Compiler::max_pool(const nn::MaxPool2dImpl& p, int x, const std::string& name) {
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

int Compiler::flatten(int64_t start, int64_t end, int x, const std::string& name) {
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

int Compiler::linear(const nn::LinearImpl& l, int x, bool relu, const std::string& name) {
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

int Compiler::batch_norm(const nn::BatchNorm2dImpl& bn, int x, const std::string& name) {
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

int Compiler::fallback(const nn::AnyModule& m, int x, const std::string& name) {
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

}  // namespace quilt::backends::detail
