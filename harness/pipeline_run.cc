#include "harness/pipeline_run.h"

#include "backends/inference.h"
#include "backends/precision.h"
#include "backends/registry.h"
#include "common/shape.h"
#include "harness/clock.h"
#include "harness/cpu_wait.h"
#include "harness/metrics.h"
#include "harness/mpi.h"
#include "harness/pack.h"
#include "harness/pipeline.h"
#include "harness/planning.h"
#include "harness/time_model_strategy.h"
#include "harness/trace.h"
#include "models/quilt_model.h"
#include "models/state_dict.h"
#include "models/zoo.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <utility>

namespace quilt::harness {

namespace {

// Whether a weights file holds autoencoders too (a QuiltModel's state_dict, as training runs
// save it: keys "ae_<cut>..."): then it loads into the QuiltModel, not into the base model.
bool has_autoencoder_weights(const std::string& path) {
  for (const auto& [key, tensor] : models::read_state_dict(path))
    if (key.rfind("ae_", 0) == 0) return true;
  return false;
}

std::string stage_units(const models::QuiltModelImpl& qm, size_t k) {
  const auto& spec = qm.stage(k);
  const auto& units = qm.base()->units();
  std::string s = units.at(spec.first_unit).name;
  if (spec.end_unit - spec.first_unit > 1) s += ".." + units.at(spec.end_unit - 1).name;
  if (k > 0 && qm.has_autoencoder(k - 1)) s = "decoder+" + s;
  if (k + 1 < qm.num_stages() && qm.has_autoencoder(k)) s += "+encoder";
  return s;
}

// Seeded with data.seed + seed_offset: the measured batches use offset 0, int8 calibration
// kCalibrationSeedOffset (other batches of the same data).
std::vector<at::Tensor> make_inputs(const RunConfig& run, const models::Shape& input_shape,
                                    int64_t count, uint64_t seed_offset = 0) {
  torch::manual_seed(run.data.seed + seed_offset);
  std::vector<int64_t> shape = {run.measurement.batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  std::vector<at::Tensor> pool;
  for (int64_t i = 0; i < count; ++i) pool.push_back(torch::randn(shape));
  return pool;
}

// Every stored field of the stage (results::FieldList), then the batch end times.
std::string pack_stage(const results::StageRecord& s, const std::vector<double>& end_s) {
  Packer p;
  results::for_each_field(s, [&](const results::Field&, const auto& value) { p.put(value); });
  p.put(end_s);
  return p.bytes();
}

results::StageRecord unpack_stage(const std::string& bytes, std::vector<double>* end_s) {
  results::StageRecord s;
  Unpacker u(bytes);
  results::for_each_field(s, [&](const results::Field&, auto& value) { u.get(value); });
  u.get(*end_s);
  return s;
}

// Input pool size: two distinct batches, so a stage cannot get away with caching its result.
constexpr int64_t kInputPool = 2;
constexpr uint64_t kCalibrationSeedOffset = 0x5eed;

// "rank 1: reason; rank 2: reason" from one string per rank; the first failing rank.
std::string join_errors(const std::vector<std::string>& errors, int64_t* first_rank) {
  std::string out;
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    if (out.empty()) *first_rank = static_cast<int64_t>(r);
    out += fmt::format("{}rank {}: {}", out.empty() ? "" : "; ", r, errors[r]);
  }
  return out;
}

// Consecutive runs of a sweep often share the base model (only R, cuts or boards change): it is
// built once. Pipeline runs never change its weights.
class BaseModelCache {
 public:
  // The base model of `run`, and whether its weights file holds autoencoders too (then it
  // loads into the QuiltModel).
  models::Model get(const RunConfig& run, bool* quilt_weights) {
    const std::string key =
        fmt::format("{}|{}|{}|{}|{}|{}", run.model.arch, fmt::join(run.model.input, "x"),
                    run.model.classes, run.model.weights, run.model.seed, run.model.width);
    if (key_ != key) {
      // The weights file is read once here to see what it holds, not once per run.
      quilt_weights_ = run.model.weights != "random" && has_autoencoder_weights(run.model.weights);
      base_ = build_base(run.model, !quilt_weights_);
      key_ = key;
    }
    *quilt_weights = quilt_weights_;
    return base_;
  }

