// `quilt reproduce`: the whole paper in one command. This process stays light (no LibTorch,
// no MPI): each experiment runs as a child `mpirun -n K quilt run ...` (or `srun`) whose output
// goes to DIR/logs/, the analysis scripts run as children of /usr/bin/python3, and
// analysis/report.py turns DIR/reproduce.json (written here after every step) into the report.

#include "cli/reproduce_cmd.h"

#include "cli/child_process.h"
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
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace quilt::harness {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20)
          out += fmt::format("\\u{:04x}", c);
        else
          out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string json_list(const std::vector<std::string>& v) {
  std::vector<std::string> q;
  for (const auto& s : v) q.push_back(json_string(s));
  return "[" + fmt::format("{}", fmt::join(q, ", ")) + "]";
}

// "1h02m", "3m05s", "42s".
std::string duration_text(double s) {
  if (s < 0) s = 0;
  long t = static_cast<long>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// The last `lines` lines of a file (the failure's context in the report and on the console).
std::string tail_of(const std::string& path, size_t lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  size_t first = all.size() > lines ? all.size() - lines : 0;
  std::string out;
  for (size_t i = first; i < all.size(); ++i) out += all[i] + "\n";
  return out;
}

// "[3/12] run ..." lines that `quilt run` prints: the run it is on, for the progress line.
std::optional<std::pair<int, int>> current_run(const std::string& log, std::streamoff from) {
  std::ifstream in(log);
  if (!in) return std::nullopt;
  in.seekg(from);
  std::optional<std::pair<int, int>> last;
  for (std::string line; std::getline(in, line);) {
    int i = 0, n = 0;
    if (line.rfind("[", 0) == 0 && std::sscanf(line.c_str(), "[%d/%d] run ", &i, &n) == 2)
      last = {{i, n}};
  }
  return last;
}

struct ExperimentState {
  PaperExperiment paper;
  std::string file;  // experiments/<name>.yaml, absolute
  bool selected = true;
  std::string config_error;
  int ranks = 1;
  size_t runs = 0;
  bool training = false;
  std::string hash;
  // pending, running, then ok | failed | complete | interrupted | not-run
  std::string status = "pending";
  std::string reason;
  std::vector<std::string> command;
  ChildResult result;
  std::string log;      // relative to DIR
  size_t position = 0;  // 1-based among the experiments this invocation runs (progress lines)
  // When this invocation started and ended its child, in seconds since quilt reproduce started
  // (-1: not started); with --jobs N these show which experiments ran at the same time.
  double start_s = -1, end_s = -1;
  std::string started_utc, ended_utc;
  std::streamoff log_start = 0;  // where this invocation's output begins in the log
  std::string run_text;          // ", run 3/12": the run it is on, from its log
};

struct AnalysisState {
  std::string name;                   // output folder DIR/analysis/<name>, log DIR/logs/<name>.log
  std::string experiment;             // the report section it belongs to
  std::vector<std::string> required;  // experiments whose result files it needs
  std::vector<std::string> optional;  // used when present
  std::string status = "pending";     // ok | failed | not-run | pending
  std::string reason;
  std::vector<std::string> command;
  ChildResult result;
  std::string log;
  std::string stdout_file;  // relative to DIR; when set, the command's stdout is this output
};

class Reproduction {
 public:
  explicit Reproduction(ReproduceOptions o) : o_(std::move(o)) {}

  int run();

 private:
  void plan();
  std::vector<std::string> experiment_command(ExperimentState& e);
  void finish_experiment(ExperimentState& e, const ChildResult& r);
  void run_experiments(const std::vector<ExperimentState*>& todo);
  int slots_of(const ExperimentState& e) const { return std::min(e.ranks, o_.jobs); }
  std::vector<std::string> analysis_command(AnalysisState& a);
  void finish_analysis(AnalysisState& a, const ChildResult& r);
  void run_analyses();
  bool build_report();
  ChildResult run_child(const std::vector<std::string>& argv, const std::string& log,
                        const std::string& stdout_file);
  void write_manifest();
  std::string estimate_left() const;
  std::streamoff log_header(const std::string& log, const std::vector<std::string>& argv);
  void log_footer(const std::string& log, const ChildResult& r);
  std::string h5(const std::string& name) const { return (dir_ / (name + ".h5")).string(); }
  void say(const std::string& line);

  ReproduceOptions o_;
  fs::path dir_;
  bool tty_ = false;
  bool live_line_ = false;  // a progress line without newline is on the terminal
  // Whether a signal to quilt reproduce stops the running child. Not for the report, which is
  // written after an interruption too (a child that had already exec'd would die of it).
  bool stop_child_on_signal_ = true;
  std::string launcher_;
  std::vector<ExperimentState> experiments_;
  std::vector<AnalysisState> analyses_;
  std::string started_utc_;
  Clock::time_point t0_;
  std::string report_status_ = "pending";
  std::string report_reason_;
};

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
        e.ranks = std::max(e.ranks, r.boards.count);
        if (!r.training.mode) e.training = false;
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

std::string Reproduction::estimate_left() const {
  // Seconds per run, from the experiments this invocation ran, separately for training and
  // pipeline runs (a training run costs orders of magnitude more).
  double s[2] = {0, 0}, n[2] = {0, 0};
  for (const auto& e : experiments_)
    if ((e.status == "ok" || e.status == "failed") && e.runs > 0 && e.result.wall_s > 0) {
      s[e.training] += e.result.wall_s;
      n[e.training] += static_cast<double>(e.runs);
    }
  auto estimate = [&](const ExperimentState& e) -> double {
    if (n[e.training] > 0) return s[e.training] / n[e.training] * static_cast<double>(e.runs);
    return -1;
  };
  // The schedule replayed with those estimates: the running ones end when their estimate says,
  // the pending ones start in file order as slots free up (what run_experiments does).
  bool known = true;
  std::multiset<std::pair<double, int>> ends;  // (seconds from now, slots)
  int used = 0;
  double makespan = 0, last_start = 0;
  const double now_s = seconds_since(t0_);
  for (const auto& e : experiments_) {
    if (e.status != "running") continue;
    double est = estimate(e);
    if (est < 0) known = false;
    double left = std::max(0.0, est - (now_s - e.start_s));
    ends.insert({left, slots_of(e)});
    used += slots_of(e);
    makespan = std::max(makespan, left);
  }
  for (const auto& e : experiments_) {
    if (!(e.selected && e.config_error.empty() && e.status == "pending")) continue;
    double est = estimate(e);
    if (est < 0) {
      known = false;
      est = 0;
    }
    double start = last_start;
    while (used + slots_of(e) > o_.jobs && !ends.empty()) {
      start = std::max(start, ends.begin()->first);
      used -= ends.begin()->second;
      ends.erase(ends.begin());
    }
    ends.insert({start + est, slots_of(e)});
    used += slots_of(e);
    makespan = std::max(makespan, start + est);
    last_start = start;
  }
  if (!known) return makespan > 0 ? fmt::format("at least {} left", duration_text(makespan)) : "";
  return fmt::format("about {} left", duration_text(makespan));
}

std::streamoff Reproduction::log_header(const std::string& log,
                                        const std::vector<std::string>& argv) {
  const std::string log_path = (dir_ / log).string();
  {
    std::ofstream header(log_path, std::ios::app);
    header << fmt::format("==== {} quilt reproduce: {}\n", utc_now_iso8601(), command_text(argv));
  }
  std::ifstream in(log_path, std::ios::ate);
  return in ? static_cast<std::streamoff>(in.tellg()) : 0;
}

void Reproduction::log_footer(const std::string& log, const ChildResult& r) {
  std::ofstream footer((dir_ / log).string(), std::ios::app);
  footer << fmt::format("==== {} exit {}{} after {:.1f} s\n", utc_now_iso8601(), r.exit_code,
                        r.signal ? fmt::format(" (signal {})", r.signal) : "", r.wall_s);
}

ChildResult Reproduction::run_child(const std::vector<std::string>& argv, const std::string& log,
                                    const std::string& stdout_file) {
  log_header(log, argv);
  ChildResult res = run_child_process(
      argv, (dir_ / log).string(), stdout_file.empty() ? "" : (dir_ / stdout_file).string(),
      [this] { return g_signal != 0 && stop_child_on_signal_; }, [](double) {}, 200);
  log_footer(log, res);
  return res;
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

void Reproduction::run_experiments(const std::vector<ExperimentState*>& todo) {
  struct Running {
    ExperimentState* e;
    RunningChild child;
  };
  std::vector<Running> running;
  const int total = static_cast<int>(todo.size());
  int done = 0, used = 0;
  size_t next = 0;
  double last_line_s = seconds_since(t0_);  // the start lines are enough for the first 10 s
  std::string last_runs;
  auto finished = [&](ExperimentState& e) {
    ++done;
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
  };
  for (;;) {
    if (g_signal)
      for (auto& r : running) stop_child_process(r.child);
    // Start what fits, strictly in file order: an experiment of r ranks takes min(r, N) of the
    // N slots (one wider than N runs alone), so the head of the queue always starts eventually.
    while (!g_signal && next < todo.size()) {
      ExperimentState& e = *todo[next];
      if (used + slots_of(e) > o_.jobs) break;
      ++next;
      std::vector<std::string> argv = experiment_command(e);
      if (argv.empty()) {
        finished(e);
        continue;
      }
      say(fmt::format("[{}/{}] {} ({}): {} run(s) on {} rank(s) ...", e.position, total,
                      e.paper.name, e.paper.paper, e.runs, e.ranks));
      e.log_start = log_header(e.log, argv);
      e.status = "running";
      e.start_s = seconds_since(t0_);
      e.started_utc = utc_now_iso8601();
      running.push_back({&e, start_child_process(argv, (dir_ / e.log).string(), "")});
      used += slots_of(e);
      write_manifest();
    }
    bool ended = false;
    for (auto it = running.begin(); it != running.end();) {
      if (!poll_child_process(it->child)) {
        ++it;
        continue;
      }
      ExperimentState& e = *it->e;
      const ChildResult result = it->child.result;
      used -= slots_of(e);
      it = running.erase(it);
      finish_experiment(e, result);
      finished(e);
      ended = true;
    }
    if (running.empty() && (g_signal || next >= todo.size())) break;
    if (ended) continue;  // start the next ones now
    // Progress: which experiments are running, where each is, and the time left.
    std::vector<std::string> parts;
    std::string runs;
    for (auto& r : running) {
      if (auto cur = current_run((dir_ / r.e->log).string(), r.e->log_start))
        r.e->run_text = fmt::format(", run {}/{}", cur->first, cur->second);
      runs += r.e->run_text + ";";
      parts.push_back(fmt::format("{}: {}{}", r.e->paper.name, duration_text(r.child.elapsed_s()),
                                  r.e->run_text));
    }
    std::string left = estimate_left();
    std::string line =
        running.size() == 1
            ? fmt::format("[{}/{}] {}", running[0].e->position, total, parts[0])
            : fmt::format("[{} of {} done] running {}", done, total, fmt::join(parts, " | "));
    if (!left.empty()) line += "; " + left;
    const double now_s = seconds_since(t0_);
    if (tty_) {
      std::fputs(("\r\033[K" + line).c_str(), stdout);
      std::fflush(stdout);
      live_line_ = true;
    } else if (now_s - last_line_s >= 60 || (runs != last_runs && now_s - last_line_s >= 10)) {
      // Batch jobs: a plain line at most every 10 s when a run changes, every minute otherwise.
      say(line);
      last_line_s = now_s;
    }
    last_runs = runs;
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
  std::vector<std::pair<AnalysisState*, RunningChild>> running;
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
    if (g_signal)
      for (auto& r : running) stop_child_process(r.second);
    while (!g_signal && next < analyses_.size() && running.size() < static_cast<size_t>(o_.jobs)) {
      AnalysisState& a = analyses_[next++];
      std::vector<std::string> argv = analysis_command(a);
      if (argv.empty()) {
        finished(a);
        continue;
      }
      log_header(a.log, argv);
      running.emplace_back(
          &a, start_child_process(argv, (dir_ / a.log).string(),
                                  a.stdout_file.empty() ? "" : (dir_ / a.stdout_file).string()));
    }
    bool ended = false;
    for (auto it = running.begin(); it != running.end();) {
      if (!poll_child_process(it->second)) {
        ++it;
        continue;
      }
      AnalysisState& a = *it->first;
      const ChildResult result = it->second.result;
      it = running.erase(it);
      finish_analysis(a, result);
      finished(a);
      ended = true;
    }
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

void Reproduction::write_manifest() {
  auto child_json = [](const ChildResult& c) {
    return fmt::format(R"("exit_code": {}, "signal": {}, "wall_s": {:.3f})", c.exit_code, c.signal,
                       c.wall_s);
  };
  std::string s = "{\n";
  s += fmt::format("  \"format\": 1,\n  \"scale\": {},\n  \"out_dir\": {},\n",
                   json_string(o_.scale), json_string(fs::absolute(dir_).string()));
  s += fmt::format("  \"launcher\": {},\n  \"quilt\": {},\n  \"source_dir\": {},\n",
                   json_string(launcher_), json_string(o_.quilt_exe), json_string(o_.source_dir));
  s += fmt::format("  \"jobs\": {},\n", o_.jobs);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  s += fmt::format("  \"host\": {},\n  \"started_utc\": {},\n  \"updated_utc\": {},\n",
                   json_string(host), json_string(started_utc_), json_string(utc_now_iso8601()));
  s += fmt::format("  \"wall_s\": {:.3f},\n  \"interrupted_by_signal\": {},\n", seconds_since(t0_),
                   static_cast<int>(g_signal));
  s += fmt::format("  \"report\": {{\"status\": {}, \"reason\": {}}},\n",
                   json_string(report_status_), json_string(report_reason_));
  s += "  \"experiments\": [\n";
  for (size_t i = 0; i < experiments_.size(); ++i) {
    const auto& e = experiments_[i];
    s += fmt::format(
        "    {{\"name\": {}, \"paper\": {}, \"file\": {}, \"selected\": {}, \"ranks\": {}, "
        "\"runs\": {}, \"training\": {}, \"status\": {}, \"reason\": {}, \"config_error\": {}, "
        "\"result\": {}, \"log\": {}, \"command\": {}, \"started_utc\": {}, \"ended_utc\": {}, "
        "\"start_s\": {:.3f}, \"end_s\": {:.3f}, {}}}{}\n",
        json_string(e.paper.name), json_string(e.paper.paper),
        json_string("experiments/" + e.paper.name + ".yaml"), e.selected ? "true" : "false",
        e.ranks, e.runs, e.training ? "true" : "false", json_string(e.status),
        json_string(e.reason), json_string(e.config_error), json_string(e.paper.name + ".h5"),
        json_string(e.log), json_string(command_text(e.command)), json_string(e.started_utc),
        json_string(e.ended_utc), e.start_s, e.end_s, child_json(e.result),
        i + 1 < experiments_.size() ? "," : "");
  }
  s += "  ],\n  \"analysis\": [\n";
  for (size_t i = 0; i < analyses_.size(); ++i) {
    const auto& a = analyses_[i];
    std::vector<std::string> inputs = a.required;
    inputs.insert(inputs.end(), a.optional.begin(), a.optional.end());
    s += fmt::format(
        "    {{\"name\": {}, \"experiment\": {}, \"inputs\": {}, \"status\": {}, \"reason\": {}, "
        "\"out_dir\": {}, \"log\": {}, \"command\": {}, {}}}{}\n",
        json_string(a.name), json_string(a.experiment), json_list(inputs), json_string(a.status),
        json_string(a.reason), json_string("analysis/" + a.name), json_string(a.log),
        json_string(command_text(a.command)), child_json(a.result),
        i + 1 < analyses_.size() ? "," : "");
  }
  s += "  ]\n}\n";
  // Replaced atomically: a reader (or a killed reproduce) never sees half a manifest.
  const fs::path tmp = dir_ / "reproduce.json.tmp";
  {
    std::ofstream out(tmp);
    out << s;
  }
  fs::rename(tmp, dir_ / "reproduce.json");
}

int Reproduction::run() {
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

  plan();
  std::vector<ExperimentState*> todo;
  size_t total_runs = 0;
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
    total_runs += e.runs;
  }
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

}  // namespace

int run_reproduce(const ReproduceOptions& options) { return Reproduction(options).run(); }

}  // namespace quilt::harness
