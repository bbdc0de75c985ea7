#pragma once
// Summary statistics over measured samples.

#include <vector>

namespace quilt::harness {

/// Linear-interpolated percentile (0..100) of `values` (need not be sorted); NaN when empty.
double percentile(std::vector<double> values, double p);
/// percentile(values, 50).
double median(const std::vector<double>& values);
double mean(const std::vector<double>& values);

}  // namespace quilt::harness
