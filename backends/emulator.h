#pragma once
// The emulator board: runs its stage on the host CPU through the compiled fast path.

#include "backends/board.h"
#include "backends/inference.h"
#include "backends/torchscript_stage.h"

#include <memory>
#include <optional>
#include <string>

namespace quilt::backends {

/// Backend "emulator": runs the stage on the CPU with LibTorch's oneDNN kernels (compiled once by
/// CompiledStage: folded BatchNorm, blocked layout end to end, no autograd). Uses the threads
/// the caller set with at::set_num_threads (the harness sets one per rank).
class EmulatorBoard final : public Board {
 public:
  explicit EmulatorBoard(CompileOptions options = {}) : options_(options) {}
  std::string backend() const override { return "emulator"; }
  /// "CPU emulator: oneDNN fast path, 1 thread, <cpu model>" and, when some modules have no fast
  /// path, the ones that fall back to the slow torch path.
  std::string description() const override;
  /// Puts the model in eval mode, compiles the stage, and runs one warm-up batch of zeros so that
  /// oneDNN's kernels are generated before the first timed batch. A TorchScript model's stage
  /// (fp32 only) is frozen and lowered by the same compiler (torchscript_stage.h).
  void load(const StageAssignment& assignment) override;
  /// Runs one batch; the returned tensor is new on each call and owned by the caller.
  at::Tensor run(const at::Tensor& input) override;

  /// The compiled stage (after load()).
  const CompiledStage& stage() const;

 private:
  CompileOptions options_;
  std::optional<CompiledStage> stage_;
};

/// The host CPU's model name as /proc/cpuinfo tells it ("unknown CPU" if it does not).
std::string cpu_model_name();

}  // namespace quilt::backends
