#pragma once
// Plain value types for what an experiment produces. No HDF5, no MPI, no LibTorch here: the
// harness fills these, results/writer.h stores them, results/reader.h reads them back.

#include "results/trace.h"

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

namespace quilt::results {

/// Version of the file layout documented in results/SCHEMA.md.
inline constexpr int kSchemaVersion = 2;

/// One stored field of a record: the name it has in the file (HDF5 attribute or dataset), in
/// the Python dicts of quilt._core and in results/SCHEMA.md. Where it goes follows from the
/// member's type: scalars (int, int64_t, double, bool as int64 0/1, std::string) are attributes,
/// std::vector<...> are 1-D datasets, and `text_dataset` strings are scalar string datasets.
struct Field {
  const char* name;
  /// For fields added after the first files were written: the reader reads the field only when
  /// the attribute or dataset of this name (often the field itself) exists, and otherwise keeps
  /// the member's default. nullptr: the field is in every file.
  const char* present_if = nullptr;
  bool text_dataset = false;  ///< a std::string stored as a scalar string dataset
};

/// The field list of a record type: `FieldList<R>::visit(v)` calls `v(Field, &R::member)` once
/// per stored field, in the order the writer stores them. Specialised below for StageRecord,
/// MetricCheck, TrainingRecord, RunRecord (its attributes and datasets; not its id, which is
/// the group name, nor params, checks, stages, training, trace) and Provenance. Adding a field
/// to one of these records is one line in its list (plus its entry in results/SCHEMA.md).
template <class R>
struct FieldList;

/// Calls `v(const Field&, member)` for every stored field of `rec` (const or not), with the
/// member as a reference into `rec`.
template <class R, class V>
void for_each_field(R& rec, V&& v) {
  FieldList<std::remove_const_t<R>>::visit(
      [&](const Field& field, auto member) { v(field, rec.*member); });
}

/// What one pipeline stage (one rank, one board) measured in one run.
struct StageRecord {
  int rank = 0;
  std::string host;
  std::string board;              ///< backend name ("emulator", "null", "xrt")
  std::string board_description;  ///< e.g. "CPU emulator (1 thread, oneDNN)"
  std::string units;              ///< units of the model this stage runs, e.g. "stem..layer3"
  std::vector<int64_t> in_shape, out_shape;  ///< per sample, without batch
  int64_t bytes_sent = 0;      ///< total payload bytes sent to the next rank, measured batches
  int64_t bytes_received = 0;  ///< total payload bytes received from the previous rank
  // Per measured batch, in seconds. Warm-up batches are not included.
  std::vector<double> compute_s;    ///< board busy time
  std::vector<double> recv_wait_s;  ///< time blocked waiting for the input to arrive
  std::vector<double> send_wait_s;  ///< time blocked waiting for the previous send to finish
  /// Host->board and board->host transfer per measured batch, in board time: modeled by the
  /// `dilated` and `modeled` time models, timed on an XRT board; empty under `measured` on the
  /// emulator (there is no separate board memory to move to).
  std::vector<double> h2d_s, d2h_s;
  double busy_s = 0;  ///< total board busy time over the measured batches (h2d + compute + d2h)
  /// Energy of this board over the measured windows (busy + idle power, link energy), joules;
  /// negative when unavailable (no power figures in the board profile, no power from the board).
  double energy_j = -1;
  /// The cost model's prediction for one batch of this stage (partitioners/cost_model.h), in
  /// seconds; negative when no prediction was made (no board profile for the run).
  double predicted_compute_s = -1, predicted_comm_s = -1, predicted_exec_s = -1;
};

template <>
struct FieldList<StageRecord> {
  template <class V>
  static void visit(V&& v) {
    using S = StageRecord;
    v(Field{"rank"}, &S::rank);
    v(Field{"host"}, &S::host);
    v(Field{"board"}, &S::board);
    v(Field{"board_description"}, &S::board_description);
    v(Field{"units"}, &S::units);
    v(Field{"bytes_sent"}, &S::bytes_sent);
    v(Field{"bytes_received"}, &S::bytes_received);
    v(Field{"predicted_compute_s"}, &S::predicted_compute_s);
    v(Field{"predicted_comm_s"}, &S::predicted_comm_s);
    v(Field{"predicted_exec_s"}, &S::predicted_exec_s);
    v(Field{"in_shape"}, &S::in_shape);
    v(Field{"out_shape"}, &S::out_shape);
    v(Field{"compute_s"}, &S::compute_s);
    v(Field{"recv_wait_s"}, &S::recv_wait_s);
    v(Field{"send_wait_s"}, &S::send_wait_s);
    v(Field{"h2d_s", "h2d_s"}, &S::h2d_s);
    v(Field{"d2h_s", "d2h_s"}, &S::d2h_s);
    v(Field{"busy_s", "busy_s"}, &S::busy_s);
    v(Field{"energy_j", "energy_j"}, &S::energy_j);
  }
};

/// A metric compared with a reference value from the experiment file.
struct MetricCheck {
  std::string metric;    ///< e.g. "throughput_sps"
  double value = 0;      ///< measured
  double reference = 0;  ///< expected
  double tolerance = 0;  ///< relative
  std::string better;    ///< "higher" or "lower"
  bool passed = false;   ///< higher: value >= reference*(1-tol); lower: value <= reference*(1+tol)
};

template <>
struct FieldList<MetricCheck> {
  template <class V>
  static void visit(V&& v) {
    using C = MetricCheck;
    v(Field{"metric"}, &C::metric);
    v(Field{"value"}, &C::value);
    v(Field{"reference"}, &C::reference);
    v(Field{"tolerance"}, &C::tolerance);
    v(Field{"better"}, &C::better);
    v(Field{"passed"}, &C::passed);
  }
};

/// What a training run (training.mode != none) produced: per epoch and phase, one entry in each
/// per-epoch vector (all of equal length). Accuracies are fractions in [0, 1]; a value that does
/// not apply (accuracies of an autoencoder-only proxy epoch) is NaN.
struct TrainingRecord {
  std::string mode;         ///< scratch | freeze | finetune | proxy; empty for a pipeline run
  std::string dataset;      ///< data.kind actually loaded, e.g. "fashion-mnist"
  std::string data_source;  ///< where it came from (directory, file or "generated")
  /// Set when the data is a small-scale stand-in for the paper's, e.g. "Fashion-MNIST instead of
  /// ImageNet"; empty when the run used the paper's data.
  std::string stand_in;
  int64_t train_samples = 0;  ///< samples trained on (after data.train_samples), all ranks
  int64_t test_samples = 0;   ///< samples evaluated on
  int64_t classes = 0;
  int64_t ranks = 1;          ///< data-parallel MPI ranks (each trains on 1/ranks of every epoch)
  int64_t global_batch = 0;   ///< samples per optimizer step over all ranks
  int64_t phase1_epochs = 0;  ///< freeze: epochs spent in phase 1 (autoencoders only)
  // Per epoch, over all phases in order.
  std::vector<int64_t> epoch;      ///< 1-based, counted over all phases
  std::vector<std::string> phase;  ///< "train", "freeze" (phase 1), "unfreeze" (phase 2), "proxy"
  std::vector<double> train_loss;  ///< mean training loss (proxy: reconstruction MSE)
  std::vector<double> train_top1;  ///< training accuracy over the epoch (NaN for proxy)
  std::vector<double> test_loss;   ///< loss on the test set (proxy: reconstruction MSE)
  std::vector<double> test_top1, test_top5;  ///< test accuracy (NaN for proxy)
  std::vector<double> epoch_s;        ///< wall time of the epoch's training (no evaluation), s
  std::vector<double> samples_per_s;  ///< training samples per second over all ranks
  double final_test_loss = 0;         ///< after the last epoch
  double final_top1 = 0, final_top5 = 0;
  double train_s = 0;  ///< wall time of all training epochs, s
  /// proxy: measured wall time of one full-model training epoch on the same data (from a few
  /// timed batches, scaled), and full training (training.epochs such epochs) over the proxy's
  /// own training time: how much cheaper the proxy is. -1 when not a proxy run.
  double full_epoch_s = -1;
  double proxy_speedup = -1;
  std::string checkpoint;  ///< checkpoint written at the end of the run, empty when none
  /// Where the starting weights came from: pretraining in this run or from the cache
  /// (training.pretrain_epochs), model.weights, or empty (random initialisation).
  std::string pretrained;
  /// Test accuracy of the pretrained model without autoencoder, before the mode ran; NaN when
  /// the run did not pretrain.
  double pretrain_top1 = 0;
  /// The convergence rule (training.converge_window): 1 when the run's last phase (and its
  /// pretraining, if any) ended with test top-1 flat within converge_margin_pt over the last
  /// converge_window epochs, 0 when it stopped at its maximum epochs without that, -1 when the run
  /// had no rule (files written before it existed read as -1).
  int64_t converged = -1;
  int64_t converge_window = 0;                                           ///< epochs; 0 = no rule
  double converge_margin_pt = std::numeric_limits<double>::quiet_NaN();  ///< pt; NaN: no rule
  /// boards.precision bf16 / int8 given: the trained model compiled in that precision (as a
  /// pipeline of it computes, backends::run_in_precision; int8 calibrated on
  /// boards.calibration_batches training batches) on the test set: its top-1 accuracy, and the
  /// fraction of test samples whose top-1 class equals the float32 model's. Empty / NaN when
  /// not evaluated (fp32, proxy runs, files written before).
  std::string precision;
  double precision_top1 = 0, precision_agreement = 0;
};

template <>
struct FieldList<TrainingRecord> {
  template <class V>
  static void visit(V&& v) {
    using T = TrainingRecord;
    v(Field{"mode"}, &T::mode);
    v(Field{"dataset"}, &T::dataset);
    v(Field{"data_source"}, &T::data_source);
    v(Field{"stand_in"}, &T::stand_in);
    v(Field{"train_samples"}, &T::train_samples);
    v(Field{"test_samples"}, &T::test_samples);
    v(Field{"classes"}, &T::classes);
    v(Field{"ranks"}, &T::ranks);
    v(Field{"global_batch"}, &T::global_batch);
    v(Field{"phase1_epochs"}, &T::phase1_epochs);
    v(Field{"final_test_loss"}, &T::final_test_loss);
    v(Field{"final_top1"}, &T::final_top1);
    v(Field{"final_top5"}, &T::final_top5);
    v(Field{"train_s"}, &T::train_s);
    v(Field{"full_epoch_s"}, &T::full_epoch_s);
    v(Field{"proxy_speedup"}, &T::proxy_speedup);
    v(Field{"checkpoint"}, &T::checkpoint);
    v(Field{"pretrained"}, &T::pretrained);
    v(Field{"pretrain_top1"}, &T::pretrain_top1);
    // Added with the convergence rule (older files: -1 = no rule).
    v(Field{"converged", "converged"}, &T::converged);
    v(Field{"converge_window", "converged"}, &T::converge_window);
    v(Field{"converge_margin_pt", "converged"}, &T::converge_margin_pt);
    // Added with boards.precision (the reader sets NaN accuracies in older files).
    v(Field{"precision", "precision"}, &T::precision);
    v(Field{"precision_top1", "precision"}, &T::precision_top1);
    v(Field{"precision_agreement", "precision"}, &T::precision_agreement);
    // Per epoch: all of the length of `epoch` (the reader checks).
    v(Field{"epoch"}, &T::epoch);
    v(Field{"phase"}, &T::phase);
    v(Field{"train_loss"}, &T::train_loss);
    v(Field{"train_top1"}, &T::train_top1);
    v(Field{"test_loss"}, &T::test_loss);
    v(Field{"test_top1"}, &T::test_top1);
    v(Field{"test_top5"}, &T::test_top5);
    v(Field{"epoch_s"}, &T::epoch_s);
    v(Field{"samples_per_s"}, &T::samples_per_s);
  }
};

/// One run: one point of a sweep.
struct RunRecord {
  std::string id;       ///< stable id of the run (hash of its resolved parameters)
  std::string status;   ///< "ok", "failed" or "interrupted"
  std::string failure;  ///< reason when failed, empty otherwise
  /// Resolved parameters as flat key -> value text ("autoencoder.rate" -> "64").
  std::map<std::string, std::string> params;
  int64_t batch_size = 0;
  int64_t warmup_batches = 0;
  int64_t measured_batches = 0;
  double start_unix_s = 0, end_unix_s = 0;
  // Pipeline-level metrics over the measured batches.
  double throughput_sps = 0;  ///< samples per second, steady state at the last stage
  double duration_s = 0;      ///< wall time of the measured window
  /// Per batch: first stage start -> last stage end; repetitions x measured_batches entries.
  std::vector<double> latency_s;
  double latency_p50_s = 0, latency_p90_s = 0, latency_p99_s = 0;
  // Per cut (K-1 entries for K stages).
  std::vector<std::string> cut_names;
  std::vector<int64_t> cut_bytes_per_sample;       ///< float32 bytes without autoencoder
  std::vector<int64_t> cut_wire_bytes_per_sample;  ///< what actually crossed
  std::vector<double> cut_requested_rate, cut_effective_rate;
  /// Max |pipeline - single-process| over checked outputs; negative when not checked.
  double max_abs_error = -1;
  /// Rank where the run failed (-1 when it did not fail or failed before any rank ran).
  int64_t failed_rank = -1;
  // Repetitions: each is an independent measured window (with its own warm-up). The per-batch
  // vectors above and in `stages` are the repetitions' batches one after another.
  int64_t repetitions = 1;
  std::vector<double> repetition_throughput_sps;  ///< steady-state throughput per repetition
  std::vector<double> repetition_duration_s;      ///< measured window per repetition
  /// Statistics of repetition_throughput_sps: median, mean, sample standard deviation, and the
  /// two-sided 95% confidence interval of the mean (Student t; equal to the mean when n = 1).
  double throughput_median_sps = 0, throughput_mean_sps = 0, throughput_std_sps = 0;
  double throughput_ci95_low_sps = 0, throughput_ci95_high_sps = 0;
  /// "valid" or "invalid": a measured window shorter than measurement.min_duration_s, or with
  /// fewer samples than measurement.min_samples, makes the run invalid (MLPerf LoadGen style).
  std::string validity = "valid";
  std::vector<std::string> invalid_reasons;  ///< one sentence per broken rule
  std::vector<MetricCheck> checks;           ///< references from the experiment file
  /// How times were obtained (boards.time_model): "measured", "dilated" or "modeled". Under
  /// dilated and modeled every time of this run is board time (see harness/time_model.h).
  std::string time_model = "measured";
  /// The number format the boards computed in (boards.precision, else the profile's): "fp32",
  /// "bf16" or "int8". Cut bytes and bytes sent are in its element size (element_bytes).
  std::string precision = "fp32";
  int64_t element_bytes = 4;  ///< bytes per element on the wire: 4, 2 or 1
  double dilation = 1;        ///< dilated: the wall-clock stretch factor divided out; 1 otherwise
  int64_t overruns = 0;       ///< dilated: batches where the CPU did not keep up with the pacing
  /// measured, dilated: the largest share, over the ranks, of the repetitions' wall time that the
  /// rank's threads spent runnable but waiting for a CPU (the kernel's run-queue delay; another
  /// job on the host's CPUs); -1 when not measured (modeled, training, no /proc schedstat).
  double cpu_wait_fraction = -1;
  /// Energy over the measured windows, summed over boards, and per inference (sample); negative
  /// when unavailable. energy_source: "profile" (board profile power x busy/idle time + link
  /// energy), "board" (power sampled from the board) or "unavailable".
  double energy_j = -1, energy_per_sample_j = -1;
  std::string energy_source = "unavailable";
  std::vector<StageRecord> stages;
  /// Training runs only (training.mode is empty for pipeline runs, which have no such group).
  TrainingRecord training;
  /// The merged timeline of every rank (measurement.trace); empty when not traced.
  TraceRecord trace;
};

template <>
struct FieldList<RunRecord> {
  template <class V>
  static void visit(V&& v) {
    using R = RunRecord;
    v(Field{"status"}, &R::status);
    v(Field{"failure"}, &R::failure);
    v(Field{"batch_size"}, &R::batch_size);
    v(Field{"warmup_batches"}, &R::warmup_batches);
    v(Field{"measured_batches"}, &R::measured_batches);
    v(Field{"start_unix_s"}, &R::start_unix_s);
    v(Field{"end_unix_s"}, &R::end_unix_s);
    v(Field{"throughput_sps"}, &R::throughput_sps);
    v(Field{"duration_s"}, &R::duration_s);
    v(Field{"latency_p50_s"}, &R::latency_p50_s);
    v(Field{"latency_p90_s"}, &R::latency_p90_s);
    v(Field{"latency_p99_s"}, &R::latency_p99_s);
    v(Field{"max_abs_error"}, &R::max_abs_error);
    v(Field{"failed_rank"}, &R::failed_rank);
    v(Field{"repetitions"}, &R::repetitions);
    v(Field{"throughput_median_sps"}, &R::throughput_median_sps);
    v(Field{"throughput_mean_sps"}, &R::throughput_mean_sps);
    v(Field{"throughput_std_sps"}, &R::throughput_std_sps);
    v(Field{"throughput_ci95_low_sps"}, &R::throughput_ci95_low_sps);
    v(Field{"throughput_ci95_high_sps"}, &R::throughput_ci95_high_sps);
    v(Field{"validity"}, &R::validity);
    // Added after the first files were written (older files keep the defaults).
    v(Field{"time_model", "time_model"}, &R::time_model);
    v(Field{"precision", "precision"}, &R::precision);
    v(Field{"element_bytes", "precision"}, &R::element_bytes);
    v(Field{"dilation", "time_model"}, &R::dilation);
    v(Field{"overruns", "time_model"}, &R::overruns);
    v(Field{"cpu_wait_fraction", "cpu_wait_fraction"}, &R::cpu_wait_fraction);
    v(Field{"energy_j", "time_model"}, &R::energy_j);
    v(Field{"energy_per_sample_j", "time_model"}, &R::energy_per_sample_j);
    v(Field{"energy_source", "time_model"}, &R::energy_source);
    v(Field{"latency_s"}, &R::latency_s);
    v(Field{"cut_names"}, &R::cut_names);
    v(Field{"cut_bytes_per_sample"}, &R::cut_bytes_per_sample);
    v(Field{"cut_wire_bytes_per_sample"}, &R::cut_wire_bytes_per_sample);
    v(Field{"cut_requested_rate"}, &R::cut_requested_rate);
    v(Field{"cut_effective_rate"}, &R::cut_effective_rate);
    v(Field{"repetition_throughput_sps"}, &R::repetition_throughput_sps);
    v(Field{"repetition_duration_s"}, &R::repetition_duration_s);
    v(Field{"invalid_reasons"}, &R::invalid_reasons);
  }
};

/// Where and how the file was made.
struct Provenance {
  std::string quilt_version;
  std::string git_commit;
  bool git_dirty = false;
  std::string torch_version, mpi_version, hdf5_version, xrt_version, compiler;
  std::string command_line;
  std::vector<std::string> hosts;  ///< host name per rank
  std::string experiment_path;
  std::string experiment_text;      ///< the experiment file as written
  std::string resolved_experiment;  ///< every run's resolved parameters, as YAML
  std::string scale;                ///< the scale the file was run at, empty when none
  std::vector<std::string> boards;  ///< board description per rank
  std::string created_utc;          ///< ISO 8601, when the file was first written
  std::string start_utc, end_utc;   ///< this invocation's start and last write
};

template <>
struct FieldList<Provenance> {
  template <class V>
  static void visit(V&& v) {
    using P = Provenance;
    v(Field{"quilt_version"}, &P::quilt_version);
    v(Field{"git_commit"}, &P::git_commit);
    v(Field{"git_dirty"}, &P::git_dirty);
    v(Field{"torch_version"}, &P::torch_version);
    v(Field{"mpi_version"}, &P::mpi_version);
    v(Field{"hdf5_version"}, &P::hdf5_version);
    v(Field{"xrt_version"}, &P::xrt_version);
    v(Field{"compiler"}, &P::compiler);
    v(Field{"command_line"}, &P::command_line);
    v(Field{"experiment_path"}, &P::experiment_path);
    v(Field{"created_utc"}, &P::created_utc);
    v(Field{"start_utc"}, &P::start_utc);
    v(Field{"end_utc"}, &P::end_utc);
    v(Field{"scale"}, &P::scale);
    v(Field{"hosts"}, &P::hosts);
    v(Field{"boards"}, &P::boards);
    v(Field{"experiment_text", nullptr, true}, &P::experiment_text);
    v(Field{"resolved_experiment", nullptr, true}, &P::resolved_experiment);
  }
};

/// A whole result file.
struct ExperimentRecord {
  int schema_version = kSchemaVersion;
  std::string name;
  std::string experiment_hash;
  Provenance provenance;
  std::vector<RunRecord> runs;
};

}  // namespace quilt::results
