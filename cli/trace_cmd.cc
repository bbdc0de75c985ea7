#include "cli/trace_cmd.h"

#include "cli/cli.h"

#include "harness/experiment.h"
#include "results/reader.h"
#include "results/trace_io.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

namespace quilt::harness {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
    else
      out += c;
  }
  return out + "\"";
}

constexpr int64_t kSendThread = 1000;

}  // namespace

std::string chrome_trace_json(const results::RunRecord& run, const std::string& experiment) {
  const results::TraceRecord& t = run.trace;
  const std::string clock = t.clock == "board" ? "board time" : "wall time";
  std::string out = "{\"traceEvents\":[\n";
  std::set<int64_t> ranks(t.rank.begin(), t.rank.end());
  bool first = true;
  auto line = [&](const std::string& s) {
    out += first ? "" : ",\n";
    out += s;
    first = false;
  };
  size_t send_code = t.phases.size();
  for (size_t i = 0; i < t.phases.size(); ++i)
    if (t.phases[i] == "send") send_code = i;
  for (int64_t r : ranks) {
    line(fmt::format(
        R"j({{"name":"process_name","ph":"M","pid":{0},"tid":{0},"args":{{"name":"rank {0} ({1})"}}}})j",
        r, clock));
    line(fmt::format(
        R"j({{"name":"process_sort_index","ph":"M","pid":{0},"tid":{0},"args":{{"sort_index":{0}}}}})j",
        r));
    line(fmt::format(
        R"j({{"name":"thread_name","ph":"M","pid":{0},"tid":{0},"args":{{"name":"rank {0}"}}}})j",
        r));
    for (int lane = 0; lane < 2; ++lane)
      line(fmt::format(
          R"j({{"name":"thread_name","ph":"M","pid":{0},"tid":{1},"args":{{"name":"rank {0} sends ({2} batches)"}}}})j",
          r, kSendThread * (1 + lane) + r, lane == 0 ? "even" : "odd"));
  }
  for (size_t i = 0; i < t.size(); ++i) {
    const auto code = static_cast<size_t>(t.phase[i]);
    // Two sends may be in flight: alternate batches on two lanes, so each lane's events nest.
    const int64_t lane = (t.batch[i] % 2 + 2) % 2;
    const int64_t tid = code == send_code ? kSendThread * (1 + lane) + t.rank[i] : t.rank[i];
    // Round both ends to whole nanoseconds before taking the difference: rounding ts and dur
    // separately can make an event end 1 ns after the next one starts, a partial overlap.
    const int64_t start_ns = std::llround(1e9 * t.start_s[i]);
    const int64_t dur_ns = std::max<int64_t>(0, std::llround(1e9 * t.end_s[i]) - start_ns);
    line(fmt::format(
        R"j({{"name":{},"cat":"{}","ph":"X","ts":{:.3f},"dur":{:.3f},"pid":{},"tid":{},"args":{{"batch":{},"repetition":{}}}}})j",
        json_string(t.phases.at(code)), run.training.mode.empty() ? "pipeline" : "training",
        start_ns / 1e3, dur_ns / 1e3, t.rank[i], tid, t.batch[i], t.repetition[i]));
  }
  out += "\n],\n\"displayTimeUnit\":\"ms\",\n";
  out += fmt::format(
      "\"otherData\":{{\"title\":{},\"experiment\":{},\"run\":{},\"time_model\":{},\"clock\":{},"
      "\"dropped_events\":{},\"max_batches_per_rank\":{}}}\n}}\n",
      json_string(
          fmt::format("{} run {}: {} ({} model)", experiment, run.id, clock, run.time_model)),
      json_string(experiment), json_string(run.id), json_string(run.time_model),
      json_string(t.clock), t.dropped_events, t.max_batches);
  return out;
}

int cmd_trace(int argc, char** argv) {
  std::string file, run_id, output;
  cli::Parser p("trace",
                "A run's merged multi-rank timeline (measurement.trace) as a Chrome trace-event "
                "file, one track per rank, for ui.perfetto.dev or chrome://tracing.");
  p.positional("FILE.h5", "a result file of `quilt run`", &file)
      .option("--run", "ID", "the run: an id or a unique prefix (default: the first traced run)",
              &run_id)
      .option("-o", "trace.json", "where to write the JSON (required)", &output)
      .option("--output", "trace.json", "the same as -o", &output)
      .example("quilt trace results/quickstart.h5 -o trace.json");
  if (!p.parse(argc, argv)) return 0;
  if (output.empty())
    throw ConfigError("<command line>", 0, 0, "-o",
                      "needs the JSON file to write: quilt trace FILE.h5 [--run ID] -o trace.json");
  const results::ExperimentRecord record = results::read_experiment(file);
  const results::RunRecord& run = results::traced_run(record, file, run_id);
  const std::string json = chrome_trace_json(run, record.name);
  // Written beside the target and renamed, so a failed write never leaves half a file.
  const std::string tmp = output + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out << json;
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      throw ConfigError("<command line>", 0, 0, "--output",
                        fmt::format("cannot write `{}`", output));
    }
  }
  if (std::rename(tmp.c_str(), output.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw ConfigError("<command line>", 0, 0, "--output", fmt::format("cannot write `{}`", output));
  }
  fmt::print(
      "{}: run {}, {} events from {} rank(s) ({} time{}) -> {}\n", file, run.id, run.trace.size(),
      std::set<int64_t>(run.trace.rank.begin(), run.trace.rank.end()).size(), run.trace.clock,
      run.trace.dropped_events > 0 ? fmt::format(", {} events dropped by measurement.trace's bound",
                                                 run.trace.dropped_events)
                                   : "",
      output);
  return 0;
}

}  // namespace quilt::harness
