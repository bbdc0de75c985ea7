// A TorchScript model's stage as a graph for the stage compiler, and the whole-graph fallback
// for graphs it cannot lower.

#include "backends/torchscript_stage.h"

#include "backends/inference_compiler.h"
#include "models/quilt_model.h"
#include "models/torchscript.h"

#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/torch.h>

#include <limits>

namespace quilt::backends {

bool is_torchscript(const models::QuiltModelImpl& model) {
  return dynamic_cast<const models::TorchScriptModelImpl*>(model.base().get()) != nullptr;
}

namespace detail {
namespace {

std::vector<at::Tensor> flat(const c10::IValue& v) {
  std::vector<at::Tensor> ts;
  if (v.isTensor()) {
    ts.push_back(v.toTensor());
  } else {
    for (const auto& e : v.toTupleRef().elements()) ts.push_back(e.toTensor());
  }
  // optimize_for_inference may hand back oneDNN-layout tensors; to_dense() of a strided one
  // is a no-op.
  for (auto& t : ts)
    if (t.is_mkldnn()) t = t.to_dense();
  return ts;
}

// A whole frozen graph as one fallback: packed in, packed out.
struct ScriptCall final : FallbackCall {
  mutable torch::jit::Module module;  // forward() is not const
  std::vector<models::Shape> in_shapes;
  at::Tensor run(const std::vector<at::Tensor>& srcs, int64_t /*n*/) const override {
    std::vector<c10::IValue> args;
    for (auto& t : models::unpack(srcs.at(0), in_shapes)) args.emplace_back(t);
    return models::pack(flat(module.forward(std::move(args)))).contiguous();
  }
};

// `frozen` through optimize_for_inference, checked on one random batch against the plain
// frozen graph: where its rewrites change the result beyond float rounding (LibTorch 1.13 does
// so on MobileNetV3) or fail, the plain frozen graph. Sets `note` to say which.
torch::jit::Module optimized(const torch::jit::Module& frozen,
                             const std::vector<models::Shape>& in_shapes, std::string& note) {
  torch::jit::Module plain = frozen.clone();
  torch::jit::Module copy = frozen.clone();
  torch::jit::Module opt = torch::jit::optimize_for_inference(copy);
  c10::InferenceMode guard;
  std::vector<c10::IValue> args;
  for (const auto& shape : in_shapes) {
    std::vector<int64_t> sizes = {2};
    sizes.insert(sizes.end(), shape.begin(), shape.end());
    args.emplace_back(torch::randn(sizes));
  }
  double error = std::numeric_limits<double>::infinity();
  const at::Tensor want = models::pack(flat(plain.forward(args)));
  try {
    const at::Tensor got = models::pack(flat(opt.forward(args)));
    error = ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item<double>();
  } catch (const std::exception&) {
    // oneDNN rejects some shapes the plain graph runs (an adaptive pool of 2x2 to 7x7).
  }
  if (error <= 1e-4) {
    note = "optimize_for_inference";
    return opt;
  }
  note = fmt::format("frozen only: optimize_for_inference changed the outputs by {:.3g}", error);
  return plain;
}

}  // namespace

int lower_torchscript_units(Compiler& c, models::ModelImpl& base, size_t begin, size_t end, int x) {
  auto* ts = dynamic_cast<models::TorchScriptModelImpl*>(&base);
  TORCH_INTERNAL_ASSERT(ts != nullptr,
                        "lower_torchscript_units of a model that is not TorchScript");
  const std::vector<models::Shape>& in_shapes = ts->unit_in_shapes(begin);
  torch::jit::Module frozen = torch::jit::freeze(ts->stage_module(begin, end));
  Compiler::Checkpoint cp = c.checkpoint();
  try {
    std::vector<int> xs;
    if (in_shapes.size() == 1) {
      xs.push_back(c.view(x, 0, in_shapes[0], "unpack"));
    } else {
      int64_t offset = 0;
      for (size_t i = 0; i < in_shapes.size(); ++i) {
        xs.push_back(c.view(x, offset, in_shapes[i], fmt::format("unpack{}", i)));
        offset += models::numel(in_shapes[i]);
      }
    }
    std::vector<int> out = c.graph(*frozen.get_method("forward").graph(), xs, "", 0);
    return out.size() == 1 ? out[0] : c.pack(out, "pack");
  } catch (const Unsupported& u) {
    c.restore(cp);
    auto call = std::make_shared<ScriptCall>();
    std::string note;
    call->module = optimized(frozen, in_shapes, note);
    call->in_shapes = in_shapes;
    return c.fallback(std::move(call), {x}, "torchscript",
                      fmt::format("torchscript ({}; whole graph, {})", u.why, note));
  }
}

}  // namespace detail
}  // namespace quilt::backends
