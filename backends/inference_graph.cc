// The stage compiler's input: a graph of operations. A zoo module is traced into one (its
// parameters become constants); a TorchScript stage arrives frozen. The graph is walked node by
// node: constants and the int arithmetic of shapes are folded at compile time (the batch size is
// the one value known at run time only), `if`s on constants are lowered through the branch they
// take, each operation is lowered by its kind (inference_graph_ops.cc), and a node the program
// cannot express runs on its own through its JIT operator (a per-node fallback).

#include "backends/inference_graph.h"

#include "backends/inference_graph_lowering.h"

#include <fmt/format.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/torch.h>

#include <algorithm>

namespace quilt::backends::detail {
namespace {

// One graph node run through its JIT operator on dense tensors: the per-node fallback.
struct NodeCall final : FallbackCall {
  struct Arg {
    int src = -1;               // index into srcs, or
    std::vector<int> srcs;      // a list of tensors, or
    c10::IValue c;              // a constant, or
    bool batch = false;         // the batch size, or
    std::vector<int64_t> ints;  // a list of ints with the batch size at batch_at
    std::vector<bool> batch_at;
    bool is_ints = false;
  };
  mutable torch::jit::Operation op{nullptr};
  std::vector<Arg> args;
  bool clone_first = false;  // an in-place op: it writes its first input, a copy

  at::Tensor run(const std::vector<at::Tensor>& srcs, int64_t n) const override {
    torch::jit::Stack stack;
    for (size_t i = 0; i < args.size(); ++i) {
      const Arg& a = args[i];
      if (a.src >= 0) {
        stack.emplace_back(i == 0 && clone_first ? srcs[a.src].clone() : srcs[a.src]);
      } else if (!a.srcs.empty()) {
        c10::List<at::Tensor> list;
        for (int s : a.srcs) list.push_back(srcs[s]);
        stack.emplace_back(std::move(list));
      } else if (a.batch) {
        stack.emplace_back(n);
      } else if (a.is_ints) {
        std::vector<int64_t> v = a.ints;
        for (size_t k = 0; k < v.size(); ++k)
          if (a.batch_at[k]) v[k] = n;
        stack.emplace_back(v);
      } else {
        stack.push_back(a.c);
      }
    }
    op(stack);
    return stack.at(0).toTensor();  // the first output; a node's others are not kept
  }
};

// Parameters that require grad cannot become constants of a trace: they are switched off while
// tracing and restored afterwards.
class GradOff {
 public:
  explicit GradOff(nn::Module& m) {
    for (auto& p : m.parameters(/*recurse=*/true)) {
      if (p.requires_grad()) {
        p.requires_grad_(false);
        params_.push_back(p);
      }
    }
  }
  ~GradOff() {
    for (auto& p : params_) p.requires_grad_(true);
  }
  GradOff(const GradOff&) = delete;
  GradOff& operator=(const GradOff&) = delete;

