#pragma once
// torch::optim::SGD and torch::optim::Adam with each parameter's update fused into one pass
// over memory. LibTorch's step runs four to six element-wise kernels per parameter (weight
// decay, momentum or moments, update), each a full pass over the tensor; here one loop reads
// the parameter, its gradient and its state once and writes them once. Same state objects
// (SGDParamState, AdamParamState), so checkpoints of either load into the other.

#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <vector>

namespace quilt::trainers {

/// torch::optim::SGD (momentum as heavy ball, L2 weight decay, dampening, nesterov) whose step()
/// updates each dense float32 CPU parameter in one fused pass; any other parameter goes through
/// torch::optim::SGD::step(). Results equal SGD's to float rounding.
class FusedSgd : public torch::optim::SGD {
 public:
  /// As torch::optim::SGD.
  FusedSgd(const std::vector<torch::Tensor>& params, torch::optim::SGDOptions options)
      : SGD(params, std::move(options)) {}
  /// One update of every parameter that has a gradient; closure as torch::optim::SGD.
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// torch::optim::Adam (L2 weight decay, amsgrad) whose step() updates each dense float32 CPU
/// parameter in one fused pass (amsgrad goes through torch::optim::Adam::step()). Results equal
/// Adam's to float rounding.
class FusedAdam : public torch::optim::Adam {
 public:
  /// As torch::optim::Adam.
  FusedAdam(const std::vector<torch::Tensor>& params, torch::optim::AdamOptions options)
      : Adam(params, std::move(options)) {}
  /// One update of every parameter that has a gradient; closure as torch::optim::Adam.
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// Sets the gradient of every parameter to undefined (PyTorch's zero_grad(set_to_none=True)):
/// the next backward pass writes the gradient instead of adding it to a tensor of zeros.
void clear_grads(const std::vector<torch::Tensor>& params);

/// Gives every parameter that the backward pass left without a gradient a gradient of zeros,
/// so that after clear_grads() + backward the optimizer sees what zero_grad() + backward gives.
void fill_missing_grads(const std::vector<torch::Tensor>& params);

}  // namespace quilt::trainers
