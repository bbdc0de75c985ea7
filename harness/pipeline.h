#pragma once
// The MPI pipeline runtime: rank r runs stage r on its board; activations travel rank to rank.
// Receives are posted before the stage computes (double buffering into two preallocated
// tensors), sends are non-blocking and go out from the output tensor's own memory, so transfers
// overlap compute and nothing is copied on the way. A credit window from the last rank back to
// rank 0 bounds the batches in flight, so latency is not inflated by unbounded queueing.

#include "backends/board.h"
#include "harness/trace.h"

#include <ATen/core/Tensor.h>
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace quilt::harness {

/// Pacing of a `dilated` run (harness/time_model.h): the wall time this rank's board must spend
/// per batch on each phase, already stretched by the dilation factor. The board runs at once;
/// the batch is then padded to h2d + compute + d2h from its start (one wait: the phases have no
/// real work of their own on the emulator, and each wait can wake up a scheduler tick late).
/// The recorded h2d/d2h are the paced ones; compute_s is the rest. All zero = unpaced.
struct Pacing {
  double h2d_s = 0, compute_s = 0, d2h_s = 0;
  bool active() const { return h2d_s > 0 || compute_s > 0 || d2h_s > 0; }
};

struct PipelineOptions {
  int64_t warmup_batches = 2;  ///< run first, not measured
  int64_t batches = 10;        ///< measured batches (>= 2)
  int window_batches = 0;      ///< batches in flight; 0 = 2 x number of ranks
  Pacing pacing;               ///< dilated runs only
  /// When set and enabled, every batch's phases are recorded into it (harness/trace.h), on
  /// rank 0's clock: measured batch i as batch `trace_batch_offset + i`, warm-up batches as
  /// -warmup_batches .. -1, all with repetition `trace_repetition`. Sends are then also tested
  /// for completion before and after each compute, so that their end is seen.
  TraceRecorder* trace = nullptr;
  int64_t trace_batch_offset = 0;
  int32_t trace_repetition = 0;
  /// The dtype of the tensors between stages (the wire format of boards.precision: float32,
  /// bfloat16, or uint8 codes for int8): receive buffers are of it. Rank 0's inputs and the
  /// last rank's outputs are float32.
  at::ScalarType wire_dtype = at::kFloat;
};

/// What one rank measured. Times in seconds; vectors have one entry per measured batch.
struct StageTiming {
  std::vector<double> compute_s, recv_wait_s, send_wait_s;
  /// The host->board and board->host phases per batch: paced runs, and boards that time their
  /// own transfers (Board::last_phase_times, e.g. XRT); empty otherwise.
  std::vector<double> h2d_s, d2h_s;
  /// Joules the board measured itself over the measured batches (Board::stop_energy_window);
  /// negative when the board gives no power reading.
  double board_energy_j = -1;
  /// Paced runs: measured batches whose real compute took longer than its paced time (the CPU
  /// did not keep up: the dilation factor is too small), or whose pacing ended more than
  /// 2% + 0.5 ms late (the process was not scheduled in time: a loaded machine).
  int64_t overruns = 0;
  int64_t bytes_sent = 0, bytes_received = 0;  ///< measured batches only
  std::vector<double> start_s;  ///< rank 0: when batch i entered the pipeline (rank 0's clock)
  std::vector<double> end_s;    ///< last rank: when batch i left it, on rank 0's clock
  double origin_s = 0;          ///< when the first batch began, on rank 0's clock
  /// Empty, or why this rank's board failed (exception or non-finite output) and at which
  /// batch. After a failure the rank keeps the protocol going with zero-filled outputs, so no
  /// peer waits forever; the caller marks the run failed.
  std::string error;
};

/// Runs warmup + measured batches through the pipeline. Every rank of `comm` calls it with its
/// own loaded board; stage r's input shape is `input_shape` and its output shape
/// `output_shape` ([batch, ...]; ranks > 0 allocate receive buffers from the first, a failed
/// board is replaced by zeros of the second). Rank 0 feeds `input_pool` cyclically (batch i
/// uses pool[i % n]); the last rank calls `on_output(i, output)` for every batch, warm-up
/// included. Blocks until the rank's part is done. A board that throws or returns non-finite
/// values does not stop the protocol: see StageTiming::error. Throws MpiError on an MPI failure
/// (then the caller must abort the job: peers would otherwise wait forever).
StageTiming run_pipeline(backends::Board& board, const std::vector<int64_t>& input_shape,
                         const std::vector<int64_t>& output_shape,
                         const std::vector<at::Tensor>& input_pool,
                         const std::function<void(int64_t, const at::Tensor&)>& on_output,
                         const PipelineOptions& options, MPI_Comm comm);

/// Offset to add to this rank's steady clock to get rank 0's, estimated by ping-pong (the
/// sample with the smallest round trip wins). Every rank calls it; rank 0 gets 0. Blocks.
double clock_offset_to_rank0(MPI_Comm comm, int rounds = 16);

/// Seconds on the steady clock (the clock all timestamps of a rank use).
double now_s();

}  // namespace quilt::harness
