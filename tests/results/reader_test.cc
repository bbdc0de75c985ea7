// read_experiment: clear errors for files that are not (readable) Quilt results.

#include "results/reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>

#include <fstream>
#include <functional>

#include "results/writer.h"
#include "tests/results/sample_record.h"
#include "tests/results/scratch_dir.h"

namespace quilt::results {
namespace {

using ::testing::HasSubstr;
using testing::make_sample_record;
using testing::ScratchDir;

std::string read_error(const std::string& path) {
  ::testing::internal::CaptureStderr();
  std::string message;
  try {
    read_experiment(path);
    ADD_FAILURE() << "expected ResultsError for " << path;
  } catch (const ResultsError& e) {
    message = e.what();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "") << "HDF5 printed to stderr";
  return message;
}

// Reading `path` fails with a message that names the file and holds `part`.
void expect_read_error(const std::string& path, const std::string& part) {
  const std::string message = read_error(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr(part));
}

// Raw HDF5 edits of a written file, to make files the writer never would. Each function asserts
// its own calls succeed.
class RawFile {
 public:
  explicit RawFile(const std::string& path)
      : id_(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)) {
    EXPECT_GE(id_, 0);
  }
  ~RawFile() { EXPECT_GE(H5Fclose(id_), 0); }
  void delete_attribute(const std::string& object, const std::string& name) {
    EXPECT_GE(H5Adelete_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT), 0);
  }
  void set_int64_attribute(const std::string& object, const std::string& name, int64_t value) {
    if (H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0) {
      delete_attribute(object, name);
    }
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate_by_name(id_, object.c_str(), name.c_str(), H5T_STD_I64LE, space,
                                         H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(attr, 0);
    EXPECT_GE(H5Awrite(attr, H5T_NATIVE_INT64, &value), 0);
    H5Aclose(attr);
    H5Sclose(space);
  }
  void set_fixed_string_attribute(const std::string& object, const std::string& name,
                                  const std::string& value) {
    if (H5Aexists_by_name(id_, object.c_str(), name.c_str(), H5P_DEFAULT) > 0) {
      delete_attribute(object, name);
    }
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, value.size());
    const hid_t space = H5Screate(H5S_SCALAR);
    const hid_t attr = H5Acreate_by_name(id_, object.c_str(), name.c_str(), type, space,
                                         H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(attr, 0);
    EXPECT_GE(H5Awrite(attr, type, value.data()), 0);
    H5Aclose(attr);
    H5Sclose(space);
    H5Tclose(type);
  }
  void delete_link(const std::string& path) {
    EXPECT_GE(H5Ldelete(id_, path.c_str(), H5P_DEFAULT), 0);
  }

 private:
  hid_t id_;
};

// <dir>/<name> holding make_sample_record(), then changed by `edit`: its path.
std::string edited_sample(const ScratchDir& dir, const std::string& name,
                          const std::function<void(RawFile&)>& edit) {
  const std::string path = dir.file(name);
  write_experiment(path, make_sample_record());
  RawFile file(path);
  edit(file);
  return path;
}

TEST(results_reader, MissingFile) {
  ScratchDir dir;
  const std::string path = dir.file("nope.h5");
  expect_read_error(path, "not found");
}

TEST(results_reader, DirectoryInsteadOfFile) {
  ScratchDir dir;
  EXPECT_THAT(read_error(dir.path().string()), HasSubstr("is a directory"));
}

TEST(results_reader, GarbageBytes) {
  ScratchDir dir;
  const std::string path = dir.file("garbage.h5");
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 4096; ++i) out.put(static_cast<char>((i * 7919) & 0xff));
  }
  expect_read_error(path, "not an HDF5 file");
}

TEST(results_reader, EmptyFile) {
  ScratchDir dir;
  const std::string path = dir.file("empty.h5");
  std::ofstream(path).close();
  expect_read_error(path, "HDF5");
}

TEST(results_reader, TruncatedFile) {
  ScratchDir dir;
  const std::string path = dir.file("cut.h5");
  write_experiment(path, make_sample_record());
  const std::string bytes = testing::read_bytes(path);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 3);
  EXPECT_THAT(read_error(path), HasSubstr(path));
}

