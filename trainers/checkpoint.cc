#include "trainers/checkpoint.h"

#include "trainers/checkpoint_io.h"
#include "trainers/data.h"

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>

#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <type_traits>
#include <utility>

namespace quilt::trainers {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kCheckpointVersion = 1;
constexpr int64_t kEpochFields = 11;
constexpr int64_t kPhaseFields = 13;

// The columns of a checkpoint's epoch and phase rows, in order: the one definition of the row
// layout, for writing and for reading (changing it needs a new kCheckpointVersion).
constexpr auto epoch_columns = [](auto& e) {
  return std::tie(e.phase, e.epoch, e.train_loss, e.train_top1, e.test.loss, e.test.top1,
                  e.test.top5, e.test.samples, e.test.seconds, e.seconds, e.samples);
};
constexpr auto phase_columns = [](auto& p) {
  return std::tie(p.phase, p.epochs, p.settled, p.trainable_params, p.seconds, p.samples,
                  p.test.loss, p.test.top1, p.test.top5, p.test.samples, p.test.seconds,
                  p.train_loss, p.train_top1);
};
static_assert(std::tuple_size_v<decltype(epoch_columns(std::declval<EpochRecord&>()))> ==
              kEpochFields);
static_assert(std::tuple_size_v<decltype(phase_columns(std::declval<PhaseRecord&>()))> ==
              kPhaseFields);

// One float64 row per record: its columns in order.
template <typename Record, typename Columns>
torch::Tensor to_rows(const std::vector<Record>& v, int64_t fields, Columns columns) {
  auto t = torch::zeros({static_cast<int64_t>(v.size()), fields}, torch::kFloat64);
  auto a = t.accessor<double, 2>();
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t j = 0;
    std::apply(
        [&](const auto&... x) {
          ((a[static_cast<int64_t>(i)][j++] = static_cast<double>(x)), ...);
        },
        columns(v[i]));
  }
  return t;
}

// The records of float64 rows, each column cast back to its field's type.
template <typename Record, typename Columns>
std::vector<Record> from_rows(const torch::Tensor& t, Columns columns) {
  std::vector<Record> v;
  auto a = t.accessor<double, 2>();
  for (int64_t i = 0; i < t.size(0); ++i) {
    Record r;
    int64_t j = 0;
    std::apply(
        [&](auto&... x) {
          ((x = static_cast<std::remove_reference_t<decltype(x)>>(a[i][j++])), ...);
        },
        columns(r));
    v.push_back(r);
  }
  return v;
}

torch::Tensor epochs_to_tensor(const std::vector<EpochRecord>& v) {
  return to_rows(v, kEpochFields, epoch_columns);
}

std::vector<EpochRecord> epochs_from_tensor(const torch::Tensor& t) {
  return from_rows<EpochRecord>(t, epoch_columns);
}

torch::Tensor phases_to_tensor(const std::vector<PhaseRecord>& v) {
  return to_rows(v, kPhaseFields, phase_columns);
}

std::vector<PhaseRecord> phases_from_tensor(const torch::Tensor& t, Mode mode) {
  std::vector<PhaseRecord> v = from_rows<PhaseRecord>(t, phase_columns);
  for (auto& p : v) p.trains = mode == Mode::kFreeze && p.phase == 1 ? "autoencoders" : "all";
  return v;
}

// Opens a checkpoint, with a clear error for a missing file or another kind of file.
torch::serialize::InputArchive open_checkpoint(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw TrainerError(fmt::format("checkpoint \"{}\" does not exist or is not a file", path));
  }
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    throw TrainerError(fmt::format(
        "\"{}\" is not a Quilt training checkpoint (cannot be read as a LibTorch archive)", path));
  }
  c10::IValue version;
  if (!archive.try_read("quilt_checkpoint_version", version) || !version.isInt()) {
    throw TrainerError(
        fmt::format("\"{}\" is a LibTorch archive but not a Quilt training checkpoint (no "
                    "quilt_checkpoint_version)",
                    path));
  }
  if (version.toInt() != kCheckpointVersion) {
    throw TrainerError(fmt::format("checkpoint \"{}\" has version {}; this build reads version {}",
                                   path, version.toInt(), kCheckpointVersion));
  }
  return archive;
}

