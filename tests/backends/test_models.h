#pragma once
// Models for the backends tests: zoo models with randomised BatchNorm statistics, so that
// folding them into the convolutions is actually exercised.

#include "models/model.h"
#include "models/quilt_model.h"
#include "models/zoo.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace quilt::backends::testing {

/// Random running statistics and affine parameters in every BatchNorm2d of `model`, scaled so
/// that activations keep a unit-ish scale through deep nets.
inline void randomize_batch_norm(torch::nn::Module& model, uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& m : model.modules(/*include_self=*/true)) {
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) {
      bn->running_mean.normal_(0.0, 0.1);
      bn->running_var.uniform_(0.5, 1.5);
      bn->weight.uniform_(0.5, 1.0);
      bn->bias.normal_(0.0, 0.1);
    }
  }
}

/// A zoo model with randomised BatchNorm, built once per (arch, input shape) and shared.
inline models::Model base_model(const std::string& arch, const models::Shape& input,
                                int64_t classes = 10) {
  torch::manual_seed(1);
  models::ModelOptions o;
  o.input_shape = input;
  o.num_classes = classes;
  models::Model m = models::make_model(arch, o);
  randomize_batch_norm(*m, 2);
  m->eval();
  return m;
}

/// Max |a - b| / max |b|: the error measure of the fast path against the reference.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-12);
  return (a - b).abs().max().item<double>() / scale;
}

}  // namespace quilt::backends::testing
