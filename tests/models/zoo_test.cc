#include "models/zoo.h"

#include <gtest/gtest.h>

namespace quilt::models {
namespace {

TEST(Zoo, BuildsEveryModelWithDefaults) {
  EXPECT_EQ(model_names(),
            (std::vector<std::string>{"resnet18", "resnet50", "efficientnet_b0", "unet", "mlp"}));
  for (const auto& name : {"resnet18", "mlp"}) {
    Model m = make_model(name);
    EXPECT_EQ(m->arch(), name);
  }
  Model r18 = make_model("resnet18");
  EXPECT_EQ(r18->input_shape(), (Shape{3, 224, 224}));
  EXPECT_EQ(r18->num_classes(), 1000);
  Model mlp = make_model("mlp");
  EXPECT_EQ(mlp->input_shape(), (Shape{64}));
  EXPECT_EQ(mlp->num_classes(), 10);
}

TEST(Zoo, HonoursOptions) {
  Model r18 = make_model("resnet18", ModelOptions{{1, 28, 28}, 10});
  EXPECT_EQ(r18->input_shape(), (Shape{1, 28, 28}));
  EXPECT_EQ(r18->num_classes(), 10);
  Model mlp = make_model("mlp", ModelOptions{{13}, 3});
  EXPECT_EQ(mlp->input_shape(), (Shape{13}));
  EXPECT_THROW(make_model("mlp", ModelOptions{{1, 28, 28}, 10}), ModelError);
}

TEST(Zoo, UnknownArchListsValidNames) {
  try {
    make_model("vgg16");
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_STREQ(
        e.what(),
        "unknown model \"vgg16\"; valid models: resnet18, resnet50, efficientnet_b0, unet, mlp, "
        "torchscript (a TorchScript file in model.path)");
  }
}

}  // namespace
}  // namespace quilt::models
