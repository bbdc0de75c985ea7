#pragma once
// Internal to models/: the analysis behind torchscript.h. A TorchScript model's forward graph,
// frozen and simplified, its top-level operations, its candidate cuts, and the shapes and MACs of
// one probe run; plus the graph surgery that turns a range of top-level operations into a module.
// The same analysis of the model's inlined graph before freezing (the training graph: weights
// read from the module through prim::GetAttr on `self`) gives the trainable segments.

#include "models/model.h"

#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace quilt::models {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

/// One candidate cut of the frozen graph (structure only; shapes come from the probe run).
struct Candidate {
  std::string path;     // "features.3"
  size_t depth = 0;     // 1 = top-level submodule
  size_t position = 0;  // cut between top[position - 1] and top[position]
  std::string inside;   // "a loop" / "an `if`" when the submodule runs inside one
  std::vector<Value*> crossing;
  std::string invalid;  // why it cannot be a cut
};

/// The frozen model's forward graph, its top-level operations and its candidate cuts; or, with
/// `self` set, the same for the inlined graph before freezing (the training graph).
struct TorchScriptGraph {
  std::string path;
  torch::jit::Module frozen;
  std::shared_ptr<Graph> graph;
  Value* self = nullptr;  // training graph only: the module, whose attributes hold the weights
  Value* input = nullptr;
  Value* output = nullptr;
  std::vector<Node*> top;  // top-level nodes except free ones (cloned where used), in order
  std::unordered_map<const Node*, size_t> index;
  std::vector<Candidate> candidates;  // by position, outer submodules first
  std::unordered_map<const Value*, std::vector<int64_t>> sizes;  // probe run, batch of 2
  std::vector<int64_t> macs_at;  // per top node: MACs per sample (probe run)

  // Nodes without inputs or effects that any segment may have its own copy of: constants, the
  // placeholders of TorchScript's early-return control flow and, in the training graph,
  // attribute reads from `self` (prim::GetAttr chains: every segment runs on the same module).
  bool is_free(const Node* n) const {
    if (n->kind() == c10::prim::Constant || n->kind() == c10::prim::Uninitialized) return true;
    if (self == nullptr || n->kind() != c10::prim::GetAttr) return false;
    const Value* from = n->input(0);
    return from == self || (from->node()->kind() == c10::prim::GetAttr && is_free(from->node()));
  }

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

namespace torchscript_detail {

/// The submodule path of the code that produced `n`: the instance names of the inlined calls
/// ("features", "3", "block", "0"); calls of self's own methods are not a level.
std::vector<std::string> module_path(const Node* n);

/// A new graph running top-level nodes [begin, end) of g: its inputs are `inputs` (after `self`
/// for a training graph), its output `outputs` (one value, or a tuple of several). Free nodes
/// (constants, attribute reads) are cloned where they are used.
std::shared_ptr<Graph> slice(const TorchScriptGraph& g, size_t begin, size_t end,
                             const std::vector<Value*>& inputs, const std::vector<Value*>& outputs);

/// A module (eval mode) whose forward is `graph` (which gains a `self` input).
torch::jit::Module make_module(const std::shared_ptr<Graph>& graph);

/// The `count` tensors of a forward's result: the tensor itself (count 1) or a tuple's
/// elements.
std::vector<at::Tensor> tensors_of(const c10::IValue& v, size_t count);

/// The TorchScript file `path` on the CPU. Throws ModelError for a missing file or one that is
/// not TorchScript.
torch::jit::Module load_file(const std::string& path);

/// Freezes `scripted` (file `path`, for messages), finds its candidate cuts and runs it once on
/// a batch of 2 zeros of per-sample shape `input` for every shape and MAC count. Throws
/// ModelError (see TorchScriptModelImpl) for a forward that takes or returns other than one
/// tensor, or an input the model rejects.
std::shared_ptr<TorchScriptGraph> analyse(const std::string& path, torch::jit::Module scripted,
                                          const Shape& input);

/// Sets the `training` flag of `m` and of every submodule that has one (a module saved after
/// torch.jit.freeze has none; Module::train asserts there).
void set_training(const torch::jit::Module& m, bool on);
/// The `training` flag of `m`; false when it has none (a frozen module).
bool is_training(const torch::jit::Module& m);

/// The training graph of `scripted` (file `path`, for messages): its forward, inlined but not
/// frozen, simplified as analyse() simplifies the frozen one, with its top-level nodes and
/// candidate cuts (no probe run: no shapes, no MACs). Throws ModelError as analyse() does for a
/// forward that takes or returns other than one tensor.
std::shared_ptr<TorchScriptGraph> analyse_training(const std::string& path,
                                                   const torch::jit::Module& scripted);

/// What a crossing tensor is called: "input", the path of the submodule that made it, or its
/// debug name.
std::string tensor_name(const Value* v, bool is_input);

}  // namespace torchscript_detail
}  // namespace quilt::models
