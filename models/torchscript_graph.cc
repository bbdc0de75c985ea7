#include "models/torchscript_graph.h"

#include "models/zoo.h"

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/passes/peephole.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>

namespace quilt::models::torchscript_detail {

namespace {

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

// LibTorch's message without its C++ backtrace.
std::string message_of(const std::exception& e) {
  std::string s = e.what();
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) s = c->what_without_backtrace();
  // The TorchScript interpreter's errors start with a traceback; the cause is the last line.
  if (s.rfind("The following operation failed", 0) == 0) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    const auto nl = s.rfind('\n');
    if (nl != std::string::npos) s = s.substr(nl + 1);
  }
  return first_line(s);
}

bool is_tensor(const Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }
bool has_prefix(const std::vector<std::string>& path, const std::vector<std::string>& prefix) {
  return path.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), path.begin());
}

bool is_mac_node(const Node* n) {
  const auto k = n->kind();
  return k == c10::aten::conv1d || k == c10::aten::conv2d || k == c10::aten::conv3d ||
         k == c10::aten::_convolution || k == c10::aten::linear || k == c10::aten::matmul ||
         k == c10::aten::bmm || k == c10::aten::mm || k == c10::aten::addmm;
}

}  // namespace

std::vector<std::string> module_path(const Node* n) {
  std::vector<std::string> path;
  auto cs = n->callstack();
  if (!cs) return path;
  for (const auto& entry : (*cs)->vec()) {
    const auto& info = std::get<2>(entry);
    if (!info) continue;
    const std::string name = info->instance_name();
    if (name == "SELF" || name == "INSTANCE_NAME_UNKNOWN") continue;
    path.push_back(name);
  }
  return path;
}
std::shared_ptr<Graph> slice(const TorchScriptGraph& g, size_t begin, size_t end,
                             const std::vector<Value*>& inputs,
                             const std::vector<Value*>& outputs) {
  auto ng = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  if (g.self != nullptr) env[g.self] = ng->addInput("self")->copyMetadata(g.self);
  for (Value* v : inputs) env[v] = ng->addInput()->copyMetadata(v);
  std::function<Value*(Value*)> lookup = [&](Value* v) -> Value* {
    auto it = env.find(v);
    if (it != env.end()) return it->second;
    Node* def = v->node();
    TORCH_INTERNAL_ASSERT(g.is_free(def), "value %", v->debugName(),
                          " used in a segment is neither an input of it nor a constant");
    Node* c = ng->createClone(def, lookup);
    ng->appendNode(c);
    env[v] = c->output();
    return c->output();
  };
  for (size_t i = begin; i < end; ++i) {
    Node* n = g.top[i];
    Node* c = ng->createClone(n, lookup);
    ng->appendNode(c);
    for (size_t o = 0; o < n->outputs().size(); ++o) env[n->outputs()[o]] = c->outputs()[o];
  }
  std::vector<Value*> outs;
  for (Value* v : outputs) outs.push_back(lookup(v));
  if (outs.size() == 1) {
    ng->registerOutput(outs[0]);
  } else {
    Node* t = ng->createTuple(outs);
    ng->appendNode(t);
    ng->registerOutput(t->output());
  }
  torch::jit::EliminateDeadCode(ng);
  return ng;
}

// A module (eval mode) whose forward is `graph`.
torch::jit::Module make_module(const std::shared_ptr<Graph>& graph) {
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  auto cls = c10::ClassType::create(c10::QualifiedName("__torch__.quilt.Segment"), cu,
                                    /*is_module=*/true);
  cu->register_type(cls);  // so that freeze()'s clone gets a fresh (mangled) class name
  torch::jit::Module m(cu, cls);
  m.register_attribute("training", c10::BoolType::get(), false);
  graph->insertInput(0, "self")->setType(cls);
  auto* fn = cu->create_function(c10::QualifiedName(*cls->name(), "forward"), graph);
  cls->addMethod(fn);
  return m;
}

std::vector<at::Tensor> tensors_of(const c10::IValue& v, size_t count) {
  if (count == 1) return {v.toTensor()};
  std::vector<at::Tensor> out;
  for (const auto& e : v.toTupleRef().elements()) out.push_back(e.toTensor());
  return out;
}

