#include "models/torchscript_profile.h"

#include "models/torchscript.h"
#include "models/torchscript_graph.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace quilt::models {
namespace {

using torchscript_detail::make_module;
using torchscript_detail::module_path;

// Every value a unit's graph computed at the top level, and its inputs, for one run.
using Capture = std::unordered_map<const Value*, c10::IValue>;

// Batches of the two accounting runs: per-sample counts are f(kB) - f(kA).
constexpr int64_t kBatchA = 2;
constexpr int64_t kBatchB = 3;
// An `if` inside an `if` is resolved one level per round.
constexpr int kMaxRounds = 32;

bool is_free(const Node* n) {
  return n->kind() == c10::prim::Constant || n->kind() == c10::prim::Uninitialized;
}

// Values a plain tuple can carry out of the graph (not modules, functions, interfaces).
bool capturable(const Value* v) {
  const auto k = v->type()->kind();
  return k != c10::TypeKind::ClassType && k != c10::TypeKind::FunctionType &&
         k != c10::TypeKind::InterfaceType;
}

// A copy of `g` without its module (`self`) input: the frozen segment graphs never use it.
std::shared_ptr<Graph> without_self(Graph& g) {
  auto ng = std::make_shared<Graph>();
  std::unordered_map<const Value*, Value*> env;
  for (Value* v : g.inputs()) {
    if (v->type()->kind() == c10::TypeKind::ClassType) {
      TORCH_INTERNAL_ASSERT(!v->hasUses(), "a frozen segment graph uses its module input");
      continue;
    }
    env[v] = ng->addInput()->copyMetadata(v);
  }
  for (Node* n : g.nodes()) {
    Node* c = ng->createClone(n, [&](Value* v) { return env.at(v); });
    ng->appendNode(c);
    for (size_t i = 0; i < n->outputs().size(); ++i) env[n->output(i)] = c->output(i);
  }
  for (Value* v : g.outputs()) ng->registerOutput(env.at(v));
  return ng;
}

// Runs `g` on `inputs` with every top-level value returned as well (plain interpreter).
Capture capture(const std::shared_ptr<Graph>& g, const std::vector<c10::IValue>& inputs) {
  auto ng = std::make_shared<Graph>();
  std::unordered_map<const Value*, Value*> env;
  for (Value* v : g->inputs()) env[v] = ng->addInput()->copyMetadata(v);
  std::vector<const Value*> wanted;
  for (Node* n : g->nodes()) {
    Node* c = ng->createClone(n, [&](Value* v) { return env.at(v); });
    ng->appendNode(c);
    for (size_t i = 0; i < n->outputs().size(); ++i) {
      env[n->output(i)] = c->output(i);
      if (!is_free(n) && capturable(n->output(i))) wanted.push_back(n->output(i));
    }
  }
  std::vector<Value*> outs;
  for (const Value* v : wanted) outs.push_back(env.at(v));
  Node* t = ng->createTuple(outs);
  ng->appendNode(t);
  ng->registerOutput(t->output());
  torch::jit::Module m = make_module(ng);
  const c10::IValue result = m.forward(inputs);
  Capture cap;
  for (size_t i = 0; i < inputs.size(); ++i) cap[g->inputs()[i]] = inputs[i];
  const auto& elements = result.toTupleRef().elements();
  for (size_t i = 0; i < wanted.size(); ++i) cap[wanted[i]] = elements[i];
  return cap;
}

std::optional<c10::IValue> value_of(const Value* v, const Capture& cap) {
  if (v->node()->kind() == c10::prim::Constant) return torch::jit::toIValue(v);
  auto it = cap.find(v);
  if (it == cap.end()) return std::nullopt;
  return it->second;
}

std::optional<at::Tensor> tensor_of(const Value* v, const Capture& cap) {
  auto iv = value_of(v, cap);
  // An op may return an undefined tensor (the attention weights it was not asked for).
  if (!iv || !iv->isTensor() || !iv->toTensor().defined()) return std::nullopt;
  return iv->toTensor();
}

// Random inputs from a generator of their own: building a model must not move the global
// random stream (the autoencoders are initialised from it after the model is built).
std::vector<c10::IValue> random_inputs(const std::vector<Shape>& shapes, int64_t batch,
                                       uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::vector<c10::IValue> out;
  for (const Shape& s : shapes) {
    std::vector<int64_t> size = {batch};
    size.insert(size.end(), s.begin(), s.end());
    out.emplace_back(at::randn(size, gen));
  }
  return out;
}

int64_t product(c10::IntArrayRef v) {
  int64_t p = 1;
  for (auto d : v) p *= d;
  return p;
}

std::string strip_inplace(std::string op) {
  if (op.size() > 1 && op.back() == '_' && op[op.size() - 2] != '_') op.pop_back();
  return op;
}

const std::set<std::string>& elementwise_ops() {
  static const std::set<std::string> ops = {
      "add",       "sub",          "mul",       "div",         "rsub",     "pow",     "sqrt",
      "rsqrt",     "exp",          "log",       "neg",         "abs",      "clamp",   "clamp_min",
      "clamp_max", "relu",         "relu6",     "leaky_relu",  "elu",      "gelu",    "silu",
      "sigmoid",   "tanh",         "hardswish", "hardsigmoid", "hardtanh", "mish",    "softplus",
      "erf",       "reciprocal",   "where",     "masked_fill", "addcmul",  "minimum", "maximum",
      "square",    "floor_divide", "remainder", "prelu",       "selu",     "celu",    "glu"};
  return ops;
}

// MACs and the other FLOPs of one top-level node for the whole batch of `cap`'s run.
struct BatchCounts {
  int64_t macs = 0, other = 0, out_bytes = 0;
};

BatchCounts count_batch(const Node* n, const Capture& cap) {
  BatchCounts c;
  for (const Value* o : n->outputs()) {
    auto t = tensor_of(o, cap);
    if (t) c.out_bytes += t->numel() * static_cast<int64_t>(t->element_size());
  }
  std::optional<at::Tensor> out;
  if (!n->outputs().empty()) out = tensor_of(n->output(0), cap);
  if (!out) return c;
  const int64_t out_numel = out->numel();
  const std::string op = strip_inplace(n->kind().toUnqualString());
  if (!n->kind().is_aten()) return c;
  auto input = [&](size_t i) -> std::optional<at::Tensor> {
    if (i >= n->inputs().size()) return std::nullopt;
    return tensor_of(n->input(i), cap);
  };
  if (op == "conv1d" || op == "conv2d" || op == "conv3d" || op == "_convolution" ||
      op == "convolution" || op == "conv_transpose1d" || op == "conv_transpose2d" ||
      op == "conv_transpose3d") {
    bool transposed = op.rfind("conv_transpose", 0) == 0;
    if ((op == "_convolution" || op == "convolution") && n->inputs().size() > 6) {
      auto flag = value_of(n->input(6), cap);
      transposed = flag && flag->isBool() && flag->toBool();
    }
    auto w = input(1), x = input(0);
    if (w && w->dim() >= 2 && x) {
      const int64_t per = w->numel() / w->size(0);
      c.macs = (transposed ? x->numel() : out_numel) * per;
    }
  } else if (op == "linear") {
    auto w = input(1);
    if (w && w->dim() >= 1) c.macs = out_numel * w->size(-1);
  } else if (op == "matmul" || op == "mm" || op == "bmm" || op == "addmm" || op == "baddbmm") {
    auto a = input(op == "addmm" || op == "baddbmm" ? 1 : 0);
    if (a && a->dim() >= 1) c.macs = out_numel * a->size(-1);
  } else if (op == "_native_multi_head_attention") {
    // nn.MultiheadAttention's inference fast path in one op: (query [B, L, E], key and value
    // [B, S, E], embed_dim, num_heads, ...): q, k, v and out projections, Q K^T and A V.
    auto q = input(0), k = input(1);
    auto heads = value_of(n->input(4), cap);
    if (q && k && q->dim() == 3 && k->dim() == 3) {
      const int64_t e = q->size(-1), s = k->size(-2);
      c.macs = 2 * q->numel() * e + 2 * k->numel() * e + 2 * q->numel() * s;
      if (heads && heads->isInt()) c.other = 5 * (q->numel() / e) * heads->toInt() * s;
    }
  } else if (op == "batch_norm" || op == "instance_norm") {
    c.other = 2 * out_numel;
  } else if (op == "layer_norm" || op == "group_norm" || op == "softmax" || op == "log_softmax") {
    c.other = 5 * out_numel;
  } else if (op == "max_pool1d" || op == "max_pool2d" || op == "max_pool3d" || op == "avg_pool1d" ||
             op == "avg_pool2d" || op == "avg_pool3d" || op == "max_pool2d_with_indices") {
    auto k = value_of(n->input(1), cap);
    c.other = out_numel * (k && k->isIntList() ? product(k->toIntVector()) : 1);
  } else if (op.rfind("adaptive_", 0) == 0 || op == "mean" || op == "sum" || op == "amax" ||
             op == "amin" || op == "var" || op == "std" || op == "norm" || op == "logsumexp") {
    auto x = input(0);
    c.other = x ? x->numel() : 0;
  } else if (elementwise_ops().count(op)) {
    c.other = out_numel;
  }
  return c;
}

// Per-sample shape of `v` from the two runs: without the batch dimension where it has one.
Shape sample_shape(const Value* v, const Capture& a, const Capture& b) {
  auto ta = tensor_of(v, a), tb = tensor_of(v, b);
  if (!ta || !tb) return {};
  const auto sa = ta->sizes(), sb = tb->sizes();
  if (sa.size() >= 1 && sa.size() == sb.size() && sa[0] == kBatchA && sb[0] == kBatchB)
    return Shape(sa.begin() + 1, sa.end());
  return Shape(sa.begin(), sa.end());
}

// The constant tensors (frozen weights) node `n` reads, itself or in its blocks.
void constant_tensors(const Node* n, std::vector<at::Tensor>& out) {
  for (const Value* v : n->inputs()) {
    if (v->node()->kind() != c10::prim::Constant) continue;
    auto iv = torch::jit::toIValue(v);
    if (iv && iv->isTensor()) out.push_back(iv->toTensor());
  }
  for (const Block* b : n->blocks())
    for (const Node* m : b->nodes()) constant_tensors(m, out);
}

bool has_top_level_if(const Graph& g) {
  for (const Node* n : g.nodes())
    if (n->kind() == c10::prim::If) return true;
  return false;
}

// Every `if` with a condition computed at run time, at any depth, except inside loops (whose
// bodies run many times), in graph order.
void collect_ifs(Block* b, std::vector<Node*>& out) {
  for (Node* n : b->nodes()) {
    if (n->kind() == c10::prim::Loop) continue;
    if (n->kind() == c10::prim::If && n->input(0)->node()->kind() != c10::prim::Constant)
      out.push_back(n);
    for (Block* sub : n->blocks()) collect_ifs(sub, out);
  }
}

// Replaces every `if` that a run on `in_shapes` (batch kBatchA, seed 0) reaches by the branch
// it takes: one instrumented run records each one's condition (every `if` appends its index and
// its condition to two lists the graph returns), the conditions become constants and constant
// propagation inlines the branches. One run resolves all depths at once; returns false when
// there was nothing to resolve.
bool resolve_ifs(const std::shared_ptr<Graph>& g, const std::vector<Shape>& in_shapes,
                 const std::string& path) {
  std::vector<Node*> ifs;
  collect_ifs(g->block(), ifs);
  if (ifs.empty()) return false;
  Node* ids = nullptr;
  Node* conds = nullptr;
  {
    torch::jit::WithInsertPoint guard(*g->nodes().begin());
    ids = g->insertNode(g->createList(c10::IntType::get(), {}));
    conds = g->insertNode(g->createList(c10::BoolType::get(), {}));
  }
  std::vector<Node*> probes;
  for (size_t k = 0; k < ifs.size(); ++k) {
    torch::jit::WithInsertPoint guard(ifs[k]);
    Value* id = g->insertConstant(static_cast<int64_t>(k));
    probes.push_back(g->insert(c10::aten::append, {ids->output(), id})->node());
    probes.push_back(g->insert(c10::aten::append, {conds->output(), ifs[k]->input(0)})->node());
  }
  Capture cap;
  try {
    cap = capture(g, random_inputs(in_shapes, kBatchA, 0));
  } catch (const std::exception& e) {
    throw ModelError(fmt::format("profile of `{}`: a unit fails on a random batch of {}: {}", path,
                                 kBatchA, e.what()));
  }
  const std::vector<int64_t> taken_ids = cap.at(ids->output()).toIntVector();
  const c10::List<bool> taken = cap.at(conds->output()).toBoolList();
  for (Node* p : probes) p->destroy();
  ids->destroy();
  conds->destroy();
  bool changed = false;
  for (size_t i = 0; i < taken_ids.size(); ++i) {
    Node* n = ifs.at(static_cast<size_t>(taken_ids[i]));
    if (n->input(0)->node()->kind() == c10::prim::Constant) continue;
    torch::jit::WithInsertPoint guard(n);
    n->replaceInput(0, g->insertConstant(static_cast<bool>(taken.get(i))));
    changed = true;
  }
  if (!changed) return false;
  std::shared_ptr<Graph> graph = g;
  torch::jit::ConstantPropagation(graph);
  torch::jit::LowerSimpleTuples(graph);
  torch::jit::EliminateDeadCode(graph);
  return true;
}

// A segment's graph, `if`s resolved for random inputs of `in_shapes` (seed 0).
std::shared_ptr<Graph> resolved_graph(const torch::jit::Module& segment,
                                      const std::vector<Shape>& in_shapes,
                                      const std::string& path) {
  auto g = without_self(*segment.get_method("forward").graph());
  // Usually one round: a second finds only what the first could not decide.
  for (int round = 0; round < kMaxRounds; ++round)
    if (!resolve_ifs(g, in_shapes, path)) break;
  return g;
}

// The two accounting runs of a resolved graph.
std::pair<Capture, Capture> accounting_runs(const std::shared_ptr<Graph>& g,
                                            const std::vector<Shape>& in_shapes,
                                            const std::string& path, const std::string& unit) {
  try {
    return {capture(g, random_inputs(in_shapes, kBatchA, 0)),
            capture(g, random_inputs(in_shapes, kBatchB, 1))};
  } catch (const std::exception& e) {
    throw ModelError(fmt::format(
        "profile of `{}`: unit {} fails on a random batch of {} or {} (the profile counts per "
        "sample from two batch sizes): {}",
        path, unit, kBatchA, kBatchB, e.what()));
  }
}

bool defined_inside(const Value* v, const Node* n) {
  for (const Node* d = v->node(); d != nullptr;) {
    if (d == n) return true;
    const Block* b = d->owningBlock();
    if (b == nullptr) return false;
    d = b->owningNode();
  }
  return false;
}

// The values node `n` (with its blocks) reads that are made outside it, constants aside.
void free_inputs(Node* n, const Node* root, std::vector<Value*>& out) {
  for (Value* v : n->inputs()) {
    if (defined_inside(v, root) || is_free(v->node())) continue;
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  }
  for (Block* b : n->blocks()) {
    for (Node* m : b->nodes()) free_inputs(m, root, out);
    free_inputs(b->return_node(), root, out);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times node `n` alone on the inputs `cap` holds; nullopt when it cannot run alone.
std::optional<double> time_node(Node* n, const Capture& cap, const NodeTimingOptions& o) {
  if (n->outputs().empty()) return std::nullopt;
  std::vector<Value*> ins;
  free_inputs(n, n, ins);
  std::vector<c10::IValue> args;
  for (Value* v : ins) {
    auto it = cap.find(v);
    if (it == cap.end()) return std::nullopt;
    args.push_back(it->second);
  }
  for (Value* v : n->outputs())
    if (!capturable(v)) return std::nullopt;
  auto ng = std::make_shared<Graph>();
  std::unordered_map<Value*, Value*> env;
  for (Value* v : ins) env[v] = ng->addInput()->copyMetadata(v);
  std::function<Value*(Value*)> lookup = [&](Value* v) -> Value* {
    auto it = env.find(v);
    if (it != env.end()) return it->second;
    TORCH_INTERNAL_ASSERT(is_free(v->node()), "node input %", v->debugName(), " not captured");
    Node* c = ng->createClone(v->node(), lookup);
    ng->appendNode(c);
    return env[v] = c->output();
  };
  Node* c = ng->createClone(n, lookup);
  ng->appendNode(c);
  if (c->outputs().size() == 1) {
    ng->registerOutput(c->output());
  } else {
    Node* t = ng->createTuple(c->outputs());
    ng->appendNode(t);
    ng->registerOutput(t->output());
  }
  torch::jit::Module m = make_module(ng);
  const std::string kind = n->kind().toUnqualString();
  const bool inplace = kind.size() > 1 && kind.back() == '_' && kind[kind.size() - 2] != '_';
  auto fresh = [&] {
    if (!inplace) return args;
    std::vector<c10::IValue> copy;
    for (const auto& a : args) copy.emplace_back(a.isTensor() ? a.toTensor().clone() : a);
    return copy;
  };
  for (int64_t i = 0; i < o.warmup; ++i) m.forward(fresh());
  std::vector<double> times;
  for (int64_t i = 0; i < o.repeats; ++i) {
    std::vector<c10::IValue> a = fresh();
    const auto t0 = std::chrono::steady_clock::now();
    c10::IValue y = m.forward(std::move(a));
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(std::move(times));
}

const ScriptSegmentImpl& segment(const TorchScriptModelImpl& model, size_t u) {
  return *model.units().at(u).module.get<ScriptSegment>();
}

}  // namespace

ModelSummary summarize_torchscript(const TorchScriptModelImpl& model,
                                   const std::vector<TorchScriptUnitProfile>& units) {
  ModelSummary s;
  s.arch = model.arch();
  s.input_shape = model.input_shape();
  s.num_classes = model.num_classes();
  s.cuts = model.cuts();
  for (const auto& u : units) {
    UnitSummary us;
    us.name = u.name;
    us.in_shape = u.in_shape;
    us.out_shape = u.out_shape;
    us.macs = u.macs;
    us.flops = u.flops;
    us.params = u.params;
    us.out_bytes = u.out_bytes;
    s.units.push_back(us);
    s.macs += u.macs;
    s.flops += u.flops;
    s.params += u.params;
  }
  return s;
}

std::vector<TorchScriptUnitProfile> profile_torchscript(const TorchScriptModelImpl& model) {
  torch::NoGradGuard no_grad;
  torch::jit::GraphOptimizerEnabledGuard plain(false);
  std::vector<TorchScriptUnitProfile> units;
  for (size_t u = 0; u < model.units().size(); ++u) {
    const ScriptSegmentImpl& seg = segment(model, u);
    TorchScriptUnitProfile unit;
    unit.name = model.units()[u].name;
    unit.in_shape = packed_shape(seg.in_shapes());
    unit.out_shape = packed_shape(seg.out_shapes());
    unit.out_bytes = 4 * numel(unit.out_shape);
    auto g = resolved_graph(model.stage_module(u, u + 1), seg.in_shapes(), model.path());
    const auto [a, b] = accounting_runs(g, seg.in_shapes(), model.path(), unit.name);
    std::unordered_set<const void*> unit_weights;
    for (Node* n : g->nodes()) {
      if (is_free(n)) continue;
      TorchScriptNodeProfile row;
      row.unit = u;
      const auto path = module_path(n);
      row.name = path.empty() ? "(forward)" : fmt::format("{}", fmt::join(path, "."));
      row.op = n->kind().toQualString();
      for (const Value* v : n->inputs()) {
        if (v->node()->kind() == c10::prim::Constant || !tensor_of(v, a)) continue;
        row.in_shape = sample_shape(v, a, b);
        break;
      }
      for (const Value* v : n->outputs()) {
        if (!tensor_of(v, a)) continue;
        row.out_shape = sample_shape(v, a, b);
        break;
      }
      const BatchCounts ca = count_batch(n, a), cb = count_batch(n, b);
      row.macs = std::max<int64_t>(0, cb.macs - ca.macs);
      row.flops = 2 * row.macs + std::max<int64_t>(0, cb.other - ca.other);
      row.out_bytes = std::max<int64_t>(0, cb.out_bytes - ca.out_bytes);
      std::vector<at::Tensor> weights;
      constant_tensors(n, weights);
      std::unordered_set<const void*> seen;
      for (const auto& w : weights) {
        const void* key = w.data_ptr();
        if (!seen.insert(key).second) continue;
        const int64_t bytes = w.numel() * static_cast<int64_t>(w.element_size());
        row.params += w.numel();
        row.param_bytes += bytes;
        if (unit_weights.insert(key).second) {
          unit.params += w.numel();
          unit.param_bytes += bytes;
        }
      }
      unit.macs += row.macs;
      unit.flops += row.flops;
      unit.nodes.push_back(std::move(row));
    }
    units.push_back(std::move(unit));
  }
  return units;
}

void measure_torchscript_nodes(const TorchScriptModelImpl& model, const NodeTimingOptions& o,
                               std::vector<TorchScriptUnitProfile>& units) {
  TORCH_CHECK(o.batch >= 1 && o.repeats >= 1 && o.warmup >= 0 && o.threads >= 1,
              "node timing needs batch >= 1, repeats >= 1, warmup >= 0 and threads >= 1");
  TORCH_INTERNAL_ASSERT(units.size() == model.units().size());
  const int threads_before = at::get_num_threads();
  at::set_num_threads(static_cast<int>(o.threads));
  struct Restore {
    int n;
    ~Restore() { at::set_num_threads(n); }
  } restore{threads_before};
  torch::NoGradGuard no_grad;
  torch::jit::GraphOptimizerEnabledGuard plain(false);
  for (size_t u = 0; u < units.size(); ++u) {
    const ScriptSegmentImpl& seg = segment(model, u);
    // The same resolution as profile_torchscript's (same inputs), so the same operations.
    auto g = resolved_graph(model.stage_module(u, u + 1), seg.in_shapes(), model.path());
    const Capture cap = capture(g, random_inputs(seg.in_shapes(), o.batch, o.seed));
    size_t i = 0;
    for (Node* n : g->nodes()) {
      if (is_free(n)) continue;
      TORCH_INTERNAL_ASSERT(i < units[u].nodes.size(), "unit ", units[u].name, " changed");
      units[u].nodes[i++].measured_s = time_node(n, cap, o);
    }
  }
}

int64_t resolved_macs(const torch::jit::Module& segment, const std::vector<Shape>& in_shapes,
                      const std::string& path, int64_t top_level_macs) {
  if (!has_top_level_if(*segment.get_method("forward").graph())) return top_level_macs;
  torch::NoGradGuard no_grad;
  torch::jit::GraphOptimizerEnabledGuard plain(false);
  try {
    auto g = resolved_graph(segment, in_shapes, path);
    // One run suffices here: the MACs of batched tensors are the batch's over its size (the
    // convention of the model's top-level count).
    const Capture a = capture(g, random_inputs(in_shapes, kBatchA, 0));
    int64_t macs = 0;
    for (const Node* n : g->nodes())
      if (!is_free(n)) macs += count_batch(n, a).macs;
    return macs / kBatchA;
  } catch (const ModelError&) {
    // The probe of zeros accepted the model; one that refuses random inputs (an assert on its
    // values) keeps the top-level count.
    return top_level_macs;
  } catch (const c10::Error&) {
    return top_level_macs;
  }
}

}  // namespace quilt::models
