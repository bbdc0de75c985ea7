#include "backends/torchscript_stage.h"

#include "backends/board.h"
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

struct TorchScriptStage::Impl {
  models::QuiltModelImpl* model = nullptr;
  size_t stage = 0;
  torch::jit::Module module;
  std::vector<models::Shape> in_shapes, out_shapes;  // of the graph, packed order
  std::vector<int64_t> in_shape, out_shape;          // of the stage (encoded where an AE is)
  size_t nodes = 0;
  bool optimized = true;     // false: optimize_for_inference changed the outputs, not used
  double check_error = 0.0;  // relative, optimised vs plain frozen graph
};

TorchScriptStage::TorchScriptStage(models::QuiltModelImpl& model, size_t stage)
    : impl_(std::make_unique<Impl>()) {
  auto* ts = dynamic_cast<models::TorchScriptModelImpl*>(model.base().get());
  if (ts == nullptr) throw BoardError("TorchScriptStage: the model is not a TorchScript model");
  if (stage >= model.num_stages()) {
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s)", stage,
                                 model.num_stages()));
  }
  const auto& spec = model.stage(stage);
  impl_->model = &model;
  impl_->stage = stage;
  impl_->in_shape = spec.in_shape;
  impl_->out_shape = spec.out_shape;
  impl_->in_shapes = ts->unit_in_shapes(spec.first_unit);
  impl_->out_shapes = ts->unit_out_shapes(spec.end_unit - 1);
  torch::jit::Module m = ts->stage_module(spec.first_unit, spec.end_unit);
  torch::jit::Module frozen = torch::jit::freeze(m);
  torch::jit::Module plain = frozen.clone();
  impl_->module = torch::jit::optimize_for_inference(frozen);
  // optimize_for_inference's rewrites are checked on one random batch against the plain frozen
  // graph: where they change the result beyond float rounding (LibTorch 1.13 does so on
  // MobileNetV3) or fail, the stage runs the plain frozen graph instead and says so.
  {
    c10::InferenceMode guard;
    std::vector<c10::IValue> args;
    for (const auto& shape : impl_->in_shapes) {
      std::vector<int64_t> sizes = {2};
      sizes.insert(sizes.end(), shape.begin(), shape.end());
      args.emplace_back(torch::randn(sizes));
    }
    auto flat = [&](const c10::IValue& v) {
      std::vector<at::Tensor> ts;
      if (v.isTensor()) {
        ts.push_back(v.toTensor());
      } else {
        for (const auto& e : v.toTupleRef().elements()) ts.push_back(e.toTensor());
      }
      for (auto& t : ts)
        if (t.is_mkldnn()) t = t.to_dense();
      return models::pack(ts);
    };
    const at::Tensor want = flat(plain.forward(args));
    try {
      const at::Tensor got = flat(impl_->module.forward(args));
      impl_->check_error =
          ((got - want).abs().max() / want.abs().max().clamp_min(1e-12)).item<double>();
    } catch (const std::exception&) {
      // oneDNN rejects some shapes the plain graph runs (an adaptive pool of 2x2 to 7x7).
      impl_->check_error = std::numeric_limits<double>::infinity();
    }
    if (!(impl_->check_error <= 1e-4)) {
      impl_->module = plain;
      impl_->optimized = false;
    }
  }
  impl_->nodes = 0;
  for (auto* n : impl_->module.get_method("forward").graph()->nodes()) {
    (void)n;
    ++impl_->nodes;
  }
}

TorchScriptStage::~TorchScriptStage() = default;
TorchScriptStage::TorchScriptStage(TorchScriptStage&&) noexcept = default;
TorchScriptStage& TorchScriptStage::operator=(TorchScriptStage&&) noexcept = default;

at::Tensor TorchScriptStage::run(const at::Tensor& input) {
  c10::InferenceMode guard;
  auto& m = *impl_->model;
  const size_t k = impl_->stage;
  at::Tensor x = input;
  if (k > 0 && m.has_autoencoder(k - 1)) x = m.decode(k - 1, x);
  std::vector<c10::IValue> args;
  for (auto& t : models::unpack(x, impl_->in_shapes)) args.emplace_back(t);
  c10::IValue out = impl_->module.forward(std::move(args));
  std::vector<at::Tensor> outs;
  if (impl_->out_shapes.size() == 1) {
    outs.push_back(out.toTensor());
  } else {
    for (const auto& e : out.toTupleRef().elements()) outs.push_back(e.toTensor());
  }
  // optimize_for_inference may hand back oneDNN-layout tensors at the graph's edges only if
  // the graph asks for them; to_dense() is a no-op on strided ones.
  for (auto& t : outs)
    if (t.is_mkldnn()) t = t.to_dense();
  x = models::pack(outs);
  if (k + 1 < m.num_stages() && m.has_autoencoder(k)) x = m.encode(k, x);
  return x.contiguous();
}

const std::vector<int64_t>& TorchScriptStage::in_shape() const { return impl_->in_shape; }
const std::vector<int64_t>& TorchScriptStage::out_shape() const { return impl_->out_shape; }

std::string TorchScriptStage::summary() const {
  if (!impl_->optimized) {
    return fmt::format(
        "TorchScript stage: {} graph nodes, frozen only (optimize_for_inference changed the "
        "outputs by {:.3g} relative)",
        impl_->nodes, impl_->check_error);
  }
  return fmt::format("TorchScript stage: {} graph nodes after optimize_for_inference",
                     impl_->nodes);
}

}  // namespace quilt::backends
