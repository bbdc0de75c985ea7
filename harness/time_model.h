#pragma once
// Time models of the emulator (boards.time_model in an experiment file):
//   measured  the wall clock of the real execution: the CPU is the accelerator;
//   dilated   real execution and real MPI, every modeled time of a board (host->board transfer,
//             compute, board->host transfer) paced to the board profile and stretched by one
//             dilation factor D chosen so that the CPU keeps up; every time is divided by D,
//             so results are in board time;
//   modeled   virtual time: the pipeline schedule is simulated from the board profile; tensors
//             still flow through the real MPI pipeline (a few batches) so outputs are checked.
// This header has no MPI and no LibTorch: the schedule simulation is a pure function.

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::harness {

/// What one stage's board does for one batch, in board time (seconds): the cost model's
/// host->board transfer, compute (layers, autoencoder, overhead) and board->host transfer, and
/// the MPI hop to the next rank (0 on the last stage).
struct BoardTimes {
  double h2d_s = 0, compute_s = 0, d2h_s = 0, mpi_s = 0;
  /// Busy time of the board per batch: h2d + compute + d2h.
  double busy_s() const { return h2d_s + compute_s + d2h_s; }
};

/// What the simulation gives one stage, over the measured batches (warm-up left out), with the
/// same meaning as the real pipeline's StageTiming (harness/pipeline.h).
struct SimulatedStage {
  std::vector<double> h2d_s, compute_s, d2h_s, recv_wait_s, send_wait_s;
  /// Every batch's schedule on this stage, warm-up included (warmup + batches entries), for the
  /// timeline: when the stage began waiting for the input, when it had it (the board starts),
  /// when the board finished, when the send was posted (after waiting for an earlier send) and
  /// when it arrived (last stage: sent_s = done_s).
  struct Batch {
    double wait_s = 0, ready_s = 0, done_s = 0, send_posted_s = 0, sent_s = 0;
  };
  std::vector<Batch> schedule;
  std::vector<double> start_s;  ///< stage 0: when batch i entered the pipeline
  std::vector<double> end_s;    ///< last stage: when batch i left it
};

/// Simulates the pipeline of harness/run_pipeline on virtual time, event by event, with the
/// same protocol: rank r takes batch i once it has arrived and its board is free; the board is
/// busy h2d + compute + d2h; the output goes to rank r+1 over a link of mpi_s per batch, at most
/// two sends in flight per rank (the third waits for the first), a transfer cannot complete
/// before the receiver has posted its receive (rank r+1 posts batch i's receive when batch i-1
/// has arrived: double buffering), one transfer at a time per link; rank 0 starts batch i only
/// after batch i - window has left the last stage (credits; window 0 = 2 x stages). Returns
/// one entry per stage. Requires stages >= 1, batches >= 1, warmup >= 0, finite times >= 0.
std::vector<SimulatedStage> simulate_pipeline(const std::vector<BoardTimes>& stages, int64_t warmup,
                                              int64_t batches, int64_t window = 0);

/// Energy of one board over a measured window, in joules: busy power while busy, idle power
/// for the rest of the window, plus link energy for the bytes moved between host and board.
/// Negative (unavailable) when the busy or idle power is unknown (negative).
double board_energy_j(double busy_s, double window_s, double power_busy_w, double power_idle_w,
                      double link_bytes, double link_energy_j_per_byte);

}  // namespace quilt::harness
