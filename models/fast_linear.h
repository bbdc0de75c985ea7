#pragma once
// Linear (+ ReLU) for training through oneDNN's sgemm. LibTorch's CPU Linear multiplies through
// the BLAS behind libblas.so.3; Debian's OpenBLAS runs its Haswell (AVX2) kernel, where oneDNN's
// sgemm has AVX-512 kernels: at one thread, for the MLP's 64x512x784 and 64x512x512 products,
// 85-95 against 145-170 GFLOP/s here (cblas_sgemm against dnnl_sgemm, one thread). The
// forward writes the bias, the product and the ReLU into one output; the backward masks the
// gradient once and multiplies twice (dx only where x needs a gradient).

#include <torch/nn/modules/linear.h>
#include <torch/types.h>

namespace quilt::models {

/// True when linear_act() takes the sgemm path: x a float CPU matrix {N, in} (contiguous), fc's
/// weight and bias defined, float and contiguous, and not tracing.
bool linear_is_gemm(const torch::nn::LinearImpl& fc, const torch::Tensor& x);

/// relu(fc->forward(x)) (without the ReLU when `relu` is false): the same values and gradients
/// (for x, weight, bias) to float rounding, through oneDNN's sgemm when linear_is_gemm() holds and
/// the module's operations otherwise (a trace records those, for a compiler to lower).
torch::Tensor linear_act(torch::nn::LinearImpl& fc, const torch::Tensor& x, bool relu);

}  // namespace quilt::models
