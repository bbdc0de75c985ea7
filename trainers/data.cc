#include "trainers/data.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace quilt::trainers {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFashionMnistRoot = "/usr/share/datasets/fashion-mnist";
constexpr const char* kSklearnDataRoot = "/usr/lib/python3/dist-packages/sklearn/datasets/data";

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void require_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw DataError(fmt::format("data file \"{}\" does not exist (expected {})", path, what));
  }
  if (!fs::is_regular_file(path, ec)) {
    throw DataError(
        fmt::format("data file \"{}\" is not a regular file (expected {})", path, what));
  }
}

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

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += "x";
    s += dims[i] < 0 ? std::string("*") : std::to_string(dims[i]);
  }
  return s;
}

// Labels to int64, images (uint8) to float in [0, 1].
torch::Tensor to_float_images(const torch::Tensor& u8) {
  return u8.to(torch::kFloat32).div_(255.0);
}

std::vector<std::string> numbered_classes(int64_t n) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

Split take(const Split& s, const torch::Tensor& idx) {
  return {s.x.index_select(0, idx).contiguous(), s.y.index_select(0, idx).contiguous()};
}

// Per-class shuffled indices, seeded.
std::vector<std::vector<int64_t>> class_indices(const torch::Tensor& y, at::Generator& gen) {
  auto perm = torch::randperm(y.size(0), gen, torch::kLong);
  auto yp = y.index_select(0, perm);
  const int64_t* pi = perm.data_ptr<int64_t>();
  const int64_t* py = yp.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> by_class;
  for (int64_t i = 0; i < y.size(0); ++i) by_class[py[i]].push_back(pi[i]);
  std::vector<std::vector<int64_t>> out;
  for (auto& [c, v] : by_class) out.push_back(std::move(v));
  return out;
}

torch::Tensor shuffled(std::vector<int64_t> idx, at::Generator& gen) {
  auto t = torch::tensor(idx, torch::kLong);
  if (idx.empty()) return t;
  return t.index_select(0, torch::randperm(t.size(0), gen, torch::kLong));
}

// Seeded stratified split: round(n_c * fraction) of each class go to test.
std::pair<Split, Split> stratified_split(const Split& all, double test_fraction, uint64_t seed) {
  auto gen = make_generator(seed);
  std::vector<int64_t> train_idx, test_idx;
  for (auto& v : class_indices(all.y, gen)) {
    auto n_test = static_cast<int64_t>(std::llround(static_cast<double>(v.size()) * test_fraction));
    if (v.size() >= 2) n_test = std::clamp<int64_t>(n_test, 1, static_cast<int64_t>(v.size()) - 1);
    for (size_t i = 0; i < v.size(); ++i) {
      (static_cast<int64_t>(i) < n_test ? test_idx : train_idx).push_back(v[i]);
    }
  }
  return {take(all, shuffled(train_idx, gen)), take(all, shuffled(test_idx, gen))};
}

// Per-feature (2-D) or per-channel (4-D) statistics of train applied to both splits.
void standardize(Dataset& d) {
  if (d.train.size() == 0) return;
  std::vector<int64_t> dims;
  torch::Tensor mean, std;
  if (d.train.x.dim() == 2) {
    mean = d.train.x.mean(0, true);
    std = d.train.x.std(0, /*unbiased=*/false, true);
  } else {
    mean = d.train.x.mean({0, 2, 3}, true);
    std = d.train.x.std({0, 2, 3}, /*unbiased=*/false, true);
  }
  // A constant feature (a digits pixel that is always 0) is centred, not divided by zero.
  std = torch::where(std > 1e-8, std, torch::ones_like(std));
  d.train.x = ((d.train.x - mean) / std).contiguous();
  if (d.test.size() > 0) d.test.x = ((d.test.x - mean) / std).contiguous();
}

// train_samples, test_samples, standardize: the options every loader shares.
Dataset finish(Dataset d, const DataOptions& o, bool allow_standardize = true) {
  if (o.train_samples < 0 || o.test_samples < 0) {
    throw DataError(fmt::format("train_samples ({}) and test_samples ({}) must be >= 0 (0 = all)",
                                o.train_samples, o.test_samples));
  }
  if (o.train_samples > 0) d.train = stratified_subset(d.train, o.train_samples, o.seed + 1);
  if (o.test_samples > 0 && o.test_samples < d.test.size()) {
    d.test = {d.test.x.narrow(0, 0, o.test_samples).contiguous(),
              d.test.y.narrow(0, 0, o.test_samples).contiguous()};
  }
  if (o.standardize && allow_standardize) standardize(d);
  return d;
}

