// Cross-check against torchvision: names, shapes and eval-mode logits of ResNet-18/50 with a
// state_dict saved from Python (fixture: make_torchvision_fixture.py).

#include "models/efficientnet.h"
#include "models/quilt_model.h"
#include "models/resnet.h"
#include "models/state_dict.h"
#include "models/unet.h"
#include "models/zoo.h"
#include "tests/models/fixture.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <sstream>

namespace quilt::models {
namespace {

using testing::fixture;
using testing::read_f32;
using testing::relative_error;

std::vector<std::string> read_lines(const std::string& name) {
  std::ifstream in(fixture(name));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> describe(const torch::OrderedDict<std::string, torch::Tensor>& dict) {
  std::vector<std::string> lines;
  for (const auto& item : dict) {
    lines.push_back(item.key() + " " + to_string(item.value().sizes().vec()));
  }
  return lines;
}

void expect_same_names(int depth) {
  const std::string arch = "resnet" + std::to_string(depth);
  ResNet model(depth, Shape{3, 224, 224}, 1000);
  // Same names, shapes and order as torchvision's named_parameters() / named_buffers().
  EXPECT_EQ(describe(model->named_parameters()), read_lines(arch + "_params.txt"));
  EXPECT_EQ(describe(model->named_buffers()), read_lines(arch + "_buffers.txt"));
}

TEST(Torchvision, ResNet18NamesAndShapes) { expect_same_names(18); }
TEST(Torchvision, ResNet50NamesAndShapes) { expect_same_names(50); }

torch::Tensor logits(Model model, const std::string& arch, int64_t batch) {
  model->eval();
  torch::NoGradGuard no_grad;
  return model->forward(read_f32(arch + "_input.f32", {batch, 3, 224, 224}));
}

void expect_logits_match(int depth, int64_t batch, const std::string& file) {
  const std::string arch = "resnet" + std::to_string(depth);
  Model model = make_model(arch);
  load_state_dict(*model, fixture(file));
  const torch::Tensor expected = read_f32(arch + "_logits.f32", {batch, 1000});
  const torch::Tensor got = logits(model, arch, batch);
  EXPECT_LE(relative_error(got, expected), 1e-4) << file;
  // Buffers arrived too: the fixture sets every num_batches_tracked to 7.
  auto* resnet = model->as<ResNet>();
  EXPECT_EQ(resnet->bn1->num_batches_tracked.item<int64_t>(), 7);
  EXPECT_NE(resnet->bn1->running_var.sum().item<double>(), 64.0);
}

TEST(Torchvision, ResNet18LogitsFromOrderedDict) { expect_logits_match(18, 2, "resnet18_od.pt"); }
TEST(Torchvision, ResNet18LogitsFromPlainDict) { expect_logits_match(18, 2, "resnet18_dict.pt"); }
TEST(Torchvision, ResNet18LogitsFromLegacyFormat) {
  expect_logits_match(18, 2, "resnet18_legacy.pt");
}
TEST(Torchvision, ResNet50LogitsFromOrderedDict) { expect_logits_match(50, 1, "resnet50_od.pt"); }

TEST(Torchvision, QuiltModelTakesTorchvisionWeights) {
  Model base = make_model("resnet18");
  QuiltModel quilt(base, {"after_layer2"}, AutoencoderOptions{});
  load_state_dict(*quilt, fixture("resnet18_od.pt"));  // R = 1: exactly torchvision's keys
  quilt->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = read_f32("resnet18_input.f32", {2, 3, 224, 224});
  torch::Tensor y = quilt->forward_stage(1, quilt->forward_stage(0, x));
  EXPECT_LE(relative_error(y, read_f32("resnet18_logits.f32", {2, 1000})), 1e-4);

  // With autoencoders the file lacks their keys: load the base, keep the AE's init.
  QuiltModel with_ae(make_model("resnet18"), {"after_layer2"}, AutoencoderOptions{4, 1});
  EXPECT_THROW(load_state_dict(*with_ae, fixture("resnet18_od.pt")), ModelError);
  load_state_dict(*with_ae->base(), fixture("resnet18_od.pt"));
}

TEST(Torchvision, EfficientNetB0NamesAndShapes) {
  EfficientNet model(Shape{3, 224, 224}, 1000);
  EXPECT_EQ(describe(model->named_parameters()), read_lines("efficientnet_b0_params.txt"));
  EXPECT_EQ(describe(model->named_buffers()), read_lines("efficientnet_b0_buffers.txt"));
}

TEST(Torchvision, EfficientNetB0Logits) {
  Model model = make_model("efficientnet_b0");
  load_state_dict(*model, fixture("efficientnet_b0_od.pt"));
  const torch::Tensor expected = read_f32("efficientnet_b0_logits.f32", {1, 1000});
  const torch::Tensor got = logits(model, "efficientnet_b0", 1);
  const double err = relative_error(got, expected);
  EXPECT_LE(err, 1e-4);
  std::cout << "efficientnet_b0 vs torchvision: max |logit diff| "
            << (got - expected).abs().max().item<double>() << ", relative " << err << "\n";
}

// milesial/Pytorch-UNet's layout (defined in the fixture script): names, shapes and outputs.
TEST(Torchvision, UNetMatchesPytorchUNet) {
  UNet unet(Shape{3, 32, 32}, 2);
  EXPECT_EQ(describe(unet->named_parameters()), read_lines("unet_params.txt"));
  EXPECT_EQ(describe(unet->named_buffers()), read_lines("unet_buffers.txt"));
  Model model = make_model("unet", {{3, 32, 32}, 2});
  load_state_dict(*model, fixture("unet_od.pt"));
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor x = read_f32("unet_input.f32", {2, 3, 32, 32});
  const torch::Tensor expected = read_f32("unet_logits.f32", {2, 2, 32, 32});
  const torch::Tensor got = model->forward(x);
  EXPECT_LE(relative_error(got, expected), 1e-4);
  std::cout << "unet vs PyTorch: max |logit diff| " << (got - expected).abs().max().item<double>()
            << "\n";

  // Through a QuiltModel cut across the skips at R = 1: the same outputs.
  QuiltModel quilt(make_model("unet", {{3, 32, 32}, 2}), {"after_down3", "after_up2"},
                   AutoencoderOptions{});
  load_state_dict(*quilt, fixture("unet_od.pt"));
  quilt->eval();
  torch::Tensor y = x;
  for (size_t k = 0; k < quilt->num_stages(); ++k) y = quilt->forward_stage(k, y);
  EXPECT_LE(relative_error(y, expected), 1e-4);
}

}  // namespace
}  // namespace quilt::models
