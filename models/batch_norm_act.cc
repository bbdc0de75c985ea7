#include "models/batch_norm_act.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace quilt::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A channels-last tensor {N, C, H, W} is a row-major matrix [N*H*W rows, C]; every kernel below
// walks its rows and keeps one accumulator per channel. Sums run in float over blocks of
// kBlockRows rows, then in double across blocks and threads.
constexpr int64_t kBlockRows = 64;

// Rows per parallel chunk: about 16 K values, so the small maps stay on one thread.
int64_t grain_rows(int64_t channels) {
  return std::max<int64_t>(kBlockRows, (int64_t{1} << 14) / channels);
}

// Calls fn with the kernels' group count (see below) as a compile-time constant.
template <typename Fn>
void with_channels(int64_t channels, Fn&& fn) {
  if (channels % 4 != 0 || channels / 4 > 128) return fn(std::integral_constant<int64_t, -1>{});
  switch (channels / 4) {
    case 2:
      return fn(std::integral_constant<int64_t, 2>{});
    case 4:
      return fn(std::integral_constant<int64_t, 4>{});
    case 8:
      return fn(std::integral_constant<int64_t, 8>{});
    case 16:
      return fn(std::integral_constant<int64_t, 16>{});
    case 32:
      return fn(std::integral_constant<int64_t, 32>{});
    case 64:
      return fn(std::integral_constant<int64_t, 64>{});
    default:
      return fn(std::integral_constant<int64_t, 0>{});
  }
}

// Per-thread partial sums of `terms` per-channel quantities, added up in thread order.
class Partials {
 public:
  Partials(int64_t channels, int64_t terms)
      : channels_(channels),
        terms_(terms),
        values_(static_cast<size_t>(at::get_num_threads() * channels * terms), 0.0) {}
  /// This thread's terms x channels accumulators (valid inside at::parallel_for).
  double* mine() { return values_.data() + at::get_thread_num() * channels_ * terms_; }
  /// Term `t` summed over the threads.
  std::vector<double> total(int64_t t) const {
    std::vector<double> out(static_cast<size_t>(channels_), 0.0);
    const int64_t threads = static_cast<int64_t>(values_.size()) / (channels_ * terms_);
    for (int64_t th = 0; th < threads; ++th) {
      const double* v = values_.data() + (th * terms_ + t) * channels_;
      for (int64_t c = 0; c < channels_; ++c) out[c] += v[c];
    }
    return out;
  }

 private:
  int64_t channels_, terms_;
  std::vector<double> values_;
};

// Kernels over rows [begin, end) of the [rows, C] matrices. Template argument G: C / 4 groups of
// four channels as one vector each, fixed at compile time for the counts ResNets use (the loops
// over groups unroll and the accumulators stay in registers); 0 for C a multiple of 4 read at run
// time; -1 for any other C (scalar loops). The vector type is GCC's, one SSE register (baseline
// x86-64): wider ones lower their compare-and-select to scalar code there.
typedef float f4 __attribute__((vector_size(16)));
constexpr int64_t kLanes = 4;
constexpr int64_t kMaxGroups = 128;  // vector path up to 512 channels

inline f4 load4(const float* p) {
  f4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f4 v) { std::memcpy(p, &v, sizeof v); }
inline void add_to(double* out, f4 v) {
  for (int l = 0; l < kLanes; ++l) out[l] += v[l];
}

// The gradient reaching bn's output: gy where the ReLU passed (zero where y <= 0, as
// threshold_backward), gy without a ReLU.
inline float masked(float gy, float y, bool relu) { return relu && y <= 0.0f ? 0.0f : gy; }
inline f4 masked(f4 gy, f4 y, bool relu) { return relu ? (y <= 0.0f ? f4{} : gy) : gy; }
// max(y, 0) that keeps NaN, as relu (clamp_min) does.
inline float relu_of(float y) { return y < 0.0f ? 0.0f : y; }
inline f4 relu_of(f4 y) { return y < 0.0f ? f4{} : y; }

