// The XRT board on XRT's noop shim (XCL_EMULATION_MODE=noop, set below before the first XRT
// call): the whole native API path runs without a board, against a synthetic xclbin. It tests
// plumbing (buffer sizes, argument order, errors), not numbers: the noop shim computes nothing.
// Tests that need XRT skip when the backend is not built.

#include "backends/xrt_board.h"
#include "backends/registry.h"
#include "tests/backends/test_models.h"
#ifdef QUILT_TEST_HAVE_XRT
#include "tests/backends/xrt_synthetic_xclbin.h"
#endif

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace quilt::backends {
namespace {

namespace fs = std::filesystem;

#define SKIP_WITHOUT_XRT()                                             \
  if (!xrt_built())                                                    \
  GTEST_SKIP() << "the XRT backend is not built (QUILT_XRT=OFF or no " \
                  "libxrt-dev)"

#ifdef QUILT_TEST_HAVE_XRT
class XrtBoardTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("XCL_EMULATION_MODE", "noop", 1);
    dir_ = fs::temp_directory_path() / ("quilt_xrt_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    xclbin_ = (dir_ / "stages.xclbin").string();
    quilt::testing::write_synthetic_xclbin(xclbin_);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  void SetUp() override {
    setenv("XCL_EMULATION_MODE", "noop", 1);
    unsetenv("QUILT_XRT_NOOP_DEVICES");
  }

  // MLP 64 -> 512 | 512 -> 10, cut after the first hidden layer.
  static StageAssignment two_stage_mlp(size_t stage, int64_t batch) {
    models::QuiltModel qm(testing::base_model("mlp", {64}), {"after_hidden1"}, {1.0, 1});
    qm->eval();
    StageAssignment a;
    a.model = qm.ptr();
    a.stage = stage;
    a.batch_size = batch;
    a.xclbin = xclbin_;
    a.device = "0";
    return a;
  }

  // Runs load() and returns the BoardError's message ("" when nothing was thrown).
  static std::string load_error(XrtBoard& board, const StageAssignment& a) {
    try {
      board.load(a);
    } catch (const BoardError& e) {
      return e.what();
    }
    return "";
  }

  static inline fs::path dir_;
  static inline std::string xclbin_;
};
#endif

TEST(XrtPowerJsonTest, PrefersTheBoardsOwnFigure) {
  EXPECT_DOUBLE_EQ(*parse_electrical_power_w(R"({"power_consumption_watts": "23.5"})"), 23.5);
}

TEST(XrtPowerJsonTest, SumsTheInputRailsWhenTheTotalIsMissing) {
  const std::string json = R"({
    "power_rails": [
      {"id": "12v_pex", "voltage": {"volts": "12.000", "is_present": "true"},
                        "current": {"amps": "1.500", "is_present": "true"}},
      {"id": "12v_aux", "voltage": {"volts": "12.000", "is_present": "true"},
                        "current": {"amps": "0.500", "is_present": "true"}},
      {"id": "vccint", "voltage": {"volts": "0.850", "is_present": "true"},
                       "current": {"amps": "20.000", "is_present": "true"}},
      {"id": "3v3_pex", "voltage": {"volts": "3.300", "is_present": "false"},
                        "current": {"amps": "0.000", "is_present": "false"}}
    ],
    "power_consumption_watts": "N\/A"
  })";
  // 12 * 1.5 + 12 * 0.5; vccint is fed from the input rails and is not added again.
  EXPECT_DOUBLE_EQ(*parse_electrical_power_w(json), 24.0);
}

TEST(XrtPowerJsonTest, UnavailableIsEmptyNeverZero) {
  EXPECT_FALSE(parse_electrical_power_w(R"({"power_consumption_watts": "N\/A"})"));
  EXPECT_FALSE(parse_electrical_power_w(R"({"power_consumption_watts": "0.000"})"));
  EXPECT_FALSE(parse_electrical_power_w(R"({"power_rails": [{"id": "12v_pex",
      "voltage": {"volts": "0.000", "is_present": "false"},
      "current": {"amps": "0.000", "is_present": "false"}}]})"));
  EXPECT_FALSE(parse_electrical_power_w(""));
}

TEST(XrtConventionTest, KernelNamesAndDefaultDeviceIndex) {
  EXPECT_EQ(xrt_stage_kernel_name(0), "quilt_stage0");
  EXPECT_EQ(xrt_stage_kernel_name(3), "quilt_stage3");
  // Under ctest none of these is set; set the Open MPI one and read it back.
  const char* old = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  std::string saved = old ? old : "";
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  std::string source;
  EXPECT_EQ(xrt_default_device_index(&source), 3u);
  EXPECT_EQ(source, "OMPI_COMM_WORLD_LOCAL_RANK=3");
  if (old)
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", saved.c_str(), 1);
  else
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
}

TEST(XrtRegistryTest, RegisteredWhenBuilt) {
  BoardRegistry registry;
  register_builtin_boards(registry);
  EXPECT_EQ(registry.contains("xrt"), xrt_built());
  if (xrt_built()) {
    EXPECT_EQ(registry.make("xrt")->backend(), "xrt");
  }
}

