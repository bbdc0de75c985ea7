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

/// One leaf layer (a module without children: Conv2d, BatchNorm2d, SiLU, Linear, ...) inside a
/// unit, in the order the unit runs it. Counts are per sample. Work done outside modules
/// (residual adds, concatenations, the functional pooling of heads and squeeze-excitation, the
/// scaling of squeeze-excitation) has no row; its MACs are 0 by the convention above, so the
/// rows of a unit add up to the unit's MACs.
struct LayerSummary {
  std::string unit;  ///< the unit that runs it ("features.2.0")
  std::string name;  ///< qualified name in the model, as in its state_dict
                     ///< ("features.2.0.block.1.0", "up1.up", "layer1.0.conv1")
  std::string type;  ///< LibTorch type without namespace and Impl ("Conv2d", "SiLU")
  Shape in_shape, out_shape;
  int64_t macs = 0;
  int64_t flops = 0;      ///< 2 x macs
  int64_t params = 0;     ///< parameters of the layer itself
  int64_t out_bytes = 0;  ///< float32 bytes per sample of its output
  /// The layer (shared with the model), for callers that time its forward on its own input.
  std::shared_ptr<torch::nn::Module> module;
};

/// Shape inference over every leaf layer of `model`'s units, in execution order (no forward
/// pass). Throws ModelError if the input shape does not fit the layers.
std::vector<LayerSummary> summarize_layers(Model model);

/// Shape inference over `model`'s units without running it. Throws ModelError if the input
/// shape does not fit the layers.
ModelSummary summarize(Model model);

/// A plain-text table of `summary` (one line per unit, then the totals) for logs and the CLI.
std::string to_string(const ModelSummary& summary);

/// MACs per sample of one module on input `in`, with its output shape in *out (out may be
/// null). Knows Conv2d (grouped and depthwise too: in_channels / groups inputs per output),
/// ConvTranspose2d (in pixels x in_channels x out_channels / groups x kernel area), BatchNorm2d,
/// ReLU, SiLU, Sigmoid, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Linear, Dropout,
/// Identity, Sequential, the ResNet blocks/stem/head, EfficientNet's MBConv, SqueezeExcitation
/// (its two 1x1 convs on the pooled 1x1 map) and head, UNet's DoubleConv, Down, OutConv and
/// units (packed shapes in and out), LinearRelu, SequentialUnit, Autoencoder, any model of the
/// zoo (its units in order) and QuiltModel.
/// Throws ModelError for an unknown layer type or a shape the layer cannot take.
int64_t module_macs(const torch::nn::Module& module, const Shape& in, Shape* out);

/// FLOPs per sample (2 x module_macs) of one module on input `in`, with its output shape.
int64_t module_flops(const torch::nn::Module& module, const Shape& in, Shape* out);

/// Elements of all parameters of `module` (recursively).
int64_t count_params(const torch::nn::Module& module);

}  // namespace quilt::models
