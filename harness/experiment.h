#pragma once
// Experiment files: a YAML document that names a model, how to cut it, the boards, what to
// measure, and a sweep over any of those keys. Parsing is strict: unknown keys, wrong types and
// out-of-range values are ConfigErrors that name the file, line, column and key.
// The format is documented in experiments/README.md.

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness {

/// Version of the experiment file format this build reads (`quilt: 1` in the file).
inline constexpr int kFormatVersion = 1;

/// A user's mistake in an experiment file, with where it is.
class ConfigError : public std::runtime_error {
 public:
  /// line and column are 1-based; 0 when unknown. key is the dotted path ("autoencoder.rate").
  ConfigError(std::string file, int line, int column, std::string key, std::string message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  int line_ = 0, column_ = 0;
  std::string key_;
};

struct ModelConfig {
  std::string arch;                ///< a name of models::model_names()
  std::vector<int64_t> input;      ///< per-sample input shape; empty = the model's default
  int64_t classes = 0;             ///< 0 = the model's default
  std::string weights = "random";  ///< "random" or a state_dict file saved by torch.save
  uint64_t seed = 0;               ///< seed of the random initialisation
};

struct DataConfig {
  std::string kind = "synthetic";  ///< only synthetic inputs for pipeline runs so far
  uint64_t seed = 1;
};

struct BoardsConfig {
  int count = 1;                     ///< number of boards = pipeline stages = MPI ranks
  std::string backend = "emulator";  ///< "emulator" or "null"
  int threads = 1;                   ///< intra-op threads per rank
};

struct PartitionConfig {
  std::vector<std::string> cuts;  ///< cut names in model order; boards.count - 1 of them
};

struct AutoencoderConfig {
  double rate = 1.0;   ///< reduction rate R >= 1; 1 = no autoencoder
  int64_t kernel = 1;  ///< odd kernel size of the conv encoder/decoder
};

struct MeasurementConfig {
  int64_t batch = 8;           ///< samples per batch
  int64_t warmup_batches = 2;  ///< batches run before measuring, not counted
  int64_t batches = 10;        ///< measured batches (>= 2)
  bool check_outputs = true;   ///< compare with the single-process model
  double tolerance = 1e-3;     ///< max relative error of the check
};

/// One point of the sweep, fully resolved.
struct RunConfig {
  std::string id;                             ///< stable: hash of the resolved parameters
  std::map<std::string, std::string> params;  ///< every resolved key -> value, dotted paths
  std::map<std::string, std::string> swept;   ///< the keys the sweep set for this run
  ModelConfig model;
  DataConfig data;
  BoardsConfig boards;
  PartitionConfig partition;
  AutoencoderConfig autoencoder;
  MeasurementConfig measurement;
};

struct Experiment {
  std::string path;  ///< the file as given
  std::string text;  ///< the file's bytes
  std::string hash;  ///< hash of the resolved runs (hex)
  std::string name;
  std::string description;
  std::string output;           ///< result file path
  std::vector<RunConfig> runs;  ///< the sweep expanded, in file order
};

/// Reads and validates an experiment file (syntax, keys, types, ranges, sweep). Does not check
/// things that need the model zoo (arch names, cut names): see harness/plan.h. Throws ConfigError.
Experiment load_experiment(const std::string& path);

/// Same, from text already in memory (`path` is used in messages).
Experiment parse_experiment(const std::string& text, const std::string& path);

}  // namespace quilt::harness
