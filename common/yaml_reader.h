#pragma once
// The strict YAML reader shared by experiment files (harness/experiment.cc) and board profiles
// (backends/profile.cc): typed scalars, ranges, choices and key checks, every error naming the
// place (line and column of the node) and the dotted key. The caller decides the error type: the
// reader hands each failure to a function that throws it.

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace quilt::common {

/// Byte offsets of a text's lines, to turn a 0-based (line, column) of a yaml-cpp mark into an
/// offset (marks do not always carry one, and it is off by the BOM when there is one).
class LineIndex {
 public:
  explicit LineIndex(const std::string& text);
  /// text.size() when past the end.
  size_t offset(int line, int column) const;

 private:
  size_t size_;
  std::vector<size_t> starts_;
};

/// Reads the nodes of one YAML document strictly. Not thread-safe; cheap to construct.
class YamlReader {
 public:
  /// Throws the caller's error for a failure at 1-based (line, column), 0 when unknown, about the
  /// dotted `key` (empty: the whole document). Must not return.
  using Thrower =
      std::function<void(int line, int column, const std::string& key, const std::string& message)>;

  /// `document` is the text the nodes come from, for the spelling of null values and quotes; it
  /// may be empty (then a null value is never read as the word "null").
  explicit YamlReader(Thrower thrower, std::string document = "");

  /// Fails at `node`'s place (line 0 when the node is undefined).
  [[noreturn]] void fail(const YAML::Node& node, const std::string& key,
                         const std::string& message) const;
  /// Fails at 1-based (line, column).
  [[noreturn]] void fail_at(int line, int column, const std::string& key,
                            const std::string& message) const;

  /// `map` must be a mapping whose keys are plain names, each given once and each in `valid`
  /// (else "unknown key in `section`; did you mean ...").
  void check_keys(const YAML::Node& map, const std::string& section,
                  const std::vector<std::string>& valid) const;

  /// The scalar's value as a T, or nullopt when `node` is not a scalar or does not convert.
  template <typename T>
  std::optional<T> parse(const YAML::Node& node) const {
    if (!node.IsScalar()) return std::nullopt;
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      return std::nullopt;
    }
  }

  /// The scalar's value as a T; fails with "must be <type_name> (got `value`)" otherwise.
  template <typename T>
  T scalar(const YAML::Node& node, const std::string& key, const char* type_name) const {
    if (!node.IsScalar()) fail(node, key, std::string("must be ") + type_name);
    if (auto v = parse<T>(node)) return *v;
    fail_not(node, key, type_name);
  }

  /// An integer in [lo, hi].
  int64_t integer(const YAML::Node& n, const std::string& key, int64_t lo, int64_t hi) const;
  /// A finite number in [lo, hi].
  double real(const YAML::Node& n, const std::string& key, double lo, double hi) const;
  /// A string; a bare `null` in the document reads as the word "null".
  std::string text(const YAML::Node& n, const std::string& key) const;
  /// true or false.
  bool boolean(const YAML::Node& n, const std::string& key) const;
  /// One of `valid`.
  std::string choice(const YAML::Node& n, const std::string& key,
                     const std::vector<std::string>& valid) const;

  const std::string& document() const { return document_; }
  /// Byte offset in document() of a 0-based yaml-cpp (line, column).
  size_t offset(int line, int column) const { return lines_.offset(line, column); }

 private:
  [[noreturn]] void fail_not(const YAML::Node& node, const std::string& key,
                             const char* type_name) const;

  Thrower thrower_;
  std::string document_;
  LineIndex lines_;
};

}  // namespace quilt::common