 private:
  std::vector<at::Tensor> params_;
};

bool is_inplace(const Node* n) {
  const std::string s = n->kind().toUnqualString();
  return !s.empty() && s.back() == '_' && s.substr(0, 2) != "__";
}

}  // namespace

TracedGraph trace_module(const nn::AnyModule& m, const Shape& shape) {
  // Batch 2: a batch size no per-sample dimension of the models' views starts with at the
  // batch's place (reshape({x.size(0), -1}) records 2 there; see GraphLowering::reshape).
  constexpr int64_t kBatch = 2;
  m.ptr()->eval();
  GradOff off(*m.ptr());
  torch::NoGradGuard no_grad;
  Shape s = {kBatch};
  s.insert(s.end(), shape.begin(), shape.end());
  nn::AnyModule copy = m;  // shares the module
  TracedGraph t;
  t.batch = kBatch;
  try {
    auto traced = torch::jit::tracer::trace(
        {at::zeros(s)},
        [&](torch::jit::Stack in) -> torch::jit::Stack {
          return {copy.forward<at::Tensor>(in.at(0).toTensor())};
        },
        [](const at::Tensor&) { return std::string(); }, /*strict=*/false);
    t.graph = traced.first->graph;
  } catch (const std::exception& e) {
    throw Unsupported{fmt::format("cannot trace {}: {}", type_name(*m.ptr()),
                                  std::string(e.what()).substr(0, 200))};
  }
  torch::jit::EliminateDeadCode(t.graph);
  return t;
}

std::vector<int> Compiler::graph(torch::jit::Graph& g, const std::vector<int>& xs,
                                 const std::string& prefix, int64_t trace_batch) {
  return GraphLowering(*this, prefix, trace_batch).run(g, xs);
}

std::vector<int> GraphLowering::run(torch::jit::Graph& g, const std::vector<int>& xs) {
  size_t i = 0;
  for (const Value* v : g.inputs()) {
    if (v->type()->kind() != c10::TypeKind::TensorType) continue;  // a module's self
    if (i >= xs.size()) throw Unsupported{"the graph takes more tensors than the stage"};
    if (i == 0) first_input_ = xs[0];
    set_reg(v, xs[i++]);
  }
  if (i != xs.size()) throw Unsupported{"the graph takes fewer tensors than the stage"};
  block(g.block());
  std::vector<int> out;
  for (const Value* v : g.outputs()) {
    const Val& x = val(v);
    if (x.kind == Val::kReg) {
      out.push_back(x.reg);
    } else if (x.kind == Val::kRegs &&
               std::find(x.regs.begin(), x.regs.end(), -1) == x.regs.end()) {
      out.insert(out.end(), x.regs.begin(), x.regs.end());
    } else {
      throw Unsupported{"a graph output that is not a tensor"};
    }
  }
  return out;
}

void GraphLowering::block(torch::jit::Block* b) {
  for (Node* n : b->nodes()) {
    if (done_.count(n) == 0) node(n);
  }
}

void GraphLowering::node(Node* n) {
  const auto kind = n->kind();
  if (kind == c10::prim::Constant) {
    // Tensor constants are the weights: copied (by val()), so that later changes to the model
    // are not seen.
    if (val(n->output()).kind != Val::kConst) throw Unsupported{"a constant without a value"};
    return;
  }
  if (kind == c10::prim::If) {
    const Val& cond = val(n->input(0));
    if (cond.kind != Val::kConst || !cond.c.isBool())
      throw Unsupported{fmt::format("an `if` on a value known at run time only ({})",
                                    describe_unknown(n->input(0)))};
    torch::jit::Block* taken = n->blocks()[cond.c.toBool() ? 0 : 1];
    block(taken);
    for (size_t k = 0; k < n->outputs().size(); ++k) set(n->output(k), val(taken->outputs()[k]));
    return;
  }
  if (!n->blocks().empty())
    throw Unsupported{fmt::format("control flow ({})", kind.toQualString())};
  if (kind == c10::prim::RaiseException) throw Unsupported{"the graph raises an exception"};
  if (n->outputs().empty()) return;  // aten::warn and the like: nothing to compute
  if (fold_inference_predicate(n) || fold_constant(n) || lower_meta(n)) return;
  Compiler::Checkpoint cp = c_.checkpoint();
  std::string why = fmt::format("no lowering for {}", kind.toQualString());
  try {
    if (!c_.force_fallback() && lower_op(n)) return;
  } catch (const Unsupported& u) {
    why = u.why;
  }
  c_.restore(cp);
  node_fallback(n, why);
}

// A node whose inputs are all constants runs now, once (shapes, transposed weights, asserts).
bool GraphLowering::fold_constant(Node* n) {
  if (n->maybeOperator() == nullptr || n->isNondeterministic() || n->hasSideEffects()) return false;
  for (const Value* v : n->inputs())
    if (val(v).kind != Val::kConst) return false;
  torch::jit::Stack stack;
  for (const Value* v : n->inputs()) stack.push_back(val(v).c);
  try {
    n->getOperation()(stack);
  } catch (const std::exception&) {
    return false;  // lowered or run as a fallback instead, which says why it fails
  }
  if (stack.size() != n->outputs().size()) return false;
  for (size_t k = 0; k < stack.size(); ++k) set(n->output(k), Val{Val::kConst, -1, stack[k]});
  return true;
}

// The node that makes `v` unknown at compile time: the first of its producers, walking back
// through the inputs that are not known either, e.g. "aten::all <- aten::append".
std::string GraphLowering::describe_unknown(const Value* v) const {
  std::string out;
  for (int depth = 0; depth < 4 && v != nullptr; ++depth) {
    const Node* p = v->node();
    out += (out.empty() ? "" : " <- ") + std::string(p->kind().toQualString());
    v = nullptr;
    for (const Value* in : p->inputs()) {
      const Val& x = val(in);
      if (x.kind == Val::kNone || x.kind == Val::kRegs) {
        v = in;
        break;
      }
    }
  }
  return out;
}

bool GraphLowering::fold_inference_predicate(Node* n) {
  const std::string k = n->kind().toQualString();
  auto set_const = [&](c10::IValue c) {
    set(n->output(), Val{Val::kConst, -1, std::move(c)});
    return true;
  };
  // The stage runs in inference mode: no grad, no autocast (evaluated at compile time these
  // would read the compiler's own modes).
  if (k == "aten::is_grad_enabled" || k == "aten::is_autocast_enabled") return set_const(false);
  if ((k == "aten::__is__" || k == "aten::__isnot__") && n->inputs().size() == 2) {
    // Of a register and a register or None (two constants fold as usual). One register is one
    // tensor: `query is key` for self-attention.
    const Val &a = val(n->input(0)), &b = val(n->input(1));
    auto operand = [](const Val& x) {
      return x.kind == Val::kReg || (x.kind == Val::kConst && x.c.isNone());
    };
    if (!operand(a) || !operand(b) || (a.kind != Val::kReg && b.kind != Val::kReg)) return false;
    const bool same = a.kind == Val::kReg && b.kind == Val::kReg && a.reg == b.reg;
    return set_const(k == "aten::__is__" ? same : !same);
  }
  if (n->inputs().empty() || val(n->input(0)).kind != Val::kReg) return false;
  // Registers hold dense float CPU tensors that require no grad.
  if (k == "prim::is_cuda" || k == "prim::is_nested" || k == "prim::requires_grad" ||
      k == "prim::is_mkldnn" || k == "prim::is_quantized" || k == "prim::is_sparse")
    return set_const(false);
  if (k == "prim::device") return set_const(c10::Device(c10::kCPU));
  if (k == "prim::dtype") return set_const(static_cast<int64_t>(at::kFloat));
  return false;
}

// Shapes and lists: sizes of registers, the batch size, lists of tensors.
bool GraphLowering::lower_meta(Node* n) {
  const std::string k = n->kind().toQualString();
  if (k == "aten::size" || k == "aten::dim") {
    const Val& x = val(n->input(0));
    if (x.kind != Val::kReg) return false;
    const Shape& s = c_.regs()[x.reg].shape;
    const int64_t rank = static_cast<int64_t>(s.size()) + 1;
    if (k == "aten::dim") {
      set(n->output(), Val{Val::kConst, -1, c10::IValue(rank)});
    } else if (n->inputs().size() == 1) {
      Val l{Val::kInts};
      l.ints = {0};
      l.ints.insert(l.ints.end(), s.begin(), s.end());
      l.batch_at.assign(l.ints.size(), false);
      l.batch_at[0] = true;
      set(n->output(), l);
    } else {
      int64_t d = int_of(n->input(1));
      if (d < 0) d += rank;
      if (d == 0) {
        set(n->output(), Val{Val::kBatch});
      } else {
        set(n->output(), Val{Val::kConst, -1, c10::IValue(s.at(d - 1))});
      }
    }
    return true;
  }
  return lower_list(n);
}

// Lists and tuples: of registers (cat's input, a tuple of outputs), of ints (shapes, with the
// batch size where a size(0) went).
bool GraphLowering::lower_list(Node* n) {
  const std::string k = n->kind().toQualString();
  if (k == "aten::len" && val(n->input(0)).kind == Val::kInts) {
    set(n->output(),
        Val{Val::kConst, -1, c10::IValue(static_cast<int64_t>(val(n->input(0)).ints.size()))});
    return true;
  }
  if (k == "aten::__getitem__" && val(n->input(0)).kind == Val::kInts) {
    const Val& l = val(n->input(0));
    int64_t i = int_of(n->input(1));
    if (i < 0) i += static_cast<int64_t>(l.ints.size());
    set(n->output(),
        l.batch_at.at(i) ? Val{Val::kBatch} : Val{Val::kConst, -1, c10::IValue(l.ints.at(i))});
    return true;
  }
  if (k == "prim::ListConstruct" && const_list(n)) return true;
  if (k == "prim::ListConstruct" || k == "prim::TupleConstruct") {
    Val regs{Val::kRegs}, ints{Val::kInts};
    bool all_regs = true, all_ints = true;
    // A tuple may hold values the compiler does not know (attention's weights): -1.
    const bool tuple = k == "prim::TupleConstruct";
    for (const Value* v : n->inputs()) {
      const Val& x = val(v);
      const bool unknown = tuple && x.kind == Val::kNone;
      all_regs = all_regs && (x.kind == Val::kReg || unknown);
      if (x.kind == Val::kReg || unknown) regs.regs.push_back(unknown ? -1 : x.reg);
      const bool is_int = x.kind == Val::kBatch || (x.kind == Val::kConst && x.c.isInt());
      all_ints = all_ints && is_int;
      if (is_int) {
        ints.ints.push_back(x.kind == Val::kBatch ? 0 : x.c.toInt());
        ints.batch_at.push_back(x.kind == Val::kBatch);
      }
    }
    const bool any_batch =
        std::find(ints.batch_at.begin(), ints.batch_at.end(), true) != ints.batch_at.end();
    if (all_regs) {
      set(n->output(), regs);
    } else if (all_ints && !any_batch && k == "prim::ListConstruct") {
      set(n->output(), Val{Val::kConst, -1, c10::IValue(ints.ints)});
    } else if (all_ints) {
      set(n->output(), ints);
    }
    return all_regs || all_ints;
  }
  if ((k == "prim::ListUnpack" || k == "prim::TupleUnpack") &&
      val(n->input(0)).kind == Val::kInts) {
    const Val& x = val(n->input(0));
    if (x.ints.size() != n->outputs().size()) return false;
    for (size_t i = 0; i < x.ints.size(); ++i)
      set(n->output(i),
          x.batch_at[i] ? Val{Val::kBatch} : Val{Val::kConst, -1, c10::IValue(x.ints[i])});
    return true;
  }
  if (k == "prim::ListUnpack" || k == "prim::TupleUnpack") {
    const Val& x = val(n->input(0));
    if (x.kind != Val::kRegs || x.regs.size() != n->outputs().size()) return false;
    for (size_t i = 0; i < x.regs.size(); ++i)
      if (x.regs[i] >= 0) set_reg(n->output(i), x.regs[i]);
    return true;
  }
  if ((k == "aten::Int" || k == "prim::NumToTensor" || k == "aten::ScalarImplicit") &&
      val(n->input(0)).kind == Val::kBatch) {
    set(n->output(), Val{Val::kBatch});
    return true;
  }
  return false;
}

// A list of constants that are not ints (bools, floats, strings; an empty list of them): built
// here, since prim::ListConstruct has no operator to fold it with. Later aten::append nodes fold
// onto it (the list is shared, as in TorchScript).
bool GraphLowering::const_list(Node* n) {
  const auto list_type = n->output()->type()->cast<c10::ListType>();
  if (!list_type) return false;
  const auto& elem = list_type->getElementType();
  if (elem->kind() == c10::TypeKind::TensorType || elem->kind() == c10::TypeKind::IntType)
    return false;
  c10::impl::GenericList list(elem);
  for (const Value* v : n->inputs()) {
    const Val& x = val(v);
    if (x.kind != Val::kConst) return false;
    list.push_back(x.c);
  }
  set(n->output(), Val{Val::kConst, -1, c10::IValue(std::move(list))});
  return true;
}

void GraphLowering::node_fallback(Node* n, const std::string& why) {
  // A value the compiler cannot know (an assert's message of a run-time shape) stays unknown:
  // lowering fails only where something reads it. Of a node with several outputs only the first
  // is kept (attention's output; its weights, when asked for, stay unknown).
  if (n->outputs().empty() || n->output(0)->type()->kind() != c10::TypeKind::TensorType) return;
  if (n->maybeOperator() == nullptr)
    throw Unsupported{
        fmt::format("{} (and {} cannot run on its own)", why, n->kind().toQualString())};
  auto call = std::make_shared<NodeCall>();
  call->op = n->getOperation();
  std::vector<int> srcs;
  for (const Value* v : n->inputs()) {
    const Val& x = val(v);
    NodeCall::Arg a;
    switch (x.kind) {
      case Val::kReg:
        a.src = static_cast<int>(srcs.size());
        srcs.push_back(x.reg);
        break;
      case Val::kRegs:
        for (int r : x.regs) {
          if (r < 0)
            throw Unsupported{
                fmt::format("{}: an input of {} is unknown", why, n->kind().toQualString())};
          a.srcs.push_back(static_cast<int>(srcs.size()));
          srcs.push_back(r);
        }
        break;
      case Val::kConst:
        a.c = x.c;
        break;
      case Val::kBatch:
        a.batch = true;
        break;
      case Val::kInts:
        a.is_ints = true;
        a.ints = x.ints;
        a.batch_at = x.batch_at;
        break;
      case Val::kNone:
        throw Unsupported{
            fmt::format("{}: an input of {} is unknown", why, n->kind().toQualString())};
    }
    call->args.push_back(std::move(a));
  }
  if (srcs.empty()) {
    // A constant broadcast to the batch (a ViT's class token, expand(n, -1, -1)): it reads no
    // register, but the batch size comes with the stage's first input.
    const bool reads_batch = std::any_of(call->args.begin(), call->args.end(), [](const auto& a) {
      return a.batch || (a.is_ints &&
                         std::find(a.batch_at.begin(), a.batch_at.end(), true) != a.batch_at.end());
    });
    if (!reads_batch || first_input_ < 0)
      throw Unsupported{fmt::format("{} reads no tensor", n->kind().toQualString())};
    srcs.push_back(first_input_);  // read by no argument: only its size(0) is used
  }
  call->clone_first = is_inplace(n) && call->args[0].src >= 0;
  const std::string base = n->kind().toUnqualString();
  const std::string nm = name(base);
  set_reg(n->output(0), c_.fallback(std::move(call), srcs, nm, fmt::format("{} ({})", nm, why)));
  if (n->outputs().size() == 1) mutated(n);
}

const Val& GraphLowering::val(const Value* v) const {
  static const Val kNone;
  auto it = vals_.find(v);
  if (it != vals_.end()) return it->second;
  // A constant that comes after the node looking ahead at it (a traced BatchNorm's weights
  // follow the conv before it).
  if (v->node()->kind() == c10::prim::Constant) {
    if (auto c = torch::jit::toIValue(v)) {
      Val x{Val::kConst, -1, c->isTensor() ? c10::IValue(c->toTensor().clone()) : *c};
      return vals_[v] = std::move(x);
    }
  }
  // Likewise a list of int constants (a traced conv's stride, read by a look-ahead).
  if (v->node()->kind() == c10::prim::ListConstruct) {
    std::vector<int64_t> ints;
    for (const Value* e : v->node()->inputs()) {
      const Val& x = val(e);
      if (x.kind != Val::kConst || !x.c.isInt()) return kNone;
      ints.push_back(x.c.toInt());
    }
    return vals_[v] = Val{Val::kConst, -1, c10::IValue(ints)};
  }
  return kNone;
}

void GraphLowering::set_reg(const Value* v, int r) {
  Val x{Val::kReg};
  x.reg = r;
  vals_[v] = x;
}

int GraphLowering::reg(const Value* v) const {
  const Val& x = val(v);
  if (x.kind != Val::kReg) throw Unsupported{"an input that is not a tensor of the program"};
  return x.reg;
}

const c10::IValue& GraphLowering::constant(const Value* v) const {
  const Val& x = val(v);
  if (x.kind != Val::kConst) throw Unsupported{"an argument known at run time only"};
  return x.c;
}

std::vector<int64_t> GraphLowering::ints(const Value* v) const {
  const c10::IValue& c = constant(v);
  if (c.isInt()) return {c.toInt()};
  if (!c.isIntList()) throw Unsupported{"an argument that is not a list of ints"};
  return c.toIntVector();
}

int64_t GraphLowering::int_of(const Value* v) const {
  const c10::IValue& c = constant(v);
  if (!c.isInt()) throw Unsupported{"an argument that is not an int"};
  return c.toInt();
}

at::Tensor GraphLowering::tensor(const Value* v) const {
  const c10::IValue& c = constant(v);
  if (c.isNone()) return {};
  if (!c.isTensor()) throw Unsupported{"an argument that is not a constant tensor"};
  return c.toTensor();
}

std::string GraphLowering::name(const std::string& base) {
  const int k = ++counts_[base];
  return fmt::format("{}{}{}{}", prefix_, prefix_.empty() ? "" : ".", base, k);
}

Node* GraphLowering::sole_user(const Value* v, const char* kind) const {
  for (const torch::jit::Use& use : v->uses()) {
    Node* u = use.user;
    const std::string k = u->kind().toQualString();
    if (done_.count(u) != 0 || (k != kind && k != std::string(kind) + "_")) continue;
    if (u->inputs().empty() || u->input(0) != v) continue;
    bool others_after = v->uses().size() == 1 || is_inplace(u);
    for (const torch::jit::Use& o : v->uses())
      others_after =
          others_after &&
          (o.user == u || (o.user->owningBlock() == u->owningBlock() && o.user->isAfter(u)));
    return others_after ? u : nullptr;
  }
  return nullptr;
}

void GraphLowering::mutated(Node* n) {
  if (is_inplace(n) && !n->inputs().empty() && n->outputs().size() == 1)
    set(n->input(0), val(n->output()));
}

void GraphLowering::bind_fused(Node* n, const std::vector<Node*>& fused, int y) {
  set_reg(n->output(), y);
  for (Node* u : fused) {
    set_reg(u->output(), y);
    mutated(u);
    done_.insert(u);
  }
}

}  // namespace quilt::backends::detail
