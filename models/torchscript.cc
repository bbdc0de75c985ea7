#include "models/torchscript.h"

#include "models/state_dict.h"
#include "models/torchscript_graph.h"
#include "models/torchscript_profile.h"
#include "models/zoo.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <functional>
#include <map>
#include <set>

namespace quilt::models {

using torch::jit::Block;
using torch::jit::Node;
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

namespace {

// The attribute path from `self` that prim::GetAttr node `n` reads ("features", "0", "weight").
std::vector<std::string> attribute_path(const Node* n, const Value* self) {
  std::vector<std::string> path;
  for (; n->kind() == c10::prim::GetAttr; n = n->input(0)->node()) {
    path.insert(path.begin(), n->s(c10::attr::name));
    if (n->input(0) == self) return path;
  }
  return {};
}

// Every prim::GetAttr of `block` and its sub-blocks.
void attribute_reads(Block* block, std::vector<Node*>& out) {
  for (Node* n : block->nodes()) {
    if (n->kind() == c10::prim::GetAttr) out.push_back(n);
    for (Block* b : n->blocks()) attribute_reads(b, out);
  }
}

}  // namespace

ScriptSegmentImpl::ScriptSegmentImpl(std::shared_ptr<torch::jit::GraphFunction> function,
                                     torch::jit::Module owner, std::vector<Shape> in_shapes,
                                     std::vector<Shape> out_shapes, int64_t macs)
    : function_(std::move(function)),
      module_(std::move(owner)),
      in_shapes_(std::move(in_shapes)),
      out_shapes_(std::move(out_shapes)),
      macs_(macs) {
  // The tensors the graph reads from the module, registered here too so that the unit's
  // parameters() is its share of the model's (summaries count them per stage).
  const auto& graph = function_->graph();
  std::vector<Node*> reads;
  attribute_reads(graph->block(), reads);
  std::set<std::string> seen;
  for (Node* n : reads) {
    const auto path = attribute_path(n, graph->inputs()[0]);
    if (path.empty()) continue;
    c10::intrusive_ptr<c10::ivalue::Object> obj = module_._ivalue();
    for (size_t i = 0; i + 1 < path.size() && obj; ++i) {
      const c10::IValue v = obj->getAttr(path[i]);
      obj = v.isObject() ? v.toObject() : c10::intrusive_ptr<c10::ivalue::Object>();
    }
    if (!obj) continue;
    const auto& type = obj->type();
    const auto slot = type->findAttributeSlot(path.back());
    if (!slot) continue;
    const c10::IValue v = obj->getSlot(*slot);
    if (!v.isTensor()) continue;
    std::string name = fmt::format("{}", fmt::join(path, "_"));
    if (!seen.insert(name).second) continue;
    if (type->is_parameter(*slot)) {
      register_parameter(name, v.toTensor(), v.toTensor().requires_grad());
    } else if (type->is_buffer(*slot)) {
      register_buffer(name, v.toTensor());
    }
  }
}

ScriptSegmentImpl::ScriptSegmentImpl(torch::jit::Module module, std::vector<Shape> in_shapes,
                                     std::vector<Shape> out_shapes, int64_t macs)
    : module_(std::move(module)),
      in_shapes_(std::move(in_shapes)),
      out_shapes_(std::move(out_shapes)),
      macs_(macs) {}

torch::Tensor ScriptSegmentImpl::forward(torch::Tensor x) {
  std::vector<c10::IValue> args;
  args.reserve(in_shapes_.size() + 1);
  if (function_) args.emplace_back(module_._ivalue());
  for (auto& t : unpack(x, in_shapes_)) args.emplace_back(t);
  if (!function_) return pack(tensors_of(module_.forward(std::move(args)), out_shapes_.size()));
  function_->run(args);
  TORCH_INTERNAL_ASSERT(args.size() == 1, "a segment's graph returns one value");
  return pack(tensors_of(args.back(), out_shapes_.size()));
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
  register_weights();
  // It starts in the mode the file was saved in (usually eval: a model is saved for inference).
  ModelImpl::train(torchscript_detail::is_training(scripted_));
}

TorchScriptModelImpl::~TorchScriptModelImpl() = default;

void TorchScriptModelImpl::register_weights() {
  std::function<void(torch::nn::Module&, const torch::jit::Module&)> mirror =
      [&](torch::nn::Module& into, const torch::jit::Module& from) {
        for (const auto& p : from.named_parameters(/*recurse=*/false))
          into.register_parameter(p.name, p.value, p.value.requires_grad());
        for (const auto& b : from.named_buffers(/*recurse=*/false))
          into.register_buffer(b.name, b.value);
        for (const auto& c : from.named_children()) {
          auto child = std::make_shared<torch::nn::Module>(c.name);
          mirror(*child, c.value);
          into.register_module(c.name, child);
        }
      };
  mirror(*this, scripted_);
}

void TorchScriptModelImpl::train(bool on) {
  ModelImpl::train(on);
  torchscript_detail::set_training(scripted_, on);
}

uint64_t TorchScriptModelImpl::weights_fingerprint() const {
  // FNV-1a over 8-byte words: a pass over the weights, far cheaper than freezing again.
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](const at::Tensor& t) {
    const at::Tensor c = t.detach().contiguous();
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = c.nbytes();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, bytes + i, 8);
      h = (h ^ w) * 1099511628211ULL;
    }
    for (; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
    h = (h ^ n) * 1099511628211ULL;
  };
  for (const auto& p : scripted_.parameters(/*recurse=*/true)) mix(p);
  for (const auto& b : scripted_.buffers(/*recurse=*/true)) mix(b);
  return h;
}

