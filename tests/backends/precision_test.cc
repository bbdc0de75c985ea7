// bf16 and int8 stages of the emulator's fast path (backends/inference.h, backends/precision.h):
// wire formats, determinism, the one-process reference, and what they cost in accuracy.

#include "backends/precision.h"
#include "backends/board.h"
#include "backends/inference.h"
#include "models/quilt_model.h"
#include "tests/backends/test_models.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>

namespace quilt::backends {
namespace {

using testing::base_model;
using testing::relative_error;

torch::Tensor random_batch(const models::Shape& shape, int64_t batch, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> s = {batch};
  s.insert(s.end(), shape.begin(), shape.end());
  return torch::randn(s);
}

// ResNet-18 at 64x64 cut after layer2 with an R=4 autoencoder: convs, residual adds, pools, the
// linear head and the codec all in one two-stage pipeline.
models::QuiltModel two_stage_resnet() {
  static models::Model base = base_model("resnet18", {3, 64, 64});
  torch::manual_seed(3);
  models::QuiltModel qm(base, {"after_layer2"}, models::AutoencoderOptions{4, 1});
  qm->eval();
  return qm;
}

CompileOptions options_for(Precision p, size_t stage, size_t stages) {
  CompileOptions o;
  o.precision = p;
  o.wire_input = stage > 0;
  o.wire_output = stage + 1 < stages;
  return o;
}

TEST(Precision, NamesAndElementBytes) {
  for (const auto& name : precision_names()) {
    auto p = parse_precision(name);
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_EQ(precision_name(*p), name);
  }
  EXPECT_FALSE(parse_precision("fp16").has_value());
  EXPECT_EQ(element_bytes(Precision::kFp32), 4);
  EXPECT_EQ(element_bytes(Precision::kBf16), 2);
  EXPECT_EQ(element_bytes(Precision::kInt8), 1);
}

TEST(Precision, Bf16StagesUseBf16OnTheWireAndMatchTheirOneProcessReference) {
  models::QuiltModel qm = two_stage_resnet();
  torch::NoGradGuard no_grad;
  const int64_t batch = 4;
  torch::Tensor x = random_batch(qm->stage(0).in_shape, batch, 5);
  CompiledStage s0(*qm, 0, batch, options_for(Precision::kBf16, 0, 2));
  CompiledStage s1(*qm, 1, batch, options_for(Precision::kBf16, 1, 2));
  EXPECT_EQ(s0.input_dtype(), torch::kFloat);
  EXPECT_EQ(s0.output_dtype(), torch::kBFloat16);
  EXPECT_EQ(s1.input_dtype(), torch::kBFloat16);
  EXPECT_EQ(s1.output_dtype(), torch::kFloat);
  EXPECT_TRUE(s0.fallbacks().empty()) << s0.summary();
  torch::Tensor wire = s0.run(x);
  EXPECT_EQ(wire.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(wire.is_contiguous());
  // Two bytes per element cross the cut.
  EXPECT_EQ(wire.nbytes(), 2 * wire.numel());
  torch::Tensor out = s1.run(wire);
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  // Deterministic, and the one-process reference is bit-exact.
  EXPECT_TRUE(torch::equal(s1.run(s0.run(x)), out));
  torch::Tensor ref = run_in_precision(*qm, Precision::kBf16, {}, {x})[0];
  EXPECT_TRUE(torch::equal(ref, out));
  // bf16 is not fp32: close (8 bits of mantissa through ~20 layers), not equal.
  const double err = relative_error(out, qm->forward(x));
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.1);
}

TEST(Precision, Int8StagesUseCodesOnTheWireAndMatchTheirOneProcessReference) {
  models::QuiltModel qm = two_stage_resnet();
  torch::NoGradGuard no_grad;
  const int64_t batch = 4;
  std::vector<torch::Tensor> calibration = {random_batch(qm->stage(0).in_shape, batch, 21),
                                            random_batch(qm->stage(0).in_shape, batch, 22)};
  torch::Tensor x = random_batch(qm->stage(0).in_shape, batch, 5);
  CompileOptions o0 = options_for(Precision::kInt8, 0, 2);
  o0.calibration = stage_calibration_inputs(*qm, 0, calibration);
  CompileOptions o1 = options_for(Precision::kInt8, 1, 2);
  o1.calibration = stage_calibration_inputs(*qm, 1, calibration);
  CompiledStage s0(*qm, 0, batch, o0);
  CompiledStage s1(*qm, 1, batch, o1);
  EXPECT_EQ(s0.output_dtype(), torch::kByte);
  EXPECT_EQ(s1.input_dtype(), torch::kByte);
  // Both sides of the cut derived the same scale and zero point from the same batches.
  EXPECT_EQ(s0.output_quantization(), s1.input_quantization());
  EXPECT_GT(s0.output_quantization().first, 0.0);
  torch::Tensor wire = s0.run(x);
  EXPECT_EQ(wire.scalar_type(), torch::kByte);
  EXPECT_EQ(wire.nbytes(), wire.numel());  // one byte per element
  torch::Tensor out = s1.run(wire);
  EXPECT_EQ(out.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(s1.run(s0.run(x)), out));
  torch::Tensor ref = run_in_precision(*qm, Precision::kInt8, calibration, {x})[0];
  EXPECT_TRUE(torch::equal(ref, out));
  // The codes decode to roughly the float32 activation at the cut.
  torch::Tensor cut_fp32 = stage_calibration_inputs(*qm, 1, {x})[0];
  auto [scale, zp] = s1.input_quantization();
  torch::Tensor decoded = (wire.to(torch::kFloat) - zp) * scale;
  EXPECT_LT(relative_error(decoded, cut_fp32), 0.1);
  EXPECT_LT(relative_error(out, qm->forward(x)), 0.5);
}

// The precision is a parameter of one lowering: bf16 and int8 compile to the same ops as fp32
// (same kinds, names and flops), on the fast path, without falling back.
TEST(Precision, Bf16AndInt8LowerToTheSameProgramAsFp32) {
  models::QuiltModel qm = two_stage_resnet();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> calibration = {random_batch(qm->stage(0).in_shape, 2, 21)};
  for (size_t stage : {0, 1}) {
    CompiledStage fp32(*qm, stage, 2, options_for(Precision::kFp32, stage, 2));
    for (Precision p : {Precision::kBf16, Precision::kInt8}) {
      CompileOptions o = options_for(p, stage, 2);
      if (p == Precision::kInt8) o.calibration = stage_calibration_inputs(*qm, stage, calibration);
      CompiledStage low(*qm, stage, 2, o);
      EXPECT_TRUE(low.fallbacks().empty()) << low.summary();
      EXPECT_EQ(low.summary(), fp32.summary());
      ASSERT_EQ(low.ops().size(), fp32.ops().size());
      int64_t flops = 0;
      for (size_t i = 0; i < low.ops().size(); ++i) {
        EXPECT_EQ(low.ops()[i].name, fp32.ops()[i].name);
        EXPECT_EQ(low.ops()[i].flops, fp32.ops()[i].flops);
        flops += low.ops()[i].flops;
      }
      EXPECT_GT(flops, 0);
      std::vector<double> seconds;
      torch::Tensor x = stage == 0 ? calibration[0]
                                   : CompiledStage(*qm, 0, 2,
                                                   [&] {
                                                     CompileOptions o0 = options_for(p, 0, 2);
                                                     o0.calibration = calibration;
                                                     return o0;
                                                   }())
                                         .run(calibration[0]);
      EXPECT_TRUE(torch::equal(low.run_profiled(x, seconds), low.run(x)));
      EXPECT_EQ(seconds.size(), low.ops().size());
    }
  }
}

// The other ops of the lowering in bf16 and int8: UNet's packed skips, transposed convs and
// concatenations (dense, float32) across two cuts, EfficientNet's SiLU (int8: through float),
// depthwise convs and squeeze-excitation. The pipeline matches its one-process reference
// bit for bit and stays near fp32.
TEST(Precision, UNetAndEfficientNetPipelinesInBf16AndInt8) {
  struct Case {
    std::string arch;
    models::Shape input;
    int64_t classes;
    std::vector<std::string> cuts;
  };
  for (const Case& c : {Case{"unet", {3, 32, 32}, 2, {"after_down2", "after_up3"}},
                        Case{"efficientnet_b0", {3, 32, 32}, 10, {"after_features.4"}}}) {
    models::Model base = base_model(c.arch, c.input, c.classes);
    torch::manual_seed(10);
    models::QuiltModel qm(base, c.cuts, models::AutoencoderOptions{4, 1});
    qm->eval();
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> calibration = {random_batch(c.input, 2, 31)};
    torch::Tensor x = random_batch(c.input, 2, 33);
    const torch::Tensor fp32 = qm->forward(x);
    for (Precision p : {Precision::kBf16, Precision::kInt8}) {
      const size_t n = qm->num_stages();
      torch::Tensor y = x;
      for (size_t k = 0; k < n; ++k) {
        CompileOptions o = options_for(p, k, n);
        if (p == Precision::kInt8) o.calibration = stage_calibration_inputs(*qm, k, calibration);
        CompiledStage stage(*qm, k, 2, o);
        EXPECT_TRUE(stage.fallbacks().empty()) << c.arch << ": " << stage.summary();
        EXPECT_EQ(stage.input_dtype(), k == 0 ? torch::kFloat : stage.input_dtype());
        y = stage.run(y);
        EXPECT_EQ(y.scalar_type(), stage.output_dtype());
      }
      const std::string what = c.arch + " " + precision_name(p);
      EXPECT_TRUE(torch::equal(run_in_precision(*qm, p, calibration, {x})[0], y)) << what;
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>()) << what;
      const double err = relative_error(y, fp32);
      std::cout << what << ": relative error against fp32 " << err << "\n";
      EXPECT_GT(err, 0.0) << what;
      EXPECT_LT(err, p == Precision::kBf16 ? 0.05 : 0.1) << what;
    }
  }
}

TEST(Precision, Int8WithoutCalibrationIsAnError) {
  models::QuiltModel qm = two_stage_resnet();
  try {
    CompiledStage s(*qm, 0, 2, options_for(Precision::kInt8, 0, 2));
    FAIL() << "no error";
  } catch (const BoardError& e) {
    EXPECT_NE(std::string(e.what()).find("boards.calibration_batches"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace quilt::backends
