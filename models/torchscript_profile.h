#pragma once
// Per-operation accounting of a TorchScript model (models/torchscript.h): for each unit (segment
// between cuts), every operation of its frozen graph with the submodule it comes from, its output
// shapes, FLOPs, the bytes of the frozen weights it reads and the bytes it produces; optionally
// each operation's time, run alone by the TorchScript interpreter. Backs `quilt profile --file`
// and `quilt summary --file`.
//
// How the numbers are found (no shape inference: LibTorch 1.13 has none for most aten ops): each
// unit's graph runs on random inputs of batch 2 and of batch 3 with every intermediate value
// returned; a per-sample count is the batch-3 count minus the batch-2 count, so tensors without
// the batch dimension (weights reshaped at run time, a class token before expand) add nothing
// per sample. An `if` of forward whose condition the run decides (the fast-path checks of
// nn.MultiheadAttention, shape asserts) is replaced by the branch taken for these inputs, so the
// operations inside it (attention's projections and matmuls) are counted and shown; a loop stays
// one row. One instrumented run (batch 2) finds every such condition, at any depth. A unit
// without an `if` costs two runs (batches 2 and 3), one with `if`s three; TorchScriptModel
// pays two runs at batch 2 for each of its units with `if`s when it is built (resolved_macs).
//
// FLOPs of one operation per sample: 2 x MACs for aten::conv*/_convolution/conv_transpose*
// (output elements x weight elements per output channel), linear (output elements x in
// features), matmul/mm/bmm/addmm/baddbmm (output elements x the reduced length),
// _native_multi_head_attention (MultiheadAttention's fast path: the q, k, v and output
// projections, Q K^T and A V; its softmax 5 per score); 2 per output
// element for batch_norm and instance_norm (scale, shift: the statistics are frozen), 5 for
// layer_norm and group_norm (mean, variance, normalise, scale, shift), 5 for softmax and
// log_softmax; output elements x kernel area for max/avg pooling, input elements for adaptive
// pooling and the reductions (mean, sum, amax, ...); 1 per output element for elementwise
// arithmetic and activations (add, mul, relu, gelu, hardswish, ...); 0 for data movement (view,
// reshape, permute, cat, slice, expand, contiguous, dropout in eval) and scalar arithmetic. The
// cost model uses only the MACs (models/summary.h's convention); `macs` keeps them apart.

#include "models/model.h"
#include "models/summary.h"

#include <torch/csrc/jit/api/module.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace quilt::models {

class TorchScriptModelImpl;

/// One top-level operation of a unit's frozen graph (an `if` resolved as described above).
/// Counts are per sample.
struct TorchScriptNodeProfile {
  size_t unit = 0;                   ///< index of the unit that runs it
  std::string name;                  ///< submodule path it comes from ("features.0.1");
                                     ///< "(forward)" for the model's own forward
  std::string op;                    ///< node kind ("aten::conv2d", "prim::Loop")
  Shape in_shape;                    ///< per-sample shape of its first tensor input (empty: none)
  Shape out_shape;                   ///< per-sample shape of its first tensor output (empty: none);
                                     ///< a tensor without the batch dimension keeps its full shape
  int64_t macs = 0;                  ///< multiply-accumulates (conv, linear, matmul family)
  int64_t flops = 0;                 ///< 2 x macs + the elementwise count above
  int64_t params = 0;                ///< elements of the frozen weights (constant tensors) it reads
  int64_t param_bytes = 0;           ///< their bytes
  int64_t out_bytes = 0;             ///< bytes per sample of its tensor outputs
  std::optional<double> measured_s;  ///< per batch, when measured (see measure_torchscript_nodes)
};

/// One unit with its operations. Counts are per sample; each is the sum over `nodes` (params
/// and param_bytes count a weight read by several operations of the unit once: they are the
/// frozen graph's distinct constants, and freezing pools equal ones, so an untrained model's
/// batch norms, all ones and zeros, show fewer parameters than the module declares).
struct TorchScriptUnitProfile {
  std::string name;
  Shape in_shape, out_shape;  ///< packed per-sample shapes (model.h's pack)
  int64_t macs = 0, flops = 0, params = 0, param_bytes = 0;
  int64_t out_bytes = 0;  ///< float32 bytes per sample of what the unit hands on
  std::vector<TorchScriptNodeProfile> nodes;
};

/// How measure_torchscript_nodes() times.
struct NodeTimingOptions {
  int64_t batch = 1;     ///< samples per timed run, >= 1
  int64_t warmup = 3;    ///< untimed runs per operation first, >= 0
  int64_t repeats = 20;  ///< timed runs per operation (median kept), >= 1
  int64_t threads = 1;   ///< at::set_num_threads while timing (restored), >= 1
  uint64_t seed = 0;     ///< of the random unit inputs
};

/// Every unit of `model` with its operations, in execution order. Runs each unit's graph a few
/// times on small random batches (see the top of this file). Throws ModelError naming the file
/// if a unit rejects a batch of 3 (a model written for one batch size).
std::vector<TorchScriptUnitProfile> profile_torchscript(const TorchScriptModelImpl& model);

/// The summary of `model` from its profile `units` (profile_torchscript(model)): each unit's
/// name, shapes, MACs, FLOPs, parameters and output bytes as the profile counts them (attention
/// inside an `if` included, which models::summarize cannot see: a frozen graph has no LibTorch
/// modules), their totals, and the model's arch, input, classes and cuts.
ModelSummary summarize_torchscript(const TorchScriptModelImpl& model,
                                   const std::vector<TorchScriptUnitProfile>& units);

/// MACs per sample of a segment module (one graph of a TorchScript model, forward taking one
/// tensor per in_shapes entry) counting the operations inside the `if`s its inputs decide (as
/// profile_torchscript does): `top_level_macs` when its graph has no top-level `if`, else found
/// by running it twice on a random batch of 2 (own random generator; the global one is
/// not touched); `top_level_macs` too when the segment fails on that batch (the probe of zeros
/// accepted it: an assert on the values). `path` names the file in messages. Does not throw for
/// a model's refusal.
int64_t resolved_macs(const torch::jit::Module& segment, const std::vector<Shape>& in_shapes,
                      const std::string& path, int64_t top_level_macs);

/// Sets measured_s of every operation in `units` (from profile_torchscript(model)): each unit's
/// graph runs once on a random batch of options.batch to capture every operation's inputs, then
/// each operation is run alone, as a one-node TorchScript graph by the interpreter (executor
/// optimisation off) on those inputs: warm-up, then the median of the timed runs (wall clock;
/// the CPU runs synchronously). In-place operations get fresh copies of the inputs they modify
/// before each run (the copy is not timed). The per-call interpreter overhead (a few us) is
/// included, so the operations' sum exceeds the unit's own time for small operations; an
/// operation that takes or makes something other than tensors and plain values (none in the
/// fixtures) keeps measured_s empty. Blocks.
void measure_torchscript_nodes(const TorchScriptModelImpl& model, const NodeTimingOptions& options,
                               std::vector<TorchScriptUnitProfile>& units);

}  // namespace quilt::models
