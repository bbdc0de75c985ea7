#pragma once
// The `quilt trace` command: a run's merged timeline (/runs/<id>/trace) as a Chrome trace-event
// file that Perfetto (ui.perfetto.dev) and chrome://tracing open. Single process, no MPI.

#include "results/record.h"

#include <string>

namespace quilt::harness {

/// The trace of `run` in the Chrome trace-event JSON format: one process per rank (pid = rank,
/// "process_name" metadata "rank R (<clock> time)"), its phases as "X" complete events on
/// thread tid = rank, ts/dur in microseconds from the run's start; sends, which overlap the
/// next batch's compute by design and each other (two in flight), on two more threads of the
/// rank's process (tid 1000 + R for even batches, 2000 + R for odd) so that every thread's
/// events nest. args carry batch and repetition; otherData
/// the run id, time model, clock and dropped events. Requires !run.trace.empty().
std::string chrome_trace_json(const results::RunRecord& run, const std::string& experiment);

/// `quilt trace FILE.h5 [--run ID] -o|--output trace.json`: writes chrome_trace_json of the run
/// ID (an id or a unique prefix; default: the first run with a trace). argv[0] is the program,
/// argv[1] "trace". Returns 0; throws ConfigError for bad options and results::ResultsError for
/// a file or run without a trace (the CLI exits 2).
int cmd_trace(int argc, char** argv);

}  // namespace quilt::harness
