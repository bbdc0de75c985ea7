#pragma once
// The parts of experiment-file parsing that harness/experiment*.cc share (not a public API): the
// reader that throws ConfigErrors, the schema of keys, a section as one run sees it (the file's
// values under the scale's and the sweep's), the document checks, resolving one run's keys, the
// references and the sweep's expansion.

#include "common/enum_table.h"
#include "common/yaml_reader.h"
#include "harness/experiment.h"

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace quilt::harness::detail {

// Reads one YAML document with the file name at hand for messages (common/yaml_reader.h), failing
// with ConfigErrors.
class Reader : public common::YamlReader {
 public:
  Reader(std::string file, std::string document = "")
      : YamlReader(
            [file](int line, int column, const std::string& key, const std::string& message) {
              throw ConfigError(file, line, column, key, message);
            },
            std::move(document)),
        file_(std::move(file)) {}

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

// No list in an experiment file is longer than the most runs a sweep may have; a longer one is
// refused while yaml-cpp streams through the text, before a node tree of millions of values
// exists (a 10^7-value list would take tens of seconds and gigabytes to load, then be refused).
constexpr size_t kMaxListValues = 100000;

/// The keys a section accepts, in documentation order; the top-level keys.
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema();
const std::vector<std::string>& top_level_keys();

/// The document checks that YAML::Load does not make: a list longer than kMaxListValues (while
/// streaming, before a node tree exists), a second document, a quote never closed.
void check_list_lengths(const std::string& path, const std::string& text);
void check_single_document(const std::string& path, const std::string& text);
void check_quotes(const Reader& r, const std::string& text, const YAML::Node& node,
                  std::set<std::pair<int, int>>& seen);

/// A scalar's text, or a collection in YAML flow style.
std::string scalar_text(const YAML::Node& node);
/// A dotted key that a sweep or scale sets, checked against the schema.
std::string checked_path(const Reader& r, const YAML::Node& key_node, const std::string& where);
/// "[a, b]".
std::string list_text(const std::vector<std::string>& v);
/// A name or a list of names.
std::vector<std::string> name_list(const Reader& r, const YAML::Node& n, const std::string& key);

using Overrides = std::map<std::string, YAML::Node>;

// A section of the document as one run sees it: the file's values, with the scale's and the
// sweep's values for this run on top. Nodes keep their marks, so errors point into the file.
class Section {
 public:
  Section(YAML::Node node, std::string name, const Overrides& overrides)
      : node_(std::move(node)), name_(std::move(name)), overrides_(overrides) {}
  YAML::Node operator[](const std::string& key) const {
    auto it = overrides_.find(name_ + "." + key);
    if (it != overrides_.end()) return it->second;
    if (!node_.IsDefined() || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = node_;  // const access never inserts
    return map[key];
  }

 private:
  YAML::Node node_;
  std::string name_;
  const Overrides& overrides_;
};

// An enum-like key: one of its table's names (the message lists them), as the enum.
template <typename E, size_t N>
E choose(const Reader& r, const YAML::Node& n, const std::string& key,
         const common::EnumTable<E, N>& table) {
  return *common::enum_parse(table, r.choice(n, key, common::enum_names(table)));
}

/// One run: the file's sections with `overrides` (the scale's and the sweep point's) on top,
/// every key checked, its parameters recorded and its id computed.
RunConfig resolve_run(const Reader& r, const YAML::Node& root, const Overrides& overrides);

/// The `references:` list.
std::vector<Reference> parse_references(const Reader& r, const YAML::Node& node);
/// The value of `key` in a run's params, compared as text and as numbers ("64" == "64.0").
bool param_matches(const std::map<std::string, std::string>& params, const std::string& key,
                   const std::string& want);

/// One point of the sweep: the swept keys and their values, in file order.
using Point = std::vector<std::pair<std::string, YAML::Node>>;
/// The sweep's points (matrix, then zip, less the exclusions); one empty point without a sweep.
std::vector<Point> expand_sweep(const Reader& r, const YAML::Node& sweep);

}  // namespace quilt::harness::detail
