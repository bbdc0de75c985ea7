// The time left that `quilt reproduce` shows (cli/reproduction.h): pending experiments priced by
// their runs' cost (epochs, repetitions), not by their number of runs.

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
  e.result.wall_s = wall_s;
  return e;
}

TEST(ReproduceEstimate, RunCostIsMaximumEpochsOrRepetitions) {
  RunConfig training;
  training.training.mode = trainers::Mode::kFreeze;
  training.training.epochs = 16;
  training.training.pretrain_epochs = 4;
  EXPECT_EQ(run_cost(training), 20);
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

}  // namespace
}  // namespace quilt::harness::reproduction
