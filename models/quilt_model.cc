#include "models/quilt_model.h"

#include "models/summary.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace quilt::models {

std::string autoencoder_module_name(const std::string& cut) {
  // Module names cannot hold dots (they separate the path of a parameter name), and block cuts
  // have them ("after_layer3.2"); no cut name contains '_' where another has '.', so this is
  // one-to-one.
  std::string name = "ae_" + cut;
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

CutTraffic cut_traffic(const CutPoint& cut, const AutoencoderOptions& options) {
  validate(options);
  const bool with_ae = options.rate > 1.0;
  CutTraffic t;
  t.cut = cut.name;
  t.tensors = cut.tensors;
  if (t.tensors.empty()) t.tensors = {CutTensor{"out", cut.shape}};
  std::vector<Shape> shapes;
  for (const auto& tensor : t.tensors) {
    shapes.push_back(tensor.shape);
    t.wire_tensor_shapes.push_back(with_ae ? encoded_shape(tensor.shape, options.rate)
                                           : tensor.shape);
  }
  t.shape = packed_shape(shapes);
  t.wire_shape = packed_shape(t.wire_tensor_shapes);
  t.bytes_per_sample = numel(t.shape) * static_cast<int64_t>(sizeof(float));
  t.wire_bytes_per_sample = numel(t.wire_shape) * static_cast<int64_t>(sizeof(float));
  t.requested_rate = options.rate;
  if (!with_ae) {
    t.effective_rate = 1.0;
  } else if (t.tensors.size() == 1) {
    t.effective_rate =
        effective_rate(t.tensors[0].shape[coded_dim(t.tensors[0].shape)], options.rate);
  } else {
    t.effective_rate =
        static_cast<double>(t.bytes_per_sample) / static_cast<double>(t.wire_bytes_per_sample);
  }
  return t;
}

CutCodecImpl::CutCodecImpl(std::vector<Autoencoder> autoencoders, bool encode)
    : autoencoders_(std::move(autoencoders)), encode_(encode) {
  TORCH_INTERNAL_ASSERT(!autoencoders_.empty(), "CutCodec without autoencoders");
  // Registered in the view only, so that the codec's parameters() are its layers'.
  for (size_t i = 0; i < autoencoders_.size(); ++i)
    register_module(std::to_string(i), autoencoders_[i]);
}

std::vector<Shape> CutCodecImpl::in_shapes() const {
  std::vector<Shape> shapes;
  for (const auto& ae : autoencoders_) shapes.push_back(encode_ ? ae->shape() : ae->code_shape());
  return shapes;
}

torch::Tensor CutCodecImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> parts = unpack(x, in_shapes());
  for (size_t i = 0; i < parts.size(); ++i)
    parts[i] = encode_ ? autoencoders_[i]->encode(parts[i]) : autoencoders_[i]->decode(parts[i]);
  return pack(parts);
}

namespace {

// The cuts named `cuts` of `base`, checked: known, each once, in model order.
std::vector<const CutPoint*> resolve_cuts(const ModelImpl& base,
                                          const std::vector<std::string>& cuts) {
  std::vector<const CutPoint*> points;
  std::map<std::string, size_t> position;  // cut name -> index in base.cuts()
  for (size_t i = 0; i < base.cuts().size(); ++i) position[base.cuts()[i].name] = i;
  for (const auto& name : cuts) {
    const CutPoint& point = base.cut(name);  // throws for unknown names
    for (const CutPoint* p : points) {
      if (p->name == name) {
        throw ModelError(fmt::format("cut \"{}\" given twice for {}; each cut may appear once",
                                     name, base.arch()));
      }
    }
    if (!points.empty() && position[name] < position[points.back()->name]) {
      throw ModelError(fmt::format(
          "cuts must be in model order: \"{}\" comes before \"{}\" in {}; model order: {}", name,
          points.back()->name, base.arch(), base.cut_names()));
    }
    points.push_back(&point);
  }
  return points;
}

}  // namespace

QuiltModelImpl::QuiltModelImpl(Model base, const std::vector<std::string>& cuts,
                               const AutoencoderOptions& options)
    : base_(std::move(base)), options_(options) {
  TORCH_INTERNAL_ASSERT(!base_.is_empty(), "QuiltModel needs a base model");
  validate(options);

  // Resolve and order-check the cuts before building anything.
  const std::vector<const CutPoint*> points = resolve_cuts(*base_, cuts);

  // The base model's layers are registered directly (no prefix) so that the state_dict keeps
  // the reference names; the views in base_->units() share them.
  for (const auto& child : base_->named_children()) register_module(child.key(), child.value());
  // A TorchScript model's top-level module may hold tensors of its own (the zoo's do not).
  for (const auto& p : base_->named_parameters(/*recurse=*/false))
    register_parameter(p.key(), p.value(), p.value().requires_grad());
  for (const auto& b : base_->named_buffers(/*recurse=*/false)) register_buffer(b.key(), b.value());

  for (const CutPoint* p : points) add_cut_autoencoders(*p);
  const ModelSummary summary = summarize(base_);
  size_t first = 0;
  for (size_t k = 0; k <= points.size(); ++k) {
    const size_t end = k < points.size() ? points[k]->after_unit + 1 : base_->units().size();
    stages_.push_back(stage_spec(summary, k, first, end));
    first = end;
  }
}

