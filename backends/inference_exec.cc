// The executor of a stage's program: each instruction's step, run on the registers, and the
// int8 calibration that runs the float program to find each register's range.

#include "backends/inference_stage.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>
#include <optional>

namespace quilt::backends {

using detail::as_dtype;
using detail::blocked_buffer;
using detail::Code;
using detail::dequantize;
using detail::dt_of;
using detail::Format;
using detail::kF32;
using detail::kS8;
using detail::Prims;
using detail::qparams_of;
using detail::quantize;
using detail::scalar_type_of;

void CompiledStage::Impl::exec(const Instr& in) {
  struct Entry {
    Code code;
    Step step;
  };
  static constexpr Entry kSteps[] = {
      {Code::kToMkldnn, &Impl::exec_to_mkldnn},
      {Code::kToDense, &Impl::exec_to_dense},
      {Code::kConv, &Impl::exec_conv},
      {Code::kAdd, &Impl::exec_add},
      {Code::kRelu, &Impl::exec_relu},
      {Code::kMaxPool, &Impl::exec_pool},
      {Code::kAvgPool, &Impl::exec_pool},
      {Code::kFlatten, &Impl::exec_flatten},
      {Code::kLinear, &Impl::exec_linear},
      {Code::kBatchNorm, &Impl::exec_batch_norm},
      {Code::kFallback, &Impl::exec_fallback},
      {Code::kUnpack, &Impl::exec_unpack},
      {Code::kPack, &Impl::exec_pack},
      {Code::kCat, &Impl::exec_cat},
      {Code::kConvTranspose, &Impl::exec_conv_transpose},
      {Code::kSilu, &Impl::exec_silu},
      {Code::kSqueezeExcite, &Impl::exec_squeeze_excite},
      {Code::kHardswish, &Impl::exec_silu},
      {Code::kDenseAdd, &Impl::exec_dense_add},
      {Code::kLayerNorm, &Impl::exec_layer_norm},
      {Code::kGelu, &Impl::exec_gelu},
      {Code::kAttention, &Impl::exec_attention},
  };
  static_assert(detail::in_code_order(kSteps));
  static at::Tensor no_input;  // kPack and kCat read srcs only
  at::Tensor& a = in.a >= 0 ? regs[in.a] : no_input;
  at::Tensor& dst = regs[in.dst];
  (this->*kSteps[static_cast<size_t>(in.code)].step)(in, a, dst);
  for (int r : in.release) regs[r].reset();
}

void CompiledStage::Impl::exec_to_mkldnn(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  // float32, or a wire input already in the register's format (bf16, int8 codes).
  at::Tensor src = dt_of(a.scalar_type()) != kF32 ? a.contiguous() : a.contiguous().to(at::kFloat);
  dst = blocked_buffer(src.size(0), in.dst_shape, in.format.dst);
  run_onednn(in, src.size(0), src, dst);
}

void CompiledStage::Impl::exec_to_dense(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const int64_t n = batch_of(in, a);
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), in.dst_shape.begin(), in.dst_shape.end());
  // float32, or the wire format when this is the stage's output (no second pass).
  dst = at::empty(shape, in.dst == out_reg ? out_dense_dtype : at::kFloat);
  run_onednn(in, n, a, dst);
}

void CompiledStage::Impl::exec_conv(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  // With a sum post-op (in.b), the conv accumulates into register b's buffer.
  const int64_t n = batch_of(in, a);
  dst = in.b >= 0 ? as_dtype(regs[in.b], in.format.dst)
                  : blocked_buffer(n, in.dst_shape, in.format.dst);
  run_onednn(in, n, a, dst);
}

void CompiledStage::Impl::exec_add(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const int64_t n = batch_of(in, a);
  dst = in.in_place ? as_dtype(a, in.format.dst) : blocked_buffer(n, in.dst_shape, in.format.dst);
  run_onednn(in, n, a, dst, &regs[in.b]);
}

void CompiledStage::Impl::exec_relu(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  if (in.prims) {
    const int64_t n = batch_of(in, a);
    dst = in.in_place ? a : blocked_buffer(n, in.dst_shape, in.format.dst);
    run_onednn(in, n, a, dst);
  } else {
    dst = in.in_place ? at::relu_(a) : at::relu(a);
  }
}

void CompiledStage::Impl::exec_pool(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  const int64_t n = batch_of(in, a);
  dst = blocked_buffer(n, in.dst_shape, in.format.dst);
  run_onednn(in, n, a, dst);
}