TEST(results_reader, ForeignHdf5File) {
  ScratchDir dir;
  const std::string path = dir.file("foreign.h5");
  {
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hsize_t dims[1] = {3};
    const hid_t space = H5Screate_simple(1, dims, nullptr);
    const hid_t dataset =
        H5Dcreate2(file, "data", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const double values[3] = {1, 2, 3};
    ASSERT_GE(H5Dwrite(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), 0);
    H5Dclose(dataset);
    H5Sclose(space);
    ASSERT_GE(H5Fclose(file), 0);
  }
  const std::string message = read_error(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("not a Quilt results file"));
  EXPECT_THAT(message, HasSubstr("quilt_format"));
}

TEST(results_reader, WrongFormatName) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "other.h5", [](RawFile& f) {
    f.set_fixed_string_attribute("/", "quilt_format", "quilt-plans");
  });
  EXPECT_THAT(read_error(path), HasSubstr("'quilt_format' is 'quilt-plans'"));
}

TEST(results_reader, FutureSchemaVersion) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "future.h5", [](RawFile& f) {
    f.set_int64_attribute("/", "schema_version", kSchemaVersion + 1);
  });
  const std::string message = read_error(path);
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("schema_version " + std::to_string(kSchemaVersion + 1)));
  EXPECT_THAT(message, HasSubstr("newer"));
}

TEST(results_reader, InvalidSchemaVersion) {
  ScratchDir dir;
  const std::string path = edited_sample(
      dir, "zero.h5", [](RawFile& f) { f.set_int64_attribute("/", "schema_version", 0); });
  EXPECT_THAT(read_error(path), HasSubstr("invalid schema_version 0"));
}

TEST(results_reader, IncompleteRunIsSkipped) {
  // A job killed while appending a run leaves its group without 'complete': the run is not there.
  ScratchDir dir;
  const std::string path = dir.file("incomplete.h5");
  const ExperimentRecord written = make_sample_record();
  write_experiment(path, written);
  RawFile(path).delete_attribute("/runs/r-aa02", "complete");
  const ExperimentRecord read = read_experiment(path);
  ASSERT_EQ(read.runs.size(), written.runs.size() - 1);
  for (const RunRecord& r : read.runs) EXPECT_NE(r.id, "r-aa02");
}

TEST(results_reader, MissingAttributeNamesObjectPath) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "missing_attr.h5", [](RawFile& f) {
    f.delete_attribute("/runs/r-mm03", "throughput_sps");
  });
  const std::string message = read_error(path);
  EXPECT_THAT(message, HasSubstr(path + ":/runs/r-mm03 attribute 'throughput_sps'"));
  EXPECT_THAT(message, HasSubstr("missing"));
}

TEST(results_reader, MissingDatasetNamesObjectPath) {
  ScratchDir dir;
  const std::string path = edited_sample(
      dir, "missing_ds.h5", [](RawFile& f) { f.delete_link("/runs/r-zz01/stages/1/compute_s"); });
  EXPECT_THAT(read_error(path),
              HasSubstr(path + ":/runs/r-zz01/stages/1/compute_s: missing dataset"));
}

TEST(results_reader, MissingCheckNamesObjectPath) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "missing_check.h5", [](RawFile& f) {
    f.delete_attribute("/runs/r-aa02/checks/10", "passed");
  });
  EXPECT_THAT(read_error(path), HasSubstr(path + ":/runs/r-aa02/checks/10 attribute 'passed'"));
  RawFile(path).delete_link("/runs/r-aa02/checks/3");  // 0..11 with a gap: 11 is never reached
  EXPECT_THAT(read_error(path), HasSubstr(path + ":/runs/r-aa02/checks/3"));
}

TEST(results_reader, WrongTypeNamesObjectPath) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "wrong_type.h5", [](RawFile& f) {
    f.set_fixed_string_attribute("/runs/r-zz01", "batch_size", "eight");
  });
  const std::string message = read_error(path);
  EXPECT_THAT(message, HasSubstr(path + ":/runs/r-zz01 attribute 'batch_size'"));
  EXPECT_THAT(message, HasSubstr("expected an integer"));
}

TEST(results_reader, ListedRunWithoutGroupIsSkipped) {
  // A replaced run whose new group was not written yet: listed in /run_order, group gone.
  ScratchDir dir;
  const std::string path = dir.file("order.h5");
  const ExperimentRecord written = make_sample_record();
  write_experiment(path, written);
  RawFile(path).delete_link("/runs/r-aa02");
  EXPECT_EQ(read_experiment(path).runs.size(), written.runs.size() - 1);
}

TEST(results_reader, AcceptsFixedLengthStringsFromOtherTools) {
  ScratchDir dir;
  const std::string path = edited_sample(dir, "fixed.h5", [](RawFile& f) {
    f.set_fixed_string_attribute("/", "name", "renamed by h5py");
  });
  EXPECT_EQ(read_experiment(path).name, "renamed by h5py");
}

}  // namespace
}  // namespace quilt::results
