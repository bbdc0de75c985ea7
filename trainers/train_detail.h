#pragma once
// Internal to trainers/: what train() (train.cc) and train_proxy() (proxy.cc) share with the
// options and evaluation (train_common.cc). Not part of the public interface.

#include "models/model.h"
#include "models/quilt_model.h"
#include "trainers/train.h"

#include <torch/optim/optimizer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace quilt::trainers::detail {

/// Seconds of a monotonic clock (differences only).
double now_s();

/// A FusedSgd or FusedAdam over `params`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(OptimizerKind kind,
                                                        const std::vector<torch::Tensor>& params,
                                                        double lr, double momentum,
                                                        double weight_decay);

/// Rank `rank`'s contiguous share [begin, end) of `count` items split over `size` ranks.
std::pair<int64_t, int64_t> shard(int64_t count, int rank, int size);

/// Element-wise sum over ranks through the averaging collective (mean x size). Collective.
void sum_over_ranks(std::vector<torch::Tensor>& tensors, const Parallel& parallel);

/// "lr 0.1 too large?", the hint of a loss that stopped being finite.
std::string lr_hint(double lr);

/// Sets the learning rate of every parameter group.
void set_lr(torch::optim::Optimizer& optimizer, double lr);

/// Stores every 4-D parameter of `model` in `format` by its strides (so that
/// suggest_memory_format() gives `format`, also where the tensor is contiguous in both layouts), in
/// place: the tensors keep their identity and values.
void store_weights(models::QuiltModel& model, torch::MemoryFormat format);

/// Throws TrainerError unless data's samples have the input shape of `base`.
void check_input_shape(const models::Model& base, const Dataset& data);

}  // namespace quilt::trainers::detail
