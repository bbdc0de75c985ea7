#pragma once
// What the models tests compare the fast paths with: a relative error, and ResNet-18's forward
// through the modules' own operations (no GEMM convolution, no fused BatchNorm).

#include "models/resnet.h"

#include <torch/torch.h>

namespace quilt::models::testing {

/// ||a - b|| / ||b||, or ||a - b|| when b is 0.
inline double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const double nb = b.norm().item<double>();
  const double nd = (a - b).norm().item<double>();
  return nb == 0.0 ? nd : nd / nb;
}

/// ResNet-18 (BasicBlocks) through Conv2dImpl::forward, BatchNorm2dImpl::forward, add and relu.
inline torch::Tensor reference_forward(ResNetImpl& m, torch::Tensor x) {
  x = m.maxpool(m.bn1(m.conv1->forward(x)).relu());
  for (auto* layer : {&m.layer1, &m.layer2, &m.layer3, &m.layer4}) {
    for (const auto& unit : **layer) {
      auto* b = unit.ptr()->as<BasicBlockImpl>();
      auto out = b->bn1(b->conv1->forward(x)).relu();
      out = b->bn2(b->conv2->forward(out));
      out = out + (b->downsample.is_empty() ? x : b->downsample->forward(x));
      x = out.relu();
    }
  }
  return m.fc(torch::flatten(torch::adaptive_avg_pool2d(x, {1, 1}), 1));
}

}  // namespace quilt::models::testing
