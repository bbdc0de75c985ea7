#include "harness/trace.h"

#include "harness/mpi.h"

#include <algorithm>
#include <cstring>

namespace quilt::harness {

const std::vector<std::string>& phase_names() {
  static const std::vector<std::string> kNames = {
      "recv_wait", "credit_wait", "h2d",     "compute",  "d2h",       "send_wait",
      "send",      "data",        "forward", "backward", "allreduce", "optimizer"};
  return kNames;
}

TraceRecorder::TraceRecorder(int64_t max_batches, int events_per_batch)
    : max_batches_(std::max<int64_t>(0, max_batches)) {
  events_.reserve(static_cast<size_t>(max_batches_) * static_cast<size_t>(events_per_batch));
}

void TraceRecorder::shift(size_t first, double offset_s) {
  for (size_t i = first; i < events_.size(); ++i) {
    events_[i].start_s += offset_s;
    events_[i].end_s += offset_s;
  }
}

void record_simulated(TraceRecorder& trace, const SimulatedStage& sim, const BoardTimes& board,
                      int64_t warmup, int stage, int stages) {
  const bool first = stage == 0, last = stage == stages - 1;
  for (size_t i = 0; i < sim.schedule.size(); ++i) {
    const auto& b = sim.schedule[i];
    trace.begin_batch(static_cast<int64_t>(i) - warmup, 0);
    if (!first)
      trace.add(Phase::kRecvWait, b.wait_s, b.ready_s);
    else if (b.ready_s > b.wait_s)
      trace.add(Phase::kCreditWait, b.wait_s, b.ready_s);
    if (board.h2d_s > 0) trace.add(Phase::kH2d, b.ready_s, b.ready_s + board.h2d_s);
    trace.add(Phase::kCompute, b.ready_s + board.h2d_s, b.done_s - board.d2h_s);
    if (board.d2h_s > 0) trace.add(Phase::kD2h, b.done_s - board.d2h_s, b.done_s);
    if (!last) {
      trace.add(Phase::kSendWait, b.done_s, b.send_posted_s);
      trace.add(Phase::kSend, b.send_posted_s, b.sent_s);
    }
  }
}

results::TraceRecord gather_trace(const TraceRecorder& mine, double origin_s, double time_scale,
                                  const std::string& clock, MPI_Comm comm) {
  static_assert(std::is_trivially_copyable_v<TraceEvent>);
  // Events as raw bytes (one build, one job: same layout on every rank), the dropped count first.
  std::string bytes(sizeof(int64_t) + mine.size() * sizeof(TraceEvent), '\0');
  const int64_t dropped = mine.dropped();
  std::memcpy(bytes.data(), &dropped, sizeof dropped);
  if (mine.size() > 0)
    std::memcpy(bytes.data() + sizeof dropped, mine.events().data(),
                mine.size() * sizeof(TraceEvent));
  auto all = mpi::gather_strings(bytes, 0, comm);
  results::TraceRecord t;
  if (mpi::rank(comm) != 0) return t;
  t.clock = clock;
  t.max_batches = mine.max_batches();
  t.phases = phase_names();
  // The run starts at the earliest event of any rank: a rank that finished the clock
  // synchronisation first may begin waiting for its input before rank 0 begins its first batch.
  for (const std::string& b : all)
    for (size_t i = 0; sizeof(int64_t) + (i + 1) * sizeof(TraceEvent) <= b.size(); ++i) {
      TraceEvent e;
      std::memcpy(&e, b.data() + sizeof(int64_t) + i * sizeof(TraceEvent), sizeof e);
      origin_s = std::min(origin_s, e.start_s);
    }
  for (size_t r = 0; r < all.size(); ++r) {
    const std::string& b = all[r];
    int64_t d = 0;
    std::memcpy(&d, b.data(), sizeof d);
    t.dropped_events += d;
    const size_t n = (b.size() - sizeof d) / sizeof(TraceEvent);
    for (size_t i = 0; i < n; ++i) {
      TraceEvent e;
      std::memcpy(&e, b.data() + sizeof d + i * sizeof(TraceEvent), sizeof e);
      t.rank.push_back(static_cast<int64_t>(r));
      t.batch.push_back(e.batch);
      t.repetition.push_back(e.repetition);
      t.phase.push_back(static_cast<int64_t>(e.phase));
      t.start_s.push_back((e.start_s - origin_s) / time_scale);
      t.end_s.push_back((e.end_s - origin_s) / time_scale);
    }
  }
  return t;
}

}  // namespace quilt::harness
