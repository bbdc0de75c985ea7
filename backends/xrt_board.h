#pragma once
// The XRT board: a Xilinx Alveo accelerator (U200 and kin) driven through XRT's native C++ API
// (xrt::device, xrt::xclbin, xrt::kernel, xrt::bo, xrt::run). The stage's compute is the user's
// xclbin; Quilt moves the tensors (real H2D/D2H DMA), launches the kernel and reads board power.
//
// This header does not include XRT: it compiles whether or not the backend was built
// (xrt_built() tells). Without XRT every function that needs a device throws BoardError saying
// the backend is not built.
//
// Kernel convention (what a user's xclbin must provide for stage k):
//   kernel `quilt_stage<k>` (or StageAssignment::kernel), arguments in this order:
//     0 `in`    global float*: the stage input, [batch, in_shape...] float32, C order
//     1 `out`   global float*: the stage output, [batch, out_shape...] float32, C order
//     2 `batch` scalar uint:   the number of samples in this invocation
//   Under boards.precision bf16 / int8 the tensors between stages are in its wire format instead
//   of float32 (bf16 values; uint8 codes whose scale and zero point calibration fixed): `in` of
//   stages k > 0 and `out` of stages k < K-1; the model's input and output stay float32.
// Buffers are allocated in the bank that the xclbin connects each argument to
// (kernel.group_id(arg)).
//
// Environment: XRT loads its device shim from $XILINX_XRT/lib. When XILINX_XRT is unset (Debian's
// layout, where the shims live in /usr/lib/<multiarch>), Quilt points it, before the first XRT
// call, at a private directory whose `lib` links to the directory XRT's library was found in
// (prepare_xrt_environment()). XCL_EMULATION_MODE=noop selects XRT's noop shim: the whole API
// runs without a board, computing nothing (for tests; its numbers mean nothing).

#include "backends/board.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace quilt::backends {

/// True when this build has the XRT backend (XRT headers and library were found by CMake).
bool xrt_built();

/// XRT's version as its headers say ("2.13.0"), or "not built".
std::string xrt_version();

/// Sets XILINX_XRT when it is unset so that XRT finds its shims (see the file comment); leaves
/// a set value alone. Idempotent and cheap; every XRT entry point below calls it first. Returns
/// a line saying what XILINX_XRT is and who set it. Throws BoardError if it cannot make the
/// private directory.
std::string prepare_xrt_environment();

/// True when XCL_EMULATION_MODE=noop (XRT's noop shim: no board, nothing computed).
bool xrt_noop_active();

/// The kernel name of stage `stage` by the convention above: "quilt_stage<stage>".
std::string xrt_stage_kernel_name(size_t stage);

/// The device index a rank uses when the experiment names none: the node-local rank
/// (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID), else the world rank
/// (OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID), else 0. `source` (if not null) gets the
/// variable it came from ("OMPI_COMM_WORLD_LOCAL_RANK=1", or "default").
unsigned xrt_default_device_index(std::string* source = nullptr);

/// Board power from the JSON of xrt::info::device::electrical: `power_consumption_watts` when it
/// is a number, else the sum of voltage x current over the rails that have both present;
/// std::nullopt when neither is given (never 0 for "unknown").
std::optional<double> parse_electrical_power_w(const std::string& json);

/// One XRT device as `quilt boards` lists it. Fields XRT cannot tell are "unknown".
struct XrtDeviceInfo {
  unsigned index = 0;
  std::string name;               ///< VBNV, e.g. xilinx_u200_gen3x16_xdma_base_2
  std::string bdf;                ///< PCIe address, e.g. 0000:65:00.1
  std::string xclbin_uuid;        ///< the xclbin loaded on it; "none" when all zeros
  std::optional<double> power_w;  ///< board power now; empty when the board does not give it
  std::string error;              ///< why the device could not be opened; empty when it was
};

/// Number of XRT devices on this host. Under the noop shim (which opens any index) this is
/// QUILT_XRT_NOOP_DEVICES, default 4. Throws BoardError when XRT is not built or fails.
unsigned xrt_device_count();

/// Every device with what XRT can tell about it. Blocks (opens each device). Throws BoardError
/// when XRT is not built.
std::vector<XrtDeviceInfo> list_xrt_devices();

