#include "backends/null_board.h"

#include "models/model.h"
#include "models/quilt_model.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace quilt::backends {

std::string NullBoard::description() const {
  return "null board: no compute, output is garbage (measures harness overhead)";
}

void NullBoard::load(const StageAssignment& assignment) {
  if (!assignment.model) throw BoardError("null board: the stage assignment has no model");
  const auto& model = *assignment.model;
  if (assignment.stage >= model.num_stages())
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s)",
                                 assignment.stage, model.num_stages()));
  if (assignment.batch_size < 1)
    throw BoardError(fmt::format("batch size {} must be >= 1", assignment.batch_size));
  std::vector<int64_t> shape = {assignment.batch_size};
  const auto& out = model.stage(assignment.stage).out_shape;
  shape.insert(shape.end(), out.begin(), out.end());
  // The wire format of the precision: the bytes a real board of it would send.
  const bool last = assignment.stage + 1 == model.num_stages();
  at::ScalarType dtype = at::kFloat;
  if (!last && assignment.precision == Precision::kBf16) dtype = at::kBFloat16;
  if (!last && assignment.precision == Precision::kInt8) dtype = at::kByte;
  output_ = at::zeros(shape, dtype);
}

at::Tensor NullBoard::run(const at::Tensor& input) {
  TORCH_CHECK(output_.defined(), "NullBoard::run before load");
  return output_;
}

}  // namespace quilt::backends
