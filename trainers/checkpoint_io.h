#pragma once
// Internal to trainers/: the checkpoint file layout shared by train.cc and checkpoint.cc.
// Not part of the public interface.

#include "models/quilt_model.h"
#include "trainers/train.h"

#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace quilt::trainers::detail {

/// Where a run stands between epochs: what resuming needs besides weights and optimizer state.
/// All randomness of a run derives from (seed, epoch, batch), so the epoch count is the RNG's
/// progress.
struct RunState {
  int phase = 1;             ///< phase of the next epoch
  int last_phase = 1;        ///< phase of the last completed epoch
  int64_t epochs_done = 0;   ///< over all phases
  int64_t phase_epochs = 0;  ///< epochs done in `phase`
  double prev_loss = std::numeric_limits<double>::quiet_NaN();  ///< for the settle rule
  std::vector<EpochRecord> epochs;
  std::vector<PhaseRecord> phases;
};

/// Writes a checkpoint atomically (temporary file + rename). Throws TrainerError on failure.
void write_checkpoint(const std::string& path, models::QuiltModel& model,
                      torch::optim::Optimizer& optimizer, Mode mode, uint64_t seed,
                      const RunState& state);

/// Loads model weights and the run state; returns the optimizer's archive in *optimizer_archive
/// (the caller builds the optimizer of state.phase and loads it). Checks that the checkpoint
/// was written for the same model (describe()), mode and seed. Throws TrainerError naming both.
void read_checkpoint(const std::string& path, models::QuiltModel& model, Mode mode, uint64_t seed,
                     RunState* state, torch::serialize::InputArchive* optimizer_archive);

}  // namespace quilt::trainers::detail
