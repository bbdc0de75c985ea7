#pragma once
// Checkpoints of a training run (weights, optimizer state, phase, epoch, history) and export of
// trained weights in the torch.save format that models::load_state_dict reads.

#include "models/quilt_model.h"

#include <torch/nn/module.h>

#include <cstdint>
#include <string>

namespace quilt::trainers {

/// What a checkpoint file says about itself (read without loading the weights).
struct CheckpointInfo {
  int64_t version = 0;
  std::string model;        ///< describe(model) of the model that wrote it
  std::string mode;         ///< training mode name
  int phase = 1;            ///< phase of the last completed epoch
  int64_t epochs_done = 0;  ///< epochs completed (over all phases)
  uint64_t seed = 0;
};

/// "resnet18 input 3x32x32 classes 10, cuts after_layer3, R 4, kernel 1": what must match for a
/// checkpoint to load into a model.
std::string describe(const models::QuiltModel& model);

/// Reads the header of a checkpoint written by train(). Throws TrainerError naming the file
/// when it is missing or not a Quilt checkpoint.
CheckpointInfo read_checkpoint_info(const std::string& path);

/// Loads only the weights of a checkpoint written by train() into `model`. Throws TrainerError
/// naming the file, the checkpoint's model and `model` when they differ.
void load_checkpoint_weights(models::QuiltModel& model, const std::string& path);

/// Writes every parameter and buffer of `module` under its state_dict name to `path` in the
/// format of Python's torch.save(model.state_dict(), path) (zip), so models::load_state_dict,
/// models::read_state_dict and Python's torch.load read it. For a QuiltModel the names are the
/// base model's plus "ae_<cut>.encoder.weight", ... (see models/quilt_model.h), so the pipeline
/// loads it with models::load_state_dict(*quilt, path). Throws TrainerError when the file cannot
/// be written.
void export_state_dict(const torch::nn::Module& module, const std::string& path);

}  // namespace quilt::trainers
