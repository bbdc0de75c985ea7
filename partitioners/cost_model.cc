#include "partitioners/cost_model.h"

#include "common/autoencoder_rate.h"
#include "partitioners/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace quilt::partitioners {

namespace {

constexpr double kGiga = 1e9;

void require(bool ok, const std::string& what, const char* key, double value, const char* valid) {
  if (!ok) throw PartitionError(fmt::format("{}: {} = {} is invalid; {}", what, key, value, valid));
}

}  // namespace

void validate(const BoardProfile& b, const std::string& what_in) {
  const std::string what = fmt::format("{} '{}'", what_in, b.name);
  require(std::isfinite(b.peak_flops) && b.peak_flops > 0, what, "peak_flops", b.peak_flops,
          "it must be finite and > 0 FLOP/s");
  require(b.efficiency > 0 && b.efficiency <= 1, what, "efficiency", b.efficiency,
          "it must be in (0, 1]");
  require(std::isfinite(b.overhead_s) && b.overhead_s >= 0, what, "overhead_s", b.overhead_s,
          "it must be finite and >= 0");
  const char* bw = "it must be > 0 GB/s (inf means free)";
  require(b.h2d_gbps > 0, what, "h2d_gbps", b.h2d_gbps, bw);
  require(b.d2h_gbps > 0, what, "d2h_gbps", b.d2h_gbps, bw);
  require(b.mpi_gbps > 0, what, "mpi_gbps", b.mpi_gbps, bw);
  require(std::isfinite(b.link_latency_s) && b.link_latency_s >= 0, what, "link_latency_s",
          b.link_latency_s, "it must be finite and >= 0");
  require(std::isfinite(b.mpi_latency_s) && b.mpi_latency_s >= 0, what, "mpi_latency_s",
          b.mpi_latency_s, "it must be finite and >= 0");
}

void validate(const CostOptions& o) {
  if (o.batch < 1) {
    throw PartitionError(fmt::format("batch = {} is invalid; it must be >= 1", o.batch));
  }
  if (!common::valid_rate(o.rate)) {
    throw PartitionError(fmt::format(
        "autoencoder rate R = {} is invalid; it must be finite and >= 1 (1 = no autoencoder)",
        o.rate));
  }
  if (!common::valid_kernel(o.kernel)) {
    throw PartitionError(
        fmt::format("autoencoder kernel = {} is invalid; it must be odd and >= 1", o.kernel));
  }
  if (o.element_bytes != 1 && o.element_bytes != 2 && o.element_bytes != 4) {
    throw PartitionError(
        fmt::format("element_bytes = {} is invalid; it must be 4 (fp32), 2 (bf16) or 1 (int8)",
                    o.element_bytes));
  }
}

int64_t autoencoder_flops(const Shape& shape, double rate, int64_t kernel) {
  assert(shape.size() >= 1 && shape.size() <= 3);
  if (rate == 1.0) return 0;
  if (shape.size() == 2) {  // {tokens, features}: Linear over the features of every token
    const int64_t f = shape[1], code = encoded_channels(f, rate);
    return 2 * f * code * shape[0];
  }
  const int64_t c = shape[0], code = encoded_channels(c, rate);
  if (shape.size() == 1) return 2 * c * code;
  return 2 * c * code * kernel * kernel * shape[1] * shape[2];
}

int64_t wire_bytes(const std::vector<CrossingTensor>& tensors, double rate, int64_t element_bytes) {
  int64_t bytes = 0;
  for (const CrossingTensor& t : tensors) {
    const int64_t n = numel(t.shape);
    const int64_t c = t.shape.size() == 2 ? t.shape[1] : t.shape[0];  // the coded dimension
    bytes += element_bytes * (rate == 1.0 ? n : n / c * encoded_channels(c, rate));
  }
  return bytes;
}

double transfer_s(double bytes, double gbps, double latency_s) {
  if (bytes == 0) return 0;
  return latency_s + bytes / (gbps * kGiga);
}

double compute_s(const BoardProfile& board, double flops, int64_t batch) {
  return static_cast<double>(batch) * flops / (board.peak_flops * board.efficiency) +
         board.overhead_s;
}

