#pragma once
// Bring your own model: a TorchScript file (torch.jit.save of torch.jit.script(m) or of
// torch.jit.trace(m, x)) loaded, frozen and cut into segments at named points. Each segment runs
// as one unit of a Model, so QuiltModel, the pipeline and the boards take it like a zoo model.
//
// Cut names: "after_<path>", where <path> is the dotted path of a submodule of the scripted
// model ("after_features", "after_features.3.block.0", "after_encoder.layers.encoder_layer_0").
// The cut sits right after the last operation of that submodule in the frozen graph; every value
// computed before it and used after it crosses (one tensor for a chain, several for skips, in the
// order the model produced them: the packed form of model.h).

#include "models/model.h"

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

/// One segment of a TorchScript model: a frozen subgraph from one cut to the next, as a unit.
/// forward() takes the packed batch of the tensors crossing the cut before it and returns the
/// packed batch of those crossing the cut after it (the model's output for the last segment).
/// Holds no parameters: the weights are constants of the frozen graph.
class ScriptSegmentImpl : public torch::nn::Module {
 public:
  /// `module`'s forward takes in_shapes.size() tensors and returns one tensor or a tuple of
  /// out_shapes.size() tensors. `macs`: per sample, of its conv/linear/matmul operations.
  ScriptSegmentImpl(torch::jit::Module module, std::vector<Shape> in_shapes,
                    std::vector<Shape> out_shapes, int64_t macs);
  /// Packed in -> packed out (see model.h's pack/unpack).
  torch::Tensor forward(torch::Tensor x);
  /// The segment as a TorchScript module (its graph is what forward runs).
  const torch::jit::Module& module() const { return module_; }
  /// Per-sample shapes of the tensors it takes and returns, in packed order.
  const std::vector<Shape>& in_shapes() const { return in_shapes_; }
  const std::vector<Shape>& out_shapes() const { return out_shapes_; }
  /// Multiply-accumulates per sample of its aten::conv*/linear/matmul/addmm/bmm nodes.
  int64_t macs() const { return macs_; }

 private:
  torch::jit::Module module_;
  std::vector<Shape> in_shapes_, out_shapes_;
  int64_t macs_ = 0;
};
TORCH_MODULE(ScriptSegment);

struct TorchScriptGraph;  // the frozen graph and its cut analysis (torchscript_graph.h)

/// A TorchScript model as a Model of the zoo's shape (arch "torchscript"). Its cuts are the
/// default ones (each top-level submodule boundary of forward that is a valid cut) plus the
/// cuts named in `extra_cuts`; its units are the segments between them.
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
  /// This is what a board freezes and optimises for inference. begin < end <= units().size().
  torch::jit::Module stage_module(size_t begin, size_t end) const;
  /// Per-sample shapes of the tensors entering unit `unit` (packed order).
  const std::vector<Shape>& unit_in_shapes(size_t unit) const;
  /// Per-sample shapes of the tensors leaving unit `unit` (packed order).
  const std::vector<Shape>& unit_out_shapes(size_t unit) const;
  /// Replaces the model's weights with a state_dict file's (read_state_dict), matched by name
  /// against the scripted module's parameters and buffers (every key and shape must match),
  /// then freezes and cuts again. Throws ModelError naming the key.
  void load_weights(const std::string& weights_path);

 private:
  void build();

  std::string path_;
  std::vector<std::string> extra_cuts_;
  torch::jit::Module scripted_;
  std::shared_ptr<TorchScriptGraph> graph_;
  std::vector<size_t> unit_begin_;  // top-level node index where each unit starts (+ end)
};
TORCH_MODULE(TorchScriptModel);

}  // namespace quilt::models
