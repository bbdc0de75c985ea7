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
// to results/writer.cc, results/reader.cc, results/SCHEMA.md and tests/results/expect_equal.h,
// then update the sizes here.
TEST(results_roundtrip, RecordLayoutUnchanged) {
#if defined(__x86_64__) && defined(__GLIBCXX__) && defined(_GLIBCXX_USE_CXX11_ABI) && \
    _GLIBCXX_USE_CXX11_ABI
  EXPECT_EQ(sizeof(StageRecord), 272u);
  EXPECT_EQ(sizeof(RunRecord), 400u);
  EXPECT_EQ(sizeof(Provenance), 384u);
  EXPECT_EQ(sizeof(ExperimentRecord), 480u);
#else
  GTEST_SKIP() << "sizes are only recorded for x86_64 libstdc++";
#endif
}

}  // namespace
}  // namespace quilt::results
