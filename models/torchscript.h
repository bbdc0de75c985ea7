#pragma once
// Bring your own model: a TorchScript file (torch.jit.save of torch.jit.script(m) or of
// torch.jit.trace(m, x)) loaded, frozen and cut into segments at named points. Each segment runs
// as one unit of a Model, so QuiltModel, the pipeline and the boards take it like a zoo model.
//
// Training: the units run the model's graph before freezing on the scripted module itself, whose
// parameters are the model's (see TorchScriptModelImpl); boards run the frozen graph of the
// current weights (stage_module).
//
// Cut names: "after_<path>", where <path> is the dotted path of a submodule of the scripted
// model ("after_features", "after_features.3.block.0", "after_encoder.layers.encoder_layer_0").
// The cut sits right after the last operation of that submodule in the frozen graph; every value
// computed before it and used after it crosses (one tensor for a chain, several for skips, in the
// order the model produced them: the packed form of model.h).

#include "models/model.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>

#include <memory>
#include <string>
#include <vector>

namespace quilt::models {

/// One place where a TorchScript model may be cut.
struct TorchScriptCut {
  std::string name;                ///< "after_features.3"
  bool top_level = false;          ///< a boundary of a top-level submodule: a default cut
  std::string invalid;             ///< why it cannot be a cut (empty when it can)
  std::vector<CutTensor> tensors;  ///< what crosses (valid cuts only), packed order
  int64_t bytes_per_sample = 0;    ///< float32 bytes of `tensors` per sample
};

/// Every candidate cut of the TorchScript file `path` for per-sample input `input`, in model
/// order: the end of each submodule (at any depth) whose operations are not inside a loop or an
/// `if` of an enclosing module, valid or not (`invalid` says why not: a non-tensor value or a
/// tensor without the batch dimension crosses). Runs the model once on a batch of 2 zeros.
/// Throws ModelError (see TorchScriptModelImpl) for a missing file, a file that is not
/// TorchScript, or an input the model rejects.
std::vector<TorchScriptCut> torchscript_cuts(const std::string& path, const Shape& input);

/// One segment of a TorchScript model, from one cut to the next, as a unit. forward() takes the
/// packed batch of the tensors crossing the cut before it and returns the packed batch of those
/// crossing the cut after it (the model's output for the last segment).
///
/// A trainable segment runs a graph function of the model's inlined graph before freezing on the
/// model's one scripted module: its weights are that module's own tensors, read through
/// prim::GetAttr, so autograd reaches them, the module's training flag steers BatchNorm and
/// Dropout, and BatchNorm's running statistics update in place. The segment registers the
/// parameters and buffers it reads (the same tensors, under their dotted path with '.' -> '_'),
/// so parameters() counts its share. A frozen segment (a model whose graph before freezing
/// cannot be cut where its frozen graph is) runs a frozen subgraph whose weights are constants.
class ScriptSegmentImpl : public torch::nn::Module {
 public:
  /// Trainable: `function`'s graph takes (self, in_shapes.size() tensors) and returns one tensor
  /// or a tuple of out_shapes.size() tensors; it runs with self = `owner` (shared, not copied).
  /// `macs`: per sample, of its conv/linear/matmul operations.
  ScriptSegmentImpl(std::shared_ptr<torch::jit::GraphFunction> function, torch::jit::Module owner,
                    std::vector<Shape> in_shapes, std::vector<Shape> out_shapes, int64_t macs);
  /// Frozen: `module`'s forward takes in_shapes.size() tensors and returns one tensor or a tuple
  /// of out_shapes.size() tensors.
  ScriptSegmentImpl(torch::jit::Module module, std::vector<Shape> in_shapes,
                    std::vector<Shape> out_shapes, int64_t macs);
  /// Packed in -> packed out (see model.h's pack/unpack).
  torch::Tensor forward(torch::Tensor x);
  /// Whether it runs on the scripted module's own weights (see the class comment).
  bool trainable() const { return function_ != nullptr; }
  /// Per-sample shapes of the tensors it takes and returns, in packed order.
  const std::vector<Shape>& in_shapes() const { return in_shapes_; }
  const std::vector<Shape>& out_shapes() const { return out_shapes_; }
  /// Multiply-accumulates per sample of its aten::conv*/linear/matmul/addmm/bmm nodes.
  int64_t macs() const { return macs_; }