namespace {

// Where the frozen cuts are in the graph before freezing (training mode): per unit boundary its
// position (first 0, last the graph's end) and per cut the values that cross it.
struct TrainingCuts {
  std::vector<size_t> at = {0};
  std::vector<std::vector<Value*>> crossing;
};

// Finds each frozen cut `names[i]` (at frozen position frozen_at[i]) in `t`: after the same
// submodule, with as many tensors crossing. Returns why one cannot train, or empty.
std::string locate_training_cuts(const TorchScriptGraph& f, const TorchScriptGraph& t,
                                 const std::vector<std::string>& names,
                                 const std::vector<size_t>& frozen_at, const std::string& path,
                                 TrainingCuts& cuts) {
  for (size_t i = 0; i < names.size(); ++i) {
    const Candidate* c = t.find(names[i]);
    std::string why;
    if (c == nullptr) {
      why = "its submodule runs no operation in training mode";
    } else if (!c->invalid.empty()) {
      why = c->invalid + " in training mode";
    } else if (c->position <= cuts.at.back()) {
      why = "its operations are in another order in training mode";
    } else if (c->crossing.size() != f.live_at(frozen_at[i]).size()) {
      why = fmt::format("{} value(s) cross it in training mode but {} in eval mode",
                        c->crossing.size(), f.live_at(frozen_at[i]).size());
    }
    if (!why.empty()) {
      return fmt::format(
          "cut \"{}\" of the TorchScript model `{}` cannot train: {}; train at other cuts "
          "(`quilt models --file` lists them)",
          names[i], path, why);
    }
    cuts.at.push_back(c->position);
    cuts.crossing.push_back(c->crossing);
  }
  cuts.at.push_back(t.top.size());
  return {};
}

// Runs the graph before freezing once (eval mode, a batch of 2 zeros) and returns its output
// followed by every crossing tensor; sets `failed` instead when it throws.
std::vector<at::Tensor> probe_training_graph(torch::jit::Module& scripted,
                                             const TorchScriptGraph& t, const TrainingCuts& cuts,
                                             const Shape& input_shape, std::string& failed) {
  std::vector<Value*> probed = {t.output};
  for (const auto& vs : cuts.crossing) probed.insert(probed.end(), vs.begin(), vs.end());
  torch::NoGradGuard no_grad;
  const bool training = torchscript_detail::is_training(scripted);
  torchscript_detail::set_training(scripted, false);
  torch::jit::GraphFunction probe("__torch__.quilt.probe",
                                  slice(t, 0, t.top.size(), {t.input}, probed), nullptr,
                                  torch::jit::ExecutorExecutionMode::SIMPLE);
  Shape batch = {2};
  batch.insert(batch.end(), input_shape.begin(), input_shape.end());
  torch::jit::Stack stack = {scripted._ivalue(), torch::zeros(batch)};
  std::vector<at::Tensor> results;
  try {
    probe.run(stack);
    results = tensors_of(stack.back(), probed.size());
  } catch (const std::exception& e) {
    failed = e.what();
    failed = failed.substr(0, failed.find('\n'));
  }
  torchscript_detail::set_training(scripted, training);
  return results;
}

// Checks that the probe's output and crossing tensors have the frozen graph's per-sample
// shapes. Returns why not, or empty.
std::string check_training_shapes(const TorchScriptGraph& f, const std::vector<at::Tensor>& results,
                                  const TrainingCuts& cuts, const std::vector<std::string>& names,
                                  const std::vector<size_t>& frozen_at, const std::string& path) {
  if (results[0].sizes().slice(1).vec() != f.sample_shape(f.output)) {
    return fmt::format(
        "the TorchScript model `{}` returns {} per sample in eval mode but {} before freezing",
        path, to_string(f.sample_shape(f.output)), fmt::join(results[0].sizes().slice(1), "x"));
  }
  size_t r = 1;
  for (size_t i = 0; i < cuts.crossing.size(); ++i) {
    const auto frozen = f.live_at(frozen_at[i]);
    for (size_t j = 0; j < cuts.crossing[i].size(); ++j, ++r) {
      const auto want = f.sample_shape(frozen[j]);
      const auto& got = results[r];
      if (got.dim() != static_cast<int64_t>(want.size()) + 1 ||
          got.sizes().slice(1).vec() != want) {
        return fmt::format(
            "cut \"{}\" of the TorchScript model `{}` cannot train: tensor {} crosses it as {} "
            "in eval mode but as {} before freezing",
            names[i], path, j, to_string(want), fmt::join(got.sizes(), "x"));
      }
    }
  }
  return {};
}

}  // namespace