torch::jit::Module load_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw ModelError(fmt::format(
        "model.path: TorchScript file `{}` does not exist or is not a regular file (save one "
        "with torch.jit.save(torch.jit.script(model), \"{}\"))",
        path, path));
  }
  try {
    return torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    throw ModelError(fmt::format(
        "model.path: `{}` is not a TorchScript file ({}); save the model with "
        "torch.jit.save(torch.jit.script(model), path) or torch.jit.save(torch.jit.trace(model, "
        "example), path); a state_dict file goes in model.weights",
        path, message_of(e)));
  }
}

namespace {

// Tuples built and taken apart again (a submodule returning (out, weights)) would otherwise
// cross cuts as non-tensor values.
void simplify(std::shared_ptr<Graph>& graph) {
  torch::jit::LowerSimpleTuples(graph);
  torch::jit::PeepholeOptimize(graph);
  torch::jit::ConstantPropagation(graph);
  torch::jit::EliminateDeadCode(graph);
}

// Freezes `scripted` into g.frozen and simplifies its forward graph into g.graph.
void freeze_forward(TorchScriptGraph& g, torch::jit::Module scripted) {
  if (!scripted.find_method("forward"))
    throw ModelError(fmt::format("model.path: `{}` has no forward method", g.path));
  // The module may be training (its training graph shares it): freeze a clone in eval mode and
  // leave the module's mode as it was.
  const bool training = is_training(scripted);
  set_training(scripted, false);
  try {
    g.frozen = torch::jit::freeze(scripted, c10::nullopt, /*optimize_numerics=*/false);
  } catch (const std::exception& e) {
    set_training(scripted, training);
    throw ModelError(fmt::format("model.path: cannot freeze the TorchScript model `{}`: {}", g.path,
                                 message_of(e)));
  }
  set_training(scripted, training);
  g.graph = g.frozen.get_method("forward").graph();
  simplify(g.graph);
}

// g.input and g.output: forward must take one tensor and return one tensor.
void find_input_output(TorchScriptGraph& g) {
  std::vector<Value*> inputs;
  for (Value* v : g.graph->inputs())
    if (v->type()->kind() != c10::TypeKind::ClassType) inputs.push_back(v);
  if (inputs.size() != 1 || !is_tensor(inputs[0])) {
    throw ModelError(fmt::format(
        "model.path: the forward of `{}` takes {} argument(s) besides self; Quilt feeds a model "
        "one tensor (model.input is its per-sample shape)",
        g.path, inputs.size()));
  }
  g.input = inputs[0];
  if (g.graph->outputs().size() != 1 || !is_tensor(g.graph->outputs()[0])) {
    throw ModelError(fmt::format(
        "model.path: the forward of `{}` returns {}; every stage of a pipeline hands on its "
        "tensors and the last stage must return exactly one tensor, so a model whose output "
        "count differs (a tuple, a list, a dict) cannot be cut: return one tensor from forward",
        g.path,
        g.graph->outputs().size() == 1 ? g.graph->outputs()[0]->type()->repr_str()
                                       : std::to_string(g.graph->outputs().size()) + " values"));
  }
  g.output = g.graph->outputs()[0];
}

// g.top and g.index: the top-level nodes in order, free ones left out.
void index_top_nodes(TorchScriptGraph& g) {
  for (Node* n : g.graph->nodes()) {
    if (g.is_free(n)) continue;
    g.index[n] = g.top.size();
    g.top.push_back(n);
  }
}

// Where one submodule's operations are: top-level nodes [first, last], its depth in the module
// tree, and the loop or `if` of an enclosing module it runs in (if any).
struct Span {
  size_t first = 0, last = 0, depth = 0;
  std::string inside;
};

// Where each submodule's operations are, at every depth of the module tree.
std::map<std::string, Span> submodule_spans(const TorchScriptGraph& g) {
  std::map<std::string, Span> spans;
  std::function<void(Block*)> walk = [&](Block* b) {
    for (Node* n : b->nodes()) {
      if (g.is_free(n)) continue;
      const auto path_of_n = module_path(n);
      Node* top_node = n;
      while (top_node->owningBlock() != g.graph->block())
        top_node = top_node->owningBlock()->owningNode();
      const size_t ti = g.index.at(top_node);
      for (size_t d = 1; d <= path_of_n.size(); ++d) {
        const std::vector<std::string> prefix(path_of_n.begin(), path_of_n.begin() + d);
        const std::string name = fmt::format("{}", fmt::join(prefix, "."));
        auto [it, fresh] = spans.try_emplace(name);
        Span& s = it->second;
        if (fresh) {
          s.first = ti;
          s.depth = d;
        }
        s.last = std::max(s.last, ti);
        if (!s.inside.empty()) continue;
        for (Node* o = n->owningBlock()->owningNode(); o != nullptr;
             o = o->owningBlock()->owningNode()) {
          if (!has_prefix(module_path(o), prefix)) {
            s.inside = o->kind() == c10::prim::Loop ? "a loop" : "an `if`";
            break;
          }
        }
      }
      for (Block* sub : n->blocks()) walk(sub);
    }
  };
  walk(g.graph->block());
  return spans;
}

// Why no cut can let `v` (not a tensor) cross at `position`: who made it and who uses it.
std::string non_tensor_crossing(const TorchScriptGraph& g, const Value* v, size_t position) {
  std::vector<std::string> users;
  for (const auto& use : v->uses())
    users.push_back(
        fmt::format("{} at op {}", use.user->kind().toQualString(), g.top_index(use.user)));
  return fmt::format(
      "a value of type {} (%{}, made by {} at op {}, used by {}) would cross it at op {}; "
      "only tensors cross",
      v->type()->repr_str(), v->debugName(), v->node()->kind().toQualString(),
      v->node()->kind() == c10::prim::Param ? 0 : g.index.at(v->node()), fmt::join(users, ", "),
      position);
}

// The cut after submodule `name` (span `s`), invalid inside a loop or an `if` or where a
// non-tensor value would cross.
Candidate make_candidate(const TorchScriptGraph& g, const std::string& name, const Span& s) {
  Candidate c;
  c.path = name;
  c.depth = s.depth;
  c.position = s.last + 1;
  c.inside = s.inside;
  if (!c.inside.empty()) {
    c.invalid = fmt::format("it runs inside {} of forward", c.inside);
    return c;
  }
  c.crossing = g.live_at(c.position);
  for (const Value* v : c.crossing) {
    if (!is_tensor(v)) {
      c.invalid = non_tensor_crossing(g, v, c.position);
      break;
    }
  }
  return c;
}

// g.candidates: the end of every submodule except the model's, by position, outer ones first.
void find_candidates(TorchScriptGraph& g) {
  for (const auto& [name, s] : submodule_spans(g)) {
    if (s.last + 1 >= g.top.size()) continue;  // the end of the model is not a cut
    g.candidates.push_back(make_candidate(g, name, s));
  }
  std::stable_sort(g.candidates.begin(), g.candidates.end(),
                   [](const Candidate& a, const Candidate& b) {
                     return a.position != b.position ? a.position < b.position : a.depth < b.depth;
                   });
}

// Why tensor `t` (value `v`, probe batch of 2) cannot cross a cut; empty when it can.
std::string invalid_crossing_tensor(const Value* v, const at::Tensor& t) {
  if (t.dim() == 0 || t.size(0) != 2) {
    return fmt::format("tensor %{} of shape {} crosses it without the batch dimension",
                       v->debugName(), fmt::join(t.sizes(), "x"));
  }
  if (t.scalar_type() != at::kFloat) {
    return fmt::format("a {} tensor (%{}) would cross it; only float32 crosses",
                       c10::toString(t.scalar_type()), v->debugName());
  }
  return "";
}

// One run of the whole graph on a batch of 2 zeros gives every shape and MAC count: fills
// g.sizes and marks the cuts where a tensor without the batch dimension, or not float32, would
// cross.
void probe_run(TorchScriptGraph& g, const Shape& input) {
  std::vector<Value*> outs;
  std::unordered_map<const Value*, size_t> slot;
  auto want = [&](Value* v) {
    if (!is_tensor(v) || slot.count(v)) return;
    slot[v] = outs.size();
    outs.push_back(v);
  };
  for (const auto& c : g.candidates)
    if (c.invalid.empty())
      for (Value* v : c.crossing) want(v);
  want(g.input);
  want(g.output);
  for (Node* n : g.top) {
    if (!is_mac_node(n)) continue;
    want(n->output());
    want(n->input(n->kind() == c10::aten::addmm ? 1 : 0));
  }
  auto probe = make_module(slice(g, 0, g.top.size(), {g.input}, outs));
  Shape batch_shape = {2};
  batch_shape.insert(batch_shape.end(), input.begin(), input.end());
  std::vector<at::Tensor> results;
  try {
    torch::NoGradGuard no_grad;
    results = tensors_of(probe.forward({torch::zeros(batch_shape)}), outs.size());
  } catch (const std::exception& e) {
    throw ModelError(fmt::format("model.input: the model `{}` rejects input {}: {}", g.path,
                                 to_string(input), message_of(e)));
  }
  for (size_t i = 0; i < outs.size(); ++i) g.sizes[outs[i]] = results[i].sizes().vec();
  const auto& out_sizes = g.sizes.at(g.output);
  if (out_sizes.empty() || out_sizes[0] != 2) {
    throw ModelError(fmt::format(
        "model.path: the output of `{}` for input {} has shape {}, without the batch dimension",
        g.path, to_string(input), fmt::join(out_sizes, "x")));
  }
  for (auto& c : g.candidates) {
    if (!c.invalid.empty()) continue;
    for (const Value* v : c.crossing) {
      c.invalid = invalid_crossing_tensor(v, results[slot.at(v)]);
      if (!c.invalid.empty()) break;
    }
  }
}

// MACs per sample of one top-level node (0 unless conv/linear/matmul): output elements times
// the reduction length, over the probe's batch of 2.
int64_t node_macs(const TorchScriptGraph& g, const Node* n) {
  if (!is_mac_node(n)) return 0;
  const auto& o = g.sizes.at(n->output());
  int64_t out_numel = 1;
  for (auto d : o) out_numel *= d;
  int64_t k = 0;
  const auto kind = n->kind();
  if (kind == c10::aten::linear || kind == c10::aten::conv1d || kind == c10::aten::conv2d ||
      kind == c10::aten::conv3d || kind == c10::aten::_convolution) {
    auto w = torch::jit::toIValue(n->input(1));
    if (w && w->isTensor() && w->toTensor().dim() >= 2) {
      const auto& wt = w->toTensor();
      k = wt.numel() / wt.size(0);
    }
  } else {
    const auto& a = g.sizes.at(n->input(kind == c10::aten::addmm ? 1 : 0));
    k = a.empty() ? 0 : a.back();
  }
  return out_numel * k / 2;
}

}  // namespace

