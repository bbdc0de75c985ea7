#pragma once
// The time models of a pipeline run as strategies (boards.time_model): what each does before
// the repetitions (the dilated pilot and pacing, the modeled simulation), during them (which
// repetitions run the real pipeline, what the trace records) and after each one (the
// conversion back to board time). The runner (harness/runner.cc) drives any of them the same
// way. The pure parts (the schedule simulation, energy) are in harness/time_model.h.

#include "harness/experiment.h"
#include "harness/pipeline.h"
#include "harness/time_model.h"
#include "harness/trace.h"

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace quilt::harness {

/// What a time model knows of this rank's stage.
struct StageContext {
  /// The cost model's board times of one batch, one entry per stage (RunPlan's prediction).
  std::vector<BoardTimes> board_times;
  int stage = 0;              ///< this rank's stage (= its rank)
  int stages = 1;             ///< number of stages (= ranks)
  int64_t element_bytes = 4;  ///< bytes per element of the tensors between stages
  int64_t in_numel = 0;       ///< elements of one batch entering this stage
  int64_t out_numel = 0;      ///< elements of one batch leaving it
};

/// Runs the real pipeline once with the given options (every rank, collective); a failure of
/// the MPI layer does not return (the job is aborted).
using PipelineFn = std::function<StageTiming(const PipelineOptions&)>;

/// One time model. Every rank holds its own instance and calls it in the same order:
/// before(), attach_trace(), then per repetition runs_pipeline() and, when the repetition ended
/// well, to_board_time().
class TimeModelStrategy {
 public:
  virtual ~TimeModelStrategy() = default;
  /// boards.time_model: "measured", "dilated" or "modeled".
  virtual std::string name() const = 0;
  /// The repetitions run in real time (measured, dilated): the pipeline's own clock gives the
  /// trace origin, and the CPU-wait and max_cv validity rules apply.
  virtual bool real_time() const { return true; }
  /// The times are this machine's wall clock (measured): boards' own energy readings count,
  /// and the trace's clock is "wall" (else "board").
  virtual bool wall_clock() const { return false; }
  /// The factor every modeled time was stretched by (dilated); 1 otherwise. Valid after
  /// before().
  virtual double dilation() const { return 1; }
  /// Every rank, collective over `comm`, before the repetitions: adapts `options` (the
  /// experiment's warm-up and batches on entry). May run the pipeline through `run`.
  virtual void before(PipelineOptions& options, const PipelineFn& run, MPI_Comm comm) {
    (void)options, (void)run, (void)comm;
  }
  /// Repetitions whose batches the trace covers (for its size).
  virtual int64_t traced_repetitions(int64_t repetitions) const { return repetitions; }
  /// Connects `trace` (after before()): the real pipeline records into it, or the model writes
  /// its own schedule into it now.
  virtual void attach_trace(TraceRecorder& trace, PipelineOptions& options) {
    options.trace = &trace;
  }
  /// Whether repetition `rep` (0-based) runs the real pipeline.
  virtual bool runs_pipeline(int64_t rep) const { return (void)rep, true; }
  /// After a repetition that ended well: `t` (what the pipeline measured, or nothing when it did
  /// not run) becomes this stage's times in board time.
  virtual void to_board_time(StageTiming& t) const { (void)t; }
};

/// The strategy of boards.time_model `model` on this rank's `stage`.
std::unique_ptr<TimeModelStrategy> make_time_model(TimeModel model, StageContext stage);

}  // namespace quilt::harness
