#include "harness/training_setup.h"

#include "backends/inference.h"
#include "backends/precision.h"
#include "harness/hash.h"
#include "harness/mpi.h"
#include "harness/planning.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <tuple>

namespace quilt::harness {

namespace detail {

// freeze and finetune: a phase 1 (freeze_epochs at most), then `epochs` more.
bool two_phases(const TrainingMode& mode) {
  return mode == trainers::Mode::kFreeze || mode == trainers::Mode::kFinetune;
}

// Phase 1's epochs at most: training.freeze_epochs, or half of training.epochs (at least 1) when
// it is unset; 0 for the modes with one phase.
int64_t phase1_epochs(const TrainingConfig& t) {
  if (!two_phases(t.mode)) return 0;
  return t.freeze_epochs > 0 ? t.freeze_epochs : std::max<int64_t>(1, t.epochs / 2);
}

std::string data_source(const RunConfig& run) {
  if (!run.data.path.empty()) return run.data.path;
  switch (run.data.kind) {
    case DataKind::kSynthetic:
      return "generated";
    case DataKind::kFashionMnist:
      return "/usr/share/datasets/fashion-mnist";
    default:
      return "default location of " + to_string(run.data.kind);
  }
}

// The data a run trains on, fitted to the model's input. train_samples is applied by the caller
// (after pretraining, which uses the full split).
trainers::Dataset load_data(const RunConfig& run, const models::Model& base) {
  trainers::DataOptions o;
  o.kind = run.data.kind;
  o.root = run.data.path;
  o.seed = run.data.seed;
  o.test_samples = run.training.test_samples;
  if (run.data.kind == DataKind::kSynthetic) {
    o.synthetic_shape = base->input_shape();
    o.synthetic_classes = std::max<int64_t>(2, std::min<int64_t>(base->num_classes(), 10));
  }
  trainers::Dataset data = trainers::fit_to_model(trainers::load_dataset(o), base->input_shape());
  if (data.num_classes > base->num_classes())
    throw trainers::DataError(fmt::format(
        "{} has {} classes but the model has {} outputs; set model.classes: {}",
        to_string(run.data.kind), data.num_classes, base->num_classes(), data.num_classes));
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
       {"training.seed", "training.converge_window", "training.converge_margin_pt", "model.width",
        "training.lr_schedule", "training.lr_floor", "training.hold_epochs", "model.path"})
    if (auto it = run.params.find(k); it != run.params.end())
      key += fmt::format(";{}={}", k, it->second);
  auto dir = std::filesystem::path(context.output).parent_path();
  if (dir.empty()) dir = ".";
  return (dir / ".quilt-cache" / ("pretrained-" + hex_digest(key).substr(0, 16) + ".pt")).string();
}

// The settings TrainOptions and ProxyOptions take alike from the training section: the optimizer,
// its learning rate, schedule, momentum and weight decay, the batch, and the shuffling seed.
template <typename Options>
Options optimizer_settings(const RunConfig& run) {
  const auto& t = run.training;
  Options o;
  std::tie(o.optimizer, o.lr, o.lr_schedule, o.momentum, o.weight_decay, o.batch_size) =
      std::tie(t.optimizer, t.lr, t.lr_schedule, t.momentum, t.weight_decay, t.batch);
  o.lr_floor = t.lr_floor;
  o.seed = shuffle_seed(run);
  return o;
}

trainers::TrainOptions train_options(const RunConfig& run, const models::Shape& input, bool print) {
  const auto& t = run.training;
  trainers::TrainOptions o = optimizer_settings<trainers::TrainOptions>(run);
  o.augment = augment_options(run, input);
  o.converge_window = t.converge_window;
  o.converge_margin = t.converge_margin_pt / 100.0;
  o.hold_epochs = t.hold_epochs;
  o.progress.style = print ? trainers::ProgressStyle::kAuto : trainers::ProgressStyle::kSilent;
  o.progress.line_interval_s = 30;
  o.settle_tolerance = t.settle_tolerance;
  if (two_phases(t.mode)) {
    const int64_t phase1 = phase1_epochs(t);
    o.freeze_epochs = phase1;
    o.epochs = t.epochs - phase1;
  } else {
    o.epochs = t.epochs;
  }
  return o;
}

// The one conversion from the file's training section to the proxy's options (rate and cut of
// the run's single autoencoder).
trainers::ProxyOptions proxy_options(const RunConfig& run) {
  trainers::ProxyOptions po = optimizer_settings<trainers::ProxyOptions>(run);
  po.rates = {run.autoencoder.rate};
  po.cut = run.partition.cuts.at(0);
  po.kernel = run.autoencoder.kernel;
  po.epochs = run.training.epochs;
  return po;
}

std::string fmt_pct(double x) { return std::isnan(x) ? "-" : fmt::format("{:.2f}%", 100 * x); }

// Top-1 accuracy of `qm` compiled in run.boards.precision on the test set, and top-1 agreement
// with the float32 model (eval mode). int8 calibrates on the first boards.calibration_batches
// training batches of training.batch samples.
void precision_accuracy(models::QuiltModelImpl& qm, const RunConfig& run,
                        const trainers::Dataset& data, results::TrainingRecord& tr) {
  const backends::Precision precision = run.boards.precision.value();
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
  tr.precision = precision_name(run.boards.precision);
  tr.precision_top1 = offset > 0 ? static_cast<double>(correct) / offset : kNaN;
  tr.precision_agreement = offset > 0 ? static_cast<double>(agree) / offset : kNaN;
}

}  // namespace detail

