#pragma once
// Experiment files: a YAML document that names a model, how to cut it, the boards, what to
// measure, and a sweep over any of those keys. Parsing is strict: unknown keys, wrong types and
// out-of-range values are ConfigErrors that name the file, line, column and key.
// The format is documented in experiments/README.md.

#include "backends/precision.h"
#include "common/enum_table.h"
#include "common/text.h"
#include "partitioners/search.h"
#include "trainers/train_enums.h"

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace quilt::harness {

/// Version of the experiment file format this build reads (`quilt: 1` in the file).
inline constexpr int kFormatVersion = 1;

/// A user's mistake in an experiment file, with where it is.
class ConfigError : public std::runtime_error {
 public:
  /// line and column are 1-based; 0 when unknown. key is the dotted path ("autoencoder.rate").
  ConfigError(std::string file, int line, int column, std::string key, std::string message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& key() const { return key_; }
  /// The message without the place (what() has both).
  const std::string& message() const { return message_; }

 private:
  std::string file_;
  int line_ = 0, column_ = 0;
  std::string key_;
  std::string message_;
};

// clip() and did_you_mean(), for messages that echo a user's value or key: common/text.h.
using common::clip;
using common::did_you_mean;

// The enum-like keys of an experiment file, parsed once when the file is read. Each enum has one
// name table (common/enum_table.h): its spellings in files and in recorded parameters
// (run.params), and the valid values that error messages list. Enums that another folder owns
// are reused with that folder's table (trainers::DataKind, trainers::Mode,
// trainers::OptimizerKind, trainers::LrSchedule, backends::Precision); partition.objective spells
// partitioners::Objective the file's way (`balance` for the paper's objective).

/// data.kind: the data set a training run trains on (its table is the trainers', which load it).
using trainers::DataKind;
using trainers::kDataKindNames;

/// boards.backend: the Board implementation (its name in backends::BoardRegistry).
enum class Backend { kEmulator, kNull, kXrt };
inline constexpr common::EnumTable<Backend, 3> kBackendNames = {
    {{Backend::kEmulator, "emulator"}, {Backend::kNull, "null"}, {Backend::kXrt, "xrt"}}};

/// boards.time_model: how a pipeline run's times are taken (harness/time_model.h).
enum class TimeModel { kMeasured, kDilated, kModeled };
inline constexpr common::EnumTable<TimeModel, 3> kTimeModelNames = {
    {{TimeModel::kMeasured, "measured"},
     {TimeModel::kDilated, "dilated"},
     {TimeModel::kModeled, "modeled"}}};

/// boards.fallback: what an xrt run does when its board cannot open.
enum class Fallback { kNone, kEmulator };
inline constexpr common::EnumTable<Fallback, 2> kFallbackNames = {
    {{Fallback::kNone, "none"}, {Fallback::kEmulator, "emulator"}}};

/// partition.objective: the file's spellings of the search's objective.
inline constexpr common::EnumTable<partitioners::Objective, 2> kObjectiveNames = {
    {{partitioners::Objective::kPaper, "balance"}, {partitioners::Objective::kMinMax, "minmax"}}};

/// autoencoder.kind: which autoencoder a cut gets.
enum class AutoencoderKind {
  kAuto,    ///< conv for feature maps, linear for vectors
  kConv,    ///< conv only (a 1-D cut is an error)
  kLinear,  ///< linear only (a feature-map cut is an error)
};
inline constexpr common::EnumTable<AutoencoderKind, 3> kAutoencoderKindNames = {
    {{AutoencoderKind::kAuto, "auto"},
     {AutoencoderKind::kConv, "conv"},
     {AutoencoderKind::kLinear, "linear"}}};

/// training.mode: std::nullopt is `none` (a pipeline run), else the trainers' mode.
using TrainingMode = std::optional<trainers::Mode>;
/// The spelling of `none` in training.mode.
inline constexpr std::string_view kNoTrainingMode = "none";

/// references.better: which way a metric is better.
enum class Better { kHigher, kLower };
inline constexpr common::EnumTable<Better, 2> kBetterNames = {
    {{Better::kHigher, "higher"}, {Better::kLower, "lower"}}};

/// The spellings of each enum of the file (its table's; "none" for an empty training mode, the
/// empty string for an unstated precision). to_string(DataKind) is the trainers'
/// (trainers/train_enums.h).
std::string to_string(Backend v);
std::string to_string(TimeModel v);
std::string to_string(Fallback v);
std::string to_string(AutoencoderKind v);
std::string to_string(Better v);
std::string to_string(const TrainingMode& v);
std::string objective_name(partitioners::Objective v);
std::string precision_name(const std::optional<backends::Precision>& v);

/// The valid values of training.mode, in the order messages list them: none, then
/// trainers::kModeNames.
std::vector<std::string> training_mode_names();

struct ModelConfig {
  std::string arch;                ///< a name of models::model_names(), or `torchscript`
  std::vector<int64_t> input;      ///< per-sample input shape; empty = the model's default
  int64_t classes = 0;             ///< 0 = the model's default
  std::string weights = "random";  ///< "random" or a state_dict file saved by torch.save
  uint64_t seed = 0;               ///< seed of the random initialisation
  /// Channel multiplier of the ResNets' stem and stages, (0, 4]; 1 = torchvision's widths.
  double width = 1.0;
  /// arch `torchscript`: the TorchScript file (model.path), and the cuts the model must have
  /// beyond its default ones (partition.cuts, or partition.fixed under `cuts: auto`).
  std::string path;
  std::vector<std::string> cuts;
};

struct DataConfig {
  /// synthetic | fashion-mnist | uci-iris | uci-wine | uci-breast-cancer | uci-digits |
  /// cifar10 | tensor-folder. Pipeline runs use synthetic inputs; the others feed training.
  DataKind kind = DataKind::kSynthetic;
  std::string path;           ///< where the data lives; empty = the kind's default location
  uint64_t seed = 1;          ///< seed of synthetic inputs, shuffling and augmentation
  bool augment = false;       ///< random crop, flip and small affine skew (training only)
  int64_t train_samples = 0;  ///< 0 = all; a limit for "limited data" experiments
};

struct BoardsConfig {
  int count = 1;                                ///< number of boards = pipeline stages = MPI ranks
  Backend backend = Backend::kEmulator;         ///< emulator | null | xrt
  std::string profile = "cpu";                  ///< board profile name or file (backends/profiles)
  TimeModel time_model = TimeModel::kMeasured;  ///< measured | dilated | modeled
  int threads = 1;                              ///< intra-op threads per rank
  std::string xclbin;                           ///< xrt: the user's kernel binary
  std::vector<std::string> devices;     ///< xrt: device index or PCIe BDF per rank; empty = local
  Fallback fallback = Fallback::kNone;  ///< xrt: none | emulator (when the board cannot open)
  /// fp32 | bf16 | int8; std::nullopt (key not given) = the board profile's `precision` (fp32 when
  /// it states none).
  std::optional<backends::Precision> precision;
  /// int8: batches of the experiment's data that calibrate the activation ranges (>= 1 then).
  int64_t calibration_batches = 0;
};

struct LinksConfig {
  /// Overrides of the board profile's host<->board link; 0 = take the profile's value.
  double h2d_gbps = 0, d2h_gbps = 0, latency_s = 0;
  /// The network between ranks (each hop rank i -> i+1), GB/s (1e9 B/s) and s per message; 0 =
  /// the profile's mpi_gbps / mpi_latency_s. Dilated/modeled time use them; under measured time
  /// they state the link the run assumes (shaped by tests/hosts/testbed.sh, or the cluster's),
  /// recorded in the run's params, not enforced by the harness.
  double mpi_gbps = 0, mpi_latency_s = 0;
};

struct PartitionConfig {
  std::vector<std::string> cuts;  ///< cut names in model order; empty with auto = true
  bool automatic = false;         ///< `cuts: auto`: chosen by the cost model's search
  /// balance (kPaper: the paper's sum |max - exec_i|) | minmax
  partitioners::Objective objective = partitioners::Objective::kPaper;
  std::vector<std::string> fixed;  ///< cuts the search must keep (auto only)
};

struct AutoencoderConfig {
  AutoencoderKind kind = AutoencoderKind::kAuto;  ///< auto | conv | linear
  double rate = 1.0;                              ///< reduction rate R >= 1; 1 = no autoencoder
  int64_t kernel = 1;                             ///< odd kernel size of the conv encoder/decoder
};

struct TrainingConfig {
  /// none (std::nullopt: pipeline measurement only) | scratch | freeze | finetune | proxy
  TrainingMode mode;
  int64_t epochs = 10;
  int64_t batch = 64;
  double lr = 0.01;
  /// constant | cosine (per phase, over its max epochs; with hold_epochs, over its decay epochs)
  trainers::LrSchedule lr_schedule = trainers::LrSchedule::kConstant;
  double lr_floor = 0;  ///< cosine decays to lr * lr_floor ([0, 1); trainers::TrainOptions)
  /// Cosine: after the decay, the last phase (and pretraining) runs at most this many more
  /// epochs at lr * lr_floor, and the convergence rule judges those only (0 = no hold).
  int64_t hold_epochs = 0;
  trainers::OptimizerKind optimizer = trainers::OptimizerKind::kSgd;  ///< sgd | adam
  double momentum = 0.9;
  double weight_decay = 0;
  int64_t freeze_epochs = 0;    ///< freeze: at most this many phase-1 epochs (0 = epochs)
  double settle_tolerance = 0;  ///< freeze: phase 1 ends when the loss changes < this
  std::string checkpoint;       ///< file to save/resume from; empty = none
  int64_t test_samples = 0;     ///< evaluate on at most this many test samples (0 = all)
  /// Before the mode runs: train the base model without autoencoder from scratch for this many
  /// epochs on the full training split (the "pretrained model" of transfer learning); 0 = none
  /// (model.weights is the pretrained model, or the model is random).
  int64_t pretrain_epochs = 0;
  int64_t pretrain_samples = 0;  ///< pretraining uses at most this many training samples (0 = all)
  /// Repetition seed: 0 = none (weights from model.seed, shuffling and augmentation from
  /// data.seed, as before the key existed); N > 0 derives the weight initialisation, shuffling
  /// and augmentation from it while data.seed keeps fixing the train/test split and the
  /// train_samples subset. Sweep it (`training.seed: [1, 2, 3]`) for repeated arms.
  uint64_t seed = 0;
  /// Convergence rule: 0 = off; W >= 2 stops the mode's last phase (and pretraining) once the
  /// test top-1 of the last W epochs lies within converge_margin_pt points; `epochs` (and
  /// `pretrain_epochs`) become maxima. The run records whether the rule was met.
  int64_t converge_window = 0;
  double converge_margin_pt = 0.3;  ///< points of test top-1 accuracy
};

struct MeasurementConfig {
  int64_t batch = 8;           ///< samples per batch
  int64_t warmup_batches = 2;  ///< batches run before measuring, not counted
  int64_t batches = 10;        ///< measured batches per repetition (>= 2)
  int64_t repetitions = 1;     ///< independent measured windows
  double min_duration_s = 0;   ///< validity: each window must last at least this
  int64_t min_samples = 0;     ///< validity: each window must measure at least this many
  /// validity (measured, dilated): the largest share of the repetitions' wall time a rank may
  /// spend waiting for a CPU (run-queue delay: another job on the host); 0 = no check.
  double max_cpu_wait = 0.1;
  /// validity (measured, dilated; 2+ repetitions): the largest coefficient of variation
  /// (stddev / mean) of the repetitions' throughputs; 0 = no check.
  double max_cv = 0.1;
  bool check_outputs = true;  ///< compare with the single-process model
  double tolerance = 1e-3;    ///< max relative error of the check
  /// measurement.trace: kTraceAuto (not given), 0 (false), kTraceOn (true) or N (batches to keep
  /// per rank). See trace_batches().
  int64_t trace = kTraceAuto;
  static constexpr int64_t kTraceAuto = -1, kTraceOn = -2;
  static constexpr int64_t kShortRunBatches = 1000;    ///< "short": traced when not given
  static constexpr int64_t kTraceOnBatches = 10000;    ///< what `trace: true` keeps per rank
  static constexpr int64_t kMaxTraceBatches = 100000;  ///< the largest N
  /// Batches (training: optimizer steps) whose events each rank keeps, 0 = no trace, for a run
  /// that goes through `batches_per_rank` of them (all repetitions, warm-up included; training:
  /// all steps). Not given: on (keeping kShortRunBatches) for a short run, off otherwise.
  int64_t trace_batches(int64_t batches_per_rank) const {
    if (trace == kTraceOn) return kTraceOnBatches;
    if (trace >= 0) return trace;
    return batches_per_rank <= kShortRunBatches ? kShortRunBatches : 0;
  }
};

/// An expected value of a metric, with how far off it may be and which way is better.
struct Reference {
  std::string metric;  ///< e.g. throughput_sps, latency_p50_s
  double value = 0;
  double tolerance = 0.1;                   ///< relative
  Better better = Better::kHigher;          ///< higher | lower
  std::map<std::string, std::string> when;  ///< applies to runs whose params match all of these
};

/// One point of the sweep, fully resolved.
struct RunConfig {
  std::string id;                             ///< stable: hash of the resolved parameters
  size_t index = 0;                           ///< position in the sweep, from 0
  std::map<std::string, std::string> params;  ///< every resolved key -> value, dotted paths
  std::map<std::string, std::string> swept;   ///< the keys the sweep set for this run
  ModelConfig model;
  DataConfig data;
  BoardsConfig boards;
  LinksConfig links;
  PartitionConfig partition;
  AutoencoderConfig autoencoder;
  TrainingConfig training;
  MeasurementConfig measurement;
  std::vector<Reference> references;  ///< the references that apply to this run
};

struct Experiment {
  std::string path;  ///< the file as given
  std::string text;  ///< the file's bytes
  std::string hash;  ///< hash of the resolved runs (hex)
  std::string name;
  std::string description;
  std::string scale;            ///< the scale chosen (`scales:` key), empty when none
  std::string output;           ///< result file path
  std::vector<RunConfig> runs;  ///< the sweep expanded, in file order
  std::string resolved;         ///< the resolved runs as YAML, for provenance
};

/// Valid metric names for references.
const std::vector<std::string>& metric_names();

/// Replaces `model.input` and `model.classes` in a run's stored parameters with the values the
/// model was actually built with (the file may leave them to the model's defaults: `[]`, `0`).
/// Run ids stay hashes of the parameters as the file gives them, so `--resume` of files written
/// before this still matches their runs.
void record_resolved_model(std::map<std::string, std::string>* params,
                           const std::vector<int64_t>& input, int64_t classes);

/// One line saying how a training run (training.mode != none) trains, for plans and logs:
/// "training freeze: 10 epoch(s) (phase 1 at most 3), batch 64, sgd lr 0.01, data fashion-mnist
/// (augmented, 6000 train samples), test on 1000 samples". Empty for pipeline runs.
std::string describe_training(const RunConfig& run);

/// Reads and validates an experiment file (syntax, keys, types, ranges, sweep). `scale` picks
/// one of the file's `scales:` (empty = its `default_scale`). Does not check what needs the
/// model zoo (arch and cut names): see check_experiment in harness/runner.h. Throws ConfigError.
Experiment load_experiment(const std::string& path, const std::string& scale = "");

/// Same, from text already in memory (`path` is used in messages).
Experiment parse_experiment(const std::string& text, const std::string& path,
                            const std::string& scale = "");

}  // namespace quilt::harness
