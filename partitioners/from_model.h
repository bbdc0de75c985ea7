#pragma once
// Layer profiles of a zoo model, from shape inference (models::summarize): one LayerProfile per
// unit of the model (ResNet: stem, one per residual block, head), with the tensors that cross a
// cut placed after it. The model is never run. This is the one part of partitioners/ that knows
// models/ (LibTorch); it is its own library (quilt::partitioners_from_model) so that the core
// (profile, cost model, search) stays free of LibTorch.

#include "models/model.h"
#include "partitioners/profile.h"
#include "partitioners/search.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::partitioners {

/// Options of profile_model().
struct FromModelOptions {
  /// ModelProfile::name; empty = the model's arch ("resnet50").
  std::string name;
};

/// The model's units as partitioners see them, in model order: name = unit name, flops and params
/// per sample from models::summarize, out_bytes = float32 bytes of the unit's output per sample,
/// cut_allowed = whether the model declares a cut after the unit, and then `crossing` = the
/// tensors that cross that cut: the unit's output, named "out", where one tensor crosses; one
/// entry per tensor, named and ordered as models::CutPoint::tensors, where several do (UNet:
/// after_down2 crosses inc, down1, down2), so the cost model charges each its bytes and its
/// autoencoder. out_bytes stays the unit's (packed) output. input_bytes = float32 bytes of one
/// input sample. measured_s is left empty (see add_measured_s). Throws models::ModelError when the
/// model's input shape does not fit its layers. Never runs the model; pure apart from reading it.
ModelProfile profile_model(const models::Model& model, const FromModelOptions& options = {});

/// Sets layers[i].measured_s[board] = seconds_per_sample[i] for every layer. Throws
/// PartitionError unless there is one finite value >= 0 per layer and `board` is non-empty.
void add_measured_s(ModelProfile& profile, const std::string& board,
                    const std::vector<double>& seconds_per_sample);

/// The name of the model's cut after unit `layer` ("after_layer3"). Throws PartitionError naming
/// the unit when the model has no cut there (the last unit, or a unit that allows none).
std::string cut_after_layer(const models::Model& model, int64_t layer);

/// The cut names of a search result in the model's vocabulary (what experiment files and
/// models::QuiltModel take): cut_after_layer for each of result.cuts.
std::vector<std::string> model_cut_names(const models::Model& model, const SearchResult& result);

/// The unit index before each named model cut ("after_layer3" -> 13 for ResNet-50), in the
/// order given: what partitioners::evaluate takes. Throws models::ModelError for an unknown cut
/// (listing the valid ones).
std::vector<int64_t> layers_of_cuts(const models::Model& model,
                                    const std::vector<std::string>& cut_names);

}  // namespace quilt::partitioners
