#pragma once
// Seeded data augmentation for image batches: random crop with zero padding, horizontal flip,
// small affine skew. Off by default. Every random choice comes from (seed, epoch, batch), so a
// run is reproducible and a resumed run draws what the uninterrupted run would have drawn.

#include "common/chained_setter.h"

#include <torch/types.h>

#include <cstdint>

namespace quilt::trainers {

/// What to apply to each training image. Validation and test data are never augmented.
struct AugmentOptions {
  /// Random crop: pad by this many pixels on each side (zeros), crop back to the original size
  /// at a random offset in [0, 2 * crop_padding] per axis. 0 = off.
  int64_t crop_padding = 0;
  /// Mirror left-right with probability 0.5.
  bool horizontal_flip = false;
  /// Affine shear: x' = x + s * y with s uniform in [-skew, skew] (bilinear, zero fill). 0 = off;
  /// typical 0.1. Must be in [0, 1].
  double skew = 0.0;

  /// True when any augmentation is on.
  bool enabled() const { return crop_padding > 0 || horizontal_flip || skew > 0.0; }
  /// Chained setters.
  QUILT_CHAINED_SETTER(AugmentOptions, int64_t, crop_padding)
  QUILT_CHAINED_SETTER(AugmentOptions, bool, horizontal_flip)
  QUILT_CHAINED_SETTER(AugmentOptions, double, skew)
};

/// Throws TrainerError naming the option for crop_padding < 0 or skew outside [0, 1].
void validate(const AugmentOptions& options);

/// Augments `batch` ({N, C, H, W} float32; 1-D samples {N, F} are returned unchanged) with
/// per-sample random choices drawn from a generator seeded by `seed` alone: the same seed and
/// batch give the same result. Returns a new tensor; the input is not changed.
torch::Tensor augment(const torch::Tensor& batch, const AugmentOptions& options, uint64_t seed);

/// The seed training uses for the augmentation of batch `batch` of epoch `epoch` of a run
/// seeded with `seed` (a hash of the three).
uint64_t batch_seed(uint64_t seed, int64_t epoch, int64_t batch);

}  // namespace quilt::trainers
