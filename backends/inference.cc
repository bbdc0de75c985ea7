// The CompiledStage API: compiling a stage (inference_compiler.h) in a precision, running it
// (inference_exec.cc), and the helpers that chain stages in one process.

#include "backends/inference.h"

#include "backends/allocation_cache.h"
#include "backends/board.h"
#include "backends/inference_compiler.h"
#include "backends/inference_stage.h"
#include "backends/torchscript_stage.h"
#include "models/quilt_model.h"

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>

// Design notes, from measurements with LibTorch 1.13.1 (Debian, oneDNN 2.6.3) at one thread,
// ResNet-50 batch 8 on an AVX-512 CPU:
// - Convolutions on blocked (nChw16c) tensors with weights reordered once are the kernels
//   PyTorch's optimize_for_inference uses (through at::mkldnn_convolution, 105-135 GFLOP/s).
//   at::conv2d would send 1x1 convs at one thread through im2col + GEMM, much slower.
// - Through ATen, ReLU cannot be fused into those convs (in-place ReLU cost ~1% of the stage, the
//   residual add ~4%), and the conv algorithm is always direct. Channels-last (brgconv) is
//   1.3-1.6x faster than nChw16c for the 1x1 convs of layer1 but has no Winograd 3x3: over a
//   block the two come out about even, so everything stays nChw16c.
// - What the fast path gains over optimize_for_inference is memory: activations are cached
//   between runs on 2 MiB transparent huge pages (allocation_cache.h), which removes page faults
//   and TLB misses worth 5-8% of stage 0.
// - The blocked tensors are ours, not ATen's: plain float buffers in oneDNN's nChw16c (nChw8c,
//   nchw) layout, run through oneDNN primitives created once per batch size (the same libdnnl
//   that LibTorch links). That reaches what ATen does not expose: 3x3 stride-1 convs through
//   oneDNN's algorithm choice (convolution_auto picks its Winograd F(4,3) kernel, 1.5-1.8x the
//   direct kernel's rate at one thread on AVX-512), ReLU fused as a post-op, and the residual
//   add fused into the conv before it as a sum post-op (the conv accumulates into the identity
//   buffer), which removes a full read-read-write pass over the activation per block.

