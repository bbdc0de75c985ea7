#pragma once
// The model zoo's common shape: a model is an ordered list of units (named submodules that run
// as a whole) with named cut points between them. Pipeline stages are contiguous runs of units.

#include "common/error.h"
#include "common/shape.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::models {

/// A user's mistake about a model (unknown arch, unknown cut, bad rate, incompatible weights).
/// The message names the offending value and what would be valid.
class ModelError : public common::UserError {
 public:
  using common::UserError::UserError;
};

// Shape of one sample, numel() and to_string(): common/shape.h.
using common::numel;
using common::Shape;
using common::to_string;

/// One unit of a model: a named piece that runs as a whole (ResNet: "stem", "layer1.0", ...).
/// `module` is a view: its parameters are registered in the owning model under the
/// torchvision names, not under the unit's name.
struct Unit {
  std::string name;
  torch::nn::AnyModule module;
};

/// One tensor that crosses a cut: a label ("down1", the unit that produced it, for UNet's
/// skips; "out" where a single tensor crosses) and the shape of one sample.
struct CutTensor {
  std::string name;
  Shape shape;
};

/// A place between two consecutive units where the model may be cut. `after_unit` is the index
/// of the last unit before the cut. `tensors` lists what crosses, one entry per tensor still
/// live after the unit (ResNet, MLP, EfficientNet: one; UNet inside its U: the current tensor
/// and the skips the expansive path still needs). `shape` is the shape of one sample of what the
/// pipeline moves: the tensor's own shape when one tensor crosses, else the packed shape
/// {total} (see pack()).
///
/// Packed form: when several tensors cross, one sample is the tensors flattened (C-order) and
/// concatenated in the order of `tensors`, which is the order in which the model produced them
/// (oldest first: UNet's after_down2 is inc, down1, down2). A batch is [N, total]. Units that
/// consume or produce several tensors take and return this form, so that the pipeline and the
/// Board interface move one contiguous tensor per batch.
struct CutPoint {
  std::string name;
  size_t after_unit = 0;
  Shape shape;
  std::vector<CutTensor> tensors;
};

/// Packs tensors [N, ...shape_i] into [N, sum numel(shape_i)] (one copy). A single tensor is
/// returned as is (no copy, no reshape).
torch::Tensor pack(const std::vector<torch::Tensor>& tensors);

/// Views into a packed batch [N, total]: one tensor [N, ...shapes[i]] per shape (no copy; the
/// views share x's memory). A single shape returns x itself, which must then have that shape.
/// Checks (TORCH_CHECK) that the sizes add up.
std::vector<torch::Tensor> unpack(const torch::Tensor& x, const std::vector<Shape>& shapes);

/// The per-sample shape that the pipeline moves for `shapes`: shapes[0] for one, {sum numel}
/// for several.
Shape packed_shape(const std::vector<Shape>& shapes);

/// A Sequential as a unit (a view). AnyModule cannot hold a Sequential itself because
/// Sequential::forward is a template; this wrapper has a plain Tensor -> Tensor forward.
class SequentialUnitImpl : public torch::nn::Module {
 public:
  /// Wraps `seq` (shared, not copied).
  explicit SequentialUnitImpl(torch::nn::Sequential seq);
  /// seq->forward(x).
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential seq;
};
TORCH_MODULE(SequentialUnit);

/// Base of every model of the zoo. Subclasses register their layers under the names the
/// reference implementation uses (torchvision for ResNet) and fill units_ and cuts_.
/// Units are views and are not registered as submodules, so named_parameters() and
/// named_buffers() hold each tensor once, under its reference name. clone() is not supported.
class ModelImpl : public torch::nn::Module {
 public:
  /// Architecture name as the zoo knows it ("resnet50").
  const std::string& arch() const { return arch_; }
  /// Shape of one input sample.
  const Shape& input_shape() const { return input_shape_; }
  /// Output features of the last unit (logits).
  int64_t num_classes() const { return num_classes_; }
  /// Units in execution order.
  const std::vector<Unit>& units() const { return units_; }
  /// Cuts in model order, with their shapes.
  const std::vector<CutPoint>& cuts() const { return cuts_; }
  /// The cut named `name`; throws quilt::models::ModelError listing the valid names otherwise.
  const CutPoint& cut(const std::string& name) const;
  /// "after_stem, after_layer1.0, ..." for messages.
  std::string cut_names() const;

  /// Runs units [begin, end) on x (a batch: shape {N, ...input_shape}). begin <= end <= size.
  torch::Tensor forward_units(torch::Tensor x, size_t begin, size_t end);
  /// Runs the whole model.
  torch::Tensor forward(torch::Tensor x) { return forward_units(std::move(x), 0, units_.size()); }

 protected:
  /// For subclasses; `arch` is the zoo name.
  explicit ModelImpl(std::string arch) : arch_(std::move(arch)) {}
  /// Appends a unit; called by subclasses in order.
  void add_unit(std::string name, torch::nn::AnyModule module);
  /// Declares a cut after the most recently added unit where one tensor crosses (the unit's
  /// output, named "out"); its shape is filled by finish().
  void add_cut(std::string name);
  /// Declares a cut after the most recently added unit where `tensors` cross (in packed
  /// order); finish() checks that the unit's output is their packed shape.
  void add_cut(std::string name, std::vector<CutTensor> tensors);
  /// Sets input_shape_ and num_classes_ of an image model; throws ModelError naming arch_ unless
  /// input_shape is {channels, height, width} with positive sizes and num_classes >= 1.
  void set_image_io(const Shape& input_shape, int64_t num_classes);
  /// Computes cut shapes by shape inference (no forward pass); subclasses call it at the end of
  /// their constructor, after setting input_shape_ and num_classes_. Throws ModelError when the
  /// input shape does not fit the layers (e.g. too small an image).
  void finish();

  std::string arch_;
  Shape input_shape_;
  int64_t num_classes_ = 0;
  std::vector<Unit> units_;
  std::vector<CutPoint> cuts_;
};
TORCH_MODULE(Model);

/// Upcasts a zoo model's holder (ResNet, Mlp) to Model, sharing the module. (Model(resnet.ptr())
/// does not compile: ModuleHolder's forwarding constructor takes the shared_ptr.)
template <typename Holder>
Model to_model(const Holder& holder) {
  return Model(std::static_pointer_cast<ModelImpl>(holder.ptr()));
}

}  // namespace quilt::models
