// The exact search against its brute-force oracle on random instances, the tie-breaking rules,
// and the errors a user can make.

#include "partitioners/search.h"
#include "partitioners/error.h"
#include "tests/partitioners/expect_error.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace quilt::partitioners {
namespace {

struct Instance {
  ModelProfile model;
  std::vector<BoardProfile> boards;
  SearchOptions options;
};

// A random model of n layers with feature maps, 1-D tensors and skip connections, random
// allowed cuts, heterogeneous boards (some with measured times), and random fixed cuts.
Instance random_instance(std::mt19937_64& rng, int64_t n, int64_t k_max) {
  std::uniform_real_distribution<double> u(0, 1);
  const auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Instance in;
  in.model.name = "random";
  in.model.input_bytes = pick(0, 1) ? pick(1, 1 << 20) : 0;
  std::vector<int64_t> allowed;
  for (int64_t i = 0; i < n; ++i) {
    LayerProfile l;
    l.name = "L" + std::to_string(i);
    l.flops = pick(0, 10) == 0 ? 0 : pick(1, 2'000'000'000);
    l.out_bytes = 4 * pick(1, 1 << 18);
    l.cut_allowed = u(rng) < 0.8;
    const int64_t tensors = pick(1, 3);
    for (int64_t t = 0; t < tensors; ++t) {
      if (pick(0, 3) == 0) {
        l.crossing.push_back({"f", {pick(1, 4096)}});
      } else {
        l.crossing.push_back({"t", {pick(1, 512), pick(1, 56), pick(1, 56)}});
      }
    }
    if (pick(0, 4) == 0) l.measured_s["b1"] = u(rng) * 1e-3;
    if (l.cut_allowed && i + 1 < n) allowed.push_back(i);
    in.model.layers.push_back(l);
  }
  const int64_t k = pick(1, std::min<int64_t>(k_max, static_cast<int64_t>(allowed.size()) + 1));
  in.options.stages = k;
  in.options.objective = pick(0, 1) ? Objective::kPaper : Objective::kMinMax;
  const double rates[] = {1, 2, 7.5, 64};
  in.options.cost.rate = rates[pick(0, 3)];
  in.options.cost.kernel = pick(0, 1) ? 1 : 3;
  in.options.cost.batch = std::vector<int64_t>{1, 8, 32}[pick(0, 2)];
  std::shuffle(allowed.begin(), allowed.end(), rng);
  const int64_t fixed = pick(0, std::min<int64_t>(2, k - 1));
  for (int64_t i = 0; i < fixed; ++i)
    in.options.fixed_cuts.push_back(in.model.layers[allowed[i]].name);
  const bool homogeneous = pick(0, 3) == 0;
  for (int64_t s = 0; s < (homogeneous ? 1 : k); ++s) {
    BoardProfile b;
    b.name = "b" + std::to_string(pick(0, 2));
    b.peak_flops = std::pow(10.0, 11 + 2 * u(rng));
    b.efficiency = 0.1 + 0.9 * u(rng);
    b.overhead_s = pick(0, 1) ? u(rng) * 1e-3 : 0;
    b.h2d_gbps = 1 + 15 * u(rng);
    b.d2h_gbps = 1 + 15 * u(rng);
    b.link_latency_s = u(rng) * 1e-5;
    b.mpi_gbps = pick(0, 5) == 0 ? std::numeric_limits<double>::infinity() : 0.5 + 20 * u(rng);
    b.mpi_latency_s = u(rng) * 1e-5;
    in.boards.push_back(b);
  }
  return in;
}

// Every admissible partition's result, for checking uniqueness of the optimum.
std::vector<SearchResult> all_partitions(const Instance& in) {
  const int64_t n = static_cast<int64_t>(in.model.layers.size()), k = in.options.stages;
  std::vector<int64_t> fixed;
  for (const auto& name : in.options.fixed_cuts) fixed.push_back(layer_index(in.model, name));
  std::vector<SearchResult> out;
  std::vector<int64_t> cuts;
  std::function<void(int64_t)> rec = [&](int64_t from) {
    if (static_cast<int64_t>(cuts.size()) == k - 1) {
      for (int64_t f : fixed) {
        if (std::find(cuts.begin(), cuts.end(), f) == cuts.end()) return;
      }
      out.push_back(evaluate(in.model, in.boards, cuts, in.options));
      return;
    }
    for (int64_t c = from; c < n - 1; ++c) {
      if (!in.model.layers[c].cut_allowed) continue;
      cuts.push_back(c);
      rec(c + 1);
      cuts.pop_back();
    }
  };
  rec(0);
  return out;
}

bool close(double a, double b) {
  return std::abs(a - b) <= 1e-12 * std::max(std::abs(a), std::abs(b)) + 1e-300;
}

void check_against_brute_force(const Instance& in, int* unique_checked) {
  const SearchResult s = search(in.model, in.boards, in.options);
  const SearchResult b = brute_force(in.model, in.boards, in.options);
  const int64_t k = in.options.stages;
  ASSERT_EQ(static_cast<int64_t>(s.cuts.size()), k - 1);
  ASSERT_EQ(static_cast<int64_t>(s.stages.size()), k);
  for (const auto& name : in.options.fixed_cuts) {
    EXPECT_NE(std::find(s.cut_names.begin(), s.cut_names.end(), name), s.cut_names.end());
  }
  for (size_t i = 0; i < s.cuts.size(); ++i) {
    EXPECT_TRUE(in.model.layers[s.cuts[i]].cut_allowed);
    if (i > 0) {
      EXPECT_LT(s.cuts[i - 1], s.cuts[i]);
    }
  }
  // The reported costs are those of the reported cuts.
  const SearchResult e = evaluate(in.model, in.boards, s.cuts, in.options);
  EXPECT_EQ(e.objective_s, s.objective_s);
  EXPECT_EQ(e.max_exec_s, s.max_exec_s);
  EXPECT_EQ(e.sum_exec_s, s.sum_exec_s);
  ASSERT_TRUE(close(s.objective_s, b.objective_s))
      << to_string(in.options.objective) << " k=" << k << " n=" << in.model.layers.size()
      << " search " << s.objective_s << " brute force " << b.objective_s;
  if (in.options.objective == Objective::kMinMax) {
    // Min-max ties are broken by exactly the same arithmetic: always the same cuts.
    EXPECT_EQ(s.cuts, b.cuts);
    return;
  }
  // The paper's objective: the same cuts whenever the optimum is unique by a clear margin.
  std::vector<double> values;
  for (const SearchResult& r : all_partitions(in)) values.push_back(r.objective_s);
  std::sort(values.begin(), values.end());
  if (values.size() < 2 || values[1] - values[0] > 1e-9 * std::max(1e-300, std::abs(values[1]))) {
    EXPECT_EQ(s.cuts, b.cuts);
    ++*unique_checked;
  }
}

TEST(Search, EqualsBruteForceOnRandomSmallInstances) {
  std::mt19937_64 rng(2022);
  int unique = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 14)(rng);
    const Instance in = random_instance(rng, n, 5);
    SCOPED_TRACE(trial);
    check_against_brute_force(in, &unique);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(unique, 1000);
}

TEST(Search, EqualsBruteForceOnRandomMediumInstances) {
  std::mt19937_64 rng(7);
  int unique = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const int64_t n = std::uniform_int_distribution<int64_t>(15, 30)(rng);
    Instance in = random_instance(rng, n, 5);
    in.options.objective = trial % 4 ? Objective::kPaper : Objective::kMinMax;
    SCOPED_TRACE(trial);
    check_against_brute_force(in, &unique);
    if (HasFatalFailure()) return;
  }
}

