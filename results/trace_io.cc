#include "results/trace_io.h"

namespace quilt::results {
namespace {

void check_consistent(const TraceRecord& t, const std::string& where) {
  const size_t n = t.rank.size();
  if (t.batch.size() != n || t.repetition.size() != n || t.phase.size() != n ||
      t.start_s.size() != n || t.end_s.size() != n)
    throw ResultsError(where + ": trace datasets differ in length");
  for (int64_t p : t.phase)
    if (p < 0 || static_cast<size_t>(p) >= t.phases.size())
      throw ResultsError(where + ": trace phase code " + std::to_string(p) + " has no name in " +
                         "`phases` (" + std::to_string(t.phases.size()) + " names)");
}

}  // namespace

void write_trace(const h5::Group& run, const TraceRecord& t) {
  if (t.empty()) return;
  check_consistent(t, run.location().describe("trace"));
  h5::Group g = run.create_group("trace");
  g.write_attribute("clock", t.clock);
  g.write_attribute("dropped_events", t.dropped_events);
  g.write_attribute("max_batches", t.max_batches);
  g.write_dataset("phases", t.phases);
  g.write_dataset("rank", t.rank);
  g.write_dataset("batch", t.batch);
  g.write_dataset("repetition", t.repetition);
  g.write_dataset("phase", t.phase);
  g.write_dataset("start_s", t.start_s);
  g.write_dataset("end_s", t.end_s);
}

TraceRecord read_trace(const h5::Group& run) {
  TraceRecord t;
  if (!run.has("trace")) return t;
  h5::Group g = run.open_group("trace");
  t.clock = g.read_string_attribute("clock");
  t.dropped_events = g.read_int64_attribute("dropped_events");
  t.max_batches = g.read_int64_attribute("max_batches");
  t.phases = g.read_string_vector("phases");
  t.rank = g.read_int64_vector("rank");
  t.batch = g.read_int64_vector("batch");
  t.repetition = g.read_int64_vector("repetition");
  t.phase = g.read_int64_vector("phase");
  t.start_s = g.read_double_vector("start_s");
  t.end_s = g.read_double_vector("end_s");
  check_consistent(t, g.location().describe());
  return t;
}

const RunRecord& traced_run(const ExperimentRecord& record, const std::string& path,
                            const std::string& run_id) {
  std::string with_trace;
  for (const auto& r : record.runs)
    if (!r.trace.empty()) with_trace += (with_trace.empty() ? "" : ", ") + r.id;
  if (with_trace.empty()) with_trace = "none";
  if (run_id.empty()) {
    for (const auto& r : record.runs)
      if (!r.trace.empty()) return r;
    throw ResultsError(path + ": no run has a trace (measurement.trace: false, a run longer " +
                       "than the default bound, or a file from before traces); run it again " +
                       "with measurement.trace: true");
  }
  const RunRecord* found = nullptr;
  for (const auto& r : record.runs) {
    if (r.id == run_id) {
      found = &r;
      break;
    }
    if (r.id.rfind(run_id, 0) == 0) {
      if (found)
        throw ResultsError(path + ": run id prefix `" + run_id + "` is ambiguous (" + found->id +
                           ", " + r.id + ")");
      found = &r;
    }
  }
  if (!found)
    throw ResultsError(path + ": no run `" + run_id + "`; runs with a trace: " + with_trace);
  if (found->trace.empty())
    throw ResultsError(path + ": run `" + found->id + "` has no trace (" +
                       (found->status != "ok" ? "status " + found->status + ": " + found->failure
                                              : std::string("measurement.trace was off for it")) +
                       "); runs with a trace: " + with_trace);
  return *found;
}

}  // namespace quilt::results