template <typename T>
T read_value(torch::serialize::InputArchive& archive, const std::string& key,
             const std::string& path) {
  c10::IValue v;
  if (!archive.try_read(key, v)) {
    throw TrainerError(fmt::format("checkpoint \"{}\" lacks \"{}\" (damaged?)", path, key));
  }
  if constexpr (std::is_same_v<T, std::string>) {
    return v.toStringRef();
  } else if constexpr (std::is_same_v<T, double>) {
    return v.toDouble();
  } else {
    return static_cast<T>(v.toInt());
  }
}

CheckpointInfo read_info(torch::serialize::InputArchive& archive, const std::string& path) {
  CheckpointInfo info;
  info.version = kCheckpointVersion;
  info.model = read_value<std::string>(archive, "model_description", path);
  info.mode = read_value<std::string>(archive, "mode", path);
  info.phase = read_value<int>(archive, "last_phase", path);
  info.epochs_done = read_value<int64_t>(archive, "epochs_done", path);
  info.seed = static_cast<uint64_t>(read_value<int64_t>(archive, "seed", path));
  return info;
}

void check_same_model(const CheckpointInfo& info, models::QuiltModel& model,
                      const std::string& path) {
  const std::string mine = describe(model);
  if (info.model != mine) {
    throw TrainerError(
        fmt::format("checkpoint \"{}\" was written for \"{}\" but the model is \"{}\"", path,
                    info.model, mine));
  }
}

// Copies each of `tensors` (the model's parameters or buffers, `what`) from the archive.
void copy_tensors(torch::serialize::InputArchive& weights,
                  const torch::OrderedDict<std::string, torch::Tensor>& tensors, const char* what,
                  const std::string& path) {
  for (const auto& p : tensors) {
    torch::Tensor t;
    if (!weights.try_read(p.key(), t) || !t.sizes().equals(p.value().sizes())) {
      throw TrainerError(
          fmt::format("checkpoint \"{}\": {} \"{}\" is missing or of another shape "
                      "(damaged?)",
                      path, what, p.key()));
    }
    p.value().copy_(t);
  }
}

void load_weights(torch::serialize::InputArchive& archive, models::QuiltModel& model,
                  const std::string& path) {
  torch::serialize::InputArchive weights;
  if (!archive.try_read("model", weights)) {
    throw TrainerError(fmt::format("checkpoint \"{}\" has no model weights (damaged?)", path));
  }
  torch::NoGradGuard no_grad;
  copy_tensors(weights, model->named_parameters(), "parameter", path);
  copy_tensors(weights, model->named_buffers(), "buffer", path);
}

}  // namespace

std::string describe(const models::QuiltModel& model) {
  const auto base = model->base();
  std::string cuts;
  for (const auto& t : model->traffic()) cuts += (cuts.empty() ? "" : " ") + t.cut;
  return fmt::format("{} input {} classes {}, cuts {}, R {}, kernel {}", base->arch(),
                     models::to_string(base->input_shape()), base->num_classes(),
                     cuts.empty() ? std::string("none") : cuts, model->options().rate,
                     model->options().kernel);
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  auto archive = open_checkpoint(path);
  return read_info(archive, path);
}

void load_checkpoint_weights(models::QuiltModel& model, const std::string& path) {
  auto archive = open_checkpoint(path);
  check_same_model(read_info(archive, path), model, path);
  load_weights(archive, model, path);
}

