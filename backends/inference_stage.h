#pragma once
// Internal to backends/ (not an interface): the state of a CompiledStage (inference.h), its
// compiled program and what one run needs. inference.cc compiles it, inference_exec.cc runs it.

#include "backends/allocation_cache.h"
#include "backends/inference.h"
#include "backends/inference_program.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quilt::backends {

struct CompiledStage::Impl {
  using Instr = detail::Instr;
  using QParams = detail::QParams;
  using Shape = detail::Shape;

  std::vector<Instr> program;
  int num_regs = 0;
  int out_reg = 0;
  Shape in_shape, out_shape;
  std::vector<std::string> fallbacks;
  CompileOptions options;
  std::unique_ptr<AllocationCache> cache;
  std::vector<at::Tensor> regs;  // used during run() only
  // bf16 / int8: the dtype of the stage's output when it comes out of a to_dense (the wire
  // format: bf16, or int8's u8 / s8 codes), and whether a wire input goes to float32 first
  // (something other than a to_mkldnn reads it).
  at::ScalarType out_dense_dtype = at::kFloat;
  bool input_to_float = false;
  // int8: the codes each register holds as the program runs (passed through by ops that keep
  // their input's codes: ReLU, pools, reorders); the quantization of the wire input / output
  // (from the ranges of registers 0 and out_reg); and the codes the output comes out in.
  std::vector<QParams> q;
  QParams q_in, q_out, q_out_codes;

  at::ScalarType wire_dtype() const {
    switch (options.precision) {
      case Precision::kBf16:
        return at::kBFloat16;
      case Precision::kInt8:
        return at::kByte;
      case Precision::kFp32:
        break;
    }
    return at::kFloat;
  }
  at::ScalarType input_dtype() const { return options.wire_input ? wire_dtype() : at::kFloat; }
  at::ScalarType output_dtype() const { return options.wire_output ? wire_dtype() : at::kFloat; }

  static int64_t batch_of(const Instr& in, const at::Tensor& blocked) {
    return blocked.numel() / models::numel(in.src_shape);
  }

  /// Runs one instruction on the registers `regs`, then frees the registers whose last use it
  /// is (inference_exec.cc).
  void exec(const Instr& in);
  /// Runs the program on `input`, calling `timer(i, run_instruction_i)` for each instruction i
  /// (inference.cc).
  template <typename Timer>
  at::Tensor execute(const at::Tensor& input, Timer&& timer);
  // The stage input as register 0: int8 wire codes as the program's codes (s8 travels as
  // uint8 + 128), or float32 where something other than a to_mkldnn reads the input.
  at::Tensor prepare_input(const at::Tensor& input) const;
  // int8: the stage's result as uint8 wire codes in q_out, the quantization the next stage
  // derives for its input from the same calibration.
  at::Tensor wire_codes(const at::Tensor& out) const;
  // int8: runs the float program on the calibration batches and records the range of every
  // register, then lowers the same program to int8: each register's codes (u8 or s8, scale),
  // each oneDNN op's data types and scales, conv weights per output channel (prim_for).
  void calibrate_int8();

  // exec() of each Code: `a` is register in.a (an undefined tensor where in.a < 0), `dst`
  // register in.dst (inference_exec.cc).
  using Step = void (Impl::*)(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_to_mkldnn(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_to_dense(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_conv(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_add(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_relu(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_pool(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_flatten(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_linear(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_batch_norm(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_fallback(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_unpack(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_pack(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_cat(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_silu(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_squeeze_excite(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_conv_transpose(const Instr& in, at::Tensor& a, at::Tensor& dst);
  // inference_sequence.cc
  void exec_dense_add(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_layer_norm(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_gelu(const Instr& in, at::Tensor& a, at::Tensor& dst);
  void exec_attention(const Instr& in, at::Tensor& a, at::Tensor& dst);
};

}  // namespace quilt::backends
