#include "models/fast_conv.h"

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/torch.h>

#include <algorithm>

namespace quilt::models {
namespace {

// The in-range window along one spatial axis of a convolution with one output position:
// kernel taps [k0, k0 + n) meet input positions [k0 - pad, k0 - pad + n).
struct Window {
  int64_t k0 = 0, n = 0;
};

Window window(int64_t size, int64_t kernel, int64_t pad) {
  const int64_t k0 = std::max<int64_t>(0, pad);
  const int64_t k1 = std::min<int64_t>(kernel, pad + size);
  return {k0, std::max<int64_t>(0, k1 - k0)};
}

int64_t out_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad) {
  return (size + 2 * pad - kernel) / stride + 1;
}

}  // namespace

bool conv2d_is_gemm(const torch::nn::Conv2dImpl& conv, torch::IntArrayRef input) {
  const auto& o = conv.options;
  if (input.size() != 4 || o.groups() != 1) return false;
  if (!c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) return false;
  const auto* pad = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  if (pad == nullptr) return false;  // "same" / "valid": let LibTorch resolve them
  for (int d = 0; d < 2; ++d) {
    if ((*o.dilation())[d] != 1) return false;
    const int64_t k = (*o.kernel_size())[d], s = (*o.stride())[d], p = (**pad)[d];
    if (out_size(input[2 + d], k, s, p) != 1) return false;
    if (window(input[2 + d], k, p).n < 1) return false;
  }
  return true;
}

torch::Tensor conv2d_forward(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  // A trace records the conv it computes, for a compiler to lower (backends/inference_graph.h).
  if (!conv2d_is_gemm(conv, x.sizes()) || torch::jit::tracer::isTracing()) return conv.forward(x);
  const auto& o = conv.options;
  const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
  const Window wy = window(x.size(2), (*o.kernel_size())[0], (*pad)[0]);
  const Window wx = window(x.size(3), (*o.kernel_size())[1], (*pad)[1]);
  const int64_t n = x.size(0), out_channels = conv.weight.size(0);
  // Input pixels [k0 - pad, k0 - pad + n) against kernel taps [k0, k0 + n) on each axis, both
  // flattened in the weight's memory order: channel-major for NCHW weights, tap-major for
  // channels-last ones (viewed {out, kh, kw, in}), so that the weight's gradient comes back in the
  // weight's own layout. Flattened channel-major, a channels-last weight got an NCHW gradient that
  // AccumulateGrad then restrided: at width 1 that copy was 44% of a training step (24 ms per
  // 512x512x3x3 weight).
  const bool nhwc = conv.weight.suggest_memory_format() == torch::MemoryFormat::ChannelsLast;
  // t's in-range window from tap (y0, x0), one row per sample (or output channel).
  auto taps = [&](const torch::Tensor& t, int64_t y0, int64_t x0) {
    const torch::Tensor v = nhwc ? t.permute({0, 2, 3, 1}) : t;
    const int64_t dy = nhwc ? 1 : 2;  // the spatial axes of v: dy, dy + 1
    return v.narrow(dy, y0, wy.n).narrow(dy + 1, x0, wx.n).reshape({t.size(0), -1});
  };
  auto xs = taps(x, wy.k0 - (*pad)[0], wx.k0 - (*pad)[1]);
  auto ws = taps(conv.weight, wy.k0, wx.k0);
  auto out = conv.bias.defined() ? torch::addmm(conv.bias, xs, ws.t()) : torch::mm(xs, ws.t());
  return out.view({n, out_channels, 1, 1});
}

}  // namespace quilt::models
