#include "harness/pipeline.h"

#include "harness/mpi.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <deque>
#include <optional>
#include <thread>

namespace quilt::harness {

namespace {

constexpr int kDataTag = 1;
constexpr int kCreditTag = 2;
constexpr int kClockTag = 3;

// MPI counts are int; large activations go as a contiguous datatype of 1 MiB blocks + a tail.
struct Payload {
  void* data = nullptr;
  int64_t bytes = 0;
};

Payload payload_of(const at::Tensor& t) {
  TORCH_INTERNAL_ASSERT(t.is_contiguous(), "pipeline tensors must be contiguous");
  return {t.data_ptr(), static_cast<int64_t>(t.nbytes())};
}

class Transfer {
 public:
  // Posts a send or a receive of `p`; keeps up to two requests (blocks + tail).
  void isend(const Payload& p, int peer, MPI_Comm comm) { post(p, peer, comm, true); }
  void irecv(const Payload& p, int peer, MPI_Comm comm) { post(p, peer, comm, false); }
  bool active() const { return n_ > 0; }
  // Whether the transfer has completed (then it is no longer active). Never blocks.
  bool test() {
    if (n_ == 0) return true;
    int done = 0;
    mpi::check(MPI_Testall(n_, reqs_, &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) n_ = 0;
    return done != 0;
  }
  void wait() {
    if (n_ == 0) return;
    mpi::check(MPI_Waitall(n_, reqs_, MPI_STATUSES_IGNORE), "MPI_Waitall");
    n_ = 0;
  }

 private:
  void post(const Payload& p, int peer, MPI_Comm comm, bool send) {
    TORCH_INTERNAL_ASSERT(n_ == 0);
    // One MPI_BYTE message up to INT_MAX bytes (derived datatypes would keep Open MPI off its
    // single-copy path); larger tensors go as 1 GiB blocks plus a tail.
    constexpr int64_t kBlock = int64_t{1} << 30;
    char* base = static_cast<char*>(p.data);
    int64_t blocks = p.bytes > INT_MAX ? p.bytes / kBlock : 0;
    int64_t tail = p.bytes - blocks * kBlock;
    if (blocks > 0) {
      MPI_Datatype block;
      mpi::check(MPI_Type_contiguous(static_cast<int>(kBlock), MPI_BYTE, &block),
                 "MPI_Type_contiguous");
      mpi::check(MPI_Type_commit(&block), "MPI_Type_commit");
      int rc =
          send ? MPI_Isend(base, static_cast<int>(blocks), block, peer, kDataTag, comm, &reqs_[n_])
               : MPI_Irecv(base, static_cast<int>(blocks), block, peer, kDataTag, comm, &reqs_[n_]);
      MPI_Type_free(&block);
      mpi::check(rc, send ? "MPI_Isend" : "MPI_Irecv");
      ++n_;
    }
    if (tail > 0 || blocks == 0) {
      char* at = base + blocks * kBlock;
      int rc =
          send ? MPI_Isend(at, static_cast<int>(tail), MPI_BYTE, peer, kDataTag, comm, &reqs_[n_])
               : MPI_Irecv(at, static_cast<int>(tail), MPI_BYTE, peer, kDataTag, comm, &reqs_[n_]);
      mpi::check(rc, send ? "MPI_Isend" : "MPI_Irecv");
      ++n_;
    }
  }
  MPI_Request reqs_[2];
  int n_ = 0;
};

}  // namespace

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Waits until now_s() >= t: sleeps most of the way, then spins the last 5 ms (a sleep may wake
// up a scheduler tick late: up to 4 ms at HZ=250). Returns now_s().
static double pace_until(double t) {
  constexpr double kSpin = 5e-3;
  double now = now_s();
  if (t - now > kSpin) std::this_thread::sleep_for(std::chrono::duration<double>(t - now - kSpin));
  while ((now = now_s()) < t) {
  }
  return now;
}

double clock_offset_to_rank0(MPI_Comm comm, int rounds) {
  int me = mpi::rank(comm), n = mpi::size(comm);
  double offset = 0;
  for (int peer = 1; peer < n; ++peer) {
    if (me == 0) {
      for (int i = 0; i < rounds; ++i) {
        double t = 0;
        mpi::check(MPI_Recv(&t, 1, MPI_DOUBLE, peer, kClockTag, comm, MPI_STATUS_IGNORE),
                   "MPI_Recv");
        t = now_s();
        mpi::check(MPI_Send(&t, 1, MPI_DOUBLE, peer, kClockTag, comm), "MPI_Send");
      }
    } else if (me == peer) {
      double best_rtt = 1e30;
      for (int i = 0; i < rounds; ++i) {
        double t0 = now_s(), remote = 0;
        mpi::check(MPI_Send(&t0, 1, MPI_DOUBLE, 0, kClockTag, comm), "MPI_Send");
        mpi::check(MPI_Recv(&remote, 1, MPI_DOUBLE, 0, kClockTag, comm, MPI_STATUS_IGNORE),
                   "MPI_Recv");
        double t1 = now_s();
        if (t1 - t0 < best_rtt) best_rtt = t1 - t0, offset = remote - (t0 + t1) / 2;
      }
    }
  }
  return offset;
}

StageTiming run_pipeline(backends::Board& board, const std::vector<int64_t>& input_shape,
                         const std::vector<int64_t>& output_shape,
                         const std::vector<at::Tensor>& input_pool,
                         const std::function<void(int64_t, const at::Tensor&)>& on_output,
                         const PipelineOptions& options, MPI_Comm comm) {
  const int me = mpi::rank(comm), n = mpi::size(comm);
  const bool first = me == 0, last = me == n - 1;
  const int64_t warm = options.warmup_batches, total = warm + options.batches;
  const int64_t window = options.window_batches > 0 ? options.window_batches : 2 * n;
  TORCH_INTERNAL_ASSERT(!first || !input_pool.empty(), "rank 0 needs inputs");
  // A dead peer or link leaves this rank waiting in MPI forever: the watchdog ends the job when no
  // batch goes through for the stall timeout.
  std::string peers;
  if (!first) peers += fmt::format("batches from rank {}", me - 1);
  if (!last) peers += fmt::format("{}rank {} to take batches", peers.empty() ? "" : ", ", me + 1);
  if (first && n > 1) peers += fmt::format(", credits from rank {}", n - 1);
  mpi::StallScope stall(fmt::format("the pipeline (stage {}: {})", me, peers));

  const double offset = clock_offset_to_rank0(comm);
  StageTiming timing;
  auto measured = [&](int64_t i) { return i >= warm; };

  // Two receive buffers: batch i arrives in recv_buf[i % 2] while batch i-1 computes.
  at::Tensor recv_buf[2];
  Transfer recv[2];
  if (!first) {
    for (auto& b : recv_buf) b = at::empty(input_shape, options.wire_dtype);
    recv[0].irecv(payload_of(recv_buf[0]), me - 1, comm);
  }
  // Outputs stay alive until their sends complete; at most two sends in flight.
  struct Send {
    at::Tensor output;
    Transfer transfer;
    int64_t event = -1;  // its trace event, to end when the send is seen complete
  };
  std::deque<Send> sends;
  TraceRecorder* trace = options.trace && options.trace->enabled() ? options.trace : nullptr;
  const size_t first_event = trace ? trace->size() : 0;
  // The end of a send is when this rank sees it complete: polled around each compute.
  auto poll_sends = [&](double now) {
    for (auto& s : sends)
      if (s.event >= 0 && s.transfer.test()) trace->set_end(s.event, now), s.event = -1;
  };
  at::Tensor zeros;  // stands in for the output of a failed board
  // Credits: the last rank tells rank 0 when a batch is done.
  std::vector<MPI_Request> credit_reqs;
  std::deque<int64_t> credit_values;  // send buffers must stay untouched until completion

  timing.origin_s = now_s() + offset;
  for (int64_t i = 0; i < total; ++i) {
    mpi::progress();
    if (i == warm) board.start_energy_window();
    if (trace)
      trace->begin_batch(measured(i) ? options.trace_batch_offset + i - warm : i - warm,
                         options.trace_repetition);
    at::Tensor input;
    double t0 = now_s();
    if (first) {
      if (n > 1 && i >= window) {
        // Wait for batch i - window to leave the pipeline.
        int64_t done = 0;
        mpi::check(MPI_Recv(&done, 1, MPI_INT64_T, n - 1, kCreditTag, comm, MPI_STATUS_IGNORE),
                   "MPI_Recv(credit)");
      }
      input = input_pool[static_cast<size_t>(i) % input_pool.size()];
    } else {
      recv[i % 2].wait();
      input = recv_buf[i % 2];
      if (i + 1 < total) recv[(i + 1) % 2].irecv(payload_of(recv_buf[(i + 1) % 2]), me - 1, comm);
    }
    double t1 = now_s();
    if (trace) poll_sends(t1);
    const Pacing& pace = options.pacing;
    const bool paced = pace.active();
    at::Tensor output;
    if (timing.error.empty()) {
      try {
        output = board.run(input);
      } catch (const std::exception& e) {
        timing.error = fmt::format("board failed at batch {}: {}", i, e.what());
      }
    }
    if (!timing.error.empty()) {
      if (!zeros.defined()) zeros = at::zeros(output_shape, last ? at::kFloat : options.wire_dtype);
      output = zeros;
    }
    double t2 = now_s();
    double h2d = 0, d2h = 0;
    std::optional<backends::Board::PhaseTimes> phases;
    if (!paced && timing.error.empty()) phases = board.last_phase_times();
    if (phases) {
      // A real board timed its own transfers: the rest of the call is compute (and the board's
      // own overheads).
      h2d = phases->h2d_s;
      d2h = phases->d2h_s;
    }
    if (paced) {
      // One wait per batch (each sleep may wake up late by a scheduler tick): the board is busy
      // h2d + compute + d2h; the real compute must fit in the h2d + compute part.
      const double busy = pace.h2d_s + pace.compute_s + pace.d2h_s;
      bool overrun = t2 - t1 > pace.h2d_s + pace.compute_s;
      t2 = pace_until(t1 + busy);
      // Ended late (the process was not scheduled in time): not board time either.
      overrun = overrun || t2 - t1 > 1.02 * busy + 0.5e-3;
      if (measured(i) && overrun) ++timing.overruns;
      h2d = pace.h2d_s;
      d2h = pace.d2h_s;
    }
    if (trace) {
      poll_sends(t2);
      if (first ? i >= window && n > 1 : true)
        trace->add(first ? Phase::kCreditWait : Phase::kRecvWait, t0, t1);
      if (h2d > 0) trace->add(Phase::kH2d, t1, t1 + h2d);
      trace->add(Phase::kCompute, t1 + h2d, t2 - d2h);
      if (d2h > 0) trace->add(Phase::kD2h, t2 - d2h, t2);
    }
    double t3 = t2;
    if (!last) {
      while (sends.size() >= 2) {
        sends.front().transfer.wait();
        if (trace) trace->set_end(sends.front().event, now_s());
        sends.pop_front();
      }
      t3 = now_s();
      // A board that returns another dtype than the receiver's buffers would garble the batch.
      if (timing.error.empty() && output.scalar_type() != options.wire_dtype) {
        timing.error =
            fmt::format("board returned {} for the wire format {} at batch {}",
                        c10::toString(output.scalar_type()), c10::toString(options.wire_dtype), i);
        if (!zeros.defined()) zeros = at::zeros(output_shape, options.wire_dtype);
        output = zeros;
      }
      sends.push_back({output, Transfer{}, -1});
      sends.back().transfer.isend(payload_of(output), me + 1, comm);
      if (trace) {
        trace->add(Phase::kSendWait, t2, t3);
        sends.back().event = trace->add(Phase::kSend, t3, t3);
      }
    }
    // Non-finite values would poison every later stage: name the first stage that made them.
    // Checked while the send is in flight; a sum is one pass without allocation, and only a
    // non-finite sum (NaN/Inf somewhere, or an overflow of the sum itself) pays for the exact
    // element-wise check.
    if (timing.error.empty() && !std::isfinite(output.sum().item<double>()) &&
        !output.isfinite().all().item<bool>())
      timing.error = fmt::format("non-finite values (NaN or Inf) in the output of batch {}", i);
    if (last) {
      if (on_output) on_output(i, output);
      if (n > 1 && i + window < total) {
        credit_reqs.emplace_back();
        credit_values.push_back(i);
        mpi::check(MPI_Isend(&credit_values.back(), 1, MPI_INT64_T, 0, kCreditTag, comm,
                             &credit_reqs.back()),
                   "MPI_Isend(credit)");
        // Credits are tiny and complete at once in practice; reap them so the vector stays short.
        int flag = 0;
        mpi::check(MPI_Testall(static_cast<int>(credit_reqs.size()), credit_reqs.data(), &flag,
                               MPI_STATUSES_IGNORE),
                   "MPI_Testall");
        if (flag) credit_reqs.clear(), credit_values.clear();
      }
    }
    if (measured(i)) {
      timing.compute_s.push_back(t2 - t1 - h2d - d2h);
      if (paced || phases) {
        timing.h2d_s.push_back(h2d);
        timing.d2h_s.push_back(d2h);
      }
      timing.recv_wait_s.push_back(first ? 0.0 : t1 - t0);
      timing.send_wait_s.push_back(t3 - t2);
      if (!first) timing.bytes_received += input.nbytes();
      if (!last) timing.bytes_sent += output.nbytes();
      if (first) timing.start_s.push_back(t1 + offset);
      if (last) timing.end_s.push_back(now_s() + offset);
    }
  }
  // Send waits after the last batch belong to the last measured batch.
  double t = now_s();
  for (auto& s : sends) {
    s.transfer.wait();
    if (trace) trace->set_end(s.event, now_s());
  }
  if (!timing.send_wait_s.empty()) timing.send_wait_s.back() += now_s() - t;
  if (trace) trace->shift(first_event, offset);
  if (auto e = board.stop_energy_window()) timing.board_energy_j = *e;
  if (!credit_reqs.empty())
    mpi::check(
        MPI_Waitall(static_cast<int>(credit_reqs.size()), credit_reqs.data(), MPI_STATUSES_IGNORE),
        "MPI_Waitall(credit)");
  return timing;
}

}  // namespace quilt::harness
