#include "harness/metrics.h"

#include "common/shape.h"
#include "harness/time_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace quilt::harness {

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  double pos = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  auto lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(lo + 1, values.size() - 1);
  double frac = pos - static_cast<double>(lo);
  return values[lo] + frac * (values[hi] - values[lo]);
}

double median(const std::vector<double>& values) { return percentile(values, 50); }

double mean(const std::vector<double>& values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

double stddev(const std::vector<double>& values) {
  if (values.size() < 2) return 0;
  double m = mean(values), ss = 0;
  for (double v : values) ss += (v - m) * (v - m);
  return std::sqrt(ss / static_cast<double>(values.size() - 1));
}

double t_quantile_975(int dof) {
  // Exact to 3 decimals for 1..30, then the normal limit approached through 1/dof.
  static const double kTable[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                  2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                  2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                  2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (dof < 1) return std::numeric_limits<double>::quiet_NaN();
  if (dof <= 30) return kTable[dof - 1];
  return 1.960 + (2.042 - 1.960) * 30.0 / static_cast<double>(dof);
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  if (values.empty()) return s;
  s.median = median(values);
  s.mean = mean(values);
  s.stddev = stddev(values);
  double half = values.size() < 2 ? 0
                                  : t_quantile_975(static_cast<int>(values.size()) - 1) * s.stddev /
                                        std::sqrt(static_cast<double>(values.size()));
  s.ci95_low = s.mean - half;
  s.ci95_high = s.mean + half;
  return s;
}

void aggregate_timing(results::RunRecord& rec, const MeasurementConfig& ms,
                      const RunMeasurements& m) {
  const int64_t nb = ms.batches, batch = ms.batch;
  for (int64_t rep = 0; rep < ms.repetitions; ++rep) {
    const double* st = m.start_s[rep].data();
    const double* en = m.end_s.data() + rep * nb;
    double tput = static_cast<double>((nb - 1) * batch) / (en[nb - 1] - en[0]);
    double duration = en[nb - 1] - st[0];
    rec.repetition_throughput_sps.push_back(tput);
    rec.repetition_duration_s.push_back(duration);
    for (int64_t i = 0; i < nb; ++i) rec.latency_s.push_back(en[i] - st[i]);
    if (ms.min_duration_s > 0 && duration < ms.min_duration_s)
      rec.invalid_reasons.push_back(fmt::format(
          "repetition {}: measured window {:.3f} s is shorter than min_duration_s {:g} s; "
          "raise measurement.batches",
          rep, duration, ms.min_duration_s));
    if (ms.min_samples > 0 && nb * batch < ms.min_samples)
      rec.invalid_reasons.push_back(
          fmt::format("repetition {}: {} samples measured, fewer than min_samples {}", rep,
                      nb * batch, ms.min_samples));
  }
  auto stats = summarize(rec.repetition_throughput_sps);
  rec.throughput_sps = stats.median;
  rec.throughput_median_sps = stats.median;
  rec.throughput_mean_sps = stats.mean;
  rec.throughput_std_sps = stats.stddev;
  rec.throughput_ci95_low_sps = stats.ci95_low;
  rec.throughput_ci95_high_sps = stats.ci95_high;
  rec.duration_s = median(rec.repetition_duration_s);
  rec.latency_p50_s = percentile(rec.latency_s, 50);
  rec.latency_p90_s = percentile(rec.latency_s, 90);
  rec.latency_p99_s = percentile(rec.latency_s, 99);
  rec.time_model = m.time_model;
  rec.dilation = m.dilation;
  rec.overruns = m.overruns;
  if (m.overruns > 0)
    rec.invalid_reasons.push_back(fmt::format(
        "dilated: in {} measured batch(es) the CPU took longer than the paced board time x {:.3g}"
        " (dilation too small for this machine's load); the times of those batches are not "
        "board times",
        m.overruns, m.dilation));
  rec.cpu_wait_fraction = m.cpu_wait_fraction;
  if (ms.max_cpu_wait > 0 && m.cpu_wait_fraction > ms.max_cpu_wait)
    rec.invalid_reasons.push_back(fmt::format(
        "{}: rank {} waited for a CPU {:.0f}% of the measured time (more than "
        "measurement.max_cpu_wait {:.0f}%): other jobs share this host's CPUs, so the times are "
        "not this board's",
        m.time_model, m.cpu_wait_rank, 100 * m.cpu_wait_fraction, 100 * ms.max_cpu_wait));
  if (m.real_time && ms.max_cv > 0 && rec.repetition_throughput_sps.size() >= 2 && stats.mean > 0 &&
      stats.stddev / stats.mean > ms.max_cv)
    rec.invalid_reasons.push_back(fmt::format(
        "{}: throughput varies {:.1f}% (stddev / mean) between the {} repetitions, more than "
        "measurement.max_cv {:.1f}%: the host's load changed during the run",
        m.time_model, 100 * stats.stddev / stats.mean, rec.repetition_throughput_sps.size(),
        100 * ms.max_cv));
}

// Energy: measured by the boards themselves when every board gave a reading (stage energy_j
// already set), else from the board profile's power: per board, busy power while busy (h2d +
// compute + d2h in board time), idle power for the rest of the measured windows, plus link
// energy for the bytes moved between host and board.
void fill_energy(results::RunRecord& rec, const PowerFigures& power) {
  bool from_boards = !rec.stages.empty();
  for (const auto& st : rec.stages) from_boards = from_boards && st.energy_j >= 0;
  double window = 0;
  for (double d : rec.repetition_duration_s) window += d;
  const int64_t batches = rec.repetitions * rec.measured_batches;
  double total = 0;
  bool available = power.busy_w >= 0 && power.idle_w >= 0;
  for (auto& st : rec.stages) {
    double busy = 0;
    for (double x : st.compute_s) busy += x;
    for (double x : st.h2d_s) busy += x;
    for (double x : st.d2h_s) busy += x;
    st.busy_s = busy;
    if (from_boards) {
      total += st.energy_j;
      continue;
    }
    // The model's input and output are float32; tensors between stages are element_bytes each.
    const bool first = &st == &rec.stages.front(), last = &st == &rec.stages.back();
    const double in_bytes = static_cast<double>(first ? sizeof(float) : rec.element_bytes);
    const double out_bytes = static_cast<double>(last ? sizeof(float) : rec.element_bytes);
    const double link_bytes = static_cast<double>(rec.batch_size * batches) *
                              (in_bytes * static_cast<double>(common::numel(st.in_shape)) +
                               out_bytes * static_cast<double>(common::numel(st.out_shape)));
    st.energy_j = board_energy_j(busy, window, power.busy_w, power.idle_w, link_bytes,
                                 power.link_energy_j_per_byte);
    if (st.energy_j < 0) available = false;
    total += st.energy_j;
  }
  const double samples = static_cast<double>(batches * rec.batch_size);
  if ((from_boards || available) && samples > 0) {
    rec.energy_j = total;
    rec.energy_per_sample_j = total / samples;
    rec.energy_source = from_boards ? "board" : "profile";
  }
}

bool output_mismatch(double max_rel_error, double tolerance) {
  return !(max_rel_error < 0) && !(max_rel_error <= tolerance);
}

void apply_output_check(results::RunRecord& rec, double max_abs_error, double max_rel_error,
                        double tolerance, int64_t checking_rank) {
  rec.max_abs_error = max_abs_error;
  rec.status = "ok";
  if (!output_mismatch(max_rel_error, tolerance)) return;
  rec.status = "failed";
  rec.failed_rank = checking_rank;
  rec.failure =
      std::isfinite(max_rel_error)
          ? fmt::format(
                "pipeline outputs differ from the single-process model: max relative error "
                "{:.3g} > measurement.tolerance {:.3g}",
                max_rel_error, tolerance)
          : "the outputs are not finite (NaN or Inf in the pipeline's or the single-process "
            "model's outputs; are the weights finite?), so they cannot be checked";
}

double metric_value(const results::RunRecord& rec, const std::string& metric) {
  if (metric == "throughput_sps") return rec.throughput_sps;
  if (metric == "latency_p50_s") return rec.latency_p50_s;
  if (metric == "latency_p90_s") return rec.latency_p90_s;
  if (metric == "latency_p99_s") return rec.latency_p99_s;
  if (metric == "duration_s") return rec.duration_s;
  if (metric == "max_abs_error") return rec.max_abs_error;
  throw std::logic_error("metric without a value: " + metric);
}

void check_references(results::RunRecord& rec, const std::vector<Reference>& references) {
  for (const auto& ref : references) {
    results::MetricCheck c;
    c.metric = ref.metric;
    c.value = metric_value(rec, ref.metric);
    c.reference = ref.value;
    c.tolerance = ref.tolerance;
    c.better = to_string(ref.better);
    c.passed = ref.better == Better::kHigher ? c.value >= ref.value * (1 - ref.tolerance)
                                             : c.value <= ref.value * (1 + ref.tolerance);
    rec.checks.push_back(c);
  }
}

}  // namespace quilt::harness