CostModel::CostModel(ModelProfile model, std::vector<BoardProfile> boards, int64_t stages,
                     const CostOptions& options)
    : model_(std::move(model)), boards_(std::move(boards)), options_(options) {
  validate(model_);
  validate(options_);
  if (stages < 1) {
    throw PartitionError(fmt::format("stages k = {} is invalid; it must be >= 1", stages));
  }
  if (boards_.size() == 1 && stages > 1) boards_.resize(stages, boards_[0]);
  if (static_cast<int64_t>(boards_.size()) != stages) {
    throw PartitionError(fmt::format(
        "{} board profiles for {} stages: give one per stage (rank), or a single one for all",
        boards_.size(), stages));
  }
  for (int64_t s = 0; s < stages; ++s) validate(boards_[s], fmt::format("board of stage {}", s));

  n_ = static_cast<int64_t>(model_.layers.size());
  k_ = stages;
  const double batch = static_cast<double>(options_.batch);
  const auto& L = model_.layers;

  allowed_.assign(n_ + 1, false);
  wire_bytes_.assign(n_ + 1, 0);
  ae_flops_.assign(n_ + 1, 0);
  flops_prefix_.assign(n_ + 1, 0);
  for (int64_t b = 1; b <= n_; ++b) flops_prefix_[b] = flops_prefix_[b - 1] + L[b - 1].flops;
  for (int64_t b = 1; b < n_; ++b) {
    const LayerProfile& l = L[b - 1];
    allowed_[b] = l.cut_allowed;
    wire_bytes_[b] = wire_bytes(l.crossing, options_.rate, options_.element_bytes);
    for (const CrossingTensor& t : l.crossing) {
      ae_flops_[b] += autoencoder_flops(t.shape, options_.rate, options_.kernel);
    }
  }

  const size_t size = static_cast<size_t>(k_ * (n_ + 1));
  prefix_s_.assign(size, 0);
  dec_s_.assign(size, 0);
  enc_s_.assign(size, 0);
  h2d_s_.assign(size, 0);
  d2h_s_.assign(size, 0);
  mpi_s_.assign(size, 0);
  for (int64_t s = 0; s < k_; ++s) {
    const BoardProfile& bd = boards_[s];
    const double rate_flops = bd.peak_flops * bd.efficiency;
    for (int64_t b = 1; b <= n_; ++b) {
      const LayerProfile& l = L[b - 1];
      const auto it = l.measured_s.find(bd.name);
      const double t =
          it != l.measured_s.end() ? it->second : static_cast<double>(l.flops) / rate_flops;
      prefix_s_[at(s, b)] = prefix_s_[at(s, b - 1)] + t;
    }
    for (int64_t b = 0; b <= n_; ++b) {
      const double ae = static_cast<double>(ae_flops_[b]) / rate_flops;
      dec_s_[at(s, b)] = ae;
      enc_s_[at(s, b)] = ae;
      const double in_bytes =
          batch * static_cast<double>(b == 0 ? model_.input_bytes : wire_bytes_[b]);
      const double out_bytes =
          batch * static_cast<double>(b == n_ ? L.back().out_bytes : wire_bytes_[b]);
      h2d_s_[at(s, b)] = transfer_s(in_bytes, bd.h2d_gbps, bd.link_latency_s);
      d2h_s_[at(s, b)] = transfer_s(out_bytes, bd.d2h_gbps, bd.link_latency_s);
      mpi_s_[at(s, b)] = b == n_ ? 0.0 : transfer_s(out_bytes, bd.mpi_gbps, bd.mpi_latency_s);
    }
  }
}

// exec_s(), exec_lower_bound_s() and stage() must do the same floating-point operations in the
// same order: the search compares their results bit for bit with those of the brute force.
double CostModel::exec_s(int64_t s, int64_t a, int64_t b) const {
  assert(0 <= s && s < k_ && 0 <= a && a < b && b <= n_);
  const double batch = static_cast<double>(options_.batch);
  const double layers = batch * (prefix_s_[at(s, b)] - prefix_s_[at(s, a)]);
  const double ae = batch * (dec_s_[at(s, a)] + enc_s_[at(s, b)]);
  const double compute = (layers + ae) + boards_[s].overhead_s;
  const double comm = (h2d_s_[at(s, a)] + d2h_s_[at(s, b)]) + mpi_s_[at(s, b)];
  return compute + comm;
}

double CostModel::exec_lower_bound_s(int64_t s, int64_t a, int64_t b) const {
  const double batch = static_cast<double>(options_.batch);
  // Rounding is monotone: adding the (non-negative) autoencoder and transfer terms can only keep
  // or raise the value, so this never exceeds exec_s().
  return batch * (prefix_s_[at(s, b)] - prefix_s_[at(s, a)]) + boards_[s].overhead_s;
}

