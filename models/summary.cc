#include "models/summary.h"

#include "models/autoencoder.h"
#include "models/mlp.h"
#include "models/quilt_model.h"
#include "models/resnet.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <sstream>

namespace quilt::models {
namespace {

using torch::nn::Module;

// "torch::nn::Conv2d(3, 64, kernel_size=[7, 7], ...)" names the layer in messages.
std::string describe(const Module& m) {
  std::ostringstream os;
  m.pretty_print(os);
  return os.str();
}

[[noreturn]] void fail(const Module& m, const std::string& what) {
  throw ModelError(fmt::format("{}: {}", describe(m), what));
}

void expect_rank(const Module& m, const Shape& in, size_t rank, const char* layout) {
  if (in.size() != rank) {
    fail(m, fmt::format("expects a {} input, got {}", layout, to_string(in)));
  }
}

// Output size of a sliding window, as PyTorch computes it for convolutions and pooling.
int64_t window_out(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                   bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1;
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // PyTorch drops a last window that would start entirely in the right padding.
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

int64_t conv2d(const torch::nn::Conv2dImpl& conv, const Shape& in, Shape* out) {
  const auto& o = conv.options;
  expect_rank(conv, in, 3, "{C, H, W}");
  if (in[0] != o.in_channels()) {
    fail(conv,
         fmt::format("expects {} input channels, got shape {}", o.in_channels(), to_string(in)));
  }
  const auto& k = *o.kernel_size();
  const auto& s = *o.stride();
  const auto& d = *o.dilation();
  Shape result = {o.out_channels(), 0, 0};
  for (int i = 0; i < 2; ++i) {
    if (c10::get_if<torch::enumtype::kSame>(&o.padding())) {
      result[i + 1] = in[i + 1];
    } else {
      int64_t pad = 0;
      if (const auto* p = c10::get_if<torch::ExpandingArray<2>>(&o.padding())) pad = (**p)[i];
      result[i + 1] = window_out(in[i + 1], k[i], s[i], pad, d[i], false);
    }
  }
  if (result[1] < 1 || result[2] < 1) {
    fail(conv, fmt::format("input {} is too small for kernel {}x{}", to_string(in), k[0], k[1]));
  }
  *out = result;
  return numel(result) * (o.in_channels() / o.groups()) * k[0] * k[1];
}

int64_t max_pool2d(const torch::nn::MaxPool2dImpl& pool, const Shape& in, Shape* out) {
  const auto& o = pool.options;
  expect_rank(pool, in, 3, "{C, H, W}");
  Shape result = {in[0], 0, 0};
  for (int i = 0; i < 2; ++i) {
    result[i + 1] = window_out(in[i + 1], (*o.kernel_size())[i], (*o.stride())[i],
                               (*o.padding())[i], (*o.dilation())[i], o.ceil_mode());
  }
  if (result[1] < 1 || result[2] < 1) fail(pool, "input " + to_string(in) + " is too small");
  *out = result;
  return 0;
}

int64_t avg_pool2d(const torch::nn::AvgPool2dImpl& pool, const Shape& in, Shape* out) {
  const auto& o = pool.options;
  expect_rank(pool, in, 3, "{C, H, W}");
  Shape result = {in[0], 0, 0};
  for (int i = 0; i < 2; ++i) {
    result[i + 1] = window_out(in[i + 1], (*o.kernel_size())[i], (*o.stride())[i],
                               (*o.padding())[i], 1, o.ceil_mode());
  }
  if (result[1] < 1 || result[2] < 1) fail(pool, "input " + to_string(in) + " is too small");
  *out = result;
  return 0;
}

int64_t linear(const torch::nn::LinearImpl& fc, const Shape& in, Shape* out) {
  const auto& o = fc.options;
  if (in.empty() || in.back() != o.in_features()) {
    fail(fc,
         fmt::format("expects {} input features, got shape {}", o.in_features(), to_string(in)));
  }
  *out = in;
  out->back() = o.out_features();
  return numel(in) * o.out_features();
}

// Per-sample flatten: sample dim i is tensor dim i + 1.
Shape flatten(const torch::nn::FlattenImpl& f, const Shape& in) {
  const int64_t rank = static_cast<int64_t>(in.size()) + 1;
  int64_t start = f.options.start_dim(), end = f.options.end_dim();
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  if (start < 1 || end >= rank || start > end) {
    fail(f, fmt::format("cannot flatten dims {}..{} of a per-sample shape {} (batch dim kept)",
                        f.options.start_dim(), f.options.end_dim(), to_string(in)));
  }
  Shape out(in.begin(), in.begin() + (start - 1));
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= in[i - 1];
  out.push_back(n);
  out.insert(out.end(), in.begin() + end, in.end());
  return out;
}

int64_t chain(const std::vector<const Module*>& modules, const Shape& in, Shape* out) {
  int64_t macs = 0;
  Shape shape = in;
  for (const Module* m : modules) {
    Shape next;
    macs += module_macs(*m, shape, &next);
    shape = std::move(next);
  }
  *out = std::move(shape);
  return macs;
}

template <typename Block>
int64_t residual_block(const Block& block, const std::vector<const Module*>& main, const Shape& in,
                       Shape* out) {
  int64_t macs = chain(main, in, out);
  if (!block.downsample.is_empty()) {
    Shape shortcut;
    macs += module_macs(*block.downsample, in, &shortcut);
    TORCH_INTERNAL_ASSERT(shortcut == *out, "downsample shape ", to_string(shortcut),
                          " != main path ", to_string(*out));
  } else if (in != *out) {
    fail(block, fmt::format("identity shortcut needs equal shapes, got {} -> {}", to_string(in),
                            to_string(*out)));
  }
  return macs;
}

}  // namespace

int64_t module_macs(const Module& m, const Shape& in, Shape* out_ptr) {
  Shape scratch;
  Shape& out = out_ptr ? *out_ptr : scratch;
  if (const auto* conv = dynamic_cast<const torch::nn::Conv2dImpl*>(&m)) {
    return conv2d(*conv, in, &out);
  }
  if (const auto* bn = dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    if (in[0] != bn->options.num_features()) {
      fail(m, fmt::format("expects {} channels, got shape {}", bn->options.num_features(),
                          to_string(in)));
    }
    out = in;
    return 0;
  }
  if (dynamic_cast<const torch::nn::ReLUImpl*>(&m) ||
      dynamic_cast<const torch::nn::DropoutImpl*>(&m) ||
      dynamic_cast<const torch::nn::IdentityImpl*>(&m)) {
    out = in;
    return 0;
  }
  if (const auto* pool = dynamic_cast<const torch::nn::MaxPool2dImpl*>(&m)) {
    return max_pool2d(*pool, in, &out);
  }
  if (const auto* pool = dynamic_cast<const torch::nn::AvgPool2dImpl*>(&m)) {
    return avg_pool2d(*pool, in, &out);
  }
  if (const auto* pool = dynamic_cast<const torch::nn::AdaptiveAvgPool2dImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    const auto& size = *pool->options.output_size();
    out = {in[0], size[0].value_or(in[1]), size[1].value_or(in[2])};
    return 0;
  }
  if (const auto* f = dynamic_cast<const torch::nn::FlattenImpl*>(&m)) {
    out = flatten(*f, in);
    return 0;
  }
  if (const auto* fc = dynamic_cast<const torch::nn::LinearImpl*>(&m)) {
    return linear(*fc, in, &out);
  }
  if (const auto* seq = dynamic_cast<const torch::nn::SequentialImpl*>(&m)) {
    std::vector<const Module*> children;
    for (const auto& child : seq->children()) children.push_back(child.get());
    return chain(children, in, &out);
  }
  if (const auto* b = dynamic_cast<const BottleneckImpl*>(&m)) {
    return residual_block(
        *b,
        {b->conv1.get(), b->bn1.get(), b->conv2.get(), b->bn2.get(), b->conv3.get(), b->bn3.get()},
        in, &out);
  }
  if (const auto* b = dynamic_cast<const BasicBlockImpl*>(&m)) {
    return residual_block(*b, {b->conv1.get(), b->bn1.get(), b->conv2.get(), b->bn2.get()}, in,
                          &out);
  }
  if (const auto* stem = dynamic_cast<const ResNetStemImpl*>(&m)) {
    return chain({stem->conv1.get(), stem->bn1.get(), stem->maxpool.get()}, in, &out);
  }
  if (const auto* head = dynamic_cast<const ResNetHeadImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    return linear(*head->fc, {in[0]}, &out);
  }
  if (const auto* unit = dynamic_cast<const LinearReluImpl*>(&m)) {
    return linear(*unit->fc, in, &out);
  }
  if (const auto* unit = dynamic_cast<const SequentialUnitImpl*>(&m)) {
    return module_macs(*unit->seq, in, &out);
  }
  if (const auto* ae = dynamic_cast<const AutoencoderImpl*>(&m)) {
    if (in != ae->shape()) {
      fail(m, fmt::format("built for {}, got {}", to_string(ae->shape()), to_string(in)));
    }
    return chain({ae->encoder().ptr().get(), ae->decoder().ptr().get()}, in, &out);
  }
  if (const auto* model = dynamic_cast<const ModelImpl*>(&m)) {
    std::vector<const Module*> units;
    for (const auto& u : model->units()) units.push_back(u.module.ptr().get());
    return chain(units, in, &out);
  }
  if (const auto* quilt = dynamic_cast<const QuiltModelImpl*>(&m)) {
    int64_t macs = 0;
    Shape shape = in;
    for (size_t k = 0; k < quilt->num_stages(); ++k) {
      macs += quilt->stage(k).macs;
      shape = quilt->stage(k).out_shape;
    }
    if (in != quilt->stage(0).in_shape) {
      fail(m,
           fmt::format("expects {}, got {}", to_string(quilt->stage(0).in_shape), to_string(in)));
    }
    out = shape;
    return macs;
  }
  throw ModelError(fmt::format(
      "shape inference does not know the layer type {}; supported: Conv2d, BatchNorm2d, ReLU, "
      "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Linear, Dropout, Identity, "
      "Sequential and the zoo's blocks, units and autoencoders",
      describe(m)));
}

int64_t module_flops(const Module& module, const Shape& in, Shape* out) {
  return 2 * module_macs(module, in, out);
}

int64_t count_params(const Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

ModelSummary summarize(Model model) {
  TORCH_INTERNAL_ASSERT(!model.is_empty(), "summarize(nullptr)");
  ModelSummary s;
  s.arch = model->arch();
  s.input_shape = model->input_shape();
  s.num_classes = model->num_classes();
  s.params = count_params(*model);
  s.cuts = model->cuts();
  Shape shape = model->input_shape();
  for (const auto& unit : model->units()) {
    UnitSummary u;
    u.name = unit.name;
    u.in_shape = shape;
    try {
      u.macs = module_macs(*unit.module.ptr(), shape, &u.out_shape);
    } catch (const ModelError& e) {
      throw ModelError(fmt::format("{}: unit {}: {}", s.arch, unit.name, e.what()));
    }
    u.flops = 2 * u.macs;
    u.params = count_params(*unit.module.ptr());
    u.out_bytes = numel(u.out_shape) * static_cast<int64_t>(sizeof(float));
    s.macs += u.macs;
    shape = u.out_shape;
    s.units.push_back(std::move(u));
  }
  s.flops = 2 * s.macs;
  return s;
}

std::string to_string(const ModelSummary& s) {
  std::string text =
      fmt::format("{} input {} classes {}\n", s.arch, to_string(s.input_shape), s.num_classes);
  text += fmt::format("{:<10} {:>14} {:>14} {:>12} {:>12} {:>12}\n", "unit", "in", "out", "GMACs",
                      "params", "out bytes");
  for (const auto& u : s.units) {
    text +=
        fmt::format("{:<10} {:>14} {:>14} {:>12.4f} {:>12} {:>12}\n", u.name, to_string(u.in_shape),
                    to_string(u.out_shape), u.macs * 1e-9, u.params, u.out_bytes);
  }
  text += fmt::format("total: {:.4f} GMACs ({:.4f} GFLOPs), {} params\n", s.macs * 1e-9,
                      s.flops * 1e-9, s.params);
  return text;
}

}  // namespace quilt::models
