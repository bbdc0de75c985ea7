#include "harness/training.h"

#include "backends/precision.h"
#include "harness/clock.h"
#include "harness/mpi.h"
#include "harness/pipeline.h"
#include "harness/planning.h"
#include "harness/trace.h"
#include "harness/training_setup.h"
#include "models/quilt_model.h"
#include "models/state_dict.h"
#include "models/zoo.h"
#include "trainers/checkpoint.h"
#include "trainers/data.h"
#include "trainers/train.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>

namespace quilt::harness {

namespace {

using namespace detail;

// Full-model batches timed to price full training against the proxy (after one untimed batch
// inside the epoch, oneDNN's first-call set-up is a small share of eight).
constexpr int64_t kCostBatches = 8;

// One training run on this rank: set-up, pretraining, then the proxy or data-parallel
// training, and the run's record (complete on rank 0).
class TrainingRun {
 public:
  TrainingRun(const RunConfig& run, const TrainingContext& context, MPI_Comm comm)
      : run_(run), context_(context), comm_(comm), tr_(rec_.training) {
    me_ = mpi::rank(comm);
    n_ = mpi::size(comm);
    root_ = me_ == 0;
    print_ = root_ && context.print;
  }

  results::RunRecord run() {
    start_record();
    at::set_num_threads(run_.boards.threads);
    if (!agree(set_up())) return finish();
    record_resolved_model(&rec_.params, base_->input_shape(), base_->num_classes());
    tr_.classes = data_.num_classes;
    tr_.test_samples = data_.test.size();
    parallel_ = make_parallel(comm_);
    if (run_.training.pretrain_epochs > 0) {
      if (!pretrain()) return finish();
    } else if (run_.model.weights != "random") {
      tr_.pretrained = "model.weights " + run_.model.weights;
    }
    if (run_.data.train_samples > 0)
      data_.train =
          trainers::stratified_subset(data_.train, run_.data.train_samples, run_.data.seed);
    tr_.train_samples = data_.train.size();
    if (run_.training.mode == trainers::Mode::kProxy) return run_proxy();
    return run_data_parallel();
  }

 private:
  void start_record() {
    rec_.id = run_.id;
    rec_.params = run_.params;
    rec_.batch_size = run_.training.batch;
    rec_.start_unix_s = unix_now_s();
    tr_.mode = to_string(run_.training.mode);
    tr_.dataset = to_string(run_.data.kind);
    tr_.data_source = data_source(run_);
    tr_.stand_in = stand_in_note(run_.data.kind, run_.model.arch);
    tr_.ranks = run_.training.mode == trainers::Mode::kProxy ? 1 : n_;
    tr_.global_batch = run_.training.batch;
    tr_.final_test_loss = tr_.final_top1 = tr_.final_top5 = kNaN;
    tr_.pretrain_top1 = kNaN;
    tr_.precision_top1 = tr_.precision_agreement = kNaN;
  }

  // A failure on any rank fails the run on every rank, with each rank's reason on rank 0.
  // Collective; false when some rank failed.
  bool agree(const std::string& error) {
    auto errors = mpi::gather_strings(error, 0, comm_);
    if (mpi::all_ok(error.empty(), comm_)) return true;
    if (root_) {
      std::string joined;
      for (size_t r = 0; r < errors.size(); ++r) {
        if (errors[r].empty()) continue;
        if (joined.empty()) rec_.failed_rank = static_cast<int64_t>(r);
        joined += fmt::format("{}rank {}: {}", joined.empty() ? "" : "; ", r, errors[r]);
      }
      rec_.failure = joined;
    }
    failed_ = true;
    return false;
  }

