#include "partitioners/profile.h"

#include "partitioners/error.h"

#include <fmt/format.h>

#include <cmath>
#include <set>

namespace quilt::partitioners {

LayerProfile chain_layer(std::string name, int64_t flops, int64_t params, const Shape& out_shape,
                         bool cut_allowed) {
  LayerProfile l;
  l.name = std::move(name);
  l.flops = flops;
  l.params = params;
  l.out_bytes = kFloatBytes * numel(out_shape);
  l.cut_allowed = cut_allowed;
  l.crossing.push_back(CrossingTensor{"out", out_shape});
  return l;
}

void validate(const ModelProfile& model) {
  const std::string what = model.name.empty() ? "the model" : fmt::format("model '{}'", model.name);
  if (model.layers.empty()) {
    throw PartitionError(fmt::format("{} has no layers: a profile needs at least one", what));
  }
  if (model.input_bytes < 0) {
    throw PartitionError(
        fmt::format("{}: input_bytes = {} is negative; it must be >= 0", what, model.input_bytes));
  }
  std::set<std::string> names;
  const size_t n = model.layers.size();
  for (size_t i = 0; i < n; ++i) {
    const LayerProfile& l = model.layers[i];
    if (l.name.empty()) {
      throw PartitionError(
          fmt::format("{}: layer {} has an empty name; names must be unique and "
                      "non-empty",
                      what, i));
    }
    if (!names.insert(l.name).second) {
      throw PartitionError(
          fmt::format("{}: layer name '{}' appears twice (again at index {}); names must be unique",
                      what, l.name, i));
    }
    const auto field = [&](const char* key, int64_t v) {
      if (v < 0) {
        throw PartitionError(fmt::format("{}, layer '{}': {} = {} is negative; it must be >= 0",
                                         what, l.name, key, v));
      }
    };
    field("flops", l.flops);
    field("params", l.params);
    field("out_bytes", l.out_bytes);
    for (const CrossingTensor& t : l.crossing) {
      bool ok = t.shape.size() >= 1 && t.shape.size() <= 3;
      for (int64_t d : t.shape) ok = ok && d >= 1;
      if (!ok) {
        throw PartitionError(fmt::format(
            "{}, layer '{}': crossing tensor '{}' has shape {}; it must be {{C, H, W}}, {{T, F}} "
            "or {{F}} with every dimension >= 1",
            what, l.name, t.name, to_string(t.shape)));
      }
    }
    if (l.cut_allowed && i + 1 < n && l.crossing.empty()) {
      throw PartitionError(fmt::format(
          "{}, layer '{}': a cut is allowed after it but no crossing tensor is listed; list the "
          "tensors that cross such a cut (the output, plus skip connections) or set cut_allowed "
          "= false",
          what, l.name));
    }
    for (const auto& [board, s] : l.measured_s) {
      if (!std::isfinite(s) || s < 0) {
        throw PartitionError(
            fmt::format("{}, layer '{}': measured_s['{}'] = {} is invalid; it "
                        "must be finite and >= 0 seconds per sample",
                        what, l.name, board, s));
      }
    }
  }
}

}  // namespace quilt::partitioners
