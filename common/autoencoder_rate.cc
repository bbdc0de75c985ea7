#include "common/autoencoder_rate.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace quilt::common {

bool valid_rate(double rate) { return std::isfinite(rate) && rate >= 1.0; }

bool valid_kernel(int64_t kernel) { return kernel >= 1 && kernel % 2 == 1; }

int64_t encoded_channels(int64_t channels, double rate) {
  assert(channels >= 1 && valid_rate(rate));
  const double q = static_cast<double>(channels) / rate;
  // 3 / (3 / 1.0) style rates must not round up to an extra channel through float error.
  const double nearest = std::round(q);
  const double c = std::abs(q - nearest) <= 1e-9 * std::max(1.0, q) ? nearest : std::ceil(q);
  return std::max<int64_t>(1, static_cast<int64_t>(c));
}

}  // namespace quilt::common