 private:
  models::Model base_{nullptr};
  std::string key_;
  bool quilt_weights_ = false;  // base_'s weights file holds autoencoders too
};

// What every rank needs for one pipeline run, beyond the run itself.
struct RunContext {
  const Experiment& experiment;
  const RunOptions& options;
  MPI_Comm comm;
  int me = 0, n = 1;
  bool root = false;
  Sweep& sweep;
  BaseModelCache& models;
  const backends::BoardRegistry& registry;
};

// A run set up on this rank: its model, plan and loaded board.
struct PreparedRun {
  models::QuiltModel qm{nullptr};
  RunPlan plan;
  std::vector<at::Tensor> calibration;  // int8: model inputs of the calibration batches
  std::unique_ptr<backends::Board> board;
};

// This rank's board for stage `me` of `qm` (int8: calibrated on the experiment's data).
std::unique_ptr<backends::Board> load_board(const RunConfig& run, const RunContext& ctx,
                                            PreparedRun& prep) {
  backends::StageAssignment assignment{prep.qm.ptr(), static_cast<size_t>(ctx.me),
                                       run.measurement.batch};
  assignment.xclbin = run.boards.xclbin;
  assignment.precision = prep.plan.precision;
  if (assignment.precision == backends::Precision::kInt8) {
    // The same batches on every rank (the experiment's data seed), carried through the float32
    // stages before this one: each cut gets one quantization on both sides.
    prep.calibration = make_inputs(run, prep.qm->base()->input_shape(),
                                   run.boards.calibration_batches, kCalibrationSeedOffset);
    assignment.calibration = backends::stage_calibration_inputs(*prep.qm, ctx.me, prep.calibration);
  }
  if (ctx.root && assignment.precision == backends::Precision::kBf16 &&
      !backends::cpu_has_native_bf16())
    fmt::print(stderr,
               "quilt: warning: run {}: boards.precision bf16 on a CPU without native bf16 "
               "(no AVX-512 BF16 or AMX): oneDNN emulates it, so the emulator will be slower "
               "here; the results stay correct\n",
               run.id);
  if (!run.boards.devices.empty()) assignment.device = run.boards.devices.at(ctx.me);
  return backends::make_loaded_board(
      ctx.registry, to_string(run.boards.backend), assignment,
      run.boards.fallback == Fallback::kEmulator ? to_string(Backend::kEmulator) : "");
}

// Set-up on this rank: model, plan, board. Returns why it failed, or empty.
std::string prepare_run(const RunConfig& run, RunContext& ctx, PreparedRun& prep,
                        std::map<std::string, std::string>* params) {
  at::set_num_threads(run.boards.threads);
  try {
    torch::NoGradGuard no_grad;
    const models::AutoencoderOptions ae = autoencoder_options(run.autoencoder);
    bool quilt_weights = false;
    models::Model base = ctx.models.get(run, &quilt_weights);
    record_resolved_model(params, base->input_shape(), base->num_classes());
    // The autoencoders' initial weights depend on the seed only, not on the sweep's order.
    torch::manual_seed(run.model.seed + 0x9e3779b97f4a7c15ULL);
    prep.plan = plan_run(run, base, ctx.experiment.path);
    prep.qm = models::QuiltModel(base, prep.plan.cuts, ae);
    // Weights saved by a training run (base and autoencoders): the same cuts and rate must have
    // made them, or loading names the key that does not fit.
    if (quilt_weights) models::load_state_dict(*prep.qm, run.model.weights);
    prep.qm->eval();
    prep.board = load_board(run, ctx, prep);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// A pipeline run's record before it runs.
results::RunRecord new_record(const RunConfig& run) {
  results::RunRecord rec;
  rec.id = run.id;
  rec.params = run.params;
  rec.batch_size = run.measurement.batch;
  rec.warmup_batches = run.measurement.warmup_batches;
  rec.measured_batches = run.measurement.batches;
  rec.repetitions = run.measurement.repetitions;
  rec.start_unix_s = unix_now_s();
  return rec;
}

// Rank 0: the run failed on the ranks whose `errors` are not empty.
void report_failed(const RunConfig& run, RunContext& ctx, results::RunRecord& rec,
                   const std::vector<std::string>& errors) {
  rec.status = "failed";
  rec.failure = join_errors(errors, &rec.failed_rank);
  rec.end_unix_s = unix_now_s();
  ctx.sweep.finished(run, rec);
}

// SIGTERM (a batch system's time limit): the run in flight is recorded as interrupted and the
// sweep stops; --resume runs it again. Checked once the boards are loaded (set-up can take
// seconds, and a launcher that forwards the signal kills soon after) and after each repetition.
// Collective; true when interrupted.
bool interrupted_after(int64_t reps_done, const RunConfig& run, RunContext& ctx,
                       results::RunRecord& rec) {
  const int sig = mpi::any_interrupted(ctx.comm);
  if (sig == 0) return false;
  if (ctx.root) {
    rec.status = "interrupted";
    rec.failure = fmt::format("interrupted by signal {} ({}) after {} of {} repetition(s)", sig,
                              strsignal(sig), reps_done, run.measurement.repetitions);
    rec.end_unix_s = unix_now_s();
    ctx.sweep.finished(run, rec);
  }
  ctx.sweep.outcome().interrupt_signal = sig;
  return true;
}

// This rank's part of a pipeline run: shapes, inputs, the outputs kept for the check.
struct StageIo {
  size_t k = 0;                              // this rank's stage
  std::vector<int64_t> in_shape, out_shape;  // [batch, ...]
  bool last = false;
  bool check = false;               // the last rank compares outputs with the single-process model
  std::vector<at::Tensor> pool;     // rank 0, and the last rank when checking
  std::vector<at::Tensor> checked;  // last rank: outputs of batches that used pool[0]
};

StageIo stage_io(const RunConfig& run, const PreparedRun& prep, const RunContext& ctx) {
  StageIo io;
  io.k = static_cast<size_t>(ctx.me);
  const auto& spec = prep.qm->stage(io.k);
  io.in_shape = {run.measurement.batch};
  io.out_shape = {run.measurement.batch};
  io.in_shape.insert(io.in_shape.end(), spec.in_shape.begin(), spec.in_shape.end());
  io.out_shape.insert(io.out_shape.end(), spec.out_shape.begin(), spec.out_shape.end());
  io.last = ctx.me == ctx.n - 1;
  io.check = run.measurement.check_outputs && run.boards.backend != Backend::kNull;
  if (ctx.root || (io.last && io.check))
    io.pool = make_inputs(run, prep.qm->base()->input_shape(), kInputPool);
  return io;
}

// How the repetitions ended on this rank (alike on every rank).
enum class RepetitionsEnd { kCompleted, kFailed, kInterrupted };

// What the repetitions measured on this rank, in board time.
struct Repetitions {
  RepetitionsEnd end = RepetitionsEnd::kCompleted;
  StageTiming all;                           // repetitions one after another
  std::vector<std::vector<double>> start_s;  // per repetition
  std::vector<std::vector<double>> end_s;    // per repetition
  double trace_origin_s = 0;
  // Load (measured, dilated): run-queue delay of this rank's threads over the repetitions.
  double cpu_wait_s = 0, cpu_wall_s = 0;
  bool cpu_wait_known = false;
};

void accumulate(Repetitions& reps, const StageTiming& t, int64_t rep) {
  auto append = [](std::vector<double>& to, const std::vector<double>& from) {
    to.insert(to.end(), from.begin(), from.end());
  };
  StageTiming& all = reps.all;
  append(all.compute_s, t.compute_s);
  append(all.recv_wait_s, t.recv_wait_s);
  append(all.send_wait_s, t.send_wait_s);
  append(all.h2d_s, t.h2d_s);
  append(all.d2h_s, t.d2h_s);
  all.overruns += t.overruns;
  // Board-measured energy: summed over repetitions, unavailable if any lacks it.
  all.board_energy_j = rep == 0 ? t.board_energy_j
                       : (all.board_energy_j < 0 || t.board_energy_j < 0)
                           ? -1
                           : all.board_energy_j + t.board_energy_j;
  all.bytes_sent += t.bytes_sent;
  all.bytes_received += t.bytes_received;
  reps.start_s.push_back(t.start_s);
  reps.end_s.push_back(t.end_s);
}

// The measured repetitions under `time_model` (its before() already done).
Repetitions run_repetitions(const RunConfig& run, RunContext& ctx, results::RunRecord& rec,
                            TimeModelStrategy& time_model, PipelineOptions& popts,
                            const PipelineFn& run_once) {
  Repetitions reps;
  const bool real_time = time_model.real_time();
  reps.cpu_wait_known = real_time;
  for (int64_t rep = 0; rep < run.measurement.repetitions; ++rep) {
    StageTiming t;
    popts.trace_repetition = static_cast<int32_t>(rep);
    popts.trace_batch_offset = rep * run.measurement.batches;
    const double wait0 = real_time ? cpu_wait_s() : -1, wall0 = unix_now_s();
    if (time_model.runs_pipeline(rep)) t = run_once(popts);
    if (real_time) {
      const double wait1 = cpu_wait_s();
      reps.cpu_wait_known = reps.cpu_wait_known && wait0 >= 0 && wait1 >= 0;
      // A thread that ended during the window takes its share with it: never below 0.
      reps.cpu_wait_s += std::max(0.0, wait1 - wait0);
      reps.cpu_wall_s += unix_now_s() - wall0;
    }
    if (rep == 0 && real_time) reps.trace_origin_s = t.origin_s;
    auto errs = mpi::gather_strings(t.error, 0, ctx.comm);
    if (!mpi::all_ok(t.error.empty(), ctx.comm)) {
      if (ctx.root) report_failed(run, ctx, rec, errs);
      reps.end = RepetitionsEnd::kFailed;
      return reps;
    }
    if (interrupted_after(rep + 1, run, ctx, rec)) {
      reps.end = RepetitionsEnd::kInterrupted;
      return reps;
    }
    time_model.to_board_time(t);
    accumulate(reps, t, rep);
  }
  return reps;
}

// Last rank: the largest absolute and relative difference between the pipeline's outputs and
// the single-process model's (-1: not checked; NaN: not finite).
std::pair<double, double> output_errors(PreparedRun& prep, const StageIo& io) {
  double max_abs = -1, max_rel = -1;
  if (!io.last || !io.check) return {max_abs, max_rel};
  torch::NoGradGuard no_grad;
  // bf16 / int8: the reference is the same model quantized the same way in one process
  // (backends::run_in_precision), not float32, so the check asks for the same numbers.
  at::Tensor ref = prep.plan.precision == backends::Precision::kFp32
                       ? prep.qm->forward(io.pool[0])
                       : backends::run_in_precision(*prep.qm, prep.plan.precision, prep.calibration,
                                                    {io.pool[0]})[0];
  const double ref_max = ref.abs().max().item<double>();
  const double scale = std::max(ref_max, 1e-12);
  max_abs = 0;
  // std::max(x, NaN) is x: a NaN difference must not vanish into an error of 0.
  for (const auto& out : io.checked) {
    const double d = (out - ref).abs().max().item<double>();
    if (!std::isfinite(d) || !std::isfinite(ref_max)) {
      max_abs = std::numeric_limits<double>::quiet_NaN();
      break;
    }
    max_abs = std::max(max_abs, d);
  }
  max_rel = max_abs / scale;
  return {max_abs, max_rel};
}

// The per-batch series of a stage record, taken over from the rank's timing as they are.
using Series = std::vector<double>;
constexpr std::pair<Series results::StageRecord::*, Series StageTiming::*> kStageSeries[] = {
    {&results::StageRecord::compute_s, &StageTiming::compute_s},
    {&results::StageRecord::recv_wait_s, &StageTiming::recv_wait_s},
    {&results::StageRecord::send_wait_s, &StageTiming::send_wait_s},
    {&results::StageRecord::h2d_s, &StageTiming::h2d_s},
    {&results::StageRecord::d2h_s, &StageTiming::d2h_s}};

// This rank's stage record (what it measured, what the cost model predicted).
results::StageRecord stage_record(const PreparedRun& prep, const StageIo& io,
                                  const Repetitions& reps, const TimeModelStrategy& time_model,
                                  int me) {
  const auto& spec = prep.qm->stage(io.k);
  const StageTiming& all = reps.all;
  results::StageRecord stage;
  stage.rank = me;
  stage.host = mpi::processor_name();
  stage.board = prep.board->backend();
  stage.board_description = prep.board->description();
  stage.units = stage_units(*prep.qm, io.k);
  stage.in_shape = spec.in_shape;
  stage.out_shape = spec.out_shape;
  stage.bytes_sent = all.bytes_sent;
  stage.bytes_received = all.bytes_received;
  for (const auto& [to, from] : kStageSeries) stage.*to = all.*from;
  stage.energy_j = time_model.wall_clock() ? all.board_energy_j : -1;
  stage.predicted_compute_s = prep.plan.stages.at(io.k).compute_s;
  stage.predicted_comm_s = prep.plan.stages.at(io.k).comm_s;
  stage.predicted_exec_s = prep.plan.stages.at(io.k).exec_s;
  return stage;
}

// What rank 0 gathers from every rank once the repetitions completed.
struct Gathered {
  std::vector<std::string> stages;  // packed StageRecord + end times, one per rank
  int64_t overruns = 0;             // over all ranks
  double cpu_wait_fraction = -1;    // the busiest rank's; -1 when some rank could not tell
  int cpu_wait_rank = 0;
  double max_abs_error = -1, max_rel_error = -1;  // the last rank's output check, on every rank
};

// Collective over every rank (the trace too, into rec on rank 0).
Gathered gather_run(const PreparedRun& prep, const StageIo& io, const Repetitions& reps,
                    const TimeModelStrategy& time_model, const TraceRecorder& trace,
                    std::pair<double, double> errors, RunContext& ctx, results::RunRecord& rec) {
  Gathered g;
  std::vector<double> ends;
  for (const auto& e : reps.end_s) ends.insert(ends.end(), e.begin(), e.end());
  g.stages = mpi::gather_strings(pack_stage(stage_record(prep, io, reps, time_model, ctx.me), ends),
                                 0, ctx.comm);
  if (trace.enabled())
    rec.trace = gather_trace(trace, reps.trace_origin_s, time_model.dilation(),
                             time_model.wall_clock() ? "wall" : "board", ctx.comm);
  g.overruns = reps.all.overruns;
  mpi::check(MPI_Allreduce(MPI_IN_PLACE, &g.overruns, 1, MPI_INT64_T, MPI_SUM, ctx.comm),
             "MPI_Allreduce(overruns)");
  // The busiest rank's share of waiting for a CPU; -1 on every rank when one could not tell.
  struct {
    double fraction;
    int rank;
  } cpu_wait{reps.cpu_wait_known && reps.cpu_wall_s > 0 ? reps.cpu_wait_s / reps.cpu_wall_s : -1.0,
             ctx.me};
  int known = cpu_wait.fraction >= 0 ? 1 : 0;
  mpi::check(MPI_Allreduce(MPI_IN_PLACE, &known, 1, MPI_INT, MPI_MIN, ctx.comm),
             "MPI_Allreduce(cpu_wait)");
  mpi::check(MPI_Allreduce(MPI_IN_PLACE, &cpu_wait, 1, MPI_DOUBLE_INT, MPI_MAXLOC, ctx.comm),
             "MPI_Allreduce(cpu_wait)");
  g.cpu_wait_fraction = known == 0 ? -1 : cpu_wait.fraction;
  g.cpu_wait_rank = cpu_wait.rank;
  double errs[2] = {errors.first, errors.second};
  mpi::check(MPI_Bcast(errs, 2, MPI_DOUBLE, ctx.n - 1, ctx.comm), "MPI_Bcast");
  g.max_abs_error = errs[0];
  g.max_rel_error = errs[1];
  return g;
}

// Rank 0: the run's record from what was gathered: stages, metrics, validity, energy, cuts,
// the output check and the references.
void finish_record(const RunConfig& run, const PreparedRun& prep, const Repetitions& reps,
                   const TimeModelStrategy& time_model, const Gathered& g, const RunContext& ctx,
                   results::RunRecord& rec) {
  RunMeasurements m;
  for (const auto& bytes : g.stages) {
    std::vector<double> e;
    rec.stages.push_back(unpack_stage(bytes, &e));
    if (!e.empty()) m.end_s = e;
  }
  m.start_s = reps.start_s;
  m.time_model = time_model.name();
  m.real_time = time_model.real_time();
  m.dilation = time_model.dilation();
  m.overruns = g.overruns;
  m.cpu_wait_fraction = g.cpu_wait_fraction;
  m.cpu_wait_rank = g.cpu_wait_rank;
  aggregate_timing(rec, run.measurement, m);
  rec.precision = backends::precision_name(prep.plan.precision);
  rec.element_bytes = prep.plan.element_bytes;
  fill_energy(rec,
              {prep.plan.power_busy_w, prep.plan.power_idle_w, prep.plan.link_energy_j_per_byte});
  rec.validity = rec.invalid_reasons.empty() ? "valid" : "invalid";
  for (const auto& t : prep.qm->traffic()) {
    rec.cut_names.push_back(t.cut);
    // The model counts float32 bytes; the wire carries element_bytes per element.
    rec.cut_bytes_per_sample.push_back(t.bytes_per_sample / 4 * prep.plan.element_bytes);
    rec.cut_wire_bytes_per_sample.push_back(t.wire_bytes_per_sample / 4 * prep.plan.element_bytes);
    rec.cut_requested_rate.push_back(t.requested_rate);
    rec.cut_effective_rate.push_back(t.effective_rate);
  }
  if (prep.plan.searched) {
    std::string chosen;
    for (const auto& c : prep.plan.cuts) chosen += (chosen.empty() ? "" : ", ") + c;
    rec.params["partition.chosen_cuts"] = "[" + chosen + "]";
  }
  apply_output_check(rec, g.max_abs_error, g.max_rel_error, run.measurement.tolerance, ctx.n - 1);
  check_references(rec, run.references);
  rec.end_unix_s = unix_now_s();
}

// The time model's view of this rank's stage.
StageContext stage_context(const PreparedRun& prep, const StageIo& io, const RunContext& ctx) {
  StageContext s;
  // The board's modeled times for one batch (dilated, modeled): the cost model's prediction.
  for (const auto& p : prep.plan.stages)
    s.board_times.push_back({p.h2d_s, p.compute_s, p.d2h_s, p.mpi_s});
  s.stage = ctx.me;
  s.stages = ctx.n;
  s.element_bytes = prep.plan.element_bytes;
  s.in_numel = common::numel(io.in_shape);
  s.out_numel = common::numel(io.out_shape);
  return s;
}

// One pipeline run (training.mode none) on every rank: set-up, repetitions under the time
// model, output check, gathering, and on rank 0 its record reported to the sinks. Returns true
// when the sweep must stop (interrupted, or fail_fast after a failure).
bool run_pipeline_run(const RunConfig& run, RunContext& ctx) {
  results::RunRecord rec = new_record(run);
  PreparedRun prep;
  // Set-up on every rank; a failure anywhere fails the run everywhere, without a hang.
  const std::string error = prepare_run(run, ctx, prep, &rec.params);
  auto errors = mpi::gather_strings(error, 0, ctx.comm);
  if (!mpi::all_ok(error.empty(), ctx.comm)) {
    if (ctx.root) report_failed(run, ctx, rec, errors);
    return ctx.options.fail_fast;
  }
  if (interrupted_after(0, run, ctx, rec)) return true;
  auto boards = mpi::gather_strings(prep.board->description(), 0, ctx.comm);
  if (ctx.root) ctx.sweep.record().provenance.boards = boards;

  StageIo io = stage_io(run, prep, ctx);
  auto on_output = [&](int64_t i, const at::Tensor& out) {
    if (io.check && i % kInputPool == 0 && io.checked.size() < 4) io.checked.push_back(out.clone());
  };
  PipelineOptions popts;
  popts.warmup_batches = run.measurement.warmup_batches;
  popts.batches = run.measurement.batches;
  switch (prep.plan.precision) {
    case backends::Precision::kFp32:
      break;  // float32, PipelineOptions' default
    case backends::Precision::kBf16:
      popts.wire_dtype = at::kBFloat16;
      break;
    case backends::Precision::kInt8:
      popts.wire_dtype = at::kByte;
      break;
  }
  const PipelineFn run_once = [&](const PipelineOptions& o) {
    try {
      return run_pipeline(*prep.board, io.in_shape, io.out_shape,
                          ctx.root ? io.pool : std::vector<at::Tensor>{}, on_output, o, ctx.comm);
    } catch (const std::exception& e) {
      // An MPI failure: peers may be blocked in MPI calls waiting for this rank, so the only way
      // out is to abort the job. Every finished run is already safe in the result file.
      std::fprintf(stderr, "quilt: rank %d: run %s: MPI failure in the pipeline: %s\n", ctx.me,
                   run.id.c_str(), e.what());
      std::fflush(stderr);
      MPI_Abort(ctx.comm, 3);
    }
    return StageTiming{};
  };
  auto time_model = make_time_model(run.boards.time_model, stage_context(prep, io, ctx));
  time_model->before(popts, run_once, ctx.comm);
  // The timeline (measurement.trace): the measured pipeline, or the modeled schedule.
  const auto& ms = run.measurement;
  TraceRecorder trace(ms.trace_batches(time_model->traced_repetitions(ms.repetitions) *
                                       (ms.warmup_batches + ms.batches)),
                      7);
  time_model->attach_trace(trace, popts);
  Repetitions reps = run_repetitions(run, ctx, rec, *time_model, popts, run_once);
  if (reps.end == RepetitionsEnd::kInterrupted) return true;
  if (reps.end == RepetitionsEnd::kFailed) return ctx.options.fail_fast;

  Gathered g = gather_run(prep, io, reps, *time_model, trace, output_errors(prep, io), ctx, rec);
  if (!ctx.root) return ctx.options.fail_fast && output_mismatch(g.max_rel_error, ms.tolerance);
  finish_record(run, prep, reps, *time_model, g, ctx, rec);
  ctx.sweep.finished(run, rec);
  return ctx.options.fail_fast && rec.status != "ok";
}

}  // namespace

struct PipelineRunner::State {
  State(const Experiment& experiment, const RunOptions& options, Sweep& sweep, MPI_Comm comm)
      : ctx{experiment,           options, comm,   mpi::rank(comm), mpi::size(comm),
            mpi::rank(comm) == 0, sweep,   models, registry} {
    backends::register_builtin_boards(registry);
  }
  backends::BoardRegistry registry;
  BaseModelCache models;
  RunContext ctx;
};

PipelineRunner::PipelineRunner(const Experiment& experiment, const RunOptions& options,
                               Sweep& sweep, MPI_Comm comm)
    : state_(std::make_unique<State>(experiment, options, sweep, comm)) {}

PipelineRunner::~PipelineRunner() = default;

bool PipelineRunner::run(const RunConfig& run) { return run_pipeline_run(run, state_->ctx); }

}  // namespace quilt::harness
