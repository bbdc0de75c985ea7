#include "results/reader.h"

#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "results/fields_io.h"
#include "results/h5.h"
#include "results/trace_io.h"

namespace quilt::results {
namespace {

constexpr const char* kFormat = "quilt-results";

Provenance read_provenance(const h5::Group& root) {
  Provenance p;
  fields::read(root.open_group("provenance"), p);
  return p;
}

StageRecord read_stage(const h5::Group& g) {
  StageRecord s;
  fields::read(g, s);
  return s;
}

MetricCheck read_check(const h5::Group& g) {
  MetricCheck c;
  fields::read(g, c);
  return c;
}

// Children of `g` named 0..n-1 (stages, checks), opened by number, not name order ("10" < "2").
// A missing number fails in open_group with the path of the group that is not there.
template <typename Read>
auto read_numbered(const h5::Group& g, Read read) {
  std::vector<decltype(read(g))> out;
  const size_t count = g.child_names().size();
  out.reserve(count);
  for (size_t k = 0; k < count; ++k) out.push_back(read(g.open_group(std::to_string(k))));
  return out;
}

TrainingRecord read_training(const h5::Group& g) {
  TrainingRecord t;
  // Files written before boards.precision lack it: accuracies in a precision not evaluated.
  t.precision_top1 = t.precision_agreement = std::numeric_limits<double>::quiet_NaN();
  fields::read(g, t);
  // Every per-epoch dataset has the length of 'epoch'.
  const size_t n = t.epoch.size();
  for_each_field(t, [&](const Field&, const auto& value) {
    if constexpr (fields::kIsVector<std::decay_t<decltype(value)>>) {
      if (value.size() != n)
        throw ResultsError(g.location().describe() +
                           ": per-epoch datasets differ in length (expected " + std::to_string(n) +
                           " like 'epoch', found " + std::to_string(value.size()) + ")");
    }
  });
  return t;
}

RunRecord read_run(const h5::Group& runs, const std::string& id) {
  const h5::Group g = runs.open_group(id);
  // The writer sets 'complete' last; without it the run's data cannot be trusted.
  if (!g.has_attribute("complete") || g.read_int64_attribute("complete") != 1) {
    throw ResultsError(g.location().describe() +
                       ": run is incomplete (attribute 'complete' is not 1); the file was not "
                       "written by write_experiment or was damaged");
  }
  RunRecord r;
  r.id = id;
  fields::read(g, r);
  {
    const h5::Group params = g.open_group("params");
    for (const std::string& key : params.attribute_names()) {
      r.params[key] = params.read_string_attribute(key);
    }
  }
  r.checks = read_numbered(g.open_group("checks"), read_check);
  r.stages = read_numbered(g.open_group("stages"), read_stage);
  // Optional: only training runs have it (files of pipeline-only experiments do not).
  if (g.has("training")) r.training = read_training(g.open_group("training"));
  r.trace = read_trace(g);  // optional: runs without measurement.trace have none
  return r;
}

}  // namespace

ExperimentRecord read_experiment(const std::string& path) {
  h5::ScopedErrorSilence silence;
  h5::File file = h5::File::open_read_only(path);
  const h5::Group& root = file.root();
  if (!root.has_attribute("quilt_format")) {
    throw ResultsError(path +
                       ": HDF5 file is not a Quilt results file (no 'quilt_format' attribute on "
                       "\"/\")");
  }
  const std::string format = root.read_string_attribute("quilt_format");
  if (format != kFormat) {
    throw ResultsError(path + ": 'quilt_format' is '" + format + "', expected '" + kFormat + "'");
  }
  const int64_t version = root.read_int64_attribute("schema_version");
  if (version > kSchemaVersion) {
    throw ResultsError(path + ": schema_version " + std::to_string(version) +
                       " is newer than this Quilt supports (" + std::to_string(kSchemaVersion) +
                       "); read it with a newer Quilt");
  }
  if (version < 1) {
    throw ResultsError(path + ": invalid schema_version " + std::to_string(version) +
                       " (valid: 1.." + std::to_string(kSchemaVersion) + ")");
  }

  ExperimentRecord record;
  record.schema_version = static_cast<int>(version);
  record.name = root.read_string_attribute("name");
  record.experiment_hash = root.read_string_attribute("experiment_hash");
  record.provenance = read_provenance(root);

  // Runs are appended one at a time (SCHEMA.md, "Atomicity"): a run is there when /run_order
  // lists it and its group is complete. A job killed while writing a run leaves its group
  // incomplete, or complete but not yet listed, or listed while the group of a replaced run is
  // being rewritten: such runs are skipped (--resume runs them again).
  const std::vector<std::string> order = root.read_string_vector("run_order");
  const h5::Group runs = root.open_group("runs");
  std::set<std::string> seen;
  record.runs.reserve(order.size());
  for (const std::string& id : order) {
    if (!seen.insert(id).second) {
      throw ResultsError(path + ":/run_order lists run '" + id + "' twice");
    }
    if (!runs.has(id)) continue;
    const h5::Group g = runs.open_group(id);
    if (!g.has_attribute("complete") || g.read_int64_attribute("complete") != 1) continue;
    record.runs.push_back(read_run(runs, id));
  }
  file.close();
  return record;
}

}  // namespace quilt::results
