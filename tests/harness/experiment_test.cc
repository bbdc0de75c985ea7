#include "harness/experiment.h"

#include <gtest/gtest.h>

#include <string>

namespace quilt::harness {
namespace {

const char* kBase = R"(quilt: 1
name: t
model:
  arch: resnet18
  input: [3, 32, 32]
  classes: 10
boards:
  count: 2
  backend: emulator
partition:
  cuts: [after_layer2]
autoencoder:
  rate: 4
measurement:
  batch: 2
  batches: 3
)";

std::string error_of(const std::string& text) {
  try {
    parse_experiment(text, "exp.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Experiment, ParsesAllSections) {
  auto e = parse_experiment(kBase, "exp.yaml");
  ASSERT_EQ(e.runs.size(), 1u);
  const auto& r = e.runs[0];
  EXPECT_EQ(r.model.arch, "resnet18");
  EXPECT_EQ(r.model.input, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(r.model.classes, 10);
  EXPECT_EQ(r.boards.count, 2);
  EXPECT_EQ(r.partition.cuts, std::vector<std::string>{"after_layer2"});
  EXPECT_DOUBLE_EQ(r.autoencoder.rate, 4.0);
  EXPECT_EQ(r.measurement.batch, 2);
  EXPECT_EQ(r.measurement.batches, 3);
  EXPECT_EQ(e.output, "results/t.h5");
  EXPECT_EQ(r.id.size(), 12u);
}

TEST(Experiment, MatrixSweepIsCrossProductWithStableIds) {
  std::string text = std::string(kBase) +
                     "sweep:\n  matrix:\n    autoencoder.rate: [1, 8, 64]\n"
                     "    measurement.batch: [1, 4]\n";
  auto a = parse_experiment(text, "exp.yaml");
  auto b = parse_experiment(text, "other.yaml");
  ASSERT_EQ(a.runs.size(), 6u);
  EXPECT_EQ(a.runs[0].swept.at("autoencoder.rate"), "1");
  EXPECT_EQ(a.runs[5].swept.at("measurement.batch"), "4");
  for (size_t i = 0; i < a.runs.size(); ++i) EXPECT_EQ(a.runs[i].id, b.runs[i].id);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_NE(a.runs[0].id, a.runs[1].id);
}

TEST(Experiment, UnknownKeySuggestsTheRightOne) {
  std::string text = kBase;
  text.replace(text.find("  rate: 4"), 9, "  reduction_rate: 4");
  auto msg = error_of(text);
  EXPECT_NE(msg.find("exp.yaml:13:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("autoencoder.reduction_rate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean `rate`"), std::string::npos) << msg;
}

TEST(Experiment, RateBelowOneIsRejectedWithLine) {
  std::string text = kBase;
  text.replace(text.find("rate: 4"), 7, "rate: 0.5");
  auto msg = error_of(text);
  EXPECT_NE(msg.find("exp.yaml:13:9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("autoencoder.rate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1,"), std::string::npos) << msg;
}

TEST(Experiment, WrongTypesAndValues) {
  std::string t1 = kBase;
  t1.replace(t1.find("count: 2"), 8, "count: two");
  EXPECT_NE(error_of(t1).find("must be an integer"), std::string::npos) << error_of(t1);
  std::string t2 = kBase;
  t2.replace(t2.find("backend: emulator"), 17, "backend: gpu");
  EXPECT_NE(error_of(t2).find("valid values: emulator, null"), std::string::npos) << error_of(t2);
  std::string t3 = kBase;
  t3.replace(t3.find("cuts: [after_layer2]"), 20, "cuts: []");
  EXPECT_NE(error_of(t3).find("2 boards need 1 cut(s)"), std::string::npos) << error_of(t3);
  std::string t4 = std::string(kBase) + "  kernel: 2\n";
  t4.replace(t4.find("measurement:"), 0, "");
  // kernel under measurement is unknown; under autoencoder even kernels are rejected.
  EXPECT_NE(error_of(t4).find("unknown key"), std::string::npos);
  std::string t5 = kBase;
  t5.replace(t5.find("rate: 4"), 7, "rate: 4\n  kernel: 2");
  EXPECT_NE(error_of(t5).find("must be odd"), std::string::npos) << error_of(t5);
}

TEST(Experiment, SyntaxErrorNamesThePlace) {
  auto msg = error_of("quilt: 1\nname: [unclosed\n");
  EXPECT_NE(msg.find("exp.yaml:"), std::string::npos);
  EXPECT_NE(msg.find("YAML syntax error"), std::string::npos) << msg;
}

TEST(Experiment, MissingVersionAndBadSweepKey) {
  EXPECT_NE(error_of("name: x\n").find("`quilt`: is required"), std::string::npos);
  std::string text = std::string(kBase) + "sweep:\n  matrix:\n    autoencoder.rte: [1]\n";
  auto msg = error_of(text);
  EXPECT_NE(msg.find("did you mean `autoencoder.rate`"), std::string::npos) << msg;
}

TEST(Experiment, MissingFile) {
  EXPECT_THROW(load_experiment("/nonexistent/exp.yaml"), ConfigError);
}

}  // namespace
}  // namespace quilt::harness
