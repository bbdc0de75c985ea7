#pragma once
// Summary statistics over measured samples.

#include <vector>

namespace quilt::harness {

/// Linear-interpolated percentile (0..100) of `values` (need not be sorted); NaN when empty.
double percentile(std::vector<double> values, double p);
/// percentile(values, 50).
double median(const std::vector<double>& values);
double mean(const std::vector<double>& values);
/// Sample standard deviation (n - 1 in the denominator); 0 for fewer than two values.
double stddev(const std::vector<double>& values);

/// Median, mean, standard deviation and the two-sided 95% confidence interval of the mean
/// (Student t with n - 1 degrees of freedom; the interval collapses to the mean when n = 1).
struct Summary {
  double median = 0, mean = 0, stddev = 0, ci95_low = 0, ci95_high = 0;
};
Summary summarize(const std::vector<double>& values);

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (dof >= 1).
double t_quantile_975(int dof);

}  // namespace quilt::harness
