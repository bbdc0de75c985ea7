#include "results/reader.h"

#include <limits>
#include <set>
#include <string>
#include <vector>

#include "results/h5.h"
#include "results/trace_io.h"

namespace quilt::results {
namespace {

constexpr const char* kFormat = "quilt-results";

Provenance read_provenance(const h5::Group& root) {
  const h5::Group g = root.open_group("provenance");
  Provenance p;
  p.quilt_version = g.read_string_attribute("quilt_version");
  p.git_commit = g.read_string_attribute("git_commit");
  p.git_dirty = g.read_int64_attribute("git_dirty") != 0;
  p.torch_version = g.read_string_attribute("torch_version");
  p.mpi_version = g.read_string_attribute("mpi_version");
  p.hdf5_version = g.read_string_attribute("hdf5_version");
  p.xrt_version = g.read_string_attribute("xrt_version");
  p.compiler = g.read_string_attribute("compiler");
  p.command_line = g.read_string_attribute("command_line");
  p.experiment_path = g.read_string_attribute("experiment_path");
  p.created_utc = g.read_string_attribute("created_utc");
  p.start_utc = g.read_string_attribute("start_utc");
  p.end_utc = g.read_string_attribute("end_utc");
  p.scale = g.read_string_attribute("scale");
  p.hosts = g.read_string_vector("hosts");
  p.boards = g.read_string_vector("boards");
  p.experiment_text = g.read_string_dataset("experiment_text");
  p.resolved_experiment = g.read_string_dataset("resolved_experiment");
  return p;
}

StageRecord read_stage(const h5::Group& g) {
  StageRecord s;
  s.rank = static_cast<int>(g.read_int64_attribute("rank"));
  s.host = g.read_string_attribute("host");
  s.board = g.read_string_attribute("board");
  s.board_description = g.read_string_attribute("board_description");
  s.units = g.read_string_attribute("units");
  s.bytes_sent = g.read_int64_attribute("bytes_sent");
  s.bytes_received = g.read_int64_attribute("bytes_received");
  s.predicted_compute_s = g.read_double_attribute("predicted_compute_s");
  s.predicted_comm_s = g.read_double_attribute("predicted_comm_s");
  s.predicted_exec_s = g.read_double_attribute("predicted_exec_s");
  s.in_shape = g.read_int64_vector("in_shape");
  s.out_shape = g.read_int64_vector("out_shape");
  s.compute_s = g.read_double_vector("compute_s");
  s.recv_wait_s = g.read_double_vector("recv_wait_s");
  s.send_wait_s = g.read_double_vector("send_wait_s");
  // Added after the first files were written: absent there, defaults kept.
  if (g.has("h2d_s")) s.h2d_s = g.read_double_vector("h2d_s");
  if (g.has("d2h_s")) s.d2h_s = g.read_double_vector("d2h_s");
  if (g.has_attribute("busy_s")) s.busy_s = g.read_double_attribute("busy_s");
  if (g.has_attribute("energy_j")) s.energy_j = g.read_double_attribute("energy_j");
  return s;
}

MetricCheck read_check(const h5::Group& g) {
  MetricCheck c;
  c.metric = g.read_string_attribute("metric");
  c.value = g.read_double_attribute("value");
  c.reference = g.read_double_attribute("reference");
  c.tolerance = g.read_double_attribute("tolerance");
  c.better = g.read_string_attribute("better");
  c.passed = g.read_int64_attribute("passed") != 0;
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
  t.mode = g.read_string_attribute("mode");
  t.dataset = g.read_string_attribute("dataset");
  t.data_source = g.read_string_attribute("data_source");
  t.stand_in = g.read_string_attribute("stand_in");
  t.train_samples = g.read_int64_attribute("train_samples");
  t.test_samples = g.read_int64_attribute("test_samples");
  t.classes = g.read_int64_attribute("classes");
  t.ranks = g.read_int64_attribute("ranks");
  t.global_batch = g.read_int64_attribute("global_batch");
  t.phase1_epochs = g.read_int64_attribute("phase1_epochs");
  t.final_test_loss = g.read_double_attribute("final_test_loss");
  t.final_top1 = g.read_double_attribute("final_top1");
  t.final_top5 = g.read_double_attribute("final_top5");
  t.train_s = g.read_double_attribute("train_s");
  t.full_epoch_s = g.read_double_attribute("full_epoch_s");
  t.proxy_speedup = g.read_double_attribute("proxy_speedup");
  t.checkpoint = g.read_string_attribute("checkpoint");
  t.pretrained = g.read_string_attribute("pretrained");
  t.pretrain_top1 = g.read_double_attribute("pretrain_top1");
  // Added in schema 1.x (the convergence rule); older files have none: -1 = no rule.
  if (g.has_attribute("converged")) {
    t.converged = g.read_int64_attribute("converged");
    t.converge_window = g.read_int64_attribute("converge_window");
    t.converge_margin_pt = g.read_double_attribute("converge_margin_pt");
  }
  t.precision_top1 = t.precision_agreement = std::numeric_limits<double>::quiet_NaN();
  if (g.has_attribute("precision")) {  // files written before boards.precision lack it
    t.precision = g.read_string_attribute("precision");
    t.precision_top1 = g.read_double_attribute("precision_top1");
    t.precision_agreement = g.read_double_attribute("precision_agreement");
  }
  t.epoch = g.read_int64_vector("epoch");
  t.phase = g.read_string_vector("phase");
  t.train_loss = g.read_double_vector("train_loss");
  t.train_top1 = g.read_double_vector("train_top1");
  t.test_loss = g.read_double_vector("test_loss");
  t.test_top1 = g.read_double_vector("test_top1");
  t.test_top5 = g.read_double_vector("test_top5");
  t.epoch_s = g.read_double_vector("epoch_s");
  t.samples_per_s = g.read_double_vector("samples_per_s");
  const size_t n = t.epoch.size();
  for (size_t size :
       {t.phase.size(), t.train_loss.size(), t.train_top1.size(), t.test_loss.size(),
        t.test_top1.size(), t.test_top5.size(), t.epoch_s.size(), t.samples_per_s.size()}) {
    if (size != n)
      throw ResultsError(g.location().describe() +
                         ": per-epoch datasets differ in length (expected " + std::to_string(n) +
                         " like 'epoch', found " + std::to_string(size) + ")");
  }
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
  r.status = g.read_string_attribute("status");
  r.failure = g.read_string_attribute("failure");
  r.batch_size = g.read_int64_attribute("batch_size");
  r.warmup_batches = g.read_int64_attribute("warmup_batches");
  r.measured_batches = g.read_int64_attribute("measured_batches");
  r.start_unix_s = g.read_double_attribute("start_unix_s");
  r.end_unix_s = g.read_double_attribute("end_unix_s");
  r.throughput_sps = g.read_double_attribute("throughput_sps");
  r.duration_s = g.read_double_attribute("duration_s");
  r.latency_p50_s = g.read_double_attribute("latency_p50_s");
  r.latency_p90_s = g.read_double_attribute("latency_p90_s");
  r.latency_p99_s = g.read_double_attribute("latency_p99_s");
  r.max_abs_error = g.read_double_attribute("max_abs_error");
  r.failed_rank = g.read_int64_attribute("failed_rank");
  r.repetitions = g.read_int64_attribute("repetitions");
  r.throughput_median_sps = g.read_double_attribute("throughput_median_sps");
  r.throughput_mean_sps = g.read_double_attribute("throughput_mean_sps");
  r.throughput_std_sps = g.read_double_attribute("throughput_std_sps");
  r.throughput_ci95_low_sps = g.read_double_attribute("throughput_ci95_low_sps");
  r.throughput_ci95_high_sps = g.read_double_attribute("throughput_ci95_high_sps");
  r.validity = g.read_string_attribute("validity");
  // Added after the first files were written: absent there, defaults kept.
  // Files written before boards.precision: fp32.
  if (g.has_attribute("precision")) {
    r.precision = g.read_string_attribute("precision");
    r.element_bytes = g.read_int64_attribute("element_bytes");
  }
  if (g.has_attribute("time_model")) {
    r.time_model = g.read_string_attribute("time_model");
    r.dilation = g.read_double_attribute("dilation");
    r.overruns = g.read_int64_attribute("overruns");
    r.energy_j = g.read_double_attribute("energy_j");
    r.energy_per_sample_j = g.read_double_attribute("energy_per_sample_j");
    r.energy_source = g.read_string_attribute("energy_source");
  }
  if (g.has_attribute("cpu_wait_fraction"))
    r.cpu_wait_fraction = g.read_double_attribute("cpu_wait_fraction");
  {
    const h5::Group params = g.open_group("params");
    for (const std::string& key : params.attribute_names()) {
      r.params[key] = params.read_string_attribute(key);
    }
  }
  r.latency_s = g.read_double_vector("latency_s");
  r.cut_names = g.read_string_vector("cut_names");
  r.cut_bytes_per_sample = g.read_int64_vector("cut_bytes_per_sample");
  r.cut_wire_bytes_per_sample = g.read_int64_vector("cut_wire_bytes_per_sample");
  r.cut_requested_rate = g.read_double_vector("cut_requested_rate");
  r.cut_effective_rate = g.read_double_vector("cut_effective_rate");
  r.repetition_throughput_sps = g.read_double_vector("repetition_throughput_sps");
  r.repetition_duration_s = g.read_double_vector("repetition_duration_s");
  r.invalid_reasons = g.read_string_vector("invalid_reasons");
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