// Integer costs (exact arithmetic) produce many exact ties: both must break them identically.
TEST(Search, BreaksExactTiesLikeBruteForce) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto pick = [&](int64_t lo, int64_t hi) {
      return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    Instance in;
    const int64_t n = pick(1, 10);
    for (int64_t i = 0; i < n; ++i) {
      in.model.layers.push_back(chain_layer("L" + std::to_string(i), pick(0, 4), 0, {4}));
      in.model.layers.back().cut_allowed = pick(0, 5) > 0;
    }
    int64_t allowed = 0;
    for (int64_t i = 0; i + 1 < n; ++i) allowed += in.model.layers[i].cut_allowed;
    BoardProfile b;
    b.peak_flops = 1;
    b.h2d_gbps = b.d2h_gbps = b.mpi_gbps = std::numeric_limits<double>::infinity();
    b.overhead_s = static_cast<double>(pick(0, 1));
    in.boards = {b};
    in.options.stages = pick(1, allowed + 1);
    for (Objective o : {Objective::kPaper, Objective::kMinMax}) {
      in.options.objective = o;
      const SearchResult s = search(in.model, in.boards, in.options);
      const SearchResult r = brute_force(in.model, in.boards, in.options);
      ASSERT_EQ(s.objective_s, r.objective_s) << trial;
      ASSERT_EQ(s.cuts, r.cuts) << trial << " " << to_string(o);
    }
  }
}

