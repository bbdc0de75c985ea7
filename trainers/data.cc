#include "trainers/data.h"

#include "common/text.h"
#include "trainers/data_detail.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

namespace quilt::trainers {
namespace fs = std::filesystem;

namespace {

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

}  // namespace

namespace detail {

at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

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

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += "x";
    s += dims[i] < 0 ? std::string("*") : std::to_string(dims[i]);
  }
  return s;
}

std::vector<std::string> numbered_classes(int64_t n) {
  std::vector<std::string> names;
  for (int64_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

Split take(const Split& s, const torch::Tensor& idx) {
  return {s.x.index_select(0, idx).contiguous(), s.y.index_select(0, idx).contiguous()};
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

// train_samples, test_samples, standardize: the options every loader shares.
Dataset finish(Dataset d, const DataOptions& o, bool allow_standardize) {
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

void check_fraction(const DataOptions& o) {
  if (!(o.test_fraction > 0.0 && o.test_fraction < 1.0)) {
    throw DataError(fmt::format("test_fraction {} must be in (0, 1)", o.test_fraction));
  }
}

}  // namespace detail

using detail::finish;
using detail::make_generator;
using detail::take;

std::string dataset_name(DataKind kind) {
  std::string name(common::enum_name(kDataKindNames, kind));
  if (name.rfind("uci-", 0) != 0) return name;
  name = name.substr(4);
  std::replace(name.begin(), name.end(), '-', '_');  // uci-breast-cancer -> breast_cancer
  return name;
}

std::vector<std::string> dataset_names() {
  std::vector<std::string> names;
  for (DataKind kind :
       {DataKind::kFashionMnist, DataKind::kUciIris, DataKind::kUciWine, DataKind::kUciBreastCancer,
        DataKind::kUciDigits, DataKind::kSynthetic, DataKind::kCifar10, DataKind::kTensorFolder})
    names.push_back(dataset_name(kind));
  return names;
}

DataKind parse_dataset(const std::string& text) {
  for (const auto& entry : kDataKindNames)
    if (dataset_name(entry.value) == text) return entry.value;
  throw DataError(
      fmt::format("unknown dataset \"{}\"; valid: {}", text, common::join(dataset_names())));
}

Dataset load_dataset(const DataOptions& options) {
  switch (options.kind) {
    case DataKind::kFashionMnist:
      return load_fashion_mnist(options);
    case DataKind::kUciIris:
    case DataKind::kUciWine:
    case DataKind::kUciBreastCancer:
    case DataKind::kUciDigits:
      return load_uci(options);
    case DataKind::kSynthetic:
      return make_synthetic(options);
    case DataKind::kCifar10:
      return load_cifar10(options);
    case DataKind::kTensorFolder:
      return load_tensor_folder(options);
  }
  throw DataError(fmt::format("unknown dataset kind {}", static_cast<int>(options.kind)));
}

Dataset make_synthetic(const DataOptions& options) {
  detail::check_fraction(options);
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
  auto [train, test] = detail::stratified_split(all, options.test_fraction, options.seed + 7);
  Dataset d;
  d.name = "synthetic";
  d.train = std::move(train);
  d.test = std::move(test);
  d.sample_shape = shape;
  d.num_classes = k;
  d.class_names = detail::numbered_classes(k);
  // Standardising images per channel or vectors per feature both keep the classes apart.
  if (d.train.x.dim() != 2 && d.train.x.dim() != 4) return finish(std::move(d), options, false);
  return finish(std::move(d), options);
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
