#pragma once
// Internals of `quilt reproduce` shared by its source files: the state of each experiment and
// analysis script, and the Reproduction that schedules them (reproduce_cmd.cc) and reports on
// them (reproduce_progress.cc: progress estimates, logs, DIR/reproduce.json). Not an interface.

#include "cli/child_process.h"
#include "cli/reproduce_cmd.h"
#include "harness/experiment.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace quilt::harness::reproduction {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

/// The signal that asked quilt reproduce to stop (0: none); set by its handler.
extern volatile sig_atomic_t g_signal;

/// Seconds of Clock since t0.
double seconds_since(Clock::time_point t0);
/// `s` as a JSON string literal.
std::string json_string(const std::string& s);
/// `v` as a JSON list of strings.
std::string json_list(const std::vector<std::string>& v);
/// "1h02m", "3m05s", "42s".
std::string duration_text(double s);
/// The last `lines` lines of a file (the failure's context in the report and on the console).
std::string tail_of(const std::string& path, size_t lines);
/// The last "[3/12] run ..." line that `quilt run` wrote to `log` after offset `from`: (3, 12).
std::optional<std::pair<int, int>> current_run(const std::string& log, std::streamoff from);

struct ExperimentState {
  PaperExperiment paper;
  std::string file;  // experiments/<name>.yaml, absolute
  bool selected = true;
  std::string config_error;
  int ranks = 1;
  size_t runs = 0;
  double cost = 0;  // its runs' run_cost, summed: what the time-left estimate scales by
  bool training = false;
  // What its time per unit of cost is taken from: the model all its training runs train
  // ("mixed" when they differ), or "pipeline".
  std::string kind = "pipeline";
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
  std::streamoff log_start = 0;      // where this invocation's output begins in the log
  std::string run_text;              // ", run 3/12": the run it is on, from its log
  int run_index = 0, run_total = 0;  // 3 and 12 of run_text (0: not known yet)
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

/// What one run costs, for the time-left estimate, in units that scale its time within its kind:
/// a training run's sample-epochs in thousands (its maximum epochs, holds and pretraining
/// included, times the training samples it uses, times width squared; the convergence rule may
/// stop it earlier), a pipeline run's repetitions.
double run_cost(const RunConfig& run);

/// The time left for the progress lines: "about 3m05s left"; "roughly ..." while an experiment's
/// kind (ExperimentState::kind) has no finished experiment and the rate of its category
/// (training, pipeline) stands in; "at least ..." while a category has no measured time yet or a
/// running experiment is past its estimate before its first run ended; "" when nothing is known.
/// The schedule of run_experiments replayed: a running experiment ends when its time per
/// finished run says (run_index, run_total) or else its estimate, the pending ones start in file
/// order as `jobs` slots free up. `now_s`: seconds since quilt reproduce started.
std::string time_left_text(const std::vector<ExperimentState>& experiments, int jobs, double now_s);

/// A child of quilt reproduce and the experiment or script it runs.
template <class State>
struct Running {
  State* state;
  RunningChild child;
};

/// The last plain progress line (batch jobs): when it was printed and the runs it showed.
struct ProgressLine {
  double at_s = 0;   ///< seconds since quilt reproduce started
  std::string runs;  ///< the running experiments' ", run i/n" texts
};

/// One invocation of `quilt reproduce`: plans, runs the children, keeps DIR/reproduce.json.
class Reproduction {
 public:
  explicit Reproduction(ReproduceOptions o) : o_(std::move(o)) {}

  int run();

 private:
  void prepare();
  void plan();
  std::vector<ExperimentState*> select(size_t* total_runs);
  int summarize(bool report_ok);
  std::vector<std::string> experiment_command(ExperimentState& e);
  void finish_experiment(ExperimentState& e, const ChildResult& r);
  std::optional<RunningChild> start_experiment(ExperimentState& e, int total);
  void experiment_done(const ExperimentState& e, int done, int total);
  void show_progress(const std::vector<Running<ExperimentState>>& running, int done, int total,
                     ProgressLine& shown);
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

}  // namespace quilt::harness::reproduction
