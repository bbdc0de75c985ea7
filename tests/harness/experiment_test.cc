#include "harness/experiment.h"
#include "tests/harness/error_of.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <utility>

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

using testing::error_of;

// `text` with its first `from` replaced by `to` (which must be there).
std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

// `msg` holds every one of `parts`.
void expect_has(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* part : parts)
    EXPECT_NE(msg.find(part), std::string::npos) << part << ": " << msg;
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
  expect_has(error_of(replaced(kBase, "  rate: 4", "  reduction_rate: 4")),
             {"exp.yaml:13:3", "autoencoder.reduction_rate", "did you mean `rate`"});
}

TEST(Experiment, RateBelowOneIsRejectedWithLine) {
  expect_has(error_of(replaced(kBase, "rate: 4", "rate: 0.5")),
             {"exp.yaml:13:9", "autoencoder.rate", "[1,"});
}

TEST(Experiment, LrScheduleIsAChoiceRecordedWhenNotConstant) {
  const std::string training = "training: {mode: scratch, epochs: 4, lr_schedule: cosine}\n";
  auto e = parse_experiment(std::string(kBase) + training, "exp.yaml");
  EXPECT_EQ(e.runs[0].training.lr_schedule, trainers::LrSchedule::kCosine);
  EXPECT_EQ(e.runs[0].params.at("training.lr_schedule"), "cosine");
  auto msg = error_of(std::string(kBase) + "training: {mode: scratch, lr_schedule: linear}\n");
  EXPECT_NE(msg.find("training.lr_schedule"), std::string::npos) << msg;
  EXPECT_NE(msg.find("constant, cosine"), std::string::npos) << msg;
  auto plain =
      parse_experiment(std::string(kBase) + "training: {mode: scratch, epochs: 4}\n", "exp.yaml");
  EXPECT_EQ(plain.runs[0].params.count("training.lr_schedule"), 0u);
}

TEST(Experiment, WrongTypesAndValues) {
  expect_has(error_of(replaced(kBase, "count: 2", "count: two")), {"must be an integer"});
  expect_has(error_of(replaced(kBase, "backend: emulator", "backend: gpu")),
             {"valid values: emulator, null"});
  expect_has(error_of(replaced(kBase, "cuts: [after_layer2]", "cuts: []")),
             {"2 board(s) need 1 cut(s)"});
  std::string t4 = std::string(kBase) + "  kernel: 2\n";
  t4.replace(t4.find("measurement:"), 0, "");
  // kernel under measurement is unknown; under autoencoder even kernels are rejected.
  EXPECT_NE(error_of(t4).find("unknown key"), std::string::npos);
  expect_has(error_of(replaced(kBase, "rate: 4", "rate: 4\n  kernel: 2")), {"must be odd"});
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

TEST(Experiment, BareNullIsTheNullBackend) {
  const std::string text = replaced(kBase, "backend: emulator", "backend: null");
  EXPECT_EQ(parse_experiment(text, "exp.yaml").runs[0].boards.backend, Backend::kNull);
  expect_has(error_of(replaced(kBase, "backend: emulator", "backend:")), {"the value is empty"});
}

TEST(Experiment, ZipExcludeScalesAndReferences) {
  std::string text = std::string(kBase) +
                     "sweep:\n  matrix:\n    autoencoder.rate: [1, 8, 64]\n"
                     "  zip:\n    measurement.batch: [1, 2]\n    data.seed: [5, 6]\n"
                     "  exclude:\n    - {autoencoder.rate: 64, measurement.batch: 1}\n"
                     "references:\n  - {metric: throughput_sps, value: 3, better: higher, when: "
                     "{autoencoder.rate: 8}}\n"
                     "scales:\n  small: {measurement.batches: 2}\n  big: {measurement.batches: "
                     "50}\ndefault_scale: small\n";
  auto e = parse_experiment(text, "exp.yaml");
  ASSERT_EQ(e.runs.size(), 5u);  // 3 x 2 - 1 excluded
  for (const auto& r : e.runs) {
    EXPECT_EQ(r.measurement.batches, 2);
    EXPECT_EQ(r.data.seed, r.measurement.batch == 1 ? 5u : 6u);
    EXPECT_FALSE(r.autoencoder.rate == 64 && r.measurement.batch == 1);
    EXPECT_EQ(r.references.size(), r.autoencoder.rate == 8 ? 1u : 0u);
  }
  EXPECT_EQ(e.scale, "small");
  auto big = parse_experiment(text, "exp.yaml", "big");
  EXPECT_EQ(big.runs[0].measurement.batches, 50);
  EXPECT_NE(big.hash, e.hash);
  try {
    parse_experiment(text, "exp.yaml", "huge");
    FAIL() << "unknown scale accepted";
  } catch (const ConfigError& err) {
    EXPECT_NE(std::string(err.what()).find("its scales: small, big"), std::string::npos)
        << err.what();
  }
}

TEST(Experiment, ImpossibleSweepsAreErrors) {
  // What follows kBase, and what its error says.
  const std::pair<const char*, const char*> kCases[] = {
      {"sweep:\n  zip:\n    measurement.batch: [1, 2]\n    data.seed: [1]\n",
       "must have equal length"},
      {"sweep:\n  matrix:\n    autoencoder.rate: [1, 8]\n  exclude:\n    - "
       "{autoencoder.rate: 3}\n",
       "matches no run"},
      {"sweep:\n  matrix:\n    autoencoder.rate: [1, 8]\n  exclude:\n    - "
       "{measurement.batch: 3}\n",
       "is not swept"},
      {"sweep:\n  matrix:\n    autoencoder.rate: [1, 1]\n", "same parameters"},
      {"sweep:\n  matrix:\n    autoencoder.rate: [1]\n  zip:\n    autoencoder.rate: [2]\n",
       "swept twice"},
      {"sweep:\n  matrix:\n    autoencoder.rate: [1, 64]\n  exclude:\n    - "
       "{autoencoder.rate: 1}\n    - {autoencoder.rate: 64}\n",
       "leaves no run"},
      {"references:\n  - {metric: speed, value: 1}\n", "valid values: throughput_sps"},
  };
  for (const auto& [tail, says] : kCases) expect_has(error_of(std::string(kBase) + tail), {says});
}

TEST(Experiment, SamplesRoundUpToWholeBatches) {
  const std::string text = replaced(kBase, "  batches: 3\n", "  samples: 7\n");
  EXPECT_EQ(parse_experiment(text, "exp.yaml").runs[0].measurement.batches, 4);  // batch 2
  expect_has(error_of(replaced(kBase, "  batches: 3\n", "  batches: 3\n  samples: 7\n")),
             {"either `samples` or `batches`"});
}

TEST(Experiment, NetworkLinkIsParsedAndRecordedOnlyWhenStated) {
  auto plain = parse_experiment(kBase, "exp.yaml").runs.at(0);
  EXPECT_EQ(plain.links.mpi_gbps, 0);
  EXPECT_EQ(plain.params.count("links.mpi_gbps"), 0u);  // ids of runs without it unchanged
  EXPECT_EQ(plain.params.count("links.mpi_latency_s"), 0u);

  auto linked =
      parse_experiment(std::string(kBase) + "links: {mpi_gbps: 0.125, mpi_latency_s: 1e-4}\n",
                       "exp.yaml")
          .runs.at(0);
  EXPECT_DOUBLE_EQ(linked.links.mpi_gbps, 0.125);
  EXPECT_DOUBLE_EQ(linked.links.mpi_latency_s, 1e-4);
  EXPECT_EQ(linked.params.at("links.mpi_gbps"), "0.125");
  EXPECT_EQ(linked.params.at("links.mpi_latency_s"), "0.0001");
  EXPECT_NE(linked.id, plain.id);

  EXPECT_NE(error_of(std::string(kBase) + "links: {mpi_gbps: 0}\n").find("links.mpi_gbps"),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kBase) + "links: {mpi_latency_s: -1}\n").find("links.mpi_latency_s"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kBase) + "links: {mpi_gpbs: 1}\n").find("did you mean `mpi_gbps`"),
            std::string::npos);
  // Sweepable like every key.
  auto swept = parse_experiment(
      std::string(kBase) + "sweep: {matrix: {links.mpi_gbps: [0.01, 0.1]}}\n", "exp.yaml");
  ASSERT_EQ(swept.runs.size(), 2u);
  EXPECT_DOUBLE_EQ(swept.runs[1].links.mpi_gbps, 0.1);
}