std::vector<std::shared_ptr<torch::jit::GraphFunction>> TorchScriptModelImpl::training_functions(
    const std::vector<std::string>& names, const std::vector<size_t>& frozen_at) {
  training_error_.clear();
  // The first reason is kept; a later one is checked only while none is known.
  auto fail = [&](const std::string& why) {
    if (training_error_.empty()) training_error_ = why;
  };
  if (scripted_.parameters(/*recurse=*/true).size() == 0) {
    fail(
        fmt::format("the TorchScript model `{}` has no parameters to train (a model saved after "
                    "torch.jit.freeze has its weights folded into the graph as constants: save "
                    "torch.jit.script(model) of the model before freezing)",
                    path_));
  }
  if (!training_graph_) {
    try {
      training_graph_ = torchscript_detail::analyse_training(path_, scripted_);
    } catch (const std::exception& e) {
      fail(fmt::format("the graph of `{}` before freezing cannot be cut as its frozen graph: {}",
                       path_, e.what()));
      return {};
    }
  }
  const auto& t = *training_graph_;
  TrainingCuts cuts;
  if (std::string why = locate_training_cuts(*graph_, t, names, frozen_at, path_, cuts);
      !why.empty()) {
    fail(why);
    return {};
  }
  std::string failed;
  const std::vector<at::Tensor> results =
      probe_training_graph(scripted_, t, cuts, input_shape_, failed);
  if (!failed.empty()) {
    fail(fmt::format("the TorchScript model `{}` fails before freezing: {}", path_, failed));
    return {};
  }
  fail(check_training_shapes(*graph_, results, cuts, names, frozen_at, path_));
  if (!training_error_.empty()) return {};
  std::vector<std::shared_ptr<torch::jit::GraphFunction>> out;
  for (size_t u = 0; u + 1 < cuts.at.size(); ++u) {
    const std::vector<Value*> ins = u == 0 ? std::vector<Value*>{t.input} : cuts.crossing[u - 1];
    const std::vector<Value*> outs =
        u + 1 == cuts.at.size() - 1 ? std::vector<Value*>{t.output} : cuts.crossing[u];
    out.push_back(std::make_shared<torch::jit::GraphFunction>(
        fmt::format("__torch__.quilt.Segment{}", u),
        slice(t, cuts.at[u], cuts.at[u + 1], ins, outs), nullptr,
        torch::jit::ExecutorExecutionMode::SIMPLE));
  }
  return out;
}

void TorchScriptModelImpl::build() {
  graph_ = analyse(path_, scripted_, input_shape_);
  graph_fingerprint_ = weights_fingerprint();
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
  std::vector<std::string> names;
  for (const auto& [p, name] : cut_at) {
    positions.push_back(p);
    names.push_back(name);
  }
  positions.push_back(g.top.size());
  unit_begin_ = positions;
  const auto functions =
      training_functions(names, std::vector<size_t>(positions.begin() + 1, positions.end() - 1));
  std::set<std::string> unit_names;
  auto it = cut_at.begin();
  for (size_t u = 0; u + 1 < positions.size(); ++u, it = it == cut_at.end() ? it : std::next(it)) {
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
    if (!functions.empty()) {
      add_unit(name, torch::nn::AnyModule(
                         ScriptSegment(functions[u], scripted_, in_shapes, out_shapes, macs)));
    } else {
      add_unit(name, torch::nn::AnyModule(ScriptSegment(segment, in_shapes, out_shapes, macs)));
    }
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
  if (weights_fingerprint() != graph_fingerprint_) {
    // Trained or loaded since it was frozen: freeze the current weights. The same module and
    // passes give the same graph, so the units' positions still hold, unless the graph folds
    // control flow on weight values (then the cuts would mean other places).
    auto fresh = analyse(path_, scripted_, input_shape_);
    if (fresh->top.size() != graph_->top.size()) {
      throw ModelError(fmt::format(
          "the TorchScript model `{}` frozen with its current weights has {} operations, not {} "
          "as when it was cut: its forward branches on weight values, so its cuts do not carry "
          "over to the new weights",
          path_, fresh->top.size(), graph_->top.size()));
    }
    graph_ = std::move(fresh);
    graph_fingerprint_ = weights_fingerprint();
  }
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