std::shared_ptr<TorchScriptGraph> analyse(const std::string& path, torch::jit::Module scripted,
                                          const Shape& input) {
  auto gp = std::make_shared<TorchScriptGraph>();
  auto& g = *gp;
  g.path = path;
  freeze_forward(g, std::move(scripted));
  find_input_output(g);
  index_top_nodes(g);
  find_candidates(g);
  probe_run(g, input);
  g.macs_at.assign(g.top.size(), 0);
  for (size_t i = 0; i < g.top.size(); ++i) g.macs_at[i] = node_macs(g, g.top[i]);
  return gp;
}

void set_training(const torch::jit::Module& m, bool on) {
  for (const torch::jit::Module& sub : m.modules()) {
    const auto& obj = sub._ivalue();
    if (auto slot = obj->type()->findAttributeSlot("training")) obj->setSlot(*slot, on);
  }
}

bool is_training(const torch::jit::Module& m) {
  const auto& obj = m._ivalue();
  auto slot = obj->type()->findAttributeSlot("training");
  return slot && obj->getSlot(*slot).toBool();
}

std::shared_ptr<TorchScriptGraph> analyse_training(const std::string& path,
                                                   const torch::jit::Module& scripted) {
  auto gp = std::make_shared<TorchScriptGraph>();
  auto& g = *gp;
  g.path = path;
  if (!scripted.find_method("forward"))
    throw ModelError(fmt::format("model.path: `{}` has no forward method", path));
  g.graph = scripted.get_method("forward").graph()->copy();
  torch::jit::Inline(*g.graph);
  simplify(g.graph);
  find_input_output(g);
  TORCH_INTERNAL_ASSERT(!g.graph->inputs().empty() &&
                            g.graph->inputs()[0]->type()->kind() == c10::TypeKind::ClassType,
                        "a method's graph starts with self");
  g.self = g.graph->inputs()[0];
  index_top_nodes(g);
  find_candidates(g);
  return gp;
}

std::string tensor_name(const Value* v, bool is_input) {
  if (is_input) return "input";
  auto path = module_path(v->node());
  if (!path.empty()) return fmt::format("{}", fmt::join(path, "."));
  std::string name = v->debugName();
  return name.substr(0, name.find('.'));
}
}  // namespace quilt::models::torchscript_detail
