#pragma once
// The channel multiplier of the zoo's ResNets (`model.width`), in one place: models/ builds the
// narrower layers, the harness validates the experiment file's key. Header-only, no LibTorch.

#include <string_view>

namespace quilt::common {

/// Largest valid channel multiplier; valid widths are (0, kMaxModelWidth].
inline constexpr double kMaxModelWidth = 4.0;

/// Whether `width` is a valid channel multiplier: > 0 and <= kMaxModelWidth (NaN is not).
inline bool valid_model_width(double width) { return width > 0 && width <= kMaxModelWidth; }

/// The zoo's archs that take a width other than 1 (the ResNets); the others have fixed widths.
inline constexpr const char* kArchsWithWidth = "resnet18, resnet50";

/// Whether the zoo's `arch` takes a width other than 1.
inline bool arch_has_width(std::string_view arch) {
  return arch == "resnet18" || arch == "resnet50";
}

}  // namespace quilt::common
