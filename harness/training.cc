#include "harness/training.h"

#include "backends/inference.h"
#include "backends/precision.h"
#include "harness/clock.h"
#include "harness/hash.h"
#include "harness/mpi.h"
#include "harness/pipeline.h"
#include "harness/planning.h"
#include "harness/trace.h"
#include "models/quilt_model.h"
#include "models/state_dict.h"
#include "models/zoo.h"
#include "trainers/checkpoint.h"
#include "trainers/data.h"
#include "trainers/train.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>

namespace quilt::harness {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Full-model batches timed to price full training against the proxy (after one untimed batch
// inside the epoch, oneDNN's first-call set-up is a small share of eight).
constexpr int64_t kCostBatches = 8;

std::string loader_name(const std::string& kind) {
  if (kind.rfind("uci-", 0) == 0) {
    std::string name = kind.substr(4);
    for (auto& c : name)
      if (c == '-') c = '_';
    return name;  // uci-breast-cancer -> breast_cancer
  }
  return kind;
}

std::string data_source(const RunConfig& run) {
  if (!run.data.path.empty()) return run.data.path;
  if (run.data.kind == "synthetic") return "generated";
  if (run.data.kind == "fashion-mnist") return "/usr/share/datasets/fashion-mnist";
  return "default location of " + run.data.kind;
}

// The data a run trains on, fitted to the model's input. train_samples is applied by the caller
// (after pretraining, which uses the full split).
trainers::Dataset load_data(const RunConfig& run, const models::Model& base) {
  trainers::DataOptions o;
  o.name = loader_name(run.data.kind);
  o.root = run.data.path;
  o.seed = run.data.seed;
  o.test_samples = run.training.test_samples;
  if (run.data.kind == "synthetic") {
    o.synthetic_shape = base->input_shape();
    o.synthetic_classes = std::max<int64_t>(2, std::min<int64_t>(base->num_classes(), 10));
  }
  trainers::Dataset data = trainers::fit_to_model(trainers::load_dataset(o), base->input_shape());
  if (data.num_classes > base->num_classes())
    throw trainers::DataError(
        fmt::format("{} has {} classes but the model has {} outputs; set model.classes: {}",
                    run.data.kind, data.num_classes, base->num_classes(), data.num_classes));
  return data;
}

trainers::AugmentOptions augment_options(const RunConfig& run, const models::Shape& input) {
  trainers::AugmentOptions a;
  if (!run.data.augment || input.size() != 3) return a;  // 1-D samples are not augmented
  a.crop_padding = std::max<int64_t>(1, input[1] / 8);   // 28x28 -> 3, 32x32 -> 4
  a.horizontal_flip = true;
  a.skew = 0.1;
  return a;
}

// training.seed N > 0 moves the weight initialisation and the shuffling/augmentation stream to
// a repetition of its own; 0 keeps model.seed and data.seed as they were before the key existed.
constexpr uint64_t kSeedStride = 1000003;  // a prime: seeds of neighbouring repetitions differ

uint64_t init_seed(const RunConfig& run) {
  return run.model.seed + kSeedStride * run.training.seed;
}

uint64_t shuffle_seed(const RunConfig& run) {
  return run.data.seed + kSeedStride * run.training.seed;
}

// The base model of this repetition: build_base (planning.h) with the repetition's init seed.
models::Model build_base(const RunConfig& run) {
  ModelConfig m = run.model;
  m.seed = init_seed(run);
  return harness::build_base(m);
}

// Averages gradients over the ranks: one MPI_Allreduce per element type over all tensors packed
// into one buffer (one call per step instead of one per parameter).
trainers::Parallel make_parallel(MPI_Comm comm) {
  trainers::Parallel p;
  p.rank = mpi::rank(comm);
  p.size = mpi::size(comm);
  if (p.size == 1) return p;
  const int size = p.size;
  p.average = [comm, size](std::vector<torch::Tensor>& tensors) {
    torch::NoGradGuard no_grad;
    for (auto type : {torch::kFloat32, torch::kFloat64}) {
      std::vector<torch::Tensor> flat;
      for (const auto& t : tensors)
        if (t.scalar_type() == type) flat.push_back(t.reshape({-1}));
      if (flat.empty()) continue;
      torch::Tensor buffer = torch::cat(flat);
      mpi::StallScope stall("the other ranks (gradient averaging)");
      mpi::check(MPI_Allreduce(MPI_IN_PLACE, buffer.data_ptr(), static_cast<int>(buffer.numel()),
                               type == torch::kFloat32 ? MPI_FLOAT : MPI_DOUBLE, MPI_SUM, comm),
                 "MPI_Allreduce (gradient averaging)");
      buffer.div_(size);
      int64_t offset = 0;
      for (auto& t : tensors) {
        if (t.scalar_type() != type) continue;
        t.copy_(buffer.narrow(0, offset, t.numel()).view_as(t));
        offset += t.numel();
      }
    }
    for (const auto& t : tensors)
      TORCH_INTERNAL_ASSERT(
          t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64,
          "gradient averaging of a ", t.scalar_type(), " tensor");
  };
  return p;
}

// Rank 0's parameters and buffers to every rank (weights only rank 0 read from a file).
void broadcast_module(torch::nn::Module& module, MPI_Comm comm) {
  torch::NoGradGuard no_grad;
  auto send = [&](torch::Tensor t) {
    torch::Tensor c = t.contiguous();
    mpi::check(MPI_Bcast(c.data_ptr(), static_cast<int>(c.nbytes()), MPI_BYTE, 0, comm),
               "MPI_Bcast (weights)");
    if (!c.is_same(t)) t.copy_(c);
  };
  for (auto& t : module.parameters()) send(t);
  for (auto& t : module.buffers()) send(t);
}

std::string substitute_id(std::string path, const std::string& id) {
  for (size_t pos; (pos = path.find("{id}")) != std::string::npos;) path.replace(pos, 4, id);
  return path;
}

// Where pretrained weights are cached: beside the result file, keyed by everything that shapes
// them, so the freeze and finetune runs of one sweep pretrain once.
std::string pretrain_cache_path(const RunConfig& run, const TrainingContext& context, int ranks) {
  std::string key = fmt::format("ranks={}", ranks);
  for (const char* k :
       {"model.arch", "model.input", "model.classes", "model.weights", "model.seed", "data.kind",
        "data.path", "data.seed", "data.augment", "training.batch", "training.lr",
        "training.optimizer", "training.momentum", "training.weight_decay",
        "training.pretrain_epochs", "training.pretrain_samples", "training.test_samples"}) {
    auto it = run.params.find(k);
    key += fmt::format(";{}={}", k, it == run.params.end() ? "" : it->second);
  }
  // Keys added later: only when set, so that earlier caches keep their names.
  for (const char* k :
       {"training.seed", "training.converge_window", "training.converge_margin_pt", "model.width"})
    if (auto it = run.params.find(k); it != run.params.end())
      key += fmt::format(";{}={}", k, it->second);
  auto dir = std::filesystem::path(context.output).parent_path();
  if (dir.empty()) dir = ".";
  return (dir / ".quilt-cache" / ("pretrained-" + hex_digest(key).substr(0, 16) + ".pt")).string();
}

trainers::TrainOptions train_options(const RunConfig& run, const models::Shape& input, bool print) {
  const auto& t = run.training;
  trainers::TrainOptions o;
  o.optimizer = trainers::parse_optimizer(t.optimizer);
  o.lr = t.lr;
  o.momentum = t.momentum;
  o.weight_decay = t.weight_decay;
  o.batch_size = t.batch;
  o.seed = shuffle_seed(run);
  o.augment = augment_options(run, input);
  o.converge_window = t.converge_window;
  o.converge_margin = t.converge_margin_pt / 100.0;
  o.progress.style = print ? trainers::ProgressStyle::kAuto : trainers::ProgressStyle::kSilent;
  o.progress.line_interval_s = 30;
  o.settle_tolerance = t.settle_tolerance;
  if (t.mode == "freeze" || t.mode == "finetune") {
    const int64_t phase1 =
        t.freeze_epochs > 0 ? t.freeze_epochs : std::max<int64_t>(1, t.epochs / 2);
    o.freeze_epochs = phase1;
    o.epochs = t.epochs - phase1;
  } else {
    o.epochs = t.epochs;
  }
  return o;
}

std::string fmt_pct(double x) { return std::isnan(x) ? "-" : fmt::format("{:.2f}%", 100 * x); }

// Top-1 accuracy of `qm` compiled in run.boards.precision on the test set, and top-1 agreement
// with the float32 model (eval mode). int8 calibrates on the first boards.calibration_batches
// training batches of training.batch samples.
void precision_accuracy(models::QuiltModelImpl& qm, const RunConfig& run,
                        const trainers::Dataset& data, results::TrainingRecord& tr) {
  const auto precision = *backends::parse_precision(run.boards.precision);
  torch::NoGradGuard no_grad;
  qm.eval();
  std::vector<at::Tensor> calibration;
  const int64_t batch = std::max<int64_t>(1, run.training.batch);
  for (int64_t b = 0; b < run.boards.calibration_batches && b * batch < data.train.size(); ++b)
    calibration.push_back(
        data.train.x.narrow(0, b * batch, std::min(batch, data.train.size() - b * batch))
            .contiguous());
  constexpr int64_t kEvalBatch = 256;
  std::vector<at::Tensor> inputs;
  for (int64_t i = 0; i < data.test.size(); i += kEvalBatch)
    inputs.push_back(
        data.test.x.narrow(0, i, std::min(kEvalBatch, data.test.size() - i)).contiguous());
  std::vector<at::Tensor> outs = backends::run_in_precision(qm, precision, calibration, inputs);
  int64_t correct = 0, agree = 0, offset = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor pred = outs[i].argmax(1);
    const at::Tensor ref = qm.forward(inputs[i]).argmax(1);
    const at::Tensor labels = data.test.y.narrow(0, offset, inputs[i].size(0));
    correct += pred.eq(labels).sum().item<int64_t>();
    agree += pred.eq(ref).sum().item<int64_t>();
    offset += inputs[i].size(0);
  }
  tr.precision = run.boards.precision;
  tr.precision_top1 = offset > 0 ? static_cast<double>(correct) / offset : kNaN;
  tr.precision_agreement = offset > 0 ? static_cast<double>(agree) / offset : kNaN;
}

}  // namespace

