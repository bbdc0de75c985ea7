#include "trainers/checkpoint.h"

#include "models/state_dict.h"
#include "models/zoo.h"
#include "tests/trainers/test_util.h"
#include "trainers/train.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>

#include <cstdlib>

namespace quilt::trainers {
namespace {

using testing::expect_error;
using testing::ScratchDir;

Dataset synthetic() {
  DataOptions o;
  o.synthetic_shape = {16};
  o.synthetic_samples = 600;
  o.seed = 8;
  return make_synthetic(o);
}

models::QuiltModel mlp(uint64_t seed, double rate = 4.0) {
  torch::manual_seed(seed);
  return models::QuiltModel(models::make_model("mlp", {{16}, 4}), {"after_hidden1"}, {rate, 1});
}

TrainOptions quiet(Mode mode) {
  TrainOptions o;
  o.mode = mode;
  o.progress.style = ProgressStyle::kSilent;
  o.seed = 21;
  o.lr = 0.02;
  o.augment.set_skew(0.0);
  return o;
}

void expect_same_weights(models::QuiltModel& a, models::QuiltModel& b) {
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    EXPECT_TRUE(torch::allclose(p.value(), pb[p.key()], 1e-6, 1e-7)) << p.key();
  }
}

// An uninterrupted run against one that stops, and a fresh process that resumes from the
// checkpoint: the same weights and losses, across the phase boundary of weight freezing too.
void check_resume(Mode mode, OptimizerKind optimizer, int64_t stop_after) {
  ScratchDir dir;
  auto data = synthetic();
  auto o = quiet(mode);
  o.optimizer = optimizer;
  o.epochs = 2;
  o.freeze_epochs = 2;
  o.settle_tolerance = 0.0;
  auto whole = mlp(1);
  auto full = train(whole, data, o);
  ASSERT_TRUE(full.ok);

  auto first = mlp(1);
  auto part_opts = o;
  part_opts.checkpoint_path = dir.file("run.ckpt");
  part_opts.stop_after_epochs = stop_after;
  auto part = train(first, data, part_opts);
  ASSERT_TRUE(part.stopped);
  ASSERT_EQ(static_cast<int64_t>(part.epochs.size()), stop_after);
  auto info = read_checkpoint_info(dir.file("run.ckpt"));
  EXPECT_EQ(info.epochs_done, stop_after);
  EXPECT_EQ(info.mode, to_string(mode));

  auto resumed_model = mlp(99);  // another init: everything must come from the checkpoint
  auto resume_opts = o;
  resume_opts.resume_from = dir.file("run.ckpt");
  auto resumed = train(resumed_model, data, resume_opts);
  ASSERT_TRUE(resumed.ok);
  EXPECT_EQ(resumed.resumed_epochs, stop_after);
  ASSERT_EQ(resumed.epochs.size(), full.epochs.size());
  for (size_t i = 0; i < full.epochs.size(); ++i) {
    EXPECT_NEAR(resumed.epochs[i].train_loss, full.epochs[i].train_loss, 1e-6) << "epoch " << i + 1;
    EXPECT_EQ(resumed.epochs[i].phase, full.epochs[i].phase);
  }
  ASSERT_EQ(resumed.phases.size(), full.phases.size());
  for (size_t i = 0; i < full.phases.size(); ++i) {
    EXPECT_EQ(resumed.phases[i].epochs, full.phases[i].epochs);
    EXPECT_EQ(resumed.phases[i].trains, full.phases[i].trains);
    EXPECT_NEAR(resumed.phases[i].train_loss, full.phases[i].train_loss, 1e-6);
    EXPECT_NEAR(resumed.phases[i].test.top1, full.phases[i].test.top1, 1e-9);
  }
  expect_same_weights(resumed_model, whole);
}

TEST(Checkpoint, ScratchSgdResumesWhereItStopped) {
  check_resume(Mode::kScratch, OptimizerKind::kSgd, 1);
}

TEST(Checkpoint, FreezeAdamResumesAcrossThePhaseBoundary) {
  check_resume(Mode::kFreeze, OptimizerKind::kAdam, 2);
}

TEST(Checkpoint, FinetuneResumesInsidePhase1) {
  check_resume(Mode::kFinetune, OptimizerKind::kSgd, 1);
}

TEST(Checkpoint, AnotherModelOrFileIsRefusedNamingBoth) {
  ScratchDir dir;
  auto data = synthetic();
  auto o = quiet(Mode::kScratch);
  o.epochs = 1;
  o.checkpoint_path = dir.file("run.ckpt");
  auto model = mlp(1);
  train(model, data, o);

  auto other_rate = mlp(1, 8.0);
  expect_error<TrainerError>([&] { load_checkpoint_weights(other_rate, dir.file("run.ckpt")); },
                             {"run.ckpt", "mlp input 16 classes 4", "R 4", "R 8"});
  torch::manual_seed(0);
  models::QuiltModel resnet(models::make_model("resnet18", {{3, 32, 32}, 10}), {"after_layer3"},
                            {4.0, 1});
  auto ro = quiet(Mode::kScratch);
  ro.resume_from = dir.file("run.ckpt");
  DataOptions images;
  images.synthetic_shape = {3, 32, 32};
  images.synthetic_samples = 20;
  expect_error<TrainerError>([&] { train(resnet, make_synthetic(images), ro); },
                             {"written for \"mlp", "the model is \"resnet18", "after_layer3"});
  auto fo = quiet(Mode::kFinetune);
  fo.resume_from = dir.file("run.ckpt");
  expect_error<TrainerError>([&] { train(model, data, fo); }, {"\"scratch\"", "\"finetune\""});
  auto so = quiet(Mode::kScratch);
  so.resume_from = dir.file("run.ckpt");
  so.seed = 22;
  expect_error<TrainerError>([&] { train(model, data, so); }, {"seed 21", "seed 22"});
  expect_error<TrainerError>([&] { read_checkpoint_info(dir.file("none.ckpt")); },
                             {"none.ckpt", "does not exist"});
  testing::write_raw(dir.file("junk.ckpt"), "junk");
  expect_error<TrainerError>([&] { read_checkpoint_info(dir.file("junk.ckpt")); },
                             {"junk.ckpt", "not a Quilt training checkpoint"});
  load_checkpoint_weights(model, dir.file("run.ckpt"));
}

TEST(Checkpoint, NarrowResNetWeightsRoundTripAndRefuseOtherWidths) {
  ScratchDir dir;
  models::ModelOptions o;
  o.input_shape = {1, 28, 28};
  o.num_classes = 10;
  o.width = 0.25;
  torch::manual_seed(3);
  auto narrow = models::make_model("resnet18", o);
  export_state_dict(*narrow, dir.file("narrow.pt"));
  torch::manual_seed(4);
  auto fresh = models::make_model("resnet18", o);
  models::load_state_dict(*fresh, dir.file("narrow.pt"));
  const auto want = narrow->named_parameters();
  for (const auto& item : fresh->named_parameters())
    EXPECT_TRUE(torch::equal(item.value(), want[item.key()])) << item.key();
  // A model of another width has other shapes: refused, naming the key and both shapes.
  o.width = 0.5;
  auto wider = models::make_model("resnet18", o);
  expect_error<models::ModelError>([&] { models::load_state_dict(*wider, dir.file("narrow.pt")); },
                                   {"conv1.weight", "16"});
}

TEST(Checkpoint, ExportedWeightsLoadThroughModelsLoadStateDict) {
  ScratchDir dir;
  auto data = synthetic();
  auto model = mlp(1);
  auto o = quiet(Mode::kScratch);
  o.epochs = 1;
  train(model, data, o);
  export_state_dict(*model, dir.file("quilt.pt"));
  auto keys = models::read_state_dict(dir.file("quilt.pt"));
  bool has_ae = false;
  for (const auto& [k, t] : keys) has_ae = has_ae || k == "ae_after_hidden1.encoder.weight";
  EXPECT_TRUE(has_ae);
  auto fresh = mlp(5);
  models::load_state_dict(*fresh, dir.file("quilt.pt"));
  expect_same_weights(fresh, model);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(fresh->forward(data.test.x), model->forward(data.test.x)));

  // Python's torch.load reads it as the plain dict of tensors torch.save would have written
  // (exit code 77: this Python has no torch; the check is skipped).
  const std::string check =
      "/usr/bin/python3 -c \"import sys\ntry:\n import torch\nexcept ImportError:\n sys.exit(77)\n"
      "sd = torch.load(sys.argv[1])\nassert type(sd) is dict, type(sd)\n"
      "assert sd['ae_after_hidden1.encoder.weight'].shape == (128, 512)\n"
      "assert abs(sd['fc1.weight'].sum().item() - " +
      std::to_string(model->base()->named_parameters()["fc1.weight"].sum().item<double>()) +
      ") < 1e-3\" " + dir.file("quilt.pt");
  const int status = std::system(check.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
    GTEST_SKIP() << "/usr/bin/python3 has no torch";
  EXPECT_EQ(status, 0) << check;
}

}  // namespace
}  // namespace quilt::trainers
