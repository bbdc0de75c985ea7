#pragma once
// The enums of the training settings (trainers/train.h) with their name tables
// (common/enum_table.h). Free of LibTorch, so that the experiment parser (harness/experiment.h)
// stores them without depending on the trainers library.

#include "common/enum_table.h"

#include <string>

namespace quilt::trainers {

/// The data sets load_dataset() reads (trainers/data.h).
enum class DataKind {
  kSynthetic,
  kFashionMnist,
  kUciIris,
  kUciWine,
  kUciBreastCancer,
  kUciDigits,
  kCifar10,
  kTensorFolder,
};

/// The spellings of DataKind in experiment files (data.kind) and recorded parameters; the
/// loaders' names (dataset_name() in trainers/data.h) follow from them.
inline constexpr common::EnumTable<DataKind, 8> kDataKindNames = {
    {{DataKind::kSynthetic, "synthetic"},
     {DataKind::kFashionMnist, "fashion-mnist"},
     {DataKind::kUciIris, "uci-iris"},
     {DataKind::kUciWine, "uci-wine"},
     {DataKind::kUciBreastCancer, "uci-breast-cancer"},
     {DataKind::kUciDigits, "uci-digits"},
     {DataKind::kCifar10, "cifar10"},
     {DataKind::kTensorFolder, "tensor-folder"}}};

/// "synthetic", "fashion-mnist", "uci-iris", ... (kDataKindNames).
inline std::string to_string(DataKind kind) {
  return std::string(common::enum_name(kDataKindNames, kind));
}

/// Training modes.
enum class Mode {
  /// All weights trainable from random init (or from `pretrained`), `epochs` epochs, one phase.
  kScratch,
  /// Weight freezing. Phase 1: only the autoencoders train, every other weight frozen (no
  /// gradient, BatchNorm layers of the base in eval mode so their running statistics stay
  /// fixed), until the epoch training loss settles (|L_e - L_{e-1}| / L_{e-1} < settle_tolerance)
  /// or after freeze_epochs epochs, whichever comes first. Phase 2: everything trainable for
  /// `epochs` epochs with a fresh optimizer. Needs at least one autoencoder (R > 1).
  kFreeze,
  /// Fine-tuning without freezing: the same two-phase schedule as kFreeze (phase 1 ends by the
  /// same settle rule or freeze_epochs, then `epochs` epochs with a fresh optimizer), but every
  /// weight trainable from the start. Works with R = 1 too.
  kFinetune,
  /// Autoencoder-only proxy: see train_proxy(); train() refuses it.
  kProxy,
};

/// The spellings of Mode (training.mode in experiment files, which adds `none`).
inline constexpr common::EnumTable<Mode, 4> kModeNames = {{{Mode::kScratch, "scratch"},
                                                           {Mode::kFreeze, "freeze"},
                                                           {Mode::kFinetune, "finetune"},
                                                           {Mode::kProxy, "proxy"}}};

/// "scratch", "freeze", "finetune", "proxy" (kModeNames).
inline std::string to_string(Mode mode) { return std::string(common::enum_name(kModeNames, mode)); }
/// Parses the names of kModeNames; throws TrainerError listing them otherwise.
Mode parse_mode(const std::string& text);

/// Optimizers.
enum class OptimizerKind {
  kSgd,   ///< SGD with momentum (heavy ball, as torch.optim.SGD) and L2 weight decay
  kAdam,  ///< Adam (betas 0.9, 0.999; eps 1e-8) with L2 weight decay (torch.optim.Adam)
};

/// The spellings of OptimizerKind.
inline constexpr common::EnumTable<OptimizerKind, 2> kOptimizerNames = {
    {{OptimizerKind::kSgd, "sgd"}, {OptimizerKind::kAdam, "adam"}}};

/// "sgd", "adam" (kOptimizerNames).
inline std::string to_string(OptimizerKind kind) {
  return std::string(common::enum_name(kOptimizerNames, kind));
}
/// Parses the names of kOptimizerNames; throws TrainerError listing them otherwise.
OptimizerKind parse_optimizer(const std::string& text);

/// Learning-rate schedule of a training phase.
enum class LrSchedule {
  kConstant,  ///< `lr` every epoch
  kCosine,    ///< lr * (1 + cos(pi * e / E)) / 2 at 0-based epoch e of a phase of at most E epochs
};

/// The spellings of LrSchedule.
inline constexpr common::EnumTable<LrSchedule, 2> kLrScheduleNames = {
    {{LrSchedule::kConstant, "constant"}, {LrSchedule::kCosine, "cosine"}}};

/// "constant", "cosine" (kLrScheduleNames).
inline std::string to_string(LrSchedule schedule) {
  return std::string(common::enum_name(kLrScheduleNames, schedule));
}
/// Parses the names of kLrScheduleNames; throws TrainerError naming the valid values otherwise.
LrSchedule parse_lr_schedule(const std::string& text);

}  // namespace quilt::trainers
