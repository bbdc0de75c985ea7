// The time left that `quilt reproduce` shows (cli/reproduction.h): pending experiments priced by
// their runs' cost (sample-epochs, repetitions), not by their number of runs, at the rate of
// finished experiments of their kind; running ones by their own finished runs.

#include "cli/reproduction.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace quilt::harness::reproduction {
namespace {

ExperimentState experiment(const std::string& status, bool training, size_t runs, double cost,
                           double wall_s = 0) {
  ExperimentState e;
  e.status = status;
  e.training = training;
  e.runs = runs;
  e.cost = cost;
  e.kind = training ? "resnet18" : "pipeline";
  e.result.wall_s = wall_s;
  return e;
}

// A training experiment of `runs` runs and cost 5 that started at 50 s and is on run `index`.
ExperimentState running(int index, int runs) {
  ExperimentState e = experiment("running", true, runs, 5);
  e.start_s = 50;
  e.run_index = index;
  e.run_total = runs;
  return e;
}

TEST(ReproduceEstimate, RunCostIsSampleEpochsOrRepetitions) {
  // 16 epochs (and 2 held) on 1000 Fashion-MNIST samples, pretrained 4 (and 2 held) epochs on
  // all 60,000: 18 x 1000 + 6 x 60,000 sample-epochs, in thousands.
  RunConfig training;
  training.training.mode = trainers::Mode::kFreeze;
  training.training.epochs = 16;
  training.training.hold_epochs = 2;
  training.training.pretrain_epochs = 4;
  training.data.kind = trainers::DataKind::kFashionMnist;
  training.data.train_samples = 1000;
  EXPECT_DOUBLE_EQ(run_cost(training), 378);
  // Half the width: a quarter of the work.
  training.model.width = 0.5;
  EXPECT_DOUBLE_EQ(run_cost(training), 378 / 4.0);
  // Iris in full: 150 samples an epoch.
  RunConfig iris;
  iris.training.mode = trainers::Mode::kScratch;
  iris.training.epochs = 10;
  iris.data.kind = trainers::DataKind::kUciIris;
  EXPECT_DOUBLE_EQ(run_cost(iris), 1.5);
  RunConfig pipeline;
  pipeline.measurement.repetitions = 5;
  EXPECT_EQ(run_cost(pipeline), 5);
}

TEST(ReproduceEstimate, WeightsPendingTrainingRunsByTheirEpochs) {
  // Four 2-epoch runs took 80 s (10 s an epoch); the 25 pending runs of 16 epochs each take
  // 4000 s. Counted per run (the defect) it would be 25 x 20 s = 8m20s.
  std::vector<ExperimentState> x = {experiment("ok", true, 4, 4 * 2, 80),
                                    experiment("pending", true, 25, 25 * 16)};
  EXPECT_EQ(time_left_text(x, 1, 100), "about 1h06m left");
}

TEST(ReproduceEstimate, WeightsPipelineRunsByRepetitionsAndKeepsKindsApart) {
  // Pipeline: 2 runs x 1 repetition took 20 s; 3 runs x 5 repetitions pending: 150 s. The
  // training experiment that took an hour does not change the pipeline rate.
  std::vector<ExperimentState> x = {experiment("ok", false, 2, 2, 20),
                                    experiment("ok", true, 1, 10, 3600),
                                    experiment("pending", false, 3, 15)};
  EXPECT_EQ(time_left_text(x, 1, 0), "about 2m30s left");
}

TEST(ReproduceEstimate, RunningExperimentCountsWhatIsLeftOfIt) {
  // 10 s an epoch; a running 30-epoch experiment started 100 s ago has 200 s left.
  std::vector<ExperimentState> x = {experiment("ok", true, 1, 5, 50),
                                    experiment("running", true, 3, 30)};
  x[1].start_s = 50;
  EXPECT_EQ(time_left_text(x, 1, 150), "about 3m20s left");
}

TEST(ReproduceEstimate, AKindWithoutMeasuredTimeGivesALowerBound) {
  std::vector<ExperimentState> x = {experiment("ok", false, 1, 1, 30),
                                    experiment("pending", false, 1, 2),
                                    experiment("pending", true, 4, 40)};
  EXPECT_EQ(time_left_text(x, 1, 0), "at least 1m00s left");
  x.erase(x.begin());
  EXPECT_EQ(time_left_text(x, 1, 0), "");
}

TEST(ReproduceEstimate, RunningExperimentGoesByItsFinishedRuns) {
  // Its estimate says 50 s, but 2 of its 6 runs took 100 s: 4 more take 200 s.
  std::vector<ExperimentState> x = {experiment("ok", true, 1, 5, 50), running(3, 6)};
  EXPECT_EQ(time_left_text(x, 1, 150), "about 3m20s left");
}

TEST(ReproduceEstimate, RunningPastItsEstimateWithoutAFinishedRunIsALowerBound) {
  // Estimated at 50 s, running for 100 s on its first run: what is left is not known, and a
  // pending one still costs its 50 s.
  std::vector<ExperimentState> x = {experiment("ok", true, 1, 5, 50), running(1, 3),
                                    experiment("pending", true, 1, 5)};
  EXPECT_EQ(time_left_text(x, 1, 150), "at least 50s left");
}

TEST(ReproduceEstimate, AnotherModelsRateIsARoughGuess) {
  // Only an MLP experiment has finished (1 s per unit); a ResNet one is priced at that rate,
  // said to be rough. Once a ResNet experiment has finished, its own rate applies.
  std::vector<ExperimentState> x = {experiment("ok", true, 1, 10, 10),
                                    experiment("pending", true, 1, 60)};
  x[0].kind = "mlp";
  EXPECT_EQ(time_left_text(x, 1, 0), "roughly 1m00s left");
  x.insert(x.begin(), experiment("ok", true, 1, 10, 100));
  EXPECT_EQ(time_left_text(x, 1, 0), "about 10m00s left");
}

}  // namespace
}  // namespace quilt::harness::reproduction