using detail::phase1_epochs;
using detail::two_phases;

std::string stand_in_note(DataKind kind, const std::string& arch) {
  std::string note;
  const std::string data_kind = to_string(kind);
  const bool uci = data_kind.rfind("uci-", 0) == 0;
  if (kind == DataKind::kFashionMnist)
    note = arch == "mlp" ? "Fashion-MNIST instead of MNIST"
                         : "Fashion-MNIST (28x28 grey, 10 classes) instead of ImageNet/CIFAR-10";
  else if (kind == DataKind::kSynthetic)
    note = "synthetic Gaussian classes instead of the paper's data";
  else if (uci && arch != "mlp")
    note = fmt::format("UCI {} instead of ImageNet/CIFAR-10", data_kind.substr(4));
  if (!note.empty() && arch == "resnet18") note += "; ResNet-18 instead of ResNet-50";
  return note;
}

std::string training_config_error(const RunConfig& run, std::string* key) {
  const auto& t = run.training;
  if (t.mode == trainers::Mode::kProxy) {
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
  if (two_phases(t.mode) && t.pretrain_epochs == 0 && run.model.weights == "random") {
    *key = "model.weights";
    return fmt::format(
        "`{}` retrains a pretrained model (the paper: ImageNet weights, then the autoencoders are "
        "inserted), but model.weights is `random` and training.pretrain_epochs is 0: set "
        "model.weights to a state_dict file saved from Python (e.g. torchvision's "
        "resnet50(weights=\"IMAGENET1K_V1\").state_dict(), see README.md \"Pretrained "
        "weights\"), or training.pretrain_epochs > 0 to pretrain here",
        to_string(t.mode));
  }
  if (two_phases(t.mode)) {
    const int64_t phase1 = phase1_epochs(t);
    if (t.epochs <= phase1) {
      *key = "training.epochs";
      return fmt::format(
          "`{}` runs at most training.freeze_epochs = {} phase-1 epochs and then training.epochs - "
          "freeze_epochs phase-2 epochs; training.epochs = {} leaves none: raise it above {}",
          to_string(t.mode), phase1, t.epochs, phase1);
    }
  }
  if (t.converge_window > 0 && t.hold_epochs == 0 && t.mode && t.mode != trainers::Mode::kProxy) {
    const int64_t phase1 = phase1_epochs(t);
    if (t.epochs - phase1 < t.converge_window) {
      *key = "training.converge_window";
      return fmt::format(
          "the rule needs {} epochs of the last phase, but training.epochs = {} allows {}: raise "
          "training.epochs (the maximum) or lower the window",
          t.converge_window, t.epochs, t.epochs - phase1);
    }
  }
  if (t.converge_window > 0 && t.hold_epochs == 0 && t.pretrain_epochs > 0 &&
      t.pretrain_epochs < t.converge_window) {
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
  if (t.mode && run.partition.automatic) {
    *key = "partition.cuts";
    return "training runs place autoencoders at named cuts; `cuts: auto` applies to pipeline runs";
  }
  return "";
}

}  // namespace quilt::harness