  results::RunRecord finish() {
    rec_.status = failed_ ? "failed" : "ok";
    rec_.end_unix_s = unix_now_s();
    if (print_) {
      if (failed_) {
        fmt::print("  FAILED: {}\n", rec_.failure);
      } else if (run_.training.mode == trainers::Mode::kProxy) {
        fmt::print(
            "  reconstruction MSE {:.4g} (test), proxy {:.1f} s, {:.1f}x cheaper than full "
            "training\n",
            tr_.final_test_loss, tr_.train_s, tr_.proxy_speedup);
      } else {
        // Top-5 of 5 classes or fewer is 100% by construction: not shown.
        fmt::print("  top-1 {}{} test loss {} after {} epoch(s), {:.1f} s\n",
                   fmt_pct(tr_.final_top1),
                   tr_.classes > 5 ? " top-5 " + fmt_pct(tr_.final_top5) : std::string(),
                   std::isnan(tr_.final_test_loss) ? std::string("\u2014")
                                                   : fmt::format("{:.4f}", tr_.final_test_loss),
                   tr_.epoch.size(), tr_.train_s);
      }
      std::fflush(stdout);
    }
    return rec_;
  }

  // Data and base model on every rank (every rank needs the whole data set to take its share
  // of each batch). Returns why it failed, or empty.
  std::string set_up() {
    std::string key;
    std::string error = training_config_error(run_, &key);
    if (!error.empty()) return fmt::format("{}: {}: {}", context_.experiment_path, key, error);
    try {
      base_ = build_base(run_);
      data_ = load_data(run_, base_);
    } catch (const std::exception& e) {
      return fmt::format("data.kind {}: {}", to_string(run_.data.kind), e.what());
    }
    return "";
  }

  std::string converged_note() const {
    return pretrain_converged_ < 0   ? ""
           : pretrain_converged_ > 0 ? " (converged)"
                                     : " (not converged)";
  }

  // Pretraining (transfer learning from a model trained on the full split without autoencoder),
  // cached beside the result file. With the convergence rule it stops once the base model's test
  // accuracy is flat; whether it got there is kept beside the cache (`<cache>.converged`: "1 E"
  // or "0 E", E the epochs run) so that later runs loading the cache know it too. Collective;
  // false when it failed.
  bool pretrain() {
    const std::string cache = pretrain_cache_path(run_, context_, n_);
    const int64_t pre_n = run_.training.pretrain_samples > 0
                              ? std::min(run_.training.pretrain_samples, data_.train.size())
                              : data_.train.size();
    int cached = root_ && std::filesystem::exists(cache) ? 1 : 0;
    mpi::check(MPI_Bcast(&cached, 1, MPI_INT, 0, comm_), "MPI_Bcast");
    std::string error;
    try {
      if (cached)
        load_pretrained(cache, pre_n);
      else
        pretrain_here(cache, pre_n);
    } catch (const std::exception& e) {
      error = fmt::format("training.pretrain_epochs: {}", e.what());
    }
    if (!agree(error)) return false;
    if (cached) broadcast_module(*base_, comm_);
    models::QuiltModel plain(base_, {}, {1.0, 1});
    tr_.pretrain_top1 =
        trainers::evaluate(plain, data_.test, data_.num_classes, 256, parallel_).top1;
    return true;
  }

  // Rank 0 loads the cached base (the others get it broadcast after the agreement).
  void load_pretrained(const std::string& cache, int64_t pre_n) {
    models::QuiltModel plain(base_, {}, {1.0, 1});
    if (root_) models::load_state_dict(*base_, cache);
    int64_t epochs_run = run_.training.pretrain_epochs;
    if (root_ && run_.training.converge_window > 0) {
      std::ifstream side(cache + ".converged");
      int flag = 0;
      if (side >> flag >> epochs_run)
        pretrain_converged_ = flag != 0 ? 1 : 0;
      else
        pretrain_converged_ = 0, epochs_run = run_.training.pretrain_epochs;
    }
    tr_.pretrained =
        fmt::format("{} epoch(s) from scratch on {} samples of {}{}, loaded from {}", epochs_run,
                    pre_n, to_string(run_.data.kind), converged_note(), cache);
    if (print_) fmt::print("  pretrained weights from {}\n", cache);
  }

