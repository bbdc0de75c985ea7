#include "models/summary.h"

#include "models/autoencoder.h"
#include "models/efficientnet.h"
#include "models/mlp.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/torchscript.h"
#include "models/unet.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <sstream>
#include <unordered_map>

namespace quilt::models {
namespace {

using torch::nn::Module;

// Leaf layers visited by module_macs while summarize_layers() traces a unit (null otherwise).
struct TraceRecord {
  const Module* module;
  Shape in, out;
  int64_t macs;
};
thread_local std::vector<TraceRecord>* g_trace = nullptr;

int64_t leaf(const Module& m, const Shape& in, const Shape& out, int64_t macs) {
  if (g_trace) g_trace->push_back(TraceRecord{&m, in, out, macs});
  return macs;
}

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

int64_t conv_transpose2d(const torch::nn::ConvTranspose2dImpl& conv, const Shape& in, Shape* out) {
  const auto& o = conv.options;
  expect_rank(conv, in, 3, "{C, H, W}");
  if (in[0] != o.in_channels()) {
    fail(conv,
         fmt::format("expects {} input channels, got shape {}", o.in_channels(), to_string(in)));
  }
  const auto& k = *o.kernel_size();
  const auto& s = *o.stride();
  const auto& d = *o.dilation();
  const auto& op = *o.output_padding();
  int64_t pad[2] = {0, 0};
  if (const auto* p = c10::get_if<torch::ExpandingArray<2>>(&o.padding())) {
    pad[0] = (**p)[0];
    pad[1] = (**p)[1];
  }
  Shape result = {o.out_channels(), 0, 0};
  for (int i = 0; i < 2; ++i)
    result[i + 1] = (in[i + 1] - 1) * s[i] - 2 * pad[i] + d[i] * (k[i] - 1) + op[i] + 1;
  if (result[1] < 1 || result[2] < 1) {
    fail(conv, fmt::format("input {} gives an empty output", to_string(in)));
  }
  *out = result;
  // Every input pixel scatters a k x k window to out_channels / groups channels.
  return in[1] * in[2] * o.in_channels() * (o.out_channels() / o.groups()) * k[0] * k[1];
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
    // Grouped and depthwise convs: conv2d counts in_channels / groups inputs per output.
    return leaf(m, in, out, conv2d(*conv, in, &out));
  }
  if (const auto* conv = dynamic_cast<const torch::nn::ConvTranspose2dImpl*>(&m)) {
    return leaf(m, in, out, conv_transpose2d(*conv, in, &out));
  }
  if (const auto* bn = dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    if (in[0] != bn->options.num_features()) {
      fail(m, fmt::format("expects {} channels, got shape {}", bn->options.num_features(),
                          to_string(in)));
    }
    out = in;
    return leaf(m, in, out, 0);
  }
  if (dynamic_cast<const torch::nn::ReLUImpl*>(&m) ||
      dynamic_cast<const torch::nn::SiLUImpl*>(&m) ||
      dynamic_cast<const torch::nn::SigmoidImpl*>(&m) ||
      dynamic_cast<const torch::nn::DropoutImpl*>(&m) ||
      dynamic_cast<const torch::nn::IdentityImpl*>(&m)) {
    out = in;
    return leaf(m, in, out, 0);
  }
  if (const auto* pool = dynamic_cast<const torch::nn::MaxPool2dImpl*>(&m)) {
    return leaf(m, in, out, max_pool2d(*pool, in, &out));
  }
  if (const auto* pool = dynamic_cast<const torch::nn::AvgPool2dImpl*>(&m)) {
    return leaf(m, in, out, avg_pool2d(*pool, in, &out));
  }
  if (const auto* pool = dynamic_cast<const torch::nn::AdaptiveAvgPool2dImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    const auto& size = *pool->options.output_size();
    out = {in[0], size[0].value_or(in[1]), size[1].value_or(in[2])};
    return leaf(m, in, out, 0);
  }
  if (const auto* f = dynamic_cast<const torch::nn::FlattenImpl*>(&m)) {
    out = flatten(*f, in);
    return leaf(m, in, out, 0);
  }
  if (const auto* fc = dynamic_cast<const torch::nn::LinearImpl*>(&m)) {
    return leaf(m, in, out, linear(*fc, in, &out));
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
    return module_macs(*head->fc, {in[0]}, &out);
  }
  if (const auto* unit = dynamic_cast<const LinearReluImpl*>(&m)) {
    return module_macs(*unit->fc, in, &out);
  }
  if (const auto* se = dynamic_cast<const SqueezeExcitationImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    Shape scale;
    const int64_t macs = chain({se->fc1.get(), se->fc2.get()}, {in[0], 1, 1}, &scale);
    if (scale[0] != in[0])
      fail(m, fmt::format("scales {} channels of {}", scale[0], to_string(in)));
    out = in;
    return macs;
  }
  if (const auto* b = dynamic_cast<const MBConvImpl*>(&m)) {
    const int64_t macs = module_macs(*b->block, in, &out);
    if (b->use_res_connect && in != out) {
      fail(m,
           fmt::format("residual needs equal shapes, got {} -> {}", to_string(in), to_string(out)));
    }
    return macs;
  }
  if (const auto* head = dynamic_cast<const EfficientNetHeadImpl*>(&m)) {
    expect_rank(m, in, 3, "{C, H, W}");
    return module_macs(*head->classifier, {in[0]}, &out);
  }
  if (const auto* d = dynamic_cast<const DoubleConvImpl*>(&m)) {
    return module_macs(*d->double_conv, in, &out);
  }
  if (const auto* d = dynamic_cast<const DownImpl*>(&m)) {
    return module_macs(*d->maxpool_conv, in, &out);
  }
  if (const auto* o = dynamic_cast<const OutConvImpl*>(&m)) {
    return module_macs(*o->conv, in, &out);
  }
  if (const auto* unit = dynamic_cast<const UNetUnitImpl*>(&m)) {
    if (in != packed_shape(unit->in_shapes())) {
      fail(m, fmt::format("expects {}, got {}", to_string(packed_shape(unit->in_shapes())),
                          to_string(in)));
    }
    const auto& ins = unit->in_shapes();
    Shape y;
    int64_t macs = 0;
    if (unit->kind() == UNetUnitImpl::Kind::kMerge) {
      const auto* up = unit->layer()->as<UpImpl>();
      TORCH_INTERNAL_ASSERT(up != nullptr && ins.size() >= 2, "UNet merge unit without Up");
      Shape upsampled;
      macs += module_macs(*up->up, ins.back(), &upsampled);
      const Shape& skip = ins[ins.size() - 2];
      if (upsampled.size() != 3 || skip.size() != 3 || upsampled[1] != skip[1] ||
          upsampled[2] != skip[2]) {
        fail(m, fmt::format("upsampled {} does not match skip {}", to_string(upsampled),
                            to_string(skip)));
      }
      macs += module_macs(*up->conv, {skip[0] + upsampled[0], skip[1], skip[2]}, &y);
    } else {
      macs += module_macs(*unit->layer(), ins.back(), &y);
    }
    if (y != unit->out_shapes().back()) {
      fail(m, fmt::format("produces {}, declared {}", to_string(y),
                          to_string(unit->out_shapes().back())));
    }
    out = packed_shape(unit->out_shapes());
    return macs;
  }
  if (const auto* seg = dynamic_cast<const ScriptSegmentImpl*>(&m)) {
    // A TorchScript segment runs for the one input shape it was cut for.
    if (in != packed_shape(seg->in_shapes())) {
      fail(m, fmt::format("expects {}, got {}", to_string(packed_shape(seg->in_shapes())),
                          to_string(in)));
    }
    out = packed_shape(seg->out_shapes());
    return seg->macs();
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
  if (const auto* codec = dynamic_cast<const CutCodecImpl*>(&m)) {
    const std::vector<Shape> ins = codec->in_shapes();
    if (in != packed_shape(ins)) {
      fail(m, fmt::format("expects {}, got {}", to_string(packed_shape(ins)), to_string(in)));
    }
    int64_t macs = 0;
    std::vector<Shape> outs;
    for (size_t i = 0; i < ins.size(); ++i) {
      const auto& ae = codec->autoencoders()[i];
      Shape o;
      macs +=
          module_macs(codec->encodes() ? *ae->encoder().ptr() : *ae->decoder().ptr(), ins[i], &o);
      outs.push_back(std::move(o));
    }
    out = packed_shape(outs);
    return macs;
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
      "shape inference does not know the layer type {}; supported: Conv2d, ConvTranspose2d, "
      "BatchNorm2d, ReLU, SiLU, Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, "
      "Linear, Dropout, Identity, "
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

std::vector<LayerSummary> summarize_layers(Model model) {
  TORCH_INTERNAL_ASSERT(!model.is_empty(), "summarize_layers(nullptr)");
  std::unordered_map<const Module*, std::pair<std::string, std::shared_ptr<Module>>> names;
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    names.emplace(item.value().get(), std::make_pair(item.key(), item.value()));
  std::vector<LayerSummary> rows;
  Shape shape = model->input_shape();
  for (const auto& unit : model->units()) {
    std::vector<TraceRecord> trace;
    g_trace = &trace;
    Shape out;
    try {
      module_macs(*unit.module.ptr(), shape, &out);
    } catch (const ModelError& e) {
      g_trace = nullptr;
      throw ModelError(fmt::format("{}: unit {}: {}", model->arch(), unit.name, e.what()));
    }
    g_trace = nullptr;
    for (const auto& t : trace) {
      LayerSummary l;
      l.unit = unit.name;
      auto it = names.find(t.module);
      TORCH_INTERNAL_ASSERT(it != names.end(), "a layer of unit ", unit.name,
                            " is not registered in ", model->arch());
      l.name = it->second.first;
      l.module = it->second.second;
      l.type = t.module->name();
      if (const size_t colon = l.type.rfind("::"); colon != std::string::npos)
        l.type = l.type.substr(colon + 2);
      if (l.type.size() > 4 && l.type.compare(l.type.size() - 4, 4, "Impl") == 0)
        l.type.resize(l.type.size() - 4);
      l.in_shape = t.in;
      l.out_shape = t.out;
      l.macs = t.macs;
      l.flops = 2 * t.macs;
      l.params = count_params(*t.module);
      l.out_bytes = numel(t.out) * static_cast<int64_t>(sizeof(float));
      rows.push_back(std::move(l));
    }
    shape = std::move(out);
  }
  return rows;
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
