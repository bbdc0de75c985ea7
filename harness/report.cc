#include "harness/report.h"

#include "harness/experiment.h"
#include "harness/metrics.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

namespace quilt::harness {

namespace {

// Records read from a file spell the enums as run.params do: compared through the tables, so
// that the names live in one place (harness/experiment.h, trainers/train_enums.h).
bool is_proxy(const results::TrainingRecord& t) {
  return common::enum_parse(trainers::kModeNames, t.mode) == trainers::Mode::kProxy;
}
std::optional<TimeModel> time_model_of(const results::RunRecord& run) {
  return common::enum_parse(kTimeModelNames, run.time_model);
}

std::string swept_text(const results::RunRecord& run) {
  // The parameters most users sweep, when present; the id names the rest.
  // Training runs show their training parameters; measurement.* does not apply to them.
  std::vector<const char*> keys = {"model.arch",       "model.width",  "autoencoder.rate",
                                   "partition.cuts",   "boards.count", "boards.backend",
                                   "measurement.batch"};
  if (!run.training.mode.empty())
    keys = {"model.arch",    "model.width",     "autoencoder.rate", "partition.cuts",
            "training.mode", "training.epochs", "training.batch",   "data.kind"};
  std::string out;
  for (const char* key : keys) {
    auto it = run.params.find(key);
    if (it != run.params.end())
      out += fmt::format("{}{}={}", out.empty() ? "" : " ", key, it->second);
  }
  return out;
}

std::string pct(double x) { return std::isnan(x) ? "-" : fmt::format("{:.2f}%", 100 * x); }

// Top-5 of a data set with 5 classes or fewer is always 100%: shown as "-".
std::string top5(const results::TrainingRecord& t, double x) {
  return t.classes > 0 && t.classes <= 5 ? "-" : pct(x);
}

// A test loss that was not measured (an epoch without evaluation) is NaN or, in files written
// before that was recorded, 0 with a 0 accuracy.
std::string loss(double x) { return std::isnan(x) ? "-" : fmt::format("{:.4f}", x); }

// Training runs: per epoch and phase, then the final numbers (results/SCHEMA.md, training/).
std::string training_report(const results::RunRecord& run) {
  const auto& t = run.training;
  std::string out = fmt::format(
      "  training {}: {} ({} train / {} test samples, {} classes), {} "
      "rank(s), batch {}\n",
      t.mode, t.dataset, t.train_samples, t.test_samples, t.classes, t.ranks, t.global_batch);
  if (!t.stand_in.empty()) out += fmt::format("  small-scale stand-in: {}\n", t.stand_in);
  if (!t.pretrained.empty())
    out += fmt::format("  pretrained: {}{}\n", t.pretrained,
                       std::isnan(t.pretrain_top1) ? ""
                                                   : fmt::format(" (top-1 {} before the "
                                                                 "autoencoder)",
                                                                 pct(t.pretrain_top1)));
  if (!t.precision.empty())
    out +=
        fmt::format("  in {} (as its pipeline computes): top-1 {}, top-1 agreement with fp32 {}\n",
                    t.precision, pct(t.precision_top1), pct(t.precision_agreement));
  if (!t.epoch.empty())
    out += fmt::format("  {:>5} {:<9} {:>11} {:>9} {:>11} {:>9} {:>9} {:>8} {:>11}\n", "epoch",
                       "phase", "train loss", "train", "test loss", "top-1", "top-5", "s",
                       "samples/s");
  for (size_t e = 0; e < t.epoch.size(); ++e)
    out += fmt::format("  {:>5} {:<9} {:>11.4f} {:>9} {:>11} {:>9} {:>9} {:>8.1f} {:>11.1f}\n",
                       t.epoch[e], t.phase[e], t.train_loss[e], pct(t.train_top1[e]),
                       loss(t.test_loss[e]), pct(t.test_top1[e]), top5(t, t.test_top5[e]),
                       t.epoch_s[e], t.samples_per_s[e]);
  if (is_proxy(t)) {
    out += fmt::format("  final reconstruction loss {:.5g}; proxy {:.1f} s", t.final_test_loss,
                       t.train_s);
    if (t.proxy_speedup > 0)
      out += fmt::format(
          ", full training {:.1f} s per epoch: proxy {:.1f}x cheaper (paper: 76.9x "
          "for ResNet-50)",
          t.full_epoch_s, t.proxy_speedup);
    out += "\n";
  } else if (run.status == "ok") {
    out += fmt::format(
        "  final top-1 {}, top-5 {}, test loss {}; {:.1f} s of training{}\n", pct(t.final_top1),
        top5(t, t.final_top5), loss(t.final_test_loss), t.train_s,
        t.phase1_epochs > 0 ? fmt::format(", {} phase-1 epoch(s)", t.phase1_epochs) : "");
  }
  if (t.converged >= 0)
    out +=
        fmt::format("  converged: {} (rule: test top-1 of the last {} epochs within {:g} pt{})\n",
                    t.converged ? "yes" : "NO", t.converge_window, t.converge_margin_pt,
                    t.converged ? "" : "; stopped at the maximum epochs without meeting it");
  if (!t.checkpoint.empty()) out += fmt::format("  checkpoint {}\n", t.checkpoint);
  return out;
}

// One stage's line: measured times and, when there is one, the cost model's prediction.
std::string stage_report(const results::StageRecord& st) {
  std::string out;
  // Measured time of one batch on the stage: compute plus the waits the stage spent on its
  // own transfers; compared with the cost model's prediction when there is one.
  std::vector<double> busy;
  for (size_t b = 0; b < st.compute_s.size(); ++b)
    busy.push_back(st.compute_s[b] + (b < st.h2d_s.size() ? st.h2d_s[b] : 0) +
                   (b < st.d2h_s.size() ? st.d2h_s[b] : 0));
  double measured = median(busy);
  out += fmt::format("  stage {} ({}): compute {:.2f} ms, recv wait {:.2f} ms, send wait {:.2f} ms",
                     st.rank, st.units, 1e3 * median(st.compute_s), 1e3 * median(st.recv_wait_s),
                     1e3 * median(st.send_wait_s));
  if (!st.h2d_s.empty())
    out += fmt::format(", h2d {:.3f} ms, d2h {:.3f} ms", 1e3 * median(st.h2d_s),
                       1e3 * median(st.d2h_s));
  if (st.predicted_exec_s >= 0)
    out +=
        fmt::format("; predicted {:.2f} ms (compute {:.2f} + comm {:.2f}), error {:+.1f}%",
                    1e3 * st.predicted_exec_s, 1e3 * st.predicted_compute_s,
                    1e3 * st.predicted_comm_s, 100 * (st.predicted_exec_s - measured) / measured);
  out += "\n";
  return out;
}

// A pipeline run's measurements: throughput, latency, precision, time model, host load, energy,
// cuts and stages.
std::string pipeline_report(const results::RunRecord& run) {
  std::string out;
  out += fmt::format(
      "  throughput {:.3f} samples/s (median of {}; mean {:.3f}, sd {:.3f}, 95% CI "
      "{:.3f}..{:.3f})\n",
      run.throughput_sps, run.repetitions, run.throughput_mean_sps, run.throughput_std_sps,
      run.throughput_ci95_low_sps, run.throughput_ci95_high_sps);
  out += fmt::format(
      "  latency p50 {:.2f} ms, p90 {:.2f} ms, p99 {:.2f} ms; batch {}, {} x {} "
      "measured batches\n",
      1e3 * run.latency_p50_s, 1e3 * run.latency_p90_s, 1e3 * run.latency_p99_s, run.batch_size,
      run.repetitions, run.measured_batches);
  out += fmt::format("  precision {} ({} byte(s) per element on the wire)\n", run.precision,
                     run.element_bytes);
  if (time_model_of(run) != TimeModel::kMeasured)
    out += fmt::format(
        "  times are board time ({} time model{})\n", run.time_model,
        time_model_of(run) == TimeModel::kDilated
            ? fmt::format(", dilation {:.4g}, {} overrun(s)", run.dilation, run.overruns)
            : std::string());
  if (run.cpu_wait_fraction >= 0)
    out +=
        fmt::format("  host load: the busiest rank waited for a CPU {:.1f}% of the measured time\n",
                    100 * run.cpu_wait_fraction);
  if (run.energy_per_sample_j >= 0)
    out +=
        fmt::format("  energy {:.6g} J/sample ({:.4g} J over the measured windows, from the {})\n",
                    run.energy_per_sample_j, run.energy_j, run.energy_source);
  else
    out += "  energy unavailable (no power figures in the board profile or from the board)\n";
  for (size_t c = 0; c < run.cut_names.size(); ++c)
    out += fmt::format("  cut {}: {} -> {} B/sample (effective R {:.2f})\n", run.cut_names[c],
                       run.cut_bytes_per_sample[c], run.cut_wire_bytes_per_sample[c],
                       run.cut_effective_rate[c]);
  for (const auto& st : run.stages) out += stage_report(st);
  return out;
}

}  // namespace

std::string training_summary_line(const results::RunRecord& run) {
  const auto& t = run.training;
  auto param = [&](const char* key) {
    auto it = run.params.find(key);
    return it == run.params.end() ? std::string("-") : it->second;
  };
  std::string head = fmt::format("{:<12} {:<8} R {:>5} {:<18}", run.id, t.mode,
                                 param("autoencoder.rate"), t.dataset);
  if (run.status != "ok") return fmt::format("{} FAILED: {}\n", head, run.failure);
  if (is_proxy(t))
    return fmt::format(
        "{} reconstruction loss {:.5g}, proxy {:.1f} s ({:.1f}x cheaper than full "
        "training)\n",
        head, t.final_test_loss, t.train_s, t.proxy_speedup);
  return fmt::format("{} top-1 {:>7} top-5 {:>7} test loss {}, {} epoch(s), {:.1f} s\n", head,
                     pct(t.final_top1), top5(t, t.final_top5), loss(t.final_test_loss),
                     t.epoch.size(), t.train_s);
}

std::string training_summary_header() {
  return fmt::format("{:<12} {:<8} {:>7} {:<18} {}\n", "run", "training", "R", "data",
                     "final test accuracy / proxy loss");
}

std::string report_table(const results::ExperimentRecord& record, bool* all_good) {
  *all_good = true;
  std::string out = fmt::format(
      "{}: {} run(s), experiment hash {}, git {}{}, created {}\n", record.name, record.runs.size(),
      record.experiment_hash, record.provenance.git_commit.substr(0, 12),
      record.provenance.git_dirty ? " (dirty)" : "", record.provenance.created_utc);
  for (const auto& run : record.runs) {
    out += fmt::format("\nrun {}  {}\n", run.id, swept_text(run));
    if (run.status != "ok") {
      *all_good = false;
      out += fmt::format("  FAILED{}: {}\n",
                         run.failed_rank >= 0 ? fmt::format(" on rank {}", run.failed_rank) : "",
                         run.failure);
      if (run.stages.empty() && run.training.mode.empty()) continue;
    }
    if (!run.training.mode.empty()) {
      out += training_report(run);
      continue;
    }
    out += pipeline_report(run);
    if (run.validity != "valid") {
      *all_good = false;
      out += fmt::format("  INVALID: {}\n", fmt::join(run.invalid_reasons, "; "));
    }
    for (const auto& c : run.checks) {
      if (!c.passed) *all_good = false;
      out += fmt::format("  {} {} = {:.6g}, reference {:.6g} ({} is better, tolerance {:g}%)\n",
                         c.passed ? "PASS" : "FAIL", c.metric, c.value, c.reference, c.better,
                         100 * c.tolerance);
    }
  }
  return out;
}

}  // namespace quilt::harness
