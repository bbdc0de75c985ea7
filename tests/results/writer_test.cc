// write_experiment: atomic replacement, cleanup and clear errors when writing fails.

#include "results/writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "results/h5.h"
#include "results/reader.h"
#include "tests/results/expect_equal.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using testing::expect_equal;
using ::testing::HasSubstr;
using testing::list_dir;
using testing::make_sample_record;
using testing::make_sample_run;
using testing::read_bytes;
using testing::ScratchDir;

// Runs `fn`, expects ResultsError, returns its message; also checks nothing went to stderr (HDF5's
// automatic error printing must be off).
template <typename Fn>
std::string expect_results_error(Fn fn) {
  ::testing::internal::CaptureStderr();
  std::string message;
  try {
    fn();
    ADD_FAILURE() << "expected ResultsError";
  } catch (const ResultsError& e) {
    message = e.what();
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "") << "HDF5 printed to stderr";
  return message;
}

TEST(results_writer, OverwriteReplacesFileAndLeavesNoTemporary) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  ExperimentRecord first = make_sample_record();
  first.runs.resize(1);
  write_experiment(path, first);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});

  const ExperimentRecord second = make_sample_record();
  write_experiment(path, second);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
  expect_equal(second, read_experiment(path));
}

TEST(results_writer, RelativePathInCurrentDirectory) {
  ScratchDir dir;
  const auto old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  write_experiment("relative.h5", make_sample_record());
  std::filesystem::current_path(old_cwd);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"relative.h5"});
}

TEST(results_writer, FailureMidWriteKeepsOldFile) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  write_experiment(path, make_sample_record());
  const std::string before = read_bytes(path);

  // The last run holds a string HDF5 cannot store: the failure comes after the file was created
  // and the earlier runs written.
  ExperimentRecord bad = make_sample_record();
  bad.runs.back().stages.back().host = std::string("node\0x", 6);
  const std::string message = expect_results_error([&] { write_experiment(path, bad); });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("left unchanged"));
  EXPECT_THAT(message, HasSubstr("/runs/r-mm03/stages/2"));
  EXPECT_THAT(message, HasSubstr("NUL"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
  expect_equal(make_sample_record(), read_experiment(path));
}

TEST(results_writer, UnwritableDirectoryKeepsOldFile) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  write_experiment(path, make_sample_record());
  const std::string before = read_bytes(path);
  ASSERT_EQ(::chmod(dir.path().c_str(), 0555), 0);
  {
    // root ignores directory permissions; there is nothing to test then.
    std::ofstream probe(dir.file("probe"));
    if (probe.is_open()) {
      probe.close();
      std::remove(dir.file("probe").c_str());
      ::chmod(dir.path().c_str(), 0755);
      GTEST_SKIP() << "directory permissions are not enforced for this user (root?)";
    }
  }
  const std::string message =
      expect_results_error([&] { write_experiment(path, make_sample_record()); });
  ::chmod(dir.path().c_str(), 0755);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("Permission denied"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
}

TEST(results_writer, ParentIsNotADirectory) {
  // Works for root too: no permission can make a regular file a directory.
  ScratchDir dir;
  std::ofstream(dir.file("plain")) << "not a directory";
  const std::string path = dir.file("plain") + "/exp.h5";
  const std::string message =
      expect_results_error([&] { write_experiment(path, make_sample_record()); });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("H5Fcreate"));
  EXPECT_THAT(message, HasSubstr("Not a directory"));
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"plain"});
}

TEST(results_writer, RenameFailureRemovesTemporary) {
  // The target is a non-empty directory: everything succeeds up to rename(), which fails.
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  std::filesystem::create_directory(path);
  std::ofstream(path + "/keep") << "x";
  const std::string message =
      expect_results_error([&] { write_experiment(path, make_sample_record()); });
  EXPECT_THAT(message, HasSubstr("cannot rename"));
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
  EXPECT_TRUE(std::filesystem::is_directory(path));
}

TEST(results_writer, KilledAtAnyMomentLeavesACompleteFile) {
  // A child rewrites the file in a loop, as the harness does after each run, and is SIGKILLed at a
  // random moment; the file must then read back as one of the two records, whole.
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  ExperimentRecord small = make_sample_record();
  small.runs.resize(1);
  ExperimentRecord big = make_sample_record();
  for (int i = 0; i < 30; ++i)
    big.runs.push_back(make_sample_run("extra" + std::to_string(i), i % 5, 4));
  write_experiment(path, small);
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 8; ++trial) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      try {
        for (int i = 0;; ++i) write_experiment(path, i % 2 == 0 ? big : small);
      } catch (...) {
        ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2 + rng() % 60));
    ASSERT_EQ(::kill(child, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "writer exited by itself with status " << status;
    const ExperimentRecord read = read_experiment(path);
    SCOPED_TRACE("trial " + std::to_string(trial));
    expect_equal(read.runs.size() == small.runs.size() ? small : big, read);
  }
  // Besides the file, only the killed writers' temporaries may remain.
  for (const std::string& name : list_dir(dir.path())) {
    EXPECT_TRUE(name == "exp.h5" || (name.rfind(".quilt-", 0) == 0 && name.size() > 4 &&
                                     name.substr(name.size() - 4) == ".tmp"))
        << name;
  }
}

