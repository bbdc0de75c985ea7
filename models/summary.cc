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

#include <array>
#include <functional>
#include <optional>
#include <sstream>
#include <type_traits>
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

// The kernel, stride and dilation of a Conv2d or ConvTranspose2d, which takes {in_channels, H, W}.
struct ConvWindow {
  std::array<int64_t, 2> k, s, d;
};

template <typename Conv>
ConvWindow conv_window(const Conv& conv, const Shape& in) {
  expect_rank(conv, in, 3, "{C, H, W}");
  const auto& o = conv.options;
  if (in[0] != o.in_channels()) {
    fail(conv,
         fmt::format("expects {} input channels, got shape {}", o.in_channels(), to_string(in)));
  }
  return ConvWindow{*o.kernel_size(), *o.stride(), *o.dilation()};
}

int64_t conv2d(const torch::nn::Conv2dImpl& conv, const Shape& in, Shape& out) {
  const auto& o = conv.options;
  const auto [k, s, d] = conv_window(conv, in);
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
  out = result;
  // Grouped and depthwise convs: in_channels / groups inputs per output.
  return numel(result) * (o.in_channels() / o.groups()) * k[0] * k[1];
}

int64_t conv_transpose2d(const torch::nn::ConvTranspose2dImpl& conv, const Shape& in, Shape& out) {
  const auto& o = conv.options;
  const auto [k, s, d] = conv_window(conv, in);
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
  out = result;
  // Every input pixel scatters a k x k window to out_channels / groups channels.
  return in[1] * in[2] * o.in_channels() * (o.out_channels() / o.groups()) * k[0] * k[1];
}

// MaxPool2d or AvgPool2d (no dilation: 1).
template <typename Pool>
int64_t pool2d(const Pool& pool, const Shape& in, Shape& out) {
  const auto& o = pool.options;
  expect_rank(pool, in, 3, "{C, H, W}");
  Shape result = {in[0], 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t dilation = 1;
    if constexpr (std::is_same_v<Pool, torch::nn::MaxPool2dImpl>) dilation = (*o.dilation())[i];
    result[i + 1] = window_out(in[i + 1], (*o.kernel_size())[i], (*o.stride())[i],
                               (*o.padding())[i], dilation, o.ceil_mode());
  }
  if (result[1] < 1 || result[2] < 1) fail(pool, "input " + to_string(in) + " is too small");
  out = result;
  return 0;
}

int64_t batch_norm2d(const torch::nn::BatchNorm2dImpl& bn, const Shape& in, Shape& out) {
  expect_rank(bn, in, 3, "{C, H, W}");
  if (in[0] != bn.options.num_features()) {
    fail(bn, fmt::format("expects {} channels, got shape {}", bn.options.num_features(),
                         to_string(in)));
  }
  out = in;
  return 0;
}

int64_t adaptive_avg_pool2d(const torch::nn::AdaptiveAvgPool2dImpl& pool, const Shape& in,
                            Shape& out) {
  expect_rank(pool, in, 3, "{C, H, W}");
  const auto& size = *pool.options.output_size();
  out = {in[0], size[0].value_or(in[1]), size[1].value_or(in[2])};
  return 0;
}

int64_t linear(const torch::nn::LinearImpl& fc, const Shape& in, Shape& out) {
  const auto& o = fc.options;
  if (in.empty() || in.back() != o.in_features()) {
    fail(fc,
         fmt::format("expects {} input features, got shape {}", o.in_features(), to_string(in)));
  }
  out = in;
  out.back() = o.out_features();
  return numel(in) * o.out_features();
}

// Per-sample flatten: sample dim i is tensor dim i + 1.
int64_t flatten(const torch::nn::FlattenImpl& f, const Shape& in, Shape& out) {
  const int64_t rank = static_cast<int64_t>(in.size()) + 1;
  int64_t start = f.options.start_dim(), end = f.options.end_dim();
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  if (start < 1 || end >= rank || start > end) {
    fail(f, fmt::format("cannot flatten dims {}..{} of a per-sample shape {} (batch dim kept)",
                        f.options.start_dim(), f.options.end_dim(), to_string(in)));
  }
  Shape result(in.begin(), in.begin() + (start - 1));
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= in[i - 1];
  result.push_back(n);
  result.insert(result.end(), in.begin() + end, in.end());
  out = std::move(result);
  return 0;
}

