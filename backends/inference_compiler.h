#pragma once
// Internal to backends/ (not an interface): the compiler of a CompiledStage (inference.h) from
// a stage's modules to the program of inference_program.h. inference_compiler.cc walks the
// modules (sequences, blocks, fusion, register lifetimes); inference_lowering.cc lowers each
// op onto the program's instructions.

#include "backends/inference_program.h"

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace quilt::models {
class CutCodecImpl;
class SqueezeExcitationImpl;
class UNetUnitImpl;
}  // namespace quilt::models

namespace quilt::backends::detail {

// Raised while compiling a module the fast path cannot express; the nearest enclosing module
// that has an AnyModule runs through the fallback instead.
struct Unsupported {
  std::string why;
};

/// The type name of a module, for fallback notes.
std::string type_name(const nn::Module& m);

// A conv with BN folded into its weights, ready for at::mkldnn_convolution.
struct FoldedConv {
  at::Tensor weight;  // dense [out, in/groups, kh, kw]
  at::Tensor bias;    // dense [out] or undefined
  std::vector<int64_t> kernel, stride, padding, dilation;
  int64_t groups = 1;
  std::string name;
};

/// `conv` with `bn` (may be null) folded in, in double. Throws Unsupported.
FoldedConv fold(const nn::Conv2dImpl& conv, const nn::BatchNorm2dImpl* bn);

template <typename T>
const T* as(const std::shared_ptr<nn::Module>& m) {
  return dynamic_cast<const T*>(m.get());
}

/// Builds the program of one stage: each call emits the instructions of a module reading
/// register `x` and returns the register of its result.
class Compiler {
 public:
  Compiler(const Shape& in_shape, bool force_fallback) : force_fallback_(force_fallback) {
    regs_.push_back(Reg{Layout::kDense, in_shape, false});
  }

  int input() const { return 0; }
  std::vector<Instr>& instrs() { return instrs_; }
  std::vector<Reg>& regs() { return regs_; }
  std::vector<std::string>& fallbacks() { return fallbacks_; }

  // Compiles one module that can fall back as a whole.
  int any(const nn::AnyModule& m, int x, const std::string& name);
  // Compiles a list of modules run in order, fusing Conv2d + BatchNorm2d + ReLU.
  int sequence(const std::vector<nn::AnyModule>& mods, int x, const std::string& prefix);
  // Decides in-place ops and register lifetimes. `out` (the result) is converted to dense by
  // the caller, outside InferenceMode.
  int finish(int out);
  // Index of the instruction that reads each register last (instrs_.size() for `out`, which
  // outlives the program); a register lives as long as any view of it.
  std::vector<int> last_uses(int out) const;
  // Fuses residual adds into the conv before them (see the definition); returns the result
  // register, renamed if it was such an add.
  int fuse_residual_adds(int out);
  // x in the blocked layout / dense (x itself, or a conversion emitted once per register).
  int mkldnn(int x);
  int dense(int x);

 private:
  static void onednn(Instr& in, const Shape& src, const Shape& dst);
  // mkldnn() and dense(): x in `layout`.
  int convert(int x, Layout layout);

  struct Checkpoint {
    size_t instrs, regs, fallbacks;
    std::map<int, int> mkldnn_of, dense_of;
  };
  Checkpoint checkpoint() const;
  void restore(const Checkpoint& cp);
  int emit(Instr in, Reg reg);
  static bool is_relu(const std::shared_ptr<nn::Module>& m);

  // Structure (inference_compiler.cc).
  int module(const std::shared_ptr<nn::Module>& m, int x, const std::string& name);
  std::vector<int> unpack(int x, const std::vector<Shape>& shapes, const std::string& name);
  int pack(const std::vector<int>& xs, const std::string& name);
  int unet_unit(const models::UNetUnitImpl& u, int x, const std::string& name);
  int cut_codec(const models::CutCodecImpl& c, int x, const std::string& name);
  int seq(const nn::SequentialImpl& s, int x, const std::string& name);
  int shortcut(const nn::Sequential& downsample, int x, const std::string& name);

  // One op each (inference_lowering.cc).
  int eltwise(Code code, int x, const std::string& name);  // kRelu, kSilu
  int squeeze_excite(const models::SqueezeExcitationImpl& se, int x, const std::string& name);
  int conv_transpose(const nn::ConvTranspose2dImpl& c, int x, const std::string& name);
  int concat(const std::vector<int>& xs, const std::string& name);
  int conv2d(FoldedConv f, int x, bool relu, const std::string& name);
  int add(int a, int b, bool relu, const std::string& name);
  int max_pool(const nn::MaxPool2dImpl& p, int x, const std::string& name);
  int adaptive_avg_pool(const std::vector<int64_t>& size, int x, const std::string& name);
  int flatten(int64_t start, int64_t end, int x, const std::string& name);
  int linear(const nn::LinearImpl& l, int x, bool relu, const std::string& name);
  int batch_norm(const nn::BatchNorm2dImpl& bn, int x, const std::string& name);
  int fallback(const nn::AnyModule& m, int x, const std::string& name);

  bool force_fallback_;
  std::vector<Instr> instrs_;
  std::vector<Reg> regs_;
  std::vector<std::string> fallbacks_;
  std::map<int, int> mkldnn_of_, dense_of_;  // conversions already emitted, by source register
  std::string note_;                         // why the next fallback happens
};

}  // namespace quilt::backends::detail
