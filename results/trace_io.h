#pragma once
// Reading and writing a run's trace group (/runs/<id>/trace, results/SCHEMA.md).

#include "results/h5.h"
#include "results/record.h"
#include "results/trace.h"

namespace quilt::results {

/// Writes `trace` as the group "trace" of the run group `run` (nothing when trace.empty()).
/// Throws ResultsError when the vectors differ in length or a phase code has no name.
void write_trace(const h5::Group& run, const TraceRecord& trace);

/// Reads the group "trace" of `run`; an empty record when the run has none. Throws
/// ResultsError naming the object when it is malformed (datasets of different lengths, a phase
/// code outside the legend).
TraceRecord read_trace(const h5::Group& run);

/// The run of `record` (read from `path`) whose trace is wanted: the run `run_id` (a prefix of
/// an id is enough when it is unique), or when `run_id` is empty the first run that has a trace.
/// Throws ResultsError naming the file and the runs that have a trace when there is no such run,
/// the prefix is ambiguous, or the run has no trace (and why: measurement.trace false, or a long
/// run, or a failed run).
const RunRecord& traced_run(const ExperimentRecord& record, const std::string& path,
                            const std::string& run_id);

}  // namespace quilt::results
