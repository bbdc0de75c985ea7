#pragma once
// The `quilt profile` and `quilt calibrate` commands: per-unit FLOPs, parameters and bytes of a
// zoo model (shape inference), optionally its per-unit forward times on the emulator fast path,
// and a board profile fitted to those times (partitioners::calibrate). Single process, no MPI.

#include "models/model.h"

#include <string>
#include <vector>

namespace quilt::harness {

/// The TorchScript model of file `path` for per-sample input `input` with `cuts` beyond its
/// default ones (models::TorchScriptModel), for the commands that take `--file PATH --input
/// C,H,W [--cut NAME]`. Throws models::ModelError whose message names the option (--file,
/// --input, --cut) and what is valid: a missing file, a file that is not TorchScript, an input
/// the model rejects, an unknown or invalid cut.
models::Model load_torchscript_file(const std::string& path, const models::Shape& input,
                                    const std::vector<std::string>& cuts);

/// `quilt profile MODEL|--file PATH [--input C,H,W] [--classes N] [--cut NAME] [--measure]
/// [--units-only] [--batch N] [--repeats N] [--warmup N] [--threads N]
/// [--output FILE.csv|FILE.json]`: prints one row per
/// unit (name, in/out shape, FLOPs, params, out bytes; with --measure the median forward time per
/// batch and per sample, measured by backends::measure_unit_times: each unit compiled alone on
/// the fast path, warm-up, median of --repeats runs at --threads threads), and under each unit
/// one indented row per leaf layer (qualified state_dict name, type, shapes, FLOPs, params,
/// bytes from models::summarize_layers; with --measure the median time of the layer's own
/// forward on a random input of its shape, run eagerly in InferenceMode, same warm-up, repeats
/// and threads). --units-only leaves the layer rows out. Writes the rows to --output: CSV with
/// columns unit,in_shape,out_shape,flops,params,out_bytes,cut_after,measured_s,
/// measured_s_per_sample,layer,type (unit rows have an empty layer), or JSON with a "layers"
/// array per unit.
/// With --file (a TorchScript file; --input required, --cut adds non-default cuts), the rows
/// under each unit are the operations of its frozen graph (models::profile_torchscript: the
/// submodule path, `type` = the aten op, FLOPs with elementwise/norm/pool counts), units are
/// timed as the emulator runs them (frozen, compiled by backends::CompiledStage) and operations one
/// by one in the TorchScript interpreter (models::measure_torchscript_nodes); CSV and JSON add macs
/// and param_bytes. argv[0] is the program, argv[1] "profile". Returns 0, or 2 after printing the
/// error to stderr for a user mistake (unknown model, bad shape or option, unwritable output).
/// Blocks.
int cmd_profile(int argc, char** argv);

/// `quilt calibrate MODEL --profile NAME|FILE --output FILE.yaml [--input C,H,W] [--classes N]
/// [--batch N] [--repeats N] [--warmup N] [--threads N]`: measures every unit (as `profile
/// --measure`), fits time = flops / (peak_flops * efficiency) + overhead_s over the units with
/// partitioners::calibrate (peak_flops kept from the profile), writes the profile with the
/// fitted efficiency and overhead and a `calibration` record, and prints the fit's mean relative
/// error and R^2. Returns 0, or 2 after printing the error for a user mistake (unknown model or
/// profile, malformed profile, fewer than 2 units to fit, a fit that is not physical).
int cmd_calibrate(int argc, char** argv);

}  // namespace quilt::harness