void CompiledStage::Impl::exec_flatten(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  dst = a.flatten(in.start_dim, in.end_dim);
}

void CompiledStage::Impl::exec_linear(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  if (in.packed.defined()) {  // tokens [N, T, in]
    const int64_t n = a.size(0), t = a.size(1);
    dst = detail::inner_product(a.reshape({n * t, a.size(2)}), in.packed, in.bias).view({n, t, -1});
    if (in.relu) at::relu_(dst);
    return;
  }
  dst = in.bias.defined() ? at::addmm(in.bias, a, in.weight) : at::mm(a, in.weight);
  if (in.relu) at::relu_(dst);
}

void CompiledStage::Impl::exec_batch_norm(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  dst = at::addcmul(in.bias, a, in.weight);
}

void CompiledStage::Impl::exec_fallback(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  std::vector<at::Tensor> srcs;
  for (int r : in.srcs) srcs.push_back(regs[r]);
  dst = in.call->run(srcs, srcs.empty() ? 0 : srcs[0].size(0));
}

void CompiledStage::Impl::exec_unpack(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  std::vector<int64_t> view = {a.size(0)};
  view.insert(view.end(), in.view.begin(), in.view.end());
  // A reshape of a contiguous register is a view; a fallback's output may be strided.
  dst = a.reshape({a.size(0), -1}).narrow(1, in.offset, models::numel(in.view)).view(view);
}

void CompiledStage::Impl::exec_pack(const Instr& in, at::Tensor& /*a*/, at::Tensor& dst) {
  std::vector<at::Tensor> parts;
  for (int r : in.srcs) parts.push_back(regs[r].reshape({regs[r].size(0), -1}));
  dst = at::cat(parts, 1);
}

void CompiledStage::Impl::exec_cat(const Instr& in, at::Tensor& /*a*/, at::Tensor& dst) {
  std::vector<at::Tensor> parts;
  for (int r : in.srcs) parts.push_back(regs[r]);
  dst = at::cat(parts, 1);
}

void CompiledStage::Impl::exec_silu(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  // kSilu and kHardswish. In place when the input dies here (the conv before it), which saves
  // one fresh buffer per op.
  const bool silu = in.code == Code::kSilu;
  if (in.prims && in.format.int8) {
    // oneDNN has no int8 swish: through float, elementwise on the codes (any layout).
    const QParams qa{in.format.src, in.format.src_scale};
    const QParams qd{in.format.dst, in.format.dst_scale};
    at::Tensor x = dequantize(a, qa);
    dst = quantize(silu ? x.mul_(at::sigmoid(x)) : at::hardswish_(x), qd);
  } else if (in.prims) {
    const int64_t n = batch_of(in, a);
    dst = in.in_place ? a : blocked_buffer(n, in.dst_shape, in.format.dst);
    run_onednn(in, n, a, dst);
  } else if (in.in_place) {
    silu ? a.mul_(at::sigmoid(a)) : at::hardswish_(a);
    dst = a;
  } else {
    dst = silu ? at::mul(a, at::sigmoid(a)) : at::hardswish(a);
  }
}

void CompiledStage::Impl::exec_squeeze_excite(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  // A blocked register (prims set) is read where it lies: viewed as [n, C / block, H * W, block]
  // for its layout (nhwc: one block of all C; nChw16c, nChw8c; nchw: blocks of 1), the spatial
  // mean and the per-channel scale need no reorder to plain NCHW and back. int8 codes are
  // dequantized first and the result quantized to the instruction's output codes.
  const bool blocked = in.prims != nullptr;
  at::Tensor x = a;
  int64_t n = a.size(0), c = 0, groups = 0, block = 0;
  if (blocked) {
    n = batch_of(in, a);
    c = in.src_shape[0];
    block = detail::channel_block(c, in.format.channels_last);
    groups = c / block;
    if (in.format.int8) x = dequantize(a, {in.format.src, in.format.src_scale});
    x = x.view({n, groups, in.src_shape[1] * in.src_shape[2], block});
  }
  const at::Tensor pooled = blocked ? x.mean(2).reshape({n, c}).to(at::kFloat) : x.mean({2, 3});
  at::Tensor scale = at::addmm(in.bias, pooled, in.weight);
  in.hard_gate ? at::relu_(scale) : at::silu_(scale);
  scale = at::addmm(in.bias2, scale, in.weight2);
  in.hard_gate ? at::hardsigmoid_(scale) : scale.sigmoid_();
  if (!blocked) {
    dst = a * scale.view({scale.size(0), scale.size(1), 1, 1});
    return;
  }
  at::Tensor y = x * scale.to(x.scalar_type()).view({n, groups, 1, block});
  dst =
      in.format.int8 ? quantize(y, {in.format.dst, in.format.dst_scale}).view({-1}) : y.view({-1});
}

