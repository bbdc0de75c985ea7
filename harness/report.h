#pragma once
// `quilt report`: a result file as a table, references as PASS/FAIL (several files and
// --compare: harness/collect_cmd.h). No MPI, no LibTorch.

#include "results/record.h"

#include <string>

namespace quilt::harness {

/// The runs of `record` with their metrics, validity and reference checks. Sets *all_good to
/// false when a run failed, is invalid, or misses a reference.
std::string report_table(const results::ExperimentRecord& record, bool* all_good);

/// One line for a training run (training.mode set): id, mode, rate, data, final top-1/top-5 or
/// the proxy's reconstruction loss and cost, or FAILED with the reason. Ends with a newline.
/// Top-5 is "-" when the data set has 5 classes or fewer (it would equal 100%).
std::string training_summary_line(const results::RunRecord& run);

/// The column header above training_summary_line rows. Ends with a newline.
std::string training_summary_header();

}  // namespace quilt::harness
