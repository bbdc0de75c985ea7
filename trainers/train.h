#pragma once
// Training and evaluation of a QuiltModel (a zoo model with or without autoencoders at its
// cuts) in the paper's modes: from scratch, weight freezing, fine-tuning without freezing, and
// the autoencoder-only proxy. Single process or data-parallel through an injected collective
// (the harness supplies MPI; this library has no MPI).

#include "models/quilt_model.h"
#include "trainers/augment.h"
#include "trainers/converge.h"
#include "trainers/data.h"
#include "trainers/progress.h"
#include "trainers/train_enums.h"

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace quilt::trainers {

/// Data-parallel context: this rank's place and the collective that joins the ranks. The
/// default is a single process. Every rank calls train() with the same options and data; each
/// takes its contiguous share of every global batch (batch_size is the global batch), gradients
/// are averaged through `average` after every backward pass, so with the same seed the weights
/// follow single-process training up to floating-point rounding. BatchNorm statistics are
/// computed per rank on its shard and are not synchronised (as DDP without SyncBatchNorm):
/// models with BatchNorm match single-process training only approximately.
struct Parallel {
  int rank = 0;  ///< 0 .. size - 1
  int size = 1;  ///< number of ranks
  /// Replaces each tensor (float32 or float64, contiguous, CPU) by its element-wise mean over
  /// all ranks, in place. Collective: every rank calls it with tensors of the same shapes in the
  /// same order. Must be set when size > 1.
  std::function<void(std::vector<torch::Tensor>&)> average;
};

/// Phases of one optimizer step, for timelines (harness/trace.h).
enum class StepPhase { kData, kForward, kBackward, kAllreduce, kOptimizer };

/// The learning rate of 0-based epoch `epoch` of a phase whose schedule decays over
/// `phase_epochs` epochs. Cosine decays from lr towards lr * floor (floor in [0, 1)):
/// lr * (floor + (1 - floor) (1 + cos(pi e / E)) / 2) for e < E, which is above lr * floor in
/// the last decay epoch; epochs e >= E (a hold, TrainOptions::hold_epochs) run at lr * floor.
double lr_at_epoch(LrSchedule schedule, double lr, int64_t epoch, int64_t phase_epochs,
                   double floor = 0.0);

/// Training settings. Units in names; epochs count passes over the (sharded) training split.
struct TrainOptions {
  Mode mode = Mode::kScratch;
  OptimizerKind optimizer = OptimizerKind::kSgd;
  double lr = 0.01;  ///< learning rate (the schedule's peak)
  /// How the learning rate moves over a phase's epochs (lr_at_epoch). Each phase (and the
  /// pretraining, which is a phase of its own) restarts the schedule over its maximum epochs.
  /// Under a decaying schedule without a hold the convergence rule does not stop a phase early:
  /// the phase runs its schedule to the end, and the rule is applied to its last
  /// converge_window epochs (the steepest part of the anneal). With a hold, see hold_epochs.
  LrSchedule lr_schedule = LrSchedule::kConstant;
  /// Cosine only: the rate decays to lr * lr_floor instead of towards 0 ([0, 1)).
  double lr_floor = 0.0;
  /// Cosine only, last phase only: after its `epochs` of decay the phase runs at most this many
  /// more epochs at lr * lr_floor (> 0), and the convergence rule judges those alone: it stops
  /// the phase once converge_window held epochs are flat, and a run whose held epochs never are
  /// is not converged. Accuracy that still climbs at a fixed, non-zero rate has not converged;
  /// one that climbs during the anneal may just be annealing. 0 = no hold.
  int64_t hold_epochs = 0;
  double momentum = 0.9;           ///< SGD only
  double weight_decay = 0.0;       ///< L2, both optimizers
  int64_t batch_size = 64;         ///< global batch (split over ranks)
  int64_t epochs = 5;              ///< kScratch: all epochs; kFreeze/kFinetune: phase 2 epochs
  int64_t freeze_epochs = 5;       ///< kFreeze/kFinetune: at most this many phase 1 epochs (>= 1)
  double settle_tolerance = 0.01;  ///< phase 1 ends when the relative loss change is below it
  int64_t eval_batch_size = 256;   ///< evaluation batch (per rank)
  uint64_t seed = 0;  ///< seeds shuffling and augmentation (weights: seed torch before building)
  AugmentOptions augment;    ///< off by default
  ProgressOptions progress;  ///< how progress is shown on rank 0
  /// Base weights to load before training (a state_dict file models::load_state_dict reads, for
  /// the base model only: autoencoders keep their fresh init). Empty = none.
  std::string pretrained;
  /// Written after every epoch (atomically: a temporary file renamed) when not empty; see
  /// checkpoint.h. Rank 0 writes; other ranks skip.
  std::string checkpoint_path;
  /// Resume from this checkpoint when not empty: weights, optimizer state, phase, epoch, the
  /// history and the loss the settle rule compares with are restored, and training continues
  /// with the next epoch as if it had not stopped. The checkpoint must come from the same
  /// architecture, cuts and rate (TrainerError naming both otherwise), the same mode and the
  /// same seed. Every rank reads it (a shared file system for data-parallel runs).
  std::string resume_from;
  /// Evaluate on the test split after every epoch (otherwise only at the end).
  bool eval_every_epoch = true;
  /// Convergence rule (is_flat in converge.h), off when 0: the last phase (kScratch: its only
  /// one; kFreeze/kFinetune: phase 2) stops as soon as its test top-1 over the last
  /// converge_window epochs lies within converge_margin (a fraction: 0.003 = 0.3 points), so
  /// `epochs` becomes the maximum. Needs eval_every_epoch. TrainResult::converged says whether
  /// the rule was met.
  int64_t converge_window = 0;
  double converge_margin = 0.003;
  /// Stop after this many epochs of this call (0 = no limit), as if interrupted, with the
  /// checkpoint written: for batch jobs with a time limit that resume in the next job.
  int64_t stop_after_epochs = 0;
  /// When set, called after each phase of each training step with the step (from 0, over all
  /// epochs of this call), the epoch (1-based) and the phase's start and end on the steady
  /// clock, in seconds. Called in the timed loop: must be cheap and must not throw.
  std::function<void(StepPhase, int64_t step, int64_t epoch, double start_s, double end_s)>
      on_step_phase;
};

/// Throws TrainerError naming the option and the valid range for options that cannot work
/// (lr <= 0 or not finite, batch_size < 1, epochs < 0, freeze_epochs < 1, settle_tolerance < 0,
/// momentum outside [0, 1), weight_decay < 0, mode kProxy, invalid augmentation, converge_window
/// 1 or < 0, converge_margin < 0, a convergence rule without eval_every_epoch).
void validate(const TrainOptions& options);

/// Loss and accuracy of a model on a split. top5 equals top1 when there are 5 classes or fewer
/// (the true class is always among the top 5 of 5 classes, so top-5 would say nothing).
struct Evaluation {
  double loss = 0.0;     ///< mean cross-entropy
  double top1 = 0.0;     ///< fraction in [0, 1]
  double top5 = 0.0;     ///< fraction in [0, 1]
  int64_t samples = 0;   ///< samples evaluated (all ranks)
  double seconds = 0.0;  ///< wall time of the evaluation
};

/// One epoch of training.
struct EpochRecord {
  int phase = 1;            ///< 1 for kScratch; 1 or 2 for kFreeze/kFinetune
  int64_t epoch = 0;        ///< 1-based, counted over the whole run (not per phase)
  double train_loss = 0.0;  ///< mean loss over the epoch's batches, weighted by samples
  double train_top1 = 0.0;  ///< accuracy on the training batches as they were trained
  Evaluation test;  ///< after the epoch (zeros when eval_every_epoch is false, but at a phase end)
  double seconds = 0.0;  ///< training wall time of the epoch (without evaluation)
  int64_t samples = 0;   ///< global training samples seen in the epoch
};

/// One phase of a run.
struct PhaseRecord {
  int phase = 1;
  std::string trains;            ///< "all" or "autoencoders"
  int64_t epochs = 0;            ///< epochs run in this phase
  bool settled = false;          ///< phase 1 ended by the settle rule (not by freeze_epochs)
  int64_t trainable_params = 0;  ///< elements of the parameters the optimizer updated
  double seconds = 0.0;          ///< training wall time of the phase (without evaluation)
  int64_t samples = 0;           ///< global training samples seen in the phase
  Evaluation test;               ///< at the end of the phase
  double train_loss = 0.0;       ///< of the phase's last epoch (see EpochRecord)
  double train_top1 = 0.0;       ///< of the phase's last epoch
};

/// What train() returns. A run that fails (NaN/Inf loss) returns ok = false with the reason and
/// the records up to the failure; it does not throw.
struct TrainResult {
  bool ok = true;
  std::string failure;  ///< e.g. "loss became NaN at epoch 2 batch 17 (lr 10 too large?)"
  std::vector<EpochRecord> epochs;
  std::vector<PhaseRecord> phases;
  Evaluation final_test;       ///< after the last epoch
  double seconds = 0.0;        ///< total training wall time (without evaluations)
  int64_t samples = 0;         ///< global training samples seen
  int64_t resumed_epochs = 0;  ///< epochs restored from resume_from (0 when not resumed)
  bool stopped = false;        ///< ended by stop_after_epochs before the schedule was complete
  /// The convergence rule (TrainOptions::converge_window) was met by the last phase's test top-1;
  /// false when the rule is off or the run reached `epochs` (or failed) without meeting it.
  bool converged = false;
  /// Estimated training FLOPs: 3 x forward FLOPs per sample (forward + backward) x samples, for
  /// comparison with ProxyResult (approximate: frozen weights need no weight gradients).
  double train_flops = 0.0;
};

/// Trains `model` in place on `data` (data.sample_shape must equal the base model's input
/// shape: use fit_to_model()). Collective when parallel.size > 1. Leaves the model in eval
/// mode with every parameter requiring grad again. Throws TrainerError for invalid options, a
/// dataset that does not fit the model, kFreeze without an autoencoder ("weight freezing needs
/// an autoencoder at a cut (R > 1)..."), an unreadable or incompatible checkpoint.
TrainResult train(models::QuiltModel& model, const Dataset& data, const TrainOptions& options,
                  const Parallel& parallel = {});

/// Evaluates `model` (eval mode, no grad) on `split`; the split is sharded over ranks and the
/// sums are joined through parallel.average. Collective when parallel.size > 1.
Evaluation evaluate(models::QuiltModel& model, const Split& split, int64_t num_classes,
                    int64_t batch_size = 256, const Parallel& parallel = {});

/// Autoencoder-only proxy settings (the paper's cheap stand-in for accuracy loss).
struct ProxyOptions {
  std::vector<double> rates = {2, 4, 8, 16};  ///< one autoencoder trained per rate (each > 1)
  std::string cut;                            ///< where: a cut of the base model (its name)
  int64_t kernel = 1;  ///< autoencoder kernel (models::AutoencoderOptions::kernel)
  OptimizerKind optimizer = OptimizerKind::kAdam;
  double lr = 1e-3;
  LrSchedule lr_schedule = LrSchedule::kConstant;  ///< over `epochs`, as TrainOptions
  double lr_floor = 0.0;                           ///< as TrainOptions (no hold)
  double momentum = 0.9;
  double weight_decay = 0.0;
  int64_t batch_size = 64;
  int64_t epochs = 5;
  uint64_t seed = 0;  ///< seeds shuffling and each autoencoder's init (seed + rate index)
  ProgressOptions progress;
};

/// The proxy result for one rate.
struct ProxyRecord {
  double rate = 1.0;              ///< requested
  double effective_rate = 1.0;    ///< C / ceil(C / R)
  std::vector<double> train_mse;  ///< per epoch: mean reconstruction MSE of f_L(x) on train
  std::vector<double> test_mse;   ///< per epoch: on the test split
  double seconds = 0.0;           ///< wall time of this rate's training (without the features)
  double train_flops = 0.0;       ///< estimated FLOPs of training the autoencoder (3x forward)
  int64_t samples = 0;            ///< training samples seen
};

/// What train_proxy() returns.
struct ProxyResult {
  bool ok = true;
  std::string failure;  ///< NaN/Inf reconstruction loss: which rate, epoch, batch
  std::string cut;
  models::Shape cut_shape;
  double feature_seconds = 0.0;  ///< computing f_L(x) for both splits once (shared by rates)
  double feature_flops = 0.0;    ///< FLOPs of that forward pass
  std::vector<ProxyRecord> rates;
};

/// Trains one autoencoder per rate at `options.cut` of `base` (frozen, eval mode, never
/// changed) to reconstruct f_L(x), the activation at the cut, with MSE. Features are computed
/// once (no augmentation). Single process. Throws TrainerError for an unknown cut (naming the
/// valid ones), a rate <= 1, or a dataset that does not fit the model.
ProxyResult train_proxy(models::Model base, const Dataset& data, const ProxyOptions& options);

/// Sets requires_grad on the base model's parameters (not the autoencoders'): false freezes
/// them (weight freezing phase 1). Exposed for tests and tools.
void set_base_trainable(models::QuiltModel& model, bool trainable);

}  // namespace quilt::trainers
