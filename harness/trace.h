#pragma once
// Per-rank event recording for the merged timeline of a run (measurement.trace; stored under
// /runs/<id>/trace, results/SCHEMA.md). A rank records into a preallocated vector of POD
// events with the steady clock (harness::now_s): nothing allocates, locks or throws in the
// timed loop. After the run the events are gathered to rank 0 and put on its clock.

#include "harness/time_model.h"
#include "results/trace.h"

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::harness {

/// What a rank was doing. The codes index phase_names() (the `phases` legend in the file).
enum class Phase : int8_t {
  kRecvWait,    ///< pipeline: blocked until the batch's input has arrived from the previous rank
  kCreditWait,  ///< pipeline, rank 0: blocked until a batch left the last rank (window full)
  kH2d,         ///< host -> board transfer
  kCompute,     ///< the board runs the stage
  kD2h,         ///< board -> host transfer
  kSendWait,    ///< blocked until an earlier send finished (two sends in flight at most)
  kSend,        ///< the output's send, from posting to when the rank saw it complete
  kData,        ///< training: the step's batch is selected (and augmented)
  kForward,     ///< training: forward pass and loss
  kBackward,    ///< training: backward pass
  kAllreduce,   ///< training: gradients averaged over the ranks
  kOptimizer,   ///< training: the optimizer's step
};

/// The legend: phase_names()[static_cast<int>(p)] names p ("recv_wait", "compute", ...).
const std::vector<std::string>& phase_names();

/// One event on one rank: seconds on the recording rank's steady clock until gathered.
struct TraceEvent {
  int64_t batch;
  int32_t repetition;
  Phase phase;
  double start_s, end_s;
};

/// One rank's events. Construct (or reset) outside the timed loop; add() never allocates.
class TraceRecorder {
 public:
  TraceRecorder() = default;
  /// Keeps the events of the first `max_batches` batches begun with begin_batch (0 = off),
  /// reserving `events_per_batch` events for each.
  TraceRecorder(int64_t max_batches, int events_per_batch);

  bool enabled() const { return max_batches_ > 0; }
  int64_t max_batches() const { return max_batches_; }
  /// Starts batch `batch` of repetition `repetition`: its events are kept while fewer than
  /// max_batches batches were begun, dropped (and counted) after.
  void begin_batch(int64_t batch, int32_t repetition) {
    batch_ = batch;
    repetition_ = repetition;
    keep_ = begun_++ < max_batches_;
  }
  /// Records an event of the current batch; returns its index, or -1 when dropped.
  int64_t add(Phase phase, double start_s, double end_s) {
    if (!keep_ || events_.size() == events_.capacity()) {
      ++dropped_;
      return -1;
    }
    events_.push_back({batch_, repetition_, phase, start_s, end_s});
    return static_cast<int64_t>(events_.size()) - 1;
  }
  /// Sets the end of the event `index` returned by add() (ignored for -1).
  void set_end(int64_t index, double end_s) {
    if (index >= 0) events_[static_cast<size_t>(index)].end_s = end_s;
  }
  /// Adds `offset_s` to the times of the events from `first` on (to move them to rank 0's
  /// clock after the loop).
  void shift(size_t first, double offset_s);
  size_t size() const { return events_.size(); }
  int64_t dropped() const { return dropped_; }
  const std::vector<TraceEvent>& events() const { return events_; }

 private:
  std::vector<TraceEvent> events_;
  int64_t max_batches_ = 0, begun_ = 0, dropped_ = 0, batch_ = 0;
  int32_t repetition_ = 0;
  bool keep_ = false;
};

/// Records the modeled schedule of one stage (harness/time_model.h: every batch, warm-up
/// included) as the real pipeline would: batch numbers from -warmup, board time in seconds from
/// the simulation's start. `stage` and `stages` say which ranks wait on what.
void record_simulated(TraceRecorder& trace, const SimulatedStage& sim, const BoardTimes& board,
                      int64_t warmup, int stage, int stages);

/// Gathers every rank's events (already on rank 0's clock) to rank 0 and returns them there as
/// one record: times become (t - origin) / time_scale, origin being the earlier of origin_s
/// (rank 0's first batch, on its clock) and the earliest event of any rank; time_scale: the
/// dilation factor, 1 otherwise), `clock` "wall" or "board". Other ranks get an empty record.
/// Collective over `comm`; blocks. Throws MpiError.
results::TraceRecord gather_trace(const TraceRecorder& mine, double origin_s, double time_scale,
                                  const std::string& clock, MPI_Comm comm);

}  // namespace quilt::harness
