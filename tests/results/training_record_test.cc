// Training records (/runs/<id>/training, results/SCHEMA.md) through write_experiment and
// read_experiment: every field, NaN accuracies of proxy epochs, pipeline runs without the group,
// and per-epoch datasets of different lengths refused with the object path.

#include <gtest/gtest.h>
#include <hdf5.h>

#include "results/reader.h"
#include "results/writer.h"
#include "tests/results/expect_equal.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using testing::make_sample_record;
using testing::ScratchDir;

TrainingRecord sample_training(const std::string& mode) {
  return testing::make_sample_training(mode);
}

void expect_equal(const TrainingRecord& a, const TrainingRecord& b) {
  testing::expect_equal(a, b, "training " + a.mode);
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
