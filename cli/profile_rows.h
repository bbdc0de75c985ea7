#pragma once
// The rows of `quilt profile` (cli/profile_cmd.cc): one per unit of a model, and under it its
// layers (a zoo model's leaf layers, or the operations of a TorchScript unit's frozen graph), with
// shapes, FLOPs, bytes and optionally measured times; and their CSV and JSON forms.

#include "backends/profile.h"
#include "models/model.h"
#include "models/summary.h"
#include "models/zoo.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness::profile {

/// A mistake on the command line; the message names the option.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The options of `quilt profile` and `quilt calibrate`.
struct Args {
  std::string command;
  std::string model;
  models::ModelOptions model_options;
  bool measure = false;
  bool units_only = false;
  backends::UnitTimingOptions timing;
  std::string output;
  std::string profile;
  std::string file;               // --file: a TorchScript model instead of MODEL
  std::vector<std::string> cuts;  // --cut: its cuts beyond the default ones
};

// One leaf layer under its unit; measured seconds per batch, eagerly.
struct LayerRow {
  models::LayerSummary layer;
  std::optional<double> measured_s;
  int64_t param_bytes = 0;  // --file only: bytes of the frozen weights it reads
};

// One row per unit; measured seconds per batch (a group timed as one is split by FLOPs).
struct Row {
  models::UnitSummary unit;
  std::string cut_after;  // empty when no cut follows the unit
  std::optional<double> measured_s;
  std::vector<LayerRow> layers;
  int64_t param_bytes = 0;  // --file only
};

/// Times every unit as the emulator runs it (backends::measure_unit_times), saying so on stderr.
std::vector<backends::UnitTiming> measure_units(const models::Model& model, const Args& a);

/// The rows of `model` and its summary `s`: per unit, its layers unless --units-only, measured
/// with --measure (units compiled as the emulator runs them; a zoo model's layers eagerly, a
/// TorchScript model's operations one by one in the interpreter).
std::vector<Row> collect_rows(const models::Model& model, const Args& a, models::ModelSummary& s);

/// Writes the rows to `path`: CSV (`.csv`) or JSON (`.json`). Throws UsageError for another
/// extension or a file that cannot be written.
void write_rows(const std::string& path, const Args& a, const models::ModelSummary& s,
                const std::vector<Row>& rows);

}  // namespace quilt::harness::profile