void QuiltModelImpl::add_cut_autoencoders(const CutPoint& cut) {
  const bool with_ae = options_.rate > 1.0;
  CutTraffic t = cut_traffic(cut, options_);
  std::vector<Autoencoder> aes;
  torch::nn::AnyModule encoder, decoder;
  if (with_ae && t.tensors.size() == 1) {
    aes.push_back(register_module(autoencoder_module_name(cut.name),
                                  Autoencoder(t.tensors[0].shape, options_)));
    encoder = aes[0]->encoder();
    decoder = aes[0]->decoder();
  } else if (with_ae) {
    torch::nn::ModuleList list;
    for (const auto& tensor : t.tensors) {
      aes.emplace_back(tensor.shape, options_);
      list->push_back(aes.back());
    }
    register_module(autoencoder_module_name(cut.name), list);
    encoder = torch::nn::AnyModule(CutCodec(aes, true));
    decoder = torch::nn::AnyModule(CutCodec(aes, false));
  }
  autoencoders_.push_back(std::move(aes));
  encoders_.push_back(std::move(encoder));
  decoders_.push_back(std::move(decoder));
  traffic_.push_back(std::move(t));
}

StageSpec QuiltModelImpl::stage_spec(const ModelSummary& summary, size_t k, size_t first,
                                     size_t end) const {
  StageSpec s;
  s.first_unit = first;
  s.end_unit = end;
  s.in_shape = summary.units[s.first_unit].in_shape;
  s.out_shape = summary.units[s.end_unit - 1].out_shape;
  for (size_t u = s.first_unit; u < s.end_unit; ++u) {
    s.macs += summary.units[u].macs;
    s.params += summary.units[u].params;
  }
  if (k > 0 && !autoencoders_[k - 1].empty()) {
    s.in_shape = traffic_[k - 1].wire_shape;
    for (const auto& ae : autoencoders_[k - 1]) {
      s.macs += module_macs(*ae->decoder().ptr(), ae->code_shape(), nullptr);
      s.params += count_params(*ae->decoder().ptr());
    }
  }
  if (k < autoencoders_.size() && !autoencoders_[k].empty()) {
    s.out_shape = traffic_[k].wire_shape;
    for (const auto& ae : autoencoders_[k]) {
      s.macs += module_macs(*ae->encoder().ptr(), ae->shape(), nullptr);
      s.params += count_params(*ae->encoder().ptr());
    }
  }
  s.flops = 2 * s.macs;
  // Two cuts at the same place cannot happen (names are unique, one cut per unit boundary).
  TORCH_INTERNAL_ASSERT(s.first_unit < s.end_unit, "empty stage ", k);
  return s;
}

Autoencoder QuiltModelImpl::autoencoder(size_t k) const {
  const auto& aes = autoencoders_.at(k);
  if (aes.empty()) return Autoencoder{nullptr};
  if (aes.size() > 1) {
    throw ModelError(fmt::format(
        "cut {} of {} carries {} tensors with one autoencoder each; use autoencoders({})",
        traffic_.at(k).cut, base_->arch(), aes.size(), k));
  }
  return aes[0];
}

const std::vector<Autoencoder>& QuiltModelImpl::autoencoders(size_t k) const {
  return autoencoders_.at(k);
}

torch::Tensor QuiltModelImpl::encode(size_t k, torch::Tensor x) {
  TORCH_CHECK(k < traffic_.size(), "cut ", k, " out of range: ", traffic_.size(), " cuts");
  return encoders_[k].is_empty() ? x : encoders_[k].forward<torch::Tensor>(std::move(x));
}

torch::Tensor QuiltModelImpl::decode(size_t k, torch::Tensor x) {
  TORCH_CHECK(k < traffic_.size(), "cut ", k, " out of range: ", traffic_.size(), " cuts");
  return decoders_[k].is_empty() ? x : decoders_[k].forward<torch::Tensor>(std::move(x));
}

torch::nn::AnyModule QuiltModelImpl::encoder_module(size_t k) const { return encoders_.at(k); }

torch::nn::AnyModule QuiltModelImpl::decoder_module(size_t k) const { return decoders_.at(k); }

torch::Tensor QuiltModelImpl::forward_stage(size_t k, torch::Tensor x) {
  TORCH_CHECK(k < stages_.size(), "stage ", k, " out of range: ", stages_.size(), " stages");
  if (k > 0) x = decode(k - 1, std::move(x));
  x = base_->forward_units(std::move(x), stages_[k].first_unit, stages_[k].end_unit);
  if (k + 1 < stages_.size()) x = encode(k, std::move(x));
  return x;
}

torch::Tensor QuiltModelImpl::forward(torch::Tensor x) {
  for (size_t k = 0; k < stages_.size(); ++k) x = forward_stage(k, std::move(x));
  return x;
}

std::vector<torch::Tensor> QuiltModelImpl::autoencoder_parameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& aes : autoencoders_) {
    for (const auto& ae : aes) {
      for (const auto& p : ae->parameters()) params.push_back(p);
    }
  }
  return params;
}

void QuiltModelImpl::train(bool on) {
  torch::nn::Module::train(on);
  // The base model itself is not a registered child (its layers are), so set it explicitly.
  base_->train(on);
}

}  // namespace quilt::models
