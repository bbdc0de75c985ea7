#include "harness/runner.h"

#include "backends/registry.h"
#include "harness/metrics.h"
#include "harness/mpi.h"
#include "harness/pack.h"
#include "harness/pipeline.h"
#include "harness/provenance.h"
#include "models/quilt_model.h"
#include "models/zoo.h"
#include "results/writer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>

namespace quilt::harness {

namespace {

double unix_now_s() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

models::Model build_base(const ModelConfig& m) {
  torch::manual_seed(m.seed);
  models::ModelOptions opts;
  opts.input_shape = m.input;
  opts.num_classes = m.classes;
  models::Model model = models::make_model(m.arch, opts);
  if (m.weights != "random") models::load_state_dict(*model, m.weights);
  return model;
}

std::string stage_units(const models::QuiltModelImpl& qm, size_t k) {
  const auto& spec = qm.stage(k);
  const auto& units = qm.base()->units();
  std::string s = units.at(spec.first_unit).name;
  if (spec.end_unit - spec.first_unit > 1) s += ".." + units.at(spec.end_unit - 1).name;
  if (k > 0 && qm.autoencoder(k - 1)) s = "decoder+" + s;
  if (k + 1 < qm.num_stages() && qm.autoencoder(k)) s += "+encoder";
  return s;
}

std::vector<at::Tensor> make_inputs(const RunConfig& run, const models::Shape& input_shape,
                                    int64_t count) {
  torch::manual_seed(run.data.seed);
  std::vector<int64_t> shape = {run.measurement.batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  std::vector<at::Tensor> pool;
  for (int64_t i = 0; i < count; ++i) pool.push_back(torch::randn(shape));
  return pool;
}

std::string pack_stage(const results::StageRecord& s, const std::vector<double>& end_s) {
  Packer p;
  p.put(s.rank);
  p.put(s.host);
  p.put(s.board);
  p.put(s.board_description);
  p.put(s.units);
  p.put(s.in_shape);
  p.put(s.out_shape);
  p.put(s.bytes_sent);
  p.put(s.bytes_received);
  p.put(s.compute_s);
  p.put(s.recv_wait_s);
  p.put(s.send_wait_s);
  p.put(end_s);
  return p.bytes();
}

results::StageRecord unpack_stage(const std::string& bytes, std::vector<double>* end_s) {
  results::StageRecord s;
  Unpacker u(bytes);
  u.get(s.rank);
  u.get(s.host);
  u.get(s.board);
  u.get(s.board_description);
  u.get(s.units);
  u.get(s.in_shape);
  u.get(s.out_shape);
  u.get(s.bytes_sent);
  u.get(s.bytes_received);
  u.get(s.compute_s);
  u.get(s.recv_wait_s);
  u.get(s.send_wait_s);
  u.get(*end_s);
  return s;
}

// Input pool size: two distinct batches, so a stage cannot get away with caching its result.
constexpr int64_t kInputPool = 2;

}  // namespace

void check_experiment(const Experiment& experiment, int ranks) {
  std::map<std::string, models::Model> bases;
  for (const auto& run : experiment.runs) {
    auto where = [&](const std::string& key, const std::string& message) {
      std::string swept;
      for (const auto& [k, v] : run.swept)
        swept += fmt::format("{}{}={}", swept.empty() ? "" : ", ", k, v);
      return ConfigError(
          experiment.path, 0, 0, key,
          swept.empty() ? message : fmt::format("{} (in the run with {})", message, swept));
    };
    if (ranks > 0 && run.boards.count != ranks) {
      throw where("boards.count",
                  fmt::format("the experiment needs {} boards, one MPI rank each, but {} rank(s) "
                              "were started; run it with `mpirun -n {} quilt run {}`",
                              run.boards.count, ranks, run.boards.count, experiment.path));
    }
    const auto names = models::model_names();
    if (std::find(names.begin(), names.end(), run.model.arch) == names.end()) {
      std::string valid;
      for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
      throw where("model.arch",
                  fmt::format("unknown model `{}`; valid models: {}", run.model.arch, valid));
    }
    if (run.model.weights != "random" && !std::filesystem::exists(run.model.weights))
      throw where("model.weights",
                  fmt::format("weights file `{}` does not exist (give a state_dict saved with "
                              "torch.save, or `random`)",
                              run.model.weights));
    std::string key =
        run.params.at("model.arch") + run.params.at("model.input") + run.params.at("model.classes");
    try {
      if (!bases.count(key)) {
        torch::NoGradGuard no_grad;
        models::ModelOptions opts;
        opts.input_shape = run.model.input;
        opts.num_classes = run.model.classes;
        bases.emplace(key, models::make_model(run.model.arch, opts));
      }
      models::AutoencoderOptions ae{run.autoencoder.rate, run.autoencoder.kernel};
      models::QuiltModel qm(bases.at(key), run.partition.cuts, ae);
    } catch (const models::ModelError& e) {
      throw where("partition.cuts", e.what());
    }
  }
}

results::ExperimentRecord run_experiment(const Experiment& experiment, const RunOptions& options,
                                         MPI_Comm comm) {
  const int me = mpi::rank(comm), n = mpi::size(comm);
  const bool root = me == 0;
  const std::string output = options.output.empty() ? experiment.output : options.output;

  results::ExperimentRecord record;
  record.name = experiment.name;
  record.experiment_hash = experiment.hash;
  record.provenance = collect_provenance(options.command_line, comm);
  record.provenance.experiment_path = experiment.path;
  record.provenance.experiment_text = experiment.text;
  if (root && !output.empty()) {
    auto dir = std::filesystem::path(output).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir);
  }

