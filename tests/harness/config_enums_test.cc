// The name tables of the experiment file's enum-like keys (harness/experiment.h and the tables
// of trainers/ and backends/ it reuses): each round-trips, and a bad value's message lists the
// table's names.
#include "common/text.h"
#include "harness/experiment.h"
#include "tests/harness/error_of.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace quilt::harness {
namespace {

// Every value once, every name once, and name -> value -> name the identity.
template <typename E, size_t N>
void expect_round_trip(const common::EnumTable<E, N>& table) {
  std::set<std::string_view> names;
  std::set<E> values;
  for (const auto& entry : table) {
    EXPECT_FALSE(entry.name.empty());
    EXPECT_TRUE(names.insert(entry.name).second) << "twice: " << entry.name;
    EXPECT_TRUE(values.insert(entry.value).second) << "value twice, as " << entry.name;
    EXPECT_EQ(common::enum_name(table, entry.value), entry.name);
    const auto parsed = common::enum_parse(table, entry.name);
    ASSERT_TRUE(parsed.has_value()) << entry.name;
    EXPECT_TRUE(*parsed == entry.value) << entry.name;
  }
  EXPECT_FALSE(common::enum_parse(table, "no-such-value").has_value());
  EXPECT_EQ(common::enum_names(table).size(), N);
}

TEST(ConfigEnums, EveryTableRoundTrips) {
  expect_round_trip(kDataKindNames);
  expect_round_trip(kBackendNames);
  expect_round_trip(kTimeModelNames);
  expect_round_trip(kFallbackNames);
  expect_round_trip(kObjectiveNames);
  expect_round_trip(kAutoencoderKindNames);
  expect_round_trip(kBetterNames);
  expect_round_trip(trainers::kModeNames);
  expect_round_trip(trainers::kOptimizerNames);
  expect_round_trip(trainers::kLrScheduleNames);
  expect_round_trip(backends::kPrecisionNames);
}

TEST(ConfigEnums, ToStringSpellsTheTables) {
  EXPECT_EQ(to_string(TimeModel::kDilated), "dilated");
  EXPECT_EQ(to_string(Backend::kNull), "null");
  EXPECT_EQ(to_string(DataKind::kUciBreastCancer), "uci-breast-cancer");
  EXPECT_EQ(objective_name(partitioners::Objective::kPaper), "balance");
  EXPECT_EQ(to_string(TrainingMode()), "none");
  EXPECT_EQ(to_string(TrainingMode(trainers::Mode::kFinetune)), "finetune");
  EXPECT_EQ(precision_name(std::nullopt), "");
  EXPECT_EQ(precision_name(std::optional(backends::Precision::kBf16)), "bf16");
  EXPECT_EQ(training_mode_names(),
            (std::vector<std::string>{"none", "scratch", "freeze", "finetune", "proxy"}));
}

const char* kBase = R"(quilt: 1
name: t
model: {arch: resnet18, input: [3, 32, 32], classes: 10}
boards: {count: 2}
partition: {cuts: [after_layer2]}
autoencoder: {rate: 4}
)";

using testing::error_of;

// `section: {key: bogus}` (merged over kBase's section when it has one): the message names the
// key and lists `valid` (the table's names, joined as the message joins them).
void expect_lists(const std::string& section, const std::string& key,
                  const std::vector<std::string>& valid) {
  std::string text = kBase;
  const std::string setting = key + ": bogus-value";
  const auto at = text.find("\n" + section + ": {");
  if (at != std::string::npos)
    text.insert(text.find('{', at) + 1, setting + ", ");
  else
    text += section + ": {" + setting + "}\n";
  const std::string msg = error_of(text);
  SCOPED_TRACE(text);
  EXPECT_NE(msg.find(section + "." + key), std::string::npos) << msg;
  EXPECT_NE(msg.find("`bogus-value` is not valid; valid values: " + common::join(valid)),
            std::string::npos)
      << msg;
}

TEST(ConfigEnums, BadValuesListTheTable) {
  expect_lists("data", "kind", common::enum_names(kDataKindNames));
  expect_lists("boards", "backend", common::enum_names(kBackendNames));
  expect_lists("boards", "time_model", common::enum_names(kTimeModelNames));
  expect_lists("boards", "fallback", common::enum_names(kFallbackNames));
  expect_lists("boards", "precision", common::enum_names(backends::kPrecisionNames));
  expect_lists("partition", "objective", common::enum_names(kObjectiveNames));
  expect_lists("autoencoder", "kind", common::enum_names(kAutoencoderKindNames));
  expect_lists("training", "mode", training_mode_names());
  expect_lists("training", "optimizer", common::enum_names(trainers::kOptimizerNames));
  expect_lists("training", "lr_schedule", common::enum_names(trainers::kLrScheduleNames));
}

TEST(ConfigEnums, ParsedOnceAndRecordedAsBefore) {
  const auto e =
      parse_experiment(std::string(kBase) +
                           "data: {kind: fashion-mnist}\n"
                           "training: {mode: freeze, optimizer: adam, lr_schedule: cosine}\n"
                           "references: [{metric: throughput_sps, value: 1, better: lower}]\n",
                       "exp.yaml");
  const RunConfig& run = e.runs.at(0);
  EXPECT_TRUE(run.data.kind == DataKind::kFashionMnist);
  EXPECT_TRUE(run.training.mode == trainers::Mode::kFreeze);
  EXPECT_TRUE(run.training.optimizer == trainers::OptimizerKind::kAdam);
  EXPECT_TRUE(run.training.lr_schedule == trainers::LrSchedule::kCosine);
  EXPECT_TRUE(run.boards.backend == Backend::kEmulator);
  EXPECT_TRUE(run.boards.time_model == TimeModel::kMeasured);
  EXPECT_FALSE(run.boards.precision.has_value());
  EXPECT_TRUE(run.references.at(0).better == Better::kLower);
  // run.params keeps the file's spellings.
  EXPECT_EQ(run.params.at("data.kind"), "fashion-mnist");
  EXPECT_EQ(run.params.at("training.mode"), "freeze");
  EXPECT_EQ(run.params.at("training.optimizer"), "adam");
  EXPECT_EQ(run.params.at("training.lr_schedule"), "cosine");
  EXPECT_EQ(run.params.at("boards.backend"), "emulator");
  EXPECT_EQ(run.params.at("boards.time_model"), "measured");
  EXPECT_EQ(run.params.at("partition.objective"), "balance");
  EXPECT_EQ(run.params.at("autoencoder.kind"), "auto");
  EXPECT_EQ(run.params.count("boards.precision"), 0u);
}

}  // namespace
}  // namespace quilt::harness
