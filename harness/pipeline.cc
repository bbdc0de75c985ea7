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

namespace {

// One rank's side of run_pipeline: its buffers, sends in flight, credits and trace, and one
// method per step of a batch.
class StageLoop {
 public:
  StageLoop(backends::Board& board, const std::vector<int64_t>& input_shape,
            const std::vector<int64_t>& output_shape, const std::vector<at::Tensor>& input_pool,
            const std::function<void(int64_t, const at::Tensor&)>& on_output,
            const PipelineOptions& options, MPI_Comm comm)
      : board_(board),
        output_shape_(output_shape),
        input_pool_(input_pool),
        on_output_(on_output),
        options_(options),
        comm_(comm),
        me_(mpi::rank(comm)),
        n_(mpi::size(comm)),
        first_(me_ == 0),
        last_(me_ == n_ - 1),
        warm_(options.warmup_batches),
        total_(warm_ + options.batches),
        window_(options.window_batches > 0 ? options.window_batches : 2 * n_) {
    TORCH_INTERNAL_ASSERT(!first_ || !input_pool.empty(), "rank 0 needs inputs");
    offset_ = clock_offset_to_rank0(comm);
    // Two receive buffers: batch i arrives in recv_buf[i % 2] while batch i-1 computes.
    if (!first_) {
      for (auto& b : recv_buf_) b = at::empty(input_shape, options.wire_dtype);
      recv_[0].irecv(payload_of(recv_buf_[0]), me_ - 1, comm);
    }
    trace_ = options.trace && options.trace->enabled() ? options.trace : nullptr;
    first_event_ = trace_ ? trace_->size() : 0;
  }

  // A dead peer or link leaves this rank waiting in MPI forever: the watchdog ends the job when
  // no batch goes through for the stall timeout.
  static std::string peers(int me, int n) {
    std::string peers;
    if (me != 0) peers += fmt::format("batches from rank {}", me - 1);
    if (me != n - 1)
      peers += fmt::format("{}rank {} to take batches", peers.empty() ? "" : ", ", me + 1);
    if (me == 0 && n > 1) peers += fmt::format(", credits from rank {}", n - 1);
    return peers;
  }

  StageTiming run() {
    timing_.origin_s = now_s() + offset_;
    for (int64_t i = 0; i < total_; ++i) batch(i);
    return finish();
  }

 private:
  bool measured(int64_t i) const { return i >= warm_; }

  // What one batch's board call took, on this rank's steady clock.
  struct Times {
    double t0 = 0, t1 = 0, t2 = 0, t3 = 0;  // waiting, input here, board done, send posted
    double h2d = 0, d2h = 0;
    bool phases = false;  // the board timed its own transfers
  };

  void batch(int64_t i) {
    mpi::progress();
    if (i == warm_) board_.start_energy_window();
    if (trace_)
      trace_->begin_batch(measured(i) ? options_.trace_batch_offset + i - warm_ : i - warm_,
                          options_.trace_repetition);
    Times t;
    t.t0 = now_s();
    at::Tensor input = receive(i);
    t.t1 = now_s();
    if (trace_) poll_sends(t.t1);
    at::Tensor output = compute(i, input, t);
    if (trace_) trace_compute(i, t);
    t.t3 = t.t2;
    if (!last_) send(i, output, t);
    // Non-finite values would poison every later stage: name the first stage that made them.
    // Checked while the send is in flight; a sum is one pass without allocation, and only a
    // non-finite sum (NaN/Inf somewhere, or an overflow of the sum itself) pays for the exact
    // element-wise check.
    if (timing_.error.empty() && !std::isfinite(output.sum().item<double>()) &&
        !output.isfinite().all().item<bool>())
      timing_.error = fmt::format("non-finite values (NaN or Inf) in the output of batch {}", i);
    if (last_) deliver(i, output);
    if (measured(i)) record(input, output, t);
  }

