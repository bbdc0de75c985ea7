#pragma once
// The merged multi-rank timeline of one run (SCHEMA.md, /runs/<id>/trace): one entry per event,
// every rank's events on rank 0's clock. Plain value types; no HDF5 here (results/trace_io.h
// stores them).

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::results {

/// Events of one run, struct of arrays (all vectors of equal length, one entry per event).
/// Times are seconds from the run's start on rank 0's clock: wall seconds when `clock` is
/// "wall", board seconds ("board": the dilated and modeled time models).
struct TraceRecord {
  std::string clock;           ///< "wall" or "board"; empty = the run has no trace
  int64_t dropped_events = 0;  ///< events not kept because of measurement.trace's bound
  int64_t max_batches = 0;     ///< the bound: batches (training: steps) kept per rank
  /// Legend of `phase`: phases[code] is the name ("recv_wait", "compute", ...).
  std::vector<std::string> phases;
  std::vector<int64_t> rank;
  /// Pipeline: measured batch index as in /stages (repetition r's batch i is r x batches + i);
  /// warm-up batches of a repetition are -warmup_batches .. -1. Training: the optimizer step,
  /// from 0 over all epochs.
  std::vector<int64_t> batch;
  std::vector<int64_t> repetition;  ///< pipeline: the repetition; training: the epoch (1-based)
  std::vector<int64_t> phase;       ///< index into `phases`
  std::vector<double> start_s, end_s;

  bool empty() const { return clock.empty(); }
  size_t size() const { return rank.size(); }
};

}  // namespace quilt::results
