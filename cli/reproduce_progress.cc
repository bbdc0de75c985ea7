// `quilt reproduce`'s reports on itself: the time-left estimate, the children's logs and
// DIR/reproduce.json, which analysis/report.py turns into the report.

#include "cli/reproduction.h"
#include "harness/clock.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

namespace quilt::harness::reproduction {

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

namespace {

// Training samples per epoch of a data set used in full (the UCI sets: all their rows; the
// split keeps most of them), for the cost of a run that does not limit them.
double full_train_samples(DataKind kind) {
  constexpr std::pair<DataKind, double> kSizes[] = {
      {DataKind::kFashionMnist, 60000},  {DataKind::kCifar10, 50000},
      {DataKind::kUciIris, 150},         {DataKind::kUciWine, 178},
      {DataKind::kUciBreastCancer, 569}, {DataKind::kUciDigits, 1797}};
  for (const auto& [k, n] : kSizes)
    if (k == kind) return n;
  return 10000;  // synthetic, a tensor folder: unknown until loaded
}

}  // namespace

double run_cost(const RunConfig& run) {
  if (!run.training.mode) return static_cast<double>(run.measurement.repetitions);
  const auto& t = run.training;
  const double full = full_train_samples(run.data.kind);
  const double samples =
      run.data.train_samples > 0 ? std::min<double>(run.data.train_samples, full) : full;
  const double pretrain_samples =
      t.pretrain_samples > 0 ? std::min<double>(t.pretrain_samples, full) : full;
  double epochs = static_cast<double>(t.epochs + t.hold_epochs) * samples;
  if (t.pretrain_epochs > 0)
    epochs += static_cast<double>(t.pretrain_epochs + t.hold_epochs) * pretrain_samples;
  // A ResNet's work grows with the square of its width; thousands of sample-epochs as the unit.
  return epochs * run.model.width * run.model.width / 1e3;
}

std::string time_left_text(const std::vector<ExperimentState>& experiments, int jobs,
                           double now_s) {
  auto slots_of = [jobs](const ExperimentState& e) { return std::min(e.ranks, jobs); };
  // Seconds per unit of run cost (a thousand sample-epochs, a repetition) from the experiments
  // this invocation finished: per kind (the model a training experiment trains, or pipeline) and,
  // for a kind none has finished yet, per category (training, pipeline) as a rough guess.
  // Weighted, not per run: 2-epoch runs say little of the time of 16-epoch ones.
  std::map<std::string, std::pair<double, double>> by_kind;  // kind -> (seconds, cost)
  double s[2] = {0, 0}, n[2] = {0, 0};
  for (const auto& e : experiments)
    if ((e.status == "ok" || e.status == "failed") && e.cost > 0 && e.result.wall_s > 0) {
      s[e.training] += e.result.wall_s;
      n[e.training] += e.cost;
      by_kind[e.kind].first += e.result.wall_s;
      by_kind[e.kind].second += e.cost;
    }
  bool known = true, rough = false;
  auto estimate = [&](const ExperimentState& e) -> double {
    if (auto it = by_kind.find(e.kind); it != by_kind.end() && it->second.second > 0)
      return it->second.first / it->second.second * e.cost;
    if (n[e.training] > 0) {
      rough = true;
      return s[e.training] / n[e.training] * e.cost;
    }
    known = false;
    return 0;
  };
  // The schedule replayed with those estimates: a running one ends when its runs so far say (its
  // time per finished run times the runs left) or, before its first run has finished, when its
  // estimate says; the pending ones start in file order as slots free up (what run_experiments
  // does).
  std::multiset<std::pair<double, int>> ends;  // (seconds from now, slots)
  int used = 0;
  double makespan = 0, last_start = 0;
  for (const auto& e : experiments) {
    if (e.status != "running") continue;
    const double elapsed = now_s - e.start_s;
    double left = 0;
    if (e.run_index > 1 && e.run_total >= e.run_index) {
      left = elapsed / (e.run_index - 1) * e.run_total - elapsed;
    } else {
      left = estimate(e) - elapsed;
      if (left <= 0) known = false;  // past its estimate: how much longer is not known
    }
    left = std::max(0.0, left);
    ends.insert({left, slots_of(e)});
    used += slots_of(e);
    makespan = std::max(makespan, left);
  }
  for (const auto& e : experiments) {
    if (!(e.selected && e.config_error.empty() && e.status == "pending")) continue;
    const double est = estimate(e);
    double start = last_start;
    while (used + slots_of(e) > jobs && !ends.empty()) {
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
  return fmt::format("{} {} left", rough ? "roughly" : "about", duration_text(makespan));
}

std::string Reproduction::estimate_left() const {
  return time_left_text(experiments_, o_.jobs, seconds_since(t0_));
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

}  // namespace quilt::harness::reproduction
