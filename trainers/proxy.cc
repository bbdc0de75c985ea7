// Autoencoder-only proxy training (train_proxy): the paper's cheap stand-in for accuracy loss.
#include "trainers/train.h"

#include "models/summary.h"
#include "models/zoo.h"
#include "trainers/fused_optim.h"
#include "trainers/train_detail.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

namespace quilt::trainers {
using detail::lr_hint;
using detail::make_optimizer;
using detail::now_s;
using detail::set_lr;

namespace {

void check_proxy_options(const models::Model& base, const Dataset& data,
                         const ProxyOptions& options) {
  detail::check_input_shape(base, data);
  if (options.rates.empty()) throw TrainerError("proxy training needs at least one rate (rates)");
  for (double r : options.rates) {
    if (!(r > 1.0) || !std::isfinite(r)) {
      throw TrainerError(
          fmt::format("proxy rate {} must be finite and > 1 (R = 1 has no autoencoder)", r));
    }
  }
  if (!(options.lr > 0.0) || options.batch_size < 1 || options.epochs < 1) {
    throw TrainerError(
        fmt::format("proxy options: lr {} must be > 0, batch_size {} >= 1, epochs {} >= 1",
                    options.lr, options.batch_size, options.epochs));
  }
}

// f_L(x) of every sample of `s`: the base's units up to `cut`, in chunks of 256.
torch::Tensor cut_features(models::Model base, const Split& s, const models::CutPoint& cut) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < s.size(); i += 256) {
    parts.push_back(base->forward_units(s.x.narrow(0, i, std::min<int64_t>(256, s.size() - i)), 0,
                                        cut.after_unit + 1));
  }
  if (parts.empty()) {
    std::vector<int64_t> shape{0};
    shape.insert(shape.end(), cut.shape.begin(), cut.shape.end());
    return torch::empty(shape);
  }
  return torch::cat(parts).contiguous();
}

// Test reconstruction error, per element as the training loss.
double test_mse(models::Autoencoder& ae, const torch::Tensor& test_f) {
  ae->eval();
  torch::NoGradGuard no_grad;
  double test_sum = 0.0;
  for (int64_t i = 0; i < test_f.size(0); i += 256) {
    auto t = test_f.narrow(0, i, std::min<int64_t>(256, test_f.size(0) - i));
    test_sum += torch::mse_loss(ae->forward(t), t, torch::Reduction::Sum).item<double>();
  }
  return test_f.numel() > 0 ? test_sum / static_cast<double>(test_f.numel()) : 0.0;
}

// One training epoch of `ae` on the features; false (result.failure set) when the loss stopped
// being finite.
bool proxy_epoch(models::Autoencoder& ae, torch::optim::Optimizer& optimizer,
                 const torch::Tensor& train_f, int64_t epoch, const ProxyOptions& options,
                 Progress& progress, ProxyRecord& rec, ProxyResult& result) {
  const int64_t n = train_f.size(0);
  const auto ae_params = ae->parameters();
  ae->train(true);
  at::Generator gen = at::detail::createCPUGenerator(batch_seed(options.seed, epoch, -1));
  auto perm = torch::randperm(n, gen, torch::kLong);
  progress.start_epoch(fmt::format("proxy R {:g} epoch {}/{}", rec.rate, epoch, options.epochs), n);
  double sum = 0.0;
  for (int64_t first = 0, b = 0; first < n; first += options.batch_size, ++b) {
    const int64_t count = std::min(options.batch_size, n - first);
    auto target = train_f.index_select(0, perm.narrow(0, first, count));
    clear_grads(ae_params);
    auto loss = torch::mse_loss(ae->forward(target), target);
    const double value = loss.item<double>();
    if (!std::isfinite(value)) {
      result.ok = false;
      result.failure = fmt::format(
          "reconstruction loss became {} for R {:g} at epoch {} batch {} ({})",
          std::isnan(value) ? "NaN" : "Inf", rec.rate, epoch, b + 1, lr_hint(options.lr));
      progress.message(result.failure);
      return false;
    }
    loss.backward();
    fill_missing_grads(ae_params);
    optimizer.step();
    sum += value * static_cast<double>(count);
    rec.samples += count;
    progress.advance(count, sum / static_cast<double>(first + count));
  }
  rec.train_mse.push_back(n > 0 ? sum / static_cast<double>(n) : 0.0);
  return true;
}

}  // namespace

ProxyResult train_proxy(models::Model base, const Dataset& data, const ProxyOptions& options) {
  check_proxy_options(base, data, options);
  const models::CutPoint cut = [&] {
    try {
      return base->cut(options.cut);
    } catch (const models::ModelError& e) {
      throw TrainerError(e.what());
    }
  }();
  ProxyResult result;
  result.cut = cut.name;
  result.cut_shape = cut.shape;
  Progress progress(options.progress, 0);

  // f_L(x) once for both splits: the base is frozen, so the features never change.
  const double t_feat = now_s();
  base->eval();
  const auto train_f = cut_features(base, data.train, cut);
  const auto test_f = cut_features(base, data.test, cut);
  result.feature_seconds = now_s() - t_feat;
  const auto summary = models::summarize(base);
  double per_sample = 0.0;
  for (size_t u = 0; u <= cut.after_unit; ++u)
    per_sample += static_cast<double>(summary.units[u].flops);
  result.feature_flops = per_sample * static_cast<double>(data.train.size() + data.test.size());

  for (size_t ri = 0; ri < options.rates.size(); ++ri) {
    const double rate = options.rates[ri];
    torch::manual_seed(options.seed + ri);
    models::Autoencoder ae(cut.shape, models::AutoencoderOptions{rate, options.kernel});
    auto optimizer = make_optimizer(options.optimizer, ae->parameters(), options.lr,
                                    options.momentum, options.weight_decay);
    ProxyRecord rec;
    rec.rate = rate;
    rec.effective_rate = models::effective_rate(cut.shape[0], rate);
    const double ae_flops = static_cast<double>(models::module_flops(*ae, cut.shape, nullptr));
    const double t0 = now_s();
    for (int64_t epoch = 1; epoch <= options.epochs; ++epoch) {
      set_lr(*optimizer, lr_at_epoch(options.lr_schedule, options.lr, epoch - 1, options.epochs,
                                     options.lr_floor));
      if (!proxy_epoch(ae, *optimizer, train_f, epoch, options, progress, rec, result)) {
        result.rates.push_back(rec);
        return result;
      }
      rec.test_mse.push_back(test_mse(ae, test_f));
      progress.end_epoch(fmt::format("train mse {:.5f} test mse {:.5f}", rec.train_mse.back(),
                                     rec.test_mse.back()));
    }
    rec.seconds = now_s() - t0;
    rec.train_flops = 3.0 * ae_flops * static_cast<double>(rec.samples);
    result.rates.push_back(rec);
  }
  return result;
}

}  // namespace quilt::trainers
