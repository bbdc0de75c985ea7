// Round trips ExperimentRecord -> write_experiment -> read_experiment, field by field.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "results/reader.h"
#include "results/writer.h"
#include "tests/results/expect_equal.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using testing::expect_equal;
using testing::make_sample_record;
using testing::make_sample_run;
using testing::ScratchDir;

ExperimentRecord round_trip(const ScratchDir& dir, const ExperimentRecord& record) {
  const std::string path = dir.file("out.h5");
  write_experiment(path, record);
  return read_experiment(path);
}

TEST(results_roundtrip, FullyPopulatedRecord) {
  ScratchDir dir;
  const ExperimentRecord written = make_sample_record();
  const ExperimentRecord read = round_trip(dir, written);
  expect_equal(written, read);
  // Order is the written one, not alphabetical; stages by number, not name ("10" < "2").
  ASSERT_EQ(read.runs.size(), 3u);
  EXPECT_EQ(read.runs[0].id, "r-zz01");
  EXPECT_EQ(read.runs[1].id, "r-aa02");
  EXPECT_EQ(read.runs[1].stages.size(), 12u);
  EXPECT_EQ(read.runs[1].stages[10].rank, 10);
  ASSERT_EQ(read.runs[1].checks.size(), 12u);
  EXPECT_EQ(read.runs[1].checks[10].reference, 120.25);
  EXPECT_EQ(read.runs[1].validity, "invalid");
  EXPECT_EQ(read.runs[1].invalid_reasons.size(), 2u);
  EXPECT_EQ(read.runs[2].failed_rank, 1);
  EXPECT_EQ(read.runs[0].repetition_throughput_sps.size(), 3u);
  EXPECT_EQ(read.provenance.boards.size(), 2u);
  EXPECT_EQ(read.provenance.scale, "small");
}

TEST(results_roundtrip, SampleRecordSetsNewFieldsToNonDefaults) {
  // The sample record must set every field to a non-default value, or a field the writer or the
  // reader forgot would round trip by luck.
  const ExperimentRecord e = make_sample_record();
  const RunRecord def;
  const Provenance p;
  EXPECT_NE(e.provenance.resolved_experiment, p.resolved_experiment);
  EXPECT_NE(e.provenance.scale, p.scale);
  EXPECT_NE(e.provenance.boards, p.boards);
  EXPECT_NE(e.provenance.start_utc, p.start_utc);
  EXPECT_NE(e.provenance.end_utc, p.end_utc);
  bool failed_rank = false, invalid = false, passed = false, failed_check = false;
  for (const RunRecord& r : e.runs) {
    failed_rank |= r.failed_rank != def.failed_rank;
    invalid |= r.validity != def.validity && !r.invalid_reasons.empty();
    EXPECT_NE(r.repetitions, def.repetitions);
    EXPECT_EQ(r.repetition_throughput_sps.size(), static_cast<size_t>(r.repetitions));
    EXPECT_EQ(r.repetition_duration_s.size(), static_cast<size_t>(r.repetitions));
    EXPECT_NE(r.throughput_median_sps, def.throughput_median_sps);
    EXPECT_NE(r.cpu_wait_fraction, def.cpu_wait_fraction);
    EXPECT_NE(r.throughput_mean_sps, def.throughput_mean_sps);
    EXPECT_NE(r.throughput_std_sps, def.throughput_std_sps);
    EXPECT_NE(r.throughput_ci95_low_sps, def.throughput_ci95_low_sps);
    EXPECT_NE(r.throughput_ci95_high_sps, def.throughput_ci95_high_sps);
    EXPECT_FALSE(r.checks.empty());
    for (const MetricCheck& c : r.checks) {
      passed |= c.passed;
      failed_check |= !c.passed;
      EXPECT_FALSE(c.metric.empty());
      EXPECT_NE(c.value, 0);
      EXPECT_NE(c.reference, 0);
      EXPECT_NE(c.tolerance, 0);
      EXPECT_FALSE(c.better.empty());
    }
  }
  EXPECT_TRUE(failed_rank);
  EXPECT_TRUE(invalid);
  EXPECT_TRUE(passed);
  EXPECT_TRUE(failed_check);
}

TEST(results_roundtrip, EmptyRecordAndEmptyVectors) {
  ScratchDir dir;
  ExperimentRecord empty;
  expect_equal(empty, round_trip(dir, empty));

  ExperimentRecord sparse;
  RunRecord run;
  run.id = "only";
  run.stages.emplace_back();  // a stage with every vector empty
  sparse.runs.push_back(run);
  const ExperimentRecord read = round_trip(dir, sparse);
  expect_equal(sparse, read);
  ASSERT_EQ(read.runs.size(), 1u);
  EXPECT_TRUE(read.runs[0].params.empty());
  EXPECT_TRUE(read.runs[0].stages[0].in_shape.empty());
  EXPECT_TRUE(read.provenance.hosts.empty());
  EXPECT_TRUE(read.provenance.boards.empty());
  EXPECT_TRUE(read.runs[0].checks.empty());
  EXPECT_TRUE(read.runs[0].invalid_reasons.empty());
  EXPECT_TRUE(read.runs[0].repetition_throughput_sps.empty());
  EXPECT_EQ(read.runs[0].validity, "valid");
  EXPECT_EQ(read.runs[0].failed_rank, -1);
}

