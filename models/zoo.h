#pragma once
// The model zoo: construct a model by name; load weights saved from Python.

#include "models/model.h"

#include <torch/types.h>

#include <string>
#include <utility>
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

/// The tensors of a file written by Python's torch.save(model.state_dict(), path) (an
/// OrderedDict with _metadata, as PyTorch writes it), torch.save(dict(...), path), either in the
/// zip format (default since PyTorch 1.6) or the legacy format
/// (_use_new_zipfile_serialization=False), any pickle protocol 2..5. Tensors are on the CPU
/// whatever device they were saved from. Only tensors, dicts and PyTorch's tensor-rebuild
/// functions are accepted: nothing in the file is executed. Returns (key, tensor) in file order.
/// Throws ModelError naming the file and what is wrong (missing, not a torch.save file, a value
/// that is not a tensor, ...).
std::vector<std::pair<std::string, torch::Tensor>> read_state_dict(const std::string& path);

/// Loads a state_dict file (see read_state_dict) into `model`'s parameters and buffers
/// (values copied under NoGradGuard, converted to the model's dtype and device). Every
/// parameter and buffer must be present with the right shape and every key must belong to the
/// model; as in PyTorch, a missing BatchNorm num_batches_tracked is tolerated (left as is) when
/// the file's _metadata says the BatchNorm predates version 2 or the file has no metadata.
/// Nothing is copied unless everything matches. Throws ModelError naming the key and the
/// shapes. A TorchScript model (torchscript.h) takes the file through load_weights(): keys
/// are the scripted module's parameter and buffer names.
void load_state_dict(torch::nn::Module& model, const std::string& path);

}  // namespace quilt::models
