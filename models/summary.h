#pragma once
// FLOP, parameter and byte accounting by shape inference (no forward pass).
//
// Convention: MACs are the multiply-accumulates of convolutions and fully connected layers
// (autoencoder layers included). FLOPs = 2 x MACs. Batch-norm, activations, pooling, residual
// additions and bias additions are not counted (together < 1% of ResNet's work; batch-norm folds
// into the convolutions at inference). This is the convention of torchvision's model metadata,
// fvcore and Paleo-style cost models: ResNet-50 at 224x224 has 4.09e9 MACs, ResNet-18 1.82e9.

#include "models/model.h"

#include <string>
#include <vector>

namespace quilt::models {

/// One row per unit of a model. Counts are per sample.
struct UnitSummary {
  std::string name;
  Shape in_shape, out_shape;
  int64_t macs = 0;       ///< multiply-accumulates of conv and linear layers
  int64_t flops = 0;      ///< 2 x macs
  int64_t params = 0;     ///< parameters of the unit (elements)
  int64_t out_bytes = 0;  ///< float32 bytes per sample of the unit's output
};

/// A model's units with totals. Counts are per sample.
struct ModelSummary {
  std::string arch;
  Shape input_shape;
  int64_t num_classes = 0;
  int64_t params = 0;  ///< elements of all parameters of the model (each tensor once)
  int64_t macs = 0;
  int64_t flops = 0;  ///< 2 x macs
  std::vector<UnitSummary> units;
  std::vector<CutPoint> cuts;
};

/// Shape inference over `model`'s units without running it. Throws ModelError if the input
/// shape does not fit the layers.
ModelSummary summarize(Model model);

/// A plain-text table of `summary` (one line per unit, then the totals) for logs and the CLI.
std::string to_string(const ModelSummary& summary);

/// MACs per sample of one module on input `in`, with its output shape in *out (out may be
/// null). Knows Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten,
/// Linear, Dropout, Identity, Sequential, the ResNet blocks/stem/head, LinearRelu,
/// SequentialUnit, Autoencoder, any model of the zoo (its units in order) and QuiltModel.
/// Throws ModelError for an unknown layer type or a shape the layer cannot take.
int64_t module_macs(const torch::nn::Module& module, const Shape& in, Shape* out);

/// FLOPs per sample (2 x module_macs) of one module on input `in`, with its output shape.
int64_t module_flops(const torch::nn::Module& module, const Shape& in, Shape* out);

/// Elements of all parameters of `module` (recursively).
int64_t count_params(const torch::nn::Module& module);

}  // namespace quilt::models
