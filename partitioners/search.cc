#include "partitioners/search.h"

#include "partitioners/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <set>

namespace quilt::partitioners {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// "a, b, c" with at most `limit` names, for messages about long models.
std::string name_list(const std::vector<std::string>& names, size_t limit = 24) {
  if (names.empty()) return "(none)";
  if (names.size() <= limit) return fmt::format("{}", fmt::join(names, ", "));
  std::vector<std::string> head(names.begin(), names.begin() + limit);
  return fmt::format("{}, ... ({} in all)", fmt::join(head, ", "), names.size());
}

std::string model_label(const ModelProfile& model) {
  return model.name.empty() ? std::string("the model") : fmt::format("model '{}'", model.name);
}

// Names of the layers after which a cut may be placed.
std::vector<std::string> allowed_names(const ModelProfile& model) {
  std::vector<std::string> names;
  for (size_t i = 0; i + 1 < model.layers.size(); ++i) {
    if (model.layers[i].cut_allowed) names.push_back(model.layers[i].name);
  }
  return names;
}

// A validated request: the cost model and the boundaries that must carry a cut. A boundary b
// (1 <= b < n) lies between layers b-1 and b, i.e. a cut "after layer b-1".
struct Plan {
  CostModel cost;
  std::vector<int64_t> fixed;       // sorted boundaries
  std::vector<int64_t> next_fixed;  // per boundary a: the smallest fixed boundary > a, else n
};

Plan make_plan(const ModelProfile& model, const std::vector<BoardProfile>& boards,
               const SearchOptions& options) {
  if (options.stages < 1) {
    throw PartitionError(fmt::format("stages k = {} is invalid; it must be >= 1", options.stages));
  }
  Plan plan{CostModel(model, boards, options.stages, options.cost), {}, {}};
  const CostModel& cm = plan.cost;
  const int64_t n = cm.layers(), k = cm.stages();
  const std::vector<std::string> allowed = allowed_names(cm.model());
  const int64_t m = static_cast<int64_t>(allowed.size());
  if (k - 1 > m) {
    throw PartitionError(fmt::format(
        "cannot cut {} ({} layers) into k = {} stages: it allows only {} cut(s) (after: {}), so k "
        "must be between 1 and {}",
        model_label(cm.model()), n, k, m, name_list(allowed), m + 1));
  }
  std::set<int64_t> fixed;
  for (const std::string& name : options.fixed_cuts) {
    const int64_t i = layer_index(cm.model(), name);
    if (i == n - 1) {
      throw PartitionError(fmt::format(
          "fixed cut '{}' is the last layer of {}: there is nothing after it to cut from; cuts may "
          "be placed after: {}",
          name, model_label(cm.model()), name_list(allowed)));
    }
    if (!cm.boundary_allowed(i + 1)) {
      throw PartitionError(fmt::format(
          "fixed cut '{}': {} does not allow a cut after that layer; cuts may be placed after: {}",
          name, model_label(cm.model()), name_list(allowed)));
    }
    if (!fixed.insert(i + 1).second) {
      throw PartitionError(fmt::format("fixed cut '{}' is listed twice", name));
    }
  }
  if (static_cast<int64_t>(fixed.size()) > k - 1) {
    throw PartitionError(fmt::format(
        "{} fixed cuts ({}) do not fit in k = {} stages, which have k - 1 = {} cuts; raise k to at "
        "least {} or fix fewer cuts",
        fixed.size(), name_list(options.fixed_cuts), k, k - 1, fixed.size() + 1));
  }
  plan.fixed.assign(fixed.begin(), fixed.end());
  plan.next_fixed.assign(n + 1, n);
  for (int64_t a = n - 1, next = n; a >= 0; --a) {
    if (fixed.count(a + 1)) next = a + 1;
    plan.next_fixed[a] = next;
  }
  return plan;
}

// The result for the partition with boundaries `bounds` (k-1 increasing boundaries).
SearchResult make_result(const CostModel& cm, const std::vector<int64_t>& bounds,
                         Objective objective) {
  const int64_t k = cm.stages();
  assert(static_cast<int64_t>(bounds.size()) == k - 1);
  SearchResult r;
  r.objective = objective;
  for (int64_t s = 0, a = 0; s < k; ++s) {
    const int64_t b = s + 1 < k ? bounds[s] : cm.layers();
    r.stages.push_back(cm.stage(s, a, b));
    r.max_exec_s = std::max(r.max_exec_s, r.stages.back().exec_s);
    if (s + 1 < k) {
      r.cuts.push_back(b - 1);
      r.cut_names.push_back(cm.model().layers[b - 1].name);
    }
    a = b;
  }
  // Summed from the last stage backwards, exactly as the dynamic programmes add.
  r.sum_exec_s = r.stages.back().exec_s;
  for (int64_t s = k - 2; s >= 0; --s) r.sum_exec_s = r.stages[s].exec_s + r.sum_exec_s;
  r.imbalance_s = static_cast<double>(k) * r.max_exec_s - r.sum_exec_s;
  r.objective_s = objective == Objective::kPaper ? r.imbalance_s : r.max_exec_s;
  return r;
}

// Strict order of results: objective, then the tie-breaks documented in search.h.
bool better(const SearchResult& x, const SearchResult& y) {
  if (x.objective_s != y.objective_s) return x.objective_s < y.objective_s;
  if (x.objective == Objective::kPaper) {
    if (x.max_exec_s != y.max_exec_s) return x.max_exec_s < y.max_exec_s;
  } else if (x.sum_exec_s != y.sum_exec_s) {
    return x.sum_exec_s < y.sum_exec_s;
  }
  return x.cuts < y.cuts;
}

// Dynamic programmes over suffixes: state (stage s, first layer a) = "stages s..k-1 cover layers
// [a, n)". Working backwards lets the reconstruction go forwards and take the smallest next
// boundary among equal values, which yields the lexicographically smallest cuts.
class Dp {
 public:
  explicit Dp(const Plan& plan)
      : cm_(plan.cost),
        next_fixed_(plan.next_fixed),
        n_(cm_.layers()),
        k_(cm_.stages()),
        value_(k_ * (n_ + 1)),
        next_(k_ * (n_ + 1)) {}