// search(m, boards, o) with o.stages = k under each objective (kPaper, then kMinMax); `check`
// gets the options of each search and its result.
void search_each_objective(
    const ModelProfile& m, const std::vector<BoardProfile>& boards, int64_t k,
    const std::function<void(const SearchOptions&, const SearchResult&)>& check,
    std::vector<std::string> fixed_cuts = {}) {
  SearchOptions o;
  o.stages = k;
  o.fixed_cuts = std::move(fixed_cuts);
  for (Objective obj : {Objective::kPaper, Objective::kMinMax}) {
    o.objective = obj;
    check(o, search(m, boards, o));
  }
}

BoardProfile free_links(double peak_flops) {
  BoardProfile b;
  b.peak_flops = peak_flops;
  b.h2d_gbps = b.d2h_gbps = b.mpi_gbps = std::numeric_limits<double>::infinity();
  return b;
}

TEST(Search, TieBreakPrefersEarliestCuts) {
  ModelProfile m;
  for (const char* name : {"a", "b", "c"}) m.layers.push_back(chain_layer(name, 1, 0, {1}));
  search_each_objective(m, {free_links(1)}, 2, [](const SearchOptions&, const SearchResult& r) {
    EXPECT_EQ(r.cut_names, std::vector<std::string>{"a"});
    EXPECT_EQ(r.max_exec_s, 2);
    EXPECT_EQ(r.imbalance_s, 1);
  });
}

TEST(Search, HandExampleTwoStages) {
  // Cut after a: stages cost (1, 10), imbalance 9; after b: (5, 6), imbalance 1.
  ModelProfile m;
  m.layers = {chain_layer("a", 1, 0, {1}), chain_layer("b", 4, 0, {1}),
              chain_layer("c", 6, 0, {1})};
  search_each_objective(m, {free_links(1)}, 2, [](const SearchOptions& o, const SearchResult& r) {
    EXPECT_EQ(r.cut_names, std::vector<std::string>{"b"});
    EXPECT_EQ(r.max_exec_s, 6);
    EXPECT_EQ(r.sum_exec_s, 11);
    EXPECT_EQ(r.imbalance_s, 1);
    EXPECT_EQ(r.objective_s, o.objective == Objective::kPaper ? 1 : 6);
  });
}

TEST(Search, PaperObjectiveCanAcceptASlowerBottleneck) {
  // A slow board (1 FLOP/s) then a fast one (2 FLOP/s), layers of 7, 5 and 18 FLOPs.
  // Cut after L0: (7, 11.5), imbalance 4.5, max 11.5. Cut after L1: (12, 9), imbalance 3, max 12.
  ModelProfile m;
  m.layers = {chain_layer("L0", 7, 0, {1}), chain_layer("L1", 5, 0, {1}),
              chain_layer("L2", 18, 0, {1})};
  SearchOptions o;
  o.stages = 2;
  o.objective = Objective::kMinMax;
  const SearchResult mm = search(m, {free_links(1), free_links(2)}, o);
  EXPECT_EQ(mm.cut_names, std::vector<std::string>{"L0"});
  EXPECT_EQ(mm.max_exec_s, 11.5);
  o.objective = Objective::kPaper;
  const SearchResult pp = search(m, {free_links(1), free_links(2)}, o);
  EXPECT_EQ(pp.cut_names, std::vector<std::string>{"L1"});
  EXPECT_EQ(pp.imbalance_s, 3);
  EXPECT_EQ(pp.max_exec_s, 12);
}

TEST(Search, SingleStageHasNoCuts) {
  ModelProfile m;
  m.input_bytes = 12;
  m.layers = {chain_layer("a", 10, 0, {3}), chain_layer("b", 20, 0, {2})};
  BoardProfile b;
  b.peak_flops = 10;
  search_each_objective(m, {b}, 1, [](const SearchOptions&, const SearchResult& r) {
    EXPECT_TRUE(r.cuts.empty());
    ASSERT_EQ(r.stages.size(), 1u);
    EXPECT_EQ(r.imbalance_s, 0);
    EXPECT_EQ(r.stages[0].in_bytes, 12);
    EXPECT_EQ(r.stages[0].out_bytes, 8);
    EXPECT_EQ(r.stages[0].mpi_s, 0);
  });
}

TEST(Search, SkipConnectionsCostOneAutoencoderEach) {
  ModelProfile m;
  m.layers = {chain_layer("enc", 100, 0, {64, 8, 8}), chain_layer("dec", 100, 0, {10})};
  m.layers[0].crossing.push_back({"skip", {32, 16, 16}});
  BoardProfile b;
  b.peak_flops = 1e9;
  SearchOptions o;
  o.stages = 2;
  o.cost.rate = 8;
  const SearchResult r = search(m, {b}, o);
  EXPECT_EQ(r.stages[0].ae_flops, 2 * 64 * 8 * 64 + 2 * 32 * 4 * 256);
  EXPECT_EQ(r.stages[1].ae_flops, r.stages[0].ae_flops);
  EXPECT_EQ(r.stages[0].out_bytes, 4 * (8 * 64 + 4 * 256));
}

