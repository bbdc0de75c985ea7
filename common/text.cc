#include "common/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

namespace quilt::common {

std::string clip(std::string_view value, size_t max_chars) {
  if (value.size() <= max_chars) return std::string(value);
  size_t cut = max_chars;
  // Not inside a UTF-8 sequence: back up over continuation bytes (10xxxxxx).
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return fmt::format("{}... ({} bytes)", value.substr(0, cut), value.size());
}

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::string did_you_mean(const std::string& key, const std::vector<std::string>& valid,
                         const std::string& noun) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& v : valid) {
    size_t d = edit_distance(key, v);
    // Also catch "reduction_rate" -> "rate": a valid key that is a suffix of the unknown one.
    if (key.size() > v.size() && key.compare(key.size() - v.size(), v.size(), v) == 0) d = 1;
    if (d < best_d) best_d = d, best = v;
  }
  if (best_d <= std::max<size_t>(2, key.size() / 3))
    return fmt::format("; did you mean `{}`?", best);
  return fmt::format("; valid {}: {}", noun, join(valid));
}

}  // namespace quilt::common
