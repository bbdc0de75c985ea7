#pragma once
// One pipeline run of a sweep (training.mode none) on every rank (internal to
// harness/runner.cc): set-up (model, plan, loaded board), the repetitions under the run's time
// model (harness/time_model_strategy.h), the output check, the gathering to rank 0, the metrics
// (harness/metrics.h), and the finished run reported to the sweep's sinks.

#include "harness/experiment.h"
#include "harness/runner.h"
#include "harness/sweep.h"

#include <mpi.h>

#include <memory>

namespace quilt::harness {

/// Runs the pipeline runs of one sweep, keeping what consecutive runs share (the base model, the
/// board registry). Every rank holds one and calls run() for the same runs in the same order.
class PipelineRunner {
 public:
  PipelineRunner(const Experiment& experiment, const RunOptions& options, Sweep& sweep,
                 MPI_Comm comm);
  ~PipelineRunner();
  PipelineRunner(const PipelineRunner&) = delete;
  PipelineRunner& operator=(const PipelineRunner&) = delete;

  /// Runs `run` (collective over the communicator; blocks). A failure on any rank is recorded as
  /// a failed run, a signal as an interrupted one (harness/runner.h). Returns true when the sweep
  /// must stop: interrupted, or fail_fast after a failure.
  bool run(const RunConfig& run);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace quilt::harness