ModelProfile chain(int64_t n) {
  ModelProfile m;
  m.name = "chain";
  for (int64_t i = 0; i < n; ++i)
    m.layers.push_back(chain_layer("L" + std::to_string(i), 10, 0, {4}));
  return m;
}

BoardProfile board() {
  BoardProfile b;
  b.peak_flops = 1e3;
  return b;
}

TEST(SearchErrors, TooManyStages) {
  ModelProfile m = chain(4);
  m.layers[1].cut_allowed = false;
  SearchOptions o;
  o.stages = 4;
  expect_error([&] { search(m, {board()}, o); },
               {"model 'chain'", "k = 4", "only 2 cut(s)", "after: L0, L2", "between 1 and 3"});
  expect_error([&] { brute_force(m, {board()}, o); }, {"between 1 and 3"});
  o.stages = 0;
  expect_error([&] { search(m, {board()}, o); }, {"stages k = 0", ">= 1"});
}

TEST(SearchErrors, BadFixedCuts) {
  ModelProfile m = chain(4);
  m.layers[1].cut_allowed = false;
  SearchOptions o;
  o.stages = 3;
  o.fixed_cuts = {"L9"};
  expect_error([&] { search(m, {board()}, o); }, {"no layer named 'L9'", "L0, L1, L2, L3"});
  o.fixed_cuts = {"L1"};
  expect_error([&] { search(m, {board()}, o); },
               {"fixed cut 'L1'", "does not allow a cut", "after: L0, L2"});
  o.fixed_cuts = {"L3"};
  expect_error([&] { search(m, {board()}, o); }, {"'L3' is the last layer"});
  o.fixed_cuts = {"L0", "L0"};
  expect_error([&] { search(m, {board()}, o); }, {"'L0' is listed twice"});
  o.stages = 2;
  o.fixed_cuts = {"L0", "L2"};
  expect_error([&] { search(m, {board()}, o); }, {"2 fixed cuts", "k = 2", "at least 3"});
}

TEST(SearchErrors, FixedCutsAreHonoured) {
  ModelProfile m = chain(6);
  search_each_objective(m, {board()}, 3,
                        [&](const SearchOptions& o, const SearchResult& r) {
                          EXPECT_EQ(r.cut_names.front(), "L0");
                          EXPECT_EQ(r.cut_names, brute_force(m, {board()}, o).cut_names);
                        },
                        {"L0"});
}

TEST(SearchErrors, EvaluateRejectsBadCuts) {
  ModelProfile m = chain(4);
  m.layers[1].cut_allowed = false;
  SearchOptions o;
  expect_error([&] { evaluate(m, {board()}, std::vector<int64_t>{3}, o); },
               {"out of range", "[0, 2]"});
  expect_error(
      [&] {
        evaluate(m, {board()}, std::vector<int64_t>{2, 0}, o);
      },
      {"strictly increasing"});
  expect_error([&] { evaluate(m, {board()}, std::vector<int64_t>{1}, o); },
               {"'L1'", "after: L0, L2"});
  expect_error([&] { evaluate(m, {board()}, std::vector<std::string>{"x"}, o); },
               {"no layer named 'x'"});
  EXPECT_EQ(evaluate(m, {board()}, std::vector<std::string>{"L0", "L2"}, o).cuts,
            (std::vector<int64_t>{0, 2}));
}

TEST(SearchErrors, ParseObjective) {
  EXPECT_EQ(parse_objective("paper"), Objective::kPaper);
  EXPECT_EQ(parse_objective("minmax"), Objective::kMinMax);
  expect_error([] { parse_objective("fastest"); }, {"'fastest'", "'paper'", "'minmax'"});
}

TEST(SearchErrors, ObjectiveSpellingsRoundTrip) {
  for (const auto& entry : kObjectiveNames) {
    EXPECT_EQ(to_string(entry.value), entry.name);
    EXPECT_EQ(parse_objective(std::string(entry.name)), entry.value);
  }
  for (const auto& alias : kObjectiveAliases)
    EXPECT_EQ(parse_objective(std::string(alias.name)), alias.value);
  EXPECT_EQ(to_string(Objective::kMinMax), "minmax");
}

}  // namespace
}  // namespace quilt::partitioners
