// `quilt reproduce`: the whole paper in one command. This process stays light (no LibTorch,
// no MPI): each experiment runs as a child `mpirun -n K quilt run ...` (or `srun`) whose output
// goes to DIR/logs/, the analysis scripts run as children of /usr/bin/python3, and
// analysis/report.py turns DIR/reproduce.json (written here after every step) into the report.

#include "harness/reproduce_cmd.h"

#include "harness/cli.h"
#include "harness/clock.h"

#include "harness/experiment.h"
#include "results/reader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#ifndef QUILT_SOURCE_DIR
#define QUILT_SOURCE_DIR ""
#endif

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

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,+@") == std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string command_text(const std::vector<std::string>& argv) {
  std::vector<std::string> q;
  for (const auto& a : argv) q.push_back(shell_quote(a));
  return fmt::format("{}", fmt::join(q, " "));
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

/// One child process: its command, log and outcome.
struct ChildResult {
  int exit_code = -1;  // -1 when it did not exit normally
  int signal = 0;      // the signal that ended it, 0 when none
  double wall_s = 0;
  bool interrupted = false;  // we stopped it because reproduce itself got a signal
  std::string error;         // could not start
};

// Why a child that ran ended badly; `quilt_run` gives the meaning of quilt run's exit codes.
std::string exit_reason(const ChildResult& r, bool quilt_run) {
  if (r.signal) return fmt::format("killed by signal {}", r.signal);
  if (r.exit_code == 127) return "exit code 127: could not start the command";
  if (quilt_run && r.exit_code == 1) return "exit code 1: a run failed";
  if (quilt_run && r.exit_code == 2) return "exit code 2: bad input";
  return fmt::format("exit code {}", r.exit_code);
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
  std::string status = "pending";  // ok | failed | complete | interrupted | not-run | pending
  std::string reason;
  std::vector<std::string> command;
  ChildResult result;
  std::string log;  // relative to DIR
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
  void run_experiment(ExperimentState& e);
  void run_analysis(AnalysisState& a);
  bool build_report();
  ChildResult run_child(const std::vector<std::string>& argv, const std::string& log,
                        const std::string& stdout_file, const std::string& label,
                        const ExperimentState* progress_of);
  void write_manifest();
  std::string estimate_left(const ExperimentState* current, double current_elapsed_s) const;
  std::string h5(const std::string& name) const { return (dir_ / (name + ".h5")).string(); }
  void say(const std::string& line);

  ReproduceOptions o_;
  fs::path dir_;
  bool tty_ = false;
  bool live_line_ = false;  // a progress line without newline is on the terminal
  // Whether a signal to quilt reproduce stops the running child. Not for the report, which is
  // written after an interruption too (a child that had already exec'd would die of it).
  bool stop_child_on_signal_ = true;
  int progress_index_ = 0, progress_total_ = 0;  // position of the running experiment
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
        if (r.training.mode == "none") e.training = false;
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

std::string Reproduction::estimate_left(const ExperimentState* current,
                                        double current_elapsed_s) const {
  // Seconds per run, from the experiments this invocation ran, separately for training and
  // pipeline runs (a training run costs orders of magnitude more).
  double s[2] = {0, 0}, n[2] = {0, 0};
  for (const auto& e : experiments_)
    if ((e.status == "ok" || e.status == "failed") && e.runs > 0 && e.result.wall_s > 0) {
      s[e.training] += e.result.wall_s;
      n[e.training] += static_cast<double>(e.runs);
    }
  auto per_run = [&](bool training) -> double {
    if (n[training] > 0) return s[training] / n[training];
    return -1;
  };
  double left = 0;
  bool known = true;
  for (const auto& e : experiments_) {
    bool todo = e.selected && e.config_error.empty() && (e.status == "pending" || &e == current);
    if (!todo) continue;
    double r = per_run(e.training);
    if (r < 0) {
      known = false;
      continue;
    }
    double est = r * static_cast<double>(e.runs);
    if (&e == current) est = std::max(0.0, est - current_elapsed_s);
    left += est;
  }
  if (!known) return left > 0 ? fmt::format("at least {} left", duration_text(left)) : "";
  return fmt::format("about {} left", duration_text(left));
}

ChildResult Reproduction::run_child(const std::vector<std::string>& argv, const std::string& log,
                                    const std::string& stdout_file, const std::string& label,
                                    const ExperimentState* progress_of) {
  ChildResult res;
  const std::string log_path = (dir_ / log).string();
  {
    std::ofstream header(log_path, std::ios::app);
    header << fmt::format("==== {} quilt reproduce: {}\n", utc_now_iso8601(), command_text(argv));
  }
  std::streamoff log_start = 0;
  {
    std::ifstream in(log_path, std::ios::ate);
    log_start = in ? static_cast<std::streamoff>(in.tellg()) : 0;
  }
  const auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    res.error = fmt::format("fork failed: {}", std::strerror(errno));
    return res;
  }
  if (pid == 0) {
    setpgid(0, 0);  // its own group: a signal to reproduce is forwarded to the whole job
#ifdef __linux__
    // A reproduce that is killed outright (SIGKILL: no handler runs) still stops its job.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) _exit(127);
#endif
    int err = open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    int out = stdout_file.empty()
                  ? err
                  : open((dir_ / stdout_file).string().c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0644);
    int null = open("/dev/null", O_RDONLY);
    if (err < 0 || out < 0 || null < 0) _exit(127);
    dup2(null, 0);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "quilt reproduce: cannot start %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  int status = 0;
  double last_line_s = 0;
  std::string last_run;
  Clock::time_point stop_sent{};
  bool term_sent = false, kill_sent = false;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      res.error = fmt::format("waitpid failed: {}", std::strerror(errno));
      break;
    }
    if (g_signal && stop_child_on_signal_ && !term_sent) {
      kill(-pid, SIGTERM);
      term_sent = true;
      res.interrupted = true;
      stop_sent = Clock::now();
    }
    if (term_sent && !kill_sent && seconds_since(stop_sent) > 10) {
      kill(-pid, SIGKILL);
      kill_sent = true;
    }
    const double el = seconds_since(t0);
    if (progress_of != nullptr) {
      std::string run_text;
      if (auto r = current_run(log_path, log_start))
        run_text = fmt::format(", run {}/{}", r->first, r->second);
      std::string left = estimate_left(progress_of, el);
      std::string line = fmt::format("[{}/{}] {}: {}{}{}", progress_index_, progress_total_, label,
                                     duration_text(el), run_text, left.empty() ? "" : "; " + left);
      if (tty_) {
        std::fputs(("\r\033[K" + line).c_str(), stdout);
        std::fflush(stdout);
        live_line_ = true;
      } else if (el - last_line_s >= 60 || (run_text != last_run && el - last_line_s >= 10)) {
        // Batch jobs: a plain line at most every 10 s when the run changes, every minute
        // otherwise.
        say(line);
        last_line_s = el;
      }
      last_run = run_text;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(tty_ ? 250 : 500));
  }
  res.wall_s = seconds_since(t0);
  if (res.error.empty()) {
    if (WIFEXITED(status)) res.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) res.signal = WTERMSIG(status);
  }
  {
    std::ofstream footer(log_path, std::ios::app);
    footer << fmt::format("==== {} exit {}{} after {:.1f} s\n", utc_now_iso8601(), res.exit_code,
                          res.signal ? fmt::format(" (signal {})", res.signal) : "", res.wall_s);
  }
  return res;
}

