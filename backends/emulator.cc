#include "backends/emulator.h"

#include "models/model.h"
#include "models/quilt_model.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <fstream>

namespace quilt::backends {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto begin = line.find_first_not_of(" \t", colon + 1);
        if (begin != std::string::npos) return line.substr(begin);
      }
    }
  }
  return "unknown CPU";
}

std::string EmulatorBoard::description() const {
  const int threads = at::get_num_threads();
  std::string d = fmt::format("CPU emulator: {}, {} thread{}, {}",
                              options_.force_fallback ? "torch reference path" : "oneDNN fast path",
                              threads, threads == 1 ? "" : "s", cpu_model_name());
  if (options_.precision != Precision::kFp32)
    d += fmt::format(", {}{}", precision_name(options_.precision),
                     options_.precision == Precision::kInt8 ? " (oneDNN int8, static quantization)"
                                                            : " (oneDNN bf16)");
  if (stage_ && !stage_->fallbacks().empty() && !options_.force_fallback)
    d += fmt::format("; slow torch fallback for: {}", fmt::join(stage_->fallbacks(), ", "));
  return d;
}

void EmulatorBoard::load(const StageAssignment& assignment) {
  if (!assignment.model) throw BoardError("emulator board: the stage assignment has no model");
  assignment.model->eval();
  stage_.reset();
  options_.precision = assignment.precision;
  options_.wire_input = assignment.stage > 0;
  options_.wire_output = assignment.stage + 1 < assignment.model->num_stages();
  CompileOptions options = options_;
  options.calibration = assignment.calibration;
  std::vector<int64_t> shape = {assignment.batch_size};
  if (is_torchscript(*assignment.model) && options_.precision != Precision::kFp32)
    throw BoardError(fmt::format(
        "emulator board: a TorchScript model runs in fp32 only (boards.precision is {}); "
        "bf16 and int8 are for the zoo's models",
        precision_name(options_.precision)));
  stage_.emplace(*assignment.model, assignment.stage, assignment.batch_size, options);
  shape.insert(shape.end(), stage_->in_shape().begin(), stage_->in_shape().end());
  stage_->run(at::zeros(shape, stage_->input_dtype()));
  // A whole TorchScript graph in the fallback: its profiling executor optimises on the second.
  stage_->run(at::zeros(shape, stage_->input_dtype()));
}

at::Tensor EmulatorBoard::run(const at::Tensor& input) {
  TORCH_CHECK(stage_.has_value(), "EmulatorBoard::run before load");
  return stage_->run(input);
}

const CompiledStage& EmulatorBoard::stage() const {
  TORCH_CHECK(stage_.has_value(), "EmulatorBoard::stage before load");
  return *stage_;
}

}  // namespace quilt::backends