namespace quilt::backends {
namespace {

// oneDNN's AVX-512 kernels want one channel blocking on both sides of an op: a register whose
// channels are not a multiple of 16 (MobileNetV3's 72 and 88, EfficientNet's 24 and 40) is
// nChw8c, and a conv between it and an nChw16c one runs oneDNN's reference kernel (seconds per
// batch). Such programs keep every blocked register channels-last instead (one format, no
// padding), as int8 does; a stage input of up to 4 channels stays plain NCHW before the first
// conv, which oneDNN's kernels take.
bool uneven_channels(const std::vector<detail::Instr>& program) {
  for (const detail::Instr& in : program) {
    if (!in.prims) continue;
    for (const detail::Shape* s : {&in.src_shape, &in.dst_shape})
      if (s->size() == 3 && (*s)[0] % 16 != 0 && (*s)[0] > 4) return true;
  }
  return false;
}

}  // namespace

using detail::Code;
using detail::Compiler;
using detail::Format;
using detail::Instr;
using detail::kBf16;
using detail::kind_of;
using detail::Layout;

template <typename Timer>
at::Tensor CompiledStage::Impl::execute(const at::Tensor& input, Timer&& timer) {
  TORCH_CHECK(input.scalar_type() == input_dtype(), "stage input must be ", input_dtype(), ", got ",
              input.scalar_type());
  TORCH_CHECK(input.dim() == static_cast<int64_t>(in_shape.size()) + 1 &&
                  input.sizes().slice(1).vec() == in_shape,
              "stage input must be [batch, ", models::to_string(in_shape), "], got ",
              input.sizes());
  std::optional<ScopedAllocationCache> scope;
  if (cache) scope.emplace(*cache);
  at::Tensor out;
  {
    c10::InferenceMode guard;
    regs.assign(num_regs, at::Tensor());
    regs[0] = prepare_input(input);
    for (size_t i = 0; i < program.size(); ++i) {
      timer(i, [&] { exec(program[i]); });
    }
    out = std::move(regs[out_reg]);
    regs.clear();
  }
  // Outside InferenceMode, so that the caller gets an ordinary tensor it may modify in place;
  // below autograd all the same, which the MKLDNN kernels insist on.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (options.precision == Precision::kInt8 && options.wire_output) return wire_codes(out);
  if (out.scalar_type() != output_dtype()) return out.to(output_dtype()).contiguous();
  return out.is_mkldnn() ? out.to_dense() : out.clone(at::MemoryFormat::Contiguous);
}

CompiledStage::CompiledStage(models::QuiltModelImpl& model, size_t stage, int64_t batch_size,
                             const CompileOptions& options)
    : impl_(std::make_unique<Impl>()) {
  if (stage >= model.num_stages())
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s) (0..{})",
                                 stage, model.num_stages(), model.num_stages() - 1));
  if (batch_size < 1) throw BoardError(fmt::format("batch size {} must be >= 1", batch_size));
  torch::NoGradGuard no_grad;
  const models::StageSpec& spec = model.stage(stage);
  impl_->in_shape = spec.in_shape;
  impl_->out_shape = spec.out_shape;
  impl_->options = options;
  if (options.precision == Precision::kInt8 && options.calibration.empty())
    throw BoardError(
        "int8 needs calibration data: give boards.calibration_batches >= 1 (batches of the "
        "experiment's data whose activation ranges fix the quantization)");
  if (options.cache_allocations)
    impl_->cache = std::make_unique<AllocationCache>(options.huge_pages);

  // Every module is lowered by operation through its graph (inference_graph.h): the codecs of
  // the cuts and the zoo's units traced, a TorchScript model's units frozen as one graph.
  Compiler c(spec.in_shape, options.force_fallback);
  int x = c.input();
  if (stage > 0) {
    if (auto m = model.decoder_module(stage - 1); !m.is_empty()) x = c.any(m, x, "decoder");
  }
  if (is_torchscript(model)) {
    x = detail::lower_torchscript_units(c, *model.base(), spec.first_unit, spec.end_unit, x);
  } else {
    const auto& units = model.base()->units();
    for (size_t u = spec.first_unit; u < spec.end_unit; ++u)
      x = c.any(units[u].module, x, units[u].name);
  }
  if (stage + 1 < model.num_stages()) {
    if (auto m = model.encoder_module(stage); !m.is_empty()) x = c.any(m, x, "encoder");
  }
  if (c.regs()[x].layout == Layout::kMkldnn) x = c.dense(x);
  TORCH_INTERNAL_ASSERT(c.regs()[x].shape == spec.out_shape, "stage ", stage,
                        " compiles to output ", models::to_string(c.regs()[x].shape),
                        " but the model says ", models::to_string(spec.out_shape));
  impl_->out_reg = c.finish(x);
  impl_->num_regs = static_cast<int>(c.regs().size());
  impl_->program = std::move(c.instrs());
  impl_->fallbacks = std::move(c.fallbacks());
  // The precision is a property of the lowering's memory descriptors: the same program, its
  // blocked registers (and conv weights) in bf16 (accumulation in f32 inside oneDNN), or in
  // int8 codes with the scales calibration gives (calibrate_int8).
  if (!options.winograd)
    for (Instr& in : impl_->program) in.format.winograd = false;
  const bool uneven = uneven_channels(impl_->program);
  if (uneven)
    for (Instr& in : impl_->program) in.format.channels_last = true;
  if (options.precision == Precision::kBf16) {
    Format f;
    f.src = f.src2 = f.dst = kBf16;
    f.channels_last = uneven;
    // nChw16c like fp32: oneDNN 2.6 runs bf16 convs there (jit_bf16) about as fast as in nhwc
    // (brgconv), measured side by side; so the layout is the same in fp32 and bf16.
    for (Instr& in : impl_->program) in.format = f;
    if (options.wire_output) impl_->out_dense_dtype = at::kBFloat16;
  } else if (options.precision == Precision::kInt8) {
    for (Instr& in : impl_->program) in.format.winograd = false;  // as stage_calibration_inputs
    impl_->calibrate_int8();
    impl_->options.calibration.clear();  // not kept: the caller's batches
  }
  for (const Instr& in : impl_->program) {
    if (options.precision != Precision::kFp32 && options.wire_input && in.code != Code::kToMkldnn &&
        (in.a == 0 || in.b == 0 || std::find(in.srcs.begin(), in.srcs.end(), 0) != in.srcs.end()))
      impl_->input_to_float = true;
  }
}

