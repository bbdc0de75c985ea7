#include "harness/time_model_strategy.h"

#include "harness/metrics.h"
#include "harness/mpi.h"

#include <algorithm>
#include <stdexcept>

namespace quilt::harness {

namespace {

// dilated: the stretch factor is the slowest stage's real/modeled compute ratio times this.
constexpr double kDilationMargin = 1.3;
// dilated: ... and at least so much that every board's paced batch lasts this long (wall).
constexpr double kMinPacedBatchS = 0.05;
// modeled: the real batches that carry tensors through the pipeline for the output check.
constexpr int64_t kModeledRealBatches = 2;

// The wall clock of the real execution: the CPU is the accelerator.
class Measured final : public TimeModelStrategy {
 public:
  std::string name() const override { return to_string(TimeModel::kMeasured); }
  bool wall_clock() const override { return true; }
};

// A time model that works from the profile's board times of this rank's stage (dilated,
// modeled).
class OnBoardTimes : public TimeModelStrategy {
 public:
  OnBoardTimes(TimeModel model, StageContext stage) : model_(model), stage_(std::move(stage)) {}
  std::string name() const final { return to_string(model_); }

 protected:
  // This rank's board times of one batch.
  const BoardTimes& my_board_times() const {
    return stage_.board_times.at(static_cast<size_t>(stage_.stage));
  }

  const TimeModel model_;
  StageContext stage_;
};

// Real execution paced to the profile's board times, all stretched by one factor.
class Dilated final : public OnBoardTimes {
 public:
  explicit Dilated(StageContext stage) : OnBoardTimes(TimeModel::kDilated, std::move(stage)) {}
  double dilation() const override { return dilation_; }

  void before(PipelineOptions& options, const PipelineFn& run, MPI_Comm comm) override {
    // A short unpaced pilot measures how long this CPU takes per batch; one factor for all
    // ranks stretches every modeled time so that the slowest stage still keeps up.
    PipelineOptions pilot = options;
    pilot.warmup_batches = 1;
    pilot.batches = 2;
    StageTiming t = run(pilot);
    const BoardTimes& mine = my_board_times();
    double ratio = 0, real = t.compute_s.empty() ? 0 : median(t.compute_s);
    if (mine.compute_s > 0) ratio = real / mine.compute_s;
    double busy = mine.busy_s() > 0 ? mine.busy_s() : 1e300;
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, &ratio, 1, MPI_DOUBLE, MPI_MAX, comm),
               "MPI_Allreduce(dilation)");
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, &busy, 1, MPI_DOUBLE, MPI_MIN, comm),
               "MPI_Allreduce(dilation)");
    dilation_ = ratio > 0 ? ratio * kDilationMargin : 1.0;
    // Paced batches shorter than a few scheduler time slices would measure wake-up jitter.
    if (busy < 1e300) dilation_ = std::max(dilation_, kMinPacedBatchS / busy);
    options.pacing = {dilation_ * mine.h2d_s, dilation_ * mine.compute_s, dilation_ * mine.d2h_s};
  }

  void to_board_time(StageTiming& t) const override {
    if (dilation_ == 1) return;
    for (auto* v :
         {&t.compute_s, &t.recv_wait_s, &t.send_wait_s, &t.h2d_s, &t.d2h_s, &t.start_s, &t.end_s})
      for (double& x : *v) x /= dilation_;
  }

 private:
  double dilation_ = 1;
};

// Virtual time: the pipeline schedule simulated on the profile's numbers.
class Modeled final : public OnBoardTimes {
 public:
  explicit Modeled(StageContext stage) : OnBoardTimes(TimeModel::kModeled, std::move(stage)) {}
  bool real_time() const override { return false; }

  void before(PipelineOptions& options, const PipelineFn& run, MPI_Comm comm) override {
    (void)run, (void)comm;
    // A few real batches carry real tensors through the pipeline for the output check; the
    // times come from simulating the schedule.
    warmup_ = options.warmup_batches;
    batches_ = options.batches;
    simulated_ = simulate_pipeline(stage_.board_times, options.warmup_batches, options.batches,
                                   options.window_batches)
                     .at(static_cast<size_t>(stage_.stage));
    options.warmup_batches = 0;
    options.batches = kModeledRealBatches;
  }
  int64_t traced_repetitions(int64_t) const override { return 1; }
  void attach_trace(TraceRecorder& trace, PipelineOptions&) override {
    if (trace.enabled())
      record_simulated(trace, simulated_, my_board_times(), warmup_, stage_.stage, stage_.stages);
  }
  bool runs_pipeline(int64_t rep) const override { return rep == 0; }

  void to_board_time(StageTiming& t) const override {
    // Board time from the simulation; the real batches only checked the outputs.
    const bool first = stage_.stage == 0, last = stage_.stage == stage_.stages - 1;
    t.compute_s = simulated_.compute_s;
    t.h2d_s = simulated_.h2d_s;
    t.d2h_s = simulated_.d2h_s;
    t.recv_wait_s = simulated_.recv_wait_s;
    t.send_wait_s = simulated_.send_wait_s;
    t.start_s = first ? simulated_.start_s : std::vector<double>{};
    t.end_s = last ? simulated_.end_s : std::vector<double>{};
    t.bytes_sent = last ? 0 : batches_ * stage_.element_bytes * stage_.out_numel;
    t.bytes_received = first ? 0 : batches_ * stage_.element_bytes * stage_.in_numel;
  }

 private:
  SimulatedStage simulated_;
  int64_t warmup_ = 0, batches_ = 0;
};

}  // namespace

std::unique_ptr<TimeModelStrategy> make_time_model(TimeModel model, StageContext stage) {
  switch (model) {
    case TimeModel::kMeasured:
      return std::make_unique<Measured>();
    case TimeModel::kDilated:
      return std::make_unique<Dilated>(std::move(stage));
    case TimeModel::kModeled:
      return std::make_unique<Modeled>(std::move(stage));
  }
  throw std::invalid_argument("unknown time model");  // not a TimeModel: a bug
}

}  // namespace quilt::harness