  int64_t evaluations() const { return evaluations_; }

  // min over partitions of max_i exec_i.
  double min_max() {
    ++evaluations_;
    std::fill(value_.begin(), value_.end(), kInf);
    for (int64_t s = k_ - 1; s >= 0; --s) {
      for (int64_t a = first_start(s); a <= last_start(s); ++a) {
        if (!start_ok(s, a)) continue;
        double best = kInf;
        if (s == k_ - 1) {
          best = cm_.exec_s(s, a, n_);
        } else {
          for (int64_t b = a + 1, end = last_end(s, a); b <= end; ++b) {
            const double rest = value_[at(s + 1, b)];
            if (!cm_.boundary_allowed(b) || rest == kInf) continue;
            // Longer stages only cost more compute: nothing further can beat `best`.
            if (cm_.exec_lower_bound_s(s, a, b) >= best) break;
            best = std::min(best, std::max(cm_.exec_s(s, a, b), rest));
          }
        }
        value_[at(s, a)] = best;
      }
    }
    return value_[at(0, 0)];
  }

  // The largest (maximize) or smallest sum_i exec_i over partitions with every exec_i <= limit;
  // the partition is left for bounds(). Returns -inf (maximize) or +inf when none exists.
  double threshold_sum(double limit, bool maximize) {
    ++evaluations_;
    const double none = maximize ? -kInf : kInf;
    std::fill(value_.begin(), value_.end(), none);
    for (int64_t s = k_ - 1; s >= 0; --s) {
      for (int64_t a = first_start(s); a <= last_start(s); ++a) {
        if (!start_ok(s, a)) continue;
        double best = none;
        int64_t arg = -1;
        if (s == k_ - 1) {
          const double c = cm_.exec_s(s, a, n_);
          if (c <= limit) {
            best = c;
            arg = n_;
          }
        } else {
          for (int64_t b = a + 1, end = last_end(s, a); b <= end; ++b) {
            if (cm_.exec_lower_bound_s(s, a, b) > limit) break;
            const double rest = value_[at(s + 1, b)];
            if (!cm_.boundary_allowed(b) || rest == none) continue;
            const double c = cm_.exec_s(s, a, b);
            if (c > limit) continue;
            const double v = c + rest;
            if (maximize ? v > best : v < best) {
              best = v;
              arg = b;
            }
          }
        }
        value_[at(s, a)] = best;
        next_[at(s, a)] = arg;
      }
    }
    return value_[at(0, 0)];
  }