// s1[c] += sum of (x - center[c]) and s2[c] += sum of its square.
template <int64_t G>
void centered_sums(const float* __restrict x, int64_t channels, int64_t begin, int64_t end,
                   const float* __restrict center, double* __restrict s1, double* __restrict s2) {
  if constexpr (G < 0) {
    const int64_t C = channels;
    std::vector<float> acc(2 * C);
    float* __restrict a1 = acc.data();
    float* __restrict a2 = a1 + C;
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t r = r0, r1 = std::min(end, r0 + kBlockRows); r < r1; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          const float d = x[r * C + c] - center[c];
          a1[c] += d;
          a2[c] += d * d;
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        s1[c] += a1[c];
        s2[c] += a2[c];
      }
    }
  } else {
    const int64_t n = G > 0 ? G : channels / kLanes, C = kLanes * n;
    f4 cen[kMaxGroups], a1[kMaxGroups], a2[kMaxGroups];
    for (int64_t g = 0; g < n; ++g) cen[g] = load4(center + kLanes * g);
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      for (int64_t g = 0; g < n; ++g) a1[g] = a2[g] = f4{};
      for (int64_t r = r0, r1 = std::min(end, r0 + kBlockRows); r < r1; ++r) {
        for (int64_t g = 0; g < n; ++g) {
          const f4 d = load4(x + r * C + kLanes * g) - cen[g];
          a1[g] += d;
          a2[g] += d * d;
        }
      }
      for (int64_t g = 0; g < n; ++g) {
        add_to(s1 + kLanes * g, a1[g]);
        add_to(s2 + kLanes * g, a2[g]);
      }
    }
  }
}

// y = x * scale + shift (+ res), then relu when asked.
template <int64_t G>
void normalize_rows(const float* __restrict x, const float* __restrict res, float* __restrict y,
                    int64_t channels, int64_t begin, int64_t end, const float* __restrict scale,
                    const float* __restrict shift, bool relu) {
  if constexpr (G < 0) {
    const int64_t C = channels;
    for (int64_t i = begin * C; i < end * C; i += C) {
      for (int64_t c = 0; c < C; ++c) {
        float v = x[i + c] * scale[c] + shift[c];
        if (res != nullptr) v += res[i + c];
        y[i + c] = relu ? relu_of(v) : v;
      }
    }
  } else {
    const int64_t n = G > 0 ? G : channels / kLanes, C = kLanes * n;
    f4 sc[kMaxGroups], sh[kMaxGroups];
    for (int64_t g = 0; g < n; ++g) {
      sc[g] = load4(scale + kLanes * g);
      sh[g] = load4(shift + kLanes * g);
    }
    for (int64_t i = begin * C; i < end * C; i += C) {
      for (int64_t g = 0; g < n; ++g) {
        f4 v = load4(x + i + kLanes * g) * sc[g] + sh[g];
        if (res != nullptr) v += load4(res + i + kLanes * g);
        store4(y + i + kLanes * g, relu ? relu_of(v) : v);
      }
    }
  }
}

