#include "cli/collect_cmd.h"

#include "cli/cli.h"

#include "harness/experiment.h"
#include "harness/report.h"
#include "results/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

namespace quilt::harness {

namespace {

std::string num(double x) { return std::isfinite(x) ? fmt::format("{}", x) : std::string(); }
std::string num(int64_t x) { return fmt::format("{}", x); }
std::string boolean(bool b) { return b ? "True" : "False"; }
// Energies and predictions use −1 for "unavailable": missing in the table.
std::string nonneg(double x) { return x >= 0 ? num(x) : std::string(); }

template <typename T>
std::string joined(const std::vector<T>& v) {
  std::vector<std::string> parts;
  for (const auto& x : v) {
    if constexpr (std::is_same_v<T, std::string>)
      parts.push_back(x);
    else
      parts.push_back(num(x));
  }
  return fmt::format("{}", fmt::join(parts, ";"));
}

// The rate of the run's autoencoder(s): the largest requested rate and, among the cuts that have
// an autoencoder, the smallest effective rate (the weakest reduction); 1 without autoencoder.
std::pair<double, double> rates(const results::RunRecord& r) {
  double requested = 1, effective = 0;
  for (size_t c = 0; c < r.cut_requested_rate.size(); ++c) {
    if (r.cut_requested_rate[c] <= 1) continue;
    requested = std::max(requested, r.cut_requested_rate[c]);
    const double e = c < r.cut_effective_rate.size() ? r.cut_effective_rate[c] : NAN;
    effective = effective == 0 ? e : std::min(effective, e);
  }
  return {requested, effective == 0 ? 1.0 : effective};
}

bool is_number(const std::string& s, double* value) {
  if (s.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return false;
  *value = v;
  return true;
}

// A parameter value for pairing: numbers in one spelling ("64" = "64.0").
std::string normalized(const std::string& s) {
  double v;
  return is_number(s, &v) ? fmt::format("{}", v) : s;
}

std::string param_or(const results::RunRecord& r, const std::string& key, std::string fallback) {
  auto it = r.params.find(key);
  return it == r.params.end() ? fallback : it->second;
}

// report_table's rules, as one word per run.
std::string verdict(const results::RunRecord& r) {
  if (r.status != "ok") return "FAILED";
  if (r.training.mode.empty() && r.validity != "valid") return "INVALID";
  for (const auto& c : r.checks)
    if (!c.passed) return "FAIL " + c.metric;
  return "OK";
}

bool is_training(const results::RunRecord& r) { return !r.training.mode.empty(); }

std::string pct(double x) { return std::isfinite(x) ? fmt::format("{:.2f}%", 100 * x) : "-"; }

std::string headline(const results::RunRecord& r) {
  if (is_training(r)) {
    // The record spells the mode as run.params does (trainers::kModeNames).
    if (common::enum_parse(trainers::kModeNames, r.training.mode) == trainers::Mode::kProxy)
      return fmt::format("recon {:.4g}", r.training.final_test_loss);
    return "top-1 " + pct(r.training.final_top1);
  }
  return fmt::format("{:.3f} samples/s", r.throughput_sps);
}

// Parameters that name where a run wrote its outputs: they differ in every run and never
// identify what was compared.
bool is_output_key(const std::string& key) {
  return key == "training.saved_weights" || key == "training.checkpoint";
}

// Parameters whose (normalized) values are not the same in every run of `record`, outputs aside.
std::set<std::string> varying_keys(const results::ExperimentRecord& record) {
  std::map<std::string, std::set<std::string>> values;
  std::set<std::string> keys;
  for (const auto& r : record.runs)
    for (const auto& [k, v] : r.params) keys.insert(k);
  for (const auto& r : record.runs)
    for (const auto& k : keys) values[k].insert(normalized(param_or(r, k, "")));
  std::set<std::string> out;
  for (const auto& [k, v] : values)
    if (v.size() > 1 && !is_output_key(k)) out.insert(k);
  return out;
}

std::string key_text(const results::RunRecord& r, const std::vector<std::string>& keys) {
  std::vector<std::string> parts;
  for (const auto& k : keys) parts.push_back(k + "=" + param_or(r, k, "-"));
  return parts.empty() ? std::string("(all runs)") : fmt::format("{}", fmt::join(parts, " "));
}

// runs_table's fixed columns, in the order run_row fills them; the runs' parameters follow.
std::vector<std::string> fixed_columns() {
  return {"file",
          "experiment",
          "id",
          "status",
          "failure",
          "failed_rank",
          "verdict",
          "validity",
          "invalid_reasons",
          "time_model",
          "dilation",
          "overruns",
          "cpu_wait_fraction",
          "scale",
          "git_commit",
          "git_dirty",
          "stages",
          "batch_size",
          "warmup_batches",
          "measured_batches",
          "repetitions",
          "throughput_sps",
          "throughput_mean_sps",
          "throughput_std_sps",
          "throughput_ci95_low_sps",
          "throughput_ci95_high_sps",
          "duration_s",
          "latency_p50_s",
          "latency_p90_s",
          "latency_p99_s",
          "energy_j",
          "energy_per_sample_j",
          "energy_source",
          "max_abs_error",
          "cut_names",
          "requested_rate",
          "effective_rate",
          "cut_bytes_per_sample",
          "cut_wire_bytes_per_sample",
          "checks_passed",
          "checks_failed",
          "training_mode",
          "dataset",
          "stand_in",
          "classes",
          "train_samples",
          "test_samples",
          "epochs",
          "final_top1",
          "final_top5",
          "final_test_loss",
          "final_train_loss",
          "train_s",
          "proxy_speedup",
          "pretrain_top1",
          "converged"};
}

// One run's fixed cells (fixed_columns) followed by its values of `keys`.
std::vector<std::string> run_row(const std::string& path, const results::ExperimentRecord& rec,
                                 const results::RunRecord& r, const std::set<std::string>& keys) {
  const bool training = is_training(r);
  const bool pipeline = !training;
  auto p = [&](std::string cell) { return pipeline ? cell : std::string(); };
  auto tr = [&](std::string cell) { return training ? cell : std::string(); };
  int64_t passed = 0, failed = 0;
  for (const auto& c : r.checks) (c.passed ? passed : failed) += 1;
  const auto [requested, effective] = rates(r);
  int64_t cut_bytes = 0, wire_bytes = 0;
  for (auto b : r.cut_bytes_per_sample) cut_bytes += b;
  for (auto b : r.cut_wire_bytes_per_sample) wire_bytes += b;
  const auto& x = r.training;
  std::vector<std::string> row = {
      path,
      rec.name,
      r.id,
      r.status,
      r.failure,
      r.failed_rank >= 0 ? num(r.failed_rank) : std::string(),
      verdict(r),
      r.validity,
      joined(r.invalid_reasons),
      r.time_model,
      num(r.dilation),
      num(r.overruns),
      nonneg(r.cpu_wait_fraction),
      rec.provenance.scale,
      rec.provenance.git_commit,
      boolean(rec.provenance.git_dirty),
      num(static_cast<int64_t>(r.stages.size())),
      num(r.batch_size),
      p(num(r.warmup_batches)),
      p(num(r.measured_batches)),
      p(num(r.repetitions)),
      p(num(r.throughput_sps)),
      p(num(r.throughput_mean_sps)),
      p(num(r.throughput_std_sps)),
      p(num(r.throughput_ci95_low_sps)),
      p(num(r.throughput_ci95_high_sps)),
      p(num(r.duration_s)),
      p(num(r.latency_p50_s)),
      p(num(r.latency_p90_s)),
      p(num(r.latency_p99_s)),
      p(nonneg(r.energy_j)),
      p(nonneg(r.energy_per_sample_j)),
      p(r.energy_source),
      p(nonneg(r.max_abs_error)),
      joined(r.cut_names),
      num(requested),
      num(effective),
      num(cut_bytes),
      num(wire_bytes),
      num(passed),
      num(failed),
      x.mode,
      x.dataset,
      x.stand_in,
      tr(num(x.classes)),
      tr(num(x.train_samples)),
      tr(num(x.test_samples)),
      tr(num(static_cast<int64_t>(x.epoch.size()))),
      tr(num(x.final_top1)),
      tr(num(x.final_top5)),
      tr(num(x.final_test_loss)),
      tr(x.train_loss.empty() ? std::string() : num(x.train_loss.back())),
      tr(num(x.train_s)),
      tr(nonneg(x.proxy_speedup)),
      tr(num(x.pretrain_top1)),
      tr(x.converged < 0 ? std::string() : (x.converged ? "True" : "False"))};
  for (const auto& k : keys) row.push_back(param_or(r, k, ""));
  return row;
}

}  // namespace

RunsTable runs_table(const std::vector<NamedRecord>& files) {
  RunsTable t;
  t.columns = fixed_columns();
  std::set<std::string> keys;
  for (const auto& [path, rec] : files)
    for (const auto& r : rec.runs)
      for (const auto& [k, v] : r.params) keys.insert(k);
  for (const auto& k : keys) t.columns.push_back(k);

  for (const auto& [path, rec] : files)
    for (const auto& r : rec.runs) t.rows.push_back(run_row(path, rec, r, keys));
  return t;
}

std::string to_csv(const RunsTable& table) {
  auto cell = [](const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) out += (i ? "," : "") + cell(cells[i]);
    out += "\n";
  };
  line(table.columns);
  for (const auto& row : table.rows) line(row);
  return out;
}

std::vector<NamedRecord> read_files(const std::vector<std::string>& paths) {
  std::vector<NamedRecord> out;
  for (const auto& path : paths) out.emplace_back(path, results::read_experiment(path));
  return out;
}

std::string multi_report_table(const std::vector<NamedRecord>& files, bool* all_good) {
  *all_good = true;
  std::set<std::string> keys;
  for (const auto& [path, rec] : files) {
    auto v = varying_keys(rec);
    keys.insert(v.begin(), v.end());
  }
  const std::vector<std::string> key_list(keys.begin(), keys.end());
  std::string out;
  size_t runs = 0;
  for (const auto& [path, rec] : files) {
    out += fmt::format("{}: {} ({} run(s), git {}{}{})\n", path, rec.name, rec.runs.size(),
                       rec.provenance.git_commit.substr(0, 12),
                       rec.provenance.git_dirty ? " dirty" : "",
                       rec.provenance.scale.empty() ? "" : ", scale " + rec.provenance.scale);
    runs += rec.runs.size();
  }
  out += fmt::format("\n{:<24} {:<14} {:<10} {:<22} {:<16} {}\n", "file", "run", "time model",
                     "result", "verdict", "parameters");
  for (const auto& [path, rec] : files) {
    for (const auto& r : rec.runs) {
      const std::string v = verdict(r);
      if (v != "OK") *all_good = false;
      std::string why;
      if (r.status != "ok")
        why = ": " + r.failure;
      else if (v == "INVALID")
        why = fmt::format(": {}", fmt::join(r.invalid_reasons, "; "));
      std::string file = path.size() > 24 ? "..." + path.substr(path.size() - 21) : path;
      out += fmt::format("{:<24} {:<14} {:<10} {:<22} {:<16} {}{}\n", file, r.id,
                         is_training(r) ? "training" : r.time_model, headline(r), v,
                         key_text(r, key_list), why);
    }
  }
  out += fmt::format("{} run(s) in {} file(s); {}\n", runs, files.size(),
                     *all_good ? "all OK" : "not all OK (see verdict)");
  return out;
}

namespace {

// The parameters that pair runs: `by`, each checked to be a parameter of every run of both
// files, or when empty the ones that vary in either file.
std::vector<std::string> pairing_keys(const NamedRecord& base, const NamedRecord& other,
                                      const std::vector<std::string>& by) {
  std::vector<std::string> keys = by;
  if (keys.empty()) {
    auto a = varying_keys(base.second), b = varying_keys(other.second);
    a.insert(b.begin(), b.end());
    keys.assign(a.begin(), a.end());
  } else {
    for (const auto& k : keys) {
      for (const NamedRecord* f : {&base, &other}) {
        for (const auto& r : f->second.runs) {
          if (r.params.count(k)) continue;
          std::vector<std::string> valid;
          for (const auto& [name, v] : r.params) valid.push_back(name);
          throw ConfigError("<command line>", 0, 0, "--by",
                            fmt::format("'{}' is not a parameter of run {} in {} (valid: {})", k,
                                        r.id, f->first, fmt::join(valid, ", ")));
        }
      }
    }
  }
  return keys;
}

// One pair's line (throughput and latency, or top-1 for training runs) and, when the pair
// differs beyond the keys they were paired by, a line saying how.
std::string pair_text(const results::RunRecord& a, const results::RunRecord& b,
                      const std::vector<std::string>& keys) {
  auto ratio = [](double x, double y) {
    return x > 0 && std::isfinite(y) ? fmt::format("{:.3f}", y / x) : std::string("-");
  };
  std::string out;
  if (is_training(a) || is_training(b)) {
    out += fmt::format(
        "{:<14} {:<14} {:>14} {:>14} {:>8} {:>12} {:>12} {:>8}  {}\n", a.id, b.id,
        "top-1 " + pct(a.training.final_top1), pct(b.training.final_top1),
        std::isfinite(a.training.final_top1 - b.training.final_top1)
            ? fmt::format("{:+.2f}pt", 100 * (b.training.final_top1 - a.training.final_top1))
            : "-",
        "", "", "", key_text(a, keys));
  } else {
    out += fmt::format("{:<14} {:<14} {:>14.3f} {:>14.3f} {:>8} {:>12.2f} {:>12.2f} {:>8}  {}\n",
                       a.id, b.id, a.throughput_sps, b.throughput_sps,
                       ratio(a.throughput_sps, b.throughput_sps), 1e3 * a.latency_p50_s,
                       1e3 * b.latency_p50_s, ratio(a.latency_p50_s, b.latency_p50_s),
                       key_text(a, keys));
  }
  // What differs between the pair beyond the keys they were paired by.
  std::set<std::string> names;
  for (const auto& [k, v] : a.params) names.insert(k);
  for (const auto& [k, v] : b.params) names.insert(k);
  std::vector<std::string> diffs;
  for (const auto& k : names) {
    if (is_output_key(k)) continue;
    const std::string va = param_or(a, k, "(absent)"), vb = param_or(b, k, "(absent)");
    if (normalized(va) != normalized(vb)) diffs.push_back(fmt::format("{}: {} -> {}", k, va, vb));
  }
  if (a.time_model != b.time_model)
    diffs.push_back(fmt::format("time model: {} -> {}", a.time_model, b.time_model));
  if (verdict(a) != "OK" || verdict(b) != "OK")
    diffs.push_back(fmt::format("verdict: {} -> {}", verdict(a), verdict(b)));
  if (!diffs.empty()) out += fmt::format("    differs: {}\n", fmt::join(diffs, "; "));
  return out;
}

}  // namespace

std::string compare_by_params(const NamedRecord& base, const NamedRecord& other,
                              const std::vector<std::string>& by) {
  const std::vector<std::string> keys = pairing_keys(base, other, by);
  auto key_of = [&](const results::RunRecord& r) {
    std::vector<std::string> k;
    for (const auto& name : keys) k.push_back(normalized(param_or(r, name, "")));
    return k;
  };
  std::vector<bool> used(other.second.runs.size(), false);
  std::string out = fmt::format("runs paired by {}\n",
                                keys.empty() ? std::string("their order (no parameter varies)")
                                             : fmt::format("{}", fmt::join(keys, ", ")));
  out += fmt::format("{:<14} {:<14} {:>14} {:>14} {:>8} {:>12} {:>12} {:>8}  {}\n", "base run",
                     "other run", "base", "other", "ratio", "base p50 ms", "other", "ratio", "key");
  std::vector<const results::RunRecord*> only_base;
  for (const auto& a : base.second.runs) {
    const auto ka = key_of(a);
    const results::RunRecord* match = nullptr;
    for (size_t j = 0; j < other.second.runs.size() && !match; ++j) {
      if (used[j] || key_of(other.second.runs[j]) != ka) continue;
      used[j] = true;
      match = &other.second.runs[j];
    }
    if (!match) {
      only_base.push_back(&a);
      continue;
    }
    out += pair_text(a, *match, keys);
  }
  for (const auto* a : only_base)
    out += fmt::format("{:<14} only in the base file  {}\n", a->id, key_text(*a, keys));
  for (size_t j = 0; j < other.second.runs.size(); ++j)
    if (!used[j])
      out += fmt::format("{:<14} only in the other file  {}\n", other.second.runs[j].id,
                         key_text(other.second.runs[j], keys));
  return out;
}

int report_command(const std::vector<std::string>& files, const std::string& compare,
                   const std::vector<std::string>& by) {
  if (files.empty()) throw ConfigError("<command line>", 0, 0, "report", "needs a result file");
  if (!by.empty() && compare.empty())
    throw ConfigError("<command line>", 0, 0, "--by", "only applies with --compare BASE.h5");
  auto records = read_files(files);
  if (!compare.empty()) {
    auto base = read_files({compare}).front();
    for (const auto& other : records) {
      fmt::print("base: {} ({})\nother: {} ({})\n", base.first, base.second.name, other.first,
                 other.second.name);
      if (base.second.experiment_hash != other.second.experiment_hash)
        fmt::print("note: the files come from different experiments\n");
      fmt::print("{}\n", compare_by_params(base, other, by));
    }
    return 0;
  }
  bool good = true;
  if (records.size() == 1)
    fmt::print("{}", report_table(records.front().second, &good));
  else
    fmt::print("{}", multi_report_table(records, &good));
  if (!good)
    fmt::print(stderr,
               "quilt report: exit 1: a run failed, is INVALID (measured on a busy host, or past "
               "measurement.max_cv) or FAILs a reference check; the report says which\n");
  return good ? 0 : 1;
}

int collect_command(const std::vector<std::string>& files, const std::string& output) {
  if (files.empty()) throw ConfigError("<command line>", 0, 0, "collect", "needs result files");
  if (output.empty())
    throw ConfigError("<command line>", 0, 0, "collect", "needs -o TABLE.csv (or -o - for stdout)");
  const RunsTable table = runs_table(read_files(files));
  const std::string csv = to_csv(table);
  if (output == "-") {
    fmt::print("{}", csv);
    return 0;
  }
  // Written beside the target and renamed over it: a failure never leaves half a table.
  const std::string tmp = output + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << csv;
    f.close();
    if (!f)
      throw ConfigError("<command line>", 0, 0, "-o",
                        fmt::format("cannot write '{}' (directory missing or not writable?)", tmp));
  }
  if (std::rename(tmp.c_str(), output.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw ConfigError("<command line>", 0, 0, "-o", fmt::format("cannot write '{}'", output));
  }
  fmt::print(stderr, "wrote {} ({} run(s) from {} file(s))\n", output, table.rows.size(),
             files.size());
  return 0;
}

int cmd_report(int argc, char** argv) {
  std::vector<std::string> files, by;
  std::string compare;
  cli::Parser p("report",
                "Each run's metrics, validity and PASS/FAIL against the experiment's references; "
                "several files give one table across them.");
  p.positional("FILE.h5", "result files of `quilt run`", &files, 1, SIZE_MAX)
      .option("--compare", "BASE.h5",
              "each file against BASE, runs paired by the parameters that vary within either "
              "file (output paths aside); what else differs is listed per pair",
              &compare)
      .option("--by", "KEY,KEY", "pair by these parameters instead",
              [&by](const std::string& v) {
                for (size_t s = 0; s <= v.size();) {
                  size_t e = v.find(',', s);
                  if (e == std::string::npos) e = v.size();
                  if (e > s) by.push_back(v.substr(s, e - s));
                  s = e + 1;
                }
              })
      .note(
          "exit codes: 0 all runs OK, 1 a run failed / is invalid / missed a reference, 2 bad "
          "input")
      .example("quilt report results/quickstart.h5")
      .example("quilt report results/*.h5", "one table across files")
      .example("quilt report results/efficiency.h5 --compare old/efficiency.h5 --by model.arch",
               "runs paired by model");
  if (!p.parse(argc, argv)) return 0;
  return report_command(files, compare, by);
}

int cmd_collect(int argc, char** argv) {
  std::vector<std::string> files;
  std::string output;
  cli::Parser p("collect",
                "Every run of the files as one CSV row: the table quilt.results.runs() returns "
                "in Python (columns: analysis/README.md).");
  p.positional("FILE.h5", "result files of `quilt run`", &files, 1, SIZE_MAX)
      .option("-o", "TABLE.csv", "where to write the CSV (- for stdout)", &output)
      .option("--output", "TABLE.csv", "the same as -o", &output)
      .example("quilt collect results/*.h5 -o table.csv");
  if (!p.parse(argc, argv)) return 0;
  return collect_command(files, output);
}

}  // namespace quilt::harness