#ifndef QUILT_TEST_HAVE_XRT
TEST(XrtBoardTest, NeedsTheXrtBackend) {
  EXPECT_FALSE(xrt_built());
  GTEST_SKIP() << "the XRT backend is not built (QUILT_XRT=OFF, or AUTO without libxrt-dev): "
                  "the noop-shim tests need it";
}
#else
TEST_F(XrtBoardTest, SyntheticXclbinHasTheAxlfLayout) {
  auto bytes = quilt::testing::synthetic_xclbin_bytes();
  ASSERT_GT(bytes.size(), sizeof(axlf));
  const auto* top = reinterpret_cast<const axlf*>(bytes.data());
  EXPECT_EQ(std::string(top->m_magic), "xclbin2");
  EXPECT_EQ(top->m_header.m_numSections, 4u);
  EXPECT_EQ(top->m_header.m_length, bytes.size());
}

TEST_F(XrtBoardTest, EnvironmentPointsXrtAtItsShims) {
  SKIP_WITHOUT_XRT();
  std::string line = prepare_xrt_environment();
  const char* dir = std::getenv("XILINX_XRT");
  ASSERT_NE(dir, nullptr) << line;
  EXPECT_TRUE(fs::exists(fs::path(dir) / "lib" / "libxrt_noop.so.2") ||
              fs::exists(fs::path(dir) / "lib" / "libxrt_coreutil.so"))
      << line;
}

TEST_F(XrtBoardTest, RunsAStageBatchEndToEnd) {
  SKIP_WITHOUT_XRT();
  for (size_t stage : {0u, 1u}) {
    XrtBoard board;
    StageAssignment a = two_stage_mlp(stage, 4);
    ASSERT_NO_THROW(board.load(a));
    EXPECT_EQ(board.device_index(), 0u);
    EXPECT_NE(board.description().find("quilt_stage" + std::to_string(stage)), std::string::npos)
        << board.description();
    EXPECT_NE(board.description().find("noop shim"), std::string::npos);
    const auto& spec = a.model->stage(stage);
    std::vector<int64_t> in = {4}, out = {4};
    in.insert(in.end(), spec.in_shape.begin(), spec.in_shape.end());
    out.insert(out.end(), spec.out_shape.begin(), spec.out_shape.end());
    at::Tensor x = torch::randn(in);
    at::Tensor y;
    ASSERT_NO_THROW(y = board.run(x));  // throws unless the run ended COMPLETED
    EXPECT_EQ(y.sizes().vec(), out);
    EXPECT_EQ(y.scalar_type(), at::kFloat);
    EXPECT_GE(board.last_h2d_s(), 0);
    EXPECT_GT(board.last_kernel_s(), 0);
    EXPECT_GE(board.last_d2h_s(), 0);
    // A second batch returns a new tensor: the first stays the caller's.
    at::Tensor y2 = board.run(x);
    EXPECT_NE(y.data_ptr(), y2.data_ptr());
  }
}

TEST_F(XrtBoardTest, RefusesAnInputOfTheWrongShape) {
  SKIP_WITHOUT_XRT();
  XrtBoard board;
  board.load(two_stage_mlp(0, 4));
  try {
    board.run(torch::randn({3, 64}));
    FAIL() << "no error";
  } catch (const BoardError& e) {
    EXPECT_NE(std::string(e.what()).find("4x64"), std::string::npos) << e.what();
  }
}