// sg[c] += g, sgx[c] += g * (x - mean[c]), with g the gradient at bn's output (masked(gy, y));
// g is also written to g_out (the residual's gradient) when given.
template <int64_t G>
void gradient_sums(const float* __restrict gy, const float* __restrict y, const float* __restrict x,
                   float* __restrict g_out, int64_t channels, int64_t begin, int64_t end,
                   const float* __restrict mean, bool relu, double* __restrict sg,
                   double* __restrict sgx) {
  if constexpr (G < 0) {
    const int64_t C = channels;
    std::vector<float> acc(2 * C);
    float* __restrict a1 = acc.data();
    float* __restrict a2 = a1 + C;
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t i = r0 * C, i1 = std::min(end, r0 + kBlockRows) * C; i < i1; i += C) {
        for (int64_t c = 0; c < C; ++c) {
          const float g = masked(gy[i + c], y[i + c], relu);
          if (g_out != nullptr) g_out[i + c] = g;
          a1[c] += g;
          a2[c] += g * (x[i + c] - mean[c]);
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        sg[c] += a1[c];
        sgx[c] += a2[c];
      }
    }
  } else {
    const int64_t n = G > 0 ? G : channels / kLanes, C = kLanes * n;
    f4 mu[kMaxGroups], a1[kMaxGroups], a2[kMaxGroups];
    for (int64_t g = 0; g < n; ++g) mu[g] = load4(mean + kLanes * g);
    for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
      for (int64_t g = 0; g < n; ++g) a1[g] = a2[g] = f4{};
      for (int64_t i = r0 * C, i1 = std::min(end, r0 + kBlockRows) * C; i < i1; i += C) {
        for (int64_t g = 0; g < n; ++g) {
          const int64_t j = i + kLanes * g;
          const f4 v = masked(load4(gy + j), load4(y + j), relu);
          if (g_out != nullptr) store4(g_out + j, v);
          a1[g] += v;
          a2[g] += v * (load4(x + j) - mu[g]);
        }
      }
      for (int64_t g = 0; g < n; ++g) {
        add_to(sg + kLanes * g, a1[g]);
        add_to(sgx + kLanes * g, a2[g]);
      }
    }
  }
}

// dx = k * (g - a - (x - mean) * b), g as in gradient_sums (read from g_in when it was written
// there).
template <int64_t G>
void input_gradient(const float* __restrict gy, const float* __restrict y,
                    const float* __restrict g_in, const float* __restrict x, float* __restrict dx,
                    int64_t channels, int64_t begin, int64_t end, const float* __restrict mean,
                    const float* __restrict k, const float* __restrict a, const float* __restrict b,
                    bool relu) {
  if constexpr (G < 0) {
    const int64_t C = channels;
    for (int64_t i = begin * C; i < end * C; i += C) {
      for (int64_t c = 0; c < C; ++c) {
        const float g = g_in != nullptr ? g_in[i + c] : masked(gy[i + c], y[i + c], relu);
        dx[i + c] = k[c] * (g - a[c] - (x[i + c] - mean[c]) * b[c]);
      }
    }
  } else {
    const int64_t n = G > 0 ? G : channels / kLanes, C = kLanes * n;
    f4 mu[kMaxGroups], kk[kMaxGroups], aa[kMaxGroups], bb[kMaxGroups];
    for (int64_t g = 0; g < n; ++g) {
      mu[g] = load4(mean + kLanes * g);
      kk[g] = load4(k + kLanes * g);
      aa[g] = load4(a + kLanes * g);
      bb[g] = load4(b + kLanes * g);
    }
    for (int64_t i = begin * C; i < end * C; i += C) {
      for (int64_t g = 0; g < n; ++g) {
        const int64_t j = i + kLanes * g;
        const f4 v = g_in != nullptr ? load4(g_in + j) : masked(load4(gy + j), load4(y + j), relu);
        store4(dx + j, kk[g] * (v - aa[g] - (load4(x + j) - mu[g]) * bb[g]));
      }
    }
  }
}

