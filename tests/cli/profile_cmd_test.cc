// `quilt profile` and `quilt calibrate` as functions: output, files written, exit codes.
#include "cli/profile_cmd.h"

#include "backends/profile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace quilt::harness {
namespace {

struct Result {
  int rc = 0;
  std::string out, err;
};

Result run(int (*cmd)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  Result r;
  r.rc = cmd(static_cast<int>(argv.size()), argv.data());
  r.out = ::testing::internal::GetCapturedStdout();
  r.err = ::testing::internal::GetCapturedStderr();
  return r;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/quilt_profile_cmd_" + std::to_string(::getpid()) + "_" + name;
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ProfileCmd, TableOfEveryUnit) {
  const Result r = run(cmd_profile, {"quilt", "profile", "resnet50"});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* unit : {"stem", "layer1.0", "layer3.5", "layer4.2", "head"}) {
    EXPECT_NE(r.out.find(unit), std::string::npos) << unit << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("18 unit(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("25557032 parameters"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("ms/batch"), std::string::npos) << "not measured without --measure";
}

TEST(ProfileCmd, MeasureWritesCsvAndJson) {
  const std::string csv = temp_path("units.csv");
  Result r = run(cmd_profile,
                 {"quilt", "profile", "resnet18", "--input", "3,32,32", "--classes", "10",
                  "--measure", "--batch", "2", "--repeats", "2", "--warmup", "1", "--output", csv});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("ms/batch"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CompiledStage"), std::string::npos) << r.out;
  const std::string text = read(csv);
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(line,
            "unit,in_shape,out_shape,flops,params,out_bytes,cut_after,measured_s,"
            "measured_s_per_sample,layer,type");
  // Unit rows end in ",," (no layer); layer rows follow their unit.
  std::vector<std::string> rows, layers;
  while (std::getline(lines, line)) {
    if (line.size() >= 2 && line.compare(line.size() - 2, 2, ",,") == 0) {
      rows.push_back(line.substr(0, line.size() - 2));
    } else {
      layers.push_back(line);
    }
  }
  ASSERT_EQ(rows.size(), 10u) << text;
  // ResNet-18: stem conv1, bn1, maxpool; 8 blocks of conv/bn x 2 (+ 3 downsamples of 2); fc.
  EXPECT_EQ(layers.size(), 3u + 8 * 4 + 3 * 2 + 1) << text;
  EXPECT_EQ(layers[0].rfind("stem,3x32x32,64x16x16,", 0), 0u) << layers[0];
  EXPECT_NE(layers[0].find(",conv1,Conv2d"), std::string::npos) << layers[0];
  // Measured eagerly: a time in the measured_s column.
  EXPECT_EQ(layers[0].find(",,,conv1"), std::string::npos) << layers[0];
  EXPECT_NE(text.find(",layer2.0.downsample.0,Conv2d"), std::string::npos) << text;
  EXPECT_EQ(rows[0].rfind("stem,3x32x32,64x8x8,", 0), 0u) << rows[0];
  EXPECT_NE(rows[2].find(",after_layer1,"), std::string::npos) << rows[2];
  EXPECT_EQ(rows[9].rfind("head,512x1x1,10,", 0), 0u) << rows[9];
  EXPECT_NE(rows[9].back(), ',') << "measured time present: " << rows[9];
  std::remove(csv.c_str());

  const std::string json = temp_path("units.json");
  r = run(cmd_profile,
          {"quilt", "profile", "mlp", "--input", "30", "--classes", "2", "--output", json});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string j = read(json);
  EXPECT_NE(j.find("\"model\": \"mlp\""), std::string::npos) << j;
  EXPECT_NE(j.find("\"name\": \"hidden1\", \"in_shape\": [30], \"out_shape\": [512]"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"cut_after\": null"), std::string::npos) << j;
  EXPECT_NE(j.find("\"layers\": [\n      {\"name\": \"fc1\", \"type\": \"Linear\""),
            std::string::npos)
      << j;
  EXPECT_EQ(j.find("measured_s"), std::string::npos) << j;
  std::remove(json.c_str());
}

// Per-layer rows of the new models: qualified names, depthwise convs, transposed convs, and
// measured times of each leaf; --units-only gives the unit table alone.
TEST(ProfileCmd, LayerRowsOfEfficientNetAndUNet) {
  Result r = run(cmd_profile, {"quilt", "profile", "efficientnet_b0"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("19 unit(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("5288548 parameters"), std::string::npos) << r.out;
  for (const char* layer : {"  features.0.0 ", "  features.1.0.block.0.0 ",
                            "  features.1.0.block.1.fc1 ", "  classifier.1 "}) {
    EXPECT_NE(r.out.find(layer), std::string::npos) << layer << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("SiLU"), std::string::npos) << r.out;

  const std::string json = temp_path("unet.json");
  r = run(cmd_profile, {"quilt", "profile", "unet", "--input", "3,32,32", "--measure", "--batch",
                        "1", "--repeats", "1", "--warmup", "0", "--output", json});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("run eagerly"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  up1.up "), std::string::npos) << r.out;
  const std::string j = read(json);
  EXPECT_NE(j.find("{\"name\": \"up1.up\", \"type\": \"ConvTranspose2d\", \"in_shape\": "
                   "[1024, 2, 2], \"out_shape\": [512, 4, 4]"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("\"layer_method\""), std::string::npos) << j;
  std::remove(json.c_str());

  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--units-only"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.find("conv1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer4.1"), std::string::npos) << r.out;
}

TEST(ProfileCmd, UserMistakesExitTwo) {
  Result r = run(cmd_profile, {"quilt", "profile", "resnet99"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("resnet99"), std::string::npos) << r.err;
  r = run(cmd_profile, {"quilt", "profile"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("needs a model name"), std::string::npos) << r.err;
  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--input", "3,a,4"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--input"), std::string::npos) << r.err;
  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--input", "3,32"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("{channels, height, width}"), std::string::npos) << r.err;
  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--batch", "0"});
  EXPECT_EQ(r.rc, 2);
  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--output", "x.txt"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find(".csv or .json"), std::string::npos) << r.err;
  r = run(cmd_profile, {"quilt", "profile", "resnet18", "--bogus"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos) << r.err;
}

TEST(CalibrateCmd, FitsAndWritesAProfileThatLoads) {
  const std::string out = temp_path("fitted.yaml");
  const Result r = run(cmd_calibrate, {"quilt", "calibrate", "resnet18", "--input", "3,64,64",
                                       "--classes", "10", "--profile", "cpu", "--batch", "2",
                                       "--repeats", "3", "--warmup", "1", "--output", out});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("mean relative error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("R^2"), std::string::npos) << r.out;
  const backends::BoardProfileFile p = backends::load_board_profile(out);
  EXPECT_EQ(p.board.name, "cpu");
  EXPECT_GT(p.board.efficiency, 0);
  EXPECT_LE(p.board.efficiency, 1);
  EXPECT_GE(p.board.overhead_s, 0);
  EXPECT_EQ(p.board.peak_flops, backends::load_board_profile("cpu").board.peak_flops);
  ASSERT_TRUE(p.calibration.has_value());
  EXPECT_EQ(p.calibration->model, "resnet18");
  EXPECT_EQ(p.calibration->input, "3x64x64");
  EXPECT_EQ(p.calibration->samples, 10);
  EXPECT_EQ(p.calibration->batch, 2);
  // Calibrating the calibrated profile again: the description does not pile up notes.
  const std::string again = temp_path("fitted_again.yaml");
  const Result r2 = run(cmd_calibrate, {"quilt", "calibrate", "mlp", "--profile", out, "--repeats",
                                        "3", "--output", again});
  ASSERT_EQ(r2.rc, 0) << r2.err << r2.out;
  const backends::BoardProfileFile q = backends::load_board_profile(again);
  EXPECT_EQ(q.calibration->model, "mlp");
  const std::string note = "fitted by quilt calibrate";
  const size_t first = q.description.find(note);
  ASSERT_NE(first, std::string::npos) << q.description;
  EXPECT_EQ(q.description.find(note, first + 1), std::string::npos) << q.description;
  std::remove(again.c_str());
  std::remove(out.c_str());
}

TEST(CalibrateCmd, UserMistakesExitTwo) {
  const std::string out = temp_path("never.yaml");
  Result r = run(cmd_calibrate, {"quilt", "calibrate", "resnet18", "--output", out});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--profile"), std::string::npos) << r.err;
  r = run(cmd_calibrate, {"quilt", "calibrate", "resnet18", "--profile", "cpu"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--output"), std::string::npos) << r.err;
  r = run(cmd_calibrate,
          {"quilt", "calibrate", "resnet18", "--profile", "/nonexistent.yaml", "--output", out});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("/nonexistent.yaml"), std::string::npos) << r.err;
  const std::string bad = temp_path("bad.yaml");
  {
    std::ofstream f(bad);
    f << "name: x\npeak_flops: 1e12\nspeed: 3\n";
  }
  r = run(cmd_calibrate, {"quilt", "calibrate", "resnet18", "--profile", bad, "--output", out});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find(bad + ":3: `speed`"), std::string::npos) << r.err;
  std::remove(bad.c_str());
  EXPECT_FALSE(std::ifstream(out).good()) << "nothing written on error";
}

}  // namespace
}  // namespace quilt::harness
