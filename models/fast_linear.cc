#include "models/fast_linear.h"

#include <c10/util/Exception.h>
#include <oneapi/dnnl/dnnl.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>

namespace quilt::models {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// C = A op B, row-major, as dnnl_sgemm: op(A) is m x k, op(B) k x n, C m x n (beta: keep C).
void sgemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t s = dnnl_sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  TORCH_CHECK(s == dnnl_success, "oneDNN sgemm ", m, "x", n, "x", k, " failed with status ",
              static_cast<int>(s));
}

// relu(x W^T + b) (without the ReLU when `relu` is false): the bias rows, then the product added.
torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& weight,
                             const torch::Tensor& bias, bool relu) {
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  auto y = torch::empty({m, n}, x.options());
  float* yp = y.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  for (int64_t r = 0; r < m; ++r) std::memcpy(yp + r * n, bp, sizeof(float) * n);
  sgemm('N', 'T', m, n, k, x.data_ptr<float>(), k, weight.data_ptr<float>(), k, 1.0f, yp, n);
  if (relu) {
    for (int64_t i = 0; i < m * n; ++i) yp[i] = yp[i] < 0.0f ? 0.0f : yp[i];  // keeps NaN
  }
  return y;
}

struct LinearAct : torch::autograd::Function<LinearAct> {
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, bool relu) {
    auto y = linear_forward(x, weight, bias, relu);
    ctx->save_for_backward({x, weight, relu ? y : torch::Tensor()});
    ctx->saved_data["relu"] = relu;
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return variable_list(4);
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &weight = saved[1];
    const bool relu = ctx->saved_data["relu"].toBool();
    const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
    // g: the gradient at the product (zero where the ReLU's output was <= 0, as
    // threshold_backward).
    torch::Tensor g = grads[0].contiguous();
    if (relu) {
      torch::Tensor masked = torch::empty_like(g);
      const float* gp = g.data_ptr<float>();
      const float* yp = saved[2].data_ptr<float>();
      float* mp = masked.data_ptr<float>();
      for (int64_t i = 0; i < m * n; ++i) mp[i] = yp[i] <= 0.0f ? 0.0f : gp[i];
      g = masked;
    }
    const float* gp = g.data_ptr<float>();
    torch::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {  // dx = g W
      dx = torch::empty({m, k}, x.options());
      sgemm('N', 'N', m, k, n, gp, n, weight.data_ptr<float>(), k, 0.0f, dx.data_ptr<float>(), k);
    }
    if (ctx->needs_input_grad(1)) {  // dW = g^T x
      dw = torch::empty({n, k}, x.options());
      sgemm('T', 'N', n, k, m, gp, n, x.data_ptr<float>(), k, 0.0f, dw.data_ptr<float>(), k);
    }
    if (ctx->needs_input_grad(2)) {  // db = column sums of g
      db = torch::zeros({n}, x.options());
      float* dbp = db.data_ptr<float>();
      for (int64_t r = 0; r < m; ++r) {
        const float* row = gp + r * n;
        for (int64_t c = 0; c < n; ++c) dbp[c] += row[c];
      }
    }
    return {dx, dw, db, torch::Tensor()};
  }
};

bool is_float_cpu(const torch::Tensor& t, int64_t dim) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.dim() == dim &&
         t.is_contiguous();
}

}  // namespace

bool linear_is_gemm(const torch::nn::LinearImpl& fc, const torch::Tensor& x) {
  return is_float_cpu(x, 2) && x.size(0) > 0 && is_float_cpu(fc.weight, 2) &&
         is_float_cpu(fc.bias, 1) && x.size(1) == fc.weight.size(1) &&
         !torch::jit::tracer::isTracing();
}

torch::Tensor linear_act(torch::nn::LinearImpl& fc, const torch::Tensor& x, bool relu) {
  if (!linear_is_gemm(fc, x)) {
    auto y = fc.forward(x);
    return relu ? y.relu_() : y;
  }
  // Without a graph to record (evaluation, inference mode), no autograd node either.
  const bool record = torch::GradMode::is_enabled() &&
                      (x.requires_grad() || fc.weight.requires_grad() || fc.bias.requires_grad());
  if (!record) return linear_forward(x, fc.weight, fc.bias, relu);
  return LinearAct::apply(x, fc.weight, fc.bias, relu)[0];
}

}  // namespace quilt::models
