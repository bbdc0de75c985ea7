#pragma once
// Many result files at once: `quilt collect` (the runs table as CSV, the same table that
// quilt.results.runs() returns in Python) and `quilt report A.h5 B.h5 ... [--compare BASE.h5]
// [--by k1,k2]`. No MPI, no LibTorch.

#include "results/record.h"

#include <string>
#include <utility>
#include <vector>

namespace quilt::harness {

/// A table of text cells: one row per run. Empty cell = missing value.
struct RunsTable {
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

/// A result file read back, with the path it was read from.
using NamedRecord = std::pair<std::string, results::ExperimentRecord>;

/// The runs of `files` (in file order, runs in run order) as one table: fixed columns first
/// (file, experiment, id, status, validity, time model, metrics, training results; see
/// analysis/README.md), then one column per parameter key found in any run, sorted. Numbers are
/// written in their shortest exact form, booleans as True/False, lists joined by ';', and values
/// that do not apply (a pipeline metric of a training run, energy −1 "unavailable", NaN) left
/// empty.
RunsTable runs_table(const std::vector<NamedRecord>& files);

/// `table` as RFC 4180 CSV (header line, then rows; cells quoted when they hold , " or a newline).
std::string to_csv(const RunsTable& table);

/// Reads every path in `paths` (ResultsError names the file that is missing or not a result).
std::vector<NamedRecord> read_files(const std::vector<std::string>& paths);

/// One table across files: a line per run with its file, key parameters, headline metric and
/// verdict (OK, FAILED, INVALID, FAIL <metric>: the rules of report_table). Sets *all_good like
/// report_table.
std::string multi_report_table(const std::vector<NamedRecord>& files, bool* all_good);

/// Runs of `other` paired with runs of `base` by parameters: by `by` when not empty (each key
/// must be a parameter of every run, else ConfigError naming the key and the valid ones), else
/// by the parameters whose values vary within either file (seed keys included, output paths such
/// as training.saved_weights left out; a file with one run pairs with one run). Values compare
/// as numbers when both are numbers ("64" = "64.0").  Prints throughput/latency (pipeline) or
/// top-1 (training) side by side with the ratio, and per pair the parameters that differ;
/// unmatched runs are listed.
std::string compare_by_params(const NamedRecord& base, const NamedRecord& other,
                              const std::vector<std::string>& by);

/// `quilt report FILE.h5... [--compare BASE.h5] [--by k1,k2]` after option parsing: one file
/// prints report_table; several print multi_report_table; --compare compares each file with
/// BASE. Returns the exit code (0 all good, 1 a run failed/invalid/missed a reference).
int report_command(const std::vector<std::string>& files, const std::string& compare,
                   const std::vector<std::string>& by);

/// `quilt collect FILE.h5... -o TABLE.csv` after option parsing: writes to_csv(runs_table) to
/// `output` ("-" = stdout) atomically (temporary file + rename). Returns the exit code (0).
int collect_command(const std::vector<std::string>& files, const std::string& output);

/// argv parsers for the two commands (argv[1] is the command); ConfigError on bad options.
int cmd_report(int argc, char** argv);
int cmd_collect(int argc, char** argv);

}  // namespace quilt::harness
