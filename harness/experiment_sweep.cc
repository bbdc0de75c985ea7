#include "harness/experiment_parts.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

namespace quilt::harness::detail {

std::vector<Reference> parse_references(const Reader& r, const YAML::Node& node) {
  std::vector<Reference> out;
  if (!node.IsSequence())
    r.fail(node, "references",
           "must be a list of {metric, value, tolerance, better, when} entries");
  for (const auto& item : node) {
    r.check_keys(item, "references", {"metric", "value", "tolerance", "better", "when"});
    Reference ref;
    if (!item["metric"]) r.fail(item, "references.metric", "is required");
    ref.metric = r.choice(item["metric"], "references.metric", metric_names());
    if (!item["value"]) r.fail(item, "references.value", "is required");
    ref.value = r.real(item["value"], "references.value", -1e300, 1e300);
    if (item["tolerance"])
      ref.tolerance = r.real(item["tolerance"], "references.tolerance", 0, 1e6);
    if (item["better"]) ref.better = choose(r, item["better"], "references.better", kBetterNames);
    if (auto w = item["when"]) {
      if (!w.IsMap())
        r.fail(w, "references.when", "must map keys to values, e.g. {autoencoder.rate: 64}");
      for (const auto& kv : w) {
        auto key = checked_path(r, kv.first, "references.when");
        ref.when[key] = scalar_text(kv.second);
      }
    }
    out.push_back(std::move(ref));
  }
  return out;
}

// The value of `key` in a run's params, compared as text and as numbers ("64" == "64.0").
bool param_matches(const std::map<std::string, std::string>& params, const std::string& key,
                   const std::string& want) {
  auto it = params.find(key);
  if (it == params.end()) return false;
  if (it->second == want) return true;
  try {
    size_t a = 0, b = 0;
    double x = std::stod(it->second, &a), y = std::stod(want, &b);
    return a == it->second.size() && b == want.size() && x == y;
  } catch (const std::exception&) {
    return false;
  }
}

namespace {

// More runs than this is a mistake, not an experiment (and would exhaust memory).
constexpr size_t kMaxRuns = kMaxListValues;

// Cross product of `points` with one key's list of values.
std::vector<Point> cross(const std::vector<Point>& points, const std::string& key,
                         const YAML::Node& values) {
  std::vector<Point> next;
  for (const auto& p : points)
    for (const auto& v : values) {
      auto q = p;
      q.emplace_back(key, v);
      next.push_back(std::move(q));
    }
  return next;
}

// The keys a sweep sets, each at most once.
class SweptKeys {
 public:
  explicit SweptKeys(const Reader& r) : r_(r) {}
  // The checked dotted key of `key_node`, which must not be swept yet.
  std::string take(const YAML::Node& key_node, const std::string& where) {
    auto path = checked_path(r_, key_node, where);
    if (!used_.insert(path).second)
      r_.fail(key_node, where, fmt::format("`{}` is swept twice", path));
    return path;
  }
  bool swept(const std::string& path) const { return used_.count(path) > 0; }

