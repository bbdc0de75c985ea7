#pragma once
// BatchNorm2d in training, optionally plus a residual, optionally followed by ReLU, as one
// operation on channels-last tensors: relu(bn(x) + residual).
//
// Why: at the widths the accuracy experiments train (ResNet-18 at width 1/8 on 28x28 images:
// 8..64 channels, maps of 7x7 and less) a training step is bound by per-operation cost, not by
// arithmetic. LibTorch runs such a block's tail as batch_norm, add, relu forward and
// threshold_backward, batch_norm_backward and the residual's gradient sum backward; its
// channels-last batch_norm kernels take 35-60 us on a 100 KB tensor (torch.profiler of Python's
// loop: BatchNorm forward and backward were 21% of a step, threshold_backward 4%). Here the
// forward is two passes over x for the statistics and one that writes the output; the backward
// one pass for the channel sums and one that writes the gradients, all in one autograd node.

#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>

namespace quilt::models {

/// True when batch_norm_act() takes the fused path: `bn` in training mode with affine parameters
/// and running statistics; x a float CPU tensor {N, C, H, W} that is channels-last contiguous with
/// more than one value per channel; `residual` undefined or of x's shape and layout; not tracing;
/// and the environment does not set QUILT_FUSED_BN=0 (the A/B switch for benchmarks).
bool batch_norm_act_is_fused(const torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                             const torch::Tensor& residual);

/// relu(bn->forward(x) + residual) (without the add when `residual` is undefined, without the
/// ReLU when `relu` is false): the same values, gradients (for x, residual, bn's weight and bias)
/// and running-statistics update (momentum or, without one, the cumulative average;
/// num_batches_tracked counts the call) as the module, to float rounding. Takes the fused path
/// when batch_norm_act_is_fused() holds and the module's otherwise (evaluation, NCHW, tracing: a
/// trace records the module's operations, for a compiler to lower).
torch::Tensor batch_norm_act(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                             const torch::Tensor& residual = {}, bool relu = true);

}  // namespace quilt::models
