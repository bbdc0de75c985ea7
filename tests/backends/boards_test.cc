#include "backends/emulator.h"
#include "backends/null_board.h"
#include "backends/registry.h"
#include "backends/xrt_board.h"

#include "models/quilt_model.h"
#include "tests/backends/test_models.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::backends {
namespace {

using testing::base_model;

models::QuiltModel resnet18_two_stages(double rate) {
  torch::manual_seed(21);
  models::QuiltModel qm(base_model("resnet18", {3, 32, 32}), {"after_layer2"},
                        models::AutoencoderOptions{rate, 1});
  return qm;
}

TEST(NullBoardTest, ReturnsPreallocatedOutputOfTheStageShape) {
  models::QuiltModel qm = resnet18_two_stages(64);
  NullBoard board;
  EXPECT_EQ(board.backend(), "null");
  EXPECT_NE(board.description().find("garbage"), std::string::npos);
  board.load({qm.ptr(), 0, 5});
  // Stage 0 ends with the encoder: 128 channels / 64 = 2 channels at 4x4.
  at::Tensor out = board.run(torch::zeros({5, 3, 32, 32}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{5, 2, 4, 4}));
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_TRUE(out.is_contiguous());
  EXPECT_EQ(board.run(torch::zeros({5, 3, 32, 32})).data_ptr(), out.data_ptr());
  board.load({qm.ptr(), 1, 3});
  EXPECT_EQ(board.run(torch::zeros({3, 2, 4, 4})).sizes(), (std::vector<int64_t>{3, 10}));
}

TEST(NullBoardTest, RejectsBadAssignments) {
  models::QuiltModel qm = resnet18_two_stages(1);
  NullBoard board;
  EXPECT_THROW(board.load({qm.ptr(), 2, 1}), BoardError);
  EXPECT_THROW(board.load({qm.ptr(), 0, 0}), BoardError);
  EXPECT_THROW(board.load({nullptr, 0, 1}), BoardError);
}

TEST(EmulatorBoardTest, RunsTheStageAndDescribesItself) {
  models::QuiltModel qm = resnet18_two_stages(64);
  qm->train();  // load() must switch to eval
  EmulatorBoard board;
  EXPECT_EQ(board.backend(), "emulator");
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  board.load({qm.ptr(), 1, 2});
  EXPECT_FALSE(qm->is_training());
  const std::string d = board.description();
  EXPECT_NE(d.find("CPU emulator: oneDNN fast path, 1 thread, "), std::string::npos) << d;
  EXPECT_EQ(d.find("fallback"), std::string::npos) << d;
  EXPECT_EQ(d, "CPU emulator: oneDNN fast path, 1 thread, " + cpu_model_name());
  at::set_num_threads(threads);

  torch::NoGradGuard no_grad;
  torch::manual_seed(22);
  at::Tensor x = torch::randn({2, 2, 4, 4});
  at::Tensor out = board.run(x);
  EXPECT_LE(testing::relative_error(out, qm->forward_stage(1, x)), 1e-4);
  // Outputs are independent: a later run does not touch an earlier output.
  at::Tensor keep = out.clone();
  board.run(torch::randn({2, 2, 4, 4}));
  EXPECT_TRUE(torch::equal(out, keep));
  out.add_(1.0);  // the caller may modify it
}

TEST(EmulatorBoardTest, RejectsBadStage) {
  models::QuiltModel qm = resnet18_two_stages(1);
  EmulatorBoard board;
  EXPECT_THROW(board.load({qm.ptr(), 5, 1}), BoardError);
  EXPECT_THROW(board.load({nullptr, 0, 1}), BoardError);
}

TEST(BoardRegistryTest, BuiltinsAreRegisteredExplicitly) {
  BoardRegistry registry;
  EXPECT_TRUE(registry.names().empty());
  register_builtin_boards(registry);
  std::vector<std::string> names = {"emulator", "null"};
  if (xrt_built()) names.push_back("xrt");
  EXPECT_EQ(registry.names(), names);
  EXPECT_EQ(registry.make("emulator")->backend(), "emulator");
  EXPECT_EQ(registry.make("null")->backend(), "null");
  EXPECT_NE(registry.make("null").get(), registry.make("null").get());
}

TEST(BoardRegistryTest, UnknownBackendListsTheValidOnes) {
  BoardRegistry registry;
  register_builtin_boards(registry);
  try {
    registry.make("fpga");
    FAIL() << "no error";
  } catch (const BoardError& e) {
    EXPECT_EQ(std::string(e.what()),
              std::string("unknown board backend \"fpga\"; valid backends: emulator, null") +
                  (xrt_built() ? ", xrt" : ""));
  }
  BoardRegistry empty;
  EXPECT_THROW(empty.make("null"), BoardError);
}

TEST(BoardRegistryTest, RejectsDuplicatesAndEmptyNames) {
  BoardRegistry registry;
  register_builtin_boards(registry);
  EXPECT_THROW(register_builtin_boards(registry), BoardError);
  EXPECT_THROW(registry.add("", [] { return std::make_unique<NullBoard>(); }), BoardError);
  EXPECT_THROW(registry.add("x", nullptr), BoardError);
  registry.add("mine", [] { return std::make_unique<NullBoard>(); });
  EXPECT_TRUE(registry.contains("mine"));
}

}  // namespace
}  // namespace quilt::backends
