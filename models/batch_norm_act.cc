#include "models/batch_norm_act.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
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

// The kernels' view of the channels: L::Vec is the value one step handles (float: one channel, any
// count; f4: four channels, for counts that are multiples of 4) and L::kGroups the number of
// steps per row when fixed at compile time (0: read at run time).
template <typename V, int64_t G>
struct Layout {
  using Vec = V;
  static constexpr int64_t kGroups = G;
};

// Calls fn with the Layout of `channels`: fixed counts for those ResNets use (the loops over a
// row unroll and the accumulators stay in registers).
template <typename Fn>
void with_channels(int64_t channels, Fn&& fn);

// Two per-channel sums over rows [0, rows), in parallel chunks: kernel(begin, end, s1, s2) adds
// the chunk's into this thread's accumulators; the threads' are added up in thread order.
template <typename Kernel>
std::pair<std::vector<double>, std::vector<double>> sum_rows(int64_t rows, int64_t channels,
                                                             Kernel&& kernel) {
  const int64_t threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads * 2 * channels), 0.0);
  at::parallel_for(0, rows, grain_rows(channels), [&](int64_t begin, int64_t end) {
    double* s = partial.data() + at::get_thread_num() * 2 * channels;
    kernel(begin, end, s, s + channels);
  });
  std::vector<double> s1(static_cast<size_t>(channels), 0.0), s2 = s1;
  for (int64_t t = 0; t < threads; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      s1[c] += partial[(2 * t) * channels + c];
      s2[c] += partial[(2 * t + 1) * channels + c];
    }
  }
  return {std::move(s1), std::move(s2)};
}

// Kernels over rows [begin, end) of the [rows, C] matrices. The vector type is GCC's, one SSE
// register (baseline x86-64): wider ones lower their compare-and-select to scalar code there.
typedef float f4 __attribute__((vector_size(16)));

template <typename V>
constexpr int64_t kWidth = static_cast<int64_t>(sizeof(V) / sizeof(float));

template <typename V>
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
inline void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
inline void add_to(double* out, float v) { out[0] += v; }
inline void add_to(double* out, f4 v) {
  for (int64_t l = 0; l < kWidth<f4>; ++l) out[l] += v[l];
}

// The gradient reaching bn's output: gy where the ReLU passed (zero where y <= 0, as
// threshold_backward), gy without a ReLU.
template <typename V>
inline V masked(V gy, V y, bool relu) {
  return relu ? (y <= 0.0f ? V{} : gy) : gy;
}
// max(y, 0) that keeps NaN, as relu (clamp_min) does.
template <typename V>
inline V relu_of(V y) {
  return y < 0.0f ? V{} : y;
}

// One value per step of a row: on the stack for a compile-time count, else on the heap.
template <typename V, int64_t G>
class Slots {
 public:
  explicit Slots(int64_t n) : heap_(G > 0 ? 0 : n) {}
  V& operator[](int64_t i) {
    if constexpr (G > 0) {
      return fixed_[i];
    } else {
      return heap_[i];
    }
  }
  void load_from(const float* p, int64_t n) {
    for (int64_t g = 0; g < n; ++g) (*this)[g] = load<V>(p + kWidth<V> * g);
  }

 private:
  std::array<V, (G > 0 ? G : 1)> fixed_{};
  std::vector<V> heap_;
};

// Steps per row and the row length (C) of a kernel on Layout L.
template <typename L>
std::pair<int64_t, int64_t> steps_of(int64_t channels) {
  const int64_t n = L::kGroups > 0 ? L::kGroups : channels / kWidth<typename L::Vec>;
  return {n, n * kWidth<typename L::Vec>};
}

// Two per-channel sums over rows [begin, end): s1 += t1, s2 += t2 where term(j, g, t1, t2) adds
// the terms of the step at element j (step g of its row). In float over blocks of kBlockRows
// rows, in double across blocks.
template <typename L, typename Term>
void block_sums(int64_t channels, int64_t begin, int64_t end, double* __restrict s1,
                double* __restrict s2, Term&& term) {
  using V = typename L::Vec;
  const auto [n, C] = steps_of<L>(channels);
  Slots<V, L::kGroups> a1(n), a2(n);
  for (int64_t r0 = begin; r0 < end; r0 += kBlockRows) {
    for (int64_t g = 0; g < n; ++g) a1[g] = a2[g] = V{};
    for (int64_t i = r0 * C, i1 = std::min(end, r0 + kBlockRows) * C; i < i1; i += C) {
      for (int64_t g = 0; g < n; ++g) term(i + kWidth<V> * g, g, a1[g], a2[g]);
    }
    for (int64_t g = 0; g < n; ++g) {
      add_to(s1 + kWidth<V> * g, a1[g]);
      add_to(s2 + kWidth<V> * g, a2[g]);
    }
  }
}

// s1[c] += sum of (x - center[c]) and s2[c] += sum of its square.
template <typename L>
void centered_sums(const float* __restrict x, int64_t channels, int64_t begin, int64_t end,
                   const float* __restrict center, double* __restrict s1, double* __restrict s2) {
  using V = typename L::Vec;
  const int64_t n = steps_of<L>(channels).first;
  Slots<V, L::kGroups> cen(n);
  cen.load_from(center, n);
  block_sums<L>(channels, begin, end, s1, s2, [&](int64_t j, int64_t g, V& a1, V& a2) {
    const V d = load<V>(x + j) - cen[g];
    a1 += d;
    a2 += d * d;
  });
}

