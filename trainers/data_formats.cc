// The loaders of files in their published formats: IDX (Fashion-MNIST), scikit-learn's UCI CSV
// files, CIFAR-10 binary batches.
#include "trainers/data.h"

#include "trainers/data_detail.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace quilt::trainers {
namespace fs = std::filesystem;
using detail::check_fraction;
using detail::dims_string;
using detail::finish;
using detail::numbered_classes;
using detail::require_file;
using detail::stratified_split;

namespace {

constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";
constexpr const char* kSklearnDataRoot = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

// The whole file, decompressed when it is gzip (zlib reads plain files transparently).
std::string read_maybe_gzip(const std::string& path, const std::string& what) {
  require_file(path, what);
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw DataError(fmt::format("cannot open data file \"{}\"", path));
  std::string out;
  std::vector<char> buf(1 << 20);
  while (true) {
    int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      throw DataError(
          fmt::format("data file \"{}\" is damaged ({}; expected {})", path, msg, what));
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  int code = 0;
  const char* msg = gzerror(f, &code);
  // A gzip stream cut short reads to its end without a read error but leaves Z_BUF_ERROR.
  if (code != Z_OK && code != Z_STREAM_END) {
    std::string m = msg;
    gzclose(f);
    throw DataError(
        fmt::format("data file \"{}\" is truncated or damaged ({}; expected {})", path, m, what));
  }
  gzclose(f);
  return out;
}

uint32_t big_endian_u32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Labels to int64, images (uint8) to float in [0, 1].
torch::Tensor to_float_images(const torch::Tensor& u8) {
  return u8.to(torch::kFloat32).div_(255.0);
}

std::string root_or(const DataOptions& o, const char* fallback) {
  return o.root.empty() ? std::string(fallback) : o.root;
}

struct UciSpec {
  const char* file;
  bool header;
  int64_t samples, features, classes;
};

const std::map<DataKind, UciSpec>& uci_specs() {
  static const std::map<DataKind, UciSpec> specs = {
      {DataKind::kUciIris, {"iris.csv", true, 150, 4, 3}},
      {DataKind::kUciWine, {"wine_data.csv", true, 178, 13, 3}},
      {DataKind::kUciBreastCancer, {"breast_cancer.csv", true, 569, 30, 2}},
      {DataKind::kUciDigits, {"digits.csv.gz", false, 1797, 64, 10}},
  };
  return specs;
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(line);
  while (std::getline(in, cur, ',')) out.push_back(cur);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

double parse_number(const std::string& text, const std::string& path, int64_t line, size_t col) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\r' || t.back() == ' ')) t.pop_back();
  size_t pos = 0;
  double v = 0.0;
  try {
    v = std::stod(t, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (t.empty() || pos != t.size() || !std::isfinite(v)) {
    throw DataError(fmt::format("{}:{}: column {} is \"{}\", expected a finite number", path, line,
                                col + 1, t));
  }
  return v;
}

}  // namespace

torch::Tensor read_idx(const std::string& path, const std::vector<int64_t>& expected_dims) {
  const std::string what = expected_dims.empty() ? std::string("an IDX file")
                                                 : fmt::format("an IDX file of {} unsigned bytes",
                                                               dims_string(expected_dims));
  std::string bytes = read_maybe_gzip(path, what);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() < 4 || p[0] != 0 || p[1] != 0) {
    throw DataError(fmt::format(
        "data file \"{}\" is not an IDX file (bad magic number; expected {})", path, what));
  }
  if (p[2] != 0x08) {
    throw DataError(fmt::format(
        "data file \"{}\" holds IDX element type 0x{:02x}; expected 0x08 (unsigned byte)", path,
        p[2]));
  }
  const int ndim = p[3];
  if (ndim < 1 || bytes.size() < 4 + 4 * static_cast<size_t>(ndim)) {
    throw DataError(
        fmt::format("data file \"{}\" is truncated in its IDX header (expected {})", path, what));
  }
  std::vector<int64_t> dims;
  int64_t count = 1;
  bool overflow = false;
  for (int i = 0; i < ndim; ++i) {
    dims.push_back(big_endian_u32(p + 4 + 4 * i));
    // A header whose sizes multiply past the file's length cannot match it; stop before int64
    // overflows.
    if (dims.back() != 0 && count > static_cast<int64_t>(bytes.size()) / dims.back())
      overflow = true;
    if (!overflow) count *= dims.back();
  }
  if (!expected_dims.empty()) {
    bool ok = expected_dims.size() == dims.size();
    for (size_t i = 0; ok && i < dims.size(); ++i) {
      ok = expected_dims[i] < 0 || expected_dims[i] == dims[i];
    }
    if (!ok) {
      throw DataError(fmt::format("data file \"{}\" holds {} values; expected {}", path,
                                  dims_string(dims), dims_string(expected_dims)));
    }
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  const size_t have = bytes.size() - header;
  if (overflow) {
    throw DataError(
        fmt::format("data file \"{}\" is truncated: its header says {} but it holds {} "
                    "bytes of data",
                    path, dims_string(dims), have));
  }
  if (have != static_cast<size_t>(count)) {
    throw DataError(
        fmt::format("data file \"{}\" is {}: its header says {} ({} bytes of data) but it "
                    "holds {} bytes",
                    path, have < static_cast<size_t>(count) ? "truncated" : "too long",
                    dims_string(dims), count, have));
  }
  auto t = torch::empty(dims, torch::kUInt8);
  std::memcpy(t.data_ptr<uint8_t>(), p + header, have);
  return t;
}

Dataset load_fashion_mnist(const DataOptions& options) {
  const std::string root = root_or(options, kFashionMnistRoot);
  auto file = [&](const char* name) { return (fs::path(root) / name).string(); };
  auto train_x = read_idx(file("train-images-idx3-ubyte.gz"), {60000, 28, 28});
  auto train_y = read_idx(file("train-labels-idx1-ubyte.gz"), {60000});
  auto test_x = read_idx(file("t10k-images-idx3-ubyte.gz"), {10000, 28, 28});
  auto test_y = read_idx(file("t10k-labels-idx1-ubyte.gz"), {10000});
  for (auto [y, name] : {std::pair{train_y, "train-labels-idx1-ubyte.gz"},
                         std::pair{test_y, "t10k-labels-idx1-ubyte.gz"}}) {
    if (y.max().item<int64_t>() > 9) {
      throw DataError(
          fmt::format("data file \"{}\" holds a label > 9 (expected 0..9)", file(name)));
    }
  }
  Dataset d;
  d.name = "fashion-mnist";
  d.train = {to_float_images(train_x).unsqueeze(1).contiguous(), train_y.to(torch::kLong)};
  d.test = {to_float_images(test_x).unsqueeze(1).contiguous(), test_y.to(torch::kLong)};
  d.sample_shape = {1, 28, 28};
  d.num_classes = 10;
  d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return finish(std::move(d), options);
}

Dataset load_uci(const DataOptions& options) {
  auto it = uci_specs().find(options.kind);
  if (it == uci_specs().end()) {
    throw DataError(fmt::format("\"{}\" is not a UCI set; valid: iris, wine, breast_cancer, digits",
                                dataset_name(options.kind)));
  }
  check_fraction(options);
  const UciSpec& spec = it->second;
  const std::string path = (fs::path(root_or(options, kSklearnDataRoot)) / spec.file).string();
  const std::string text =
      read_maybe_gzip(path, fmt::format("scikit-learn's {} ({} samples of {} features)", spec.file,
                                        spec.samples, spec.features));
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  std::vector<std::string> class_names;
  if (spec.header) {
    ++line_no;
    if (!std::getline(in, line))
      throw DataError(fmt::format("{}: empty file, expected a header", path));
    auto cells = split_commas(line);
    if (cells.size() < 2 ||
        parse_number(cells[0], path, 1, 0) != static_cast<double>(spec.samples) ||
        parse_number(cells[1], path, 1, 1) != static_cast<double>(spec.features)) {
      throw DataError(
          fmt::format("{}:1: header \"{}\" does not start with \"{},{}\" (samples, features)", path,
                      line, spec.samples, spec.features));
    }
    for (size_t i = 2; i < cells.size(); ++i) {
      std::string c = cells[i];
      while (!c.empty() && (c.back() == '\r' || c.back() == ' ')) c.pop_back();
      class_names.push_back(c);
    }
  }
  std::vector<float> xs;
  std::vector<int64_t> ys;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    auto cells = split_commas(line);
    if (static_cast<int64_t>(cells.size()) != spec.features + 1) {
      throw DataError(
          fmt::format("{}:{}: {} comma-separated values, expected {} ({} features and the "
                      "label)",
                      path, line_no, cells.size(), spec.features + 1, spec.features));
    }
    for (int64_t j = 0; j < spec.features; ++j) {
      xs.push_back(static_cast<float>(parse_number(cells[j], path, line_no, j)));
    }
    double label = parse_number(cells.back(), path, line_no, cells.size() - 1);
    if (label != std::floor(label) || label < 0 || label >= spec.classes) {
      throw DataError(fmt::format("{}:{}: label {} is not an integer in 0..{}", path, line_no,
                                  cells.back(), spec.classes - 1));
    }
    ys.push_back(static_cast<int64_t>(label));
  }
  const auto n = static_cast<int64_t>(ys.size());
  if (n != spec.samples) {
    throw DataError(fmt::format("{}: {} samples, expected {} (truncated or not scikit-learn's {}?)",
                                path, n, spec.samples, spec.file));
  }
  if (class_names.size() != static_cast<size_t>(spec.classes))
    class_names = numbered_classes(spec.classes);
  Split all{torch::from_blob(xs.data(), {n, spec.features}, torch::kFloat32).clone(),
            torch::tensor(ys, torch::kLong)};
  auto [train, test] = stratified_split(all, options.test_fraction, options.seed);
  Dataset d;
  d.name = dataset_name(options.kind);
  d.train = std::move(train);
  d.test = std::move(test);
  d.sample_shape = {spec.features};
  d.num_classes = spec.classes;
  d.class_names = std::move(class_names);
  return finish(std::move(d), options);
}

namespace {

Split read_cifar_file(const std::string& path) {
  constexpr int64_t kRecord = 3073;
  require_file(path, "a CIFAR-10 binary batch (3073-byte records)");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw DataError(fmt::format("cannot read data file \"{}\"", path));
  const auto size = static_cast<int64_t>(bytes.size());
  if (size == 0 || size % kRecord != 0) {
    throw DataError(
        fmt::format("data file \"{}\" has {} bytes, not a whole number of 3073-byte "
                    "CIFAR-10 records (label byte + 3x32x32 pixels); truncated?",
                    path, size));
  }
  const int64_t n = size / kRecord;
  auto raw = torch::from_blob(bytes.data(), {n, kRecord}, torch::kUInt8);
  auto y = raw.select(1, 0).to(torch::kLong);
  if (y.max().item<int64_t>() > 9) {
    int64_t bad = (y > 9).nonzero()[0][0].item<int64_t>();
    throw DataError(fmt::format("data file \"{}\": record {} has label {}, expected 0..9", path,
                                bad, y[bad].item<int64_t>()));
  }
  auto x = to_float_images(raw.narrow(1, 1, 3072).reshape({n, 3, 32, 32}));
  return {x.contiguous(), y.contiguous()};
}

Split concat(const std::vector<Split>& parts) {
  std::vector<torch::Tensor> xs, ys;
  for (const auto& p : parts) {
    xs.push_back(p.x);
    ys.push_back(p.y);
  }
  return {torch::cat(xs), torch::cat(ys)};
}

}  // namespace

Dataset load_cifar10(const DataOptions& options) {
  if (options.root.empty()) {
    throw DataError(
        "cifar10 needs root: the directory of data_batch_1.bin ... and test_batch.bin "
        "(the CIFAR-10 binary version)");
  }
  std::vector<Split> train;
  for (int i = 1; i <= 5; ++i) {
    auto path = (fs::path(options.root) / fmt::format("data_batch_{}.bin", i)).string();
    if (fs::exists(path)) train.push_back(read_cifar_file(path));
  }
  if (train.empty()) {
    throw DataError(
        fmt::format("no CIFAR-10 training batch in \"{}\" (expected data_batch_1.bin ... "
                    "data_batch_5.bin, 3073-byte records)",
                    options.root));
  }
  Dataset d;
  d.name = "cifar10";
  d.train = concat(train);
  d.test = read_cifar_file((fs::path(options.root) / "test_batch.bin").string());
  d.sample_shape = {3, 32, 32};
  d.num_classes = 10;
  d.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                   "dog",      "frog",       "horse", "ship", "truck"};
  return finish(std::move(d), options);
}

}  // namespace quilt::trainers
