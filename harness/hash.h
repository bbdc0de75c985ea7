#pragma once
// Stable content hashes for run ids and experiment hashes.

#include <string>

namespace quilt::harness {

/// 64-bit FNV-1a of `text` twice with different offsets, as 32 lowercase hex digits. Stable
/// across platforms and builds; not cryptographic.
std::string hex_digest(const std::string& text);

}  // namespace quilt::harness