TEST(results_writer, InvalidRunIdsRejectedBeforeWriting) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  for (const std::string id : {"", "a/b", "."}) {
    ExperimentRecord e = make_sample_record();
    e.runs[1].id = id;
    const std::string message = expect_results_error([&] { write_experiment(path, e); });
    EXPECT_THAT(message, HasSubstr("invalid run id")) << id;
    EXPECT_THAT(message, HasSubstr("run #1")) << id;
  }
  ExperimentRecord dup = make_sample_record();
  dup.runs[2].id = dup.runs[0].id;
  EXPECT_THAT(expect_results_error([&] { write_experiment(path, dup); }),
              HasSubstr("duplicate run id"));
  ExperimentRecord empty_key = make_sample_record();
  empty_key.runs[0].params[""] = "x";
  EXPECT_THAT(expect_results_error([&] { write_experiment(path, empty_key); }),
              HasSubstr("empty attribute name"));
  EXPECT_TRUE(list_dir(dir.path()).empty());
}

TEST(results_writer, ErrorPrintingSettingRestored) {
  H5E_auto2_t before_func = nullptr;
  void* before_data = nullptr;
  ASSERT_GE(H5Eget_auto2(H5E_DEFAULT, &before_func, &before_data), 0);
  ScratchDir dir;
  write_experiment(dir.file("a.h5"), make_sample_record());
  EXPECT_THROW(read_experiment(dir.file("missing.h5")), ResultsError);
  H5E_auto2_t after_func = nullptr;
  void* after_data = nullptr;
  ASSERT_GE(H5Eget_auto2(H5E_DEFAULT, &after_func, &after_data), 0);
  EXPECT_EQ(before_func, after_func);
  EXPECT_EQ(before_data, after_data);
}

}  // namespace
}  // namespace quilt::results

namespace quilt::results {
namespace {

using testing::list_dir;
using testing::make_sample_record;
using testing::ScratchDir;

TEST(results_appender, CommitsRunsOneByOneAndReadsBackLikeAWholeWrite) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  const ExperimentRecord all = make_sample_record();
  {
    Appender a = Appender::create(path, all, /*replace_at_first_commit=*/false);
    EXPECT_TRUE(read_experiment(path).runs.empty());  // there from the start, with no runs
    for (const RunRecord& r : all.runs) a.commit(r, all.provenance);
  }
  const ExperimentRecord back = read_experiment(path);
  ASSERT_EQ(back.runs.size(), all.runs.size());
  for (size_t i = 0; i < all.runs.size(); ++i) EXPECT_EQ(back.runs[i].id, all.runs[i].id);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
}

TEST(results_appender, ResumeReplacesARunInPlaceWithoutDuplicates) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  ExperimentRecord all = make_sample_record();
  write_experiment(path, all);  // a file of an older job (fixed-size run_order)
  RunRecord again = all.runs.front();
  again.status = "failed";
  again.failure = "second try";
  {
    Appender a = Appender::resume(path, all);
    a.commit(again, all.provenance);
  }
  const ExperimentRecord back = read_experiment(path);
  ASSERT_EQ(back.runs.size(), all.runs.size());
  EXPECT_EQ(back.runs.front().id, again.id);
  EXPECT_EQ(back.runs.front().failure, "second try");
}

TEST(results_appender, ReplaceAtFirstCommitKeepsTheOldFileUntilThen) {
  ScratchDir dir;
  const std::string path = dir.file("exp.h5");
  const ExperimentRecord all = make_sample_record();
  write_experiment(path, all);
  {
    Appender a = Appender::create(path, all, /*replace_at_first_commit=*/true);
    EXPECT_EQ(read_experiment(path).runs.size(), all.runs.size());  // old file still there
  }
  // No commit: the old file stays, the temporary is gone.
  EXPECT_EQ(read_experiment(path).runs.size(), all.runs.size());
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"exp.h5"});
  {
    Appender a = Appender::create(path, all, /*replace_at_first_commit=*/true);
    a.commit(all.runs.back(), all.provenance);
  }
  const ExperimentRecord back = read_experiment(path);
  ASSERT_EQ(back.runs.size(), 1u);
  EXPECT_EQ(back.runs.front().id, all.runs.back().id);
}

}  // namespace
}  // namespace quilt::results