std::string stand_in_note(const std::string& data_kind, const std::string& arch) {
  std::string note;
  const bool uci = data_kind.rfind("uci-", 0) == 0;
  if (data_kind == "fashion-mnist")
    note = arch == "mlp" ? "Fashion-MNIST instead of MNIST"
                         : "Fashion-MNIST (28x28 grey, 10 classes) instead of ImageNet/CIFAR-10";
  else if (data_kind == "synthetic")
    note = "synthetic Gaussian classes instead of the paper's data";
  else if (uci && arch != "mlp")
    note = fmt::format("UCI {} instead of ImageNet/CIFAR-10", data_kind.substr(4));
  if (!note.empty() && arch == "resnet18") note += "; ResNet-18 instead of ResNet-50";
  return note;
}

std::string training_config_error(const RunConfig& run, std::string* key) {
  const auto& t = run.training;
  if (t.mode == "proxy") {
    if (run.partition.automatic || run.partition.cuts.size() != 1) {
      *key = "partition.cuts";
      return "`proxy` trains the autoencoder of one cut: give exactly one cut name";
    }
    if (run.autoencoder.rate <= 1) {
      *key = "autoencoder.rate";
      return "`proxy` trains an autoencoder, but `autoencoder.rate` is 1 (no autoencoder); sweep "
             "rates above 1";
    }
  }
  if ((t.mode == "freeze" || t.mode == "finetune") && t.pretrain_epochs == 0 &&
      run.model.weights == "random") {
    *key = "model.weights";
    return fmt::format(
        "`{}` retrains a pretrained model (the paper: ImageNet weights, then the autoencoders are "
        "inserted), but model.weights is `random` and training.pretrain_epochs is 0: set "
        "model.weights to a state_dict file saved from Python (e.g. torchvision's "
        "resnet50(weights=\"IMAGENET1K_V1\").state_dict(), see README.md \"Pretrained "
        "weights\"), or training.pretrain_epochs > 0 to pretrain here",
        t.mode);
  }
  if (t.mode == "freeze" || t.mode == "finetune") {
    const int64_t phase1 =
        t.freeze_epochs > 0 ? t.freeze_epochs : std::max<int64_t>(1, t.epochs / 2);
    if (t.epochs <= phase1) {
      *key = "training.epochs";
      return fmt::format(
          "`{}` runs at most training.freeze_epochs = {} phase-1 epochs and then training.epochs - "
          "freeze_epochs phase-2 epochs; training.epochs = {} leaves none: raise it above {}",
          t.mode, phase1, t.epochs, phase1);
    }
  }
  if (t.converge_window > 0 && t.mode != "proxy" && t.mode != "none") {
    const int64_t phase1 = t.mode == "scratch"   ? 0
                           : t.freeze_epochs > 0 ? t.freeze_epochs
                                                 : std::max<int64_t>(1, t.epochs / 2);
    if (t.epochs - phase1 < t.converge_window) {
      *key = "training.converge_window";
      return fmt::format(
          "the rule needs {} epochs of the last phase, but training.epochs = {} allows {}: raise "
          "training.epochs (the maximum) or lower the window",
          t.converge_window, t.epochs, t.epochs - phase1);
    }
  }
  if (t.converge_window > 0 && t.pretrain_epochs > 0 && t.pretrain_epochs < t.converge_window) {
    *key = "training.pretrain_epochs";
    return fmt::format(
        "pretraining stops by the same convergence rule, which needs {} epochs; "
        "training.pretrain_epochs = {} (the maximum) allows fewer",
        t.converge_window, t.pretrain_epochs);
  }
  if (!t.checkpoint.empty() && !run.swept.empty() &&
      t.checkpoint.find("{id}") == std::string::npos) {
    *key = "training.checkpoint";
    return fmt::format(
        "every run of the sweep would write and resume `{}`, each continuing another's training; "
        "put `{{id}}` in the path (replaced by the run id), e.g. `results/ck-{{id}}.pt`",
        t.checkpoint);
  }
  if (t.mode != "none" && run.partition.automatic) {
    *key = "partition.cuts";
    return "training runs place autoencoders at named cuts; `cuts: auto` applies to pipeline runs";
  }
  return "";
}

