#pragma once
// The Paleo-style cost model of QuiltNet §3.4: compute time linear in FLOPs with a calibrated
// efficiency and a per-invocation overhead, communication linear in bytes over a bandwidth plus a
// latency, per board; the autoencoder interposed at every cut is charged too.
//
// What one stage i of a k-stage pipeline (layers [first, end), on board i) costs for one batch of
// B samples, all in seconds:
//   layers_s   = B * sum over its layers of (measured_s[board] if present, else
//                flops / (peak_flops * efficiency))
//   ae_s       = B * (decoder FLOPs of the incoming cut + encoder FLOPs of the outgoing cut)
//                / (peak_flops * efficiency)          (zero at rate R = 1, no autoencoder)
//   compute_s  = layers_s + ae_s + overhead_s          (overhead once per stage invocation)
//   h2d_s      = transfer(B * in_bytes, h2d_gbps)   in_bytes: the model input for stage 0, else
//                                                    the wire bytes of the incoming cut
//   d2h_s      = transfer(B * out_bytes, d2h_gbps)  out_bytes: the last layer's output (logits)
//                                                    for stage k-1, else the outgoing wire bytes
//   mpi_s      = transfer(B * out_bytes, mpi_gbps, mpi_latency_s) for the hop to rank i+1,
//                charged to the SENDING stage with the sending board's MPI figures; 0 on the
//                last stage (its output stays on its host)
//   comm_s     = h2d_s + d2h_s + mpi_s
//   exec_s     = compute_s + comm_s
// where transfer(bytes, gbps, latency) = latency + bytes / (gbps * 1e9), and 0 for 0 bytes
// (host<->board transfers use link_latency_s). Wire bytes of a cut = sum over its crossing
// tensors of ceil(C/R) * H * W * 4 ({F}: ceil(F/R) * 4); the encoder of a {C, H, W} tensor is a
// kernel x kernel Conv2d C -> ceil(C/R) at H x W ("same" padding), 2 * C * ceil(C/R) * kernel^2 *
// H * W FLOPs; the decoder is the mirror image with the same FLOPs; {F} tensors use Linear
// layers, 2 * F * ceil(F/R) FLOPs each. Biases, activations and pooling are not counted (the
// models/ convention). Overlap of transfers with compute is NOT modelled: exec_s is the busy
// time of a stage, and the slowest stage bounds the pipeline's throughput.

#include "common/autoencoder_rate.h"
#include "partitioners/profile.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::partitioners {

/// One accelerator board (one MPI rank) as the cost model sees it. GB/s are 1e9 bytes/s.
struct BoardProfile {
  std::string name = "board";  ///< keys LayerProfile::measured_s
  double peak_flops = 0;       ///< FLOP/s at full utilisation; must be > 0 and finite
  double efficiency = 1.0;     ///< fraction of peak achieved, in (0, 1]
  double overhead_s = 0;       ///< fixed cost per stage invocation (per batch), >= 0
  double h2d_gbps = 9.2;       ///< host -> board bandwidth (the paper measured 9.2 GB/s)
  double d2h_gbps = 11.7;      ///< board -> host bandwidth (the paper measured 11.7 GB/s)
  double link_latency_s = 0;   ///< per host<->board transfer, >= 0
  double mpi_gbps = 12.5;      ///< this rank -> next rank (default: 100 Gb/s network)
  double mpi_latency_s = 0;    ///< per MPI message to the next rank, >= 0
};

/// Throws PartitionError unless peak_flops is finite and > 0, efficiency in (0, 1], bandwidths
/// > 0 (+inf means free), overhead and latencies finite and >= 0. `what` prefixes the message.
void validate(const BoardProfile& board, const std::string& what = "board");

/// How stages are costed: batch size and the autoencoder interposed at every cut.
struct CostOptions {
  int64_t batch = 1;   ///< samples per stage invocation, >= 1
  double rate = 1.0;   ///< autoencoder reduction rate R, finite and >= 1; 1 = no autoencoder
  int64_t kernel = 1;  ///< autoencoder kernel size for {C, H, W} tensors, odd and >= 1
  /// Bytes per element of the tensors crossing a cut (the boards' precision: 4 fp32, 2 bf16,
  /// 1 int8); the model's input and output stay float32.
  int64_t element_bytes = 4;
};

/// Throws PartitionError unless batch >= 1, rate finite and >= 1, kernel odd and >= 1,
/// element_bytes 1, 2 or 4.
void validate(const CostOptions& options);

// ceil(channels / rate), at least 1 (the rule of models::encoded_channels too). Requires
// channels >= 1 and rate >= 1: common/autoencoder_rate.h.
using common::encoded_channels;

/// FLOPs per sample of the encoder (equal to those of the decoder) for one crossing tensor of
/// shape {C, H, W}, {T, F} (Linear over F per token) or {F}; 0 when rate == 1 (no autoencoder).
int64_t autoencoder_flops(const Shape& shape, double rate, int64_t kernel);