 private:
  const Reader& r_;
  std::set<std::string> used_;
};

// sweep.matrix: the cross product of every key's values.
void sweep_matrix(const Reader& r, const YAML::Node& matrix, SweptKeys& keys,
                  std::vector<Point>& points) {
  if (!matrix.IsMap() || matrix.size() == 0)
    r.fail(matrix, "sweep.matrix",
           "must map keys to lists of values, e.g. `autoencoder.rate: [1, 64]`");
  for (const auto& kv : matrix) {
    auto path = keys.take(kv.first, "sweep.matrix");
    if (!kv.second.IsSequence() || kv.second.size() == 0)
      r.fail(kv.second, "sweep.matrix." + path, "must be a non-empty list of values");
    if (points.size() * kv.second.size() > kMaxRuns)
      r.fail(kv.first, "sweep.matrix",
             fmt::format("the sweep expands to more than {} runs: too many runs for one "
                         "experiment (split it, or sweep fewer values)",
                         kMaxRuns));
    points = cross(points, path, kv.second);
  }
}

// sweep.zip: lists of equal length advanced together, crossed with the matrix's points.
void sweep_zip(const Reader& r, const YAML::Node& zip, SweptKeys& keys,
               std::vector<Point>& points) {
  if (!zip.IsMap() || zip.size() == 0)
    r.fail(zip, "sweep.zip", "must map keys to lists of equal length, advanced together");
  size_t length = 0;
  std::vector<std::pair<std::string, YAML::Node>> lists;
  for (const auto& kv : zip) {
    auto path = keys.take(kv.first, "sweep.zip");
    if (!kv.second.IsSequence() || kv.second.size() == 0)
      r.fail(kv.second, "sweep.zip." + path, "must be a non-empty list of values");
    if (length != 0 && kv.second.size() != length)
      r.fail(kv.second, "sweep.zip." + path,
             fmt::format("has {} values but the other zip lists have {}; zip lists advance "
                         "together and must have equal length",
                         kv.second.size(), length));
    length = kv.second.size();
    lists.emplace_back(path, kv.second);
  }
  if (points.size() * length > kMaxRuns)
    r.fail(zip, "sweep.zip",
           fmt::format("the sweep expands to more than {} runs: too many runs for one "
                       "experiment",
                       kMaxRuns));
  std::vector<Point> next;
  for (const auto& p : points)
    for (size_t i = 0; i < length; ++i) {
      auto q = p;
      for (const auto& [path, values] : lists) q.emplace_back(path, values[i]);
      next.push_back(std::move(q));
    }
  points = std::move(next);
}

// sweep.exclude: drops the points that match all keys of one rule; every rule must drop some.
void sweep_exclude(const Reader& r, const YAML::Node& exclude, const SweptKeys& keys,
                   std::vector<Point>& points) {
  if (!exclude.IsSequence())
    r.fail(exclude, "sweep.exclude",
           "must be a list of {key: value} maps; a run matching all "
           "keys of one map is left out");
  for (const auto& rule : exclude) {
    if (!rule.IsMap() || rule.size() == 0)
      r.fail(rule, "sweep.exclude", "each entry must be a non-empty {key: value} map");
    std::vector<std::pair<std::string, std::string>> conds;
    for (const auto& kv : rule) {
      auto path = checked_path(r, kv.first, "sweep.exclude");
      if (!keys.swept(path))
        r.fail(kv.first, "sweep.exclude",
               fmt::format("`{}` is not swept, so excluding on it would drop every run or none",
                           path));
      conds.emplace_back(path, scalar_text(kv.second));
    }
    size_t before = points.size();
    points.erase(std::remove_if(points.begin(), points.end(),
                                [&](const Point& p) {
                                  std::map<std::string, std::string> values;
                                  for (const auto& [k, v] : p) values[k] = scalar_text(v);
                                  for (const auto& [k, v] : conds)
                                    if (!param_matches(values, k, v)) return false;
                                  return true;
                                }),
                 points.end());
    if (points.size() == before)
      r.fail(rule, "sweep.exclude", "matches no run of the sweep (a typo in a value?)");
  }
  if (points.empty()) r.fail(exclude, "sweep.exclude", "leaves no run at all");
}

}  // namespace

std::vector<Point> expand_sweep(const Reader& r, const YAML::Node& sweep) {
  std::vector<Point> points = {{}};
  if (!sweep.IsDefined() || sweep.IsNull()) return points;
  r.check_keys(sweep, "sweep", {"matrix", "zip", "exclude"});
  SweptKeys keys(r);
  if (auto matrix = sweep["matrix"]) sweep_matrix(r, matrix, keys, points);
  if (auto zip = sweep["zip"]) sweep_zip(r, zip, keys, points);
  if (auto exclude = sweep["exclude"]) sweep_exclude(r, exclude, keys, points);
  return points;
}

}  // namespace quilt::harness::detail
