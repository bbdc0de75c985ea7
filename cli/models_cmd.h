#pragma once
// The model-inspection commands `quilt models` and `quilt summary`: the zoo and its cut points, a
// TorchScript file's cuts, and per-unit shapes, FLOPs, parameters and the bytes that cross each
// cut with and without the autoencoder. Single process, no MPI.

namespace quilt::harness {

/// `quilt models [--file PATH --input C,H,W]`: each zoo model's input, classes and cut points
/// with what crosses them; with --file every cut of the TorchScript model (default ones marked)
/// and why the other submodule ends cannot be cuts. Returns 0, or 2 for a usage mistake.
/// Throws models::ModelError for a file that is not TorchScript or an input it rejects.
int cmd_models(int argc, char** argv);

/// `quilt summary ARCH|--file PATH [--input C,H,W] [--classes N] [--width W] [--rate R]
/// [--cut NAME]`: per-unit shapes, FLOPs and parameters, then per cut the bytes per sample with
/// and without the autoencoder at rate R and the effective rate. Returns 0, or 2 for a usage
/// mistake; throws models::ModelError as cmd_models does.
int cmd_summary(int argc, char** argv);

}  // namespace quilt::harness
