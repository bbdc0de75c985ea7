// `quilt reproduce`: the whole paper in one command. This process stays light (no LibTorch,
// no MPI): each experiment runs as a child `mpirun -n K quilt run ...` (or `srun`) whose output
// goes to DIR/logs/, the analysis scripts run as children of /usr/bin/python3, and
// analysis/report.py turns DIR/reproduce.json (written here after every step) into the report.

#include "cli/reproduce_cmd.h"

#include "cli/child_process.h"
#include "cli/reproduction.h"
#include "harness/clock.h"
#include "harness/experiment.h"
#include "results/reader.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace quilt::harness {
namespace reproduction {

volatile sig_atomic_t g_signal = 0;

namespace {
void on_signal(int sig) { g_signal = sig; }

// Polls every running child once: each that ended leaves `running`, then goes to
// on_end(state, result). Stops them all first when quilt reproduce got a signal. Returns whether
// one ended.
template <class State, class OnEnd>
bool reap(std::vector<Running<State>>& running, OnEnd on_end) {
  if (g_signal)
    for (auto& r : running) stop_child_process(r.child);
  bool ended = false;
  for (auto it = running.begin(); it != running.end();) {
    if (!poll_child_process(it->child)) {
      ++it;
      continue;
    }
    State& s = *it->state;
    const ChildResult result = it->child.result;
    it = running.erase(it);
    on_end(s, result);
    ended = true;
  }
  return ended;
}

}  // namespace

void Reproduction::say(const std::string& line) {
  if (live_line_) {
    std::fputs("\r\033[K", stdout);
    live_line_ = false;
  }
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

void Reproduction::plan() {
  for (const auto& p : paper_experiments()) {
    ExperimentState e;
    e.paper = p;
    e.file = (fs::path(o_.source_dir) / "experiments" / (p.name + ".yaml")).string();
    e.log = "logs/" + p.name + ".log";
    e.selected =
        o_.only.empty() || std::find(o_.only.begin(), o_.only.end(), p.name) != o_.only.end();
    try {
      Experiment x = load_experiment(e.file, o_.scale);
      e.runs = x.runs.size();
      e.hash = x.hash;
      e.training = !x.runs.empty();
      for (const auto& r : x.runs) {
        e.cost += run_cost(r);
        e.ranks = std::max(e.ranks, r.boards.count);
        if (!r.training.mode) e.training = false;
      }
      if (e.training) {
        e.kind = x.runs.front().model.arch;
        for (const auto& r : x.runs)
          if (r.model.arch != e.kind) e.kind = "mixed";
      }
    } catch (const std::exception& ex) {
      e.config_error = ex.what();
    }
    experiments_.push_back(std::move(e));
  }
  // Each script with the result files it reads; its outputs go to DIR/analysis/<name>/.
  auto step = [this](std::string name, std::string experiment, std::vector<std::string> required,
                     std::vector<std::string> optional = {}) {
    AnalysisState a;
    a.name = std::move(name);
    a.experiment = std::move(experiment);
    a.required = std::move(required);
    a.optional = std::move(optional);
    analyses_.push_back(std::move(a));
  };
  step("fig5_efficiency", "efficiency", {"efficiency"});
  step("fig5_sensitivity", "efficiency", {});  // the cost model alone: no result file
  step("fig6_breakdown", "breakdown", {"breakdown"});
  step("interposition_table", "interposition", {"interposition", "interposition_multi"});
  step("partition_auto_report", "partition_auto", {"partition_auto"});
  step("fig2_feasibility", "feasibility", {"feasibility"});
  step("table1_accuracy", "accuracy", {"accuracy"});
  step("table2_fig7_weight_freezing", "weight_freezing", {"weight_freezing"});
  step("fig4_tradeoff", "tradeoff", {"tradeoff"}, {"efficiency"});
  step("table3_interposition_accuracy", "interposition_accuracy", {"interposition_accuracy"});
  for (auto& a : analyses_) a.log = "logs/analysis-" + a.name + ".log";
}

std::vector<std::string> Reproduction::experiment_command(ExperimentState& e) {
  const std::string out = h5(e.paper.name);
  // Complete already (same experiment and scale, every run ok): nothing to run.
  bool exists = fs::exists(out);
  if (exists) {
    try {
      auto rec = results::read_experiment(out);
      std::set<std::string> ok;
      for (const auto& r : rec.runs)
        if (r.status == "ok") ok.insert(r.id);
      if (rec.experiment_hash == e.hash && ok.size() == e.runs) {
        e.status = "complete";
        e.reason = "complete in " + e.paper.name + ".h5 (not re-run)";
        return {};
      }
    } catch (const std::exception&) {
      // Damaged or foreign: `quilt run --resume` says why, in the log and the report.
    }
  }
  std::vector<std::string> argv;
  if (launcher_ == "srun") {
    // One job step per experiment; with --jobs N, N steps share the allocation (--overcommit).
    argv = {"srun",         "--mpi=pmix",          "-n", std::to_string(e.ranks),
            "--overcommit", "--kill-on-bad-exit=1"};
  } else {
    argv = {"mpirun", "-n", std::to_string(e.ranks)};
    // Each mpirun binds its ranks from core 0 on, unaware of the others: concurrent jobs would
    // all share the first cores.
    if (o_.jobs > 1) argv.insert(argv.end(), {"--bind-to", "none"});
  }
  for (const auto& a : std::vector<std::string>{o_.quilt_exe, "run", e.file, "--scale", o_.scale,
                                                "--output", out, "--keep-going"})
    argv.push_back(a);
  if (exists) argv.push_back("--resume");
  e.command = argv;
  return argv;
}

void Reproduction::finish_experiment(ExperimentState& e, const ChildResult& r) {
  e.result = r;
  e.end_s = seconds_since(t0_);
  e.ended_utc = utc_now_iso8601();
  log_footer(e.log, r);
  if (r.interrupted) {
    e.status = "interrupted";
    e.reason = "stopped by a signal to quilt reproduce";
  } else if (!r.error.empty()) {
    e.status = "failed";
    e.reason = r.error;
  } else if (r.exit_code == 0) {
    e.status = "ok";
  } else {
    e.status = "failed";
    e.reason = exit_reason(r, /*quilt_run=*/true);
  }
}

void Reproduction::experiment_done(const ExperimentState& e, int done, int total) {
  std::string left = estimate_left();
  std::string what = e.status == "complete" ? "complete in its result file, skipped"
                     : e.status == "ok" ? fmt::format("ok in {}", duration_text(e.result.wall_s))
                                        : fmt::format("{} after {}: {}",
                                                      e.status == "failed" ? "FAILED" : e.status,
                                                      duration_text(e.result.wall_s), e.reason);
  say(fmt::format("[{}/{}] {}: {}; {} of {} done{}", e.position, total, e.paper.name, what, done,
                  total, left.empty() || done == total ? "" : ", " + left));
  if (e.status == "failed") {
    std::string tail = tail_of((dir_ / e.log).string(), 8);
    std::istringstream lines(tail);
    for (std::string l; std::getline(lines, l);) say("    | " + l);
  }
  write_manifest();
}

std::optional<RunningChild> Reproduction::start_experiment(ExperimentState& e, int total) {
  std::vector<std::string> argv = experiment_command(e);
  if (argv.empty()) return std::nullopt;
  say(fmt::format("[{}/{}] {} ({}): {} run(s) on {} rank(s) ...", e.position, total, e.paper.name,
                  e.paper.paper, e.runs, e.ranks));
  e.log_start = log_header(e.log, argv);
  e.status = "running";
  e.start_s = seconds_since(t0_);
  e.started_utc = utc_now_iso8601();
  return start_child_process(argv, (dir_ / e.log).string(), "");
}

void Reproduction::show_progress(const std::vector<Running<ExperimentState>>& running, int done,
                                 int total, ProgressLine& shown) {
  // Which experiments are running, where each is, and the time left.
  std::vector<std::string> parts;
  std::string runs;
  for (auto& r : running) {
    if (auto cur = current_run((dir_ / r.state->log).string(), r.state->log_start)) {
      r.state->run_text = fmt::format(", run {}/{}", cur->first, cur->second);
      r.state->run_index = cur->first;
      r.state->run_total = cur->second;
    }
    runs += r.state->run_text + ";";
    parts.push_back(fmt::format("{}: {}{}", r.state->paper.name, duration_text(r.child.elapsed_s()),
                                r.state->run_text));
  }
  std::string left = estimate_left();
  std::string line =
      running.size() == 1
          ? fmt::format("[{}/{}] {}", running[0].state->position, total, parts[0])
          : fmt::format("[{} of {} done] running {}", done, total, fmt::join(parts, " | "));
  if (!left.empty()) line += "; " + left;
  const double now_s = seconds_since(t0_);
  if (tty_) {
    std::fputs(("\r\033[K" + line).c_str(), stdout);
    std::fflush(stdout);
    live_line_ = true;
  } else if (now_s - shown.at_s >= 60 || (runs != shown.runs && now_s - shown.at_s >= 10)) {
    // Batch jobs: a plain line at most every 10 s when a run changes, every minute otherwise.
    say(line);
    shown.at_s = now_s;
  }
  shown.runs = runs;
}

void Reproduction::run_experiments(const std::vector<ExperimentState*>& todo) {
  std::vector<Running<ExperimentState>> running;
  const int total = static_cast<int>(todo.size());
  int done = 0, used = 0;
  size_t next = 0;
  ProgressLine shown{seconds_since(t0_), ""};  // the start lines are enough for the first 10 s
  for (;;) {
    // Start what fits, strictly in file order: an experiment of r ranks takes min(r, N) of the
    // N slots (one wider than N runs alone), so the head of the queue always starts eventually.
    while (!g_signal && next < todo.size()) {
      ExperimentState& e = *todo[next];
      if (used + slots_of(e) > o_.jobs) break;
      ++next;
      std::optional<RunningChild> child = start_experiment(e, total);
      if (!child) {
        experiment_done(e, ++done, total);
        continue;
      }
      running.push_back({&e, std::move(*child)});
      used += slots_of(e);
      write_manifest();
    }
    const bool ended = reap(running, [&](ExperimentState& e, const ChildResult& result) {
      used -= slots_of(e);
      finish_experiment(e, result);
      experiment_done(e, ++done, total);
    });
    if (running.empty() && (g_signal || next >= todo.size())) break;
    if (ended) continue;  // start the next ones now
    show_progress(running, done, total, shown);
    std::this_thread::sleep_for(std::chrono::milliseconds(tty_ ? 250 : 500));
  }
  for (size_t i = next; i < todo.size(); ++i) {
    todo[i]->status = "not-run";
    todo[i]->reason = "quilt reproduce was interrupted before it";
  }
}

std::vector<std::string> Reproduction::analysis_command(AnalysisState& a) {
  std::vector<std::string> missing;
  for (const auto& r : a.required)
    if (!fs::exists(h5(r))) missing.push_back(r + ".h5");
  if (!missing.empty()) {
    a.status = "not-run";
    a.reason = fmt::format("{} missing", fmt::join(missing, ", "));
    return {};
  }
  // A fresh folder: the report shows every file in it, so nothing stale may stay.
  const fs::path out_dir = dir_ / "analysis" / a.name;
  std::error_code ec;
  fs::remove_all(out_dir, ec);
  fs::create_directories(out_dir);
  const std::string script = (fs::path(o_.source_dir) / "analysis" / (a.name + ".py")).string();
  std::vector<std::string> argv;
  if (a.name == "partition_auto_report") {
    // No script: the CLI's own report is the table (chosen cuts, predicted vs measured).
    argv = {o_.quilt_exe, "report", h5("partition_auto")};
    a.stdout_file = "analysis/" + a.name + "/partition_auto_report.txt";
  } else if (a.name == "fig5_sensitivity") {
    argv = {o_.python, script, "--out", out_dir.string()};
    if (o_.scale == "smoke") argv.insert(argv.end(), {"--points", "6"});
  } else if (a.name == "interposition_table") {
    argv = {o_.python,           script,          "--single",
            h5("interposition"), "--multi",       h5("interposition_multi"),
            "--out-dir",         out_dir.string()};
  } else {
    argv = {o_.python, script, h5(a.required[0]), "--out-dir", out_dir.string()};
    if (a.name == "fig4_tradeoff" && fs::exists(h5("efficiency"))) {
      argv.push_back("--efficiency");
      argv.push_back(h5("efficiency"));
    }
  }
  a.command = argv;
  return argv;
}

void Reproduction::finish_analysis(AnalysisState& a, const ChildResult& r) {
  a.result = r;
  log_footer(a.log, r);
  if (!a.result.error.empty()) {
    a.status = "failed";
    a.reason = a.result.error;
  } else if (a.result.exit_code == 0) {
    a.status = "ok";
  } else {
    a.status = "failed";
    a.reason = exit_reason(a.result, /*quilt_run=*/false);
  }
}

void Reproduction::run_analyses() {
  // Up to --jobs scripts at a time (each a single process); they read the result files only and
  // write to their own folders.
  std::vector<Running<AnalysisState>> running;
  size_t next = 0;
  auto finished = [&](AnalysisState& a) {
    const bool selected =
        o_.only.empty() || std::find(o_.only.begin(), o_.only.end(), a.experiment) != o_.only.end();
    if (a.status == "failed" || (a.status != "ok" && selected))
      say(fmt::format("  {}: {}{}", a.name,
                      a.status == "failed" ? "FAILED: " : "not run: ", a.reason));
    write_manifest();
  };
  for (;;) {
    while (!g_signal && next < analyses_.size() && running.size() < static_cast<size_t>(o_.jobs)) {
      AnalysisState& a = analyses_[next++];
      std::vector<std::string> argv = analysis_command(a);
      if (argv.empty()) {
        finished(a);
        continue;
      }
      log_header(a.log, argv);
      running.push_back(
          {&a, start_child_process(argv, (dir_ / a.log).string(),
                                   a.stdout_file.empty() ? "" : (dir_ / a.stdout_file).string())});
    }
    const bool ended = reap(running, [&](AnalysisState& a, const ChildResult& result) {
      finish_analysis(a, result);
      finished(a);
    });
    if (running.empty() && (g_signal || next >= analyses_.size())) break;
    if (!ended) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

bool Reproduction::build_report() {
  const std::string script = (fs::path(o_.source_dir) / "analysis" / "report.py").string();
  std::vector<std::string> argv = {o_.python, script, dir_.string()};
  stop_child_on_signal_ = false;
  ChildResult r = run_child(argv, "logs/report.log", "");
  stop_child_on_signal_ = true;
  if (r.exit_code == 0) {
    report_status_ = "ok";
    return true;
  }
  report_status_ = "failed";
  report_reason_ = r.error.empty() ? fmt::format("exit code {}", r.exit_code) : r.error;
  return false;
}

void Reproduction::prepare() {
  t0_ = Clock::now();
  started_utc_ = utc_now_iso8601();
  tty_ = isatty(STDOUT_FILENO) && std::getenv("TERM") && std::string(std::getenv("TERM")) != "dumb";
  dir_ = o_.out_dir;
  std::error_code ec;
  fs::create_directories(dir_ / "logs", ec);
  if (ec || access(dir_.c_str(), W_OK) != 0)
    throw ConfigError("<command line>", 0, 0, "--out",
                      fmt::format("cannot create or write the directory {}: {}", dir_.string(),
                                  ec ? ec.message() : std::strerror(errno)));
  launcher_ = o_.launcher;
  if (launcher_ == "auto") launcher_ = std::getenv("SLURM_JOB_ID") ? "srun" : "mpirun";
  // The Makefile's MPI environment, unless the user set otherwise.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
  setenv("OMP_NUM_THREADS", "1", 0);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  // The report (and any script) reads result files through the `quilt` Python module.
  const char* pp = std::getenv("PYTHONPATH");
  setenv("PYTHONPATH", (o_.python_path + (pp && *pp ? std::string(":") + pp : "")).c_str(), 1);
}

std::vector<ExperimentState*> Reproduction::select(size_t* total_runs) {
  std::vector<ExperimentState*> todo;
  for (auto& e : experiments_) {
    if (!e.selected) {
      e.status = "not-run";
      e.reason = "not selected (--only)";
      continue;
    }
    if (!e.config_error.empty()) {
      e.status = "failed";
      e.reason = "the experiment file does not load at this scale";
      e.result.exit_code = 2;
      continue;
    }
    todo.push_back(&e);
    e.position = todo.size();
    *total_runs += e.runs;
  }
  return todo;
}

int Reproduction::summarize(bool report_ok) {
  int failed = 0, failed_analyses = 0;
  for (const auto& e : experiments_) failed += e.status == "failed" || e.status == "interrupted";
  for (const auto& a : analyses_) failed_analyses += a.status == "failed";
  if (report_ok)
    say(fmt::format("report: {} and {} ({} total)", (dir_ / "index.html").string(),
                    (dir_ / "report.md").string(), duration_text(seconds_since(t0_))));
  else
    say(fmt::format("report: FAILED ({}); see {}", report_reason_,
                    (dir_ / "logs/report.log").string()));
  if (failed || failed_analyses)
    say(fmt::format("{} experiment(s) and {} analysis script(s) failed; the report shows why",
                    failed, failed_analyses));
  if (g_signal) return 128 + g_signal;
  return failed || failed_analyses || !report_ok ? 1 : 0;
}

int Reproduction::run() {
  prepare();
  plan();
  size_t total_runs = 0;
  std::vector<ExperimentState*> todo = select(&total_runs);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  say(fmt::format(
      "quilt reproduce: scale {}, {} experiment(s), {} run(s), launcher {}, {} job(s), output {}",
      o_.scale, todo.size(), total_runs, launcher_, o_.jobs, dir_.string()));
  for (const auto& e : experiments_)
    if (!e.config_error.empty())
      say(fmt::format("  {}: FAILED to load: {}", e.paper.name, e.config_error));
  write_manifest();
  run_experiments(todo);
  if (!g_signal) {
    say(fmt::format("analysis: {} script(s){} ...", analyses_.size(),
                    o_.jobs > 1 ? fmt::format(", up to {} at a time", o_.jobs) : ""));
    run_analyses();
  }
  for (auto& a : analyses_)
    if (a.status == "pending") {
      a.status = "not-run";
      a.reason = "quilt reproduce was interrupted before it";
    }
  write_manifest();
  bool report_ok = build_report();
  write_manifest();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return summarize(report_ok);
}

}  // namespace reproduction

int run_reproduce(const ReproduceOptions& options) {
  return reproduction::Reproduction(options).run();
}

}  // namespace quilt::harness