void CompiledStage::Impl::exec_conv_transpose(const Instr& in, at::Tensor& a, at::Tensor& dst) {
  dst = at::conv_transpose2d(a, in.weight, in.bias, in.stride, in.padding, in.output_size,
                             in.groups, in.dilation);
}

at::Tensor CompiledStage::Impl::prepare_input(const at::Tensor& input) const {
  if (options.precision == Precision::kInt8 && options.wire_input) {
    at::Tensor codes = q_in.dt == kS8 ? input.to(at::kShort).sub_(128).to(at::kChar) : input;
    return input_to_float ? dequantize(codes, q_in) : codes;
  }
  return input_to_float ? input.to(at::kFloat) : input;
}

at::Tensor CompiledStage::Impl::wire_codes(const at::Tensor& out) const {
  at::Tensor codes;
  if (dt_of(out.scalar_type()) == kF32) {
    codes = quantize(out, q_out);
  } else if (q_out_codes != q_out) {
    codes = quantize(dequantize(out, q_out_codes), q_out);
  } else {
    codes = out.clone(at::MemoryFormat::Contiguous);
  }
  if (q_out.dt == kS8) codes = codes.to(at::kShort).add_(128).to(at::kByte);
  return codes.contiguous();
}

void CompiledStage::Impl::calibrate_int8() {
  std::vector<double> lo(num_regs, std::numeric_limits<double>::infinity());
  std::vector<double> hi(num_regs, -std::numeric_limits<double>::infinity());
  auto note = [&](int r) {
    if (!regs[r].defined()) return;
    auto [mn, mx] = at::aminmax(regs[r]);
    lo[r] = std::min(lo[r], mn.item<double>());
    hi[r] = std::max(hi[r], mx.item<double>());
  };
  {
    std::optional<ScopedAllocationCache> scope;
    if (cache) scope.emplace(*cache);
    c10::InferenceMode guard;
    for (const at::Tensor& batch : options.calibration) {
      TORCH_CHECK(batch.scalar_type() == at::kFloat &&
                      batch.dim() == 1 + static_cast<int64_t>(in_shape.size()) &&
                      batch.sizes().slice(1).vec() == in_shape,
                  "calibration batch must be float [batch, ", models::to_string(in_shape),
                  "], got ", batch.sizes());
      regs.assign(num_regs, at::Tensor());
      regs[0] = batch.contiguous();
      note(0);
      for (const Instr& in : program) {
        exec(in);
        note(in.dst);  // before in-place ops of later instructions change it
      }
      regs.clear();
    }
  }
  std::vector<QParams> own(num_regs);
  for (int r = 0; r < num_regs; ++r) own[r] = qparams_of(lo[r], hi[r]);
  q = own;
  for (const Instr& in : program) {
    const bool keeps_codes = in.code == Code::kToMkldnn || in.code == Code::kToDense ||
                             in.code == Code::kMaxPool || in.code == Code::kAvgPool ||
                             (in.code == Code::kRelu && in.prims);
    if (keeps_codes) q[in.dst] = q[in.a];
  }
  for (Instr& in : program) {
    if (!in.prims) continue;
    Format f;
    f.int8 = true;
    f.channels_last = true;
    if (in.a >= 0) f.src = q[in.a].dt, f.src_scale = q[in.a].scale;
    if (in.b >= 0) f.src2 = q[in.b].dt, f.src2_scale = q[in.b].scale;
    f.dst = q[in.dst].dt;
    f.dst_scale = q[in.dst].scale;
    in.format = f;
    in.prims = std::make_shared<Prims>();  // the float primitives of calibration go
  }
  q_in = own[0];
  q_out = own[out_reg];
  q_out_codes = q[out_reg];
  if (options.wire_output) {
    for (const Instr& in : program)
      if (in.dst == out_reg && in.code == Code::kToDense)
        out_dense_dtype = scalar_type_of(q[out_reg].dt);
  }
}

}  // namespace quilt::backends
