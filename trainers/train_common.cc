// What train() and train_proxy() share: the training enums' parsing, option validation, the
// optimizers, the learning-rate schedule and evaluation.
#include "trainers/train.h"

#include "common/text.h"
#include "trainers/fused_optim.h"
#include "trainers/train_detail.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

namespace quilt::trainers {

namespace detail {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(OptimizerKind kind,
                                                        const std::vector<torch::Tensor>& params,
                                                        double lr, double momentum,
                                                        double weight_decay) {
  if (kind == OptimizerKind::kAdam) {
    return std::make_unique<FusedAdam>(params,
                                       torch::optim::AdamOptions(lr).weight_decay(weight_decay));
  }
  return std::make_unique<FusedSgd>(
      params, torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(weight_decay));
}

// Rank `rank`'s contiguous share [begin, end) of `count` items split over `size` ranks.
std::pair<int64_t, int64_t> shard(int64_t count, int rank, int size) {
  return {count * rank / size, count * (rank + 1) / size};
}

// Element-wise sum over ranks through the averaging collective (mean x size).
void sum_over_ranks(std::vector<torch::Tensor>& tensors, const Parallel& parallel) {
  if (parallel.size <= 1) return;
  parallel.average(tensors);
  for (auto& t : tensors) t.mul_(parallel.size);
}

std::string lr_hint(double lr) { return fmt::format("lr {:g} too large?", lr); }

void set_lr(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

void check_input_shape(const models::Model& base, const Dataset& data) {
  if (data.sample_shape != base->input_shape()) {
    throw TrainerError(fmt::format(
        "dataset \"{}\" has samples of shape {} but model {} takes {} (use fit_to_model)",
        data.name, models::to_string(data.sample_shape), base->arch(),
        models::to_string(base->input_shape())));
  }
}

}  // namespace detail

using detail::now_s;
using detail::shard;
using detail::sum_over_ranks;

namespace {

int64_t topk_for(int64_t num_classes) { return num_classes > 5 ? 5 : 1; }

// The one parse of every training enum: the message lists the table's names.
template <typename E, size_t N>
E parse_named(const common::EnumTable<E, N>& table, const std::string& text, const char* what) {
  if (auto v = common::enum_parse(table, text)) return *v;
  throw TrainerError(fmt::format("unknown {} \"{}\"; valid: {}", what, text,
                                 common::join(common::enum_names(table))));
}
}  // namespace

Mode parse_mode(const std::string& text) { return parse_named(kModeNames, text, "training mode"); }

OptimizerKind parse_optimizer(const std::string& text) {
  return parse_named(kOptimizerNames, text, "optimizer");
}

LrSchedule parse_lr_schedule(const std::string& text) {
  return parse_named(kLrScheduleNames, text, "lr schedule");
}

double lr_at_epoch(LrSchedule schedule, double lr, int64_t epoch, int64_t phase_epochs,
                   double floor) {
  if (schedule == LrSchedule::kConstant || phase_epochs <= 0) return lr;
  if (epoch >= phase_epochs) return lr * floor;  // the hold
  const double t =
      static_cast<double>(std::max<int64_t>(epoch, 0)) / static_cast<double>(phase_epochs);
  return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(M_PI * t)));
}

