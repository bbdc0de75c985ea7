// The RAII HDF5 wrappers: values round trip, failures become ResultsError naming file and path.

#include "results/h5.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/results/scratch_dir.h"

namespace quilt::results::h5 {
namespace {

using quilt::results::testing::ScratchDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(results_h5, ValuesRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.file("values.h5");
  {
    File file = File::create(path);
    Group g = file.root().create_group("g");
    g.write_attribute("s", "text ü");
    g.write_attribute("empty", std::string());
    g.write_attribute("i", int64_t{-42});
    g.write_attribute("d", 2.5);
    g.write_dataset("dv", std::vector<double>{1.5, -2});
    g.write_dataset("iv", std::vector<int64_t>{7, 8, 9});
    g.write_dataset("sv", std::vector<std::string>{"a", "", "日本"});
    g.write_dataset("empty_dv", std::vector<double>{});
    g.write_dataset("empty_sv", std::vector<std::string>{});
    g.write_string_dataset("text", "line 1\nline 2");
    g.create_group("child").close();
    g.close();
    file.close();
  }
  File file = File::open_read_only(path);
  const Group g = file.root().open_group("g");
  EXPECT_EQ(g.read_string_attribute("s"), "text ü");
  EXPECT_EQ(g.read_string_attribute("empty"), "");
  EXPECT_EQ(g.read_int64_attribute("i"), -42);
  EXPECT_EQ(g.read_double_attribute("d"), 2.5);
  EXPECT_EQ(g.read_double_attribute("i"), -42.0);  // integers widen to double
  EXPECT_THAT(g.read_double_vector("dv"), ElementsAre(1.5, -2));
  EXPECT_THAT(g.read_int64_vector("iv"), ElementsAre(7, 8, 9));
  EXPECT_THAT(g.read_string_vector("sv"), ElementsAre("a", "", "日本"));
  EXPECT_TRUE(g.read_double_vector("empty_dv").empty());
  EXPECT_TRUE(g.read_string_vector("empty_sv").empty());
  EXPECT_EQ(g.read_string_dataset("text"), "line 1\nline 2");
  EXPECT_THAT(g.attribute_names(), ElementsAre("d", "empty", "i", "s"));
  EXPECT_THAT(g.child_names(),
              ElementsAre("child", "dv", "empty_dv", "empty_sv", "iv", "sv", "text"));
  EXPECT_TRUE(g.has("child"));
  EXPECT_FALSE(g.has("nope"));
  EXPECT_FALSE(g.has("a/b"));
  EXPECT_TRUE(g.has_attribute("s"));
  EXPECT_FALSE(g.has_attribute("nope"));
}

TEST(results_h5, FailuresNameFileAndPathWithoutPrinting) {
  ScratchDir dir;
  const std::string path = dir.file("errors.h5");
  File file = File::create(path);
  Group g = file.root().create_group("g");
  g.write_attribute("a", int64_t{1});
  ::testing::internal::CaptureStderr();
  try {
    g.write_attribute("a", int64_t{2});
    ADD_FAILURE() << "duplicate attribute accepted";
  } catch (const ResultsError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":/g attribute 'a'"));
    EXPECT_THAT(e.what(), HasSubstr("H5Acreate2 failed"));
  }
  try {
    g.read_int64_vector("absent");
    ADD_FAILURE() << "missing dataset read";
  } catch (const ResultsError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":/g/absent: missing dataset"));
  }
  try {
    g.create_group("bad/name");
    ADD_FAILURE() << "group name with '/' accepted";
  } catch (const ResultsError& e) {
    EXPECT_THAT(e.what(), HasSubstr("invalid group name 'bad/name'"));
  }
  EXPECT_THROW(g.read_string_attribute("a"), ResultsError);  // an integer, not a string
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(results_h5, CloseFailsWhileObjectsAreOpen) {
  // The writer relies on this: a close that "succeeds" with objects open would leave the file
  // unflushed when it is renamed into place.
  ScratchDir dir;
  File file = File::create(dir.file("open.h5"));
  Group g = file.root().create_group("g");
  EXPECT_THROW(file.close(), ResultsError);
}

TEST(results_h5, HandleMoves) {
  Handle a(H5Screate(H5S_SCALAR));
  ASSERT_TRUE(a.valid());
  const hid_t id = a.get();
  Handle b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(b.get(), id);
  Handle c;
  c = std::move(b);
  EXPECT_EQ(c.get(), id);
  EXPECT_TRUE(c.reset());
  EXPECT_FALSE(c.valid());
  EXPECT_GT(H5Iis_valid(id), -1);
  EXPECT_EQ(H5Iis_valid(id), 0);
}

}  // namespace
}  // namespace quilt::results::h5
