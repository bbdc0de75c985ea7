#include "trainers/train.h"

#include "models/zoo.h"
#include "tests/trainers/test_util.h"
#include "trainers/checkpoint.h"
#include "trainers/train_detail.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

namespace quilt::trainers {
namespace {

using testing::expect_error;

Dataset synthetic(models::Shape shape, int64_t classes = 4, int64_t samples = 800) {
  DataOptions o;
  o.synthetic_shape = std::move(shape);
  o.synthetic_classes = classes;
  o.synthetic_samples = samples;
  o.seed = 5;
  return make_synthetic(o);
}

models::QuiltModel mlp(int64_t features, int64_t classes, std::vector<std::string> cuts = {},
                       double rate = 1.0, uint64_t seed = 1) {
  torch::manual_seed(seed);
  return models::QuiltModel(models::make_model("mlp", {{features}, classes}), cuts, {rate, 1});
}

TrainOptions quiet(Mode mode = Mode::kScratch) {
  TrainOptions o;
  o.mode = mode;
  o.progress.style = ProgressStyle::kSilent;
  o.seed = 3;
  return o;
}

// quiet() training from scratch for `epochs` at learning rate `lr`.
TrainOptions scratch(int64_t epochs, double lr) {
  auto o = quiet();
  o.epochs = epochs;
  o.lr = lr;
  return o;
}

std::map<std::string, torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value().detach().clone();
  return out;
}

bool is_autoencoder(const std::string& name) { return name.rfind("ae_", 0) == 0; }

TEST(Train, ScratchBaselineLearnsSyntheticData) {
  auto data = synthetic({16});
  auto model = mlp(16, 4);
  auto r = train(model, data, scratch(3, 0.05));
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.epochs.size(), 3u);
  ASSERT_EQ(r.phases.size(), 1u);
  EXPECT_EQ(r.phases[0].trains, "all");
  EXPECT_EQ(r.samples, 3 * data.train.size());
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
  // Chance is 0.25; the classes overlap a little (about 85% is reachable).
  EXPECT_GT(r.final_test.top1, 0.7);
  EXPECT_EQ(r.final_test.samples, data.test.size());
  EXPECT_GT(r.train_flops, 0.0);
  std::printf("[ scratch synthetic mlp ] test top1 %.3f after 3 epochs\n", r.final_test.top1);
}

TEST(Train, ScratchWithThePapers512xAutoencoderLearnsIris) {
  DataOptions d;
  d.kind = DataKind::kUciIris;
  auto data = load_dataset(d);
  auto model = mlp(4, 3, {"after_hidden1"}, 512.0);
  ASSERT_EQ(model->traffic().at(0).wire_shape, (models::Shape{1}));
  auto o = quiet();
  o.optimizer = OptimizerKind::kAdam;
  o.lr = 3e-3;
  o.batch_size = 16;
  o.epochs = 25;
  o.eval_every_epoch = false;
  auto r = train(model, data, o);
  ASSERT_TRUE(r.ok) << r.failure;
  EXPECT_GT(r.final_test.top1, 0.8);                // chance 0.33
  EXPECT_EQ(r.final_test.top5, r.final_test.top1);  // 3 classes: top-5 is top-1
  std::printf("[ iris mlp R512 ] test top1 %.3f after 25 epochs\n", r.final_test.top1);
}

