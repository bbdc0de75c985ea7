#pragma once
// `quilt report`: a result file as a table, references as PASS/FAIL, and two files compared run
// by run. No MPI, no LibTorch.

#include "results/record.h"

#include <string>

namespace quilt::harness {

/// The runs of `record` with their metrics, validity and reference checks. Sets *all_good to
/// false when a run failed, is invalid, or misses a reference.
std::string report_table(const results::ExperimentRecord& record, bool* all_good);

/// Runs of `base` and `other` matched by id (same resolved parameters): throughput and latency
/// side by side with their ratio other/base; runs present in only one file are listed.
std::string compare_table(const results::ExperimentRecord& base,
                          const results::ExperimentRecord& other);

}  // namespace quilt::harness
