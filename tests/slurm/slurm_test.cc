#include "harness/slurm.h"

#include <gtest/gtest.h>

#include <string>

namespace quilt::harness {
namespace {

// Experiments are built by hand so the test needs neither files nor the parser.
Experiment sweep(const std::vector<int>& boards) {
  Experiment e;
  e.path = "experiments/sweep.yaml";
  e.name = "sweep";
  for (size_t i = 0; i < boards.size(); ++i) {
    RunConfig r;
    r.id = "id" + std::to_string(i);
    r.boards.count = boards[i];
    r.swept["boards.count"] = std::to_string(boards[i]);
    r.swept["autoencoder.rate"] = std::to_string(1 << i);
    e.runs.push_back(r);
  }
  return e;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string error_of(const Experiment& e, const SlurmOptions& o) {
  try {
    slurm_job_array(e, o);
  } catch (const ConfigError& err) {
    return err.what();
  }
  return "";
}

TEST(SlurmJobArray, OneTaskPerRunWithDefaults) {
  auto s = slurm_job_array(sweep({2, 2, 2}), {});
  EXPECT_EQ(s.rfind("#!/bin/bash\n", 0), 0u);
  EXPECT_TRUE(has(s, "\n#SBATCH --job-name=sweep\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --array=0-2\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --ntasks=2\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --cpus-per-task=1\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --requeue\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --open-mode=append\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --output=%x-%A_%a.out\n"));
  EXPECT_FALSE(has(s, "--partition"));
  EXPECT_FALSE(has(s, "--time"));
  EXPECT_TRUE(has(s, "\nruns=(0 1 2)\n"));
  EXPECT_TRUE(has(s, "\nruns_per_task=1\n"));
  EXPECT_TRUE(has(s, "\nquilt=build/release/bin/quilt\n"));
  EXPECT_TRUE(has(s, "\nexperiment=experiments/sweep.yaml\n"));
  EXPECT_TRUE(has(s, "\noutput_dir=results\n"));
  EXPECT_TRUE(has(s, "srun --mpi=pmix"));
  EXPECT_TRUE(has(s, R"("$quilt" run "$experiment" --run-index "$run")"));
  EXPECT_TRUE(has(s, R"(--output "$output_dir/$name.$run.h5" --resume)"));
  // Every run is listed with its id and swept values, for the person reading the script.
  EXPECT_TRUE(has(s, "#   1: id1 autoencoder.rate=2 boards.count=2\n"));
  // All #SBATCH directives come before the first command, or sbatch ignores them.
  EXPECT_LT(s.rfind("#SBATCH"), s.find("set -euo pipefail"));
}

TEST(SlurmJobArray, OptionsBecomeDirectives) {
  SlurmOptions o;
  o.partition = "gpu";
  o.time_limit_s = 2 * 86400 + 3 * 3600 + 4 * 60 + 5;
  o.max_parallel_tasks = 4;
  o.build_dir = "/opt/quilt build";
  o.output_dir = "/scratch/out";
  o.experiment_path = "/home/me/it's.yaml";
  o.launcher = "mpirun";
  o.extra_sbatch = {"--account=abc", "#SBATCH --mem=4G"};
  auto e = sweep({3, 3});
  e.runs[1].boards.threads = 4;
  auto s = slurm_job_array(e, o);
  EXPECT_TRUE(has(s, "\n#SBATCH --partition=gpu\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --time=2-03:04:05\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --array=0-1%4\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --ntasks=3\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --cpus-per-task=4\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --account=abc\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --mem=4G\n"));
  EXPECT_TRUE(has(s, "\nquilt='/opt/quilt build/bin/quilt'\n"));
  EXPECT_TRUE(has(s, "\nexperiment='/home/me/it'\\''s.yaml'\n"));
  EXPECT_TRUE(has(s, "\noutput_dir=/scratch/out\n"));
  EXPECT_TRUE(has(s, R"(launch=(mpirun -n "$SLURM_NTASKS" --mca odls_base_sigkill_timeout 10))"));
  EXPECT_FALSE(has(s, "srun"));
  EXPECT_LT(s.rfind("#SBATCH"), s.find("set -euo pipefail"));
}

TEST(SlurmJobArray, ShortTimeLimitHasNoDays) {
  SlurmOptions o;
  o.time_limit_s = 90;
  EXPECT_TRUE(has(slurm_job_array(sweep({1}), o), "\n#SBATCH --time=00:01:30\n"));
}

TEST(SlurmJobArray, ChunksOfRuns) {
  SlurmOptions o;
  o.runs_per_task = 2;
  auto s = slurm_job_array(sweep({2, 2, 2, 2, 2}), o);
  EXPECT_TRUE(has(s, "\n#SBATCH --array=0-2\n"));  // 5 runs, 2 per task: 3 tasks
  EXPECT_TRUE(has(s, "\nruns=(0 1 2 3 4)\n"));
  EXPECT_TRUE(has(s, "\nruns_per_task=2\n"));
}

TEST(SlurmJobArray, MixedBoardCountsNeedOneArrayPerCount) {
  auto e = sweep({2, 3, 2, 4});
  EXPECT_EQ(slurm_board_counts(e), (std::vector<int>{2, 3, 4}));
  auto err = error_of(e, {});
  EXPECT_TRUE(has(err, "experiments/sweep.yaml")) << err;
  EXPECT_TRUE(has(err, "boards.count")) << err;
  EXPECT_TRUE(has(err, "2, 3, 4")) << err;

  SlurmOptions o;
  o.boards_count = 2;
  auto s = slurm_job_array(e, o);
  EXPECT_TRUE(has(s, "\n#SBATCH --ntasks=2\n"));
  EXPECT_TRUE(has(s, "\n#SBATCH --array=0-1\n"));
  EXPECT_TRUE(has(s, "\nruns=(0 2)\n"));  // run indices of the whole sweep
  EXPECT_FALSE(has(s, "#   1: "));

  o.boards_count = 5;
  err = error_of(e, o);
  EXPECT_TRUE(has(err, "no run has 5 boards")) << err;
}

TEST(SlurmJobArray, BadOptionsAreConfigErrors) {
  auto e = sweep({2});
  auto check = [&](SlurmOptions o, const std::string& key) {
    auto err = error_of(e, o);
    EXPECT_TRUE(has(err, "<slurm options>")) << key << ": " << err;
    EXPECT_TRUE(has(err, "`" + key + "`")) << err;
  };
  SlurmOptions o;
  o.runs_per_task = 0;
  check(o, "runs_per_task");
  o = {};
  o.time_limit_s = -1;
  check(o, "time_limit_s");
  o = {};
  o.launcher = "aprun";
  check(o, "launcher");
  o = {};
  o.partition = "a b";
  check(o, "partition");
  o = {};
  o.extra_sbatch = {"--mem=1G\nrm -rf /"};
  check(o, "extra_sbatch");
  o = {};
  o.max_parallel_tasks = -2;
  check(o, "max_parallel_tasks");
  EXPECT_TRUE(has(error_of(Experiment{}, {}), "no runs"));
}

TEST(SlurmJobArray, ParameterValuesCannotBreakOutOfComments) {
  auto e = sweep({2});
  e.runs[0].swept["model.weights"] = "a\nrm -rf /";
  auto s = slurm_job_array(e, {});
  EXPECT_FALSE(has(s, "\nrm -rf /"));
}

}  // namespace
}  // namespace quilt::harness
