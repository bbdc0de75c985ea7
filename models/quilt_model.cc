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

QuiltModelImpl::QuiltModelImpl(Model base, const std::vector<std::string>& cuts,
                               const AutoencoderOptions& options)
    : base_(std::move(base)), options_(options) {
  TORCH_INTERNAL_ASSERT(!base_.is_empty(), "QuiltModel needs a base model");
  validate(options);

  // Resolve and order-check the cuts before building anything.
  std::vector<const CutPoint*> points;
  std::map<std::string, size_t> position;  // cut name -> index in base_->cuts()
  for (size_t i = 0; i < base_->cuts().size(); ++i) position[base_->cuts()[i].name] = i;
  for (const auto& name : cuts) {
    const CutPoint& point = base_->cut(name);  // throws for unknown names
    for (const CutPoint* p : points) {
      if (p->name == name) {
        throw ModelError(fmt::format("cut \"{}\" given twice for {}; each cut may appear once",
                                     name, base_->arch()));
      }
    }
    if (!points.empty() && position[name] < position[points.back()->name]) {
      throw ModelError(fmt::format(
          "cuts must be in model order: \"{}\" comes before \"{}\" in {}; model order: {}", name,
          points.back()->name, base_->arch(), base_->cut_names()));
    }
    points.push_back(&point);
  }

  // The base model's layers are registered directly (no prefix) so that the state_dict keeps
  // the reference names; the views in base_->units() share them.
  for (const auto& child : base_->named_children()) register_module(child.key(), child.value());

  const bool with_ae = options.rate > 1.0;
  for (const CutPoint* p : points) {
    Autoencoder ae{nullptr};
    if (with_ae)
      ae = register_module(autoencoder_module_name(p->name), Autoencoder(p->shape, options));
    autoencoders_.push_back(ae);

    CutTraffic t;
    t.cut = p->name;
    t.shape = p->shape;
    t.wire_shape = with_ae ? ae->code_shape() : p->shape;
    t.bytes_per_sample = numel(t.shape) * static_cast<int64_t>(sizeof(float));
    t.wire_bytes_per_sample = numel(t.wire_shape) * static_cast<int64_t>(sizeof(float));
    t.requested_rate = options.rate;
    t.effective_rate = with_ae ? effective_rate(p->shape[0], options.rate) : 1.0;
    traffic_.push_back(std::move(t));
  }

  const ModelSummary summary = summarize(base_);
  size_t first = 0;
  for (size_t k = 0; k <= points.size(); ++k) {
    StageSpec s;
    s.first_unit = first;
    s.end_unit = k < points.size() ? points[k]->after_unit + 1 : base_->units().size();
    s.in_shape = summary.units[s.first_unit].in_shape;
    s.out_shape = summary.units[s.end_unit - 1].out_shape;
    for (size_t u = s.first_unit; u < s.end_unit; ++u) {
      s.macs += summary.units[u].macs;
      s.params += summary.units[u].params;
    }
    if (k > 0 && !autoencoders_[k - 1].is_empty()) {
      const auto& ae = autoencoders_[k - 1];
      s.in_shape = ae->code_shape();
      s.macs += module_macs(*ae->decoder().ptr(), ae->code_shape(), nullptr);
      s.params += count_params(*ae->decoder().ptr());
    }
    if (k < points.size() && !autoencoders_[k].is_empty()) {
      const auto& ae = autoencoders_[k];
      s.out_shape = ae->code_shape();
      s.macs += module_macs(*ae->encoder().ptr(), ae->shape(), nullptr);
      s.params += count_params(*ae->encoder().ptr());
    }
    s.flops = 2 * s.macs;
    // Two cuts at the same place cannot happen (names are unique, one cut per unit boundary).
    TORCH_INTERNAL_ASSERT(s.first_unit < s.end_unit, "empty stage ", k);
    first = s.end_unit;
    stages_.push_back(std::move(s));
  }
}

Autoencoder QuiltModelImpl::autoencoder(size_t k) const { return autoencoders_.at(k); }

torch::Tensor QuiltModelImpl::forward_stage(size_t k, torch::Tensor x) {
  TORCH_CHECK(k < stages_.size(), "stage ", k, " out of range: ", stages_.size(), " stages");
  if (k > 0 && !autoencoders_[k - 1].is_empty()) x = autoencoders_[k - 1]->decode(std::move(x));
  x = base_->forward_units(std::move(x), stages_[k].first_unit, stages_[k].end_unit);
  if (k + 1 < stages_.size() && !autoencoders_[k].is_empty()) {
    x = autoencoders_[k]->encode(std::move(x));
  }
  return x;
}

torch::Tensor QuiltModelImpl::forward(torch::Tensor x) {
  for (size_t k = 0; k < stages_.size(); ++k) x = forward_stage(k, std::move(x));
  return x;
}

std::vector<torch::Tensor> QuiltModelImpl::autoencoder_parameters() const {
  std::vector<torch::Tensor> params;
  for (const auto& ae : autoencoders_) {
    if (ae.is_empty()) continue;
    for (const auto& p : ae->parameters()) params.push_back(p);
  }
  return params;
}

void QuiltModelImpl::train(bool on) {
  torch::nn::Module::train(on);
  // The base model itself is not a registered child (its layers are), so set it explicitly.
  base_->train(on);
}

}  // namespace quilt::models
