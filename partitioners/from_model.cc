#include "partitioners/from_model.h"

#include "models/summary.h"
#include "partitioners/error.h"

#include <fmt/format.h>

#include <cmath>

namespace quilt::partitioners {

ModelProfile profile_model(const models::Model& model, const FromModelOptions& options) {
  const models::ModelSummary summary = models::summarize(model);
  ModelProfile profile;
  profile.name = options.name.empty() ? summary.arch : options.name;
  profile.input_bytes = kFloatBytes * models::numel(summary.input_shape);
  profile.layers.reserve(summary.units.size());
  for (size_t i = 0; i < summary.units.size(); ++i) {
    const models::UnitSummary& u = summary.units[i];
    LayerProfile layer;
    layer.name = u.name;
    layer.flops = u.flops;
    layer.params = u.params;
    layer.out_bytes = u.out_bytes;
    layer.cut_allowed = false;
    // The model's cut list is the authority on where a cut may go (and what crosses it): the
    // unit summary's output shape is the same tensor, but a unit without a declared cut must
    // stay whole.
    for (const models::CutPoint& c : summary.cuts) {
      if (c.after_unit != i) continue;
      layer.cut_allowed = true;
      // One entry per crossing tensor (UNet's skips each cost an autoencoder and their own
      // bytes); a single tensor keeps the label "out".
      if (c.tensors.size() <= 1) {
        layer.crossing.push_back(CrossingTensor{"out", c.shape});
      } else {
        for (const models::CutTensor& t : c.tensors)
          layer.crossing.push_back(CrossingTensor{t.name, t.shape});
      }
    }
    profile.layers.push_back(std::move(layer));
  }
  validate(profile);
  return profile;
}

void add_measured_s(ModelProfile& profile, const std::string& board,
                    const std::vector<double>& seconds_per_sample) {
  if (board.empty()) {
    throw PartitionError("add_measured_s: the board name is empty; name the board profile");
  }
  if (seconds_per_sample.size() != profile.layers.size()) {
    throw PartitionError(fmt::format(
        "add_measured_s: {} measured time(s) for {} layer(s) of '{}'; give one per layer",
        seconds_per_sample.size(), profile.layers.size(), profile.name));
  }
  for (size_t i = 0; i < seconds_per_sample.size(); ++i) {
    const double s = seconds_per_sample[i];
    if (!std::isfinite(s) || s < 0) {
      throw PartitionError(fmt::format(
          "add_measured_s: layer '{}' of '{}': {} s per sample is invalid; it must be finite and "
          ">= 0",
          profile.layers[i].name, profile.name, s));
    }
    profile.layers[i].measured_s[board] = s;
  }
}

std::string cut_after_layer(const models::Model& model, int64_t layer) {
  for (const models::CutPoint& c : model->cuts()) {
    if (static_cast<int64_t>(c.after_unit) == layer) return c.name;
  }
  const auto& units = model->units();
  const std::string unit = layer >= 0 && layer < static_cast<int64_t>(units.size())
                               ? units[static_cast<size_t>(layer)].name
                               : fmt::format("#{}", layer);
  throw PartitionError(fmt::format("{} has no cut after unit {}; valid cuts: {}", model->arch(),
                                   unit, model->cut_names()));
}

std::vector<std::string> model_cut_names(const models::Model& model, const SearchResult& result) {
  std::vector<std::string> names;
  names.reserve(result.cuts.size());
  for (int64_t layer : result.cuts) names.push_back(cut_after_layer(model, layer));
  return names;
}

std::vector<int64_t> layers_of_cuts(const models::Model& model,
                                    const std::vector<std::string>& cut_names) {
  std::vector<int64_t> layers;
  layers.reserve(cut_names.size());
  for (const auto& name : cut_names) {
    layers.push_back(static_cast<int64_t>(model->cut(name).after_unit));
  }
  return layers;
}

}  // namespace quilt::partitioners
