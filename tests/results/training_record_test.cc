// Training records (/runs/<id>/training, results/SCHEMA.md) through write_experiment and
// read_experiment: every field, NaN accuracies of proxy epochs, pipeline runs without the group,
// and per-epoch datasets of different lengths refused with the object path.

#include <gtest/gtest.h>
#include <hdf5.h>

#include <cmath>
#include <limits>

#include "results/reader.h"
#include "results/writer.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using testing::make_sample_record;
using testing::ScratchDir;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TrainingRecord sample_training(const std::string& mode) {
  TrainingRecord t;
  t.mode = mode;
  t.dataset = "fashion-mnist";
  t.data_source = "/usr/share/datasets/fashion-mnist";
  t.stand_in = "Fashion-MNIST (28x28 grey, 10 classes) instead of ImageNet/CIFAR-10";
  t.train_samples = 6000;
  t.test_samples = 2000;
  t.classes = 10;
  t.ranks = 2;
  t.global_batch = 64;
  t.phase1_epochs = mode == "freeze" ? 1 : 0;
  t.epoch = {1, 2, 3};
  t.phase = mode == "freeze" ? std::vector<std::string>{"freeze", "unfreeze", "unfreeze"}
                             : std::vector<std::string>{"proxy", "proxy", "proxy"};
  t.train_loss = {1.5, 0.75, 0.5};
  t.train_top1 = mode == "proxy" ? std::vector<double>{kNaN, kNaN, kNaN}
                                 : std::vector<double>{0.5, 0.75, 0.875};
  t.test_loss = {1.25, 0.625, 0.4375};
  t.test_top1 = {0.625, 0.75, 0.8125};
  t.test_top5 = {0.875, 0.9375, 0.96875};
  t.epoch_s = {10.5, 11.25, 9.75};
  t.samples_per_s = {571.4, 533.3, 615.4};
  t.final_test_loss = 0.4375;
  t.final_top1 = 0.8125;
  t.final_top5 = 0.96875;
  t.train_s = 31.5;
  t.full_epoch_s = mode == "proxy" ? 42.0 : -1;
  t.proxy_speedup = mode == "proxy" ? 12.5 : -1;
  t.checkpoint = "results/ck-abc.pt";
  t.pretrained = "2 epoch(s) from scratch on 8000 samples of fashion-mnist in this run";
  t.pretrain_top1 = mode == "proxy" ? kNaN : 0.84375;
  t.precision = mode == "proxy" ? "" : "int8";
  t.precision_top1 = mode == "proxy" ? kNaN : 0.78125;
  t.precision_agreement = mode == "proxy" ? kNaN : 0.953125;
  return t;
}

void expect_same(const std::vector<double>& a, const std::vector<double>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) {
      EXPECT_TRUE(std::isnan(b[i])) << what << "[" << i << "]";
    } else {
      EXPECT_EQ(a[i], b[i]) << what << "[" << i << "]";
    }
  }
}

void expect_same(double a, double b, const char* what) {
  expect_same(std::vector<double>{a}, std::vector<double>{b}, what);
}

void expect_equal(const TrainingRecord& a, const TrainingRecord& b) {
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.dataset, b.dataset);
  EXPECT_EQ(a.data_source, b.data_source);
  EXPECT_EQ(a.stand_in, b.stand_in);
  EXPECT_EQ(a.train_samples, b.train_samples);
  EXPECT_EQ(a.test_samples, b.test_samples);
  EXPECT_EQ(a.classes, b.classes);
  EXPECT_EQ(a.ranks, b.ranks);
  EXPECT_EQ(a.global_batch, b.global_batch);
  EXPECT_EQ(a.phase1_epochs, b.phase1_epochs);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.phase, b.phase);
  expect_same(a.train_loss, b.train_loss, "train_loss");
  expect_same(a.train_top1, b.train_top1, "train_top1");
  expect_same(a.test_loss, b.test_loss, "test_loss");
  expect_same(a.test_top1, b.test_top1, "test_top1");
  expect_same(a.test_top5, b.test_top5, "test_top5");
  expect_same(a.epoch_s, b.epoch_s, "epoch_s");
  expect_same(a.samples_per_s, b.samples_per_s, "samples_per_s");
  expect_same(a.final_test_loss, b.final_test_loss, "final_test_loss");
  expect_same(a.final_top1, b.final_top1, "final_top1");
  expect_same(a.final_top5, b.final_top5, "final_top5");
  expect_same(a.train_s, b.train_s, "train_s");
  expect_same(a.full_epoch_s, b.full_epoch_s, "full_epoch_s");
  expect_same(a.proxy_speedup, b.proxy_speedup, "proxy_speedup");
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.pretrained, b.pretrained);
  expect_same(a.pretrain_top1, b.pretrain_top1, "pretrain_top1");
  EXPECT_EQ(a.precision, b.precision);
  expect_same(a.precision_top1, b.precision_top1, "precision_top1");
  expect_same(a.precision_agreement, b.precision_agreement, "precision_agreement");
}

TEST(results_training, RoundTripsEveryFieldAndLeavesPipelineRunsWithout) {
  ScratchDir dir;
  ExperimentRecord e = make_sample_record();
  e.runs[0].training = sample_training("freeze");
  e.runs[2].training = sample_training("proxy");
  e.runs[2].status = "failed";
  e.runs[2].failure = "loss became NaN at epoch 3";
  const std::string path = dir.file("t.h5");
  write_experiment(path, e);
  const ExperimentRecord r = read_experiment(path);
  ASSERT_EQ(r.runs.size(), 3u);
  expect_equal(e.runs[0].training, r.runs[0].training);
  expect_equal(e.runs[2].training, r.runs[2].training);
  EXPECT_EQ(r.runs[2].failure, "loss became NaN at epoch 3");
  EXPECT_TRUE(r.runs[1].training.mode.empty());  // a pipeline run: no training group
  EXPECT_TRUE(r.runs[1].training.epoch.empty());
}

TEST(results_training, PerEpochDatasetsOfDifferentLengthsAreRefused) {
  ScratchDir dir;
  ExperimentRecord e = make_sample_record();
  e.runs[0].training = sample_training("freeze");
  e.runs[0].training.test_top5.pop_back();
  const std::string path = dir.file("t.h5");
  write_experiment(path, e);
  try {
    read_experiment(path);
    FAIL() << "expected a ResultsError";
  } catch (const ResultsError& err) {
    const std::string what = err.what();
    EXPECT_NE(what.find("/runs/r-zz01/training"), std::string::npos) << what;
    EXPECT_NE(what.find("expected 3"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace quilt::results