  // Every rank trains the base without autoencoder; rank 0 writes the cache.
  void pretrain_here(const std::string& cache, int64_t pre_n) {
    models::QuiltModel plain(base_, {}, {1.0, 1});
    if (print_)
      fmt::print("  pretraining {} without autoencoder: {} epoch(s) on {} samples\n",
                 run_.model.arch, run_.training.pretrain_epochs, pre_n);
    trainers::TrainOptions o = train_options(run_, base_->input_shape(), print_);
    o.mode = trainers::Mode::kScratch;
    o.epochs = run_.training.pretrain_epochs;
    o.eval_every_epoch = run_.training.converge_window > 0;
    trainers::Dataset source = data_;
    if (run_.training.pretrain_samples > 0)
      source.train = trainers::stratified_subset(data_.train, run_.training.pretrain_samples,
                                                 run_.data.seed + 1);
    auto result = trainers::train(plain, source, o, parallel_);
    if (!result.ok) throw trainers::TrainerError("pretraining failed: " + result.failure);
    if (run_.training.converge_window > 0) pretrain_converged_ = result.converged ? 1 : 0;
    if (root_) {
      std::filesystem::create_directories(std::filesystem::path(cache).parent_path());
      trainers::export_state_dict(*base_, cache);
      if (pretrain_converged_ >= 0) {
        std::ofstream side(cache + ".converged", std::ios::trunc);
        side << pretrain_converged_ << ' ' << result.epochs.size() << '\n';
      }
    }
    tr_.pretrained = fmt::format(
        "{} epoch(s) from scratch on {} samples of {}{} in this run "
        "(cached in {})",
        result.epochs.size(), pre_n, to_string(run_.data.kind), converged_note(), cache);
  }

  // The proxy is single-process by design (features once, then small autoencoders): rank 0
  // runs it, the others wait for its status.
  results::RunRecord run_proxy() {
    std::string error;
    if (root_) {
      try {
        error = train_proxy_on_root();
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        rec_.failure = fmt::format("rank 0: {}", error);
        rec_.failed_rank = 0;
      }
    }
    int bad = root_ && !error.empty() ? 1 : 0;
    mpi::check(MPI_Bcast(&bad, 1, MPI_INT, 0, comm_), "MPI_Bcast");
    failed_ = bad != 0;
    // The proxy trains a fixed number of epochs; what the rule can say is whether the base whose
    // features it reconstructs was pretrained to convergence.
    if (pretrain_converged_ >= 0) {
      tr_.converged = pretrain_converged_;
      tr_.converge_window = run_.training.converge_window;
      tr_.converge_margin_pt = run_.training.converge_margin_pt;
    }
    return finish();
  }

  // Rank 0: trains the proxy and prices full training. Returns why it failed, or empty.
  std::string train_proxy_on_root() {
    trainers::ProxyOptions po = proxy_options(run_);
    po.progress.style =
        context_.print ? trainers::ProgressStyle::kAuto : trainers::ProgressStyle::kSilent;
    po.progress.line_interval_s = 30;
    auto pr = trainers::train_proxy(base_, data_, po);
    if (!pr.rates.empty()) {
      const auto& r = pr.rates.front();
      const double per_epoch = r.seconds / std::max<size_t>(1, r.train_mse.size());
      const double per_epoch_samples =
          static_cast<double>(r.samples) / std::max<size_t>(1, r.train_mse.size());
      for (size_t e = 0; e < r.train_mse.size(); ++e) {
        tr_.epoch.push_back(static_cast<int64_t>(e + 1));
        tr_.phase.push_back("proxy");
        tr_.train_loss.push_back(r.train_mse[e]);
        tr_.train_top1.push_back(kNaN);
        tr_.test_loss.push_back(e < r.test_mse.size() ? r.test_mse[e] : kNaN);
        tr_.test_top1.push_back(kNaN);
        tr_.test_top5.push_back(kNaN);
        tr_.epoch_s.push_back(per_epoch);
        tr_.samples_per_s.push_back(per_epoch > 0 ? per_epoch_samples / per_epoch : 0);
      }
      tr_.train_s = pr.feature_seconds + r.seconds;
      if (!tr_.test_loss.empty()) tr_.final_test_loss = tr_.test_loss.back();
    }
    if (!pr.ok) return pr.failure;
    price_full_training();
    return "";
  }

