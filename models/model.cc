#include "models/model.h"

#include "models/summary.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

namespace quilt::models {

torch::Tensor pack(const std::vector<torch::Tensor>& tensors) {
  TORCH_CHECK(!tensors.empty(), "pack: no tensors");
  if (tensors.size() == 1) return tensors[0];
  std::vector<torch::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.reshape({t.size(0), -1}));
  return torch::cat(flat, 1);
}

std::vector<torch::Tensor> unpack(const torch::Tensor& x, const std::vector<Shape>& shapes) {
  TORCH_CHECK(!shapes.empty(), "unpack: no shapes");
  if (shapes.size() == 1) {
    TORCH_CHECK(x.dim() >= 1 && x.sizes().slice(1).vec() == shapes[0], "unpack: expected [N, ",
                to_string(shapes[0]), "], got ", x.sizes());
    return {x};
  }
  const Shape total = packed_shape(shapes);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == total[0], "unpack: expected a packed batch [N, ",
              total[0], "], got ", x.sizes());
  std::vector<torch::Tensor> out;
  out.reserve(shapes.size());
  int64_t offset = 0;
  for (const auto& s : shapes) {
    std::vector<int64_t> view = {x.size(0)};
    view.insert(view.end(), s.begin(), s.end());
    out.push_back(x.narrow(1, offset, numel(s)).view(view));
    offset += numel(s);
  }
  return out;
}

Shape packed_shape(const std::vector<Shape>& shapes) {
  TORCH_INTERNAL_ASSERT(!shapes.empty(), "packed_shape of no shapes");
  if (shapes.size() == 1) return shapes[0];
  int64_t total = 0;
  for (const auto& s : shapes) total += numel(s);
  return {total};
}

SequentialUnitImpl::SequentialUnitImpl(torch::nn::Sequential seq) : seq(std::move(seq)) {
  TORCH_INTERNAL_ASSERT(!this->seq.is_empty(), "SequentialUnit needs a Sequential");
  // Registered inside the view only, so unit.module.ptr()->parameters() counts the unit's
  // parameters; the owning model never registers the view.
  register_module("seq", this->seq);
}

torch::Tensor SequentialUnitImpl::forward(torch::Tensor x) { return seq->forward(std::move(x)); }

const CutPoint& ModelImpl::cut(const std::string& name) const {
  for (const auto& c : cuts_) {
    if (c.name == name) return c;
  }
  throw ModelError(
      fmt::format("unknown cut \"{}\" for {}; valid cuts: {}", name, arch_, cut_names()));
}

std::string ModelImpl::cut_names() const {
  std::vector<std::string> names;
  for (const auto& c : cuts_) names.push_back(c.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

torch::Tensor ModelImpl::forward_units(torch::Tensor x, size_t begin, size_t end) {
  TORCH_CHECK(begin <= end && end <= units_.size(), "forward_units(", begin, ", ", end,
              ") out of range for ", arch_, " with ", units_.size(), " units");
  for (size_t i = begin; i < end; ++i) x = units_[i].module.forward<torch::Tensor>(std::move(x));
  return x;
}

void ModelImpl::add_unit(std::string name, torch::nn::AnyModule module) {
  for (const auto& u : units_) TORCH_INTERNAL_ASSERT(u.name != name, "duplicate unit ", name);
  units_.push_back(Unit{std::move(name), std::move(module)});
}

void ModelImpl::add_cut(std::string name) {
  TORCH_INTERNAL_ASSERT(!units_.empty(), "add_cut before any unit");
  for (const auto& c : cuts_) TORCH_INTERNAL_ASSERT(c.name != name, "duplicate cut ", name);
  cuts_.push_back(CutPoint{std::move(name), units_.size() - 1, {}, {}});
}

void ModelImpl::add_cut(std::string name, std::vector<CutTensor> tensors) {
  TORCH_INTERNAL_ASSERT(!tensors.empty(), "add_cut ", name, " without tensors");
  add_cut(std::move(name));
  cuts_.back().tensors = std::move(tensors);
}

void ModelImpl::set_image_io(const Shape& input_shape, int64_t num_classes) {
  if (input_shape.size() != 3 || input_shape[0] < 1 || input_shape[1] < 1 || input_shape[2] < 1) {
    throw ModelError(
        fmt::format("{}: input shape {} must be {{channels, height, width}} with positive sizes",
                    arch_, to_string(input_shape)));
  }
  if (num_classes < 1) {
    throw ModelError(fmt::format("{}: num_classes {} must be >= 1", arch_, num_classes));
  }
  input_shape_ = input_shape;
  num_classes_ = num_classes;
}

void ModelImpl::finish() {
  TORCH_INTERNAL_ASSERT(!input_shape_.empty() && !units_.empty(), "finish() before setup");
  Shape shape = input_shape_;
  for (size_t i = 0; i < units_.size(); ++i) {
    Shape out;
    try {
      module_macs(*units_[i].module.ptr(), shape, &out);
    } catch (const ModelError& e) {
      throw ModelError(fmt::format("{} with input {}: unit {}: {}", arch_, to_string(input_shape_),
                                   units_[i].name, e.what()));
    }
    for (auto& c : cuts_) {
      if (c.after_unit != i) continue;
      if (c.tensors.empty()) {
        c.tensors = {CutTensor{"out", out}};
      } else {
        std::vector<Shape> shapes;
        for (const auto& t : c.tensors) shapes.push_back(t.shape);
        TORCH_INTERNAL_ASSERT(packed_shape(shapes) == out, arch_, " cut ", c.name, " declares ",
                              to_string(packed_shape(shapes)), " but unit ", units_[i].name,
                              " outputs ", to_string(out));
      }
      c.shape = out;
    }
    shape = std::move(out);
  }
}

}  // namespace quilt::models