// relu(batch_norm(x) + residual) in training; inputs as batch_norm_act_is_fused() requires.
// (The residual is an argument of its own struct: autograd's apply() takes no undefined tensors.)
struct BatchNormAct {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& residual, torch::Tensor running_mean,
                               torch::Tensor running_var, double factor, double eps, bool relu) {
    const int64_t C = x.size(1), rows = x.numel() / C;
    auto y = torch::empty_like(x, torch::MemoryFormat::ChannelsLast);
    auto mean_t = torch::empty({C}, x.options());
    auto invstd_t = torch::empty({C}, x.options());
    const float* xp = x.data_ptr<float>();
    const float* rp = residual.defined() ? residual.data_ptr<float>() : nullptr;
    float* yp = y.data_ptr<float>();
    float* mean = mean_t.data_ptr<float>();
    float* invstd = invstd_t.data_ptr<float>();
    const float* w = weight.data_ptr<float>();
    const float* b = bias.data_ptr<float>();
    float* rm = running_mean.data_ptr<float>();
    float* rv = running_var.data_ptr<float>();
    const int64_t grain = grain_rows(C);

    with_channels(C, [&](auto k) {
      constexpr int64_t K = decltype(k)::value;
      // The mean, then the variance about it (two passes: no cancellation for large means).
      std::vector<float> zero(C, 0.0f);
      Partials first(C, 2);
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        double* s = first.mine();
        centered_sums<K>(xp, C, begin, end, zero.data(), s, s + C);
      });
      const std::vector<double> sum = first.total(0);
      for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(sum[c] / rows);
      Partials second(C, 2);
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        double* s = second.mine();
        centered_sums<K>(xp, C, begin, end, mean, s, s + C);
      });
      const std::vector<double> d1 = second.total(0), d2 = second.total(1);
      std::vector<float> scale(C), shift(C);
      for (int64_t c = 0; c < C; ++c) {
        const double m = static_cast<double>(mean[c]) + d1[c] / rows;  // corrected mean
        const double var = std::max(0.0, d2[c] / rows - (d1[c] / rows) * (d1[c] / rows));
        const double is = 1.0 / std::sqrt(var + eps);
        mean[c] = static_cast<float>(m);
        invstd[c] = static_cast<float>(is);
        scale[c] = static_cast<float>(w[c] * is);
        shift[c] = static_cast<float>(b[c] - m * w[c] * is);
        rm[c] = static_cast<float>((1.0 - factor) * rm[c] + factor * m);
        rv[c] = static_cast<float>((1.0 - factor) * rv[c] + factor * var * rows / (rows - 1));
      }
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        normalize_rows<K>(xp, rp, yp, C, begin, end, scale.data(), shift.data(), relu);
      });
    });

    ctx->save_for_backward({x, relu ? y : torch::Tensor(), weight, mean_t, invstd_t});
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["residual"] = residual.defined();
    return {y};
  }

  // Gradients for x, weight, bias and the residual (undefined without one).
  static variable_list backward(AutogradContext* ctx, const variable_list& grads) {
    auto saved = ctx->get_saved_variables();
    const bool relu = ctx->saved_data["relu"].toBool();
    const bool has_residual = ctx->saved_data["residual"].toBool();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& y = saved[1];
    const torch::Tensor& weight = saved[2];
    const int64_t C = x.size(1), rows = x.numel() / C;
    if (!grads[0].defined()) return variable_list(4);
    const torch::Tensor gy = grads[0].contiguous(torch::MemoryFormat::ChannelsLast);

    auto dx = torch::empty_like(x, torch::MemoryFormat::ChannelsLast);
    auto dres =
        has_residual ? torch::empty_like(x, torch::MemoryFormat::ChannelsLast) : torch::Tensor();
    auto dw = torch::empty({C}, x.options());
    auto db = torch::empty({C}, x.options());
    const float* gyp = gy.data_ptr<float>();
    const float* yp = relu ? y.data_ptr<float>() : gyp;  // unread without a ReLU
    const float* xp = x.data_ptr<float>();
    float* gp = has_residual ? dres.data_ptr<float>() : nullptr;
    float* dxp = dx.data_ptr<float>();
    const float* mean = saved[3].data_ptr<float>();
    const float* invstd = saved[4].data_ptr<float>();
    const float* w = weight.data_ptr<float>();
    float* dwp = dw.data_ptr<float>();
    float* dbp = db.data_ptr<float>();
    const int64_t grain = grain_rows(C);

    with_channels(C, [&](auto kc) {
      constexpr int64_t K = decltype(kc)::value;
      Partials sums(C, 2);
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        double* s = sums.mine();
        gradient_sums<K>(gyp, yp, xp, gp, C, begin, end, mean, relu, s, s + C);
      });
      const std::vector<double> sg = sums.total(0), sgx = sums.total(1);
      // dx = w * invstd * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean))).
      std::vector<float> k(C), a(C), b(C);
      for (int64_t c = 0; c < C; ++c) {
        const double is = invstd[c];
        dwp[c] = static_cast<float>(sgx[c] * is);
        dbp[c] = static_cast<float>(sg[c]);
        k[c] = static_cast<float>(w[c] * is);
        a[c] = static_cast<float>(sg[c] / rows);
        b[c] = static_cast<float>(is * is * sgx[c] / rows);
      }
      at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
        input_gradient<K>(gyp, yp, gp, xp, dxp, C, begin, end, mean, k.data(), a.data(), b.data(),
                          relu);
      });
    });
    return {dx, dw, db, dres};
  }
};

