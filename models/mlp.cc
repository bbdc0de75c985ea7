#include "models/mlp.h"

#include "models/fast_linear.h"

#include <fmt/format.h>

namespace quilt::models {

LinearReluImpl::LinearReluImpl(torch::nn::Linear fc) : fc(std::move(fc)) {
  // Registered in the view only (see SequentialUnitImpl).
  register_module("fc", this->fc);
}

// Through oneDNN's sgemm in training and inference alike (the module's operations while tracing).
torch::Tensor LinearReluImpl::forward(torch::Tensor x) { return linear_act(*fc, x, /*relu=*/true); }

MlpImpl::MlpImpl(const Shape& input_shape, int64_t num_classes, int64_t hidden1, int64_t hidden2)
    : ModelImpl("mlp") {
  if (input_shape.size() != 1 || input_shape[0] < 1) {
    throw ModelError(fmt::format(
        "mlp: input shape {} must be {{features}} with features >= 1 (flatten images first, "
        "e.g. {{784}} for 1x28x28)",
        to_string(input_shape)));
  }
  if (num_classes < 1) {
    throw ModelError(fmt::format("mlp: num_classes {} must be >= 1", num_classes));
  }
  if (hidden1 < 1 || hidden2 < 1) {
    throw ModelError(fmt::format("mlp: hidden sizes {}, {} must be >= 1", hidden1, hidden2));
  }
  input_shape_ = input_shape;
  num_classes_ = num_classes;
  fc1 = register_module("fc1", torch::nn::Linear(input_shape[0], hidden1));
  fc2 = register_module("fc2", torch::nn::Linear(hidden1, hidden2));
  fc3 = register_module("fc3", torch::nn::Linear(hidden2, num_classes));

  add_unit("hidden1", torch::nn::AnyModule(LinearRelu(fc1)));
  add_cut("after_hidden1");
  add_unit("hidden2", torch::nn::AnyModule(LinearRelu(fc2)));
  add_cut("after_hidden2");
  add_unit("out", torch::nn::AnyModule(fc3));
  finish();
}

}  // namespace quilt::models