CompiledStage::~CompiledStage() = default;
CompiledStage::CompiledStage(CompiledStage&&) noexcept = default;
CompiledStage& CompiledStage::operator=(CompiledStage&&) noexcept = default;

at::Tensor CompiledStage::run(const at::Tensor& input) {
  return impl_->execute(input, [](size_t, auto&& f) { f(); });
}

at::Tensor CompiledStage::run_profiled(const at::Tensor& input, std::vector<double>& op_seconds) {
  op_seconds.resize(impl_->program.size(), 0.0);
  return impl_->execute(input, [&](size_t i, auto&& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    op_seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
}

std::vector<OpInfo> CompiledStage::ops() const {
  std::vector<OpInfo> out;
  for (const auto& in : impl_->program) out.push_back(OpInfo{kind_of(in.code), in.name, in.flops});
  return out;
}

const std::vector<std::string>& CompiledStage::fallbacks() const { return impl_->fallbacks; }

std::string CompiledStage::summary() const {
  std::map<std::string, int> count;
  std::vector<std::string> order;
  for (const auto& in : impl_->program) {
    std::string k = kind_of(in.code);
    if (count[k]++ == 0) order.push_back(k);
  }
  std::vector<std::string> parts;
  for (const auto& k : order) parts.push_back(fmt::format("{} {}", count[k], k));
  return fmt::format("{} ops: {}; {}", impl_->program.size(), fmt::join(parts, ", "),
                     impl_->fallbacks.empty()
                         ? std::string("no fallback")
                         : fmt::format("fallback: {}", fmt::join(impl_->fallbacks, ", ")));
}

at::ScalarType CompiledStage::input_dtype() const { return impl_->input_dtype(); }
at::ScalarType CompiledStage::output_dtype() const { return impl_->output_dtype(); }
// fp32 and bf16 have no quantization.
std::pair<double, int64_t> CompiledStage::input_quantization() const {
  if (impl_->options.precision != Precision::kInt8) return {1.0, 0};
  return {impl_->q_in.scale, impl_->q_in.wire_zero_point()};
}
std::pair<double, int64_t> CompiledStage::output_quantization() const {
  if (impl_->options.precision != Precision::kInt8) return {1.0, 0};
  return {impl_->q_out.scale, impl_->q_out.wire_zero_point()};
}
Precision CompiledStage::precision() const { return impl_->options.precision; }

const std::vector<int64_t>& CompiledStage::in_shape() const { return impl_->in_shape; }
const std::vector<int64_t>& CompiledStage::out_shape() const { return impl_->out_shape; }

// The float inputs int8 calibrates on come from the fp32 program, the one calibrate_int8 runs on
// them: stage k's output register and stage k+1's input register then see the same float
// numbers, so both sides of a cut derive the same quantization.
std::vector<at::Tensor> stage_calibration_inputs(models::QuiltModelImpl& model, size_t stage,
                                                 const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs;
  for (const auto& x : inputs) xs.push_back(x.to(at::kFloat).contiguous());
  for (size_t s = 0; s < stage; ++s) {
    CompileOptions o;
    o.cache_allocations = false;
    o.winograd = false;  // the float program of calibrate_int8
    CompiledStage compiled(model, s, xs.empty() ? 1 : xs[0].size(0), o);
    for (auto& x : xs) x = compiled.run(x);
  }
  return xs;
}

std::vector<at::Tensor> run_in_precision(models::QuiltModelImpl& model, Precision precision,
                                         const std::vector<at::Tensor>& calibration,
                                         const std::vector<at::Tensor>& inputs) {
  std::vector<at::Tensor> xs = inputs;
  std::vector<at::Tensor> cal = calibration;
  const size_t n = model.num_stages();
  for (size_t s = 0; s < n; ++s) {
    CompileOptions o;
    o.cache_allocations = false;
    o.precision = precision;
    o.wire_input = s > 0;
    o.wire_output = s + 1 < n;
    if (precision == Precision::kInt8) o.calibration = stage_calibration_inputs(model, s, cal);
    CompiledStage compiled(model, s, xs.empty() ? 1 : xs[0].size(0), o);
    for (auto& x : xs) x = compiled.run(x);
  }
  return xs;
}

}  // namespace quilt::backends
