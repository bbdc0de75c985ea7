#include "trainers/fused_optim.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>
#include <torch/torch.h>

#include <cmath>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace quilt::trainers {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per task when LibTorch runs several threads

// A dense float32 CPU tensor whose elements fill its memory without gaps or overlaps (any
// order: contiguous, channels-last). Element-wise updates may walk such tensors in memory order
// when all of them have the same strides.
bool fusable(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
         t.layout() == torch::kStrided && t.is_non_overlapping_and_dense();
}

// `t` is fusable and laid out as parameter `p`: same sizes, same strides on every dimension of
// more than one element (a dimension of size 1 may carry any stride: a [1, 32, 1, 1] weight is
// both contiguous and channels-last, and its gradient may say either).
bool fusable_like(const torch::Tensor& t, const torch::Tensor& p) {
  if (!fusable(t) || !t.sizes().equals(p.sizes())) return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) > 1 && t.stride(d) != p.stride(d)) return false;
  }
  return true;
}

// Every parameter with a gradient is dense float32, its gradient and state laid out alike.
template <typename StateCheck>
bool all_fusable(const std::vector<torch::optim::OptimizerParamGroup>& groups, StateCheck check) {
  for (const auto& group : groups) {
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (!fusable(p) || !fusable_like(p.grad(), p) || !check(p)) return false;
    }
  }
  return true;
}

// Flush-to-zero and denormals-are-zero on this thread while it lives. A parameter whose gradient
// stays 0 (a dead unit; the one-float code of a 512x autoencoder) has momentum and second
// moments that decay by beta each step into the denormal range, where every multiply takes a
// microcode assist: a long Adam run on a UCI MLP slowed from 2 to 6 s per epoch over 200 epochs.
// Values below 1.2e-38 become 0, which changes no update by more than float rounding.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFtz | kDaz); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFtz = 0x8000, kDaz = 0x0040;
  unsigned saved_;
#endif
};

std::string key(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

// The loss of `closure` (undefined without one), computed with autograd on as torch's step()
// does; the caller's NoGradGuard covers the update that follows.
torch::Tensor run_closure(const torch::optim::Optimizer::LossClosure& closure) {
  torch::Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  return loss;
}

}  // namespace

torch::Tensor FusedSgd::step(LossClosure closure) {
  auto state_ok = [&](const torch::Tensor& p) {
    auto it = state_.find(key(p));
    if (it == state_.end()) return true;
    auto& buf = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
    return fusable_like(buf, p);
  };
  if (!all_fusable(param_groups_, state_ok)) return SGD::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    const float lr = static_cast<float>(o.lr()), wd = static_cast<float>(o.weight_decay());
    const float momentum = static_cast<float>(o.momentum());
    const float keep = static_cast<float>(1.0 - o.dampening());
    const bool nesterov = o.nesterov();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      float* w = p.data_ptr<float>();
      const float* g = p.grad().data_ptr<float>();
      float* buf = nullptr;
      bool first = false;
      if (o.momentum() != 0) {
        auto it = state_.find(key(p));
        if (it == state_.end()) {
          auto state = std::make_unique<torch::optim::SGDParamState>();
          state->momentum_buffer(torch::empty_like(p, torch::MemoryFormat::Preserve));
          it = state_.emplace(key(p), std::move(state)).first;
          first = true;  // torch: the buffer starts as a copy of the first step's d_p
        }
        buf = static_cast<torch::optim::SGDParamState&>(*it->second)
                  .momentum_buffer()
                  .data_ptr<float>();
      }
      at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        const FlushDenormals ftz;
        for (int64_t i = begin; i < end; ++i) {
          float d = wd != 0.0f ? g[i] + wd * w[i] : g[i];
          if (buf != nullptr) {
            const float b = first ? d : momentum * buf[i] + keep * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
          }
          w[i] -= lr * d;
        }
      });
    }
  }
  return loss;
}

namespace {

struct AdamConstants {
  float b1, b2, one_b1, one_b2, sqrt_c2, eps, wd, step_size;
};

// One Adam update of n elements. The arrays never overlap (a parameter, its gradient and its two
// moments) and this file is built with -fno-math-errno, so GCC vectorizes the loop (sqrtps,
// divps: the same IEEE results as the scalar loop, which ran 4 ns per element and made the MLP's
// Adam step slower than torch's for-loop Adam).
void adam_update(float* __restrict w, const float* __restrict g, float* __restrict m,
                 float* __restrict v, int64_t n, const AdamConstants& k) {
  const AdamConstants c = k;  // by value: no aliasing with the arrays
  for (int64_t i = 0; i < n; ++i) {
    const float d = c.wd != 0.0f ? g[i] + c.wd * w[i] : g[i];
    const float mi = c.b1 * m[i] + c.one_b1 * d;
    const float vi = c.b2 * v[i] + c.one_b2 * d * d;
    m[i] = mi;
    v[i] = vi;
    w[i] -= c.step_size * (mi / (std::sqrt(vi) / c.sqrt_c2 + c.eps));
  }
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  auto state_ok = [&](const torch::Tensor& p) {
    auto it = state_.find(key(p));
    if (it == state_.end()) return true;
    auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
    return fusable_like(s.exp_avg(), p) && fusable_like(s.exp_avg_sq(), p);
  };
  bool amsgrad = false;
  for (const auto& group : param_groups_) {
    amsgrad = amsgrad || static_cast<const torch::optim::AdamOptions&>(group.options()).amsgrad();
  }
  if (amsgrad || !all_fusable(param_groups_, state_ok)) return Adam::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss = run_closure(closure);
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto it = state_.find(key(p));
      if (it == state_.end()) {
        auto state = std::make_unique<torch::optim::AdamParamState>();
        state->step(0);
        state->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        state->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(key(p), std::move(state)).first;
      }
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      s.step(s.step() + 1);
      const double correction1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double correction2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      // As torch::optim::Adam: denom = sqrt(v) / sqrt(correction2) + eps, p -= lr / correction1
      // * m / denom.
      const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
      const float one_b1 = static_cast<float>(1 - beta1), one_b2 = static_cast<float>(1 - beta2);
      const float sqrt_c2 = static_cast<float>(std::sqrt(correction2));
      const float eps = static_cast<float>(o.eps()), wd = static_cast<float>(o.weight_decay());
      const float step_size = static_cast<float>(o.lr() / correction1);
      float* w = p.data_ptr<float>();
      const float* g = p.grad().data_ptr<float>();
      float* m = s.exp_avg().data_ptr<float>();
      float* v = s.exp_avg_sq().data_ptr<float>();
      const AdamConstants k{b1, b2, one_b1, one_b2, sqrt_c2, eps, wd, step_size};
      at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        const FlushDenormals ftz;
        adam_update(w + begin, g + begin, m + begin, v + begin, end - begin, k);
      });
    }
  }
  return loss;
}

void clear_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params) {
    if (p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad().reset();
  }
}

void fill_missing_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params) {
    if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = torch::zeros_like(p);
  }
}

}  // namespace quilt::trainers