TEST_F(XrtBoardTest, MissingKernelListsTheKernelsTheXclbinHas) {
  SKIP_WITHOUT_XRT();
  std::string other = (dir_ / "other.xclbin").string();
  quilt::testing::SyntheticXclbin spec;
  spec.kernels = {"vadd", "mmult"};
  quilt::testing::write_synthetic_xclbin(other, spec);
  XrtBoard board;
  StageAssignment a = two_stage_mlp(1, 2);
  a.xclbin = other;
  std::string msg = load_error(board, a);
  EXPECT_NE(msg.find("kernel `quilt_stage1` (stage 1) is not in xclbin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("it has: vadd, mmult"), std::string::npos) << msg;
}

TEST_F(XrtBoardTest, ConfiguredKernelNameIsUsed) {
  SKIP_WITHOUT_XRT();
  XrtBoard board;
  StageAssignment a = two_stage_mlp(1, 2);
  a.kernel = "quilt_stage0";  // stage 1's shapes on stage 0's kernel
  ASSERT_NO_THROW(board.load(a));
  EXPECT_NE(board.description().find("kernel quilt_stage0"), std::string::npos);
}

TEST_F(XrtBoardTest, MissingXclbinSaysSo) {
  SKIP_WITHOUT_XRT();
  XrtBoard board;
  StageAssignment a = two_stage_mlp(0, 2);
  a.xclbin = (dir_ / "nowhere.xclbin").string();
  std::string msg = load_error(board, a);
  EXPECT_NE(msg.find("nowhere.xclbin` does not exist"), std::string::npos) << msg;
  a.xclbin = "";
  EXPECT_NE(load_error(board, a).find("no xclbin given"), std::string::npos);
}

TEST_F(XrtBoardTest, NonexistentDeviceIndexListsTheDevices) {
  SKIP_WITHOUT_XRT();
  setenv("QUILT_XRT_NOOP_DEVICES", "2", 1);
  EXPECT_EQ(xrt_device_count(), 2u);
  XrtBoard board;
  StageAssignment a = two_stage_mlp(0, 2);
  a.device = "7";
  std::string msg = load_error(board, a);
  EXPECT_NE(msg.find("no XRT device with index 7 (boards.devices): this host has 2 device(s): 0 ("),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find(", 1 ("), std::string::npos) << msg;
}

TEST_F(XrtBoardTest, UnknownBdfIsNotFound) {
  SKIP_WITHOUT_XRT();
  XrtBoard board;
  StageAssignment a = two_stage_mlp(0, 2);
  a.device = "0000:65:00.1";
  std::string msg = load_error(board, a);
  EXPECT_NE(msg.find("no XRT device with PCIe BDF `0000:65:00.1`"), std::string::npos) << msg;
}

TEST_F(XrtBoardTest, DefaultDeviceIsTheLocalRank) {
  SKIP_WITHOUT_XRT();
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  XrtBoard board;
  StageAssignment a = two_stage_mlp(0, 2);
  a.device = "";
  board.load(a);
  EXPECT_EQ(board.device_index(), 1u);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "9", 1);
  std::string msg = load_error(board, a);
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_NE(msg.find("no XRT device with index 9 (the rank's node-local index, "
                     "OMPI_COMM_WORLD_LOCAL_RANK=9"),
            std::string::npos)
      << msg;
}

TEST_F(XrtBoardTest, SyntheticXclbinIsRefusedOutsideEmulation) {
  SKIP_WITHOUT_XRT();
  unsetenv("XCL_EMULATION_MODE");
  XrtBoard board;
  std::string msg = load_error(board, two_stage_mlp(0, 2));
  setenv("XCL_EMULATION_MODE", "noop", 1);
  EXPECT_NE(msg.find("has no bitstream section"), std::string::npos) << msg;
}

TEST_F(XrtBoardTest, FallsBackToTheEmulatorWithAWarning) {
  SKIP_WITHOUT_XRT();
  BoardRegistry registry;
  register_builtin_boards(registry);
  StageAssignment a = two_stage_mlp(1, 2);
  a.device = "42";
  EXPECT_THROW(make_loaded_board(registry, "xrt", a), BoardError);
  auto board = make_loaded_board(registry, "xrt", a, "emulator");
  EXPECT_EQ(board->backend(), "emulator");
  EXPECT_EQ(board->description().rfind("WARNING: xrt board unavailable (no XRT device with index "
                                       "42",
                                       0),
            0u)
      << board->description();
  EXPECT_NE(board->description().find("fell back to emulator: CPU emulator"), std::string::npos)
      << board->description();
  EXPECT_EQ(board->run(torch::randn({2, 512})).sizes().vec(), (std::vector<int64_t>{2, 10}));
  // A board that opens is returned as it is.
  a.device = "0";
  EXPECT_EQ(make_loaded_board(registry, "xrt", a, "emulator")->backend(), "xrt");
}

TEST_F(XrtBoardTest, PowerIsUnavailableOnTheNoopShim) {
  SKIP_WITHOUT_XRT();
  XrtBoardOptions options;
  options.power_sample_hz = 50;
  XrtBoard board(options);
  board.load(two_stage_mlp(0, 2));
  board.start_power_window();
  board.run(torch::randn({2, 64}));
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  EXPECT_FALSE(board.stop_power_window().has_value());
  EXPECT_FALSE(board.window_average_power_w().has_value());
}

TEST_F(XrtBoardTest, DevicesAndBandwidthOnTheNoopShim) {
  SKIP_WITHOUT_XRT();
  auto devices = list_xrt_devices();
  ASSERT_EQ(devices.size(), 4u);  // the noop default
  EXPECT_EQ(devices[2].index, 2u);
  EXPECT_TRUE(devices[0].error.empty()) << devices[0].error;
  EXPECT_FALSE(devices[0].power_w.has_value());
  auto bw = measure_xrt_bandwidth(0, {1u << 20, 4u << 20}, 3, xclbin_);
  ASSERT_EQ(bw.size(), 2u);
  EXPECT_EQ(bw[1].bytes, 4u << 20);
  EXPECT_GT(bw[0].h2d_gbps, 0);
  EXPECT_GT(bw[0].d2h_gbps, 0);
  EXPECT_THROW(measure_xrt_bandwidth(9, {1u << 20}, 3), BoardError);
  EXPECT_THROW(measure_xrt_bandwidth(0, {1u << 20}, 0), BoardError);
}

#endif  // QUILT_TEST_HAVE_XRT

}  // namespace
}  // namespace quilt::backends