struct BatchNormActResidual : torch::autograd::Function<BatchNormActResidual> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& residual, torch::Tensor running_mean,
                               torch::Tensor running_var, double factor, double eps, bool relu) {
    return BatchNormAct::forward(ctx, x, weight, bias, residual, std::move(running_mean),
                                 std::move(running_var), factor, eps, relu);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = BatchNormAct::backward(ctx, grads);
    g.resize(9);  // running_mean, running_var, factor, eps, relu: none
    return g;
  }
};

struct BatchNormActPlain : torch::autograd::Function<BatchNormActPlain> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias,
                               torch::Tensor running_mean, torch::Tensor running_var, double factor,
                               double eps, bool relu) {
    return BatchNormAct::forward(ctx, x, weight, bias, torch::Tensor(), std::move(running_mean),
                                 std::move(running_var), factor, eps, relu);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto g = BatchNormAct::backward(ctx, grads);
    g.resize(3);  // x, weight, bias
    g.resize(8);  // running_mean, running_var, factor, eps, relu: none
    return g;
  }
};

bool is_float_vector(const torch::Tensor& t, int64_t channels) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.dim() == 1 &&
         t.size(0) == channels && t.is_contiguous();
}

}  // namespace

bool batch_norm_act_is_fused(const torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                             const torch::Tensor& residual) {
  // A/B switch for benchmarks: QUILT_FUSED_BN=0 takes the module's operations everywhere.
  static const bool enabled = [] {
    const char* v = std::getenv("QUILT_FUSED_BN");
    return v == nullptr || std::string(v) != "0";
  }();
  const auto& o = bn.options;
  if (!enabled) return false;
  if (!bn.is_training() || !o.affine() || !o.track_running_stats()) return false;
  if (!x.defined() || !x.device().is_cpu() || x.scalar_type() != torch::kFloat || x.dim() != 4) {
    return false;
  }
  if (!x.is_contiguous(torch::MemoryFormat::ChannelsLast) || x.numel() <= x.size(1)) return false;
  const int64_t channels = x.size(1);
  if (!is_float_vector(bn.weight, channels) || !is_float_vector(bn.bias, channels) ||
      !is_float_vector(bn.running_mean, channels) || !is_float_vector(bn.running_var, channels)) {
    return false;
  }
  if (residual.defined() &&
      (residual.sizes() != x.sizes() || residual.scalar_type() != torch::kFloat ||
       !residual.device().is_cpu() || !residual.is_contiguous(torch::MemoryFormat::ChannelsLast))) {
    return false;
  }
  return !torch::jit::tracer::isTracing();
}

torch::Tensor batch_norm_act(torch::nn::BatchNorm2dImpl& bn, const torch::Tensor& x,
                             const torch::Tensor& residual, bool relu) {
  if (!batch_norm_act_is_fused(bn, x, residual)) {
    torch::Tensor out = bn.forward(x);
    if (residual.defined()) out += residual;
    return relu ? out.relu_() : out;
  }
  // As BatchNormImplBase::forward: count the batch; without a momentum, the cumulative average.
  double factor = bn.options.momentum().value_or(0.0);
  if (bn.num_batches_tracked.defined()) {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked += 1;
    if (!bn.options.momentum().has_value()) {
      factor = 1.0 / bn.num_batches_tracked.item<double>();
    }
  }
  if (residual.defined()) {
    return BatchNormActResidual::apply(x, bn.weight, bn.bias, residual, bn.running_mean,
                                       bn.running_var, factor, bn.options.eps(), relu)[0];
  }
  return BatchNormActPlain::apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, factor,
                                  bn.options.eps(), relu)[0];
}

}  // namespace quilt::models
