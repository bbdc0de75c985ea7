#pragma once
// Planning one run before it runs: the board profile, the cuts (named in the file, or chosen
// by the exact cut search for `cuts: auto`), and the cost model's predicted time of every
// stage, which the run stores beside what it measures.

#include "harness/experiment.h"
#include "models/autoencoder.h"
#include "models/model.h"
#include "models/zoo.h"
#include "partitioners/cost_model.h"

#include <string>
#include <vector>

namespace quilt::harness {

/// The cost model's prediction for one stage and one batch: its StageCost (compute_s, comm_s,
/// exec_s and comm_s's parts h2d_s, d2h_s, mpi_s, in seconds), with the stage's units.
struct PredictedStage : partitioners::StageCost {
  std::string units;  ///< first..last unit of the stage
};

struct RunPlan {
  std::vector<std::string> cuts;       ///< model cut names, boards.count - 1 of them
  bool searched = false;               ///< chosen by the search (cuts: auto)
  std::string objective;               ///< what the search minimised ("balance" / "minmax")
  double objective_s = 0;              ///< its value
  std::string profile;                 ///< where the board profile came from
  std::vector<PredictedStage> stages;  ///< boards.count entries
  /// The board profile's power figures (negative when the profile has none), for energy.
  double power_idle_w = -1, power_busy_w = -1, link_energy_j_per_byte = 0;
  /// The precision the boards compute in: boards.precision, else the profile's, else fp32.
  backends::Precision precision = backends::Precision::kFp32;
  /// Bytes per element of the tensors between stages in that precision (4, 2, 1).
  int64_t element_bytes = 4;
};

/// The model options of the file's model section (input shape, classes, width, TorchScript path
/// and cuts): the one conversion from ModelConfig, for every model a run builds.
models::ModelOptions model_options(const ModelConfig& m);

/// The base model of `m`, initialised from torch::manual_seed(m.seed); its weights are loaded
/// from m.weights unless that is "random" or `load_weights` is false (a file with autoencoders,
/// which loads into the QuiltModel instead). Throws ModelError for an unknown arch or weights
/// that do not fit.
models::Model build_base(const ModelConfig& m, bool load_weights = true);

/// The autoencoders a run interposes at its cuts (rate, kernel), for models::QuiltModel. The
/// one conversion from the file's autoencoder section: every QuiltModel of a run is built with it.
models::AutoencoderOptions autoencoder_options(const AutoencoderConfig& ae);

/// Plans `run` on `base` (a model built from run.model). Pure and deterministic: every rank
/// computes the same plan. Throws ConfigError naming the key at fault (boards.profile for a
/// missing or malformed profile, partition.fixed / partition.cuts / boards.count for a request
/// the search cannot satisfy, boards.precision for a precision the board cannot compute in,
/// boards.calibration_batches for int8 without calibration data).
RunPlan plan_run(const RunConfig& run, const models::Model& base, const std::string& file);

}  // namespace quilt::harness
