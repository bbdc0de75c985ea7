#pragma once
// Per-sample tensor shapes, shared by models/ (LibTorch) and partitioners/ (no LibTorch).

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::common {

/// Shape of one sample, without the batch dimension (e.g. {3, 224, 224} or {512}).
using Shape = std::vector<int64_t>;

/// Number of elements in one sample of `shape` (1 for the empty shape).
int64_t numel(const Shape& shape);

/// "3x224x224" for messages and tables ("scalar" for the empty shape).
std::string to_string(const Shape& shape);

}  // namespace quilt::common