  // Boundaries of the partition chosen by the last threshold_sum() (which must be feasible).
  std::vector<int64_t> bounds() const {
    std::vector<int64_t> out;
    for (int64_t s = 0, a = 0; s + 1 < k_; ++s) {
      a = next_[at(s, a)];
      assert(a > 0 && a < n_);
      out.push_back(a);
    }
    return out;
  }

 private:
  size_t at(int64_t s, int64_t a) const { return s * (n_ + 1) + a; }
  // Stage s starts at boundary a: 0 for the first stage, else an allowed boundary with room for
  // s earlier stages and k-s later ones.
  int64_t first_start(int64_t s) const { return s; }
  int64_t last_start(int64_t s) const { return s == 0 ? 0 : n_ - (k_ - s); }
  bool start_ok(int64_t s, int64_t a) const {
    if (s == 0) return a == 0;
    if (!cm_.boundary_allowed(a)) return false;
    // The last stage runs to the end, so no fixed boundary may lie beyond its start.
    return s < k_ - 1 || next_fixed_[a] == n_;
  }
  // The last boundary stage s (not the last stage) may end at: no fixed boundary may be skipped
  // and the later stages need a layer each.
  int64_t last_end(int64_t s, int64_t a) const {
    return std::min(next_fixed_[a], n_ - (k_ - 1 - s));
  }

  const CostModel& cm_;
  const std::vector<int64_t>& next_fixed_;
  int64_t n_, k_;
  std::vector<double> value_;
  std::vector<int64_t> next_;
  int64_t evaluations_ = 0;
};

// The paper's objective. g(M) = k*M - F(M) with F(M) the largest sum of stage costs when every
// stage costs at most M. Every partition P with max_i exec_i = M satisfies
// imbalance(P) = k*M - sum(P) >= k*M - F(M) = imbalance(P_M) when P_M, the partition achieving
// F(M), has its maximum at M; so the optimum is the best P_M over thresholds M. F is a
// non-decreasing step function (its domain starts at M*, the min-max optimum, where it is first
// feasible); on a plateau [M_x, x] (the DP at x returns P_x with max M_x, and F(M_x) = F(x))
// P_x dominates every partition whose maximum lies on the plateau. Every interval (lo, hi) where
// F <= F_sup contains only partitions with imbalance >= k*lo - F_sup (both terms move the right
// way, also under rounding, which is monotone), so such an interval is skipped once that bound
// is no better than the best found, and thresholds at or above the cutoff (best + F_sup) / k are
// never evaluated. Intervals are explored by evaluating just below their top (which settles an
// interval without a jump in one DP) and at their middle.
class PaperSearch {
 public:
  PaperSearch(const Plan& plan, Dp& dp) : cm_(plan.cost), dp_(dp), k_(cm_.stages()) {}

  SearchResult run() {
    const double m_star = dp_.min_max();
    double f_lo = 0, m_lo = 0;
    at(m_star, &f_lo, &m_lo);
    if (k_ > 1) {
      // P_unc (the largest sum of all) dominates every partition with its maximum >= m_unc.
      double f_unc = 0, m_unc = 0;
      at(kInf, &f_unc, &m_unc);
      explore(m_star, f_lo, m_unc, f_unc);
      // Canonical representative of the optimum: the lexicographically smallest cuts among the
      // partitions with the largest sum at the optimum's maximum.
      double f = 0, m = 0;
      at(best_.max_exec_s, &f, &m);
    }
    return best_;
  }