  // Price full training: the whole model with its autoencoder, kCostBatches timed batches of a
  // fresh copy, scaled to the epochs the proxy ran.
  void price_full_training() {
    models::Model fresh = build_base(run_);
    models::QuiltModel full(fresh, run_.partition.cuts, autoencoder_options(run_.autoencoder));
    trainers::Dataset sample = data_;
    sample.train = trainers::stratified_subset(
        data_.train, std::min<int64_t>(data_.train.size(), kCostBatches * run_.training.batch),
        run_.data.seed);
    sample.test = trainers::stratified_subset(data_.test, data_.num_classes, run_.data.seed);
    trainers::TrainOptions o = train_options(run_, fresh->input_shape(), false);
    o.mode = trainers::Mode::kScratch;
    o.epochs = 1;
    o.eval_every_epoch = false;
    o.converge_window = 0;  // a timed epoch, not a run: no convergence rule (it needs evaluation)
    auto cost = trainers::train(full, sample, o);
    if (cost.samples > 0 && cost.seconds > 0) {
      tr_.full_epoch_s = cost.seconds / static_cast<double>(cost.samples) *
                         static_cast<double>(data_.train.size());
      if (tr_.train_s > 0)
        tr_.proxy_speedup =
            static_cast<double>(run_.training.epochs) * tr_.full_epoch_s / tr_.train_s;
    }
  }

  // scratch | freeze | finetune, data parallel over the ranks.
  results::RunRecord run_data_parallel() {
    // The timeline (measurement.trace): the phases of every step, on rank 0's clock.
    const int64_t global_batch = std::max<int64_t>(1, run_.training.batch);
    const int64_t steps =
        run_.training.epochs * ((tr_.train_samples + global_batch - 1) / global_batch);
    TraceRecorder trace(run_.measurement.trace_batches(steps), 5);
    const double clock_offset = trace.enabled() ? clock_offset_to_rank0(comm_) : 0.0;
    const double trace_origin = now_s() + clock_offset;
    trainers::TrainResult result;
    std::string error;
    try {
      result = train_model(trace);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!agree(error)) return finish();
    if (trace.enabled()) {
      trace.shift(0, clock_offset);
      rec_.trace = gather_trace(trace, trace_origin, 1.0, "wall", comm_);
    }
    record_result(result);
    check_precision();
    // Every rank saw the same averaged loss, but agree anyway: fail_fast must stop all ranks.
    int bad = failed_ ? 1 : 0;
    mpi::check(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm_), "MPI_Allreduce");
    failed_ = bad != 0;
    if (failed_ && root_ && rec_.failure.empty()) rec_.failure = "training failed on another rank";
    save_weights();
    return finish();
  }

  trainers::TrainResult train_model(TraceRecorder& trace) {
    qm_ = models::QuiltModel(base_, run_.partition.cuts, autoencoder_options(run_.autoencoder));
    trainers::TrainOptions o = train_options(run_, base_->input_shape(), print_);
    o.mode = run_.training.mode.value();
    if (!run_.training.checkpoint.empty()) {
      const std::string path = substitute_id(run_.training.checkpoint, run_.id);
      o.checkpoint_path = path;
      int resume = root_ && std::filesystem::exists(path) ? 1 : 0;
      mpi::check(MPI_Bcast(&resume, 1, MPI_INT, 0, comm_), "MPI_Bcast");
      if (resume) o.resume_from = path;
      tr_.checkpoint = path;
      if (print_ && resume) fmt::print("  resuming from checkpoint {}\n", path);
    }
    if (trace.enabled()) {
      o.on_step_phase = [&trace, current = int64_t{-1}](trainers::StepPhase phase, int64_t step,
                                                        int64_t epoch, double start_s,
                                                        double end_s) mutable {
        if (step != current) trace.begin_batch(step, static_cast<int32_t>(epoch)), current = step;
        trace.add(static_cast<Phase>(static_cast<int>(Phase::kData) + static_cast<int>(phase)),
                  start_s, end_s);
      };
    }
    return trainers::train(qm_, data_, o, parallel_);
  }

