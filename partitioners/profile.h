#pragma once
// What the partitioners know about a model: one LayerProfile per candidate layer or block, in
// model order, with the tensors that would cross a cut placed after it. Counts are per sample;
// tensors are float32.

#include "common/shape.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace quilt::partitioners {

/// Bytes of one float32 element.
inline constexpr int64_t kFloatBytes = 4;

// Shape of one sample of a tensor, without the batch dimension: {C, H, W}, {T, F} or {F}; numel()
// and to_string() of it: common/shape.h.
using common::numel;
using common::Shape;
using common::to_string;

/// One tensor that crosses a cut. A plain chain has one (the layer's output); a cut through a
/// UNet-like model also crosses the skip connections, each with its own autoencoder.
struct CrossingTensor {
  std::string name;  ///< label for messages and tables ("out", "skip1"); may be empty
  Shape shape;       ///< {C, H, W}, {T, F} or {F} per sample, float32, every dimension >= 1
};

/// One candidate layer or block of a model, in model order.
struct LayerProfile {
  std::string name;         ///< unique within the model; fixed cuts refer to it
  int64_t flops = 0;        ///< per sample, FLOPs = 2 x MACs (the models/ convention)
  int64_t params = 0;       ///< parameters (elements); informational
  int64_t out_bytes = 0;    ///< float32 bytes per sample of the layer's output
  bool cut_allowed = true;  ///< whether a cut may be placed after this layer (ignored on the last)
  /// The tensors that cross a cut placed after this layer. Required (non-empty) when a cut is
  /// allowed after it; each costs one autoencoder when the rate R > 1.
  std::vector<CrossingTensor> crossing;
  /// Measured compute time of this layer, by board name (BoardProfile::name): seconds PER SAMPLE,
  /// without the per-invocation overhead (the cost model multiplies by the batch size and adds
  /// BoardProfile::overhead_s once per stage). Where a board has no entry the cost model uses
  /// flops / (peak_flops * efficiency).
  std::map<std::string, double> measured_s;
};

/// A model as the partitioners see it.
struct ModelProfile {
  std::string name;                  ///< for messages ("resnet50")
  int64_t input_bytes = 0;           ///< float32 bytes per sample of the model input (H2D, stage 0)
  std::vector<LayerProfile> layers;  ///< in model order; the last layer's out_bytes leave by D2H
};

/// A chain layer: its output of shape `out_shape` is the one tensor crossing a cut after it.
LayerProfile chain_layer(std::string name, int64_t flops, int64_t params, const Shape& out_shape,
                         bool cut_allowed = true);

/// Throws PartitionError unless `model` is usable: at least one layer, unique non-empty names,
/// flops/params/out_bytes/input_bytes >= 0, crossing shapes of rank 1 or 3 with dimensions >= 1,
/// a crossing tensor wherever a cut is allowed (except after the last layer), measured times
/// finite and >= 0.
void validate(const ModelProfile& model);

}  // namespace quilt::partitioners
