#include "backends/inference_program.h"

#include "common/enum_table.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace quilt::backends::detail {
namespace {

constexpr common::EnumTable<Code, kNumCodes> kKinds = {{
    {Code::kToMkldnn, "to_mkldnn"},
    {Code::kToDense, "to_dense"},
    {Code::kConv, "conv"},
    {Code::kAdd, "add"},
    {Code::kRelu, "relu"},
    {Code::kMaxPool, "max_pool"},
    {Code::kAvgPool, "avg_pool"},
    {Code::kFlatten, "flatten"},
    {Code::kLinear, "linear"},
    {Code::kBatchNorm, "batch_norm"},
    {Code::kFallback, "fallback"},
    {Code::kUnpack, "unpack"},
    {Code::kPack, "pack"},
    {Code::kCat, "cat"},
    {Code::kConvTranspose, "conv_transpose"},
    {Code::kSilu, "silu"},
    {Code::kSqueezeExcite, "squeeze_excite"},
    {Code::kHardswish, "hardswish"},
    {Code::kDenseAdd, "add"},
    {Code::kLayerNorm, "layer_norm"},
    {Code::kGelu, "gelu"},
    {Code::kAttention, "attention"},
}};

}  // namespace

// The table's names are string literals: NUL-terminated.
const char* kind_of(Code c) { return common::enum_name(kKinds, c).data(); }

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

Tag blocked_tag(int64_t channels, bool channels_last) {
  if (channels_last) return Tag::nhwc;
  return channels % 16 == 0 ? Tag::nChw16c : channels % 8 == 0 ? Tag::nChw8c : Tag::nchw;
}

int64_t channel_block(int64_t channels, bool channels_last) {
  switch (blocked_tag(channels, channels_last)) {
    case Tag::nhwc:
      return channels;
    case Tag::nChw16c:
      return 16;
    case Tag::nChw8c:
      return 8;
    default:
      return 1;
  }
}

dnnl::memory::desc blocked_md(int64_t n, const Shape& s, DataType dt, bool channels_last) {
  return {{n, s[0], s[1], s[2]}, dt, blocked_tag(s[0], channels_last)};
}

dnnl::memory::desc plain_md(int64_t n, const Shape& s, DataType dt) {
  return {{n, s[0], s[1], s[2]}, dt, Tag::nchw};
}

at::ScalarType scalar_type_of(DataType dt) {
  switch (dt) {
    case kBf16:
      return at::kBFloat16;
    case kU8:
      return at::kByte;
    case kS8:
      return at::kChar;
    default:
      return at::kFloat;
  }
}

DataType dt_of(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16:
      return kBf16;
    case at::kByte:
      return kU8;
    case at::kChar:
      return kS8;
    default:
      return kF32;
  }
}

// The tags above never pad channels: a blocked buffer has exactly numel elements.
at::Tensor blocked_buffer(int64_t n, const Shape& s, DataType dt) {
  return at::empty({n * models::numel(s)}, scalar_type_of(dt));
}

at::Tensor as_dtype(const at::Tensor& t, DataType dt) {
  return t.scalar_type() == scalar_type_of(dt) ? t : t.view(scalar_type_of(dt));
}

QParams qparams_of(double lo, double hi) {
  QParams q;
  if (!std::isfinite(lo) || !std::isfinite(hi)) return q;
  q.dt = lo >= 0 ? kU8 : kS8;
  const double range = q.dt == kU8 ? hi / 255.0 : std::max(-lo, hi) / 127.0;
  q.scale = static_cast<float>(std::max(range, 1e-8));
  return q;
}

// Float values as codes of q (round to nearest even, saturated), as oneDNN's int8 ops write.
at::Tensor quantize(const at::Tensor& x, const QParams& q) {
  const double lo = q.dt == kU8 ? 0 : -128, hi = q.dt == kU8 ? 255 : 127;
  return at::round(x.to(at::kFloat) / q.scale).clamp_(lo, hi).to(scalar_type_of(q.dt));
}

at::Tensor dequantize(const at::Tensor& codes, const QParams& q) {
  return codes.to(at::kFloat) * q.scale;
}

dnnl::memory wrap(const dnnl::memory::desc& md, const at::Tensor& t) {
  return dnnl::memory(md, cpu_engine(), t.data_ptr());
}

Instr op(Code code, std::string name) {
  Instr in;
  in.code = code;
  in.name = std::move(name);
  return in;
}

}  // namespace quilt::backends::detail
