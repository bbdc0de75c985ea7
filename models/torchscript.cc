#include "models/torchscript.h"

#include "models/state_dict.h"
#include "models/torchscript_graph.h"
#include "models/torchscript_profile.h"
#include "models/zoo.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <map>
#include <set>

namespace quilt::models {

using torch::jit::Value;
using torchscript_detail::analyse;
using torchscript_detail::load_file;
using torchscript_detail::make_module;
using torchscript_detail::module_path;
using torchscript_detail::slice;
using torchscript_detail::tensor_name;
using torchscript_detail::tensors_of;

std::vector<TorchScriptCut> torchscript_cuts(const std::string& path, const Shape& input) {
  auto g = analyse(path, load_file(path), input);
  std::vector<TorchScriptCut> out;
  for (const auto& c : g->candidates) {
    TorchScriptCut t;
    t.name = "after_" + c.path;
    t.top_level = c.depth == 1;
    t.invalid = c.invalid;
    if (c.invalid.empty()) {
      for (const Value* v : c.crossing) {
        t.tensors.push_back(CutTensor{tensor_name(v, v == g->input), g->sample_shape(v)});
        t.bytes_per_sample += 4 * numel(t.tensors.back().shape);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

ScriptSegmentImpl::ScriptSegmentImpl(torch::jit::Module module, std::vector<Shape> in_shapes,
                                     std::vector<Shape> out_shapes, int64_t macs)
    : module_(std::move(module)),
      in_shapes_(std::move(in_shapes)),
      out_shapes_(std::move(out_shapes)),
      macs_(macs) {}

torch::Tensor ScriptSegmentImpl::forward(torch::Tensor x) {
  std::vector<c10::IValue> args;
  for (auto& t : unpack(x, in_shapes_)) args.emplace_back(t);
  return pack(tensors_of(module_.forward(std::move(args)), out_shapes_.size()));
}

TorchScriptModelImpl::TorchScriptModelImpl(const std::string& path, const Shape& input,
                                           const std::vector<std::string>& extra_cuts)
    : ModelImpl("torchscript"), path_(path), extra_cuts_(extra_cuts) {
  if (input.empty()) {
    throw ModelError(fmt::format(
        "model.input: a TorchScript model needs its per-sample input shape (e.g. [3, 224, 224]) "
        "for `{}`",
        path));
  }
  input_shape_ = input;
  scripted_ = load_file(path);
  build();
}

TorchScriptModelImpl::~TorchScriptModelImpl() = default;

void TorchScriptModelImpl::build() {
  graph_ = analyse(path_, scripted_, input_shape_);
  const auto& g = *graph_;
  std::map<size_t, std::string> cut_at;  // position -> cut name
  for (const auto& c : g.candidates)
    if (c.depth == 1 && c.invalid.empty()) cut_at.emplace(c.position, "after_" + c.path);
  std::set<std::string> seen;
  for (const auto& name : extra_cuts_) {
    if (!seen.insert(name).second) continue;
    const Candidate* c = g.find(name);
    if (c == nullptr) {
      throw ModelError(
          fmt::format("unknown cut \"{}\" for the TorchScript model `{}`; valid cuts: {}", name,
                      path_, g.valid_names()));
    }
    if (!c->invalid.empty()) {
      throw ModelError(
          fmt::format("cut \"{}\" of the TorchScript model `{}` is not valid: {}; valid "
                      "cuts: {}",
                      name, path_, c->invalid, g.valid_names()));
    }
    cut_at[c->position] = name;  // replaces a default cut at the same place
  }

  units_.clear();
  cuts_.clear();
  unit_begin_.clear();
  std::vector<size_t> positions = {0};
  for (const auto& [p, name] : cut_at) positions.push_back(p);
  positions.push_back(g.top.size());
  unit_begin_ = positions;
  std::set<std::string> unit_names;
  auto it = cut_at.begin();
  for (size_t u = 0; u + 1 < positions.size(); ++u, ++it) {
    const size_t begin = positions[u], end = positions[u + 1];
    const std::vector<Value*> ins = u == 0 ? std::vector<Value*>{g.input} : g.live_at(begin);
    const std::vector<Value*> outs =
        end == g.top.size() ? std::vector<Value*>{g.output} : g.live_at(end);
    std::vector<Shape> in_shapes, out_shapes;
    for (const Value* v : ins) in_shapes.push_back(g.sample_shape(v));
    for (const Value* v : outs) out_shapes.push_back(g.sample_shape(v));
    int64_t macs = 0;
    for (size_t i = begin; i < end; ++i) macs += g.macs_at[i];
    std::string name = end == g.top.size() ? "" : it->second.substr(6);
    if (name.empty()) {
      for (size_t i = begin; i < end; ++i) {
        auto path = module_path(g.top[i]);
        if (!path.empty()) name = path[0];
      }
    }
    if (name.empty() || unit_names.count(name)) name = fmt::format("segment{}", u);
    unit_names.insert(name);
    torch::jit::Module segment = make_module(slice(g, begin, end, ins, outs));
    // Attention's projections and matmuls run inside an `if` (MultiheadAttention's fast-path
    // checks): counted with the branch the input takes (torchscript_profile.h).
    macs = resolved_macs(segment, in_shapes, path_, macs);
    add_unit(name, torch::nn::AnyModule(ScriptSegment(segment, in_shapes, out_shapes, macs)));
    if (end != g.top.size()) {
      std::vector<CutTensor> tensors;
      for (const Value* v : outs)
        tensors.push_back(CutTensor{tensor_name(v, v == g.input), g.sample_shape(v)});
      add_cut(it->second, std::move(tensors));
    }
  }
  const Shape out = g.sample_shape(g.output);
  num_classes_ = out.empty() ? 1 : out.back();
  finish();
}

torch::jit::Module TorchScriptModelImpl::stage_module(size_t begin, size_t end) const {
  TORCH_CHECK(begin < end && end < unit_begin_.size(), "stage_module(", begin, ", ", end,
              ") out of range for ", units_.size(), " units");
  const auto& g = *graph_;
  const size_t b = unit_begin_[begin], e = unit_begin_[end];
  const std::vector<Value*> ins = b == 0 ? std::vector<Value*>{g.input} : g.live_at(b);
  const std::vector<Value*> outs = e == g.top.size() ? std::vector<Value*>{g.output} : g.live_at(e);
  return make_module(slice(g, b, e, ins, outs));
}

const std::vector<Shape>& TorchScriptModelImpl::unit_in_shapes(size_t unit) const {
  return units_.at(unit).module.get<ScriptSegment>()->in_shapes();
}

const std::vector<Shape>& TorchScriptModelImpl::unit_out_shapes(size_t unit) const {
  return units_.at(unit).module.get<ScriptSegment>()->out_shapes();
}

void TorchScriptModelImpl::load_weights(const std::string& weights_path) {
  const auto entries = read_state_dict(weights_path);
  std::map<std::string, at::Tensor> targets;
  for (const auto& p : scripted_.named_parameters(/*recurse=*/true)) targets[p.name] = p.value;
  for (const auto& b : scripted_.named_buffers(/*recurse=*/true)) targets[b.name] = b.value;
  std::set<std::string> given;
  for (const auto& [key, tensor] : entries) {
    auto t = targets.find(key);
    if (t == targets.end()) {
      throw ModelError(
          fmt::format("model.weights: `{}` has key \"{}\", which the TorchScript model "
                      "`{}` does not have",
                      weights_path, key, path_));
    }
    if (t->second.sizes() != tensor.sizes()) {
      throw ModelError(fmt::format(
          "model.weights: `{}` key \"{}\" has shape {} but the model's is {}", weights_path, key,
          fmt::join(tensor.sizes(), "x"), fmt::join(t->second.sizes(), "x")));
    }
    given.insert(key);
  }
  for (const auto& [key, tensor] : targets) {
    const bool optional = key.size() >= 19 && key.rfind("num_batches_tracked") == key.size() - 19;
    if (!given.count(key) && !optional) {
      throw ModelError(
          fmt::format("model.weights: `{}` lacks key \"{}\" of the TorchScript model `{}`",
                      weights_path, key, path_));
    }
  }
  {
    torch::NoGradGuard no_grad;
    for (const auto& [key, tensor] : entries)
      targets.at(key).copy_(tensor.to(targets.at(key).dtype()));
  }
  build();
}

}  // namespace quilt::models