// Elementwise layers (activations, dropout, identity).
int64_t same_shape(const Module&, const Shape& in, Shape& out) {
  out = in;
  return 0;
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

// A unit that runs for the one packed input shape it was built for must get it.
void expect_packed(const Module& m, const std::vector<Shape>& shapes, const Shape& in) {
  if (in != packed_shape(shapes)) {
    fail(m, fmt::format("expects {}, got {}", to_string(packed_shape(shapes)), to_string(in)));
  }
}

int64_t squeeze_excitation(const SqueezeExcitationImpl& se, const Shape& in, Shape& out) {
  expect_rank(se, in, 3, "{C, H, W}");
  Shape scale;
  const int64_t macs = chain({se.fc1.get(), se.fc2.get()}, {in[0], 1, 1}, &scale);
  if (scale[0] != in[0]) fail(se, fmt::format("scales {} channels of {}", scale[0], to_string(in)));
  out = in;
  return macs;
}

int64_t mbconv(const MBConvImpl& b, const Shape& in, Shape& out) {
  const int64_t macs = module_macs(*b.block, in, &out);
  if (b.use_res_connect && in != out) {
    fail(b,
         fmt::format("residual needs equal shapes, got {} -> {}", to_string(in), to_string(out)));
  }
  return macs;
}

int64_t unet_unit(const UNetUnitImpl& unit, const Shape& in, Shape& out) {
  expect_packed(unit, unit.in_shapes(), in);
  const auto& ins = unit.in_shapes();
  Shape y;
  int64_t macs = 0;
  if (unit.kind() == UNetUnitImpl::Kind::kMerge) {
    const auto* up = unit.layer()->as<UpImpl>();
    TORCH_INTERNAL_ASSERT(up != nullptr && ins.size() >= 2, "UNet merge unit without Up");
    Shape upsampled;
    macs += module_macs(*up->up, ins.back(), &upsampled);
    const Shape& skip = ins[ins.size() - 2];
    if (upsampled.size() != 3 || skip.size() != 3 || upsampled[1] != skip[1] ||
        upsampled[2] != skip[2]) {
      fail(unit, fmt::format("upsampled {} does not match skip {}", to_string(upsampled),
                             to_string(skip)));
    }
    macs += module_macs(*up->conv, {skip[0] + upsampled[0], skip[1], skip[2]}, &y);
  } else {
    macs += module_macs(*unit.layer(), ins.back(), &y);
  }
  if (y != unit.out_shapes().back()) {
    fail(unit, fmt::format("produces {}, declared {}", to_string(y),
                           to_string(unit.out_shapes().back())));
  }
  out = packed_shape(unit.out_shapes());
  return macs;
}

// A TorchScript segment runs for the one input shape it was cut for.
int64_t script_segment(const ScriptSegmentImpl& seg, const Shape& in, Shape& out) {
  expect_packed(seg, seg.in_shapes(), in);
  out = packed_shape(seg.out_shapes());
  return seg.macs();
}

int64_t autoencoder(const AutoencoderImpl& ae, const Shape& in, Shape& out) {
  if (in != ae.shape()) {
    fail(ae, fmt::format("built for {}, got {}", to_string(ae.shape()), to_string(in)));
  }
  return chain({ae.encoder().ptr().get(), ae.decoder().ptr().get()}, in, &out);
}

int64_t cut_codec(const CutCodecImpl& codec, const Shape& in, Shape& out) {
  const std::vector<Shape> ins = codec.in_shapes();
  expect_packed(codec, ins, in);
  int64_t macs = 0;
  std::vector<Shape> outs;
  for (size_t i = 0; i < ins.size(); ++i) {
    const auto& ae = codec.autoencoders()[i];
    Shape o;
    macs += module_macs(codec.encodes() ? *ae->encoder().ptr() : *ae->decoder().ptr(), ins[i], &o);
    outs.push_back(std::move(o));
  }
  out = packed_shape(outs);
  return macs;
}

int64_t quilt_model(const QuiltModelImpl& quilt, const Shape& in, Shape& out) {
  int64_t macs = 0;
  Shape shape = in;
  for (size_t k = 0; k < quilt.num_stages(); ++k) {
    macs += quilt.stage(k).macs;
    shape = quilt.stage(k).out_shape;
  }
  if (in != quilt.stage(0).in_shape) {
    fail(quilt,
         fmt::format("expects {}, got {}", to_string(quilt.stage(0).in_shape), to_string(in)));
  }
  out = shape;
  return macs;
}

// One rule of module_macs: for a module of its type, the MACs per sample (and the output
// shape in `out`); nullopt for a module of another type.
using Rule = std::function<std::optional<int64_t>(const Module&, const Shape&, Shape&)>;

// The rule `f(const T&, in, out) -> MACs` for modules of type T.
template <typename T, typename F>
Rule rule(F f) {
  return [f](const Module& m, const Shape& in, Shape& out) -> std::optional<int64_t> {
    const auto* t = dynamic_cast<const T*>(&m);
    if (t == nullptr) return std::nullopt;
    return f(*t, in, out);
  };
}

// The rule of a leaf layer, which summarize_layers() also records.
template <typename T, typename F>
Rule leaf_rule(F f) {
  return rule<T>([f](const T& t, const Shape& in, Shape& out) {
    const int64_t macs = f(t, in, out);
    return leaf(t, in, out, macs);
  });
}

// The rule of a container: the MACs of its parts, run in order.
template <typename T, typename F>
Rule chain_rule(F parts) {
  return rule<T>(
      [parts](const T& t, const Shape& in, Shape& out) { return chain(parts(t), in, &out); });
}

// The rules in the order they are tried (a subclass before its base).
const std::vector<Rule>& rules() {
  using Modules = std::vector<const Module*>;
  static const std::vector<Rule> kRules = {
      leaf_rule<torch::nn::Conv2dImpl>(conv2d),
      leaf_rule<torch::nn::ConvTranspose2dImpl>(conv_transpose2d),
      leaf_rule<torch::nn::BatchNorm2dImpl>(batch_norm2d),
      leaf_rule<torch::nn::ReLUImpl>(same_shape),
      leaf_rule<torch::nn::SiLUImpl>(same_shape),
      leaf_rule<torch::nn::SigmoidImpl>(same_shape),
      leaf_rule<torch::nn::DropoutImpl>(same_shape),
      leaf_rule<torch::nn::IdentityImpl>(same_shape),
      leaf_rule<torch::nn::MaxPool2dImpl>(pool2d<torch::nn::MaxPool2dImpl>),
      leaf_rule<torch::nn::AvgPool2dImpl>(pool2d<torch::nn::AvgPool2dImpl>),
      leaf_rule<torch::nn::AdaptiveAvgPool2dImpl>(adaptive_avg_pool2d),
      leaf_rule<torch::nn::FlattenImpl>(flatten),
      leaf_rule<torch::nn::LinearImpl>(linear),
      chain_rule<torch::nn::SequentialImpl>([](const torch::nn::SequentialImpl& seq) {
        Modules children;
        for (const auto& child : seq.children()) children.push_back(child.get());
        return children;
      }),
      rule<BottleneckImpl>([](const BottleneckImpl& b, const Shape& in, Shape& out) {
        return residual_block(
            b, {b.conv1.get(), b.bn1.get(), b.conv2.get(), b.bn2.get(), b.conv3.get(), b.bn3.get()},
            in, &out);
      }),
      rule<BasicBlockImpl>([](const BasicBlockImpl& b, const Shape& in, Shape& out) {
        return residual_block(b, {b.conv1.get(), b.bn1.get(), b.conv2.get(), b.bn2.get()}, in,
                              &out);
      }),
      chain_rule<ResNetStemImpl>([](const ResNetStemImpl& stem) {
        return Modules{stem.conv1.get(), stem.bn1.get(), stem.maxpool.get()};
      }),
      rule<ResNetHeadImpl>([](const ResNetHeadImpl& head, const Shape& in, Shape& out) {
        expect_rank(head, in, 3, "{C, H, W}");
        return module_macs(*head.fc, {in[0]}, &out);
      }),
      chain_rule<LinearReluImpl>([](const LinearReluImpl& unit) { return Modules{unit.fc.get()}; }),
      rule<SqueezeExcitationImpl>(squeeze_excitation),
      rule<MBConvImpl>(mbconv),
      rule<EfficientNetHeadImpl>([](const EfficientNetHeadImpl& head, const Shape& in, Shape& out) {
        expect_rank(head, in, 3, "{C, H, W}");
        return module_macs(*head.classifier, {in[0]}, &out);
      }),
      chain_rule<DoubleConvImpl>(
          [](const DoubleConvImpl& d) { return Modules{d.double_conv.get()}; }),
      chain_rule<DownImpl>([](const DownImpl& d) { return Modules{d.maxpool_conv.get()}; }),
      chain_rule<OutConvImpl>([](const OutConvImpl& o) { return Modules{o.conv.get()}; }),
      rule<UNetUnitImpl>(unet_unit),
      rule<ScriptSegmentImpl>(script_segment),
      chain_rule<SequentialUnitImpl>(
          [](const SequentialUnitImpl& unit) { return Modules{unit.seq.get()}; }),
      rule<AutoencoderImpl>(autoencoder),
      rule<CutCodecImpl>(cut_codec),
      chain_rule<ModelImpl>([](const ModelImpl& model) {
        Modules units;
        for (const auto& u : model.units()) units.push_back(u.module.ptr().get());
        return units;
      }),
      rule<QuiltModelImpl>(quilt_model),
  };
  return kRules;
}

}  // namespace

int64_t module_macs(const Module& m, const Shape& in, Shape* out_ptr) {
  Shape scratch;
  Shape& out = out_ptr ? *out_ptr : scratch;
  for (const Rule& r : rules()) {
    if (const auto macs = r(m, in, out)) return *macs;
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