 private:
  // Runs the DP at threshold x, considers its partition, returns F(x) and the partition's max.
  void at(double x, double* f, double* m) {
    *f = dp_.threshold_sum(x, /*maximize=*/true);
    assert(*f > -kInf);
    SearchResult r = make_result(cm_, dp_.bounds(), Objective::kPaper);
    *m = r.max_exec_s;
    if (!found_ || better(r, best_)) {
      best_ = std::move(r);
      found_ = true;
    }
  }

  // No partition with its maximum in (lo, hi) and sum <= f_sup can beat the best.
  bool pruned(double lo, double f_sup) const {
    const double bound = static_cast<double>(k_) * lo - f_sup;
    return bound > best_.imbalance_s || (bound == best_.imbalance_s && lo >= best_.max_exec_s);
  }

  // The smallest u with k*u - f_sup > best: a partition with its maximum >= u and sum <= f_sup
  // is strictly worse than the best.
  double cutoff(double f_sup) const {
    const double k = static_cast<double>(k_);
    double u = (best_.imbalance_s + f_sup) / k;
    while (!(k * u - f_sup > best_.imbalance_s)) u = std::nextafter(u, kInf);
    return u;
  }

  // Open interval (lo, hi): F(lo) = f_lo (its partition already considered), F <= f_sup on it;
  // partitions with their maximum >= hi are already accounted for.
  void explore(double lo, double f_lo, double hi, double f_sup) {
    while (f_sup > f_lo && !pruned(lo, f_sup)) {
      // Thresholds near the cutoff cost less: the DP scans shorter stages.
      hi = std::min(hi, cutoff(f_sup));
      const double y = std::nextafter(hi, -kInf);
      if (y <= lo) return;
      double f_y = 0, m_y = 0;
      at(y, &f_y, &m_y);
      if (!(f_y > f_lo) || pruned(lo, f_y)) return;
      // F is constant on [m_y, hi): what is left is (lo, m_y), where F <= f_y.
      const double mid = lo + (m_y - lo) / 2;
      if (!(mid > lo && mid < m_y)) return;
      double f_m = 0, m_m = 0;
      at(mid, &f_m, &m_m);
      if (f_m > f_lo) explore(lo, f_lo, m_m, f_m);
      // (m_m, mid] is a plateau; continue with (mid, m_y).
      lo = mid;
      f_lo = f_m;
      hi = m_y;
      f_sup = f_y;
    }
  }

  const CostModel& cm_;
  Dp& dp_;
  int64_t k_;
  SearchResult best_;
  bool found_ = false;
};

}  // namespace

std::string to_string(Objective objective) {
  return std::string(common::enum_name(kObjectiveNames, objective));
}

Objective parse_objective(const std::string& name) {
  if (auto v = common::enum_parse(kObjectiveNames, name)) return *v;
  if (auto v = common::enum_parse(kObjectiveAliases, name)) return *v;
  throw PartitionError(fmt::format(
      "unknown objective '{}'; valid: 'paper' (sum of |exec_max - exec_i|, QuiltNet §3.4) or "
      "'minmax' (the slowest stage)",
      name));
}

int64_t layer_index(const ModelProfile& model, const std::string& name) {
  for (size_t i = 0; i < model.layers.size(); ++i) {
    if (model.layers[i].name == name) return static_cast<int64_t>(i);
  }
  std::vector<std::string> names;
  for (const LayerProfile& l : model.layers) names.push_back(l.name);
  throw PartitionError(fmt::format("{} has no layer named '{}'; its layers are: {}",
                                   model_label(model), name, name_list(names)));
}

