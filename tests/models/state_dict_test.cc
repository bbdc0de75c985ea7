// load_state_dict / read_state_dict on small files from make_torchvision_fixture.py.

#include "models/state_dict.h"
#include "models/mlp.h"
#include "models/zoo.h"
#include "tests/models/fixture.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

namespace quilt::models {
namespace {

using testing::fixture;
using testing::read_f32;
using testing::relative_error;

Mlp small_mlp() { return Mlp(Shape{4}, 3, 8, 8); }

std::string load_error(torch::nn::Module& model, const std::string& path) {
  try {
    load_state_dict(model, path);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no ModelError)";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "\"" << part << "\" not in: " << text;
}

// Loading `path` into a fresh small_mlp() fails with a message that holds every one of `parts`.
void expect_mlp_load_error(const std::string& path, const std::vector<std::string>& parts) {
  Mlp mlp = small_mlp();
  const std::string e = load_error(*mlp, path);
  for (const std::string& part : parts) expect_contains(e, part);
}

TEST(StateDict, ReadsKeysInFileOrder) {
  const auto entries = read_state_dict(fixture("mlp_od.pt"));
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : entries) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                            "fc3.weight", "fc3.bias"}));
  EXPECT_EQ(entries[0].second.sizes(), torch::IntArrayRef({8, 4}));
  EXPECT_EQ(entries[0].second.scalar_type(), torch::kFloat32);
}

TEST(StateDict, LoadedMlpReproducesPython) {
  for (const char* file : {"mlp_od.pt", "mlp_protocol4.pt"}) {
    Mlp mlp = small_mlp();
    load_state_dict(*mlp, fixture(file));
    torch::NoGradGuard no_grad;
    const torch::Tensor y = mlp->forward(read_f32("mlp_input.f32", {5, 4}));
    EXPECT_LE(relative_error(y, read_f32("mlp_logits.f32", {5, 3})), 1e-6) << file;
  }
}

TEST(StateDict, MissingKey) {
  expect_mlp_load_error(fixture("mlp_missing.pt"), {"missing key \"fc3.bias\"", "mlp_missing.pt"});
}

TEST(StateDict, UnexpectedKey) {
  expect_mlp_load_error(fixture("mlp_unexpected.pt"), {"unexpected key \"fc4.weight\""});
}

TEST(StateDict, ShapeMismatchNamesKeyAndShapesAndCopiesNothing) {
  Mlp mlp = small_mlp();
  const torch::Tensor before = mlp->fc1->weight.clone();
  const std::string e = load_error(*mlp, fixture("mlp_shape.pt"));
  expect_contains(e, "shape mismatch for \"fc2.weight\"");
  expect_contains(e, "the file has 8x9, the model has 8x8");
  EXPECT_TRUE(torch::equal(mlp->fc1->weight, before));
}

TEST(StateDict, CheckpointIsNotAStateDict) {
  expect_mlp_load_error(fixture("mlp_checkpoint.pt"),
                        {"key \"model\" holds a dict, not a tensor", "checkpoint"});
}

TEST(StateDict, MissingFile) {
  expect_mlp_load_error(
      "/nonexistent/weights.pt",
      {"cannot open state_dict file \"/nonexistent/weights.pt\"", "No such file"});
}

TEST(StateDict, NotATorchFile) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string text = (dir / "quilt_models_not_torch.pt").string();
  std::ofstream(text) << "hello, this is not a tensor file\n";
  Mlp mlp = small_mlp();
  expect_contains(load_error(*mlp, text), "is not a torch.save file");
  // A zip that torch.save did not write.
  const std::string zip = (dir / "quilt_models_not_torch.zip").string();
  std::ofstream(zip, std::ios::binary) << std::string("PK\x03\x04garbage", 11);
  expect_contains(load_error(*mlp, zip), "is not a readable torch.save zip");
  std::remove(text.c_str());
  std::remove(zip.c_str());
}

TEST(StateDict, TruncatedFile) {
  const std::string src = fixture("mlp_od.pt");
  std::ifstream in(src, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string path =
      (std::filesystem::temp_directory_path() / "quilt_models_truncated.pt").string();
  std::ofstream(path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  Mlp mlp = small_mlp();
  EXPECT_THROW(load_state_dict(*mlp, path), ModelError);
  std::remove(path.c_str());
}

// A module named like Python's Sequential-free {conv1, bn1} pair of the BN fixture files.
struct ConvBnImpl : torch::nn::Module {
  ConvBnImpl() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(3));
  }
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
};
TORCH_MODULE(ConvBn);

TEST(StateDict, NumBatchesTrackedFollowsBatchNormVersion) {
  ConvBn m;
  load_state_dict(*m, fixture("bn_full.pt"));
  EXPECT_EQ(m->bn1->num_batches_tracked.item<int64_t>(), 5);
  EXPECT_TRUE(torch::equal(m->bn1->running_mean, torch::tensor({1.0f, 2.0f, 3.0f})));
  // Files from before BatchNorm version 2, or without metadata, may lack the counter.
  ConvBn old;
  load_state_dict(*old, fixture("bn_v1_missing.pt"));
  EXPECT_TRUE(torch::equal(old->bn1->running_mean, torch::tensor({1.0f, 2.0f, 3.0f})));
  load_state_dict(*old, fixture("bn_dict_missing.pt"));
  // Version 2 files must have it.
  ConvBn v2;
  std::string e = load_error(*v2, fixture("bn_v2_missing.pt"));
  expect_contains(e, "missing key \"bn1.num_batches_tracked\"");
}

}  // namespace
}  // namespace quilt::models
