#pragma once
// Internal to backends/ (not an interface): the input of the stage compiler is a graph of
// operations (torch::jit::Graph) whatever the model: a zoo module's forward traced in C++ (its
// parameters become constants), or a TorchScript model's stage frozen. Compiler::graph()
// (inference_graph.cc) lowers it node by node by operation kind.

#include "backends/inference_compiler.h"

#include <cstdint>
#include <memory>

namespace quilt::backends::detail {

/// A module's forward as a graph: traced at batch size `batch`, on zeros.
struct TracedGraph {
  std::shared_ptr<torch::jit::Graph> graph;
  int64_t batch = 0;
};

/// Traces `m`'s forward in eval mode (without autograd) on zeros [batch, shape...]: its
/// parameters and buffers become constants of the graph (shared, not copied). Throws
/// Unsupported if the module cannot be traced.
TracedGraph trace_module(const nn::AnyModule& m, const Shape& shape);

}  // namespace quilt::backends::detail