// y = x * scale + shift (+ res), then relu when asked.
template <typename L>
void normalize_rows(const float* __restrict x, const float* __restrict res, float* __restrict y,
                    int64_t channels, int64_t begin, int64_t end, const float* __restrict scale,
                    const float* __restrict shift, bool relu) {
  using V = typename L::Vec;
  const auto [n, C] = steps_of<L>(channels);
  Slots<V, L::kGroups> sc(n), sh(n);
  sc.load_from(scale, n);
  sh.load_from(shift, n);
  for (int64_t i = begin * C; i < end * C; i += C) {
    for (int64_t g = 0; g < n; ++g) {
      const int64_t j = i + kWidth<V> * g;
      V v = load<V>(x + j) * sc[g] + sh[g];
      if (res != nullptr) v += load<V>(res + j);
      store(y + j, relu ? relu_of(v) : v);
    }
  }
}

// sg[c] += g, sgx[c] += g * (x - mean[c]), with g the gradient at bn's output (masked(gy, y));
// g is also written to g_out (the residual's gradient) when given.
template <typename L>
void gradient_sums(const float* __restrict gy, const float* __restrict y, const float* __restrict x,
                   float* __restrict g_out, int64_t channels, int64_t begin, int64_t end,
                   const float* __restrict mean, bool relu, double* __restrict sg,
                   double* __restrict sgx) {
  using V = typename L::Vec;
  const int64_t n = steps_of<L>(channels).first;
  Slots<V, L::kGroups> mu(n);
  mu.load_from(mean, n);
  block_sums<L>(channels, begin, end, sg, sgx, [&](int64_t j, int64_t g, V& a1, V& a2) {
    const V v = masked(load<V>(gy + j), load<V>(y + j), relu);
    if (g_out != nullptr) store(g_out + j, v);
    a1 += v;
    a2 += v * (load<V>(x + j) - mu[g]);
  });
}

// dx = k * (g - a - (x - mean) * b), g as in gradient_sums (read from g_in when it was written
// there).
template <typename L>
void input_gradient(const float* __restrict gy, const float* __restrict y,
                    const float* __restrict g_in, const float* __restrict x, float* __restrict dx,
                    int64_t channels, int64_t begin, int64_t end, const float* __restrict mean,
                    const float* __restrict k, const float* __restrict a, const float* __restrict b,
                    bool relu) {
  using V = typename L::Vec;
  const auto [n, C] = steps_of<L>(channels);
  Slots<V, L::kGroups> mu(n), kk(n), aa(n), bb(n);
  mu.load_from(mean, n);
  kk.load_from(k, n);
  aa.load_from(a, n);
  bb.load_from(b, n);
  for (int64_t i = begin * C; i < end * C; i += C) {
    for (int64_t g = 0; g < n; ++g) {
      const int64_t j = i + kWidth<V> * g;
      const V v =
          g_in != nullptr ? load<V>(g_in + j) : masked(load<V>(gy + j), load<V>(y + j), relu);
      store(dx + j, kk[g] * (v - aa[g] - (load<V>(x + j) - mu[g]) * bb[g]));
    }
  }
}

template <typename Fn>
void with_channels(int64_t channels, Fn&& fn) {
  if (channels % 4 != 0) return fn(Layout<float, 0>{});
  switch (channels / 4) {
    case 2:
      return fn(Layout<f4, 2>{});
    case 4:
      return fn(Layout<f4, 4>{});
    case 8:
      return fn(Layout<f4, 8>{});
    case 16:
      return fn(Layout<f4, 16>{});
    case 32:
      return fn(Layout<f4, 32>{});
    case 64:
      return fn(Layout<f4, 64>{});
    default:
      return fn(Layout<f4, 0>{});
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

    with_channels(C, [&](auto layout) {
      using L = decltype(layout);
      // The mean, then the variance about it (two passes: no cancellation for large means).
      const std::vector<float> zero(C, 0.0f);
      const std::vector<double> sum =
          sum_rows(rows, C, [&](int64_t begin, int64_t end, double* s1, double* s2) {
            centered_sums<L>(xp, C, begin, end, zero.data(), s1, s2);
          }).first;
      for (int64_t c = 0; c < C; ++c) mean[c] = static_cast<float>(sum[c] / rows);
      const auto [d1, d2] =
          sum_rows(rows, C, [&](int64_t begin, int64_t end, double* s1, double* s2) {
            centered_sums<L>(xp, C, begin, end, mean, s1, s2);
          });
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
      at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
        normalize_rows<L>(xp, rp, yp, C, begin, end, scale.data(), shift.data(), relu);
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

    with_channels(C, [&](auto layout) {
      using L = decltype(layout);
      const auto [sg, sgx] =
          sum_rows(rows, C, [&](int64_t begin, int64_t end, double* s1, double* s2) {
            gradient_sums<L>(gyp, yp, xp, gp, C, begin, end, mean, relu, s1, s2);
          });
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
      at::parallel_for(0, rows, grain_rows(C), [&](int64_t begin, int64_t end) {
        input_gradient<L>(gyp, yp, gp, xp, dxp, C, begin, end, mean, k.data(), a.data(), b.data(),
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
    g.pop_back();  // no residual
    g.resize(8);   // running_mean, running_var, factor, eps, relu: none
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
