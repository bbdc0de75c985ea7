#include "common/text.h"
#include "harness/experiment_parts.h"

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <sstream>

namespace quilt::harness::detail {

using common::join;

// The keys a section accepts, in documentation order. Sweeps and scales may set any of them.
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> kSchema = {
      {"model", {"arch", "input", "classes", "width", "weights", "seed", "path"}},
      {"data", {"kind", "path", "seed", "augment", "train_samples"}},
      {"boards",
       {"count", "backend", "profile", "time_model", "threads", "xclbin", "devices", "fallback",
        "precision", "calibration_batches"}},
      {"links", {"h2d_gbps", "d2h_gbps", "latency_s", "mpi_gbps", "mpi_latency_s"}},
      {"partition", {"cuts", "objective", "fixed"}},
      {"autoencoder", {"kind", "rate", "kernel"}},
      {"training",
       {"mode", "epochs", "batch", "lr", "lr_schedule", "optimizer", "momentum", "weight_decay",
        "freeze_epochs", "settle_tolerance", "checkpoint", "test_samples", "pretrain_epochs",
        "pretrain_samples", "seed", "converge_window", "converge_margin_pt", "lr_floor",
        "hold_epochs"}},
      {"measurement",
       {"batch", "warmup_batches", "batches", "samples", "repetitions", "min_duration_s",
        "min_samples", "max_cpu_wait", "max_cv", "check_outputs", "tolerance", "trace"}},
  };
  return kSchema;
}

const std::vector<std::string>& top_level_keys() {
  static const std::vector<std::string> kKeys = {
      "quilt",      "name",      "description",   "model",    "data",        "boards",
      "links",      "partition", "autoencoder",   "training", "measurement", "sweep",
      "references", "scales",    "default_scale", "output"};
  return kKeys;
}

namespace {

std::string suggestion(const std::string& key, const std::vector<std::string>& valid) {
  return did_you_mean(key, valid, "keys");
}

class ListLengthGuard : public YAML::EventHandler {
 public:
  explicit ListLengthGuard(const std::string& path) : path_(path) {}
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override { item(); }
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { item(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    item();
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    item();
    open_.push_back({true, 0, mark});
  }
  void OnSequenceEnd() override { open_.pop_back(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    item();
    open_.push_back({false, 0, mark});
  }
  void OnMapEnd() override { open_.pop_back(); }

 private:
  struct Open {
    bool sequence;
    size_t items;
    YAML::Mark mark;
  };
  void item() {
    if (open_.empty() || !open_.back().sequence) return;
    if (++open_.back().items > kMaxListValues)
      throw ConfigError(path_, open_.back().mark.line + 1, open_.back().mark.column + 1, "",
                        fmt::format("this list has more than {} values; a sweep may have at most "
                                    "{} runs, and no other list comes close",
                                    kMaxListValues, kMaxListValues));
  }
  const std::string& path_;
  std::vector<Open> open_;
};

}  // namespace

void check_list_lengths(const std::string& path, const std::string& text) {
  std::istringstream in(text);
  ListLengthGuard guard(path);
  try {
    // The first document only (check_single_document refuses more): on some junk yaml-cpp
    // returns endless empty documents, as YAML::LoadAll does (bad/syntax-stray-comma.yaml).
    YAML::Parser parser(in);
    parser.HandleNextDocument(guard);
  } catch (const YAML::Exception&) {
    // Syntax errors are YAML::Load's to report, with its messages.
  }
}

// YAML::Load reads the first document and ignores the rest; YAML::LoadAll can loop forever on
// some junk. A document marker at column 0 after content starts another document (inside a
// block scalar, content is indented, so the marker cannot be part of a value).
void check_single_document(const std::string& path, const std::string& text) {
  bool content = false, ended = false;
  int line = 0;
  for (size_t pos = 0; pos < text.size(); ++line) {
    size_t nl = text.find('\n', pos);
    std::string l = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    auto marker = [&](const char* m) {
      return l.rfind(m, 0) == 0 && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    };
    auto second = [&] {
      return ConfigError(path, line + 1, 1, "",
                         "a second YAML document starts here; an experiment file holds one "
                         "document");
    };
    if (marker("---")) {
      if (content || ended) throw second();
      continue;
    }
    if (marker("...")) {
      ended = true;  // only comments, blank lines and directives may follow
      continue;
    }
    size_t first = l.find_first_not_of(" \t\r");
    if (first == std::string::npos || l[first] == '#' || l[0] == '%') continue;
    if (ended) throw second();
    content = true;
  }
}

// yaml-cpp accepts a quoted scalar left open until the end of the file (the rest of the file
// becomes its value); find such quotes in every scalar of the document.
void check_quotes(const Reader& r, const std::string& text, const YAML::Node& node,
                  std::set<std::pair<int, int>>& seen) {
  if (!node.IsDefined()) return;
  // Aliases share their anchor's node (and mark): visit each node once, or a "billion laughs"
  // file would take forever.
  if (!seen.emplace(node.Mark().line, node.Mark().column).second) return;
  if (node.IsMap()) {
    for (const auto& kv : node) {
      check_quotes(r, text, kv.first, seen);
      check_quotes(r, text, kv.second, seen);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_quotes(r, text, item, seen);
  } else if (node.IsScalar() && node.Tag() == "!") {
    size_t pos = r.offset(node.Mark().line, node.Mark().column);
    if (pos >= text.size() || (text[pos] != '"' && text[pos] != '\'')) return;
    const char quote = text[pos];
    for (size_t i = pos + 1; i < text.size(); ++i) {
      if (quote == '"' && text[i] == '\\') {
        ++i;  // an escaped character
      } else if (text[i] == quote) {
        if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
          ++i;  // '' is a quote inside single quotes
        } else {
          return;
        }
      }
    }
    r.fail(node, "", "unterminated quoted string: the quote opened here is never closed");
  }
}

std::string scalar_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << node;
  return out.c_str();
}

std::vector<std::string> all_key_paths() {
  std::vector<std::string> valid;
  for (const auto& [sec, keys] : schema())
    for (const auto& k : keys) valid.push_back(sec + "." + k);
  return valid;
}

// A dotted key that a sweep or scale sets, checked against the schema.
std::string checked_path(const Reader& r, const YAML::Node& key_node, const std::string& where) {
  auto path = r.text(key_node, where);
  auto valid = all_key_paths();
  if (std::find(valid.begin(), valid.end(), path) == valid.end())
    r.fail(key_node, where,
           fmt::format("`{}` is not a key an experiment can set here{}", clip(path),
                       suggestion(path, valid)));
  return path;
}

std::string list_text(const std::vector<std::string>& v) { return "[" + join(v) + "]"; }

std::vector<std::string> name_list(const Reader& r, const YAML::Node& n, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsScalar()) {
    out.push_back(r.text(n, key));
  } else if (n.IsSequence()) {
    for (const auto& c : n) out.push_back(r.text(c, key));
  } else {
    r.fail(n, key, "must be a name or a list of names");
  }
  return out;
}

}  // namespace quilt::harness::detail
