#pragma once
// The paper's preliminary-study MLP: input -> 512 -> 512 -> classes, ReLU after each hidden
// layer. Units: hidden1 (fc1 + relu), hidden2 (fc2 + relu), out (fc3). Cuts: after_hidden1
// (the paper's place for the 512x autoencoder), after_hidden2.

#include "models/model.h"

#include <torch/nn/modules/linear.h>

namespace quilt::models {

/// Linear followed by ReLU, as one unit (a view on the model's layer).
class LinearReluImpl : public torch::nn::Module {
 public:
  /// Shares (does not copy) fc.
  explicit LinearReluImpl(torch::nn::Linear fc);
  /// relu(fc(x)); x: {N, in_features}.
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Linear fc;
};
TORCH_MODULE(LinearRelu);

/// Parameters: fc1.weight, fc1.bias, fc2.*, fc3.* (PyTorch's default Linear init), so a Python
/// nn.Module with Linear layers named fc1/fc2/fc3 loads.
class MlpImpl : public ModelImpl {
 public:
  /// input_shape {features} (1-D; flatten images first); num_classes >= 1; hidden sizes default
  /// to the paper's 512, 512. Throws ModelError for anything else.
  MlpImpl(const Shape& input_shape, int64_t num_classes, int64_t hidden1 = 512,
          int64_t hidden2 = 512);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace quilt::models
