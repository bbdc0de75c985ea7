#include "harness/time_model.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace quilt::harness {

std::vector<SimulatedStage> simulate_pipeline(const std::vector<BoardTimes>& stages, int64_t warmup,
                                              int64_t batches, int64_t window) {
  if (stages.empty() || batches < 1 || warmup < 0)
    throw std::invalid_argument("simulate_pipeline: needs stages >= 1, batches >= 1, warmup >= 0");
  for (const auto& s : stages)
    for (double t : {s.h2d_s, s.compute_s, s.d2h_s, s.mpi_s})
      if (!std::isfinite(t) || t < 0)
        throw std::invalid_argument("simulate_pipeline: times must be finite and >= 0");
  const int64_t n = static_cast<int64_t>(stages.size());
  const int64_t total = warmup + batches;
  if (window <= 0) window = 2 * n;

  std::vector<SimulatedStage> out(stages.size());
  std::vector<double> free(n, 0.0), link_free(n, 0.0), end(total, 0.0);
  // Per rank, per batch: when the input was ready (t1) and when its send completed.
  std::vector<std::vector<double>> ready(n, std::vector<double>(total, 0.0));
  std::vector<std::vector<double>> sent(n, std::vector<double>(total, 0.0));

  for (int64_t i = 0; i < total; ++i) {
    for (int64_t r = 0; r < n; ++r) {
      const BoardTimes& b = stages[r];
      const double t0 = free[r];
      double t1 = t0;
      if (r == 0) {
        if (n > 1 && i >= window) t1 = std::max(t1, end[i - window]);
      } else {
        t1 = std::max(t1, sent[r - 1][i]);
      }
      ready[r][i] = t1;
      const double t2 = t1 + b.busy_s();
      double t3 = t2;
      if (r < n - 1) {
        if (i >= 2) t3 = std::max(t3, sent[r][i - 2]);
        // The receiver posts batch i's receive when batch i-1 has arrived (double buffering).
        const double posted = i == 0 ? 0.0 : ready[r + 1][i - 1];
        const double start = std::max({t3, posted, link_free[r]});
        sent[r][i] = start + b.mpi_s;
        link_free[r] = sent[r][i];
      } else {
        end[i] = t2;
      }
      free[r] = t3;
      out[r].schedule.push_back({t0, t1, t2, t3, r < n - 1 ? sent[r][i] : t2});
      if (i >= warmup) {
        SimulatedStage& s = out[r];
        s.h2d_s.push_back(b.h2d_s);
        s.compute_s.push_back(b.compute_s);
        s.d2h_s.push_back(b.d2h_s);
        s.recv_wait_s.push_back(r == 0 ? 0.0 : t1 - t0);
        s.send_wait_s.push_back(t3 - t2);
        if (r == 0) s.start_s.push_back(t1);
        if (r == n - 1) s.end_s.push_back(t2);
      }
    }
  }
  // As in the real pipeline, waiting for the last sends counts against the last batch.
  for (int64_t r = 0; r + 1 < n; ++r)
    out[r].send_wait_s.back() += std::max(0.0, sent[r][total - 1] - free[r]);
  return out;
}

double board_energy_j(double busy_s, double window_s, double power_busy_w, double power_idle_w,
                      double link_bytes, double link_energy_j_per_byte) {
  if (power_busy_w < 0 || power_idle_w < 0) return -1;
  const double idle_s = std::max(0.0, window_s - busy_s);
  double e = power_busy_w * busy_s + power_idle_w * idle_s;
  if (link_energy_j_per_byte > 0) e += link_energy_j_per_byte * link_bytes;
  return e;
}

}  // namespace quilt::harness
