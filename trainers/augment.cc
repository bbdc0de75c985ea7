#include "trainers/augment.h"

#include "trainers/data.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

namespace quilt::trainers {

void validate(const AugmentOptions& options) {
  if (options.crop_padding < 0) {
    throw TrainerError(
        fmt::format("augmentation crop_padding {} must be >= 0 (0 = off)", options.crop_padding));
  }
  if (!(options.skew >= 0.0 && options.skew <= 1.0)) {
    throw TrainerError(
        fmt::format("augmentation skew {} must be in [0, 1] (0 = off)", options.skew));
  }
}

uint64_t batch_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  // splitmix64 over the three values: distinct, well-mixed seeds per batch.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(batch));
}

torch::Tensor augment(const torch::Tensor& batch, const AugmentOptions& options, uint64_t seed) {
  validate(options);
  if (!options.enabled() || batch.dim() != 4 || batch.size(0) == 0) return batch;
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t n = batch.size(0), h = batch.size(2), w = batch.size(3);
  torch::Tensor x = batch;
  if (options.skew > 0.0) {
    // Per-sample shear x' = x + s * y in normalised coordinates, through affine_grid.
    auto s = torch::rand({n}, gen, torch::kFloat32).mul_(2.0 * options.skew).sub_(options.skew);
    auto theta = torch::zeros({n, 2, 3}, torch::kFloat32);
    theta.select(1, 0).select(1, 0).fill_(1.0);
    theta.select(1, 0).select(1, 1).copy_(s);
    theta.select(1, 1).select(1, 1).fill_(1.0);
    namespace F = torch::nn::functional;
    auto grid = F::affine_grid(theta, {n, batch.size(1), h, w}, /*align_corners=*/false);
    x = F::grid_sample(x, grid,
                       F::GridSampleFuncOptions()
                           .mode(torch::kBilinear)
                           .padding_mode(torch::kZeros)
                           .align_corners(false));
  }
  if (options.crop_padding > 0) {
    const int64_t p = options.crop_padding;
    auto padded = torch::constant_pad_nd(x, {p, p, p, p}, 0.0);
    auto offsets = torch::randint(0, 2 * p + 1, {n, 2}, gen, torch::kLong);
    auto out = torch::empty_like(x);
    const int64_t* o = offsets.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      out[i].copy_(padded[i].narrow(1, o[2 * i], h).narrow(2, o[2 * i + 1], w));
    }
    x = out;
  }
  if (options.horizontal_flip) {
    auto flip = torch::rand({n}, gen, torch::kFloat32) < 0.5;
    auto flipped = x.flip({3});
    x = torch::where(flip.view({n, 1, 1, 1}), flipped, x);
  }
  if (x.data_ptr() == batch.data_ptr()) x = x.clone();
  return x.contiguous();
}

}  // namespace quilt::trainers