  backends::BoardRegistry registry;
  backends::register_builtin_boards(registry);

  for (size_t r = 0; r < experiment.runs.size(); ++r) {
    const RunConfig& run = experiment.runs[r];
    results::RunRecord rec;
    rec.id = run.id;
    rec.params = run.params;
    rec.batch_size = run.measurement.batch;
    rec.warmup_batches = run.measurement.warmup_batches;
    rec.measured_batches = run.measurement.batches;
    rec.start_unix_s = unix_now_s();
    if (root && options.print) {
      std::string swept;
      for (const auto& [k, v] : run.swept) swept += fmt::format(" {}={}", k, v);
      fmt::print("[{}/{}] run {}{}\n", r + 1, experiment.runs.size(), run.id, swept);
      std::fflush(stdout);
    }

    // Set-up on every rank; a failure anywhere fails the run everywhere, without a hang.
    at::set_num_threads(run.boards.threads);
    models::QuiltModel qm{nullptr};
    std::unique_ptr<backends::Board> board;
    std::string error;
    try {
      torch::NoGradGuard no_grad;
      models::AutoencoderOptions ae{run.autoencoder.rate, run.autoencoder.kernel};
      qm = models::QuiltModel(build_base(run.model), run.partition.cuts, ae);
      qm->eval();
      board = registry.make(run.boards.backend);
      board->load({qm.ptr(), static_cast<size_t>(me), run.measurement.batch});
    } catch (const std::exception& e) {
      error = fmt::format("rank {}: {}", me, e.what());
    }
    auto errors = mpi::gather_strings(error, 0, comm);
    if (!mpi::all_ok(error.empty(), comm)) {
      if (root) {
        rec.status = "failed";
        for (const auto& e : errors)
          if (!e.empty()) rec.failure += (rec.failure.empty() ? "" : "; ") + e;
        rec.end_unix_s = unix_now_s();
        record.runs.push_back(rec);
        if (!output.empty()) results::write_experiment(output, record);
        if (options.print) fmt::print("  failed: {}\n", rec.failure);
      }
      continue;
    }

    const size_t k = static_cast<size_t>(me);
    const auto& spec = qm->stage(k);
    std::vector<int64_t> in_shape = {run.measurement.batch};
    in_shape.insert(in_shape.end(), spec.in_shape.begin(), spec.in_shape.end());
    const bool last = me == n - 1;
    const bool check = run.measurement.check_outputs && run.boards.backend != "null";
    std::vector<at::Tensor> pool;
    if (root || (last && check)) pool = make_inputs(run, qm->base()->input_shape(), kInputPool);
    std::vector<at::Tensor> checked;  // last rank: outputs of batches that used pool[0]
    auto on_output = [&](int64_t i, const at::Tensor& out) {
      if (check && i % kInputPool == 0) checked.push_back(out.clone());
    };

    PipelineOptions popts;
    popts.warmup_batches = run.measurement.warmup_batches;
    popts.batches = run.measurement.batches;
    StageTiming timing;
    try {
      timing = run_pipeline(*board, in_shape, root ? pool : std::vector<at::Tensor>{}, on_output,
                            popts, comm);
    } catch (const std::exception& e) {
      // Peers are blocked in MPI calls waiting for this rank: the only way out is to abort the
      // job. Every finished run is already safe in the result file.
      std::fprintf(stderr, "quilt: rank %d: run %s failed inside the pipeline: %s\n", me,
                   run.id.c_str(), e.what());
      std::fflush(stderr);
      MPI_Abort(comm, 3);
    }

    double max_abs = -1, max_rel = -1;
    if (last && check) {
      torch::NoGradGuard no_grad;
      at::Tensor ref = qm->forward(pool[0]);
      double scale = std::max(ref.abs().max().item<double>(), 1e-12);
      max_abs = 0;
      for (const auto& out : checked)
        max_abs = std::max(max_abs, (out - ref).abs().max().item<double>());
      max_rel = max_abs / scale;
    }

    results::StageRecord stage;
    stage.rank = me;
    stage.host = mpi::processor_name();
    stage.board = board->backend();
    stage.board_description = board->description();
    stage.units = stage_units(*qm, k);
    stage.in_shape = spec.in_shape;
    stage.out_shape = spec.out_shape;
    stage.bytes_sent = timing.bytes_sent;
    stage.bytes_received = timing.bytes_received;
    stage.compute_s = timing.compute_s;
    stage.recv_wait_s = timing.recv_wait_s;
    stage.send_wait_s = timing.send_wait_s;
    auto packed = mpi::gather_strings(pack_stage(stage, timing.end_s), 0, comm);
    double errs[2] = {max_abs, max_rel};
    mpi::check(MPI_Bcast(errs, 2, MPI_DOUBLE, n - 1, comm), "MPI_Bcast");

    if (root) {
      std::vector<double> end_s;
      for (const auto& bytes : packed) {
        std::vector<double> ends;
        rec.stages.push_back(unpack_stage(bytes, &ends));
        if (!ends.empty()) end_s = ends;
      }
      const auto& start_s = timing.start_s;
      const int64_t nb = run.measurement.batches;
      rec.duration_s = end_s.back() - start_s.front();
      rec.throughput_sps =
          static_cast<double>((nb - 1) * run.measurement.batch) / (end_s.back() - end_s.front());
      for (int64_t i = 0; i < nb; ++i) rec.latency_s.push_back(end_s[i] - start_s[i]);
      rec.latency_p50_s = percentile(rec.latency_s, 50);
      rec.latency_p90_s = percentile(rec.latency_s, 90);
      rec.latency_p99_s = percentile(rec.latency_s, 99);
      for (size_t c = 0; c < qm->traffic().size(); ++c) {
        const auto& t = qm->traffic()[c];
        rec.cut_names.push_back(t.cut);
        rec.cut_bytes_per_sample.push_back(t.bytes_per_sample);
        rec.cut_wire_bytes_per_sample.push_back(t.wire_bytes_per_sample);
        rec.cut_requested_rate.push_back(t.requested_rate);
        rec.cut_effective_rate.push_back(t.effective_rate);
      }
      rec.max_abs_error = errs[0];
      rec.status = "ok";
      if (errs[1] > run.measurement.tolerance) {
        rec.status = "failed";
        rec.failure = fmt::format(
            "pipeline outputs differ from the single-process model: max relative error {:.3g} > "
            "tolerance {:.3g}",
            errs[1], run.measurement.tolerance);
      }
      rec.end_unix_s = unix_now_s();
      record.runs.push_back(rec);
      if (!output.empty()) results::write_experiment(output, record);
      if (options.print) {
        fmt::print("  {:.2f} samples/s, latency p50 {:.1f} ms{}\n", rec.throughput_sps,
                   1e3 * rec.latency_p50_s,
                   rec.status == "ok" ? "" : fmt::format("  FAILED: {}", rec.failure));
        std::fflush(stdout);
      }
    }
  }
  return record;
}

std::string summary_table(const results::ExperimentRecord& record) {
  std::string out;
  out += fmt::format("\n{}: {} run(s)\n", record.name, record.runs.size());
  out += fmt::format(
      "{:<12} {:>7} {:>7} {:>11} {:>9} {:>13} {:>13} | {:>5} {:<28} {:>11} {:>11} {:>11}\n", "run",
      "R", "eff. R", "samples/s", "p50 ms", "B/sample@cut", "wire B/sample", "stage", "units",
      "compute ms", "recv wait", "send wait");
  for (const auto& run : record.runs) {
    auto rate = run.params.count("autoencoder.rate") ? run.params.at("autoencoder.rate") : "-";
    std::string eff =
        run.cut_effective_rate.empty() ? "-" : fmt::format("{:.1f}", run.cut_effective_rate[0]);
    std::string bytes =
        run.cut_bytes_per_sample.empty() ? "-" : std::to_string(run.cut_bytes_per_sample[0]);
    std::string wire = run.cut_wire_bytes_per_sample.empty()
                           ? "-"
                           : std::to_string(run.cut_wire_bytes_per_sample[0]);
    if (run.status != "ok" && run.stages.empty()) {
      out += fmt::format("{:<12} {:>7} FAILED: {}\n", run.id, rate, run.failure);
      continue;
    }
    for (size_t s = 0; s < run.stages.size(); ++s) {
      const auto& st = run.stages[s];
      auto ms = [](const std::vector<double>& v) { return fmt::format("{:.1f}", 1e3 * median(v)); };
      if (s == 0) {
        out += fmt::format("{:<12} {:>7} {:>7} {:>11.2f} {:>9.1f} {:>13} {:>13} |", run.id, rate,
                           eff, run.throughput_sps, 1e3 * run.latency_p50_s, bytes, wire);
      } else {
        out += fmt::format("{:<12} {:>7} {:>7} {:>11} {:>9} {:>13} {:>13} |", "", "", "", "", "",
                           "", "");
      }
      out += fmt::format(" {:>5} {:<28} {:>11} {:>11} {:>11}\n", s, st.units, ms(st.compute_s),
                         ms(st.recv_wait_s), ms(st.send_wait_s));
    }
    if (run.status != "ok") out += fmt::format("{:<12} FAILED: {}\n", "", run.failure);
  }
  out +=
      "compute/recv wait/send wait: median per batch. B/sample: float32 bytes of one sample "
      "crossing the cut without / with the autoencoder.\n";
  return out;
}

}  // namespace quilt::harness