/// Bytes per sample that cross a cut with these tensors, after the encoders, at `element_bytes`
/// per element (4 float32, 2 bf16, 1 int8).
int64_t wire_bytes(const std::vector<CrossingTensor>& tensors, double rate,
                   int64_t element_bytes = 4);

/// latency_s + bytes / (gbps * 1e9); 0 when bytes == 0.
double transfer_s(double bytes, double gbps, double latency_s);

/// What one stage costs for one batch (see the formulas at the top of this file). Byte and
/// FLOP counts are per sample; times are per batch, in seconds.
struct StageCost {
  int64_t stage = 0;
  std::string board;
  int64_t first_layer = 0;  ///< index of the stage's first layer
  int64_t end_layer = 0;    ///< one past its last layer
  int64_t flops = 0;        ///< of its layers, per sample
  int64_t ae_flops = 0;     ///< decoder of the incoming cut + encoder of the outgoing cut
  int64_t in_bytes = 0;     ///< arriving by H2D, per sample
  int64_t out_bytes = 0;    ///< leaving by D2H (and MPI unless last), per sample
  double layers_s = 0, ae_s = 0, overhead_s = 0, compute_s = 0;
  double h2d_s = 0, d2h_s = 0, mpi_s = 0, comm_s = 0;
  double exec_s = 0;  ///< compute_s + comm_s
};

/// The cost model for one model on a k-stage pipeline: stage i runs on boards[i]. Precomputes
/// per-board prefix sums so that any stage's cost is O(1). Immutable, cheap to query, safe to
/// share between threads.
class CostModel {
 public:
  /// Validates everything and throws PartitionError on a user mistake. `boards` has one profile
  /// per stage, or a single profile used by every stage. stages >= 1.
  CostModel(ModelProfile model, std::vector<BoardProfile> boards, int64_t stages,
            const CostOptions& options);

  int64_t layers() const { return n_; }
  int64_t stages() const { return k_; }
  const ModelProfile& model() const { return model_; }
  const CostOptions& options() const { return options_; }
  const BoardProfile& board(int64_t stage) const { return boards_[stage]; }

  /// Whether a cut may sit at boundary b (between layers b-1 and b), 1 <= b < layers().
  bool boundary_allowed(int64_t b) const { return allowed_[b]; }

  /// Cost of stage `stage` running layers [first, end), 0 <= first < end <= layers(). first == 0
  /// means it receives the model input; end == layers() means it produces the model output.
  StageCost stage(int64_t stage, int64_t first, int64_t end) const;

  /// stage(stage, first, end).exec_s, bit for bit, without building the breakdown.
  double exec_s(int64_t stage, int64_t first, int64_t end) const;

  /// layers_s + overhead_s of that stage: a lower bound of exec_s that never decreases as `end`
  /// grows (the search uses it to stop scanning longer stages).
  double exec_lower_bound_s(int64_t stage, int64_t first, int64_t end) const;

 private:
  size_t at(int64_t stage, int64_t boundary) const { return stage * (n_ + 1) + boundary; }

  ModelProfile model_;
  std::vector<BoardProfile> boards_;
  CostOptions options_;
  int64_t n_ = 0, k_ = 0;
  std::vector<bool> allowed_;                   // per boundary 0..n
  std::vector<int64_t> wire_bytes_, ae_flops_;  // per boundary (0 at 0 and n)
  std::vector<int64_t> flops_prefix_;           // per boundary
  // Per (stage, boundary), flattened: per-sample compute seconds before the boundary, decoder and
  // encoder seconds per sample at the boundary, and per-batch transfer seconds.
  std::vector<double> prefix_s_, dec_s_, enc_s_, h2d_s_, d2h_s_, mpi_s_;
};

/// Compute time of `flops` per sample on `board` for a batch: batch * flops / (peak_flops *
/// efficiency) + overhead_s. Does not validate.
double compute_s(const BoardProfile& board, double flops, int64_t batch);

/// One calibration point: a stage invocation that did `flops` of work and took `measured_s`.
struct CalibrationSample {
  double flops = 0;       ///< FLOPs of the invocation (whole batch), >= 0
  double measured_s = 0;  ///< measured seconds, > 0
};

/// A fitted board profile and how well the line fits.
struct CalibrationResult {
  BoardProfile board;              ///< the input board with efficiency and overhead_s fitted
  double mean_relative_error = 0;  ///< mean |predicted - measured| / measured
  double r_squared = 0;            ///< coefficient of determination of the fit
  int64_t samples = 0;
};

/// Fits time = flops / (peak_flops * efficiency) + overhead_s by least squares, keeping
/// board.peak_flops. A fit whose overhead comes out negative is redone through the origin
/// (overhead_s = 0, the physical constraint). Throws PartitionError for fewer than 2 samples,
/// invalid samples, all samples at the same FLOPs, a slope <= 0 (efficiency would be negative
/// or infinite), or a fitted efficiency above 1 (faster than peak_flops allows).
CalibrationResult calibrate(const BoardProfile& board,
                            const std::vector<CalibrationSample>& samples);

}  // namespace quilt::partitioners
