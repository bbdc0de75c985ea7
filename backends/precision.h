#pragma once
// The number format a board computes in (boards.precision), and what follows from it: the element
// size of the tensors on the wire and their dtype. Free of LibTorch and YAML.

#include "common/enum_table.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quilt::backends {

/// fp32: float32 everywhere. bf16: weights, activations and wire tensors in bfloat16 (oneDNN's
/// bf16 kernels, f32 accumulation). int8: post-training static quantization (per-channel
/// symmetric int8 weights, per-tensor symmetric u8/s8 activations), uint8 on the wire with a
/// scale and zero point (0, or 128 for signed codes) fixed by calibration.
enum class Precision { kFp32, kBf16, kInt8 };

/// The spellings of Precision, in order (boards.precision, board profiles' `precision`).
inline constexpr common::EnumTable<Precision, 3> kPrecisionNames = {
    {{Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}, {Precision::kInt8, "int8"}}};

/// "fp32", "bf16", "int8".
inline const char* precision_name(Precision p) {
  // The table's names are literals: their data is NUL-terminated.
  return common::enum_name(kPrecisionNames, p).data();
}

/// The precision spelled `name` ("fp32" | "bf16" | "int8"), or std::nullopt.
inline std::optional<Precision> parse_precision(const std::string& name) {
  return common::enum_parse(kPrecisionNames, name);
}

/// The spellings parse_precision accepts, in order.
const std::vector<std::string>& precision_names();

/// Bytes per element of a tensor that crosses a cut in this precision: 4, 2, 1.
int64_t element_bytes(Precision p);

/// Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX-BF16, from /proc/cpuinfo). On a
/// CPU without, oneDNN emulates bf16 and the emulator runs slower, not wrong.
bool cpu_has_native_bf16();

}  // namespace quilt::backends