results::RunRecord run_training(const RunConfig& run, const TrainingContext& context,
                                MPI_Comm comm) {
  const int me = mpi::rank(comm), n = mpi::size(comm);
  const bool root = me == 0;
  results::RunRecord rec;
  rec.id = run.id;
  rec.params = run.params;
  rec.batch_size = run.training.batch;
  rec.start_unix_s = unix_now_s();
  auto& tr = rec.training;
  tr.mode = run.training.mode;
  tr.dataset = run.data.kind;
  tr.data_source = data_source(run);
  tr.stand_in = stand_in_note(run.data.kind, run.model.arch);
  tr.ranks = run.training.mode == "proxy" ? 1 : n;
  tr.global_batch = run.training.batch;
  tr.final_test_loss = tr.final_top1 = tr.final_top5 = kNaN;
  tr.pretrain_top1 = kNaN;
  tr.precision_top1 = tr.precision_agreement = kNaN;

  // A failure on any rank fails the run on every rank, with each rank's reason on rank 0.
  bool failed = false;
  auto agree = [&](const std::string& error) {
    auto errors = mpi::gather_strings(error, 0, comm);
    if (mpi::all_ok(error.empty(), comm)) return true;
    if (root) {
      std::string joined;
      for (size_t r = 0; r < errors.size(); ++r) {
        if (errors[r].empty()) continue;
        if (joined.empty()) rec.failed_rank = static_cast<int64_t>(r);
        joined += fmt::format("{}rank {}: {}", joined.empty() ? "" : "; ", r, errors[r]);
      }
      rec.failure = joined;
    }
    failed = true;
    return false;
  };
  auto finish = [&]() {
    rec.status = failed ? "failed" : "ok";
    rec.end_unix_s = unix_now_s();
    if (root && context.print) {
      if (failed) {
        fmt::print("  FAILED: {}\n", rec.failure);
      } else if (tr.mode == "proxy") {
        fmt::print(
            "  reconstruction MSE {:.4g} (test), proxy {:.1f} s, {:.1f}x cheaper than full "
            "training\n",
            tr.final_test_loss, tr.train_s, tr.proxy_speedup);
      } else {
        // Top-5 of 5 classes or fewer is 100% by construction: not shown.
        fmt::print("  top-1 {}{} test loss {} after {} epoch(s), {:.1f} s\n",
                   fmt_pct(tr.final_top1),
                   tr.classes > 5 ? " top-5 " + fmt_pct(tr.final_top5) : std::string(),
                   std::isnan(tr.final_test_loss) ? std::string("\u2014")
                                                  : fmt::format("{:.4f}", tr.final_test_loss),
                   tr.epoch.size(), tr.train_s);
      }
      std::fflush(stdout);
    }
    return rec;
  };

  at::set_num_threads(run.boards.threads);
  std::string error, key;
  error = training_config_error(run, &key);
  if (!error.empty()) error = fmt::format("{}: {}: {}", context.experiment_path, key, error);

  // Set-up: data and base model on every rank (every rank needs the whole data set to take its
  // share of each batch).
  trainers::Dataset data;
  models::Model base{nullptr};
  if (error.empty()) {
    try {
      base = build_base(run);
      data = load_data(run, base);
    } catch (const std::exception& e) {
      error = fmt::format("data.kind {}: {}", run.data.kind, e.what());
    }
  }
  if (!agree(error)) return finish();
  record_resolved_model(&rec.params, base->input_shape(), base->num_classes());
  tr.classes = data.num_classes;
  tr.test_samples = data.test.size();
  const trainers::Parallel parallel = make_parallel(comm);
  const bool print = root && context.print;

  // Pretraining (transfer learning from a model trained on the full split without autoencoder),
  // cached beside the result file. With the convergence rule it stops once the base model's test
  // accuracy is flat; whether it got there is kept beside the cache (`<cache>.converged`: "1 E"
  // or "0 E", E the epochs run) so that later runs loading the cache know it too.
  int pretrain_converged = -1;  // -1: no rule, else 0 / 1 (rank 0)
  if (run.training.pretrain_epochs > 0) {
    const std::string cache = pretrain_cache_path(run, context, n);
    const int64_t pre_n = run.training.pretrain_samples > 0
                              ? std::min(run.training.pretrain_samples, data.train.size())
                              : data.train.size();
    int cached = root && std::filesystem::exists(cache) ? 1 : 0;
    mpi::check(MPI_Bcast(&cached, 1, MPI_INT, 0, comm), "MPI_Bcast");
    try {
      models::QuiltModel plain(base, {}, {1.0, 1});
      if (cached) {
        if (root) models::load_state_dict(*base, cache);
        int64_t epochs_run = run.training.pretrain_epochs;
        if (root && run.training.converge_window > 0) {
          std::ifstream side(cache + ".converged");
          int flag = 0;
          if (side >> flag >> epochs_run)
            pretrain_converged = flag != 0 ? 1 : 0;
          else
            pretrain_converged = 0, epochs_run = run.training.pretrain_epochs;
        }
        tr.pretrained =
            fmt::format("{} epoch(s) from scratch on {} samples of {}{}, loaded from {}",
                        epochs_run, pre_n, run.data.kind,
                        pretrain_converged < 0   ? ""
                        : pretrain_converged > 0 ? " (converged)"
                                                 : " (not converged)",
                        cache);
        if (print) fmt::print("  pretrained weights from {}\n", cache);
      } else {
        if (print)
          fmt::print("  pretraining {} without autoencoder: {} epoch(s) on {} samples\n",
                     run.model.arch, run.training.pretrain_epochs, pre_n);
        trainers::TrainOptions o = train_options(run, base->input_shape(), root && context.print);
        o.mode = trainers::Mode::kScratch;
        o.epochs = run.training.pretrain_epochs;
        o.eval_every_epoch = run.training.converge_window > 0;
        trainers::Dataset source = data;
        if (run.training.pretrain_samples > 0)
          source.train = trainers::stratified_subset(data.train, run.training.pretrain_samples,
                                                     run.data.seed + 1);
        auto result = trainers::train(plain, source, o, parallel);
        if (!result.ok) throw trainers::TrainerError("pretraining failed: " + result.failure);
        if (run.training.converge_window > 0) pretrain_converged = result.converged ? 1 : 0;
        if (root) {
          std::filesystem::create_directories(std::filesystem::path(cache).parent_path());
          trainers::export_state_dict(*base, cache);
          if (pretrain_converged >= 0) {
            std::ofstream side(cache + ".converged", std::ios::trunc);
            side << pretrain_converged << ' ' << result.epochs.size() << '\n';
          }
        }
        tr.pretrained = fmt::format(
            "{} epoch(s) from scratch on {} samples of {}{} in this run "
            "(cached in {})",
            result.epochs.size(), pre_n, run.data.kind,
            pretrain_converged < 0   ? ""
            : pretrain_converged > 0 ? " (converged)"
                                     : " (not converged)",
            cache);
      }
    } catch (const std::exception& e) {
      error = fmt::format("training.pretrain_epochs: {}", e.what());
    }
    if (!agree(error)) return finish();
    if (cached) broadcast_module(*base, comm);
    models::QuiltModel plain(base, {}, {1.0, 1});
    tr.pretrain_top1 = trainers::evaluate(plain, data.test, data.num_classes, 256, parallel).top1;
  } else if (run.model.weights != "random") {
    tr.pretrained = "model.weights " + run.model.weights;
  }
  if (run.data.train_samples > 0)
    data.train = trainers::stratified_subset(data.train, run.data.train_samples, run.data.seed);
  tr.train_samples = data.train.size();

  if (run.training.mode == "proxy") {
    // The proxy is single-process by design (features once, then small autoencoders): rank 0
    // runs it, the others wait for its status.
    if (root) {
      try {
        trainers::ProxyOptions po;
        po.rates = {run.autoencoder.rate};
        po.cut = run.partition.cuts.at(0);
        po.kernel = run.autoencoder.kernel;
        po.optimizer = trainers::parse_optimizer(run.training.optimizer);
        po.lr = run.training.lr;
        po.momentum = run.training.momentum;
        po.weight_decay = run.training.weight_decay;
        po.batch_size = run.training.batch;
        po.epochs = run.training.epochs;
        po.seed = shuffle_seed(run);
        po.progress.style =
            context.print ? trainers::ProgressStyle::kAuto : trainers::ProgressStyle::kSilent;
        po.progress.line_interval_s = 30;
        auto pr = trainers::train_proxy(base, data, po);
        if (!pr.rates.empty()) {
          const auto& r = pr.rates.front();
          const double per_epoch = r.seconds / std::max<size_t>(1, r.train_mse.size());
          const double per_epoch_samples =
              static_cast<double>(r.samples) / std::max<size_t>(1, r.train_mse.size());
          for (size_t e = 0; e < r.train_mse.size(); ++e) {
            tr.epoch.push_back(static_cast<int64_t>(e + 1));
            tr.phase.push_back("proxy");
            tr.train_loss.push_back(r.train_mse[e]);
            tr.train_top1.push_back(kNaN);
            tr.test_loss.push_back(e < r.test_mse.size() ? r.test_mse[e] : kNaN);
            tr.test_top1.push_back(kNaN);
            tr.test_top5.push_back(kNaN);
            tr.epoch_s.push_back(per_epoch);
            tr.samples_per_s.push_back(per_epoch > 0 ? per_epoch_samples / per_epoch : 0);
          }
          tr.train_s = pr.feature_seconds + r.seconds;
          if (!tr.test_loss.empty()) tr.final_test_loss = tr.test_loss.back();
        }
        if (!pr.ok) {
          error = pr.failure;
        } else {
          // Price full training: the whole model with its autoencoder, kCostBatches timed
          // batches of a fresh copy, scaled to the epochs the proxy ran.
          models::Model fresh = build_base(run);
          models::QuiltModel full(fresh, run.partition.cuts,
                                  {run.autoencoder.rate, run.autoencoder.kernel});
          trainers::Dataset sample = data;
          sample.train = trainers::stratified_subset(
              data.train, std::min<int64_t>(data.train.size(), kCostBatches * run.training.batch),
              run.data.seed);
          sample.test = trainers::stratified_subset(data.test, data.num_classes, run.data.seed);
          trainers::TrainOptions o = train_options(run, fresh->input_shape(), false);
          o.mode = trainers::Mode::kScratch;
          o.epochs = 1;
          o.eval_every_epoch = false;
          auto cost = trainers::train(full, sample, o);
          if (cost.samples > 0 && cost.seconds > 0) {
            tr.full_epoch_s = cost.seconds / static_cast<double>(cost.samples) *
                              static_cast<double>(data.train.size());
            if (tr.train_s > 0)
              tr.proxy_speedup =
                  static_cast<double>(run.training.epochs) * tr.full_epoch_s / tr.train_s;
          }
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        rec.failure = fmt::format("rank 0: {}", error);
        rec.failed_rank = 0;
      }
    }
    int bad = root && !error.empty() ? 1 : 0;
    mpi::check(MPI_Bcast(&bad, 1, MPI_INT, 0, comm), "MPI_Bcast");
    failed = bad != 0;
    // The proxy trains a fixed number of epochs; what the rule can say is whether the base whose
    // features it reconstructs was pretrained to convergence.
    if (pretrain_converged >= 0) {
      tr.converged = pretrain_converged;
      tr.converge_window = run.training.converge_window;
      tr.converge_margin_pt = run.training.converge_margin_pt;
    }
    return finish();
  }

  // scratch | freeze | finetune, data parallel over the ranks.
  trainers::TrainResult result;
  models::QuiltModel qm{nullptr};
  // The timeline (measurement.trace): the phases of every step, on rank 0's clock.
  const int64_t global_batch = std::max<int64_t>(1, run.training.batch);
  const int64_t steps =
      run.training.epochs * ((tr.train_samples + global_batch - 1) / global_batch);
  TraceRecorder trace(run.measurement.trace_batches(steps), 5);
  const double clock_offset = trace.enabled() ? clock_offset_to_rank0(comm) : 0.0;
  const double trace_origin = now_s() + clock_offset;
  try {
    qm = models::QuiltModel(base, run.partition.cuts,
                            {run.autoencoder.rate, run.autoencoder.kernel});
    trainers::TrainOptions o = train_options(run, base->input_shape(), print);
    o.mode = trainers::parse_mode(run.training.mode);
    if (!run.training.checkpoint.empty()) {
      const std::string path = substitute_id(run.training.checkpoint, run.id);
      o.checkpoint_path = path;
      int resume = root && std::filesystem::exists(path) ? 1 : 0;
      mpi::check(MPI_Bcast(&resume, 1, MPI_INT, 0, comm), "MPI_Bcast");
      if (resume) o.resume_from = path;
      tr.checkpoint = path;
      if (print && resume) fmt::print("  resuming from checkpoint {}\n", path);
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
    result = trainers::train(qm, data, o, parallel);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!agree(error)) return finish();
  if (trace.enabled()) {
    trace.shift(0, clock_offset);
    rec.trace = gather_trace(trace, trace_origin, 1.0, "wall", comm);
  }
  for (const auto& e : result.epochs) {
    tr.epoch.push_back(e.epoch);
    tr.phase.push_back(tr.mode == "freeze" ? (e.phase == 1 ? "freeze" : "unfreeze") : "train");
    tr.train_loss.push_back(e.train_loss);
    tr.train_top1.push_back(e.train_top1);
    // An epoch without evaluation has no test numbers (NaN), not zeros.
    const bool tested = e.test.samples > 0;
    tr.test_loss.push_back(tested ? e.test.loss : kNaN);
    tr.test_top1.push_back(tested ? e.test.top1 : kNaN);
    tr.test_top5.push_back(tested ? e.test.top5 : kNaN);
    tr.epoch_s.push_back(e.seconds);
    tr.samples_per_s.push_back(e.seconds > 0 ? static_cast<double>(e.samples) / e.seconds : 0);
    if (e.phase == 1 && (tr.mode == "freeze" || tr.mode == "finetune")) ++tr.phase1_epochs;
  }
  tr.train_s = result.seconds;
  if (run.training.converge_window > 0) {
    // The run is converged when its own last phase met the rule and so did its pretraining.
    tr.converged = result.converged && pretrain_converged != 0 ? 1 : 0;
    tr.converge_window = run.training.converge_window;
    tr.converge_margin_pt = run.training.converge_margin_pt;
  }
  tr.final_test_loss = result.final_test.loss;
  tr.final_top1 = result.final_test.top1;
  tr.final_top5 = result.final_test.top5;
  if (!result.ok) {
    failed = true;
    rec.failed_rank = 0;
    rec.failure = result.failure;
  }
  // boards.precision bf16 / int8: the trained model as a pipeline in that precision computes
  // it, on the test set, against float32 (rank 0; the weights are the same on every rank).
  if (!failed && root && tr.mode != "proxy" && !run.boards.precision.empty() &&
      run.boards.precision != "fp32") {
    try {
      precision_accuracy(*qm, run, data, tr);
      if (print)
        fmt::print("  {}: top-1 {:.2f}%, top-1 agreement with fp32 {:.2f}%\n", tr.precision,
                   100 * tr.precision_top1, 100 * tr.precision_agreement);
    } catch (const std::exception& e) {
      failed = true;
      rec.failed_rank = 0;
      rec.failure = fmt::format("evaluating in {}: {}", run.boards.precision, e.what());
    }
  }
  // Every rank saw the same averaged loss, but agree anyway: fail_fast must stop all ranks.
  int bad = failed ? 1 : 0;
  mpi::check(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce");
  failed = bad != 0;
  if (failed && root && rec.failure.empty()) rec.failure = "training failed on another rank";
  // The trained weights (base model and autoencoders), for pipeline runs: `model.weights` takes
  // this file with the same model, cuts and rate.
  if (!failed && root && !context.output.empty()) {
    try {
      auto dir = std::filesystem::path(context.output);
      dir = dir.parent_path() / (dir.stem().string() + ".weights");
      std::filesystem::create_directories(dir);
      const std::string path = (dir / (run.id + ".pt")).string();
      trainers::export_state_dict(*qm, path);
      rec.params["training.saved_weights"] = path;
      if (print) fmt::print("  trained weights: {}\n", path);
    } catch (const std::exception& e) {
      if (print) fmt::print("  (trained weights not saved: {})\n", e.what());
    }
  }
  return finish();
}

}  // namespace quilt::harness
