#pragma once
// The seam between the pipeline and an accelerator: one Board per MPI rank runs one stage.

#include "backends/precision.h"

#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace quilt::models {
class QuiltModelImpl;
}

namespace quilt::backends {

/// What a board is asked to run: stage `stage` of `model` (whose weights it may copy or fold),
/// with batches of `batch_size` samples.
struct StageAssignment {
  StageAssignment(std::shared_ptr<models::QuiltModelImpl> model = nullptr, size_t stage = 0,
                  int64_t batch_size = 1)
      : model(std::move(model)), stage(stage), batch_size(batch_size) {}
  std::shared_ptr<models::QuiltModelImpl> model;
  size_t stage = 0;
  int64_t batch_size = 1;
  // Backend-specific settings from the experiment (boards.*); backends that do not need them
  // ignore them.
  std::string xclbin;  ///< xrt: the user's kernel binary (boards.xclbin)
  std::string device;  ///< xrt: device index or PCIe BDF; empty = the rank's node-local index
  std::string kernel;  ///< xrt: kernel name; empty = the convention, quilt_stage<stage>
  /// The number format the board computes in (boards.precision). Tensors between stages travel
  /// in its wire format (backends/precision.h); the first stage takes float32 inputs and the
  /// last returns float32 outputs.
  Precision precision = Precision::kFp32;
  /// int8: float32 inputs of this stage, one tensor per calibration batch (see
  /// stage_calibration_inputs in backends/inference.h).
  std::vector<at::Tensor> calibration;
};

/// An accelerator that runs one pipeline stage. Methods are called by the rank that owns the
/// board, from one thread.
class Board {
 public:
  virtual ~Board() = default;
  /// Backend name as experiment files spell it ("emulator", "null").
  virtual std::string backend() const = 0;
  /// Human-readable identity of the board (device name, threads, profile).
  virtual std::string description() const = 0;
  /// Prepares the stage: copies weights to the board, compiles the fast path. Blocks. Throws
  /// BoardError on a user-visible problem.
  virtual void load(const StageAssignment& assignment) = 0;
  /// Runs one batch. `input` is a contiguous host tensor [batch, in_shape...] that the board
  /// does not modify, float32 for the first stage and else in the wire format of the
  /// assignment's precision (float32, bfloat16, or int8's uint8 codes); returns a contiguous host
  /// tensor [batch, out_shape...], in the wire format, or float32 for the last stage. The caller
  /// may keep the returned tensor (it sends from its memory): the board does not write into it
  /// after run() returns, except where a board says its output is garbage (NullBoard). Blocks until
  /// the result is on the host.
  virtual at::Tensor run(const at::Tensor& input) = 0;

  /// How long the last run() spent moving the input to the board, computing, and moving the
  /// output back, when the board times these phases itself (a real board with its own memory);
  /// std::nullopt for boards that have no separate transfers (the emulator, the null board).
  struct PhaseTimes {
    double h2d_s = 0, compute_s = 0, d2h_s = 0;
  };
  virtual std::optional<PhaseTimes> last_phase_times() const { return std::nullopt; }

  /// Starts measuring the board's own energy (power read from the board's sensors) over a
  /// measured window. Boards without power sensors do nothing.
  virtual void start_energy_window() {}
  /// Ends the window started last: the joules the board consumed in it, or std::nullopt when the
  /// board gives no power reading (never 0 for "unknown").
  virtual std::optional<double> stop_energy_window() { return std::nullopt; }
};

/// A user-visible board problem (no device, wrong configuration).
class BoardError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace quilt::backends