 private:
  std::shared_ptr<torch::jit::GraphFunction> function_;  // trainable
  torch::jit::Module module_;                            // owner (trainable) or frozen subgraph
  std::vector<Shape> in_shapes_, out_shapes_;
  int64_t macs_ = 0;
};
TORCH_MODULE(ScriptSegment);

struct TorchScriptGraph;  // the frozen graph and its cut analysis (torchscript_graph.h)

/// A TorchScript model as a Model of the zoo's shape (arch "torchscript"). Its cuts are the
/// default ones (each top-level submodule boundary of forward that is a valid cut) plus the
/// cuts named in `extra_cuts`; its units are the segments between them.
///
/// Cuts, their shapes and MACs come from the frozen graph (eval mode); the units run the graph
/// before freezing on the one scripted module (trainable segments, see ScriptSegmentImpl), so the
/// model trains like a zoo model: its parameters and buffers are the scripted module's tensors,
/// registered under their TorchScript names ("features.0.weight": state_dict() gives the names
/// Python's scripted_module.state_dict() has), and train()/eval() reach the scripted module.
///
/// Throws ModelError naming the file and what is valid for: a missing file, a file that is not
/// TorchScript, a model whose forward takes other than one tensor or returns other than one
/// tensor (a tuple, a list), an input shape the model rejects (the model's own message), a cut
/// name that does not exist (lists the cuts that do), a cut inside a loop or an `if`, a cut
/// where a non-tensor value crosses.
class TorchScriptModelImpl : public ModelImpl {
 public:
  TorchScriptModelImpl(const std::string& path, const Shape& input,
                       const std::vector<std::string>& extra_cuts = {});
  ~TorchScriptModelImpl() override;

  /// The file it was loaded from.
  const std::string& path() const { return path_; }
  /// A fresh TorchScript module (not frozen further, not optimised) that runs units
  /// [begin, end) as one graph: its forward takes the tensors crossing into unit `begin` (in
  /// packed order) and returns one tensor or a tuple of the tensors leaving unit end - 1.
  /// This is what a board freezes and optimises for inference. Its weights are the model's
  /// current ones (after training or load_weights: the model is frozen again when they
  /// changed; ModelError if the graph frozen with them differs). begin < end <= units().size().
  torch::jit::Module stage_module(size_t begin, size_t end) const;
  /// Per-sample shapes of the tensors entering unit `unit` (packed order).
  const std::vector<Shape>& unit_in_shapes(size_t unit) const;
  /// Per-sample shapes of the tensors leaving unit `unit` (packed order).
  const std::vector<Shape>& unit_out_shapes(size_t unit) const;
  /// Replaces the model's weights with a state_dict file's (read_state_dict), matched by name
  /// against the scripted module's parameters and buffers (every key and shape must match),
  /// then freezes and cuts again. Throws ModelError naming the key.
  void load_weights(const std::string& weights_path);
  /// Why this model cannot train (empty when it can): it has no parameters, or its graph
  /// before freezing cannot be cut where the frozen graph is cut (the reason names the cut).
  const std::string& training_error() const { return training_error_; }
  /// The scripted module (shared: its tensors are this model's parameters and buffers).
  const torch::jit::Module& scripted() const { return scripted_; }
  /// Sets training mode here and on the scripted module (BatchNorm, Dropout).
  void train(bool on = true) override;

 private:
  void build();
  // Registers the scripted module's parameters and buffers here, in a tree of plain modules
  // that mirrors its submodules (the same tensors, under the same names).
  void register_weights();
  // The trainable segments between the frozen graph's cuts `names` (positions `frozen_at`),
  // or empty with training_error_ saying why the graph before freezing cannot be cut there.
  std::vector<std::shared_ptr<torch::jit::GraphFunction>> training_functions(
      const std::vector<std::string>& names, const std::vector<size_t>& frozen_at);
  // A hash of every parameter and buffer's bytes: whether the frozen graph is still current.
  uint64_t weights_fingerprint() const;

  std::string path_;
  std::vector<std::string> extra_cuts_;
  torch::jit::Module scripted_;
  // The frozen graph, frozen again by stage_module() when the weights changed since.
  mutable std::shared_ptr<TorchScriptGraph> graph_;
  mutable uint64_t graph_fingerprint_ = 0;
  std::shared_ptr<TorchScriptGraph> training_graph_;  // the graph before freezing
  std::string training_error_;
  std::vector<size_t> unit_begin_;  // top-level node index where each unit starts (+ end)
};
TORCH_MODULE(TorchScriptModel);

}  // namespace quilt::models
