#pragma once
// The parts of a training run that harness/training.cc drives (not a public API): the
// conversions from a run's configuration to the trainers' options, its data and base model, the
// pretraining cache's path, gradient averaging and weight broadcast over MPI, and the accuracy of
// the trained model in a board precision.

#include "harness/training.h"
#include "models/model.h"
#include "models/quilt_model.h"
#include "trainers/data.h"
#include "trainers/train.h"

#include <mpi.h>

#include <limits>
#include <string>

namespace quilt::harness::detail {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// freeze and finetune: a phase 1 (freeze_epochs at most), then `epochs` more.
bool two_phases(const TrainingMode& mode);
/// Phase 1's epochs at most: training.freeze_epochs, or half of training.epochs (at least 1) when
/// it is unset; 0 for the modes with one phase.
int64_t phase1_epochs(const TrainingConfig& t);
/// Where the run's data comes from, for the record ("generated" for synthetic data).
std::string data_source(const RunConfig& run);
/// The data a run trains on, fitted to the model's input. train_samples is applied by the caller
/// (after pretraining, which uses the full split). Throws trainers::DataError.
trainers::Dataset load_data(const RunConfig& run, const models::Model& base);
/// The base model of this repetition: build_base (planning.h) with the repetition's init seed.
models::Model build_base(const RunConfig& run);
/// Averages gradients over the ranks of `comm` (one MPI_Allreduce per element type).
trainers::Parallel make_parallel(MPI_Comm comm);
/// Rank 0's parameters and buffers to every rank of `comm`. Collective.
void broadcast_module(torch::nn::Module& module, MPI_Comm comm);
/// `path` with every `{id}` replaced by `id`.
std::string substitute_id(std::string path, const std::string& id);
/// Where pretrained weights are cached: beside the result file, keyed by everything that shapes
/// them.
std::string pretrain_cache_path(const RunConfig& run, const TrainingContext& context, int ranks);
/// The one conversion from the file's training section to the trainers' options.
trainers::TrainOptions train_options(const RunConfig& run, const models::Shape& input, bool print);
/// The one conversion from the file's training section to the proxy's options.
trainers::ProxyOptions proxy_options(const RunConfig& run);
/// "12.34%", "-" for NaN.
std::string fmt_pct(double x);
/// Top-1 accuracy of `qm` in run.boards.precision on the test set and its top-1 agreement with
/// float32, into `tr` (precision, precision_top1, precision_agreement).
void precision_accuracy(models::QuiltModelImpl& qm, const RunConfig& run,
                        const trainers::Dataset& data, results::TrainingRecord& tr);

}  // namespace quilt::harness::detail
