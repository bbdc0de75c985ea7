#include "harness/planning.h"

#include "backends/precision.h"
#include "backends/profile.h"
#include "models/state_dict.h"
#include "models/zoo.h"
#include "partitioners/error.h"
#include "partitioners/from_model.h"
#include "partitioners/search.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace quilt::harness {

models::ModelOptions model_options(const ModelConfig& m) {
  models::ModelOptions opts;
  opts.input_shape = m.input;
  opts.num_classes = m.classes;
  opts.width = m.width;
  opts.path = m.path;
  opts.cuts = m.cuts;
  return opts;
}

models::Model build_base(const ModelConfig& m, bool load_weights) {
  torch::manual_seed(m.seed);
  models::Model model = models::make_model(m.arch, model_options(m));
  if (m.weights != "random" && load_weights) models::load_state_dict(*model, m.weights);
  return model;
}

models::AutoencoderOptions autoencoder_options(const AutoencoderConfig& ae) {
  models::AutoencoderOptions o;
  o.rate = ae.rate;
  o.kernel = ae.kernel;
  return o;
}

namespace {

// The board a run's stages are planned on: its profile (source, power figures and precision into
// `plan`) with the experiment's link overrides; the precision checked against the board and the
// model.
partitioners::BoardProfile plan_board(const RunConfig& run, const std::string& file,
                                      RunPlan& plan) {
  partitioners::BoardProfile board;
  // The profile's `precision` (load_board_profile checked its spelling); empty when unstated.
  std::optional<backends::Precision> profile_precision;
  try {
    auto loaded = backends::load_board_profile(run.boards.profile);
    board = loaded.board;
    plan.profile = loaded.source;
    plan.power_idle_w = loaded.power_idle_w.value_or(-1);
    plan.power_busy_w = loaded.power_busy_w.value_or(-1);
    plan.link_energy_j_per_byte = loaded.link_energy_j_per_byte.value_or(0);
    profile_precision = backends::parse_precision(loaded.precision);
  } catch (const std::exception& e) {
    throw ConfigError(file, 0, 0, "boards.profile", e.what());
  }
  // A real board computes in the precision its engine was built for; the emulator can emulate
  // any of them.
  if (run.boards.backend == Backend::kXrt && profile_precision && run.boards.precision &&
      run.boards.precision != profile_precision)
    throw ConfigError(file, 0, 0, "boards.precision",
                      fmt::format("`{}` is not what an xrt board of profile `{}` computes in; "
                                  "valid: {} (the profile's precision), or leave it out",
                                  precision_name(run.boards.precision), run.boards.profile,
                                  precision_name(profile_precision)));
  plan.precision =
      run.boards.precision.value_or(profile_precision.value_or(backends::Precision::kFp32));
  plan.element_bytes = backends::element_bytes(plan.precision);
  // The emulator's bf16/int8 lowering covers the zoo's layers; a TorchScript stage runs through
  // LibTorch's JIT in float32. Refused here, before anything runs, not as a failed run.
  if (run.model.arch == models::kTorchScriptArch && plan.precision != backends::Precision::kFp32 &&
      run.boards.backend != Backend::kNull)
    throw ConfigError(file, 0, 0, "boards.precision",
                      fmt::format("`{}`{} is not available for `arch: torchscript` models yet: "
                                  "they run in float32 (valid: fp32)",
                                  backends::precision_name(plan.precision),
                                  !run.boards.precision ? fmt::format(" (from board profile `{}`)",
                                                                      run.boards.profile)
                                                        : ""));
  if (plan.precision == backends::Precision::kInt8 && run.boards.calibration_batches < 1)
    throw ConfigError(file, 0, 0, "boards.calibration_batches",
                      "int8 needs calibration data: set boards.calibration_batches to the number "
                      "of batches (>= 1) of the experiment's data whose activation ranges fix the "
                      "quantization");
  // The experiment's link overrides replace the profile's host<->board figures.
  if (run.links.h2d_gbps > 0) board.h2d_gbps = run.links.h2d_gbps;
  if (run.links.d2h_gbps > 0) board.d2h_gbps = run.links.d2h_gbps;
  if (run.links.latency_s > 0) board.link_latency_s = run.links.latency_s;
  if (run.links.mpi_gbps > 0) board.mpi_gbps = run.links.mpi_gbps;
  if (run.links.mpi_latency_s > 0) board.mpi_latency_s = run.links.mpi_latency_s;
  return board;
}

}  // namespace

RunPlan plan_run(const RunConfig& run, const models::Model& base, const std::string& file) {
  RunPlan plan;
  const partitioners::BoardProfile board = plan_board(run, file, plan);

  partitioners::ModelProfile profile = partitioners::profile_model(base);
  partitioners::SearchOptions options;
  options.stages = run.boards.count;
  options.objective = run.partition.objective;
  options.cost.batch = run.measurement.batch;
  options.cost.rate = run.autoencoder.rate;
  options.cost.kernel = run.autoencoder.kernel;
  options.cost.element_bytes = plan.element_bytes;
  const std::vector<partitioners::BoardProfile> boards = {board};

  partitioners::SearchResult result;
  try {
    if (run.partition.automatic) {
      for (int64_t layer : partitioners::layers_of_cuts(base, run.partition.fixed))
        options.fixed_cuts.push_back(profile.layers.at(static_cast<size_t>(layer)).name);
      result = partitioners::search(profile, boards, options);
      plan.cuts = partitioners::model_cut_names(base, result);
      plan.searched = true;
    } else {
      result = partitioners::evaluate(
          profile, boards, partitioners::layers_of_cuts(base, run.partition.cuts), options);
      plan.cuts = run.partition.cuts;
    }
  } catch (const std::exception& e) {
    throw ConfigError(file, 0, 0, run.partition.automatic ? "partition.fixed" : "partition.cuts",
                      e.what());
  }
  plan.objective = objective_name(run.partition.objective);
  plan.objective_s = result.objective_s;
  for (const auto& st : result.stages) {
    PredictedStage p{st, profile.layers.at(static_cast<size_t>(st.first_layer)).name};
    if (st.end_layer - st.first_layer > 1)
      p.units += ".." + profile.layers.at(static_cast<size_t>(st.end_layer - 1)).name;
    plan.stages.push_back(p);
  }
  return plan;
}

}  // namespace quilt::harness
