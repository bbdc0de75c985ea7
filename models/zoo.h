#pragma once
// The model zoo: construct a model by name (weights saved from Python: models/state_dict.h).

#include "models/model.h"

#include <string>
#include <vector>

namespace quilt::models {

/// Options shared by the zoo's constructors. Empty input_shape / zero classes mean the model's
/// default (ResNet, EfficientNet-B0: 3x224x224, 1000 classes; UNet: 3x256x256, 2 classes =
/// output channels; MLP: 64 features, 10 classes).
struct ModelOptions {
  Shape input_shape;
  int64_t num_classes = 0;
  /// arch "torchscript" only: the TorchScript file (model.path) and the cuts beyond the default
  /// ones that the model must have (the experiment's partition cuts; see torchscript.h).
  std::string path;
  std::vector<std::string> cuts;
  /// Channel multiplier of the ResNets (common/model_width.h: (0, 4]); 1.0 = torchvision's
  /// widths. Any other value for an arch without widths is a ModelError.
  double width = 1.0;
};

/// The arch of a model that the user brings as a TorchScript file (models/torchscript.h).
inline constexpr const char* kTorchScriptArch = "torchscript";

/// Names the zoo knows ("resnet18", "resnet50", "efficientnet_b0", "unet", "mlp").
std::vector<std::string> model_names();

/// Builds the named model with freshly initialised weights (torchvision's init for ResNet,
/// torch's default otherwise; seeded by the caller through torch::manual_seed), or, for arch
/// "torchscript", the TorchScript model of options.path (its own weights; options.input_shape
/// required, num_classes ignored). Throws ModelError listing the valid names, or for options
/// the model cannot take.
Model make_model(const std::string& arch, const ModelOptions& options = {});

}  // namespace quilt::models
