#pragma once
// Where the runs of an experiment go as rank 0 finishes them, in the way Google Benchmark's
// reporters work: the runner reports each finished run to every sink; the console and the HDF5
// result file are two sinks.

#include "harness/experiment.h"
#include "results/record.h"
#include "results/writer.h"

#include <cstddef>
#include <string>

namespace quilt::harness {

/// Receives the runs of a sweep, in order. Rank 0 only; a sink does not throw.
class ResultSink {
 public:
  virtual ~ResultSink() = default;
  /// Run `index` (0-based) of `total` begins, or is `skipped` (complete in the result file).
  virtual void run_started(const RunConfig& run, size_t index, size_t total, bool skipped) {
    (void)run, (void)index, (void)total, (void)skipped;
  }
  /// `rec`, the record of `run`, is final (status ok, failed or interrupted); `provenance` is
  /// the experiment's as of now.
  virtual void run_finished(const RunConfig& run, const results::RunRecord& rec,
                            const results::Provenance& provenance) = 0;
};

/// Progress lines and each run's one-line summary on stdout (flushed per run). Training runs
/// print their own lines (harness/training.h): the sink only announces them.
class ConsoleSink final : public ResultSink {
 public:
  void run_started(const RunConfig& run, size_t index, size_t total, bool skipped) override;
  void run_finished(const RunConfig& run, const results::RunRecord& rec,
                    const results::Provenance& provenance) override;
};

/// Commits every run to the result file (results::Appender: one committed group per run). The
/// first failure to write (a full disk, an I/O error) is kept in error() and later runs are
/// not written; the file keeps every run committed before.
class Hdf5Sink final : public ResultSink {
 public:
  explicit Hdf5Sink(results::Appender appender) : appender_(std::move(appender)) {}
  void run_finished(const RunConfig& run, const results::RunRecord& rec,
                    const results::Provenance& provenance) override;
  /// Empty, or the reason the file could not take a run (the OS's text included).
  const std::string& error() const { return error_; }

 private:
  results::Appender appender_;
  std::string error_;
};

}  // namespace quilt::harness
