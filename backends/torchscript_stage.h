#pragma once
// The emulator's input for TorchScript models (models/torchscript.h): a stage's segments as one
// graph, frozen, lowered by operation by the same compiler as the zoo's models (inference.h).

#include <cstddef>

namespace quilt::models {
class ModelImpl;
class QuiltModelImpl;
}  // namespace quilt::models

namespace quilt::backends {

/// Whether `model`'s base model is a TorchScript model (arch "torchscript").
bool is_torchscript(const models::QuiltModelImpl& model);

namespace detail {
class Compiler;

/// Emits onto `c` the units [begin, end) of `base`, a TorchScript model, reading register `x`
/// (the packed tensors crossing into unit `begin`): their graph (stage_module) frozen by
/// torch::jit::freeze (conv-BN folding among its passes) and lowered node by node
/// (Compiler::graph). A graph that cannot be lowered at all (control flow on values known at
/// run time only) runs as one fallback: frozen and passed through
/// torch::jit::optimize_for_inference (the plain frozen graph where that changes the outputs).
/// Returns the register of the packed tensors leaving unit end - 1.
int lower_torchscript_units(Compiler& c, models::ModelImpl& base, size_t begin, size_t end, int x);
}  // namespace detail

}  // namespace quilt::backends
