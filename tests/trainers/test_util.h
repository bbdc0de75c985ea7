#pragma once
// Helpers shared by the trainers tests: a scratch directory per test, IDX and raw file writers.

#include "tests/results/scratch_dir.h"
#include "trainers/data.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace quilt::trainers::testing {

/// A fresh directory per test, removed on destruction (the results tests' helper).
using ScratchDir = quilt::results::testing::ScratchDir;

/// IDX bytes: magic 0 0 8 ndim, big-endian sizes, then `data`.
inline std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string s{'\0', '\0', '\x08', static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8)
      s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  s.append(data.begin(), data.end());
  return s;
}

/// Writes `bytes` gzip-compressed to `path`.
inline void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

/// Writes `bytes` as is.
inline void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The file's bytes.
inline std::string read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The first `train_samples` and `test_samples` of the Fashion-MNIST files that Debian installs.
inline Dataset fashion_mnist(int64_t train_samples, int64_t test_samples) {
  DataOptions o;
  o.kind = DataKind::kFashionMnist;
  o.train_samples = train_samples;
  o.test_samples = test_samples;
  return load_dataset(o);
}

/// Runs f, expects a DataError (or TrainerError) whose message contains every one of `parts`.
template <typename Error = DataError>
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << parts.front();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "\"" << p << "\" not in: " << msg;
  }
}

}  // namespace quilt::trainers::testing
