#pragma once
// Internal to inference_graph*.cc: the state of lowering one torch::jit::Graph onto a Compiler.
// inference_graph.cc walks the nodes (values, constants, folding, control flow with constant
// conditions, the per-node fallback), inference_graph_ops.cc lowers each operation kind.

#include "backends/inference_compiler.h"

#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/ir/ir.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace quilt::backends::detail {

using torch::jit::Node;
using torch::jit::Value;

// What a graph value is at compile time.
struct Val {
  enum Kind {
    kNone,   // not known (a module `self`, a value of a node not lowered)
    kReg,    // a tensor in register `reg`
    kConst,  // a constant `c` (a weight, an int, a list of ints...)
    kBatch,  // the batch size, known at run time only
    kInts,   // a list of ints `ints` whose entries at `batch_at` are the batch size
    kRegs,   // a list or tuple of tensors in registers `regs`
  } kind = kNone;
  int reg = -1;
  c10::IValue c;
  std::vector<int> regs;
  std::vector<int64_t> ints;
  std::vector<bool> batch_at;
};

class GraphLowering {
 public:
  GraphLowering(Compiler& c, std::string prefix, int64_t trace_batch)
      : c_(c), prefix_(std::move(prefix)), trace_batch_(trace_batch) {}

  /// Lowers `g` with its tensor inputs in registers `xs`; returns its outputs' registers.
  std::vector<int> run(torch::jit::Graph& g, const std::vector<int>& xs);

 private:
  // inference_graph.cc
  void block(torch::jit::Block* b);
  void node(Node* n);
  bool fold_constant(Node* n);
  // What a stage knows of its tensors at run time (CPU, float, no grad, not nested, identity):
  // the predicates MultiheadAttention branches on, folded to constants.
  bool fold_inference_predicate(Node* n);
  std::string describe_unknown(const Value* v) const;
  bool lower_meta(Node* n);
  bool lower_list(Node* n);
  bool const_list(Node* n);
  void node_fallback(Node* n, const std::string& why);
  const Val& val(const Value* v) const;
  void set(const Value* v, Val x) { vals_[v] = std::move(x); }
  void set_reg(const Value* v, int r);
  // A register for v (Unsupported unless v is a tensor in a register).
  int reg(const Value* v) const;
  // A constant of v (Unsupported unless v is one).
  const c10::IValue& constant(const Value* v) const;
  std::vector<int64_t> ints(const Value* v) const;
  int64_t int_of(const Value* v) const;
  at::Tensor tensor(const Value* v) const;  // undefined for None
  // A name for the op of n: prefix.base<k>, k counting `base` in this graph.
  std::string name(const std::string& base);
  // The user of v of `kind` (or its in-place form), not yet lowered, reading v first, if it is
  // v's only user (or, in place, every other user comes after it); nullptr otherwise.
  Node* sole_user(const Value* v, const char* kind) const;
  // In-place ops write their first input: later uses of it see the result.
  void mutated(Node* n);
  // n's output and those of the nodes folded into its op (`fused`: BN, ReLU) are register y;
  // the folded nodes count as lowered.
  void bind_fused(Node* n, const std::vector<Node*>& fused, int y);

  // inference_graph_ops.cc: true when n was lowered (else it falls back).
  bool lower_op(Node* n);
  bool conv(Node* n);
  bool batch_norm(Node* n);
  bool eltwise(Node* n);
  bool add(Node* n);
  bool pool(Node* n);
  bool squeeze_excite(Node* n);
  bool reshape(Node* n);
  bool slice(Node* n);
  bool cat(Node* n);
  bool linear(Node* n);
  bool identity(Node* n);
  bool layer_norm(Node* n);
  bool gelu(Node* n);
  bool attention(Node* n);
  // A ReLU that is v's only user fuses into the op that computes v: v becomes its output, nm
  // says "+relu", the node joins `fused`. Returns it, or nullptr.
  Node* fuse_relu(Value*& v, std::string& nm, std::vector<Node*>& fused);
  // An eval BatchNorm node's constants (nullopt: training, or not constants).
  std::optional<BatchNormParams> bn_params(Node* bn) const;

  Compiler& c_;
  std::string prefix_;
  int64_t trace_batch_;
  mutable std::unordered_map<const Value*, Val> vals_;  // val() adds constants on first use
  std::unordered_set<const Node*> done_;  // nodes lowered as part of an earlier node's op
  std::map<std::string, int> counts_;
  int first_input_ = -1;  // the register of the graph's first tensor input: carries the batch size
};

}  // namespace quilt::backends::detail