void export_state_dict(const torch::nn::Module& module, const std::string& path) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& p : module.named_parameters()) dict.insert(p.key(), p.value().detach().cpu());
  for (const auto& b : module.named_buffers()) dict.insert(b.key(), b.value().detach().cpu());
  // torch::pickle_save tags the dict with its TorchScript type
  // (torch.jit._pickle.restore_type_tag), which a plain state_dict reader refuses: pickle it
  // untagged, as Python's torch.save does.
  std::vector<char> pickle;
  torch::jit::Pickler pickler(
      [&](const char* bytes, size_t n) { pickle.insert(pickle.end(), bytes, bytes + n); }, nullptr,
      nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(c10::IValue(dict));
  pickler.stop();
  const std::string tmp = path + ".tmp";
  try {
    caffe2::serialize::PyTorchStreamWriter writer(tmp);
    torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(),
                                       writer);
    writer.writeEndOfFile();
  } catch (const std::exception& e) {
    throw TrainerError(fmt::format("cannot write state_dict file \"{}\": {}", path, e.what()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    throw TrainerError(fmt::format("cannot write state_dict file \"{}\": {}", path, ec.message()));
}

namespace detail {

void write_checkpoint(const std::string& path, models::QuiltModel& model,
                      torch::optim::Optimizer& optimizer, Mode mode, uint64_t seed,
                      const RunState& state) {
  torch::serialize::OutputArchive archive;
  archive.write("quilt_checkpoint_version", c10::IValue(kCheckpointVersion));
  archive.write("model_description", c10::IValue(describe(model)));
  archive.write("mode", c10::IValue(to_string(mode)));
  archive.write("seed", c10::IValue(static_cast<int64_t>(seed)));
  archive.write("phase", c10::IValue(static_cast<int64_t>(state.phase)));
  archive.write("last_phase", c10::IValue(static_cast<int64_t>(state.last_phase)));
  archive.write("epochs_done", c10::IValue(state.epochs_done));
  archive.write("phase_epochs", c10::IValue(state.phase_epochs));
  archive.write("prev_loss", c10::IValue(state.prev_loss));
  archive.write("epochs", epochs_to_tensor(state.epochs));
  archive.write("phases", phases_to_tensor(state.phases));
  torch::serialize::OutputArchive weights;
  for (const auto& p : model->named_parameters()) weights.write(p.key(), p.value().detach());
  for (const auto& b : model->named_buffers()) weights.write(b.key(), b.value().detach(), true);
  archive.write("model", weights);
  torch::serialize::OutputArchive opt;
  optimizer.save(opt);
  archive.write("optimizer", opt);
  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
  } catch (const std::exception& e) {
    throw TrainerError(fmt::format("cannot write checkpoint \"{}\": {}", path, e.what()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw TrainerError(fmt::format("cannot write checkpoint \"{}\": {}", path, ec.message()));
}

void read_checkpoint(const std::string& path, models::QuiltModel& model, Mode mode, uint64_t seed,
                     RunState* state, torch::serialize::InputArchive* optimizer_archive) {
  auto archive = open_checkpoint(path);
  const CheckpointInfo info = read_info(archive, path);
  check_same_model(info, model, path);
  if (info.mode != to_string(mode)) {
    throw TrainerError(
        fmt::format("checkpoint \"{}\" was written by a \"{}\" training; this training "
                    "is \"{}\" (resume with the same mode)",
                    path, info.mode, to_string(mode)));
  }
  if (info.seed != seed) {
    throw TrainerError(
        fmt::format("checkpoint \"{}\" was written by a training with seed {}; this "
                    "training has seed {} (resume with the same seed)",
                    path, info.seed, seed));
  }
  load_weights(archive, model, path);
  state->phase = read_value<int>(archive, "phase", path);
  state->last_phase = info.phase;
  state->epochs_done = info.epochs_done;
  state->phase_epochs = read_value<int64_t>(archive, "phase_epochs", path);
  state->prev_loss = read_value<double>(archive, "prev_loss", path);
  torch::Tensor epochs, phases;
  archive.read("epochs", epochs);
  archive.read("phases", phases);
  state->epochs = epochs_from_tensor(epochs.to(torch::kFloat64));
  state->phases = phases_from_tensor(phases.to(torch::kFloat64), mode);
  if (!archive.try_read("optimizer", *optimizer_archive)) {
    throw TrainerError(fmt::format("checkpoint \"{}\" has no optimizer state (damaged?)", path));
  }
}

}  // namespace detail
}  // namespace quilt::trainers
