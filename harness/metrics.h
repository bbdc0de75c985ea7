#pragma once
// Summary statistics over measured samples, and the aggregation of one pipeline run's gathered
// measurements into its metrics (throughput, latency, validity, energy, output check,
// references). Rank 0 calls the aggregation; nothing here uses MPI or LibTorch.

#include "harness/experiment.h"
#include "results/record.h"

#include <cstdint>
#include <string>
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

/// What the ranks measured in one pipeline run, gathered on rank 0, in board time (the time
/// model has converted it; harness/time_model_strategy.h).
struct RunMeasurements {
  /// Rank 0: per repetition, when each measured batch entered the pipeline (seconds).
  std::vector<std::vector<double>> start_s;
  /// The last rank: when each measured batch left it, all repetitions one after another.
  std::vector<double> end_s;
  std::string time_model;  ///< boards.time_model: measured | dilated | modeled
  bool real_time = true;   ///< measured, dilated: the repetitions ran in real time
  double dilation = 1;     ///< dilated: the stretch factor; 1 otherwise
  int64_t overruns = 0;    ///< paced batches the CPU did not keep up with, over all ranks
  /// The busiest rank's share of the measured wall time spent waiting for a CPU, and that rank;
  /// -1 when some rank could not tell.
  double cpu_wait_fraction = -1;
  int cpu_wait_rank = 0;
};

/// Rank 0: fills `rec`'s per-repetition throughput and duration, latencies, their summaries,
/// time_model, dilation, overruns and cpu_wait_fraction from `m`, and appends the validity
/// rules `ms` breaks to rec.invalid_reasons (min_duration_s, min_samples, overruns,
/// max_cpu_wait, max_cv in real time). Requires ms.repetitions x ms.batches entries in end_s.
void aggregate_timing(results::RunRecord& rec, const MeasurementConfig& ms,
                      const RunMeasurements& m);

/// The board profile's power figures (RunPlan's): negative power = unknown.
struct PowerFigures {
  double busy_w = -1, idle_w = -1, link_energy_j_per_byte = 0;
};

/// Energy of a run whose stages and repetition windows are filled: measured by the boards
/// themselves when every stage has a reading (energy_j >= 0), else from the profile's power.
/// Sets every stage's busy_s; sets energy_j, energy_per_sample_j and energy_source when the
/// energy is known (left as they are otherwise).
void fill_energy(results::RunRecord& rec, const PowerFigures& power);

/// The output check's outcome, known alike on every rank: -1 (no check) and errors within
/// `tolerance` pass; a larger or non-finite (NaN) relative error is a mismatch.
bool output_mismatch(double max_rel_error, double tolerance);

/// Rank 0: the outcome of a run that completed: status ok, or failed (at `checking_rank`, the
/// last) when the outputs mismatch (see output_mismatch); max_abs_error recorded either way.
void apply_output_check(results::RunRecord& rec, double max_abs_error, double max_rel_error,
                        double tolerance, int64_t checking_rank);

/// The value of `metric` (a Reference::metric the parser accepts) in `rec`.
/// Throws std::logic_error for a metric without a value (a parser bug).
double metric_value(const results::RunRecord& rec, const std::string& metric);

/// Appends one check per reference to rec.checks (after every metric is final).
void check_references(results::RunRecord& rec, const std::vector<Reference>& references);

}  // namespace quilt::harness
