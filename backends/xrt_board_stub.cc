// The XRT backend in a build without XRT: every entry point says so (QUILT_XRT=OFF, or AUTO
// without libxrt-dev). xrt_board.cc replaces this file when XRT is found.

#include "backends/xrt_board.h"

namespace quilt::backends {

namespace {

[[noreturn]] void not_built() {
  throw BoardError(
      "the XRT backend is not in this build: install libxrt-dev and uuid-dev (or Xilinx's XRT "
      "under /opt/xilinx/xrt) and reconfigure with -DQUILT_XRT=ON");
}

}  // namespace

struct XrtBoard::Impl {};

bool xrt_built() { return false; }
std::string xrt_version() { return "not built"; }
unsigned xrt_device_count() { not_built(); }
void check_xrt_stage(const std::string&, const std::string&, const std::string&, size_t) {
  not_built();
}
std::vector<XrtDeviceInfo> list_xrt_devices() { not_built(); }
std::vector<XrtBandwidth> measure_xrt_bandwidth(unsigned, const std::vector<size_t>&, int,
                                                const std::string&, int) {
  not_built();
}

XrtBoard::XrtBoard(XrtBoardOptions options) : options_(options) {}
XrtBoard::~XrtBoard() = default;
std::string XrtBoard::description() const { return "XRT board (backend not built)"; }
void XrtBoard::load(const StageAssignment&) { not_built(); }
at::Tensor XrtBoard::run(const at::Tensor&) { not_built(); }
double XrtBoard::last_h2d_s() const { return 0; }
double XrtBoard::last_kernel_s() const { return 0; }
double XrtBoard::last_d2h_s() const { return 0; }
unsigned XrtBoard::device_index() const { return 0; }
void XrtBoard::start_power_window() { not_built(); }
std::optional<double> XrtBoard::stop_power_window() { return std::nullopt; }
std::optional<double> XrtBoard::window_average_power_w() const { return std::nullopt; }

}  // namespace quilt::backends