void validate(const TrainOptions& o) {
  auto bad = [](const std::string& what) { throw TrainerError("training option " + what); };
  if (o.mode == Mode::kProxy) bad("mode proxy is trained by train_proxy(), not train()");
  if (!(o.lr > 0.0) || !std::isfinite(o.lr)) bad(fmt::format("lr {} must be finite and > 0", o.lr));
  if (!(o.momentum >= 0.0 && o.momentum < 1.0))
    bad(fmt::format("momentum {} must be in [0, 1)", o.momentum));
  if (!(o.weight_decay >= 0.0) || !std::isfinite(o.weight_decay)) {
    bad(fmt::format("weight_decay {} must be finite and >= 0", o.weight_decay));
  }
  if (o.batch_size < 1) bad(fmt::format("batch_size {} must be >= 1", o.batch_size));
  if (o.eval_batch_size < 1) bad(fmt::format("eval_batch_size {} must be >= 1", o.eval_batch_size));
  if (o.epochs < 0) bad(fmt::format("epochs {} must be >= 0", o.epochs));
  if (o.stop_after_epochs < 0) {
    bad(fmt::format("stop_after_epochs {} must be >= 0 (0 = no limit)", o.stop_after_epochs));
  }
  if (o.freeze_epochs < 1 && o.mode != Mode::kScratch) {
    bad(fmt::format("freeze_epochs {} must be >= 1", o.freeze_epochs));
  }
  if (!(o.settle_tolerance >= 0.0)) {
    bad(fmt::format("settle_tolerance {} must be >= 0", o.settle_tolerance));
  }
  if (o.converge_window < 0 || o.converge_window == 1) {
    bad(fmt::format("converge_window {} must be 0 (off) or >= 2", o.converge_window));
  }
  if (!(o.converge_margin >= 0.0) || !std::isfinite(o.converge_margin)) {
    bad(fmt::format("converge_margin {} must be finite and >= 0", o.converge_margin));
  }
  if (!(o.lr_floor >= 0.0 && o.lr_floor < 1.0))
    bad(fmt::format("lr_floor {} must be in [0, 1) (a fraction of lr)", o.lr_floor));
  if (o.lr_floor > 0.0 && o.lr_schedule == LrSchedule::kConstant)
    bad("lr_floor needs a decaying lr_schedule (cosine); a constant rate has no floor");
  if (o.hold_epochs < 0) bad(fmt::format("hold_epochs {} must be >= 0", o.hold_epochs));
  if (o.hold_epochs > 0) {
    if (o.lr_schedule == LrSchedule::kConstant)
      bad("hold_epochs needs a decaying lr_schedule (cosine): a constant rate is held already");
    if (!(o.lr_floor > 0.0))
      bad("hold_epochs needs lr_floor > 0: epochs held at a rate of 0 would be flat trivially");
    if (o.converge_window > o.hold_epochs)
      bad(
          fmt::format("converge_window {} exceeds hold_epochs {}: the rule judges held epochs "
                      "only, so it could never be met",
                      o.converge_window, o.hold_epochs));
  }
  if (o.converge_window > 0 && !o.eval_every_epoch) {
    bad("converge_window needs eval_every_epoch (the rule reads the test accuracy of every epoch)");
  }
  validate(o.augment);
}

void set_base_trainable(models::QuiltModel& model, bool trainable) {
  for (auto& p : model->base()->parameters()) p.set_requires_grad(trainable);
}

Evaluation evaluate(models::QuiltModel& model, const Split& split, int64_t num_classes,
                    int64_t batch_size, const Parallel& parallel) {
  const double t0 = now_s();
  c10::InferenceMode inference;  // no autograd records at all (cheaper than NoGradGuard)
  model->eval();
  const int64_t k = std::min<int64_t>(topk_for(num_classes), model->base()->num_classes());
  auto [begin, end] = shard(split.size(), parallel.rank, parallel.size);
  double loss_sum = 0.0, top1 = 0.0, topk = 0.0;
  for (int64_t i = begin; i < end; i += batch_size) {
    const int64_t n = std::min(batch_size, end - i);
    auto x = split.x.narrow(0, i, n);
    auto y = split.y.narrow(0, i, n);
    auto out = model->forward(x);
    loss_sum += torch::nn::functional::cross_entropy(
                    out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    auto pred = std::get<1>(out.topk(k, 1));
    auto hit = pred.eq(y.unsqueeze(1));
    top1 += hit.select(1, 0).sum().item<double>();
    topk += hit.any(1).sum().item<double>();
  }
  std::vector<torch::Tensor> sums{
      torch::tensor({loss_sum, top1, topk, static_cast<double>(end - begin)}, torch::kFloat64)};
  sum_over_ranks(sums, parallel);
  auto s = sums[0];
  Evaluation e;
  e.samples = static_cast<int64_t>(std::llround(s[3].item<double>()));
  if (e.samples > 0) {
    e.loss = s[0].item<double>() / e.samples;
    e.top1 = s[1].item<double>() / e.samples;
    e.top5 = s[2].item<double>() / e.samples;
  }
  e.seconds = now_s() - t0;
  return e;
}

}  // namespace quilt::trainers
