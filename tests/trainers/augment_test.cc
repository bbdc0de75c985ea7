#include "trainers/augment.h"
#include "trainers/progress.h"

#include "tests/trainers/test_util.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::trainers {
namespace {

torch::Tensor images() {
  torch::manual_seed(0);
  return torch::rand({16, 3, 12, 12});
}

TEST(Augment, OffByDefaultAndForVectors) {
  AugmentOptions off;
  EXPECT_FALSE(off.enabled());
  auto x = images();
  EXPECT_TRUE(torch::equal(augment(x, off, 1), x));
  auto v = torch::rand({4, 10});
  EXPECT_TRUE(torch::equal(augment(v, AugmentOptions().set_horizontal_flip(true), 1), v));
}

TEST(Augment, SameSeedSameResultOtherSeedOther) {
  auto opts = AugmentOptions().set_crop_padding(2).set_horizontal_flip(true).set_skew(0.2);
  auto x = images();
  auto a = augment(x, opts, 42);
  auto b = augment(x, opts, 42);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, augment(x, opts, 43)));
  EXPECT_EQ(a.sizes(), x.sizes());
  EXPECT_FALSE(torch::equal(a, x));
  EXPECT_TRUE(torch::equal(x, images()));  // the input is not changed
  EXPECT_NE(batch_seed(1, 2, 3), batch_seed(1, 3, 2));
  EXPECT_EQ(batch_seed(1, 2, 3), batch_seed(1, 2, 3));
}

TEST(Augment, FlipMirrorsAboutHalfTheSamples) {
  auto x = images();
  auto y = augment(x, AugmentOptions().set_horizontal_flip(true), 7);
  int flipped = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const bool same = torch::equal(y[i], x[i]);
    const bool mirrored = torch::equal(y[i], x[i].flip({2}));
    EXPECT_TRUE(same || mirrored) << "sample " << i;
    flipped += mirrored ? 1 : 0;
  }
  EXPECT_GT(flipped, 2);
  EXPECT_LT(flipped, 14);
}

TEST(Augment, CropShiftsContentWithZeroPadding) {
  auto x = torch::ones({32, 1, 8, 8});
  auto y = augment(x, AugmentOptions().set_crop_padding(2), 3);
  EXPECT_EQ(y.sizes(), x.sizes());
  // Each sample keeps a contiguous block of ones of size (8 - |dy|) x (8 - |dx|).
  auto ones = y.sum({1, 2, 3});
  EXPECT_GE(ones.min().item<float>(), 36.0f);
  EXPECT_LT(ones.min().item<float>(), 64.0f);  // 32 samples: some offset is not the centre
  EXPECT_TRUE(torch::all((y == 0) | (y == 1)).item<bool>());
}

TEST(Augment, SkewIsSmallAndRefusesBadOptions) {
  auto x = images();
  auto y = augment(x, AugmentOptions().set_skew(0.05), 9);
  EXPECT_LT((y - x).abs().mean().item<double>(), 0.25);
  testing::expect_error<TrainerError>([&] { augment(x, AugmentOptions().set_skew(2.0), 1); },
                                      {"skew 2", "[0, 1]"});
  testing::expect_error<TrainerError>([&] { augment(x, AugmentOptions().set_crop_padding(-1), 1); },
                                      {"crop_padding -1"});
}

std::string progress_output(ProgressStyle style, int rank) {
  testing::ScratchDir dir;
  std::FILE* f = std::fopen(dir.file("out.txt").c_str(), "w+");
  ProgressOptions o;
  o.style = style;
  o.out = f;
  o.line_interval_s = 0.0;
  Progress p(o, rank);
  p.start_epoch("epoch 1/2", 128);
  p.advance(64, 2.5);
  p.advance(64, 2.0);
  p.end_epoch("train loss 2.0");
  p.message("phase 2");
  std::fclose(f);
  return testing::read_raw(dir.file("out.txt"));
}

TEST(Progress, LinesForBatchJobsNothingWhenSilentOrNotRank0) {
  // A file is not a terminal: auto means plain lines.
  const std::string lines = progress_output(ProgressStyle::kAuto, 0);
  EXPECT_NE(lines.find("epoch 1/2: 64/128 samples, loss 2.5000"), std::string::npos) << lines;
  EXPECT_NE(lines.find("samples/s, ETA"), std::string::npos) << lines;
  EXPECT_NE(lines.find("train loss 2.0"), std::string::npos) << lines;
  EXPECT_EQ(lines.find('\r'), std::string::npos);
  const std::string bar = progress_output(ProgressStyle::kBar, 0);
  EXPECT_NE(bar.find("\repoch 1/2 [=============================="), std::string::npos) << bar;
  EXPECT_NE(bar.find("100%"), std::string::npos) << bar;
  EXPECT_EQ(progress_output(ProgressStyle::kSilent, 0), "");
  EXPECT_EQ(progress_output(ProgressStyle::kLines, 1), "");
}

}  // namespace
}  // namespace quilt::trainers