StageCost CostModel::stage(int64_t s, int64_t a, int64_t b) const {
  assert(0 <= s && s < k_ && 0 <= a && a < b && b <= n_);
  const double batch = static_cast<double>(options_.batch);
  StageCost c;
  c.stage = s;
  c.board = boards_[s].name;
  c.first_layer = a;
  c.end_layer = b;
  c.flops = flops_prefix_[b] - flops_prefix_[a];
  c.ae_flops = ae_flops_[a] + ae_flops_[b];
  c.in_bytes = a == 0 ? model_.input_bytes : wire_bytes_[a];
  c.out_bytes = b == n_ ? model_.layers.back().out_bytes : wire_bytes_[b];
  c.layers_s = batch * (prefix_s_[at(s, b)] - prefix_s_[at(s, a)]);
  c.ae_s = batch * (dec_s_[at(s, a)] + enc_s_[at(s, b)]);
  c.overhead_s = boards_[s].overhead_s;
  c.compute_s = (c.layers_s + c.ae_s) + c.overhead_s;
  c.h2d_s = h2d_s_[at(s, a)];
  c.d2h_s = d2h_s_[at(s, b)];
  c.mpi_s = mpi_s_[at(s, b)];
  c.comm_s = (c.h2d_s + c.d2h_s) + c.mpi_s;
  c.exec_s = c.compute_s + c.comm_s;
  return c;
}

CalibrationResult calibrate(const BoardProfile& board,
                            const std::vector<CalibrationSample>& samples) {
  if (!std::isfinite(board.peak_flops) || board.peak_flops <= 0) {
    throw PartitionError(fmt::format(
        "cannot calibrate board '{}': peak_flops = {} is invalid; it must be finite and > 0",
        board.name, board.peak_flops));
  }
  const size_t m = samples.size();
  if (m < 2) {
    throw PartitionError(fmt::format(
        "cannot calibrate board '{}' from {} sample(s): fitting efficiency and overhead needs at "
        "least 2 (flops, measured_s) samples at different FLOPs",
        board.name, m));
  }
  double mean_f = 0, mean_t = 0;
  for (size_t i = 0; i < m; ++i) {
    const CalibrationSample& x = samples[i];
    if (!std::isfinite(x.flops) || x.flops < 0 || !std::isfinite(x.measured_s) ||
        x.measured_s <= 0) {
      throw PartitionError(fmt::format(
          "cannot calibrate board '{}': sample {} (flops = {}, measured_s = {}) is invalid; flops "
          "must be finite and >= 0, measured_s finite and > 0",
          board.name, i, x.flops, x.measured_s));
    }
    mean_f += x.flops;
    mean_t += x.measured_s;
  }
  mean_f /= static_cast<double>(m);
  mean_t /= static_cast<double>(m);
  double sxx = 0, sxy = 0, sff = 0, sft = 0;
  for (const CalibrationSample& x : samples) {
    sxx += (x.flops - mean_f) * (x.flops - mean_f);
    sxy += (x.flops - mean_f) * (x.measured_s - mean_t);
    sff += x.flops * x.flops;
    sft += x.flops * x.measured_s;
  }
  if (sxx <= 1e-20 * sff || sxx == 0) {
    throw PartitionError(fmt::format(
        "cannot calibrate board '{}': all {} samples have the same FLOPs ({}), so efficiency and "
        "overhead cannot be told apart; measure stages of different sizes",
        board.name, m, samples[0].flops));
  }
  double slope = sxy / sxx;  // seconds per FLOP
  double overhead = mean_t - slope * mean_f;
  if (overhead < 0) {
    slope = sft / sff;
    overhead = 0;
  }
  if (!(slope > 0) || !std::isfinite(slope)) {
    throw PartitionError(fmt::format(
        "cannot calibrate board '{}': the measured time does not grow with FLOPs (fitted slope "
        "{} s/FLOP), which would mean a negative or infinite efficiency; check the samples",
        board.name, slope));
  }
  const double efficiency = 1.0 / (slope * board.peak_flops);
  if (efficiency > 1) {
    throw PartitionError(fmt::format(
        "cannot calibrate board '{}': the fitted efficiency {:.4g} exceeds 1, i.e. the board ran "
        "faster than peak_flops = {:.4g} FLOP/s allows; check peak_flops or the samples",
        board.name, efficiency, board.peak_flops));
  }
  CalibrationResult r;
  r.board = board;
  r.board.efficiency = efficiency;
  r.board.overhead_s = overhead;
  r.samples = static_cast<int64_t>(m);
  double ss_res = 0, ss_tot = 0, rel = 0;
  for (const CalibrationSample& x : samples) {
    const double pred = slope * x.flops + overhead;
    ss_res += (pred - x.measured_s) * (pred - x.measured_s);
    ss_tot += (x.measured_s - mean_t) * (x.measured_s - mean_t);
    rel += std::abs(pred - x.measured_s) / x.measured_s;
  }
  r.mean_relative_error = rel / static_cast<double>(m);
  r.r_squared = ss_tot > 0 ? 1.0 - ss_res / ss_tot : (ss_res == 0 ? 1.0 : 0.0);
  return r;
}

}  // namespace quilt::partitioners
