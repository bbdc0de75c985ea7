#include "harness/result_sink.h"

#include "harness/mpi.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <exception>

namespace quilt::harness {

void ConsoleSink::run_started(const RunConfig& run, size_t index, size_t total, bool skipped) {
  std::string swept;
  for (const auto& [k, v] : run.swept) swept += fmt::format(" {}={}", k, v);
  fmt::print("[{}/{}] run {}{}{}\n", index + 1, total, run.id, swept,
             skipped ? ": complete in the file, skipped" : "");
  if (!skipped && run.training.mode) fmt::print("  {}\n", describe_training(run));
  std::fflush(stdout);
}

void ConsoleSink::run_finished(const RunConfig& run, const results::RunRecord& rec,
                               const results::Provenance& provenance) {
  (void)provenance;
  if (run.training.mode) return;
  if (rec.status == "interrupted") {
    fmt::print("  INTERRUPTED: {}\n", rec.failure);
  } else if (rec.status != "ok" && rec.stages.empty()) {  // failed before it was measured
    fmt::print("  FAILED: {}\n", rec.failure);
  } else {
    fmt::print("  {:.2f} samples/s", rec.throughput_sps);
    if (rec.repetitions > 1)
      fmt::print(" (95% CI {:.2f}..{:.2f}, {} repetitions)", rec.throughput_ci95_low_sps,
                 rec.throughput_ci95_high_sps, rec.repetitions);
    fmt::print(", latency p50 {:.1f} ms", 1e3 * rec.latency_p50_s);
    if (rec.energy_per_sample_j >= 0) fmt::print(", {:.4g} J/sample", rec.energy_per_sample_j);
    if (run.boards.time_model != TimeModel::kMeasured)
      fmt::print(" ({} board time{})", rec.time_model,
                 run.boards.time_model == TimeModel::kDilated
                     ? fmt::format(", dilation {:.3g}", rec.dilation)
                     : std::string());
    if (rec.validity != "valid") fmt::print("  INVALID: {}", fmt::join(rec.invalid_reasons, "; "));
    for (const auto& c : rec.checks)
      fmt::print("  {} {} {:.4g} vs {:.4g}", c.passed ? "PASS" : "FAIL", c.metric, c.value,
                 c.reference);
    if (rec.status != "ok") fmt::print("  FAILED: {}", rec.failure);
    fmt::print("\n");
  }
  std::fflush(stdout);
}

void Hdf5Sink::run_finished(const RunConfig& run, const results::RunRecord& rec,
                            const results::Provenance& provenance) {
  (void)run;
  if (!error_.empty()) return;
  try {
    mpi::WriteScope writing;
    appender_.commit(rec, provenance);
  } catch (const std::exception& e) {
    error_ = e.what();
  }
}

}  // namespace quilt::harness
