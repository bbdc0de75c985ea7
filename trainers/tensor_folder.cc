// The tensor-folder format: one file per sample (or batch of samples) of preprocessed float32
// tensors, in an ImageNet-style directory of classes.
#include "trainers/data.h"

#include "trainers/data_detail.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace quilt::trainers {
namespace fs = std::filesystem;
using detail::dims_string;
using detail::finish;
using detail::make_generator;
using detail::require_file;
using detail::take;

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
constexpr char kTensorMagic[8] = {'Q', 'U', 'I', 'L', 'T', 'T', '0', '1'};
constexpr int64_t kMaxTensorDims = 8;
}  // namespace

void write_tensor_file(const std::string& path, const torch::Tensor& t) {
  if (t.dim() < 1 || t.dim() > kMaxTensorDims) {
    throw DataError(fmt::format(
        "write_tensor_file(\"{}\"): a tensor of {} dimensions; 1..8 are valid", path, t.dim()));
  }
  auto c = t.to(torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<int64_t> header{c.dim()};
  for (auto s : c.sizes()) header.push_back(s);
  out.write(kTensorMagic, sizeof kTensorMagic);
  out.write(reinterpret_cast<const char*>(header.data()),
            static_cast<std::streamsize>(header.size() * sizeof(int64_t)));
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()),
            static_cast<std::streamsize>(c.numel() * sizeof(float)));
  out.close();
  if (!out) throw DataError(fmt::format("cannot write tensor file \"{}\"", path));
}

torch::Tensor read_tensor_file(const std::string& path) {
  require_file(path, "a Quilt tensor file (\"QUILTT01\", shape, float32 data)");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t size = bytes.size();
  if (size < 16 || std::memcmp(bytes.data(), kTensorMagic, 8) != 0) {
    throw DataError(
        fmt::format("\"{}\" is not a Quilt tensor file (expected it to start with "
                    "\"QUILTT01\"; write it with write_tensor_file)",
                    path));
  }
  int64_t ndim = 0;
  std::memcpy(&ndim, bytes.data() + 8, 8);
  if (ndim < 1 || ndim > kMaxTensorDims || size < 16 + 8 * static_cast<size_t>(ndim)) {
    throw DataError(fmt::format(
        "tensor file \"{}\" has an impossible header ({} dimensions, {} bytes)", path, ndim, size));
  }
  std::vector<int64_t> dims(static_cast<size_t>(ndim));
  std::memcpy(dims.data(), bytes.data() + 16, 8 * dims.size());
  int64_t count = 1;
  for (auto d : dims) {
    if (d < 0 || d > (int64_t{1} << 40) || (count > 0 && d > (int64_t{1} << 40) / count)) {
      throw DataError(
          fmt::format("tensor file \"{}\" has an impossible shape {}", path, dims_string(dims)));
    }
    count *= d;
  }
  const size_t header = 16 + 8 * dims.size();
  const size_t expected = static_cast<size_t>(count) * sizeof(float);
  if (size - header != expected) {
    throw DataError(
        fmt::format("tensor file \"{}\" is {}: shape {} needs {} bytes of float32 data, "
                    "it holds {}",
                    path, size - header < expected ? "truncated" : "too long", dims_string(dims),
                    expected, size - header));
  }
  auto t = torch::empty(dims, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), bytes.data() + header, expected);
  return t;
}

namespace {

// The samples of split `split` (train or val) of the folder, class c from <split>/<classes[c]>/.
// The first file read fixes the sample shape of both splits (sample_shape, first_file).
Split read_folder_split(const DataOptions& options, const fs::path& root, const char* split,
                        const std::vector<std::string>& classes, models::Shape& sample_shape,
                        std::string& first_file) {
  std::vector<torch::Tensor> xs;
  std::vector<int64_t> ys;
  for (const auto& e : fs::directory_iterator(root / split)) {
    if (e.is_directory() &&
        std::find(classes.begin(), classes.end(), e.path().filename().string()) == classes.end()) {
      throw DataError(
          fmt::format("tensor folder \"{}\": class \"{}\" of {}/ is not in train/ "
                      "(train has {})",
                      options.root, e.path().filename().string(), split, classes.size()));
    }
  }
  for (size_t c = 0; c < classes.size(); ++c) {
    const fs::path dir = root / split / classes[c];
    if (!fs::is_directory(dir)) continue;
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && ends_with(name, ".qt")) files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      auto t = read_tensor_file(file);
      const bool batch = ends_with(file, ".batch.qt");
      if (batch && t.dim() < 2) {
        throw DataError(
            fmt::format("tensor file \"{}\" is a .batch.qt of shape {}: expected a "
                        "leading batch dimension and a sample shape",
                        file, dims_string(t.sizes().vec())));
      }
      auto samples = batch ? t : t.unsqueeze(0);
      models::Shape shape(samples.sizes().begin() + 1, samples.sizes().end());
      if (first_file.empty()) {
        sample_shape = shape;
        first_file = file;
      } else if (shape != sample_shape) {
        throw DataError(fmt::format(
            "tensor file \"{}\" holds samples of shape {}, but \"{}\" holds "
            "{}: every sample must have the same shape",
            file, models::to_string(shape), first_file, models::to_string(sample_shape)));
      }
      xs.push_back(samples);
      ys.insert(ys.end(), static_cast<size_t>(samples.size(0)), static_cast<int64_t>(c));
    }
  }
  Split s;
  if (!xs.empty()) s = {torch::cat(xs).contiguous(), torch::tensor(ys, torch::kLong)};
  return s;
}

}  // namespace

Dataset load_tensor_folder(const DataOptions& options) {
  if (options.root.empty()) {
    throw DataError(
        "tensor-folder needs root: a directory with train/<class>/*.qt and val/<class>/*.qt");
  }
  const fs::path root(options.root);
  for (const char* split : {"train", "val"}) {
    if (!fs::is_directory(root / split)) {
      throw DataError(
          fmt::format("tensor folder \"{}\" has no {}/ directory (expected "
                      "train/<class>/*.qt and val/<class>/*.qt)",
                      options.root, split));
    }
  }
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root / "train")) {
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) {
    throw DataError(
        fmt::format("tensor folder \"{}\": train/ has no class directories", options.root));
  }
  models::Shape sample_shape;
  std::string first_file;
  auto read_split = [&](const char* split) {
    return read_folder_split(options, root, split, classes, sample_shape, first_file);
  };
  Dataset d;
  d.name = "tensor-folder";
  d.train = read_split("train");
  d.test = read_split("val");
  if (d.train.size() == 0) {
    throw DataError(
        fmt::format("tensor folder \"{}\": no .qt files under train/<class>/", options.root));
  }
  if (d.test.size() == 0) d.test = {d.train.x.narrow(0, 0, 0), d.train.y.narrow(0, 0, 0)};
  d.sample_shape = sample_shape;
  d.num_classes = static_cast<int64_t>(classes.size());
  d.class_names = classes;
  // Shuffle train once (seeded) so that a train_samples limit or a batch is not one class.
  auto gen = make_generator(options.seed);
  d.train = take(d.train, torch::randperm(d.train.size(), gen, torch::kLong));
  return finish(std::move(d), options, /*allow_standardize=*/false);
}

}  // namespace quilt::trainers