SearchResult search(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                    const SearchOptions& options) {
  const Plan plan = make_plan(model, boards, options);
  Dp dp(plan);
  SearchResult r;
  if (options.objective == Objective::kMinMax) {
    const double m_star = dp.min_max();
    const double sum = dp.threshold_sum(m_star, /*maximize=*/false);
    assert(sum < kInf);
    (void)sum;
    r = make_result(plan.cost, dp.bounds(), Objective::kMinMax);
  } else {
    r = PaperSearch(plan, dp).run();
  }
  r.evaluations = dp.evaluations();
  return r;
}

SearchResult brute_force(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                         const SearchOptions& options) {
  const Plan plan = make_plan(model, boards, options);
  const CostModel& cm = plan.cost;
  const int64_t n = cm.layers(), k = cm.stages();
  std::vector<int64_t> free;
  for (int64_t b = 1; b < n; ++b) {
    if (cm.boundary_allowed(b) && !std::binary_search(plan.fixed.begin(), plan.fixed.end(), b)) {
      free.push_back(b);
    }
  }
  const int64_t pick = k - 1 - static_cast<int64_t>(plan.fixed.size());
  const int64_t m = static_cast<int64_t>(free.size());
  assert(0 <= pick && pick <= m);
  double combinations = 1;
  for (int64_t i = 0; i < pick; ++i) combinations = combinations * (m - i) / (i + 1);
  if (combinations > 5e7) {
    throw PartitionError(fmt::format(
        "brute force over {:.3g} combinations of cuts is too slow; it is a test oracle for small "
        "models, use search()",
        combinations));
  }
  SearchResult best;
  bool found = false;
  int64_t evaluations = 0;
  std::vector<int64_t> idx(pick);
  for (int64_t i = 0; i < pick; ++i) idx[i] = i;
  while (true) {
    std::vector<int64_t> bounds = plan.fixed;
    for (int64_t i : idx) bounds.push_back(free[i]);
    std::sort(bounds.begin(), bounds.end());
    SearchResult r = make_result(cm, bounds, options.objective);
    ++evaluations;
    if (!found || better(r, best)) {
      best = std::move(r);
      found = true;
    }
    // Next combination in lexicographic order.
    int64_t i = pick - 1;
    while (i >= 0 && idx[i] == m - pick + i) --i;
    if (i < 0) break;
    ++idx[i];
    for (int64_t j = i + 1; j < pick; ++j) idx[j] = idx[j - 1] + 1;
  }
  best.evaluations = evaluations;
  return best;
}

SearchResult evaluate(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                      const std::vector<int64_t>& cuts, const SearchOptions& options) {
  const CostModel cm(model, boards, static_cast<int64_t>(cuts.size()) + 1, options.cost);
  const int64_t n = cm.layers();
  std::vector<int64_t> bounds;
  for (size_t i = 0; i < cuts.size(); ++i) {
    const int64_t c = cuts[i];
    if (c < 0 || c >= n - 1) {
      throw PartitionError(fmt::format(
          "cut {} is out of range: a cut lies after a layer index in [0, {}] ({} has {} layers)", c,
          n - 2, model_label(cm.model()), n));
    }
    if (i > 0 && c <= cuts[i - 1]) {
      throw PartitionError(fmt::format(
          "cuts must be strictly increasing layer indices (no empty stage); got {} after {}", c,
          cuts[i - 1]));
    }
    if (!cm.boundary_allowed(c + 1)) {
      throw PartitionError(fmt::format(
          "{} does not allow a cut after layer '{}' (index {}); cuts may be placed after: {}",
          model_label(cm.model()), cm.model().layers[c].name, c,
          name_list(allowed_names(cm.model()))));
    }
    bounds.push_back(c + 1);
  }
  SearchResult r = make_result(cm, bounds, options.objective);
  r.evaluations = 1;
  return r;
}

SearchResult evaluate(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                      const std::vector<std::string>& cut_names, const SearchOptions& options) {
  std::vector<int64_t> cuts;
  for (const std::string& name : cut_names) cuts.push_back(layer_index(model, name));
  return evaluate(model, boards, cuts, options);
}

}  // namespace quilt::partitioners
