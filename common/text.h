#pragma once
// Text for error messages: values echoed back clipped, and "did you mean" suggestions.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace quilt::common {

/// `value` as error messages echo it: at most `max_chars` bytes (cut at a UTF-8 character
/// boundary), followed by "... (N bytes)" when cut, so that a 5 MB value never floods a terminal.
std::string clip(std::string_view value, size_t max_chars = 200);

/// "; did you mean `rate`?" when one of `valid` is close to `word` (edit distance, or a valid
/// word that ends `word`), else "; valid <noun>: a, b, c". Used for YAML keys and CLI options.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& valid,
                         const std::string& noun = "keys");

/// "a, b, c".
std::string join(const std::vector<std::string>& items);

}  // namespace quilt::common
