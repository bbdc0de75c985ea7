#include "trainers/train.h"

#include "models/state_dict.h"
#include "models/summary.h"
#include "trainers/checkpoint.h"
#include "trainers/checkpoint_io.h"
#include "trainers/fused_optim.h"
#include "trainers/train_detail.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <optional>

namespace quilt::trainers {
using detail::lr_hint;
using detail::make_optimizer;
using detail::now_s;
using detail::set_lr;
using detail::shard;
using detail::sum_over_ranks;

namespace {

int64_t count_elements(const std::vector<torch::Tensor>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

void check_fits(models::QuiltModel& model, const Dataset& data) {
  const auto base = model->base();
  detail::check_input_shape(base, data);
  if (data.num_classes > base->num_classes()) {
    throw TrainerError(fmt::format("dataset \"{}\" has {} classes but model {} has {} outputs",
                                   data.name, data.num_classes, base->arch(), base->num_classes()));
  }
  if (data.train.size() == 0) {
    throw TrainerError(fmt::format("dataset \"{}\" has no training samples", data.name));
  }
}

// Test top-1 of the epochs of `phase` so far (the series the convergence rule reads).
std::vector<double> final_phase_top1(const std::vector<EpochRecord>& epochs, int phase) {
  std::vector<double> out;
  for (const auto& e : epochs)
    if (e.phase == phase) out.push_back(e.test.samples > 0 ? e.test.top1 : std::nan(""));
  return out;
}

// "test loss 0.4102 top1 0.8512 top5 0.9901" for the console; top-5 only when it can differ from
// top-1 (more than 5 classes); "test —" when the epoch had no evaluation.
std::string test_summary(const Evaluation& test, int64_t num_classes) {
  if (test.samples == 0) return "test \u2014";
  std::string out = fmt::format("test loss {:.4f} top1 {:.4f}", test.loss, test.top1);
  if (num_classes > 5) out += fmt::format(" top5 {:.4f}", test.top5);
  return out;
}

// One call of train(): the loop over phases, epochs and batches, and what it accumulates.
class TrainLoop {
 public:
  TrainLoop(models::QuiltModel& model, const Dataset& data, const TrainOptions& options,
            const Parallel& parallel)
      : model_(model),
        data_(data),
        options_(options),
        parallel_(parallel),
        two_phase_(options.mode == Mode::kFreeze || options.mode == Mode::kFinetune),
        frozen_phase1_(options.mode == Mode::kFreeze),
        num_phases_(two_phase_ ? 2 : 1) {}

  TrainResult run() {
    torch::serialize::InputArchive optimizer_archive;
    bool resumed = false;
    if (!options_.resume_from.empty()) {
      detail::read_checkpoint(options_.resume_from, model_, options_.mode, options_.seed, &state_,
                              &optimizer_archive);
      resumed = true;
    } else if (!options_.pretrained.empty()) {
      models::load_state_dict(*model_->base(), options_.pretrained);
    }
    progress_.emplace(options_.progress, parallel_.rank);
    result_.resumed_epochs = state_.epochs_done;
    result_.epochs = state_.epochs;
    result_.phases = state_.phases;
    for (const auto& e : result_.epochs) {
      result_.seconds += e.seconds;
      result_.samples += e.samples;
    }
    optimizer_ = start_phase(state_.phase);
    if (resumed) optimizer_->load(optimizer_archive);
    n_train_ = data_.train.size();
    batches_ = (n_train_ + options_.batch_size - 1) / options_.batch_size;
    double forward_flops = 0.0;
    try {
      forward_flops =
          static_cast<double>(models::module_flops(*model_, data_.sample_shape, nullptr));
    } catch (const std::exception&) {
      forward_flops = 0.0;  // a layer the summary does not know: the FLOP estimate stays 0
    }
    while (state_.phase <= num_phases_) {
      // A run resumed from a checkpoint written after its last phase had converged is complete.
      if (options_.converge_window > 0 && state_.phase == num_phases_ && rule_may_stop() &&
          is_flat(final_phase_top1(result_.epochs, num_phases_), options_.converge_window,
                  options_.converge_margin))
        break;
      if (state_.phase_epochs >= phase_epochs_max(state_.phase)) {
        // A phase with no epochs left (epochs = 0, or a resumed run that was already at its end).
        if (state_.phase == num_phases_) break;
        next_phase();
        continue;
      }
      EpochRecord rec;
      if (!run_epoch(rec)) return result_;
      if (end_epoch(rec)) break;
    }
    return finish(forward_flops);
  }

 private:
  std::vector<torch::Tensor> trainable(int phase) const {
    return frozen_phase1_ && phase == 1 ? model_->autoencoder_parameters() : model_->parameters();
  }
  int64_t phase_epochs_max(int phase) const {
    if (two_phase_ && phase == 1) return options_.freeze_epochs;
    return options_.epochs + (options_.epochs > 0 ? options_.hold_epochs : 0);
  }
  // The epochs over which phase `phase`'s schedule decays (the hold comes after them).
  int64_t decay_epochs(int phase) const {
    return two_phase_ && phase == 1 ? options_.freeze_epochs : options_.epochs;
  }
  // Whether the last converge_window epochs of the last phase may stop it: always under a
  // constant rate; with a hold, once they are all held epochs; never under a bare anneal.
  bool rule_may_stop() const {
    if (options_.lr_schedule == LrSchedule::kConstant) return true;
    return options_.hold_epochs > 0 &&
           state_.phase_epochs - options_.epochs >= options_.converge_window;
  }

  std::unique_ptr<torch::optim::Optimizer> start_phase(int phase) {
    set_base_trainable(model_, !(frozen_phase1_ && phase == 1));
    auto params = trainable(phase);
    auto opt = make_optimizer(options_.optimizer, params, options_.lr, options_.momentum,
                              options_.weight_decay);
    if (static_cast<int>(result_.phases.size()) < phase) {
      PhaseRecord rec;
      rec.phase = phase;
      rec.trains = frozen_phase1_ && phase == 1 ? "autoencoders" : "all";
      rec.trainable_params = count_elements(params);
      result_.phases.push_back(rec);
      const std::string what =
          rec.trains == "all" ? "all weights" : "the autoencoders only (base frozen)";
      progress_->message(
          fmt::format("phase {}: training {} ({} parameters)", phase, what, rec.trainable_params));
    }
    return opt;
  }

  void next_phase() {
    ++state_.phase;
    state_.phase_epochs = 0;
    state_.prev_loss = std::numeric_limits<double>::quiet_NaN();
    optimizer_ = start_phase(state_.phase);
  }

  // The training pass of one epoch into `rec`; false when the loss stopped being finite
  // (result_ says why).
  bool run_epoch(EpochRecord& rec) {
    const int64_t epoch = state_.epochs_done + 1;
    model_->train(true);
    if (frozen_phase1_ && state_.phase == 1) model_->base()->train(false);
    // All randomness of the epoch comes from (seed, epoch, batch): a resumed run replays it.
    at::Generator gen = at::detail::createCPUGenerator(batch_seed(options_.seed, epoch, -1));
    const auto perm = torch::randperm(n_train_, gen, torch::kLong);
    progress_->start_epoch(
        two_phase_ ? fmt::format("phase {} epoch {} ({}/{})", state_.phase, epoch,
                                 state_.phase_epochs + 1, phase_epochs_max(state_.phase))
                   : fmt::format("epoch {}/{}{}", epoch, phase_epochs_max(1),
                                 state_.phase_epochs >= options_.epochs ? " (held)" : ""),
        n_train_);
    set_lr(*optimizer_, lr_at_epoch(options_.lr_schedule, options_.lr, state_.phase_epochs,
                                    decay_epochs(state_.phase), options_.lr_floor));
    const double t0 = now_s();
    EpochSums sums;
    const auto params = trainable(state_.phase);
    for (int64_t b = 0; b < batches_; ++b, ++step_)
      if (!train_batch(b, epoch, perm, params, sums)) return false;
    rec.phase = state_.phase;
    rec.epoch = epoch;
    rec.seconds = now_s() - t0;
    rec.samples = sums.seen;
    rec.train_loss = sums.seen > 0 ? sums.loss / static_cast<double>(sums.seen) : 0.0;
    rec.train_top1 = sums.seen > 0 ? sums.correct / static_cast<double>(sums.seen) : 0.0;
    return true;
  }

  struct EpochSums {
    double loss = 0.0, correct = 0.0;
    int64_t seen = 0;
  };

  // This rank's shard of global batch `b` (of `count` samples); augmentation draws on the
  // global batch so each sample's draw does not depend on the rank count.
  std::pair<torch::Tensor, torch::Tensor> batch_shard(int64_t b, int64_t epoch,
                                                      const torch::Tensor& perm, int64_t count,
                                                      int64_t lo, int64_t hi) const {
    const auto& train = data_.train;
    const int64_t first = b * options_.batch_size;
    if (options_.augment.enabled()) {
      auto idx = perm.narrow(0, first, count);
      return {augment(train.x.index_select(0, idx), options_.augment,
                      batch_seed(options_.seed, epoch, b))
                  .narrow(0, lo, hi - lo),
              train.y.index_select(0, idx).narrow(0, lo, hi - lo)};
    }
    auto idx = perm.narrow(0, first + lo, hi - lo);
    return {train.x.index_select(0, idx), train.y.index_select(0, idx)};
  }

  // One optimizer step on global batch `b`; false when the loss is not finite.
  bool train_batch(int64_t b, int64_t epoch, const torch::Tensor& perm,
                   const std::vector<torch::Tensor>& params, EpochSums& sums) {
    const auto& trace = options_.on_step_phase;
    double ts = trace ? now_s() : 0.0;
    // Ends the phase begun at `ts` and begins the next one.
    auto mark = [&](StepPhase phase) {
      const double t = now_s();
      trace(phase, step_, epoch, ts, t);
      ts = t;
    };
    const int64_t count = std::min(options_.batch_size, n_train_ - b * options_.batch_size);
    auto [lo, hi] = shard(count, parallel_.rank, parallel_.size);
    auto [x, y] = batch_shard(b, epoch, perm, count, lo, hi);
    // Gradients start undefined so that backward writes them rather than adding to zeros.
    clear_grads(params);
    if (trace) mark(StepPhase::kData);
    double batch_loss = 0.0, batch_correct = 0.0;
    if (hi > lo) {
      auto out = model_->forward(x);
      auto loss =
          torch::nn::functional::cross_entropy(
              out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
          static_cast<double>(count);
      if (trace) mark(StepPhase::kForward);
      loss.backward();
      batch_loss = loss.item<double>() * static_cast<double>(count);
      batch_correct = out.detach().argmax(1).eq(y).sum().item<double>();
      if (trace) mark(StepPhase::kBackward);
    }
    fill_missing_grads(params);  // what zero_grad() + backward leaves for an unused parameter
    if (parallel_.size > 1) {
      std::vector<torch::Tensor> grads;
      grads.reserve(params.size() + 1);
      for (const auto& p : params) grads.push_back(p.grad());
      grads.push_back(torch::tensor({batch_loss, batch_correct}, torch::kFloat64));
      // Each rank's loss is its shard's sum over the global count: the sum over ranks is the
      // global batch's mean loss and its gradient.
      sum_over_ranks(grads, parallel_);
      batch_loss = grads.back()[0].item<double>();
      batch_correct = grads.back()[1].item<double>();
      if (trace) mark(StepPhase::kAllreduce);
    }
    if (!std::isfinite(batch_loss)) {
      result_.ok = false;
      result_.failure =
          fmt::format("loss became {} at epoch {} batch {} ({})",
                      std::isnan(batch_loss) ? "NaN" : "Inf", epoch, b + 1, lr_hint(options_.lr));
      progress_->message(result_.failure);
      return false;
    }
    optimizer_->step();
    if (trace) mark(StepPhase::kOptimizer);
    sums.loss += batch_loss;
    sums.correct += batch_correct;
    sums.seen += count;
    progress_->advance(count, sums.loss / static_cast<double>(sums.seen));
    return true;
  }

  // After an epoch's training pass: whether its phase ends, evaluation, the convergence rule,
  // the records, the next phase and the checkpoint. True when training ends here.
  bool end_epoch(EpochRecord& rec) {
    PhaseRecord& phase_rec = result_.phases[static_cast<size_t>(state_.phase - 1)];
    ++state_.epochs_done;
    ++state_.phase_epochs;
    state_.last_phase = state_.phase;
    bool phase_over = state_.phase_epochs >= phase_epochs_max(state_.phase);
    bool settled = false;
    if (two_phase_ && state_.phase == 1 && !phase_over && std::isfinite(state_.prev_loss) &&
        state_.prev_loss > 0.0 &&
        std::abs(rec.train_loss - state_.prev_loss) / state_.prev_loss <
            options_.settle_tolerance) {
      settled = phase_over = true;
    }
    state_.prev_loss = rec.train_loss;
    // The run ends with this epoch when no later phase has epochs (freeze with epochs = 0 is
    // phase 1 alone).
    bool last =
        phase_over && (state_.phase == num_phases_ || phase_epochs_max(state_.phase + 1) == 0);
    if (options_.eval_every_epoch || phase_over)
      rec.test =
          evaluate(model_, data_.test, data_.num_classes, options_.eval_batch_size, parallel_);
    if (converged_now(rec, last)) last = true;
    progress_->end_epoch(fmt::format("train loss {:.4f} acc {:.4f} | {}", rec.train_loss,
                                     rec.train_top1, test_summary(rec.test, data_.num_classes)));
    result_.epochs.push_back(rec);
    result_.seconds += rec.seconds;
    result_.samples += rec.samples;
    add_to_phase(phase_rec, rec, settled);
    if (phase_over && !last) {
      if (settled)
        progress_->message(fmt::format("phase 1 settled after {} epochs", phase_rec.epochs));
      next_phase();
      model_->train(true);
    }
    if (!options_.checkpoint_path.empty() && parallel_.rank == 0) {
      state_.epochs = result_.epochs;
      state_.phases = result_.phases;
      detail::write_checkpoint(options_.checkpoint_path, model_, *optimizer_, options_.mode,
                               options_.seed, state_);
    }
    if (last) return true;
    if (options_.stop_after_epochs > 0 &&
        state_.epochs_done - result_.resumed_epochs >= options_.stop_after_epochs) {
      result_.stopped = true;
      return true;
    }
    return false;
  }

  // The convergence rule ends the last phase early: its test accuracy has stopped moving. Under
  // a decaying schedule only over held epochs: three epochs that happen to agree while the rate
  // is still high are not convergence, so a bare anneal runs to its end and finish() applies
  // the rule there.
  bool converged_now(const EpochRecord& rec, bool last) {
    if (options_.converge_window <= 0 || state_.phase != num_phases_ || rec.test.samples <= 0 ||
        !rule_may_stop())
      return false;
    auto top1 = final_phase_top1(result_.epochs, state_.phase);
    top1.push_back(rec.test.top1);
    if (!is_flat(top1, options_.converge_window, options_.converge_margin)) return false;
    result_.converged = true;
    if (!last)
      progress_->message(fmt::format("converged: test top-1 of the last {} epochs within {:g} pt",
                                     options_.converge_window, 100 * options_.converge_margin));
    return true;
  }

  static void add_to_phase(PhaseRecord& phase_rec, const EpochRecord& rec, bool settled) {
    phase_rec.epochs += 1;
    phase_rec.seconds += rec.seconds;
    phase_rec.samples += rec.samples;
    phase_rec.test = rec.test;
    phase_rec.train_loss = rec.train_loss;
    phase_rec.train_top1 = rec.train_top1;
    phase_rec.settled = settled;
  }

  TrainResult finish(double forward_flops) {
    if (!result_.epochs.empty() && result_.epochs.back().test.samples > 0) {
      result_.final_test = result_.epochs.back().test;
    } else {
      result_.final_test =
          evaluate(model_, data_.test, data_.num_classes, options_.eval_batch_size, parallel_);
    }
    result_.train_flops = 3.0 * forward_flops * static_cast<double>(result_.samples);
    // Also for a resumed run whose last epochs were restored from the checkpoint.
    if (options_.converge_window > 0 && !result_.epochs.empty() && result_.ok) {
      result_.converged = is_flat(final_phase_top1(result_.epochs, result_.epochs.back().phase),
                                  options_.converge_window, options_.converge_margin) &&
                          result_.epochs.back().phase == num_phases_ &&
                          (options_.hold_epochs == 0 || rule_may_stop());
    }
    return result_;
  }

  models::QuiltModel& model_;
  const Dataset& data_;
  const TrainOptions& options_;
  const Parallel& parallel_;
  const bool two_phase_, frozen_phase1_;
  const int num_phases_;
  detail::RunState state_;
  std::optional<Progress> progress_;
  TrainResult result_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t n_train_ = 0, batches_ = 0;
  int64_t step_ = 0;  // over all epochs of this call, for on_step_phase
};

// Whether training keeps `model`'s convolution weights channels-last (NHWC). oneDNN convolves,
// and LibTorch pools and normalises, NHWC tensors without reordering them to and from its
// blocked layout on every call: a step of ResNet-18 at width 1/8 on 28x28 images ran 1.3-1.45x
// faster in Python's loop, and in an A/B of this trainer (QUILT_TRAIN_LAYOUT=nchw) NHWC was as
// fast or faster at width 1 too (resnet18-fmnist 583/470 against 417/472 samples/s). Not for
// transposed convolutions (no NHWC kernel in LibTorch 1.13: each call would copy) nor TorchScript
// modules (a user's `.view` of a conv's output requires the default layout).
bool trains_channels_last(models::QuiltModel& model) {
  if (const char* layout = std::getenv("QUILT_TRAIN_LAYOUT")) {  // A/B switch for benchmarks
    if (std::string(layout) == "nchw") return false;
  }
  if (model->base()->arch() == "torchscript") return false;
  bool conv = false;
  for (const auto& m : model->modules(/*include_self=*/false)) {
    if (m->as<torch::nn::ConvTranspose2d>() != nullptr) return false;
    conv = conv || m->as<torch::nn::Conv2d>() != nullptr;
  }
  return conv;
}

}  // namespace

// Every 4-D parameter of `model` stored in `format` (values unchanged; the tensors keep their
// identity, so optimizers and autograd see the same parameters). By strides, not by contiguity: a
// weight with one input channel ({out, 1, kh, kw}: the stem of a grey-scale model) is contiguous in
// both layouts, so contiguous(format) leaves its NCHW strides, and oneDNN then gives the stem an
// NCHW output (the layout comes from suggest_memory_format()): BatchNorm and max pooling ran on
// NCHW there (the pooling 5.8x slower: 711 against 123 us at 64x8x14x14).
void detail::store_weights(models::QuiltModel& model, torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) {
    if (p.dim() == 4 && (p.suggest_memory_format() != format || !p.is_contiguous(format))) {
      p.set_data(torch::empty_like(p, format).copy_(p));
    }
  }
}

TrainResult train(models::QuiltModel& model, const Dataset& data, const TrainOptions& options,
                  const Parallel& parallel) {
  validate(options);
  check_fits(model, data);
  if (parallel.size < 1 || parallel.rank < 0 || parallel.rank >= parallel.size) {
    throw TrainerError(fmt::format("data-parallel rank {} of size {} is not a valid place",
                                   parallel.rank, parallel.size));
  }
  if (parallel.size > 1 && !parallel.average) {
    throw TrainerError("data-parallel training over several ranks needs Parallel::average");
  }
  if (options.mode == Mode::kFreeze && model->autoencoder_parameters().empty()) {
    throw TrainerError(fmt::format(
        "weight freezing needs an autoencoder at a cut (R > 1), but the model is \"{}\"; use mode "
        "finetune or scratch for R = 1",
        describe(model)));
  }

  // Whatever way train() leaves (done, NaN, an exception such as a failed checkpoint write), the
  // model is left usable: every parameter trainable again, eval mode, weights in the default
  // (contiguous) layout that inference, export and the state_dict readers expect.
  struct Restore {
    models::QuiltModel& model;
    bool channels_last;  // the weights were made channels-last for this call
    ~Restore() {
      set_base_trainable(model, true);
      model->eval();
      if (channels_last) detail::store_weights(model, torch::MemoryFormat::Contiguous);
    }
  } restore{model, trains_channels_last(model)};
  if (restore.channels_last) detail::store_weights(model, torch::MemoryFormat::ChannelsLast);
  return TrainLoop(model, data, options, parallel).run();
}

}  // namespace quilt::trainers
