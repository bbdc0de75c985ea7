#pragma once
// The sweep of run_experiment as every rank sees it (internal to harness/runner.cc and
// harness/pipeline_run.cc): rank 0's record and result sinks, and the agreements between runs.

#include "harness/clock.h"
#include "harness/mpi.h"
#include "harness/result_sink.h"
#include "harness/runner.h"
#include "results/record.h"

#include <mpi.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace quilt::harness {

/// Rank 0 keeps the experiment's record and reports each finished run to its sinks (the HDF5
/// file first, then the console when printing); every rank calls stop_now() between runs.
class Sweep {
 public:
  Sweep(results::ExperimentRecord record, std::unique_ptr<Hdf5Sink> file, bool print,
        RunOutcome& outcome, MPI_Comm comm)
      : record_(std::move(record)), outcome_(outcome), comm_(comm) {
    root_ = mpi::rank(comm) == 0;
    file_ = file.get();
    if (file) sinks_.push_back(std::move(file));
    if (root_ && print) sinks_.push_back(std::make_unique<ConsoleSink>());
    for (size_t i = 0; i < record_.runs.size(); ++i) index_.emplace(record_.runs[i].id, i);
    outcome_ = RunOutcome{};
  }

  results::ExperimentRecord& record() { return record_; }
  RunOutcome& outcome() { return outcome_; }

  // Rank 0: run `index` of the experiment begins (or is skipped).
  void started(const RunConfig& run, size_t index, size_t total, bool skipped) {
    for (auto& sink : sinks_) sink->run_started(run, index, total, skipped);
  }

  // Rank 0: reports a finished run to the sinks (the file first: a run printed is a run kept)
  // and keeps it for the summary.
  void finished(const RunConfig& run, results::RunRecord rec) {
    record_.provenance.end_utc = utc_now_iso8601();
    for (auto& sink : sinks_) sink->run_finished(run, rec, record_.provenance);
    // A committed run's timeline lives in the file only: rank 0 keeps every run of the sweep in
    // memory for the summary, and must not keep every run's events too.
    if (file_ && file_->error().empty()) rec.trace = {};
    auto [at, added] = index_.emplace(rec.id, record_.runs.size());
    if (added)
      record_.runs.push_back(std::move(rec));
    else
      record_.runs[at->second] = std::move(rec);
  }

  // The agreement between runs: whether rank 0 could write the last run, and whether any rank
  // was interrupted. Collective; true when the sweep must stop.
  bool stop_now() {
    mpi::StallScope stall("the other ranks (between runs)");
    const std::string write_error = file_ ? file_->error() : "";
    int flags[2] = {root_ && !write_error.empty() ? 1 : 0, mpi::interrupt_signal()};
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, flags, 2, MPI_INT, MPI_MAX, comm_),
               "MPI_Allreduce(stop)");
    if (flags[0]) outcome_.output_error = mpi::broadcast_string(write_error, 0, comm_);
    if (flags[1]) outcome_.interrupt_signal = flags[1];
    return flags[0] != 0 || flags[1] != 0;
  }

 private:
  results::ExperimentRecord record_;
  std::vector<std::unique_ptr<ResultSink>> sinks_;  // rank 0 only
  Hdf5Sink* file_ = nullptr;                        // in sinks_, when there is a file
  // Each run id's position in record_.runs (kept in step), so that a sweep of 100,000 runs does
  // not scan every earlier run after each one.
  std::unordered_map<std::string, size_t> index_;
  RunOutcome& outcome_;
  MPI_Comm comm_;
  bool root_ = false;
};

}  // namespace quilt::harness
