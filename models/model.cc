#include "models/model.h"

#include "models/summary.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

namespace quilt::models {

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string to_string(const Shape& shape) {
  if (shape.empty()) return "scalar";
  return fmt::format("{}", fmt::join(shape, "x"));
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
  cuts_.push_back(CutPoint{std::move(name), units_.size() - 1, {}});
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
      if (c.after_unit == i) c.shape = out;
    }
    shape = std::move(out);
  }
}

}  // namespace quilt::models