std::string root_or(const DataOptions& o, const char* fallback) {
  return o.root.empty() ? std::string(fallback) : o.root;
}

void check_fraction(const DataOptions& o) {
  if (!(o.test_fraction > 0.0 && o.test_fraction < 1.0)) {
    throw DataError(fmt::format("test_fraction {} must be in (0, 1)", o.test_fraction));
  }
}

struct UciSpec {
  const char* file;
  bool header;
  int64_t samples, features, classes;
};

const std::map<std::string, UciSpec>& uci_specs() {
  static const std::map<std::string, UciSpec> specs = {
      {"iris", {"iris.csv", true, 150, 4, 3}},
      {"wine", {"wine_data.csv", true, 178, 13, 3}},
      {"breast_cancer", {"breast_cancer.csv", true, 569, 30, 2}},
      {"digits", {"digits.csv.gz", false, 1797, 64, 10}},
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

std::vector<std::string> dataset_names() {
  return {"fashion-mnist", "iris",      "wine",    "breast_cancer",
          "digits",        "synthetic", "cifar10", "tensor-folder"};
}

Dataset load_dataset(const DataOptions& options) {
  const std::string& n = options.name;
  if (n == "fashion-mnist") return load_fashion_mnist(options);
  if (uci_specs().count(n) != 0) return load_uci(options);
  if (n == "synthetic") return make_synthetic(options);
  if (n == "cifar10") return load_cifar10(options);
  if (n == "tensor-folder") return load_tensor_folder(options);
  std::string valid;
  for (const auto& v : dataset_names()) valid += (valid.empty() ? "" : ", ") + v;
  throw DataError(fmt::format("unknown dataset \"{}\"; valid: {}", n, valid));
}

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
  auto it = uci_specs().find(options.name);
  if (it == uci_specs().end()) {
    throw DataError(fmt::format("\"{}\" is not a UCI set; valid: iris, wine, breast_cancer, digits",
                                options.name));
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
  d.name = options.name;
  d.train = std::move(train);
  d.test = std::move(test);
  d.sample_shape = {spec.features};
  d.num_classes = spec.classes;
  d.class_names = std::move(class_names);
  return finish(std::move(d), options);
}

Dataset make_synthetic(const DataOptions& options) {
  check_fraction(options);
  const auto& shape = options.synthetic_shape;
  if (options.synthetic_classes < 2 || options.synthetic_samples < 2 * options.synthetic_classes ||
      shape.empty() || models::numel(shape) < 1 ||
      std::any_of(shape.begin(), shape.end(), [](int64_t s) { return s < 1; }) ||
      !(options.synthetic_separation >= 0.0) || !std::isfinite(options.synthetic_separation)) {
    throw DataError(fmt::format(
        "synthetic data needs synthetic_classes >= 2 (got {}), synthetic_samples >= 2 per class "
        "(got "
        "{}), a non-empty positive synthetic_shape (got {}) and a finite separation >= 0 (got {})",
        options.synthetic_classes, options.synthetic_samples, models::to_string(shape),
        options.synthetic_separation));
  }
  const int64_t k = options.synthetic_classes, n = options.synthetic_samples;
  const int64_t f = models::numel(shape);
  auto gen = make_generator(options.seed);
  // Means of norm about 2 * separation: neighbouring classes overlap a little at separation 1
  // (pairwise Bayes error about 8%), so accuracy is meaningful and far above chance.
  auto means = torch::randn({k, f}, gen, torch::kFloat32) *
               (2.0 * options.synthetic_separation / std::sqrt(static_cast<double>(f)));
  auto y = torch::arange(n, torch::kLong).remainder(k);
  auto x = means.index_select(0, y) + torch::randn({n, f}, gen, torch::kFloat32);
  std::vector<int64_t> full{n};
  full.insert(full.end(), shape.begin(), shape.end());
  Split all{x.reshape(full).contiguous(), y};
  auto [train, test] = stratified_split(all, options.test_fraction, options.seed + 7);
  Dataset d;
  d.name = "synthetic";
  d.train = std::move(train);
  d.test = std::move(test);
  d.sample_shape = shape;
  d.num_classes = k;
  d.class_names = numbered_classes(k);
  // Standardising images per channel or vectors per feature both keep the classes apart.
  if (d.train.x.dim() != 2 && d.train.x.dim() != 4) return finish(std::move(d), options, false);
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

namespace {
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
    std::vector<torch::Tensor> xs;
    std::vector<int64_t> ys;
    for (const auto& e : fs::directory_iterator(root / split)) {
      if (e.is_directory() && std::find(classes.begin(), classes.end(),
                                        e.path().filename().string()) == classes.end()) {
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

namespace {

torch::Tensor resize_images(const torch::Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) return x;
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{h, w})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

torch::Tensor fit_split(const torch::Tensor& x, const models::Shape& from, const models::Shape& to,
                        const std::string& name) {
  const int64_t n = x.size(0);
  auto fail = [&]() -> DataError {
    return DataError(
        fmt::format("dataset \"{}\" has samples of shape {} that a model with input shape "
                    "{} cannot take (valid: the same element count, or images resized "
                    "to HxW with 1 <-> 3 channels)",
                    name, models::to_string(from), models::to_string(to)));
  };
  if (from == to) return x;
  if (to.size() == 1) {
    if (models::numel(from) == to[0]) return x.reshape({n, to[0]}).contiguous();
    if (from.size() != 3) throw fail();
    const int64_t c = from[0];
    if (to[0] % c != 0) throw fail();
    const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(to[0] / c))));
    if (side * side * c != to[0]) throw fail();
    return resize_images(x, side, side).reshape({n, to[0]}).contiguous();
  }
  if (to.size() != 3) throw fail();
  torch::Tensor img;
  if (from.size() == 1) {
    if (from[0] != models::numel(to)) throw fail();
    return x.reshape({n, to[0], to[1], to[2]}).contiguous();
  }
  if (from.size() != 3) throw fail();
  img = x;
  if (from[0] != to[0]) {
    if (from[0] == 1 && to[0] == 3) {
      img = img.expand({n, 3, from[1], from[2]});
    } else if (from[0] == 3 && to[0] == 1) {
      img = img.mean(1, true);
    } else {
      throw fail();
    }
  }
  return resize_images(img.contiguous(), to[1], to[2]).contiguous();
}

}  // namespace

Dataset fit_to_model(const Dataset& data, const models::Shape& input_shape) {
  Dataset d = data;
  if (data.sample_shape == input_shape) return d;
  torch::NoGradGuard no_grad;
  d.train.x = fit_split(data.train.x, data.sample_shape, input_shape, data.name);
  if (data.test.size() > 0) {
    d.test.x = fit_split(data.test.x, data.sample_shape, input_shape, data.name);
  } else {
    std::vector<int64_t> empty{0};
    empty.insert(empty.end(), input_shape.begin(), input_shape.end());
    d.test.x = torch::empty(empty, torch::kFloat32);
  }
  d.sample_shape = input_shape;
  return d;
}

Split stratified_subset(const Split& split, int64_t n, uint64_t seed) {
  const int64_t size = split.size();
  if (n <= 0 || n >= size) return split;
  auto gen = make_generator(seed);
  auto classes = class_indices(split.y, gen);
  std::vector<int64_t> picked;
  // Proportional quotas first, then the remainder one by one.
  std::vector<int64_t> quota(classes.size());
  int64_t given = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    quota[c] = static_cast<int64_t>(static_cast<double>(classes[c].size()) * n / size);
    if (quota[c] == 0 && !classes[c].empty()) quota[c] = 1;
    given += quota[c];
  }
  for (size_t c = 0; given > n; c = (c + 1) % classes.size()) {
    if (quota[c] > 1) {
      --quota[c];
      --given;
    } else if (std::all_of(quota.begin(), quota.end(), [](int64_t q) { return q <= 1; })) {
      // More classes than n: drop whole classes from the end.
      if (quota[c] == 1) {
        quota[c] = 0;
        --given;
      }
    }
  }
  for (size_t c = 0; given < n; c = (c + 1) % classes.size()) {
    if (quota[c] < static_cast<int64_t>(classes[c].size())) {
      ++quota[c];
      ++given;
    }
  }
  for (size_t c = 0; c < classes.size(); ++c) {
    picked.insert(picked.end(), classes[c].begin(), classes[c].begin() + quota[c]);
  }
  return take(split, shuffled(picked, gen));
}

}  // namespace quilt::trainers