/// Host<->board bandwidth of one transfer size: median of timed xrt::bo::sync calls.
struct XrtBandwidth {
  size_t bytes = 0;
  double h2d_gbps = 0;  ///< 1e9 bytes per second, host -> board
  double d2h_gbps = 0;  ///< board -> host
  int repeats = 0;
};

/// Measures DMA bandwidth of device `index` like `xbutil validate`'s DMA test: one page-aligned
/// buffer per size in memory bank `bank`, filled once, then `repeats` timed syncs each way (after
/// one untimed warm-up sync), the median reported. `xclbin` (optional) is loaded first: a board
/// needs one loaded to know its memory banks. Blocks. Throws BoardError.
std::vector<XrtBandwidth> measure_xrt_bandwidth(unsigned index, const std::vector<size_t>& sizes,
                                                int repeats, const std::string& xclbin = "",
                                                int bank = 0);

/// Checks, without loading anything onto the board, what an XrtBoard for stage `stage` would
/// need: the device `device` (index, BDF, or empty: the rank's node-local index) exists, the
/// xclbin file exists and holds the stage's kernel (`kernel`, or quilt_stage<stage> when empty).
/// The harness calls it on every rank before the first run, so such mistakes are bad input
/// (exit 2) rather than failed runs. Blocks (opens the device). Throws BoardError saying what is
/// missing and what exists.
void check_xrt_stage(const std::string& device, const std::string& xclbin,
                     const std::string& kernel, size_t stage);

/// Settings of an XrtBoard.
struct XrtBoardOptions {
  double power_sample_hz = 10;        ///< electrical sampling rate inside a power window
  int64_t kernel_timeout_ms = 60000;  ///< a kernel run longer than this fails the batch
};

/// Backend "xrt": one Alveo board per rank. load() opens the device (StageAssignment::device: an
/// index, a PCIe BDF, or empty for xrt_default_device_index()), loads StageAssignment::xclbin,
/// finds the stage's kernel (convention above) and allocates its input and output buffers.
/// run() per batch: copy into the input buffer and sync to the board (H2D), launch and wait for
/// the kernel (state must be COMPLETED), sync the output back and copy it out (D2H). Every XRT
/// failure becomes a BoardError saying what was being done and what to check.
class XrtBoard final : public Board {
 public:
  explicit XrtBoard(XrtBoardOptions options = {});
  ~XrtBoard() override;
  std::string backend() const override { return "xrt"; }
  /// "Alveo <name> (device N, BDF ..., xclbin FILE uuid ..., kernel K)", plus "noop shim" when
  /// the noop shim is active; before load(), what it will open.
  std::string description() const override;
  /// Opens the device, loads the xclbin, finds the kernel, allocates the buffers. Blocks. Throws
  /// BoardError (no such device, missing xclbin, kernel not in the xclbin, wrong arguments).
  void load(const StageAssignment& assignment) override;
  /// Runs one batch on the board; `input` must be [batch_size, in_shape...] float32. Returns a
  /// new tensor owned by the caller. Throws BoardError when a transfer or the kernel fails.
  at::Tensor run(const at::Tensor& input) override;

  /// Seconds of the last run(): copy + sync to the board, kernel launch to completion, sync +
  /// copy back. 0 before the first run.
  double last_h2d_s() const;
  double last_kernel_s() const;
  double last_d2h_s() const;

  /// The device index opened by load().
  unsigned device_index() const;

  /// Board::last_phase_times: the H2D, kernel and D2H times of the last run(), so results
  /// record the board's compute and transfers separately.
  std::optional<PhaseTimes> last_phase_times() const override {
    return PhaseTimes{last_h2d_s(), last_kernel_s(), last_d2h_s()};
  }
  /// Board::start_energy_window / stop_energy_window: the power sampler below.
  void start_energy_window() override { start_power_window(); }
  std::optional<double> stop_energy_window() override { return stop_power_window(); }

  /// Starts sampling board power in the background (XrtBoardOptions::power_sample_hz). Call
  /// after load(), from the owning thread; a window already open is restarted.
  void start_power_window();
  /// Stops sampling; returns the energy of the window in joules (power integrated over time),
  /// or std::nullopt when the board gives no power reading ("unavailable", never 0).
  std::optional<double> stop_power_window();
  /// Mean power of the last closed window, W; std::nullopt when unavailable.
  std::optional<double> window_average_power_w() const;

  struct Impl;

 private:
  XrtBoardOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quilt::backends
