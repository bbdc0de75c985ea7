// The field lists of results/record.h (FieldList) against results/SCHEMA.md and through a
// write/read round trip with every field set.
//
// The SCHEMA.md rule: for each record with a field list, its section of SCHEMA.md (the `###`
// heading given in kSections, up to the next heading) has tables whose rows start with the
// backticked names of attributes and datasets (`| `name` | ...`, or several names in one cell:
// "`final_top1`, `final_top5`"). The set of those names must equal the set of the field list's
// names, plus the few names the writer adds itself (kWriterOnly: `complete`, the commit marker).

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "results/reader.h"
#include "results/record.h"
#include "results/writer.h"
#include "tests/results/expect_equal.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using testing::ScratchDir;

template <class R>
std::vector<std::string> field_names() {
  std::vector<std::string> names;
  FieldList<R>::visit([&](const Field& f, auto) { names.push_back(f.name); });
  return names;
}

template <class R>
std::set<std::string> field_name_set() {
  const auto names = field_names<R>();
  return {names.begin(), names.end()};
}

std::string read_schema() {
  const char* src = std::getenv("QUILT_SOURCE_DIR");
  const std::string path = std::string(src ? src : ".") + "/results/SCHEMA.md";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path << " (set QUILT_SOURCE_DIR)";
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The backticked names in the first cell of every table row of the section whose heading starts
// with `heading`, up to the next heading. Empty when the heading is not found.
std::set<std::string> schema_names(const std::string& schema, const std::string& heading) {
  std::set<std::string> names;
  std::istringstream lines(schema);
  std::string line;
  bool in_section = false;
  while (std::getline(lines, line)) {
    if (line.rfind("#", 0) == 0) {
      in_section = line.rfind(heading, 0) == 0;
      continue;
    }
    if (!in_section || line.rfind("| ", 0) != 0) continue;
    const size_t end = line.find(" |", 1);
    const std::string cell = line.substr(2, end == std::string::npos ? std::string::npos : end - 2);
    for (size_t open = cell.find('`'); open != std::string::npos;) {
      const size_t close = cell.find('`', open + 1);
      if (close == std::string::npos) break;
      names.insert(cell.substr(open + 1, close - open - 1));
      open = cell.find('`', close + 1);
    }
  }
  return names;
}

struct Section {
  std::string record;
  std::string heading;
  std::set<std::string> fields;
  std::set<std::string> writer_only;
};

std::vector<Section> sections() {
  return {
      {"Provenance", "### `/provenance`", field_name_set<Provenance>(), {}},
      {"RunRecord", "### `/runs/<run id>` ", field_name_set<RunRecord>(), {"complete"}},
      {"MetricCheck", "### `/runs/<run id>/checks/<k>`", field_name_set<MetricCheck>(), {}},
      {"StageRecord", "### `/runs/<run id>/stages/<k>`", field_name_set<StageRecord>(), {}},
      {"TrainingRecord", "### `/runs/<run id>/training`", field_name_set<TrainingRecord>(), {}},
  };
}

TEST(results_fields, SchemaDocumentsExactlyTheFieldLists) {
  const std::string schema = read_schema();
  ASSERT_FALSE(schema.empty());
  for (const Section& s : sections()) {
    SCOPED_TRACE(s.record + " vs SCHEMA.md section " + s.heading);
    const std::set<std::string> documented = schema_names(schema, s.heading);
    ASSERT_FALSE(documented.empty()) << "no table rows found under the heading";
    for (const std::string& name : s.fields)
      EXPECT_TRUE(documented.count(name)) << "field '" << name << "' is not in SCHEMA.md";
    for (const std::string& name : documented)
      EXPECT_TRUE(s.fields.count(name) || s.writer_only.count(name))
          << "SCHEMA.md lists '" << name << "', which is not in FieldList<" << s.record << ">";
  }
}

TEST(results_fields, SchemaRuleSeesAMissingField) {
  // The parser itself: a section without one of the names, and one with several names per row.
  const std::string text =
      "### `/x`\n\n| name | type |\n|---|---|\n| `a` | int64 |\n| `b`, `c` | float64 |\n"
      "### `/y`\n| `d` | string |\n";
  EXPECT_EQ(schema_names(text, "### `/x`"), (std::set<std::string>{"a", "b", "c"}));
  EXPECT_EQ(schema_names(text, "### `/y`"), (std::set<std::string>{"d"}));
  EXPECT_TRUE(schema_names(text, "### `/z`").empty());
}

template <class R>
void expect_unique_names_and_known_markers() {
  const auto names = field_names<R>();
  const std::set<std::string> unique(names.begin(), names.end());
  EXPECT_EQ(unique.size(), names.size()) << "a name appears twice";
  FieldList<R>::visit([&](const Field& f, auto) {
    if (f.present_if) {
      EXPECT_TRUE(unique.count(f.present_if))
          << f.name << ": present_if '" << f.present_if << "' is not a field of the record";
    }
  });
}

TEST(results_fields, NamesAreUniqueAndPresenceMarkersAreFields) {
  expect_unique_names_and_known_markers<StageRecord>();
  expect_unique_names_and_known_markers<MetricCheck>();
  expect_unique_names_and_known_markers<TrainingRecord>();
  expect_unique_names_and_known_markers<RunRecord>();
  expect_unique_names_and_known_markers<Provenance>();
}

// Every field of the list has, in at least one of `records`, a value other than the default's,
// so that a field the writer or the reader dropped cannot round trip by luck.
template <class R>
void expect_every_field_set(const std::vector<R>& records) {
  const R def;
  FieldList<R>::visit([&](const Field& f, auto member) {
    bool set = false;
    for (const R& r : records) set |= !testing::same_value(r.*member, def.*member);
    EXPECT_TRUE(set) << f.name << " keeps its default in every sample record";
  });
}

ExperimentRecord sample_with_training() {
  ExperimentRecord e = testing::make_sample_record();
  e.runs[0].training = testing::make_sample_training("freeze");
  e.runs[2].training = testing::make_sample_training("proxy");
  return e;
}

TEST(results_fields, SampleRecordSetsEveryField) {
  const ExperimentRecord e = sample_with_training();
  std::vector<StageRecord> stages;
  std::vector<MetricCheck> checks;
  std::vector<TrainingRecord> trainings;
  for (const RunRecord& r : e.runs) {
    stages.insert(stages.end(), r.stages.begin(), r.stages.end());
    checks.insert(checks.end(), r.checks.begin(), r.checks.end());
    if (!r.training.mode.empty()) trainings.push_back(r.training);
  }
  expect_every_field_set(stages);
  expect_every_field_set(checks);
  expect_every_field_set(trainings);
  expect_every_field_set(e.runs);
  expect_every_field_set(std::vector<Provenance>{e.provenance});
}

TEST(results_fields, EveryFieldRoundTrips) {
  ScratchDir dir;
  const std::string path = dir.file("fields.h5");
  const ExperimentRecord written = sample_with_training();
  write_experiment(path, written);
  const ExperimentRecord read = read_experiment(path);
  testing::expect_equal(written, read);
  ASSERT_EQ(read.runs.size(), 3u);
  testing::expect_equal(written.runs[0].training, read.runs[0].training, "training freeze");
  testing::expect_equal(written.runs[2].training, read.runs[2].training, "training proxy");
}

}  // namespace
}  // namespace quilt::results