TEST(Train, FreezeTrainsOnlyAutoencodersInPhase1ThenEverything) {
  auto data = synthetic({16});
  auto o = quiet(Mode::kFreeze);
  o.freeze_epochs = 2;
  o.settle_tolerance = 0.0;
  o.epochs = 0;  // phase 1 only
  auto model = mlp(16, 4, {"after_hidden1"}, 8.0);
  const auto before = snapshot(*model);
  auto r = train(model, data, o);
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.phases.size(), 1u);
  EXPECT_EQ(r.phases[0].trains, "autoencoders");
  EXPECT_EQ(r.phases[0].epochs, 2);
  EXPECT_FALSE(r.phases[0].settled);
  int64_t ae_params = 0;
  for (const auto& p : model->autoencoder_parameters()) ae_params += p.numel();
  EXPECT_EQ(r.phases[0].trainable_params, ae_params);
  for (const auto& [name, t] : snapshot(*model)) {
    if (is_autoencoder(name)) {
      EXPECT_FALSE(torch::equal(t, before.at(name))) << name << " did not train in phase 1";
    } else {
      EXPECT_TRUE(torch::equal(t, before.at(name))) << name << " changed although frozen";
    }
  }
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.requires_grad());

  // The same start, then one phase-2 epoch: now the base changes too.
  o.epochs = 1;
  auto model2 = mlp(16, 4, {"after_hidden1"}, 8.0);
  auto r2 = train(model2, data, o);
  ASSERT_EQ(r2.phases.size(), 2u);
  EXPECT_EQ(r2.phases[1].trains, "all");
  EXPECT_EQ(r2.epochs.back().phase, 2);
  EXPECT_EQ(r2.epochs.back().epoch, 3);
  const auto after = snapshot(*model2);
  EXPECT_FALSE(torch::equal(after.at("fc1.weight"), before.at("fc1.weight")));
  EXPECT_GT(r2.final_test.top1, 0.5);
  std::printf("[ freeze synthetic mlp R8 ] phase 1 top1 %.3f, after phase 2 %.3f\n",
              r.final_test.top1, r2.final_test.top1);
}

TEST(Train, FreezeKeepsBatchNormStatisticsOfTheBaseInPhase1) {
  auto data = synthetic({3, 16, 16}, 3, 96);
  torch::manual_seed(2);
  models::QuiltModel model(models::make_model("resnet18", {{3, 16, 16}, 3}), {"after_layer2"},
                           {4.0, 1});
  const auto before = snapshot(*model);
  auto o = quiet(Mode::kFreeze);
  o.freeze_epochs = 1;
  o.epochs = 0;
  o.batch_size = 32;
  ASSERT_TRUE(train(model, data, o).ok);
  for (const auto& [name, t] : snapshot(*model)) {
    if (!is_autoencoder(name)) {
      EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
    }
  }
  EXPECT_FALSE(torch::equal(snapshot(*model).at("ae_after_layer2.encoder.weight"),
                            before.at("ae_after_layer2.encoder.weight")));
}

TEST(Train, Phase1EndsWhenTheLossSettles) {
  auto data = synthetic({16});
  auto model = mlp(16, 4, {"after_hidden2"}, 4.0);
  auto o = quiet(Mode::kFreeze);
  o.freeze_epochs = 10;
  o.settle_tolerance = 100.0;  // any change is small: settles at the second epoch
  o.epochs = 1;
  auto r = train(model, data, o);
  ASSERT_EQ(r.phases.size(), 2u);
  EXPECT_TRUE(r.phases[0].settled);
  EXPECT_EQ(r.phases[0].epochs, 2);
  EXPECT_EQ(r.epochs.size(), 3u);
}

TEST(Train, FreezeWithoutAutoencoderIsRefused) {
  auto data = synthetic({16});
  auto model = mlp(16, 4, {"after_hidden1"}, 1.0);
  expect_error<TrainerError>(
      [&] { train(model, data, quiet(Mode::kFreeze)); },
      {"weight freezing needs an autoencoder", "R > 1", "mlp", "after_hidden1"});
}

TEST(Train, FinetuneStartsFromPretrainedBaseWeights) {
  testing::ScratchDir dir;
  auto data = synthetic({16});
  auto base = mlp(16, 4);
  auto pre = train(base, data, scratch(3, 0.05));
  export_state_dict(*base->base(), dir.file("base.pt"));

  auto model = mlp(16, 4, {"after_hidden1"}, 4.0, /*seed=*/9);
  auto ft = quiet(Mode::kFinetune);
  ft.pretrained = dir.file("base.pt");
  ft.freeze_epochs = 1;
  ft.epochs = 1;
  ft.lr = 0.01;
  auto r = train(model, data, ft);
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.phases.size(), 2u);
  EXPECT_EQ(r.phases[0].trains, "all");  // no freezing
  // A pretrained start with a fresh autoencoder recovers within one epoch.
  EXPECT_GT(r.epochs.front().test.top1, 0.6);
  std::printf("[ finetune mlp R4 from pretrained (top1 %.3f) ] after phase 1 %.3f, phase 2 %.3f\n",
              pre.final_test.top1, r.phases[0].test.top1, r.phases[1].test.top1);
}

