#include "models/torchscript.h"

#include "models/state_dict.h"
#include "models/zoo.h"

#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/passes/peephole.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>

namespace quilt::models {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

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

// The submodule path of the code that produced `n`: the instance names of the inlined calls
// ("features", "3", "block", "0"); calls of self's own methods are not a level.
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

bool has_prefix(const std::vector<std::string>& path, const std::vector<std::string>& prefix) {
  return path.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), path.begin());
}

// Nodes without inputs or effects that any segment may have its own copy of: constants and the
// placeholders of TorchScript's early-return control flow.
bool is_free(const Node* n) {
  return n->kind() == c10::prim::Constant || n->kind() == c10::prim::Uninitialized;
}

bool is_mac_node(const Node* n) {
  const auto k = n->kind();
  return k == c10::aten::conv1d || k == c10::aten::conv2d || k == c10::aten::conv3d ||
         k == c10::aten::_convolution || k == c10::aten::linear || k == c10::aten::matmul ||
         k == c10::aten::bmm || k == c10::aten::mm || k == c10::aten::addmm;
}

}  // namespace

/// One candidate cut of the frozen graph (structure only; shapes come from the probe run).
struct Candidate {
  std::string path;     // "features.3"
  size_t depth = 0;     // 1 = top-level submodule
  size_t position = 0;  // cut between top[position - 1] and top[position]
  std::string inside;   // "a loop" / "an `if`" when the submodule runs inside one
  std::vector<Value*> crossing;
  std::string invalid;  // why it cannot be a cut
};

/// The frozen model's forward graph, its top-level operations and its candidate cuts.
struct TorchScriptGraph {
  std::string path;
  torch::jit::Module frozen;
  std::shared_ptr<Graph> graph;
  Value* input = nullptr;
  Value* output = nullptr;
  std::vector<Node*> top;  // top-level nodes except free ones (cloned where used), in order
  std::unordered_map<const Node*, size_t> index;
  std::vector<Candidate> candidates;  // by position, outer submodules first
  std::unordered_map<const Value*, std::vector<int64_t>> sizes;  // probe run, batch of 2
  std::vector<int64_t> macs_at;  // per top node: MACs per sample (probe run)

  size_t top_index(Node* user) const {
    while (user->owningBlock() != graph->block()) user = user->owningBlock()->owningNode();
    if (user == graph->return_node()) return top.size();
    auto it = index.find(user);
    return it == index.end() ? 0 : it->second;
  }

  // Values defined before position p and used at or after it, in the order they were made.
  std::vector<Value*> live_at(size_t p) const {
    std::vector<Value*> out;
    auto consider = [&](Value* v) {
      for (const auto& use : v->uses()) {
        if (top_index(use.user) >= p) {
          out.push_back(v);
          return;
        }
      }
    };
    consider(input);
    for (size_t i = 0; i < p; ++i)
      for (Value* v : top[i]->outputs()) consider(v);
    return out;
  }

  const Candidate* find(const std::string& cut_name) const {
    for (const auto& c : candidates)
      if ("after_" + c.path == cut_name) return &c;
    return nullptr;
  }

  std::string valid_names(size_t limit = 60) const {
    std::vector<std::string> names;
    size_t valid = 0;
    for (const auto& c : candidates) {
      if (!c.invalid.empty()) continue;
      if (++valid <= limit) names.push_back("after_" + c.path);
    }
    std::string s = names.empty() ? "none" : fmt::format("{}", fmt::join(names, ", "));
    if (valid > limit)
      s += fmt::format(", ... ({} more: `quilt models --file {} --input ...` lists them all)",
                       valid - limit, path);
    return s;
  }

  Shape sample_shape(const Value* v) const {
    const auto& s = sizes.at(v);
    return Shape(s.begin() + 1, s.end());
  }
};