TEST(results_roundtrip, UnicodeQuotesAndControlCharacters) {
  ScratchDir dir;
  ExperimentRecord e = make_sample_record();
  const std::string tricky =
      "quotes \" ' ` backslash \\ tab\t newline\n cr\r unicode: Grüße, 日本語, ρ=½, 🚀; "
      "yaml: {a: [1, 2]} # comment";
  e.name = tricky;
  e.provenance.experiment_text = tricky + "\n" + std::string(100000, 'x');  // large, multi-line
  e.provenance.hosts = {"hôte-1", "", "host \"2\""};
  e.runs[0].failure = tricky;
  e.runs[0].params["key with spaces \"and quotes\""] = tricky;
  e.runs[0].params["ünïcödé.key"] = "";
  e.runs[0].params["path/like/key"] = "slashes are fine in attribute names";
  e.runs[0].cut_names = {"layer1.0 \"conv\"", "日本"};
  e.runs[0].stages[0].board_description = tricky;
  e.provenance.resolved_experiment = tricky + "\n" + std::string(100000, 'y');
  e.provenance.scale = tricky;
  e.provenance.boards = {tricky, "", "Alveo U55C \"xrt\""};
  e.provenance.start_utc = tricky;
  e.runs[0].validity = tricky;
  e.runs[0].invalid_reasons = {tricky, "", "ü"};
  e.runs[0].checks[0].metric = tricky;
  e.runs[0].checks[1].better = tricky;
  expect_equal(e, round_trip(dir, e));
}

TEST(results_roundtrip, ExtremeNumbers) {
  ScratchDir dir;
  ExperimentRecord e = make_sample_record();
  RunRecord& r = e.runs[0];
  r.batch_size = std::numeric_limits<int64_t>::max();
  r.warmup_batches = std::numeric_limits<int64_t>::min();
  r.throughput_sps = std::numeric_limits<double>::infinity();
  r.duration_s = std::numeric_limits<double>::denorm_min();
  r.latency_s = {-0.0, std::numeric_limits<double>::max(),
                 -std::numeric_limits<double>::infinity()};
  r.stages[0].bytes_sent = std::numeric_limits<int64_t>::max();
  r.max_abs_error = std::numeric_limits<double>::quiet_NaN();
  r.failed_rank = std::numeric_limits<int64_t>::min();
  r.repetitions = std::numeric_limits<int64_t>::max();
  r.throughput_std_sps = std::numeric_limits<double>::infinity();
  r.throughput_ci95_low_sps = -std::numeric_limits<double>::infinity();
  r.throughput_ci95_high_sps = std::numeric_limits<double>::max();
  r.repetition_throughput_sps = {-0.0, std::numeric_limits<double>::denorm_min()};
  r.checks[0].tolerance = std::numeric_limits<double>::lowest();
  const ExperimentRecord read = round_trip(dir, e);
  EXPECT_TRUE(std::isnan(read.runs[0].max_abs_error));
  r.max_abs_error = 0;  // NaN != NaN; checked above
  RunRecord read_run = read.runs[0];
  read_run.max_abs_error = 0;
  expect_equal(r, read_run, "run 0");
  EXPECT_TRUE(std::signbit(read.runs[0].latency_s[0]));
}

TEST(results_roundtrip, ManyRunsRewrittenAfterEachRun) {
  // What the harness does: rewrite the whole file after every completed run.
  ScratchDir dir;
  const std::string path = dir.file("sweep.h5");
  ExperimentRecord e = make_sample_record();
  e.runs.clear();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) {
    e.runs.push_back(make_sample_run("run" + std::to_string(i), i % 8, 2 + i % 3));
    write_experiment(path, e);
  }
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  expect_equal(e, read_experiment(path));
  EXPECT_LT(elapsed_s, 30.0) << "40 rewrites of a growing file took " << elapsed_s << " s";
}

// Guards against a field added to results/record.h but not stored: if this fails, add the field
// to its FieldList in results/record.h (the writer, reader, MPI gather, Python module and
// tests/results/expect_equal.h follow it), to results/SCHEMA.md, tests/results/sample_record.h
// and tests/python/test_results_schema.py, then update the sizes here.
TEST(results_roundtrip, RecordLayoutUnchanged) {
#if defined(__x86_64__) && defined(__GLIBCXX__) && defined(_GLIBCXX_USE_CXX11_ABI) && \
    _GLIBCXX_USE_CXX11_ABI
  EXPECT_EQ(sizeof(StageRecord), 360u);
  EXPECT_EQ(sizeof(MetricCheck), 96u);
  EXPECT_EQ(sizeof(RunRecord), 1528u);  // with TrainingRecord and TraceRecord
  EXPECT_EQ(sizeof(Provenance), 536u);
  EXPECT_EQ(sizeof(ExperimentRecord), 632u);
#else
  GTEST_SKIP() << "sizes are only recorded for x86_64 libstdc++";
#endif
}

}  // namespace
}  // namespace quilt::results
