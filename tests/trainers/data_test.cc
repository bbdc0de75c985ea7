#include "trainers/data.h"

#include "tests/trainers/test_util.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

namespace quilt::trainers {
namespace {

using testing::expect_error;
using testing::ScratchDir;

TEST(ReadIdx, RoundTripsGzipAndPlain) {
  ScratchDir dir;
  std::vector<uint8_t> data;
  for (int i = 0; i < 2 * 3 * 4; ++i) data.push_back(static_cast<uint8_t>(i * 7));
  testing::write_gz(dir.file("a.gz"), testing::idx_bytes({2, 3, 4}, data));
  testing::write_raw(dir.file("a.idx"), testing::idx_bytes({2, 3, 4}, data));
  for (const char* name : {"a.gz", "a.idx"}) {
    auto t = read_idx(dir.file(name), {2, -1, 4});
    ASSERT_EQ(t.sizes().vec(), (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(t[1][2][3].item<int>(), 23 * 7 % 256);
    EXPECT_EQ(t.scalar_type(), torch::kUInt8);
  }
}

TEST(ReadIdx, RefusesMissingTruncatedAndForeignFiles) {
  ScratchDir dir;
  std::vector<uint8_t> data(20, 1);
  expect_error([&] { read_idx(dir.file("none.gz"), {60000}); },
               {dir.file("none.gz"), "does not exist", "60000"});
  // Fewer data bytes than the header promises.
  testing::write_gz(dir.file("short.gz"), testing::idx_bytes({24}, data));
  expect_error([&] { read_idx(dir.file("short.gz")); }, {dir.file("short.gz"), "truncated", "24"});
  // More data than the header says.
  testing::write_gz(dir.file("long.gz"), testing::idx_bytes({10}, data));
  expect_error([&] { read_idx(dir.file("long.gz")); }, {"too long"});
  // A gzip stream cut in the middle.
  std::vector<uint8_t> big(5000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  testing::write_gz(dir.file("cut.gz"), testing::idx_bytes({5000}, big));
  auto bytes = testing::read_raw(dir.file("cut.gz"));
  testing::write_raw(dir.file("cut.gz"), bytes.substr(0, bytes.size() / 2));
  expect_error([&] { read_idx(dir.file("cut.gz")); }, {dir.file("cut.gz"), "truncated"});
  // Sizes whose product overflows 64 bits.
  testing::write_gz(dir.file("huge.gz"),
                    testing::idx_bytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, data));
  expect_error([&] { read_idx(dir.file("huge.gz")); }, {"huge.gz", "truncated", "4294967295x"});
  // Not IDX at all; the wrong element type; the wrong dimensions.
  testing::write_gz(dir.file("text.gz"), "hello, world");
  expect_error([&] { read_idx(dir.file("text.gz")); }, {"not an IDX file"});
  auto ints = testing::idx_bytes({5}, std::vector<uint8_t>(20, 0));
  ints[2] = '\x0c';
  testing::write_gz(dir.file("int.gz"), ints);
  expect_error([&] { read_idx(dir.file("int.gz")); }, {"0x0c", "unsigned byte"});
  testing::write_gz(dir.file("dims.gz"), testing::idx_bytes({4, 5}, data));
  expect_error([&] { read_idx(dir.file("dims.gz"), {4, 28, 28}); }, {"4x5", "expected 4x28x28"});
}

TEST(FashionMnist, DebianFilesLoadWithTheOfficialSplit) {
  auto d = testing::fashion_mnist(500, 300);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.sample_shape, (models::Shape{1, 28, 28}));
  EXPECT_EQ(d.train.x.sizes().vec(), (std::vector<int64_t>{500, 1, 28, 28}));
  EXPECT_EQ(d.test.size(), 300);
  // Stratified: every class has 50 of the 500 training samples.
  auto counts = torch::bincount(d.train.y, {}, 10);
  EXPECT_TRUE(torch::equal(counts, torch::full({10}, 50, torch::kLong))) << counts;
  // Standardised with train statistics.
  EXPECT_NEAR(d.train.x.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(d.train.x.std().item<double>(), 1.0, 1e-2);
  EXPECT_EQ(d.class_names.at(9), "Ankle boot");
}

TEST(FashionMnist, MissingOrWrongFilesNameTheFile) {
  ScratchDir dir;
  DataOptions o;
  o.kind = DataKind::kFashionMnist;
  o.root = dir.path().string();
  expect_error([&] { load_dataset(o); },
               {"train-images-idx3-ubyte.gz", "does not exist", "60000x28x28"});
  testing::write_gz(dir.file("train-images-idx3-ubyte.gz"),
                    testing::idx_bytes({3, 28, 28}, std::vector<uint8_t>(3 * 28 * 28, 0)));
  expect_error([&] { load_dataset(o); }, {"3x28x28", "expected 60000x28x28"});
}

TEST(Uci, SklearnSetsLoadStratifiedAndStandardised) {
  struct Case {
    const char* name;
    int64_t samples, features, classes;
  };
  for (auto c : {Case{"iris", 150, 4, 3}, Case{"wine", 178, 13, 3},
                 Case{"breast_cancer", 569, 30, 2}, Case{"digits", 1797, 64, 10}}) {
    SCOPED_TRACE(c.name);
    DataOptions o;
    o.kind = parse_dataset(c.name);
    o.seed = 3;
    auto d = load_dataset(o);
    EXPECT_EQ(d.train.size() + d.test.size(), c.samples);
    EXPECT_EQ(d.sample_shape, (models::Shape{c.features}));
    EXPECT_EQ(d.num_classes, c.classes);
    EXPECT_NEAR(static_cast<double>(d.test.size()) / c.samples, 0.25, 0.02);
    auto mean = d.train.x.mean(0);
    EXPECT_LT(mean.abs().max().item<double>(), 1e-4);
    // Every class in both splits.
    EXPECT_EQ(std::get<0>(torch::_unique(d.test.y)).size(0), c.classes);
    // Seeded: the same seed gives the same split, another seed another one.
    auto again = load_dataset(o);
    EXPECT_TRUE(torch::equal(again.test.y, d.test.y));
    o.seed = 4;
    EXPECT_FALSE(torch::equal(load_dataset(o).train.x, d.train.x));
  }
  DataOptions iris;
  iris.kind = DataKind::kUciIris;
  EXPECT_EQ(load_dataset(iris).class_names,
            (std::vector<std::string>{"setosa", "versicolor", "virginica"}));
}

TEST(DataKinds, LoaderNamesFollowTheFileSpellings) {
  EXPECT_EQ(dataset_names(),
            (std::vector<std::string>{"fashion-mnist", "iris", "wine", "breast_cancer", "digits",
                                      "synthetic", "cifar10", "tensor-folder"}));
  EXPECT_EQ(dataset_name(DataKind::kUciBreastCancer), "breast_cancer");
  EXPECT_EQ(to_string(DataKind::kUciBreastCancer), "uci-breast-cancer");
  for (const auto& entry : kDataKindNames) {
    EXPECT_TRUE(parse_dataset(dataset_name(entry.value)) == entry.value) << entry.name;
  }
}

TEST(Uci, MalformedCsvNamesFileAndLine) {
  ScratchDir dir;
  DataOptions o;
  o.kind = DataKind::kUciIris;
  o.root = dir.path().string();
  expect_error([&] { load_dataset(o); }, {"iris.csv", "does not exist"});
  testing::write_raw(dir.file("iris.csv"), "150,4,a,b,c\n5.1,3.5,1.4,0.2,0\n4.9,3.0,1.4\n");
  expect_error([&] { load_dataset(o); }, {"iris.csv:3", "3 comma-separated values", "expected 5"});
  testing::write_raw(dir.file("iris.csv"), "150,4,a,b,c\n5.1,x,1.4,0.2,0\n");
  expect_error([&] { load_dataset(o); }, {"iris.csv:2", "column 2", "\"x\""});
  testing::write_raw(dir.file("iris.csv"), "150,4,a,b,c\n5.1,3.5,1.4,0.2,7\n");
  expect_error([&] { load_dataset(o); }, {"iris.csv:2", "label 7", "0..2"});
  testing::write_raw(dir.file("iris.csv"), "150,4,a,b,c\n5.1,3.5,1.4,0.2,1\n");
  expect_error([&] { load_dataset(o); }, {"1 samples, expected 150"});
  expect_error([&] { parse_dataset("nope"); },
               {"unknown dataset \"nope\"", "fashion-mnist", "iris"});
}

TEST(Synthetic, SeededAndShaped) {
  DataOptions o;
  o.synthetic_shape = {2, 4, 4};
  o.synthetic_samples = 200;
  o.seed = 11;
  auto a = make_synthetic(o);
  auto b = make_synthetic(o);
  EXPECT_EQ(a.train.size() + a.test.size(), 200);
  EXPECT_EQ(a.test.size(), 52);  // round(50 x 0.25) = 13 per class
  EXPECT_EQ(a.train.x.sizes().slice(1).vec(), (std::vector<int64_t>{2, 4, 4}));
  EXPECT_TRUE(torch::equal(a.train.x, b.train.x));
  o.seed = 12;
  EXPECT_FALSE(torch::equal(make_synthetic(o).train.x, a.train.x));
  o.synthetic_classes = 1;
  expect_error([&] { make_synthetic(o); }, {"synthetic_classes >= 2 (got 1)"});
}

// CIFAR-10 records: label, then 3 planes of 32x32.
std::string cifar_records(int n, int label_offset) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s.push_back(static_cast<char>((i + label_offset) % 10));
    for (int c = 0; c < 3; ++c) {
      for (int p = 0; p < 1024; ++p) s.push_back(static_cast<char>((c * 80 + p + i) % 256));
    }
  }
  return s;
}

TEST(Cifar10, BinaryBatchesLoadAndTruncationIsRefused) {
  ScratchDir dir;
  testing::write_raw(dir.file("data_batch_1.bin"), cifar_records(12, 0));
  testing::write_raw(dir.file("data_batch_2.bin"), cifar_records(8, 3));
  testing::write_raw(dir.file("test_batch.bin"), cifar_records(5, 1));
  DataOptions o;
  o.kind = DataKind::kCifar10;
  o.root = dir.path().string();
  o.standardize = false;
  auto d = load_dataset(o);
  ASSERT_EQ(d.train.size(), 20);
  EXPECT_EQ(d.test.size(), 5);
  EXPECT_EQ(d.sample_shape, (models::Shape{3, 32, 32}));
  EXPECT_EQ(d.train.y[13].item<int64_t>(), 4);  // second file, record 1: (1 + 3) % 10
  // Record 0: channel 2 (blue), row 1, column 2 = pixel 34: (160 + 34) / 255.
  EXPECT_FLOAT_EQ(d.train.x[0][2][1][2].item<float>(), 194.0f / 255.0f);
  testing::write_raw(dir.file("test_batch.bin"), cifar_records(5, 1).substr(0, 3073 * 4 + 100));
  expect_error([&] { load_dataset(o); }, {"test_batch.bin", "12392 bytes", "3073"});
  std::filesystem::remove(dir.file("test_batch.bin"));
  expect_error([&] { load_dataset(o); }, {"test_batch.bin", "does not exist"});
  o.root = dir.file("nowhere");
  expect_error([&] { load_dataset(o); }, {"no CIFAR-10 training batch", "nowhere"});
}

TEST(TensorFolder, ReadsSamplesAndBatchesAndRefusesDamage) {
  ScratchDir dir;
  namespace fs = std::filesystem;
  for (const char* sub : {"train/cat", "train/dog", "val/cat", "val/dog"})
    fs::create_directories(dir.path() / sub);
  write_tensor_file(dir.file("train/cat/0.qt"), torch::full({3, 4, 4}, 1.0));
  write_tensor_file(dir.file("train/cat/1.qt"), torch::full({3, 4, 4}, 2.0));
  write_tensor_file(dir.file("train/dog/all.batch.qt"), torch::full({5, 3, 4, 4}, -1.0));
  write_tensor_file(dir.file("val/cat/0.qt"), torch::full({3, 4, 4}, 3.0));
  write_tensor_file(dir.file("val/dog/0.qt"), torch::full({3, 4, 4}, -3.0));
  testing::write_raw(dir.file("train/dog/README"), "ignored");
  DataOptions o;
  o.kind = DataKind::kTensorFolder;
  o.root = dir.path().string();
  auto d = load_dataset(o);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(d.train.size(), 7);
  EXPECT_EQ(d.test.size(), 2);
  EXPECT_EQ(d.sample_shape, (models::Shape{3, 4, 4}));
  EXPECT_EQ(d.train.y.sum().item<int64_t>(), 5);
  EXPECT_FLOAT_EQ(d.test.x[1][0][0][0].item<float>(), -3.0f);  // stored values: no standardisation
  EXPECT_TRUE(
      torch::equal(read_tensor_file(dir.file("train/cat/1.qt")), torch::full({3, 4, 4}, 2.0)));

  write_tensor_file(dir.file("val/dog/1.qt"), torch::full({3, 5, 4}, 0.0));
  expect_error([&] { load_dataset(o); }, {"1.qt", "3x5x4", "3x4x4", "same shape"});
  auto bytes = testing::read_raw(dir.file("val/cat/0.qt"));
  testing::write_raw(dir.file("val/dog/1.qt"), bytes.substr(0, bytes.size() - 4));
  expect_error([&] { load_dataset(o); }, {"1.qt", "truncated", "192 bytes"});
  testing::write_raw(dir.file("val/dog/1.qt"), "not a tensor file at all");
  expect_error([&] { load_dataset(o); }, {"1.qt", "QUILTT01"});
  fs::remove(dir.file("val/dog/1.qt"));
  fs::create_directories(dir.path() / "val/bird");
  expect_error([&] { load_dataset(o); }, {"class \"bird\"", "not in train/"});
  fs::remove_all(dir.path() / "val");
  expect_error([&] { load_dataset(o); }, {"no val/ directory"});
}

TEST(FitToModel, ResizesAndMapsChannels) {
  Dataset d;
  d.name = "toy";
  d.sample_shape = {1, 28, 28};
  d.num_classes = 2;
  d.train = {torch::rand({4, 1, 28, 28}), torch::tensor({0, 1, 0, 1}, torch::kLong)};
  d.test = {torch::rand({2, 1, 28, 28}), torch::tensor({0, 1}, torch::kLong)};
  auto rgb = fit_to_model(d, {3, 32, 32});
  EXPECT_EQ(rgb.train.x.sizes().vec(), (std::vector<int64_t>{4, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(rgb.train.x.select(1, 0), rgb.train.x.select(1, 2)));
  auto flat = fit_to_model(d, {784});
  EXPECT_TRUE(torch::equal(flat.train.x, d.train.x.reshape({4, 784})));
  auto small = fit_to_model(d, {256});  // 16x16 per channel
  EXPECT_EQ(small.test.x.sizes().vec(), (std::vector<int64_t>{2, 256}));
  auto same = fit_to_model(d, {1, 28, 28});
  EXPECT_TRUE(torch::equal(same.train.x, d.train.x));
  expect_error([&] { fit_to_model(d, {3}); }, {"1x28x28", "input shape 3", "toy"});
  expect_error([&] { fit_to_model(d, {2, 28, 28}); }, {"2x28x28"});
}

TEST(StratifiedSubset, KeepsClassProportions) {
  auto y = torch::cat({torch::zeros({60}, torch::kLong), torch::ones({30}, torch::kLong),
                       torch::full({10}, 2, torch::kLong)});
  Split s{torch::arange(100).to(torch::kFloat32).unsqueeze(1), y};
  auto sub = stratified_subset(s, 10, 5);
  ASSERT_EQ(sub.size(), 10);
  EXPECT_TRUE(torch::equal(torch::bincount(sub.y), torch::tensor({6, 3, 1}, torch::kLong)));
  // Samples keep their labels.
  EXPECT_TRUE(torch::equal(y.index_select(0, sub.x.squeeze(1).to(torch::kLong)), sub.y));
  auto tiny = stratified_subset(s, 2, 5);
  EXPECT_EQ(tiny.size(), 2);
  EXPECT_EQ(stratified_subset(s, 0, 5).size(), 100);
}

}  // namespace
}  // namespace quilt::trainers
