#pragma once
// Internal to backends/ (not an interface): the compiler of a CompiledStage (inference.h) from
// a graph of operations to the program of inference_program.h. inference_graph.cc lowers a
// TorchScript graph (a zoo module's traced forward, a TorchScript model's frozen stage) node by
// node by operation kind; inference_compiler.cc holds the program-level passes (residual-add
// fusion, in-place ops, register lifetimes) and the fallbacks; inference_lowering.cc lowers
// each op onto the program's instructions.

#include "backends/inference_program.h"

#include <torch/nn/modules/container/any.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace torch::jit {
struct Graph;
}

namespace quilt::backends::detail {

namespace nn = torch::nn;

// Raised while lowering what the fast path cannot express: a node falls back on its own, a
// graph that cannot be lowered at all makes its module (or stage) fall back as a whole.
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

// An eval BatchNorm: y = (x - mean) / sqrt(var + eps) * weight + bias (weight, bias may be
// undefined: not affine).
struct BatchNormParams {
  at::Tensor weight, bias, mean, var;
  double eps = 1e-5;
};

/// `f` with `bn` (may be null) folded in, in double.
FoldedConv fold(FoldedConv f, const BatchNormParams* bn);

/// Builds the program of one stage: each call emits the instructions of an op (or of a module,
/// through its traced graph) reading register `x` and returns the register of its result.
class Compiler {
 public:
  Compiler(const Shape& in_shape, bool force_fallback) : force_fallback_(force_fallback) {
    regs_.push_back(Reg{Layout::kDense, in_shape, false});
  }

  int input() const { return 0; }
  bool force_fallback() const { return force_fallback_; }
  std::vector<Instr>& instrs() { return instrs_; }
  std::vector<Reg>& regs() { return regs_; }
  std::vector<std::string>& fallbacks() { return fallbacks_; }

  // Compiles a module through the graph of its forward, traced on this register's shape and
  // lowered by operation (inference_graph.cc); where that fails, the module runs as one
  // fallback.
  int any(const nn::AnyModule& m, int x, const std::string& name);
  // Lowers a graph whose inputs are the registers `xs` (inference_graph.cc); returns the
  // registers of its outputs. Throws Unsupported where it cannot (control flow, ...).
  std::vector<int> graph(torch::jit::Graph& g, const std::vector<int>& xs,
                         const std::string& prefix, int64_t trace_batch);
  // Decides in-place ops and register lifetimes. `out` (the result) is converted to dense by
  // the caller, outside InferenceMode.
  int finish(int out);
  // Index of the instruction that reads each register last (instrs_.size() for `out`, which
  // outlives the program); a register lives as long as any view of it.
  std::vector<int> last_uses(int out) const;
  // Fuses residual adds into the conv of one operand (see the definition); returns the result
  // register, renamed if it was such an add.
  int fuse_residual_adds(int out);
  // x in the blocked layout / dense (x itself, or a conversion emitted once per register).
  int mkldnn(int x);
  int dense(int x);

  struct Checkpoint {
    size_t instrs, regs, fallbacks;
    std::map<int, int> mkldnn_of, dense_of;
  };
  Checkpoint checkpoint() const;
  void restore(const Checkpoint& cp);
  // The instruction that wrote register r (nullptr for the input).
  Instr* producer(int r);

  // One op each (inference_lowering.cc). Throw Unsupported for what the op cannot express.
  int eltwise(Code code, int x, const std::string& name);  // kRelu, kSilu, kHardswish
  // x * sigmoid(w2 silu(w1 mean_hw(x) + b1) + b2), w1 [mid, C], w2 [C, mid]; hard_gate: relu
  // and hardsigmoid in place of silu and sigmoid.
  int squeeze_excite(const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                     const at::Tensor& b2, bool hard_gate, int x, const std::string& name);
  // Weight [in, out/groups, kh, kw]; output_padding in FoldedConv::kernel's place.
  int conv_transpose(const FoldedConv& c, const std::vector<int64_t>& output_padding, int x,
                     const std::string& name);
  int concat(const std::vector<int>& xs, const std::string& name);
  int conv2d(FoldedConv f, int x, bool relu, const std::string& name);
  int add(int a, int b, bool relu, const std::string& name);
  int max_pool(const std::vector<int64_t>& k, const std::vector<int64_t>& s,
               const std::vector<int64_t>& pad, bool ceil_mode, int x, const std::string& name);
  int adaptive_avg_pool(const std::vector<int64_t>& size, int x, const std::string& name);
  // A view of x: per-sample elements [offset, offset + numel(shape)) as `shape`.
  int view(int x, int64_t offset, const Shape& shape, const std::string& name);
  int flatten(int x, const std::string& name);
  // Pack: the registers flattened per sample and concatenated (models::pack).
  int pack(const std::vector<int>& xs, const std::string& name);
  // weight_t: [in, out] (x W^T + b of torch's linear is x weight_t + b).
  int linear(const at::Tensor& weight_t, const at::Tensor& bias, int x, bool relu,
             const std::string& name);
  int batch_norm(const BatchNormParams& bn, int x, const std::string& name);
  // Sequence models, dense (inference_sequence.cc). a + b (b: register b, or the constant `c`
  // broadcast over the batch when b < 0).
  int dense_add(int a, int b, const at::Tensor& c, bool relu, const std::string& name);
  // Over the last dimension of x; weight and bias may be undefined.
  int layer_norm(const at::Tensor& weight, const at::Tensor& bias, double eps, int x,
                 const std::string& name);
  int gelu(bool tanh, int x, const std::string& name);
  // Self-attention of tokens x [T, E] (MultiheadAttention's fast path): qkv_w [3E, E],
  // proj_w [E, E].
  int attention(int64_t heads, const at::Tensor& qkv_w, const at::Tensor& qkv_b,
                const at::Tensor& proj_w, const at::Tensor& proj_b, int x, const std::string& name);
  // A LibTorch call on dense registers (a graph node, a module); the output shape is found by
  // running it once on zeros. `why` is the note fallbacks() gives.
  int fallback(std::shared_ptr<const FallbackCall> call, const std::vector<int>& xs,
               const std::string& name, const std::string& why);
  int module_fallback(const nn::AnyModule& m, int x, const std::string& name);

 private:
  static void onednn(Instr& in, const Shape& src, const Shape& dst);
  // mkldnn() and dense(): x in `layout`.
  int convert(int x, Layout layout);
  int emit(Instr in, Reg reg);

  bool force_fallback_;
  std::vector<Instr> instrs_;
  std::vector<Reg> regs_;
  std::vector<std::string> fallbacks_;
  std::map<int, int> mkldnn_of_, dense_of_;  // conversions already emitted, by source register
  std::string note_;                         // why the next module fallback happens
};

}  // namespace quilt::backends::detail