void Reproduction::run_experiment(ExperimentState& e) {
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
        return;
      }
    } catch (const std::exception&) {
      // Damaged or foreign: `quilt run --resume` says why, in the log and the report.
    }
  }
  std::vector<std::string> argv;
  if (launcher_ == "srun")
    argv = {"srun",         "--mpi=pmix",          "-n", std::to_string(e.ranks),
            "--overcommit", "--kill-on-bad-exit=1"};
  else
    argv = {"mpirun", "-n", std::to_string(e.ranks)};
  for (const auto& a : std::vector<std::string>{o_.quilt_exe, "run", e.file, "--scale", o_.scale,
                                                "--output", out, "--keep-going"})
    argv.push_back(a);
  if (exists) argv.push_back("--resume");
  e.command = argv;
  e.result = run_child(argv, e.log, "", e.paper.name, &e);
  if (e.result.interrupted) {
    e.status = "interrupted";
    e.reason = "stopped by a signal to quilt reproduce";
  } else if (!e.result.error.empty()) {
    e.status = "failed";
    e.reason = e.result.error;
  } else if (e.result.exit_code == 0) {
    e.status = "ok";
  } else {
    e.status = "failed";
    e.reason = exit_reason(e.result, /*quilt_run=*/true);
  }
}

void Reproduction::run_analysis(AnalysisState& a) {
  std::vector<std::string> missing;
  for (const auto& r : a.required)
    if (!fs::exists(h5(r))) missing.push_back(r + ".h5");
  if (!missing.empty()) {
    a.status = "not-run";
    a.reason = fmt::format("{} missing", fmt::join(missing, ", "));
    return;
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
  a.result = run_child(argv, a.log, a.stdout_file, a.name, nullptr);
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

bool Reproduction::build_report() {
  const std::string script = (fs::path(o_.source_dir) / "analysis" / "report.py").string();
  std::vector<std::string> argv = {o_.python, script, dir_.string()};
  stop_child_on_signal_ = false;
  ChildResult r = run_child(argv, "logs/report.log", "", "report", nullptr);
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
        "\"result\": {}, \"log\": {}, \"command\": {}, {}}}{}\n",
        json_string(e.paper.name), json_string(e.paper.paper),
        json_string("experiments/" + e.paper.name + ".yaml"), e.selected ? "true" : "false",
        e.ranks, e.runs, e.training ? "true" : "false", json_string(e.status),
        json_string(e.reason), json_string(e.config_error), json_string(e.paper.name + ".h5"),
        json_string(e.log), json_string(command_text(e.command)), child_json(e.result),
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
    total_runs += e.runs;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  say(fmt::format("quilt reproduce: scale {}, {} experiment(s), {} run(s), launcher {}, output {}",
                  o_.scale, todo.size(), total_runs, launcher_, dir_.string()));
  for (const auto& e : experiments_)
    if (!e.config_error.empty())
      say(fmt::format("  {}: FAILED to load: {}", e.paper.name, e.config_error));
  write_manifest();
  int done = 0;
  for (size_t i = 0; i < todo.size(); ++i) {
    ExperimentState& e = *todo[i];
    if (g_signal) {
      e.status = "not-run";
      e.reason = "quilt reproduce was interrupted before it";
      continue;
    }
    say(fmt::format("[{}/{}] {} ({}): {} run(s) on {} rank(s) ...", i + 1, todo.size(),
                    e.paper.name, e.paper.paper, e.runs, e.ranks));
    progress_index_ = static_cast<int>(i + 1);
    progress_total_ = static_cast<int>(todo.size());
    run_experiment(e);
    ++done;
    std::string left = estimate_left(nullptr, 0);
    std::string what = e.status == "complete" ? "complete in its result file, skipped"
                       : e.status == "ok" ? fmt::format("ok in {}", duration_text(e.result.wall_s))
                                          : fmt::format("{} after {}: {}",
                                                        e.status == "failed" ? "FAILED" : e.status,
                                                        duration_text(e.result.wall_s), e.reason);
    say(fmt::format("[{}/{}] {}: {}; {} of {} done{}", i + 1, todo.size(), e.paper.name, what, done,
                    todo.size(),
                    left.empty() || done == static_cast<int>(todo.size()) ? "" : ", " + left));
    if (e.status == "failed") {
      std::string tail = tail_of((dir_ / e.log).string(), 8);
      std::istringstream lines(tail);
      for (std::string l; std::getline(lines, l);) say("    | " + l);
    }
    write_manifest();
  }
  if (!g_signal) {
    say(fmt::format("analysis: {} script(s) ...", analyses_.size()));
    for (auto& a : analyses_) {
      if (g_signal) break;
      run_analysis(a);
      const bool selected = o_.only.empty() || std::find(o_.only.begin(), o_.only.end(),
                                                         a.experiment) != o_.only.end();
      if (a.status == "failed" || (a.status != "ok" && selected))
        say(fmt::format("  {}: {}{}", a.name,
                        a.status == "failed" ? "FAILED: " : "not run: ", a.reason));
      write_manifest();
    }
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

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("quilt") : p.string();
}

}  // namespace

const std::vector<PaperExperiment>& paper_experiments() {
  static const std::vector<PaperExperiment> kAll = {
      {"efficiency", "Fig. 5"},
      {"breakdown", "Fig. 6"},
      {"interposition", "Table 3 (performance)"},
      {"interposition_multi", "Table 3 (multi-AE performance)"},
      {"partition_auto", "§3.4 cut search"},
      {"feasibility", "Fig. 2"},
      {"accuracy", "Table 1"},
      {"weight_freezing", "Table 2, Fig. 7"},
      {"tradeoff", "Fig. 4"},
      {"interposition_accuracy", "Table 3 (accuracy)"},
      {"precision", "bf16 / int8 boards (issue 13)"},
      {"precision_accuracy", "bf16 / int8 accuracy (issue 13)"},
  };
  return kAll;
}

ReproduceOptions parse_reproduce_args(int argc, char** argv) {
  ReproduceOptions o;
  cli::Parser p(
      "reproduce",
      "Runs every experiment of the paper (experiments/*.yaml but the quickstart), each "
      "under mpirun with its rank count (srun inside a SLURM allocation), resuming result "
      "files already in DIR, then every analysis script, and writes DIR/index.html and "
      "DIR/report.md.");
  p.option("--scale", "NAME",
           "scale of every experiment file: here (default), smoke (a few minutes in all) or paper",
           &o.scale)
      .option("--out", "DIR",
              "results, logs/, analysis/ and the report (default results/reproduce-<scale>)",
              &o.out_dir)
      .option("--only", "NAME[,NAME...]",
              "run only these experiments; the report still covers the others' files in DIR",
              [&o](const std::string& v) {
                std::stringstream ss(v);
                for (std::string n; std::getline(ss, n, ',');) {
                  if (n.empty()) continue;
                  const auto& all = paper_experiments();
                  if (std::none_of(all.begin(), all.end(),
                                   [&](const auto& e) { return e.name == n; })) {
                    std::vector<std::string> names;
                    for (const auto& e : all) names.push_back(e.name);
                    throw ConfigError("<command line>", 0, 0, "--only",
                                      fmt::format("`{}` is not an experiment of the paper; valid: "
                                                  "{}",
                                                  n, fmt::join(names, ", ")));
                  }
                  o.only.push_back(n);
                }
              })
      .option("--launcher", "L",
              "auto (srun when SLURM_JOB_ID is set, else mpirun), mpirun or srun",
              [&o](const std::string& v) {
                if (v != "auto" && v != "mpirun" && v != "srun")
                  throw ConfigError(
                      "<command line>", 0, 0, "--launcher",
                      fmt::format("`{}` is not a launcher; use auto, mpirun or srun", clip(v)));
                o.launcher = v;
              })
      .note(
          "exit codes: 0 all ok, 1 an experiment, a script or the report failed (the report "
          "says why), 2 bad arguments, 128+N interrupted by signal N (finished work is kept and "
          "reported)")
      .example("quilt reproduce --scale smoke --out /tmp/paper", "the whole paper in minutes")
      .example("make paper SCALE=here", "the same through make, at the default scale");
  if (!p.parse(argc, argv)) std::exit(0);  // --help was printed
  if (o.scale != "here" && o.scale != "smoke" && o.scale != "paper")
    throw ConfigError(
        "<command line>", 0, 0, "--scale",
        fmt::format("`{}` is not a scale of the reproduction; use here, smoke or paper", o.scale));
  if (o.out_dir.empty()) o.out_dir = "results/reproduce-" + o.scale;
  o.quilt_exe = self_exe();
  const fs::path build = fs::path(o.quilt_exe).parent_path().parent_path();
  const char* src = std::getenv("QUILT_SOURCE_DIR");
  o.source_dir = src && *src ? src : QUILT_SOURCE_DIR;
  if (o.source_dir.empty() || !fs::exists(fs::path(o.source_dir) / "experiments"))
    throw ConfigError("<command line>", 0, 0, "QUILT_SOURCE_DIR",
                      fmt::format("`{}` has no experiments/ folder; set QUILT_SOURCE_DIR to the "
                                  "Quilt source tree",
                                  o.source_dir));
  const char* py = std::getenv("QUILT_PYTHON");
  if (py && *py) o.python = py;
  const char* pp = std::getenv("QUILT_PYTHONPATH");
  o.python_path = pp && *pp ? pp : (build / "python").string();
  return o;
}

int cmd_reproduce(int argc, char** argv) { return run_reproduce(parse_reproduce_args(argc, argv)); }

int run_reproduce(const ReproduceOptions& options) { return Reproduction(options).run(); }

}  // namespace quilt::harness
