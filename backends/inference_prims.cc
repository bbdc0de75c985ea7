// The oneDNN primitives of a stage's program: one per instruction and batch size, made on first
// use (convs reorder their weights once, into the layout the primitive chose), and run.

#include "backends/inference_program.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <unordered_map>

namespace quilt::backends::detail {
namespace {

dnnl::memory::dims dims2(const std::vector<int64_t>& v) { return dnnl::memory::dims{v[0], v[1]}; }

// int8 reorders between float and codes scale; between codes of one register they copy.
dnnl::primitive_attr reorder_attr(const Format& f, DataType plain, float scale) {
  dnnl::primitive_attr attr;
  if (f.int8 && plain == kF32) attr.set_output_scales(0, {scale});
  return attr;
}

// Each make_* below fills in p.prim (and what it needs) for an instruction of its code, p's
// blocked memory descriptors already set. `plain` is the data type of the dense side of a
// reorder (kToMkldnn's source, kToDense's destination).
using MakePrim = void (*)(const Instr& in, int64_t n, DataType plain, Prim& p);

void make_to_mkldnn(const Instr& in, int64_t n, DataType plain, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const Format& f = in.format;
  p.src = plain_md(n, in.src_shape, plain);
  p.prim = reorder(
      reorder::primitive_desc(eng, p.src, eng, p.dst, reorder_attr(f, plain, 1.0f / f.dst_scale)));
}

void make_to_dense(const Instr& in, int64_t n, DataType plain, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const Format& f = in.format;
  p.dst = plain_md(n, in.dst_shape, plain);
  p.prim =
      reorder(reorder::primitive_desc(eng, p.src, eng, p.dst, reorder_attr(f, plain, f.src_scale)));
}

// The conv's plain weight dims: oihw, or goihw for a grouped conv.
dnnl::memory::dims conv_weight_dims(const Instr& in) {
  using memory = dnnl::memory;
  const int64_t oc = in.weight.size(0), icg = in.weight.size(1), g = in.groups;
  return g == 1 ? memory::dims{oc, icg, in.kernel[0], in.kernel[1]}
                : memory::dims{g, oc / g, icg, in.kernel[0], in.kernel[1]};
}

dnnl::memory::desc conv_bias_md(const Instr& in) {
  using memory = dnnl::memory;
  const int64_t oc = in.weight.size(0);
  return in.bias.defined() ? memory::desc({oc}, kF32, Tag::x) : memory::desc();
}

// The conv's attributes: output scales (int8), the sum post-op of a fused residual add, a fused
// ReLU. Returns the int8 weight codes (undefined in other precisions); sets p.bias_storage.
at::Tensor conv_attr(const Instr& in, Prim& p, dnnl::primitive_attr& attr) {
  using namespace dnnl;
  const Format& f = in.format;
  // int8: weights per output channel symmetric s8; the s32 accumulator times
  // src_scale * w_scale[oc] / dst_scale gives the codes of dst, and the bias is added
  // to the accumulator (so it is stored in accumulator units).
  at::Tensor w_scale, w_codes;
  post_ops ops;
  if (f.int8) {
    w_scale = (in.weight.abs().amax({1, 2, 3}) / 127.0).clamp_min(1e-12);
    w_codes = at::round(in.weight / w_scale.view({-1, 1, 1, 1}))
                  .clamp_(-127, 127)
                  .to(at::kChar)
                  .contiguous();
    at::Tensor out_scale = (w_scale * (f.src_scale / f.dst_scale)).contiguous();
    attr.set_output_scales(2, std::vector<float>(out_scale.data_ptr<float>(),
                                                 out_scale.data_ptr<float>() + out_scale.numel()));
    if (in.bias.defined())
      p.bias_storage = (in.bias / (w_scale * f.src_scale)).to(at::kFloat).contiguous();
    if (in.b >= 0) ops.append_sum(f.src2_scale / f.dst_scale, f.src2);
  } else if (in.b >= 0) {
    ops.append_sum(1.0f);
  }
  if (in.relu) ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  return w_codes;
}

// convolution_auto lets oneDNN take its Winograd kernel where it expects it to be faster (3x3,
// stride 1); direct where auto has no implementation.
dnnl::convolution_forward::primitive_desc conv_desc(const Instr& in, const Prim& p,
                                                    const dnnl::primitive_attr& attr) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const Format& f = in.format;
  const memory::dims w_dims = conv_weight_dims(in);
  const memory::desc bias_md = conv_bias_md(in);
  const DataType w_dt = f.int8 ? kS8 : f.src;
  const memory::dims dilation = {in.dilation[0] - 1, in.dilation[1] - 1};
  auto make = [&](algorithm alg) {
    convolution_forward::desc d(prop_kind::forward_inference, alg, p.src,
                                memory::desc(w_dims, w_dt, Tag::any), bias_md, p.dst,
                                dims2(in.stride), dilation, dims2(in.padding), dims2(in.padding));
    return convolution_forward::primitive_desc(d, attr, eng);
  };
  convolution_forward::primitive_desc pd;
  try {
    pd = make(f.winograd ? algorithm::convolution_auto : algorithm::convolution_direct);
  } catch (const dnnl::error&) {
    pd = make(algorithm::convolution_direct);
  }
  return pd;
}

void make_conv(const Instr& in, int64_t, DataType, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const Format& f = in.format;
  const int64_t g = in.groups;
  const memory::dims w_dims = conv_weight_dims(in);
  primitive_attr attr;
  const at::Tensor w_codes = conv_attr(in, p, attr);
  const convolution_forward::primitive_desc pd = conv_desc(in, p, attr);
  p.prim = convolution_forward(pd);
  const at::Tensor& w = f.int8 ? w_codes : in.weight;
  memory plain({w_dims, f.int8 ? kS8 : kF32, g == 1 ? Tag::oihw : Tag::goihw}, eng, w.data_ptr());
  p.weights = memory(pd.weights_desc(), eng);
  reorder(plain, p.weights).execute(cpu_stream(), plain, p.weights);
  cpu_stream().wait();
  if (in.bias.defined())
    p.bias = memory(conv_bias_md(in), eng, (f.int8 ? p.bias_storage : in.bias).data_ptr());
}

void make_add(const Instr& in, int64_t, DataType, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const Format& f = in.format;
  primitive_attr attr;
  if (in.relu) {
    post_ops ops;
    ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  if (f.int8) {
    attr.set_scales(DNNL_ARG_SRC_0, 0, {f.src_scale / f.dst_scale});
    attr.set_scales(DNNL_ARG_SRC_1, 0, {f.src2_scale / f.dst_scale});
  }
  p.prim = binary(
      binary::primitive_desc(binary::desc(algorithm::binary_add, p.src, p.src2, p.dst), attr, eng));
}

void make_eltwise(const Instr& in, int64_t, DataType, Prim& p) {  // kRelu, kSilu, kHardswish
  using namespace dnnl;
  engine& eng = cpu_engine();
  const algorithm alg = in.code == Code::kRelu   ? algorithm::eltwise_relu
                        : in.code == Code::kSilu ? algorithm::eltwise_swish
                                                 : algorithm::eltwise_hardswish;
  p.prim = eltwise_forward(eltwise_forward::primitive_desc(
      eltwise_forward::desc(prop_kind::forward_inference, alg, p.src,
                            in.code == Code::kSilu ? 1.0f : 0.0f, 0.0f),
      eng));
}

void make_max_pool(const Instr& in, int64_t, DataType, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  // Symmetric padding, more on the right where ceil_mode adds a window.
  memory::dims pad_r = dims2(in.padding);
  for (int i = 0; i < 2; ++i)
    pad_r[i] = std::max<int64_t>(pad_r[i], (in.dst_shape[1 + i] - 1) * in.stride[i] + in.kernel[i] -
                                               in.src_shape[1 + i] - in.padding[i]);
  p.prim = pooling_forward(pooling_forward::primitive_desc(
      pooling_forward::desc(prop_kind::forward_inference, algorithm::pooling_max, p.src, p.dst,
                            dims2(in.stride), dims2(in.kernel), dims2(in.padding), pad_r),
      eng));
}

void make_avg_pool(const Instr& in, int64_t, DataType, Prim& p) {
  using namespace dnnl;
  engine& eng = cpu_engine();
  const memory::dims k = {in.src_shape[1] / in.dst_shape[1], in.src_shape[2] / in.dst_shape[2]};
  p.prim = pooling_forward(pooling_forward::primitive_desc(
      pooling_forward::desc(prop_kind::forward_inference, algorithm::pooling_avg_exclude_padding,
                            p.src, p.dst, k, k, {0, 0}, {0, 0}),
      eng));
}

struct PrimMaker {
  Code code;
  MakePrim make;  // null: not a oneDNN op
};

constexpr PrimMaker kPrimMakers[] = {
    {Code::kToMkldnn, make_to_mkldnn},
    {Code::kToDense, make_to_dense},
    {Code::kConv, make_conv},
    {Code::kAdd, make_add},
    {Code::kRelu, make_eltwise},
    {Code::kMaxPool, make_max_pool},
    {Code::kAvgPool, make_avg_pool},
    {Code::kFlatten, nullptr},
    {Code::kLinear, nullptr},
    {Code::kBatchNorm, nullptr},
    {Code::kFallback, nullptr},
    {Code::kUnpack, nullptr},
    {Code::kPack, nullptr},
    {Code::kCat, nullptr},
    {Code::kConvTranspose, nullptr},
    {Code::kSilu, make_eltwise},
    {Code::kSqueezeExcite, nullptr},
    {Code::kHardswish, make_eltwise},
    {Code::kDenseAdd, nullptr},
    {Code::kLayerNorm, nullptr},
    {Code::kGelu, nullptr},
    {Code::kAttention, nullptr},
};
static_assert(in_code_order(kPrimMakers));

// The primitive of a oneDNN instruction for batch size n, made on first use. `plain` is the
// data type of the dense side of a reorder (kToMkldnn's source, kToDense's destination).
const Prim& prim_for(const Instr& in, int64_t n, DataType plain = kF32) {
  auto& cache = in.prims->by_batch;
  const int64_t key = 16 * n + static_cast<int64_t>(plain);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const MakePrim make = kPrimMakers[static_cast<size_t>(in.code)].make;
  TORCH_INTERNAL_ASSERT(make != nullptr, "no oneDNN primitive for ", kind_of(in.code));
  Prim p;
  const Format& f = in.format;
  p.src = blocked_md(n, in.src_shape, f.src, f.channels_last);
  p.src2 = blocked_md(n, in.src_shape, f.src2, f.channels_last);
  p.dst = blocked_md(n, in.dst_shape, f.dst, f.channels_last);
  make(in, n, plain, p);
  return cache.emplace(key, std::move(p)).first->second;
}

}  // namespace

void run_onednn(const Instr& in, int64_t n, const at::Tensor& src, const at::Tensor& dst,
                const at::Tensor* src2) {
  const Prim& p = prim_for(in, n,
                           in.code == Code::kToMkldnn  ? dt_of(src.scalar_type())
                           : in.code == Code::kToDense ? dt_of(dst.scalar_type())
                                                       : kF32);
  std::unordered_map<int, dnnl::memory> args;
  switch (in.code) {
    case Code::kToMkldnn:
    case Code::kToDense:
      args = {{DNNL_ARG_FROM, wrap(p.src, src)}, {DNNL_ARG_TO, wrap(p.dst, dst)}};
      break;
    case Code::kConv:
      args = {{DNNL_ARG_SRC, wrap(p.src, src)},
              {DNNL_ARG_WEIGHTS, p.weights},
              {DNNL_ARG_DST, wrap(p.dst, dst)}};
      if (p.bias) args[DNNL_ARG_BIAS] = p.bias;
      break;
    case Code::kAdd:
      args = {{DNNL_ARG_SRC_0, wrap(p.src, src)},
              {DNNL_ARG_SRC_1, wrap(p.src2, *src2)},
              {DNNL_ARG_DST, wrap(p.dst, dst)}};
      break;
    default:
      args = {{DNNL_ARG_SRC, wrap(p.src, src)}, {DNNL_ARG_DST, wrap(p.dst, dst)}};
  }
  p.prim.execute(cpu_stream(), args);
  cpu_stream().wait();
}

}  // namespace quilt::backends::detail