TEST(Experiment, ModelWidthIsParsedRecordedOnlyWhenNotOneAndSweepable) {
  auto plain = parse_experiment(kBase, "exp.yaml").runs.at(0);
  EXPECT_EQ(plain.model.width, 1.0);
  EXPECT_EQ(plain.params.count("model.width"), 0u);  // ids of runs without it unchanged

  const std::string half = replaced(kBase, "classes: 10", "classes: 10\n  width: 0.5");
  auto narrow = parse_experiment(half, "exp.yaml").runs.at(0);
  EXPECT_EQ(narrow.model.width, 0.5);
  EXPECT_EQ(narrow.params.at("model.width"), "0.5");
  EXPECT_NE(narrow.id, plain.id);

  const std::string one = replaced(kBase, "classes: 10", "classes: 10\n  width: 1");
  EXPECT_EQ(parse_experiment(one, "exp.yaml").runs.at(0).id, plain.id);

  auto swept = parse_experiment(
      std::string(kBase) + "sweep: {matrix: {model.width: [0.25, 0.5, 1]}}\n", "exp.yaml");
  ASSERT_EQ(swept.runs.size(), 3u);
  EXPECT_EQ(swept.runs[0].model.width, 0.25);
  EXPECT_EQ(swept.runs[2].params.count("model.width"), 0u);

  expect_has(error_of(replaced(kBase, "classes: 10", "classes: 10\n  width: 0")),
             {"exp.yaml:7:10", "`model.width`: must be a number in (0, 4]"});
  const std::string mlp = replaced(replaced(kBase, "arch: resnet18", "arch: mlp"), "classes: 10",
                                   "classes: 10\n  width: 2");
  expect_has(error_of(mlp), {"`mlp` has no width multiplier"});
  // A sweep that gives a width to an arch without one fails on the run that does.
  EXPECT_NE(error_of(std::string(kBase) +
                     "sweep: {zip: {model.arch: [resnet50, unet], model.width: [0.5, 0.5]}}\n")
                .find("`unet` has no width multiplier"),
            std::string::npos);
}

TEST(Experiment, MissingFile) {
  EXPECT_THROW(load_experiment("/nonexistent/exp.yaml"), ConfigError);
}

}  // namespace
}  // namespace quilt::harness