TEST(Train, NanLossStopsWithAReason) {
  auto data = synthetic({16});
  auto model = mlp(16, 4);
  auto o = scratch(3, 1e12);
  o.momentum = 0.0;
  auto r = train(model, data, o);
  ASSERT_FALSE(r.ok);
  EXPECT_NE(r.failure.find("loss became"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("at epoch 1 batch"), std::string::npos) << r.failure;
  EXPECT_NE(r.failure.find("lr 1e+12 too large?"), std::string::npos) << r.failure;
}

TEST(Train, ProxyReconstructionLossDecreasesAndGrowsWithRate) {
  auto data = synthetic({16}, 4, 600);
  torch::manual_seed(4);
  auto base = models::make_model("mlp", {{16}, 4});
  const auto before = snapshot(*base);
  ProxyOptions o;
  o.cut = "after_hidden1";
  o.rates = {2.0, 64.0};
  o.epochs = 4;
  o.progress.style = ProgressStyle::kSilent;
  auto r = train_proxy(base, data, o);
  ASSERT_TRUE(r.ok) << r.failure;
  ASSERT_EQ(r.rates.size(), 2u);
  EXPECT_EQ(r.cut_shape, (models::Shape{512}));
  for (const auto& rec : r.rates) {
    ASSERT_EQ(rec.train_mse.size(), 4u);
    for (size_t e = 1; e < rec.train_mse.size(); ++e) {
      EXPECT_LT(rec.train_mse[e], rec.train_mse[e - 1]) << "R " << rec.rate << " epoch " << e + 1;
      EXPECT_LT(rec.test_mse[e], rec.test_mse[e - 1]) << "R " << rec.rate << " epoch " << e + 1;
    }
    EXPECT_GT(rec.train_flops, 0.0);
  }
  EXPECT_LT(r.rates[0].train_mse.back(), 0.5 * r.rates[0].train_mse.front());
  EXPECT_LT(r.rates[0].test_mse.back(), r.rates[1].test_mse.back());
  EXPECT_EQ(r.rates[1].effective_rate, 64.0);
  for (const auto& [name, t] : snapshot(*base))
    EXPECT_TRUE(torch::equal(t, before.at(name))) << name;
  std::printf("[ proxy mlp after_hidden1 ] test mse R2 %.4f R64 %.4f\n", r.rates[0].test_mse.back(),
              r.rates[1].test_mse.back());
  o.cut = "nowhere";
  expect_error<TrainerError>([&] { train_proxy(base, data, o); }, {"nowhere", "after_hidden1"});
  o.cut = "after_hidden1";
  o.rates = {1.0};
  expect_error<TrainerError>([&] { train_proxy(base, data, o); }, {"rate 1", "> 1"});
}

TEST(Train, ResNetOnFashionMnistWithAugmentation) {
  auto data = testing::fashion_mnist(64, 64);
  torch::manual_seed(0);
  models::QuiltModel model(models::make_model("resnet18", {{1, 28, 28}, 10}), {}, {});
  auto o = quiet();
  o.epochs = 1;
  o.batch_size = 32;
  o.augment.set_crop_padding(2).set_horizontal_flip(true).set_skew(0.1);
  auto r = train(model, fit_to_model(data, {1, 28, 28}), o);
  ASSERT_TRUE(r.ok) << r.failure;
  EXPECT_EQ(r.samples, 64);
  EXPECT_GE(r.final_test.top5, r.final_test.top1);  // 10 classes: a real top-5
  EXPECT_TRUE(std::isfinite(r.final_test.loss));
}

// Conv weights go channels-last by their strides: the grey-scale stem's {8, 1, 7, 7} weight is
// contiguous in both layouts, and only restriding makes oneDNN give the stem a channels-last output
// (so that its BatchNorm is fused and its max pooling takes the channels-last kernel). Training
// leaves every 4-D parameter in the default layout.
TEST(Train, WeightsGoChannelsLastByStridesAndComeBack) {
  torch::manual_seed(0);
  models::QuiltModel model(models::make_model("resnet18", {{1, 28, 28}, 10, "", {}, 0.125}), {},
                           {});
  const auto before = snapshot(*model);
  auto stem = model->named_parameters()["conv1.weight"];
  ASSERT_EQ(stem.sizes(), (std::vector<int64_t>{8, 1, 7, 7}));
  detail::store_weights(model, torch::MemoryFormat::ChannelsLast);
  for (const auto& p : model->named_parameters()) {
    if (p.value().dim() != 4) continue;
    EXPECT_EQ(p.value().suggest_memory_format(), torch::MemoryFormat::ChannelsLast) << p.key();
    EXPECT_TRUE(torch::equal(p.value(), before.at(p.key()))) << p.key();
  }
  EXPECT_TRUE(stem.is_same(model->named_parameters()["conv1.weight"]));  // same parameter
  auto x = torch::randn({4, 1, 28, 28});
  EXPECT_TRUE(torch::conv2d(x, stem, {}, 2, 3).is_contiguous(torch::MemoryFormat::ChannelsLast));
  detail::store_weights(model, torch::MemoryFormat::Contiguous);
  EXPECT_EQ(stem.strides(), (std::vector<int64_t>{49, 49, 7, 1}));

  auto o = scratch(1, 0.01);
  o.batch_size = 16;
  auto r = train(model, synthetic({1, 28, 28}, 10, 64), o);
  ASSERT_TRUE(r.ok) << r.failure;
  for (const auto& p : model->named_parameters()) {
    if (p.value().dim() != 4) continue;
    EXPECT_EQ(p.value().strides(), p.value().contiguous().strides()) << p.key();
    EXPECT_EQ(p.value().suggest_memory_format(), torch::MemoryFormat::Contiguous) << p.key();
  }
}

TEST(Train, OptionsAndNamesAreValidated) {
  EXPECT_EQ(parse_mode("freeze"), Mode::kFreeze);
  EXPECT_EQ(to_string(Mode::kFinetune), "finetune");
  EXPECT_EQ(parse_optimizer("adam"), OptimizerKind::kAdam);
  expect_error<TrainerError>([] { parse_mode("frozen"); },
                             {"\"frozen\"", "scratch, freeze, finetune, proxy"});
  expect_error<TrainerError>([] { parse_optimizer("rmsprop"); }, {"sgd, adam"});
  expect_error<TrainerError>([] { parse_progress_style("fancy"); }, {"auto, bar, lines, silent"});
  auto o = quiet();
  o.lr = -1;
  expect_error<TrainerError>([&] { validate(o); }, {"lr -1"});
  o = quiet();
  o.batch_size = 0;
  expect_error<TrainerError>([&] { validate(o); }, {"batch_size 0"});
  o = quiet(Mode::kProxy);
  expect_error<TrainerError>([&] { validate(o); }, {"train_proxy"});
  auto data = synthetic({8});
  auto model = mlp(16, 4);
  expect_error<TrainerError>([&] { train(model, data, quiet()); },
                             {"shape 8", "takes 16", "fit_to_model"});
}

// The 16-input MLP trained on synthetic data with lr 0.05 under `schedule` for `epochs`, with the
// convergence rule (window, margin) when window > 0.
TrainResult train_mlp(LrSchedule schedule, int64_t epochs, int64_t window = 0,
                      double margin = 0.003, int64_t hold = 0, double floor = 0.0) {
  auto data = synthetic({16});
  auto model = mlp(16, 4);
  auto o = scratch(epochs, 0.05);
  o.lr_schedule = schedule;
  o.converge_window = window;
  o.converge_margin = margin;
  o.hold_epochs = hold;
  o.lr_floor = floor;
  auto r = train(model, data, o);
  EXPECT_TRUE(r.ok) << r.failure;
  return r;
}

TEST(Train, CosineScheduleStartsAtLrAndDecaysPerPhaseEpoch) {
  EXPECT_EQ(parse_lr_schedule("cosine"), LrSchedule::kCosine);
  expect_error<TrainerError>([] { parse_lr_schedule("step"); }, {"\"step\"", "constant, cosine"});
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kConstant, 0.1, 7, 8), 0.1);
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kCosine, 0.1, 0, 8), 0.1);
  EXPECT_NEAR(lr_at_epoch(LrSchedule::kCosine, 0.1, 4, 8), 0.05, 1e-15);
  EXPECT_GT(lr_at_epoch(LrSchedule::kCosine, 0.1, 7, 8), 0.0);  // never 0 in the last epoch
  EXPECT_LT(lr_at_epoch(LrSchedule::kCosine, 0.1, 7, 8), 0.004);
  // Applied: epoch 1 of a cosine run equals the constant run bit for bit (same lr); epoch 2
  // (lr halved over 2 epochs) does not.
  const auto constant = train_mlp(LrSchedule::kConstant, 2),
             cosine = train_mlp(LrSchedule::kCosine, 2);
  ASSERT_EQ(constant.epochs.size(), 2u);
  ASSERT_EQ(cosine.epochs.size(), 2u);
  EXPECT_EQ(constant.epochs[0].train_loss, cosine.epochs[0].train_loss);
  EXPECT_NE(constant.epochs[1].train_loss, cosine.epochs[1].train_loss);
}

