#pragma once
// The convergence rule of training runs (issue 10 §1): a run has converged when its test
// accuracy over the last `window` epochs is flat, i.e. all of them lie within `margin` of each
// other. No LibTorch: the harness, the trainers and their tests share it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace quilt::trainers {

/// True when `values` has at least `window` (>= 2) entries and its last `window` entries are all
/// finite and lie within `margin` of each other (max - min <= margin, same unit as the values:
/// accuracies as fractions and margin 0.003 = 0.3 points). False otherwise (window < 2, too few
/// values, NaN among them). Pure; any thread.
inline bool is_flat(const std::vector<double>& values, int64_t window, double margin) {
  if (window < 2 || static_cast<int64_t>(values.size()) < window) return false;
  const auto first = values.end() - window;
  if (std::any_of(first, values.end(), [](double v) { return !std::isfinite(v); })) return false;
  const auto [lo, hi] = std::minmax_element(first, values.end());
  return *hi - *lo <= margin + 1e-12;
}

}  // namespace quilt::trainers
