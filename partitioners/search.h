#pragma once
// Exact search for the cut positions of a k-stage pipeline under the cost model of
// cost_model.h, with heterogeneous boards (stage i runs on boards[i]), cuts only where a layer
// allows one, no empty stage, and optional cuts fixed by hand.
//
// Objectives (exec_i = stage i's exec_s for one batch):
//   kPaper  (QuiltNet §3.4): minimise sum_{i != i*} |exec_max - exec_i| = k * exec_max - sum_i
//           exec_i, the "imbalance".
//   kMinMax: minimise exec_max, the throughput bound of the pipeline.
// Ties (equal objective values, compared as computed in double precision) are broken
// deterministically: kPaper prefers the smaller exec_max, kMinMax the smaller sum_i exec_i (the
// latency of one batch through the pipeline); then both prefer the earliest cuts (the
// lexicographically smallest list of cut indices).
//
// search() is exact:
//   kMinMax: a dynamic programme (DP) over (stage, first layer) in O(k n^2) gives the optimal
//     M*; a second one minimises sum_i exec_i subject to every exec_i <= M* (the tie-break).
//   kPaper: for a threshold M let F(M) = max { sum_i exec_i : every exec_i <= M } (one O(k n^2)
//     DP, less when M is small: stages longer than M are not scanned). For every partition P,
//     imbalance(P) = k*max(P) - sum(P) >= k*max(P) - F(max(P)), and the DP's partition at
//     M = max(P) attains that bound, so the optimum is the best DP partition over thresholds M
//     >= M*. F is a non-decreasing step function; a DP at threshold x returns its partition P_x
//     and P_x's own maximum M_x <= x, and F is constant on [M_x, x], where P_x dominates. The
//     search covers (M*, oo) with such plateaus: it evaluates just below the top of each open
//     interval (which closes an interval without a jump in one DP) and at its middle, and drops
//     an interval (lo, hi) as soon as k*lo - sup F on it exceeds the best imbalance found (a
//     lower bound for everything inside; rounding is monotone, so it holds in floating point
//     too). Each pair of DPs finds a new value of F or closes an interval, so the DPs number
//     about twice the distinct values F takes (at most the k n^2 stage costs); in practice 2 to 50
//     (see bench/partition_bench.cc: ResNet-50 blocks, k <= 8, ~40 us; a 1000-layer chain, k = 16,
//     ~0.1-0.3 s).
// brute_force() enumerates every admissible combination of cuts: the test oracle.

#include "common/enum_table.h"
#include "partitioners/cost_model.h"
#include "partitioners/profile.h"

#include <cstdint>
#include <string>
#include <vector>

namespace quilt::partitioners {

/// What the search minimises.
enum class Objective {
  kPaper,   ///< sum_{i != i*} |exec_max - exec_i| (QuiltNet §3.4)
  kMinMax,  ///< exec_max (the slowest stage)
};

/// The spellings of Objective (common/enum_table.h), in the order messages list them.
inline constexpr common::EnumTable<Objective, 2> kObjectiveNames = {
    {{Objective::kPaper, "paper"}, {Objective::kMinMax, "minmax"}}};
/// Other spellings parse_objective() accepts.
inline constexpr common::EnumTable<Objective, 2> kObjectiveAliases = {
    {{Objective::kMinMax, "min-max"}, {Objective::kMinMax, "min_max"}}};

/// "paper" or "minmax" (kObjectiveNames).
std::string to_string(Objective objective);

/// Parses "paper" or "minmax" (also "min-max", "min_max": kObjectiveAliases); throws
/// PartitionError otherwise.
Objective parse_objective(const std::string& name);

/// One partitioning request.
struct SearchOptions {
  int64_t stages = 2;  ///< k >= 1 pipeline stages (= ranks = boards)
  Objective objective = Objective::kPaper;
  std::vector<std::string> fixed_cuts;  ///< names of layers after which a cut MUST be placed
  CostOptions cost;                     ///< batch size and autoencoder (rate, kernel)
};

/// A partition with its predicted costs.
struct SearchResult {
  Objective objective = Objective::kPaper;
  /// Index of the layer after which each cut lies, increasing, k-1 entries.
  std::vector<int64_t> cuts;
  std::vector<std::string> cut_names;  ///< names of those layers
  std::vector<StageCost> stages;       ///< k entries, in pipeline order
  double max_exec_s = 0;               ///< exec_max
  double sum_exec_s = 0;               ///< sum_i exec_i (summed from the last stage backwards)
  double imbalance_s = 0;              ///< k * max_exec_s - sum_exec_s (the paper's objective)
  double objective_s = 0;              ///< imbalance_s or max_exec_s, as requested
  int64_t evaluations = 0;             ///< DP passes (search) or partitions costed (brute force)
};

/// The optimal partition (see the top of this file for the objective, ties and the algorithm).
/// `boards` has one profile per stage or a single one for all. Throws PartitionError if the
/// request is invalid: k < 1; k - 1 more than the cuts the model allows; a fixed cut naming no
/// layer, naming a layer that allows no cut after it (or the last layer), listed twice, or more
/// fixed cuts than k - 1; an invalid profile, board or option.
SearchResult search(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                    const SearchOptions& options);

/// Same contract and same tie-breaking as search(), by enumerating every admissible combination
/// of cuts: O(C(n, k-1) k). Throws PartitionError when there are more than 5e7 combinations.
SearchResult brute_force(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                         const SearchOptions& options);

/// Costs of the partition with the given cuts (layer indices, increasing, k-1 = cuts.size());
/// options.stages and options.fixed_cuts are ignored. Throws PartitionError for a cut that is out
/// of range, not increasing, or not allowed.
SearchResult evaluate(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                      const std::vector<int64_t>& cuts, const SearchOptions& options);

/// As evaluate(), with cuts given by layer name.
SearchResult evaluate(const ModelProfile& model, const std::vector<BoardProfile>& boards,
                      const std::vector<std::string>& cut_names, const SearchOptions& options);

/// The index of the layer named `name`; throws PartitionError listing the names otherwise.
int64_t layer_index(const ModelProfile& model, const std::string& name);

}  // namespace quilt::partitioners