TEST(Train, UnderACosineScheduleTheConvergenceRuleJudgesTheEndAndDoesNotStopEarly) {
  // converge_margin 1.0: every window is flat.
  const auto constant = train_mlp(LrSchedule::kConstant, 4, 2, 1.0);
  const auto cosine = train_mlp(LrSchedule::kCosine, 4, 2, 1.0);
  EXPECT_EQ(constant.epochs.size(), 2u);  // stopped as soon as 2 epochs agreed
  EXPECT_TRUE(constant.converged);
  EXPECT_EQ(cosine.epochs.size(), 4u);  // the whole schedule
  EXPECT_TRUE(cosine.converged);
}

TEST(Train, CosineDecaysToItsFloorAndHoldsThere) {
  // floor 0.1 of lr 0.1: the decay starts at 0.1, passes 0.055 halfway, stays above 0.01 in its
  // last epoch; the held epochs after it run at exactly 0.01.
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kCosine, 0.1, 0, 8, 0.1), 0.1);
  EXPECT_NEAR(lr_at_epoch(LrSchedule::kCosine, 0.1, 4, 8, 0.1), 0.055, 1e-15);
  EXPECT_GT(lr_at_epoch(LrSchedule::kCosine, 0.1, 7, 8, 0.1), 0.01);
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kCosine, 0.1, 8, 8, 0.1), 0.01);
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kCosine, 0.1, 11, 8, 0.1), 0.01);
  EXPECT_DOUBLE_EQ(lr_at_epoch(LrSchedule::kConstant, 0.1, 11, 8, 0.0), 0.1);
}