namespace {

// A new graph running top-level nodes [begin, end) of g: its inputs are `inputs`, its output
// `outputs` (one value, or a tuple of several). Constants are cloned where they are used.
std::shared_ptr<Graph> slice(const TorchScriptGraph& g, size_t begin, size_t end,
                             const std::vector<Value*>& inputs,
                             const std::vector<Value*>& outputs) {
  auto ng = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  for (Value* v : inputs) env[v] = ng->addInput()->copyMetadata(v);
  std::function<Value*(Value*)> lookup = [&](Value* v) -> Value* {
    auto it = env.find(v);
    if (it != env.end()) return it->second;
    Node* def = v->node();
    TORCH_INTERNAL_ASSERT(is_free(def), "value %", v->debugName(),
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

std::shared_ptr<TorchScriptGraph> analyse(const std::string& path, torch::jit::Module scripted,
                                          const Shape& input) {
  auto gp = std::make_shared<TorchScriptGraph>();
  auto& g = *gp;
  g.path = path;
  if (!scripted.find_method("forward"))
    throw ModelError(fmt::format("model.path: `{}` has no forward method", path));
  scripted.eval();
  try {
    g.frozen = torch::jit::freeze(scripted, c10::nullopt, /*optimize_numerics=*/false);
  } catch (const std::exception& e) {
    throw ModelError(fmt::format("model.path: cannot freeze the TorchScript model `{}`: {}", path,
                                 message_of(e)));
  }
  g.graph = g.frozen.get_method("forward").graph();
  // Tuples built and taken apart again (a submodule returning (out, weights)) would otherwise
  // cross cuts as non-tensor values.
  torch::jit::LowerSimpleTuples(g.graph);
  torch::jit::PeepholeOptimize(g.graph);
  torch::jit::ConstantPropagation(g.graph);
  torch::jit::EliminateDeadCode(g.graph);
  std::vector<Value*> inputs;
  for (Value* v : g.graph->inputs())
    if (v->type()->kind() != c10::TypeKind::ClassType) inputs.push_back(v);
  if (inputs.size() != 1 || !is_tensor(inputs[0])) {
    throw ModelError(fmt::format(
        "model.path: the forward of `{}` takes {} argument(s) besides self; Quilt feeds a model "
        "one tensor (model.input is its per-sample shape)",
        path, inputs.size()));
  }
  g.input = inputs[0];
  if (g.graph->outputs().size() != 1 || !is_tensor(g.graph->outputs()[0])) {
    throw ModelError(fmt::format(
        "model.path: the forward of `{}` returns {}; every stage of a pipeline hands on its "
        "tensors and the last stage must return exactly one tensor, so a model whose output "
        "count differs (a tuple, a list, a dict) cannot be cut: return one tensor from forward",
        path,
        g.graph->outputs().size() == 1 ? g.graph->outputs()[0]->type()->repr_str()
                                       : std::to_string(g.graph->outputs().size()) + " values"));
  }
  g.output = g.graph->outputs()[0];
  for (Node* n : g.graph->nodes()) {
    if (is_free(n)) continue;
    g.index[n] = g.top.size();
    g.top.push_back(n);
  }

  // Where each submodule's operations are, at every depth of the module tree.
  struct Span {
    size_t first = 0, last = 0, depth = 0;
    std::string inside;
  };
  std::map<std::string, Span> spans;
  std::function<void(Block*)> walk = [&](Block* b) {
    for (Node* n : b->nodes()) {
      if (is_free(n)) continue;
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
  for (const auto& [name, s] : spans) {
    if (s.last + 1 >= g.top.size()) continue;  // the end of the model is not a cut
    Candidate c;
    c.path = name;
    c.depth = s.depth;
    c.position = s.last + 1;
    c.inside = s.inside;
    if (!c.inside.empty()) {
      c.invalid = fmt::format("it runs inside {} of forward", c.inside);
    } else {
      c.crossing = g.live_at(c.position);
      for (const Value* v : c.crossing) {
        if (!is_tensor(v)) {
          std::vector<std::string> users;
          for (const auto& use : v->uses())
            users.push_back(
                fmt::format("{} at op {}", use.user->kind().toQualString(), g.top_index(use.user)));
          c.invalid = fmt::format(
              "a value of type {} (%{}, made by {} at op {}, used by {}) would cross it at op {}; "
              "only tensors cross",
              v->type()->repr_str(), v->debugName(), v->node()->kind().toQualString(),
              v->node()->kind() == c10::prim::Param ? 0 : g.index.at(v->node()),
              fmt::join(users, ", "), c.position);
          break;
        }
      }
    }
    g.candidates.push_back(std::move(c));
  }
  std::stable_sort(g.candidates.begin(), g.candidates.end(),
                   [](const Candidate& a, const Candidate& b) {
                     return a.position != b.position ? a.position < b.position : a.depth < b.depth;
                   });

  // One run of the whole graph on a batch of 2 zeros gives every shape and MAC count.
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
    throw ModelError(fmt::format("model.input: the model `{}` rejects input {}: {}", path,
                                 to_string(input), message_of(e)));
  }
  for (size_t i = 0; i < outs.size(); ++i) g.sizes[outs[i]] = results[i].sizes().vec();
  const auto& out_sizes = g.sizes.at(g.output);
  if (out_sizes.empty() || out_sizes[0] != 2) {
    throw ModelError(fmt::format(
        "model.path: the output of `{}` for input {} has shape {}, without the batch dimension",
        path, to_string(input), fmt::join(out_sizes, "x")));
  }
  for (auto& c : g.candidates) {
    if (!c.invalid.empty()) continue;
    for (const Value* v : c.crossing) {
      const at::Tensor& t = results[slot.at(v)];
      if (t.dim() == 0 || t.size(0) != 2) {
        c.invalid = fmt::format("tensor %{} of shape {} crosses it without the batch dimension",
                                v->debugName(), fmt::join(t.sizes(), "x"));
      } else if (t.scalar_type() != at::kFloat) {
        c.invalid = fmt::format("a {} tensor (%{}) would cross it; only float32 crosses",
                                c10::toString(t.scalar_type()), v->debugName());
      }
      if (!c.invalid.empty()) break;
    }
  }
  g.macs_at.assign(g.top.size(), 0);
  for (size_t i = 0; i < g.top.size(); ++i) {
    Node* n = g.top[i];
    if (!is_mac_node(n)) continue;
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
    g.macs_at[i] = out_numel * k / 2;
  }
  return gp;
}

std::string tensor_name(const Value* v, bool is_input) {
  if (is_input) return "input";
  auto path = module_path(v->node());
  if (!path.empty()) return fmt::format("{}", fmt::join(path, "."));
  std::string name = v->debugName();
  return name.substr(0, name.find('.'));
}

}  // namespace

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
    add_unit(name, torch::nn::AnyModule(ScriptSegment(make_module(slice(g, begin, end, ins, outs)),
                                                      in_shapes, out_shapes, macs)));
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
