// Board profile files: built-ins, strict parsing with file:line errors, round trip; and per-unit
// timing on the fast path.
#include "backends/profile.h"

#include "backends/board.h"
#include "models/zoo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>

namespace quilt::backends {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/quilt_profile_" + std::to_string(::getpid()) + "_" + name;
}

// The message of the ProfileError that parsing `text` throws ("" when none).
ProfileError parse_error(const std::string& text) {
  try {
    parse_board_profile(text, "p.yaml");
  } catch (const ProfileError& e) {
    return e;
  }
  ADD_FAILURE() << "no ProfileError for:\n" << text;
  return ProfileError("", 0, "", "");
}

TEST(BoardProfile, BuiltinsLoadByName) {
  EXPECT_EQ(builtin_board_profiles(), (std::vector<std::string>{"alveo-u200", "cpu"}));
  const BoardProfileFile cpu = load_board_profile("cpu");
  EXPECT_EQ(cpu.board.name, "cpu");
  EXPECT_EQ(cpu.source, "built-in:cpu");
  EXPECT_GT(cpu.board.peak_flops, 0);
  EXPECT_DOUBLE_EQ(cpu.board.h2d_gbps, 9.2);
  EXPECT_DOUBLE_EQ(cpu.board.d2h_gbps, 11.7);
  ASSERT_TRUE(cpu.calibration.has_value());  // measured on the development machine
  EXPECT_EQ(cpu.calibration->model, "resnet50");
  const BoardProfileFile u200 = load_board_profile("alveo-u200");
  EXPECT_EQ(u200.board.name, "alveo-u200");
  EXPECT_DOUBLE_EQ(u200.board.peak_flops, 18.6e12);
  EXPECT_DOUBLE_EQ(u200.board.h2d_gbps, 9.2);   // the paper's measurement
  EXPECT_DOUBLE_EQ(u200.board.d2h_gbps, 11.7);  // the paper's measurement
  ASSERT_TRUE(u200.power_busy_w.has_value());
  EXPECT_DOUBLE_EQ(*u200.power_busy_w, 225);
  ASSERT_TRUE(u200.power_idle_w.has_value());
  EXPECT_LT(*u200.power_idle_w, *u200.power_busy_w);
  ASSERT_TRUE(u200.link_energy_j_per_byte.has_value());
  EXPECT_FALSE(u200.description.empty());
}

