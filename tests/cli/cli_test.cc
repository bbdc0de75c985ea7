#include "cli/cli.h"

#include "harness/experiment.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace quilt::harness::cli {
namespace {

std::string error_of(Parser& p, const std::vector<std::string>& args) {
  try {
    p.parse(args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Cli, ParsesOptionsFlagsAndPositionals) {
  std::string file, out;
  bool resume = false;
  int64_t index = -1;
  double rate = 1;
  Parser p("run", "run it");
  p.positional("FILE", "a file", &file)
      .option("--output", "PATH", "where", &out)
      .flag("--resume", "resume", &resume)
      .option("--run-index", "N", "which", &index, 0)
      .option("--rate", "R", "rate", &rate, 1.0);
  ASSERT_TRUE(p.parse({"x.yaml", "--output=o.h5", "--resume", "--run-index", "3", "--rate", "64"}));
  EXPECT_EQ(file, "x.yaml");
  EXPECT_EQ(out, "o.h5");
  EXPECT_TRUE(resume);
  EXPECT_EQ(index, 3);
  EXPECT_EQ(rate, 64);
}

TEST(Cli, UnknownOptionSuggestsTheClosest) {
  double rate = 1;
  std::string arch;
  Parser p("summary", "s");
  p.positional("ARCH", "model", &arch).option("--rate", "R", "rate", &rate, 1.0);
  const std::string msg = error_of(p, {"resnet50", "--rat", "64"});
  EXPECT_NE(msg.find("unknown option for `quilt summary`"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean `--rate`?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("quilt summary --help"), std::string::npos) << msg;
}

TEST(Cli, BadValuesNameTheOption) {
  int64_t n = 0;
  Parser p("profile", "p");
  p.option("--batch", "N", "batch", &n, 1);
  std::string msg = error_of(p, {"--batch", "0"});
  EXPECT_NE(msg.find("`--batch`: needs an integer >= 1 (got `0`)"), std::string::npos) << msg;
  msg = error_of(p, {"--batch", "abc"});
  EXPECT_NE(msg.find("got `abc`"), std::string::npos) << msg;
  msg = error_of(p, {"--batch"});
  EXPECT_NE(msg.find("needs a value"), std::string::npos) << msg;
}

TEST(Cli, PositionalCountsAreChecked) {
  std::vector<std::string> files;
  Parser p("validate", "v");
  p.positional("FILE", "experiment files", &files, 1, SIZE_MAX);
  EXPECT_NE(error_of(p, {}).find("needs at least 1 FILE"), std::string::npos);
  ASSERT_TRUE(p.parse({"a.yaml", "b.yaml"}));
  EXPECT_EQ(files.size(), 2u);
  std::string one;
  Parser q("report", "r");
  q.positional("FILE.h5", "a result file", &one);
  EXPECT_NE(error_of(q, {"a.h5", "b.h5"}).find("`b.h5`: unexpected argument"), std::string::npos);
}

TEST(Cli, OptionalValueTakesTheNextWordOnlyWhenAccepted) {
  bool slurm = false;
  std::string path, file;
  Parser p("plan", "p");
  p.positional("FILE", "f", &file)
      .optional_value(
          "--slurm", "PATH", "job array",
          [](const std::string& next) { return next.find(".yaml") == std::string::npos; },
          [&](const std::string& v) {
            slurm = true;
            path = v;
          });
  ASSERT_TRUE(p.parse({"--slurm", "x.yaml"}));
  EXPECT_TRUE(slurm);
  EXPECT_EQ(path, "");
  EXPECT_EQ(file, "x.yaml");
  ASSERT_TRUE(p.parse({"x.yaml", "--slurm", "jobs.sbatch"}));
  EXPECT_EQ(path, "jobs.sbatch");
}

TEST(Cli, HelpListsOptionsAndExamplesAndStopsParsing) {
  bool resume = false;
  std::string file;
  Parser p("run", "Run an experiment.");
  p.positional("FILE", "an experiment file", &file)
      .flag("--resume", "keep finished runs", &resume)
      .example("mpirun -n 2 quilt run experiments/quickstart.yaml");
  const std::string h = p.help();
  EXPECT_NE(h.find("usage: quilt run FILE [--resume]"), std::string::npos) << h;
  EXPECT_NE(h.find("--resume"), std::string::npos) << h;
  EXPECT_NE(h.find("-h, --help"), std::string::npos) << h;
  EXPECT_NE(h.find("example:\n  mpirun -n 2 quilt run"), std::string::npos) << h;
  testing::internal::CaptureStdout();
  EXPECT_FALSE(p.parse({"--resume", "--help"}));  // help wins; FILE is not required then
  EXPECT_EQ(testing::internal::GetCapturedStdout(), h);
}

TEST(Cli, DispatchHelpAndUnknownCommands) {
  int called = 0;
  std::vector<std::string> seen;
  std::vector<Command> commands = {{"run", "run it", [&](int argc, char** argv) {
                                      ++called;
                                      for (int i = 1; i < argc; ++i) seen.push_back(argv[i]);
                                      return 7;
                                    }}};
  std::vector<std::string> words = {"quilt", "help", "run"};
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  EXPECT_EQ(dispatch(commands, 3, argv.data()), 7);
  EXPECT_EQ(seen, (std::vector<std::string>{"run", "--help"}));
  words = {"quilt", "rnu"};
  argv.clear();
  for (auto& w : words) argv.push_back(w.data());
  testing::internal::CaptureStderr();
  EXPECT_EQ(dispatch(commands, 2, argv.data()), 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("unknown command `rnu`; did you mean `run`?"), std::string::npos) << err;
  EXPECT_EQ(called, 1);
}

}  // namespace
}  // namespace quilt::harness::cli
