#include "common/yaml_reader.h"

#include "common/text.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <map>

namespace quilt::common {

LineIndex::LineIndex(const std::string& text) : size_(text.size()) {
  starts_.push_back(0);
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '\n') starts_.push_back(i + 1);
}

size_t LineIndex::offset(int line, int column) const {
  if (line < 0) line = 0;
  if (static_cast<size_t>(line) >= starts_.size()) return size_;
  return std::min(size_,
                  starts_[static_cast<size_t>(line)] + static_cast<size_t>(std::max(column, 0)));
}

YamlReader::YamlReader(Thrower thrower, std::string document)
    : thrower_(std::move(thrower)), document_(std::move(document)), lines_(document_) {}

void YamlReader::fail_at(int line, int column, const std::string& key,
                         const std::string& message) const {
  thrower_(line, column, key, message);
  assert(false && "YamlReader::Thrower returned");
  std::abort();
}

void YamlReader::fail(const YAML::Node& node, const std::string& key,
                      const std::string& message) const {
  int line = 0, column = 0;
  if (node.IsDefined() && node.Mark().line >= 0) {
    line = node.Mark().line + 1;
    column = node.Mark().column + 1;
  }
  fail_at(line, column, key, message);
}

void YamlReader::fail_not(const YAML::Node& node, const std::string& key,
                          const char* type_name) const {
  fail(node, key, fmt::format("must be {} (got `{}`)", type_name, clip(node.Scalar())));
}

void YamlReader::check_keys(const YAML::Node& map, const std::string& section,
                            const std::vector<std::string>& valid) const {
  if (!map.IsMap()) fail(map, section, "must be a mapping of keys");
  std::map<std::string, int> seen;  // key -> line
  for (const auto& kv : map) {
    if (!kv.first.IsScalar())
      fail(kv.first, section, "keys must be plain names, not lists or mappings");
    auto key = kv.first.Scalar();
    auto [it, fresh] = seen.emplace(key, kv.first.Mark().line + 1);
    if (!fresh)
      fail(kv.first, section.empty() ? key : section + "." + key,
           fmt::format("duplicate key (first given on line {}); give each key once", it->second));
    if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
      std::string where = section.empty() ? "the top level" : fmt::format("`{}`", section);
      fail_at(kv.first.Mark().line + 1, kv.first.Mark().column + 1,
              section.empty() ? key : section + "." + key,
              fmt::format("unknown key in {}{}", where, did_you_mean(key, valid, "keys")));
    }
  }
}

int64_t YamlReader::integer(const YAML::Node& n, const std::string& key, int64_t lo,
                            int64_t hi) const {
  auto v = scalar<int64_t>(n, key, "an integer");
  if (v < lo || v > hi) fail(n, key, fmt::format("must be in [{}, {}] (got {})", lo, hi, v));
  return v;
}

double YamlReader::real(const YAML::Node& n, const std::string& key, double lo, double hi) const {
  auto v = scalar<double>(n, key, "a number");
  if (!std::isfinite(v) || v < lo || v > hi)
    fail(n, key, fmt::format("must be a finite number in [{}, {}] (got {})", lo, hi, n.Scalar()));
  return v;
}

std::string YamlReader::text(const YAML::Node& n, const std::string& key) const {
  // YAML reads a bare `null` as the null value; as a string it is the word (`backend: null`).
  if (n.IsDefined() && n.IsNull()) {
    size_t pos = lines_.offset(n.Mark().line, n.Mark().column);
    std::string word;
    while (pos < document_.size() && std::isalpha(static_cast<unsigned char>(document_[pos])))
      word += document_[pos++];
    if (word != "null" && word != "Null" && word != "NULL")
      fail(n, key, "must be a string (the value is empty)");
    return "null";
  }
  return scalar<std::string>(n, key, "a string");
}

bool YamlReader::boolean(const YAML::Node& n, const std::string& key) const {
  return scalar<bool>(n, key, "true or false");
}

std::string YamlReader::choice(const YAML::Node& n, const std::string& key,
                               const std::vector<std::string>& valid) const {
  auto v = text(n, key);
  if (std::find(valid.begin(), valid.end(), v) == valid.end())
    fail(n, key, fmt::format("`{}` is not valid; valid values: {}", clip(v), join(valid)));
  return v;
}

}  // namespace quilt::common