TEST(BoardProfile, FilesInTheSourceTreeMatchTheBuiltins) {
  const char* src = std::getenv("QUILT_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "QUILT_SOURCE_DIR not set";
  for (const auto& name : builtin_board_profiles()) {
    const std::string path = std::string(src) + "/backends/profiles/" + name + ".yaml";
    const BoardProfileFile f = load_board_profile(path);
    const BoardProfileFile b = load_board_profile(name);
    EXPECT_EQ(f.board.name, b.board.name);
    EXPECT_EQ(f.board.peak_flops, b.board.peak_flops);
    EXPECT_EQ(f.board.efficiency, b.board.efficiency);
    EXPECT_EQ(f.source, path);
  }
}

TEST(BoardProfile, SaveAndLoadRoundTrip) {
  BoardProfileFile p;
  p.board.name = "my board";
  p.board.peak_flops = 1.2345678901234567e12;
  p.board.efficiency = 0.123456789;
  p.board.overhead_s = 3.3e-5;
  p.board.h2d_gbps = std::numeric_limits<double>::infinity();
  p.board.mpi_latency_s = 1e-6;
  p.description = "line one: with a colon\nline \"two\"";
  p.power_idle_w = 20;
  p.power_busy_w = 75.5;
  p.link_energy_j_per_byte = 1e-10;
  // model, input, batch, threads, repeats, samples, mean_relative_error, r_squared, host
  p.calibration = CalibrationInfo{"resnet18", "3x32x32", 4, 1, 7, 10, 0.0712, 0.987, "AMD EPYC"};
  const std::string path = temp_path("roundtrip.yaml");
  save_board_profile(path, p);
  const BoardProfileFile q = load_board_profile(path);
  EXPECT_EQ(q.board.name, p.board.name);
  EXPECT_EQ(q.board.peak_flops, p.board.peak_flops);
  EXPECT_EQ(q.board.efficiency, p.board.efficiency);
  EXPECT_EQ(q.board.overhead_s, p.board.overhead_s);
  EXPECT_TRUE(std::isinf(q.board.h2d_gbps));
  EXPECT_EQ(q.board.d2h_gbps, p.board.d2h_gbps);
  EXPECT_EQ(q.board.mpi_latency_s, p.board.mpi_latency_s);
  EXPECT_EQ(q.description, p.description);
  EXPECT_EQ(q.power_idle_w, p.power_idle_w);
  EXPECT_EQ(q.power_busy_w, p.power_busy_w);
  EXPECT_EQ(q.link_energy_j_per_byte, p.link_energy_j_per_byte);
  ASSERT_TRUE(q.calibration.has_value());
  EXPECT_EQ(q.calibration->model, "resnet18");
  EXPECT_EQ(q.calibration->input, "3x32x32");
  EXPECT_EQ(q.calibration->batch, 4);
  EXPECT_EQ(q.calibration->threads, 1);
  EXPECT_EQ(q.calibration->repeats, 7);
  EXPECT_EQ(q.calibration->samples, 10);
  EXPECT_EQ(q.calibration->mean_relative_error, 0.0712);
  EXPECT_EQ(q.calibration->r_squared, 0.987);
  EXPECT_EQ(q.calibration->host, "AMD EPYC");
  EXPECT_EQ(q.source, path);
  std::remove(path.c_str());
}

TEST(BoardProfile, PrecisionKey) {
  EXPECT_EQ(parse_board_profile("name: b\npeak_flops: 1e12\n", "p.yaml").precision, "");
  BoardProfileFile p =
      parse_board_profile("name: b\npeak_flops: 1e12\nprecision: int8\n", "p.yaml");
  EXPECT_EQ(p.precision, "int8");
  EXPECT_EQ(parse_board_profile(to_yaml(p), "again.yaml").precision, "int8");
  ProfileError e = parse_error("name: b\npeak_flops: 1e12\nprecision: fp16\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "precision");
  EXPECT_NE(std::string(e.what()).find("valid: fp32, bf16, int8"), std::string::npos) << e.what();
}

TEST(BoardProfile, ErrorsNameFileLineAndKey) {
  ProfileError e = parse_error("name: b\npeak_flops: 1e12\nefficency: 0.5\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "efficency");
  EXPECT_NE(std::string(e.what()).find("p.yaml:3: `efficency`: unknown key"), std::string::npos)
      << e.what();
  EXPECT_NE(std::string(e.what()).find("efficiency"), std::string::npos) << e.what();

  e = parse_error("name: b\npeak_flops: fast\n");
  EXPECT_EQ(e.line(), 2);
  EXPECT_EQ(e.key(), "peak_flops");
  EXPECT_NE(std::string(e.what()).find("must be a number"), std::string::npos) << e.what();

  e = parse_error("name: b\npeak_flops: 1e12\nefficiency: 1.5\n");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.key(), "efficiency");
  EXPECT_NE(std::string(e.what()).find("(0, 1]"), std::string::npos) << e.what();

  e = parse_error("name: b\npeak_flops: -1\n");
  EXPECT_EQ(e.key(), "peak_flops");
  e = parse_error("name: b\npeak_flops: [1, 2]\n");
  EXPECT_EQ(e.key(), "peak_flops");
  e = parse_error("name: b\npeak_flops: 1e12\nh2d_gbps: 0\n");
  EXPECT_EQ(e.key(), "h2d_gbps");
  e = parse_error("name: b\npeak_flops: 1e12\npower_idle_w: 50\npower_busy_w: 40\n");
  EXPECT_EQ(e.key(), "power_busy_w");
  EXPECT_EQ(e.line(), 4);
  e = parse_error("name: b\n");
  EXPECT_EQ(e.key(), "peak_flops");
  EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  e = parse_error("name: b\npeak_flops: 1e12\ncalibration:\n  batch: -2\n");
  EXPECT_EQ(e.key(), "calibration.batch");
  EXPECT_EQ(e.line(), 4);
  e = parse_error("name: b\npeak_flops: 1e12\ncalibration:\n  colour: red\n");
  EXPECT_EQ(e.key(), "calibration.colour");
  e = parse_error("name: b\npeak_flops: 1e12\nname: c\n");
  EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();

  e = parse_error("name: [unclosed\npeak_flops: 1\n");
  EXPECT_NE(std::string(e.what()).find("malformed YAML"), std::string::npos) << e.what();
  EXPECT_GT(e.line(), 0);
  e = parse_error("- just\n- a list\n");
  EXPECT_NE(std::string(e.what()).find("mapping"), std::string::npos) << e.what();
  e = parse_error("");
  EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos) << e.what();
}

TEST(BoardProfile, UnknownNameAndMissingFile) {
  try {
    load_board_profile("tpu9000");
    FAIL() << "no error";
  } catch (const ProfileError& e) {
    EXPECT_NE(std::string(e.what()).find("alveo-u200, cpu"), std::string::npos) << e.what();
  }
  try {
    load_board_profile("/nonexistent/board.yaml");
    FAIL() << "no error";
  } catch (const ProfileError& e) {
    EXPECT_EQ(e.file(), "/nonexistent/board.yaml");
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos) << e.what();
  }
}

TEST(BoardProfile, SaveRefusesAnInvalidProfileAndAnUnwritablePath) {
  BoardProfileFile p;
  p.board.peak_flops = 0;
  EXPECT_THROW(save_board_profile(temp_path("bad.yaml"), p), ProfileError);
  p.board.peak_flops = 1e12;
  EXPECT_THROW(save_board_profile("/nonexistent/dir/p.yaml", p), ProfileError);
}

TEST(UnitTiming, OneTimingPerUnitOnTheFastPath) {
  const models::Model m = models::make_model("resnet18", models::ModelOptions{{3, 32, 32}, 10});
  UnitTimingOptions o;
  o.batch = 2;
  o.warmup = 1;
  o.repeats = 3;
  const int threads_before = at::get_num_threads();
  const std::vector<UnitTiming> t = measure_unit_times(m, o);
  EXPECT_EQ(at::get_num_threads(), threads_before);
  ASSERT_EQ(t.size(), m->units().size());
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].name, m->units()[i].name);
    EXPECT_EQ(t[i].first_unit, i);
    EXPECT_EQ(t[i].end_unit, i + 1);
    EXPECT_EQ(t[i].runs_s.size(), 3u);
    EXPECT_GT(t[i].median_s, 0);
    EXPECT_LE(t[i].min_s, t[i].median_s);
    EXPECT_LE(t[i].median_s, t[i].max_s);
  }
  o.repeats = 0;
  EXPECT_THROW(measure_unit_times(m, o), BoardError);
}

}  // namespace
}  // namespace quilt::backends
