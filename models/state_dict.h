#pragma once
// Weights saved from Python: reading torch.save files (state_dicts) without Python, and loading
// them into a model. The unpickler underneath is models/pickle.h.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

namespace quilt::models {

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
