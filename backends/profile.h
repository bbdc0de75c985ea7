#pragma once
// Board profiles: what a board is to the cost model (partitioners::BoardProfile: peak FLOP/s,
// efficiency, per-invocation overhead, host<->board and MPI links) plus optional power and energy
// figures, stored one board per YAML file (backends/profiles/*.yaml; keys under
// parse_board_profile). Built-in profiles (`cpu`, `alveo-u200`) are compiled in from that folder.
// Also here: per-unit forward times measured on the emulator's fast path, the data that
// `quilt calibrate` fits a profile to.
//
// Only this file's library (quilt::board_profile) parses YAML; the Board implementations do not.

#include "models/model.h"
#include "partitioners/cost_model.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::backends {

/// A user's mistake in a board profile: unknown name, missing file, malformed YAML, unknown key,
/// wrong type or out-of-range value. what() is "FILE:LINE: `KEY`: message" (LINE 1-based, left
/// out when unknown; KEY left out when the whole file is at fault). The CLI exits 2 on it.
class ProfileError : public std::runtime_error {
 public:
  ProfileError(std::string file, int line, std::string key, const std::string& message);
  const std::string& file() const { return file_; }
  /// 1-based line, 0 when unknown.
  int line() const { return line_; }
  /// The key at fault ("peak_flops", "calibration.r_squared"); empty for the whole file.
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  int line_ = 0;
  std::string key_;
};

/// How a profile's efficiency and overhead were fitted (`quilt calibrate`), for provenance.
struct CalibrationInfo {
  std::string model;               ///< model the units came from ("resnet50")
  std::string input;               ///< its input shape ("3x224x224")
  int64_t batch = 1;               ///< samples per timed invocation
  int64_t threads = 1;             ///< intra-op threads while measuring
  int64_t repeats = 1;             ///< timed runs per unit (median taken)
  int64_t samples = 0;             ///< points of the fit (units)
  double mean_relative_error = 0;  ///< of the fit over its points
  double r_squared = 0;            ///< of the fit
  std::string host;                ///< CPU the times were measured on
};

/// One board profile file. `board` is what the cost model takes; the optional figures are for
/// energy models (not yet used by partitioners).
struct BoardProfileFile {
  partitioners::BoardProfile board;
  std::string description;                       ///< free text: what it is, where numbers come from
  std::optional<double> power_idle_w;            ///< board power when idle, W, >= 0
  std::optional<double> power_busy_w;            ///< board power when computing, W, >= idle
  std::optional<double> link_energy_j_per_byte;  ///< host<->board transfer energy, J/byte, >= 0
  std::optional<CalibrationInfo> calibration;    ///< set by quilt calibrate
  /// The number format the board computes in (fp32 | bf16 | int8); empty = not stated (the
  /// harness takes fp32). An xrt board runs only in its profile's precision.
  std::string precision;
  std::string source;  ///< where it was read from: a path, or "built-in:cpu"; empty when built
};

/// Names of the built-in profiles, sorted ("alveo-u200", "cpu").
std::vector<std::string> builtin_board_profiles();

/// Folders searched for `<name>.yaml` when a profile name is neither built in nor a file: each
/// of $QUILT_PROFILE_PATH (colon-separated), then <prefix>/share/quilt/profiles of an installed
/// quilt (found from /proc/self/exe). Only existing folders of the latter are listed.
std::vector<std::string> board_profile_dirs();

/// A built-in profile by name, else a profile file by path, else `<name>.yaml` in
/// board_profile_dirs(). A name that is none of these throws ProfileError listing the
/// built-ins and the folders. Parses strictly (see parse_board_profile). Blocks on file I/O.
BoardProfileFile load_board_profile(const std::string& name_or_path);

/// Parses one profile from YAML `text`; `source` names it in errors and in the result. Keys (all
/// at the top level unless noted): name (string, required), description (string), peak_flops
/// (FLOP/s, finite, > 0, required), efficiency ((0, 1], default 1), overhead_s (>= 0, default 0),
/// h2d_gbps / d2h_gbps (> 0, .inf = free; defaults 9.2 / 11.7), link_latency_s (>= 0), mpi_gbps
/// (> 0, default 12.5), mpi_latency_s (>= 0), power_idle_w, power_busy_w (>= 0, busy >= idle),
/// link_energy_j_per_byte (>= 0), precision (fp32 | bf16 | int8), calibration (a map: model, input,
/// host (strings), batch, threads, repeats, samples (integers >= 0), mean_relative_error (>= 0),
/// r_squared (<= 1)). Anything else throws ProfileError naming source:line and the key.
BoardProfileFile parse_board_profile(const std::string& text, const std::string& source);

/// The YAML text of `profile` (every value, doubles in round-trip precision, the description as
/// a leading comment too); parse_board_profile(to_yaml(p), s) gives p back.
std::string to_yaml(const BoardProfileFile& profile);

/// Writes to_yaml(profile) to `path` (replacing it). Throws ProfileError if the profile is
/// invalid (partitioners::validate) or the file cannot be written. Blocks on file I/O.
void save_board_profile(const std::string& path, const BoardProfileFile& profile);

/// How measure_unit_times() measures.
struct UnitTimingOptions {
  int64_t batch = 1;     ///< samples per timed invocation, >= 1
  int64_t warmup = 3;    ///< untimed runs per unit before timing, >= 0
  int64_t repeats = 20;  ///< timed runs per unit, >= 1; the median is reported
  int64_t threads = 1;   ///< at::set_num_threads while measuring (restored afterwards), >= 1
  uint64_t seed = 0;     ///< of the random inputs
};

/// The measured forward time of one group of units (one unit for every zoo model today).
struct UnitTiming {
  std::string name;       ///< the unit's name; "first..last" for a group of several
  size_t first_unit = 0;  ///< index of its first unit
  size_t end_unit = 0;    ///< one past its last unit
  double median_s = 0;    ///< per batch, wall clock
  double min_s = 0, max_s = 0;
  std::vector<double> runs_s;  ///< every timed run, in order
};

/// Times the model's units on the emulator's fast path: the model is cut at every cut it
/// declares (R = 1, no autoencoder), each resulting stage (one unit where a cut follows every
/// unit, as for ResNet blocks and the MLP) is compiled alone with backends::CompiledStage
/// (folded BatchNorm, oneDNN blocked layout, no autograd) and run on random inputs of its own
/// input shape: `warmup` untimed runs, then `repeats` timed ones. Puts the model in eval mode.
/// Each unit starts from a dense input and ends with a dense output, so the layout conversions a
/// longer stage would skip are included (a few percent on large feature maps). A TorchScript
/// model's stages are lowered the same way (frozen, then compiled by operation). Blocks; runs on
/// the calling thread. Throws BoardError for invalid options.
std::vector<UnitTiming> measure_unit_times(const models::Model& model,
                                           const UnitTimingOptions& options);

}  // namespace quilt::backends