  // Rank 0: the next input once batch i - window has left the pipeline; others: the received
  // batch (and the next receive posted).
  at::Tensor receive(int64_t i) {
    if (first_) {
      if (n_ > 1 && i >= window_) {
        int64_t done = 0;
        mpi::check(MPI_Recv(&done, 1, MPI_INT64_T, n_ - 1, kCreditTag, comm_, MPI_STATUS_IGNORE),
                   "MPI_Recv(credit)");
      }
      return input_pool_[static_cast<size_t>(i) % input_pool_.size()];
    }
    recv_[i % 2].wait();
    at::Tensor input = recv_buf_[i % 2];
    if (i + 1 < total_)
      recv_[(i + 1) % 2].irecv(payload_of(recv_buf_[(i + 1) % 2]), me_ - 1, comm_);
    return input;
  }

  // The board's output for batch i (zeros once the board failed), with t2 and the transfer
  // phases filled in; paced runs wait until the paced board time is over.
  at::Tensor compute(int64_t i, const at::Tensor& input, Times& t) {
    const Pacing& pace = options_.pacing;
    const bool paced = pace.active();
    at::Tensor output;
    if (timing_.error.empty()) {
      try {
        output = board_.run(input);
      } catch (const std::exception& e) {
        timing_.error = fmt::format("board failed at batch {}: {}", i, e.what());
      }
    }
    if (!timing_.error.empty()) {
      if (!zeros_.defined())
        zeros_ = at::zeros(output_shape_, last_ ? at::kFloat : options_.wire_dtype);
      output = zeros_;
    }
    t.t2 = now_s();
    std::optional<backends::Board::PhaseTimes> phases;
    if (!paced && timing_.error.empty()) phases = board_.last_phase_times();
    if (phases) {
      // A real board timed its own transfers: the rest of the call is compute (and the board's
      // own overheads).
      t.h2d = phases->h2d_s;
      t.d2h = phases->d2h_s;
      t.phases = true;
    }
    if (paced) {
      // One wait per batch (each sleep may wake up late by a scheduler tick): the board is busy
      // h2d + compute + d2h; the real compute must fit in the h2d + compute part.
      const double busy = pace.h2d_s + pace.compute_s + pace.d2h_s;
      bool overrun = t.t2 - t.t1 > pace.h2d_s + pace.compute_s;
      t.t2 = pace_until(t.t1 + busy);
      // Ended late (the process was not scheduled in time): not board time either.
      overrun = overrun || t.t2 - t.t1 > 1.02 * busy + 0.5e-3;
      if (measured(i) && overrun) ++timing_.overruns;
      t.h2d = pace.h2d_s;
      t.d2h = pace.d2h_s;
    }
    return output;
  }

  void trace_compute(int64_t i, const Times& t) {
    poll_sends(t.t2);
    if (first_ ? i >= window_ && n_ > 1 : true)
      trace_->add(first_ ? Phase::kCreditWait : Phase::kRecvWait, t.t0, t.t1);
    if (t.h2d > 0) trace_->add(Phase::kH2d, t.t1, t.t1 + t.h2d);
    trace_->add(Phase::kCompute, t.t1 + t.h2d, t.t2 - t.d2h);
    if (t.d2h > 0) trace_->add(Phase::kD2h, t.t2 - t.d2h, t.t2);
  }

  // Posts the send of batch i (after waiting for the older of two sends in flight); sets t3.
  void send(int64_t i, at::Tensor& output, Times& t) {
    while (sends_.size() >= 2) {
      sends_.front().transfer.wait();
      if (trace_) trace_->set_end(sends_.front().event, now_s());
      sends_.pop_front();
    }
    t.t3 = now_s();
    // A board that returns another dtype than the receiver's buffers would garble the batch.
    if (timing_.error.empty() && output.scalar_type() != options_.wire_dtype) {
      timing_.error =
          fmt::format("board returned {} for the wire format {} at batch {}",
                      c10::toString(output.scalar_type()), c10::toString(options_.wire_dtype), i);
      if (!zeros_.defined()) zeros_ = at::zeros(output_shape_, options_.wire_dtype);
      output = zeros_;
    }
    sends_.push_back({output, Transfer{}, -1});
    sends_.back().transfer.isend(payload_of(output), me_ + 1, comm_);
    if (trace_) {
      trace_->add(Phase::kSendWait, t.t2, t.t3);
      sends_.back().event = trace_->add(Phase::kSend, t.t3, t.t3);
    }
  }

