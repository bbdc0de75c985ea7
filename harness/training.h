#pragma once
// Training runs of an experiment (training.mode other than none): the accuracy side of the
// paper. One run builds the QuiltModel (autoencoders at partition.cuts), loads its data through
// trainers/, trains it in its mode on every MPI rank of the communicator (data parallel: each
// rank takes its share of every batch, gradients are averaged with MPI_Allreduce), and fills the
// run's record (results::TrainingRecord). The pipeline runtime is not involved.

#include "harness/experiment.h"
#include "results/record.h"

#include <mpi.h>

#include <string>

namespace quilt::harness {

/// What a training run needs from its experiment besides the run itself.
struct TrainingContext {
  std::string experiment_path;  ///< for messages
  std::string output;           ///< the result file; the pretraining cache lives beside it
  bool print = true;            ///< rank 0 prints progress lines and the epoch table
};

/// Why `run` (a training run) cannot work, naming the key and what would be valid, or empty.
/// Checks what the parser cannot see alone: proxy runs need exactly one cut and R > 1,
/// freeze/finetune need training.epochs above training.freeze_epochs, a swept run's checkpoint
/// path needs `{id}`. No I/O; any rank.
/// `key` receives the dotted key the message is about.
std::string training_config_error(const RunConfig& run, std::string* key);

/// Runs one training run. Collective over `comm` (every rank calls it with the same run); the
/// number of ranks is the data-parallel width. Never throws for a user's mistake or a failed
/// training: missing or damaged data, a checkpoint of another model, a NaN loss, a dataset that
/// does not fit the model all come back as a record with status "failed" and the reason (the
/// epochs finished before the failure are kept). The record is complete on rank 0; every rank
/// gets the same `status`. Blocks for the whole training.
results::RunRecord run_training(const RunConfig& run, const TrainingContext& context,
                                MPI_Comm comm);

/// The note stored in TrainingRecord::stand_in for a run on `data_kind` with model `arch`: which
/// of the paper's data (and model) the run stands in for, or empty when it uses the paper's.
std::string stand_in_note(DataKind data_kind, const std::string& arch);

}  // namespace quilt::harness