TEST(Train, WithAHoldTheRuleJudgesHeldEpochsOnlyAndStopsOnceTheyAreFlat) {
  // margin 1.0: every window is flat, so the rule stops as early as it may: after the 3 decay
  // epochs and the first 2 held ones (of at most 4), never inside the decay.
  const auto held = train_mlp(LrSchedule::kCosine, 3, 2, 1.0, 4, 0.1);
  EXPECT_EQ(held.epochs.size(), 5u);
  EXPECT_TRUE(held.converged);
  // margin 0: the rule stops only when two held epochs agree exactly; converged says whether
  // the last two did, and a run that is not converged ran the whole hold.
  const auto strict = train_mlp(LrSchedule::kCosine, 3, 2, 0.0, 4, 0.1);
  ASSERT_GE(strict.epochs.size(), 5u);
  const size_t n = strict.epochs.size();
  EXPECT_EQ(strict.converged, strict.epochs[n - 1].test.top1 == strict.epochs[n - 2].test.top1);
  if (!strict.converged) EXPECT_EQ(n, 7u);
}

TEST(Train, AHoldNeedsACosineScheduleAFloorAndRoomForTheWindow) {
  auto o = quiet();
  o.hold_epochs = 3;
  expect_error<TrainerError>([&] { validate(o); }, {"hold_epochs", "cosine"});
  o.lr_floor = 0.1;
  expect_error<TrainerError>([&] { validate(o); }, {"lr_floor needs", "cosine"});
  o.lr_schedule = LrSchedule::kCosine;
  o.lr_floor = 0.0;
  expect_error<TrainerError>([&] { validate(o); }, {"lr_floor > 0", "trivially"});
  o.lr_floor = 0.1;
  o.converge_window = 4;
  expect_error<TrainerError>([&] { validate(o); }, {"converge_window 4 exceeds hold_epochs 3"});
  o.converge_window = 3;
  EXPECT_NO_THROW(validate(o));
  o.lr_floor = 1.0;
  expect_error<TrainerError>([&] { validate(o); }, {"lr_floor 1 must be in [0, 1)"});
}

}  // namespace
}  // namespace quilt::trainers
