#pragma once
// Access to the files tests/models/make_torchvision_fixture.py writes (a CTest fixture).

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace quilt::models::testing {

/// The fixture directory: $QUILT_MODELS_FIXTURE_DIR, else the one CMake configured.
inline std::string fixture_dir() {
  if (const char* dir = std::getenv("QUILT_MODELS_FIXTURE_DIR")) return dir;
  return QUILT_MODELS_FIXTURE_DIR;
}

/// Path of a fixture file; fails the test if it is missing (run the fixture through ctest).
inline std::string fixture(const std::string& name) {
  const std::string path = fixture_dir() + "/" + name;
  EXPECT_TRUE(std::ifstream(path).good())
      << path << " is missing: run `ctest -R models` (the fixture models_torchvision_fixture "
      << "writes it)";
  return path;
}

/// A raw little-endian float32 file as a tensor of `sizes`.
inline torch::Tensor read_f32(const std::string& name, std::vector<int64_t> sizes) {
  std::ifstream in(fixture(name), std::ios::binary);
  torch::Tensor t = torch::empty(sizes, torch::kFloat32);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  EXPECT_EQ(in.gcount(), static_cast<std::streamsize>(t.nbytes())) << name;
  return t;
}

/// max |a - b| / max |b|.
inline double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

}  // namespace quilt::models::testing
