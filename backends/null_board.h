#pragma once
// The null board: computes nothing, so that a run measures the harness's own overhead.

#include "backends/board.h"

#include <string>

namespace quilt::backends {

/// Backend "null": run() returns at once a tensor of the stage's output shape, allocated in
/// load(). Its content is garbage (zeros, and whatever a caller wrote into it): never check
/// outputs of a null run. The same tensor is returned by every call.
class NullBoard final : public Board {
 public:
  std::string backend() const override { return "null"; }
  std::string description() const override;
  /// Allocates the output [batch_size, out_shape...] of the stage. Throws BoardError if the
  /// stage does not exist.
  void load(const StageAssignment& assignment) override;
  /// Ignores `input`; returns the preallocated output.
  at::Tensor run(const at::Tensor& input) override;

 private:
  at::Tensor output_;
};

}  // namespace quilt::backends