  void record_result(const trainers::TrainResult& result) {
    for (const auto& e : result.epochs) {
      tr_.epoch.push_back(e.epoch);
      tr_.phase.push_back(run_.training.mode == trainers::Mode::kFreeze
                              ? (e.phase == 1 ? "freeze" : "unfreeze")
                              : "train");
      tr_.train_loss.push_back(e.train_loss);
      tr_.train_top1.push_back(e.train_top1);
      // An epoch without evaluation has no test numbers (NaN), not zeros.
      const bool tested = e.test.samples > 0;
      tr_.test_loss.push_back(tested ? e.test.loss : kNaN);
      tr_.test_top1.push_back(tested ? e.test.top1 : kNaN);
      tr_.test_top5.push_back(tested ? e.test.top5 : kNaN);
      tr_.epoch_s.push_back(e.seconds);
      tr_.samples_per_s.push_back(e.seconds > 0 ? static_cast<double>(e.samples) / e.seconds : 0);
      if (e.phase == 1 && two_phases(run_.training.mode)) ++tr_.phase1_epochs;
    }
    tr_.train_s = result.seconds;
    if (run_.training.converge_window > 0) {
      // The run is converged when its own last phase met the rule and so did its pretraining.
      tr_.converged = result.converged && pretrain_converged_ != 0 ? 1 : 0;
      tr_.converge_window = run_.training.converge_window;
      tr_.converge_margin_pt = run_.training.converge_margin_pt;
    }
    tr_.final_test_loss = result.final_test.loss;
    tr_.final_top1 = result.final_test.top1;
    tr_.final_top5 = result.final_test.top5;
    if (!result.ok) {
      failed_ = true;
      rec_.failed_rank = 0;
      rec_.failure = result.failure;
    }
  }

  // boards.precision bf16 / int8: the trained model as a pipeline in that precision computes
  // it, on the test set, against float32 (rank 0; the weights are the same on every rank).
  void check_precision() {
    if (failed_ || !root_ || run_.training.mode == trainers::Mode::kProxy ||
        !run_.boards.precision || run_.boards.precision == backends::Precision::kFp32)
      return;
    try {
      precision_accuracy(*qm_, run_, data_, tr_);
      if (print_)
        fmt::print("  {}: top-1 {:.2f}%, top-1 agreement with fp32 {:.2f}%\n", tr_.precision,
                   100 * tr_.precision_top1, 100 * tr_.precision_agreement);
    } catch (const std::exception& e) {
      failed_ = true;
      rec_.failed_rank = 0;
      rec_.failure =
          fmt::format("evaluating in {}: {}", precision_name(run_.boards.precision), e.what());
    }
  }

  // The trained weights (base model and autoencoders), for pipeline runs: `model.weights` takes
  // this file with the same model, cuts and rate.
  void save_weights() {
    if (failed_ || !root_ || context_.output.empty()) return;
    try {
      auto dir = std::filesystem::path(context_.output);
      dir = dir.parent_path() / (dir.stem().string() + ".weights");
      std::filesystem::create_directories(dir);
      const std::string path = (dir / (run_.id + ".pt")).string();
      trainers::export_state_dict(*qm_, path);
      rec_.params["training.saved_weights"] = path;
      if (print_) fmt::print("  trained weights: {}\n", path);
    } catch (const std::exception& e) {
      if (print_) fmt::print("  (trained weights not saved: {})\n", e.what());
    }
  }

  const RunConfig& run_;
  const TrainingContext& context_;
  MPI_Comm comm_;
  int me_ = 0, n_ = 1;
  bool root_ = false, print_ = false;
  results::RunRecord rec_;
  results::TrainingRecord& tr_;
  bool failed_ = false;
  trainers::Dataset data_;
  models::Model base_{nullptr};
  models::QuiltModel qm_{nullptr};
  trainers::Parallel parallel_;
  int pretrain_converged_ = -1;  // -1: no rule, else 0 / 1 (rank 0)
};

}  // namespace

results::RunRecord run_training(const RunConfig& run, const TrainingContext& context,
                                MPI_Comm comm) {
  return TrainingRun(run, context, comm).run();
}

}  // namespace quilt::harness