  // Last rank: the output to the caller, and a credit to rank 0.
  void deliver(int64_t i, const at::Tensor& output) {
    if (on_output_) on_output_(i, output);
    if (n_ <= 1 || i + window_ >= total_) return;
    credit_reqs_.emplace_back();
    credit_values_.push_back(i);
    mpi::check(MPI_Isend(&credit_values_.back(), 1, MPI_INT64_T, 0, kCreditTag, comm_,
                         &credit_reqs_.back()),
               "MPI_Isend(credit)");
    // Credits are tiny and complete at once in practice; reap them so the vector stays short.
    int flag = 0;
    mpi::check(MPI_Testall(static_cast<int>(credit_reqs_.size()), credit_reqs_.data(), &flag,
                           MPI_STATUSES_IGNORE),
               "MPI_Testall");
    if (flag) credit_reqs_.clear(), credit_values_.clear();
  }

  void record(const at::Tensor& input, const at::Tensor& output, const Times& t) {
    timing_.compute_s.push_back(t.t2 - t.t1 - t.h2d - t.d2h);
    if (options_.pacing.active() || t.phases) {
      timing_.h2d_s.push_back(t.h2d);
      timing_.d2h_s.push_back(t.d2h);
    }
    timing_.recv_wait_s.push_back(first_ ? 0.0 : t.t1 - t.t0);
    timing_.send_wait_s.push_back(t.t3 - t.t2);
    if (!first_) timing_.bytes_received += input.nbytes();
    if (!last_) timing_.bytes_sent += output.nbytes();
    if (first_) timing_.start_s.push_back(t.t1 + offset_);
    if (last_) timing_.end_s.push_back(now_s() + offset_);
  }

  // The end of a send is when this rank sees it complete: polled around each compute.
  void poll_sends(double now) {
    for (auto& s : sends_)
      if (s.event >= 0 && s.transfer.test()) trace_->set_end(s.event, now), s.event = -1;
  }

  StageTiming finish() {
    // Send waits after the last batch belong to the last measured batch.
    double t = now_s();
    for (auto& s : sends_) {
      s.transfer.wait();
      if (trace_) trace_->set_end(s.event, now_s());
    }
    if (!timing_.send_wait_s.empty()) timing_.send_wait_s.back() += now_s() - t;
    if (trace_) trace_->shift(first_event_, offset_);
    if (auto e = board_.stop_energy_window()) timing_.board_energy_j = *e;
    if (!credit_reqs_.empty())
      mpi::check(MPI_Waitall(static_cast<int>(credit_reqs_.size()), credit_reqs_.data(),
                             MPI_STATUSES_IGNORE),
                 "MPI_Waitall(credit)");
    return timing_;
  }

  backends::Board& board_;
  const std::vector<int64_t>& output_shape_;
  const std::vector<at::Tensor>& input_pool_;
  const std::function<void(int64_t, const at::Tensor&)>& on_output_;
  const PipelineOptions& options_;
  MPI_Comm comm_;
  const int me_, n_;
  const bool first_, last_;
  const int64_t warm_, total_, window_;
  double offset_ = 0;
  StageTiming timing_;
  at::Tensor recv_buf_[2];
  Transfer recv_[2];
  // Outputs stay alive until their sends complete; at most two sends in flight.
  struct Send {
    at::Tensor output;
    Transfer transfer;
    int64_t event = -1;  // its trace event, to end when the send is seen complete
  };
  std::deque<Send> sends_;
  TraceRecorder* trace_ = nullptr;
  size_t first_event_ = 0;
  at::Tensor zeros_;  // stands in for the output of a failed board
  // Credits: the last rank tells rank 0 when a batch is done.
  std::vector<MPI_Request> credit_reqs_;
  std::deque<int64_t> credit_values_;  // send buffers must stay untouched until completion
};

}  // namespace

StageTiming run_pipeline(backends::Board& board, const std::vector<int64_t>& input_shape,
                         const std::vector<int64_t>& output_shape,
                         const std::vector<at::Tensor>& input_pool,
                         const std::function<void(int64_t, const at::Tensor&)>& on_output,
                         const PipelineOptions& options, MPI_Comm comm) {
  const int me = mpi::rank(comm), n = mpi::size(comm);
  mpi::StallScope stall(fmt::format("the pipeline (stage {}: {})", me, StageLoop::peers(me, n)));
  return StageLoop(board, input_shape, output_shape, input_pool, on_output, options, comm).run();
}

}  // namespace quilt::harness
