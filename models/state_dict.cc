// Reading torch.save files without Python.
//
// Why not torch::pickle_load: LibTorch 1.13's torch::jit::Unpickler turns every
// collections.OrderedDict into None (it assumes OrderedDicts only occur as a tensor's empty
// backward hooks), so the SETITEMS that fills the OrderedDict of model.state_dict() trips an
// internal assert ("Expected GenericDict but got None"); _metadata is not the cause. Its special
// cases come before any type resolver, so they cannot be overridden. Instead this file reads the
// zip container with caffe2::serialize::PyTorchStreamReader (as LibTorch does) and runs a small
// unpickler for the subset torch.save emits: containers, scalars, strings, and a fixed set of
// PyTorch globals (tensor rebuild functions, storage types, OrderedDict). It never executes
// anything from the file, so it is safe on untrusted files, like torch.load(weights_only=True).

#include "models/state_dict.h"

#include "models/model.h"
#include "models/pickle.h"
#include "models/torchscript.h"

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace quilt::models {
namespace {

using pickle::dict_get;
using pickle::Kind;
using pickle::kind_name;
using pickle::make;
using pickle::PyRef;
using pickle::storage_dtype;
using pickle::Unpickler;

// ---------------------------------------------------------------------------------------------
// The two container formats.

struct StateDictFile {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, int64_t> versions;  // module prefix -> _metadata version
  bool has_metadata = false;
};

// A persistent id is ('storage', storage_type, key, location, numel[, view_metadata]).
struct StorageRef {
  torch::ScalarType dtype;
  std::string key;
  int64_t numel = 0;
  PyRef view;  // legacy format only: None or (view_key, offset, size)
};

StorageRef parse_pid(const std::string& path, const PyRef& pid) {
  auto bad = [&] {
    return ModelError(fmt::format("state_dict file \"{}\": unexpected persistent id", path));
  };
  if (pid->kind != Kind::kTuple || pid->items.size() < 5) throw bad();
  const auto& t = pid->items;
  if (t[0]->kind != Kind::kStr || t[0]->s != "storage" || t[1]->kind != Kind::kGlobal ||
      t[2]->kind != Kind::kStr || t[4]->kind != Kind::kInt || t[4]->i < 0) {
    throw bad();
  }
  const auto dtype = storage_dtype(t[1]->s);
  if (!dtype) throw bad();
  StorageRef ref{*dtype, t[2]->s, t[4]->i, t.size() > 5 ? t[5] : nullptr};
  return ref;
}

// The pickled object -> ordered (key, tensor) entries plus the _metadata versions.
StateDictFile to_state_dict(const std::string& path, const PyRef& root) {
  if (root->kind != Kind::kDict) {
    throw ModelError(fmt::format(
        "state_dict file \"{}\" holds a {}, not a dict of tensors (save model.state_dict())", path,
        kind_name(root->kind)));
  }
  StateDictFile file;
  for (const auto& [key, value] : root->entries) {
    if (key->kind != Kind::kStr) {
      throw ModelError(fmt::format("state_dict file \"{}\" has a {} key; keys must be str", path,
                                   kind_name(key->kind)));
    }
    if (value->kind != Kind::kTensor) {
      throw ModelError(fmt::format(
          "state_dict file \"{}\": key \"{}\" holds a {}, not a tensor{}", path, key->s,
          kind_name(value->kind),
          value->kind == Kind::kDict
              ? " (this looks like a checkpoint; save or extract model.state_dict() itself)"
              : ""));
    }
    file.tensors.emplace_back(key->s, value->tensor);
  }
  if (root->state && root->state->kind == Kind::kDict) {
    if (const PyRef* meta = dict_get(*root->state, "_metadata")) {
      if ((*meta)->kind == Kind::kDict) {
        file.has_metadata = true;
        for (const auto& [prefix, info] : (*meta)->entries) {
          if (prefix->kind != Kind::kStr || info->kind != Kind::kDict) continue;
          const PyRef* version = dict_get(*info, "version");
          if (version && (*version)->kind == Kind::kInt) file.versions[prefix->s] = (*version)->i;
        }
      }
    }
  }
  return file;
}

StateDictFile read_zip(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    throw ModelError(fmt::format("state_dict file \"{}\" is not a readable torch.save zip: {}",
                                 path, e.what_without_backtrace()));
  }
  if (!reader->hasRecord("data.pkl")) {
    throw ModelError(fmt::format(
        "state_dict file \"{}\" is a zip without data.pkl: not written by torch.save", path));
  }
  if (reader->hasRecord("constants.pkl") || reader->hasRecord("code/__torch__.py")) {
    throw ModelError(fmt::format(
        "state_dict file \"{}\" is a TorchScript archive (torch.jit.save or C++ torch::save); "
        "load_state_dict expects Python's torch.save(model.state_dict(), path)",
        path));
  }
  if (reader->hasRecord("byteorder")) {
    auto [data, size] = reader->getRecord("byteorder");
    const std::string order(static_cast<const char*>(data.get()), size);
    if (order != "little") {
      throw ModelError(
          fmt::format("state_dict file \"{}\" stores {}-endian tensors; only little-endian files "
                      "are supported",
                      path, order));
    }
  }
  std::map<std::string, torch::Tensor> storages;
  auto persistent_load = [&](const PyRef& pid) {
    const StorageRef ref = parse_pid(path, pid);
    auto it = storages.find(ref.key);
    if (it == storages.end()) {
      const std::string record = "data/" + ref.key;
      if (!reader->hasRecord(record)) {
        throw ModelError(
            fmt::format("state_dict file \"{}\" lacks storage record {}", path, record));
      }
      auto [data, nbytes] = reader->getRecord(record);
      const size_t item = c10::elementSize(ref.dtype);
      if (nbytes % item != 0) {
        throw ModelError(
            fmt::format("state_dict file \"{}\": storage {} has {} bytes, not a "
                        "multiple of {}",
                        path, record, nbytes, item));
      }
      torch::Tensor storage =
          torch::empty({static_cast<int64_t>(nbytes / item)}, torch::TensorOptions(ref.dtype));
      if (nbytes > 0) std::memcpy(storage.data_ptr(), data.get(), nbytes);
      it = storages.emplace(ref.key, storage).first;
    }
    auto o = make(Kind::kStorage);
    o->tensor = it->second;
    return o;
  };
  auto [data, size] = reader->getRecord("data.pkl");
  Unpickler unpickler(path, static_cast<const char*>(data.get()), size, persistent_load);
  size_t pos = 0;
  return to_state_dict(path, unpickler.load(&pos));
}

// torch.save(..., _use_new_zipfile_serialization=False): five pickles (magic number, protocol
// version, sys_info, the object, the storage keys) followed by each storage as an int64 element
// count and its bytes, in the order of the keys.
StateDictFile read_legacy(const std::string& path, const std::string& bytes) {
  std::map<std::string, torch::Tensor> storages;
  auto persistent_load = [&](const PyRef& pid) {
    const StorageRef ref = parse_pid(path, pid);
    auto it = storages.find(ref.key);
    if (it == storages.end()) {
      // The data follows in this file, so a larger storage means a damaged element count.
      if (static_cast<uint64_t>(ref.numel) > bytes.size() / c10::elementSize(ref.dtype)) {
        throw ModelError(
            fmt::format("state_dict file \"{}\": storage {} claims {} elements, "
                        "more than the file holds",
                        path, ref.key, ref.numel));
      }
      // Filled once the storage data that follows the pickles has been reached.
      it = storages.emplace(ref.key, torch::empty({ref.numel}, torch::TensorOptions(ref.dtype)))
               .first;
    }
    auto o = make(Kind::kStorage);
    o->tensor = it->second;
    if (ref.view && ref.view->kind == Kind::kTuple && ref.view->items.size() == 3) {
      const auto& v = ref.view->items;
      if (v[1]->kind != Kind::kInt || v[2]->kind != Kind::kInt || v[1]->i < 0 || v[2]->i < 0 ||
          v[1]->i + v[2]->i > o->tensor.numel()) {
        throw ModelError(fmt::format("state_dict file \"{}\": bad storage view", path));
      }
      o->tensor = o->tensor.narrow(0, v[1]->i, v[2]->i);
    }
    return o;
  };
  Unpickler unpickler(path, bytes.data(), bytes.size(), persistent_load);
  size_t pos = 0;
  unpickler.load(&pos);  // magic number, checked by the caller
  PyRef protocol = unpickler.load(&pos);
  if (protocol->kind != Kind::kInt || protocol->i != 1001) {
    throw ModelError(fmt::format("state_dict file \"{}\": unsupported legacy protocol", path));
  }
  PyRef sys_info = unpickler.load(&pos);
  if (sys_info->kind == Kind::kDict) {
    const PyRef* little = dict_get(*sys_info, "little_endian");
    if (little && (*little)->kind == Kind::kBool && !(*little)->b) {
      throw ModelError(fmt::format("state_dict file \"{}\" is big-endian; not supported", path));
    }
  }
  PyRef root = unpickler.load(&pos);
  PyRef keys = unpickler.load(&pos);
  if (keys->kind != Kind::kList) {
    throw ModelError(fmt::format("state_dict file \"{}\": malformed storage key list", path));
  }
  for (const auto& key : keys->items) {
    auto it = key->kind == Kind::kStr ? storages.find(key->s) : storages.end();
    if (it == storages.end()) {
      throw ModelError(fmt::format("state_dict file \"{}\": unknown storage key", path));
    }
    int64_t count = 0;
    const size_t item = it->second.element_size();
    if (bytes.size() - pos < sizeof(count)) {
      throw ModelError(fmt::format("state_dict file \"{}\" is truncated", path));
    }
    std::memcpy(&count, bytes.data() + pos, sizeof(count));
    pos += sizeof(count);
    if (count != it->second.numel() || bytes.size() - pos < static_cast<size_t>(count) * item) {
      throw ModelError(fmt::format("state_dict file \"{}\" is truncated or corrupt", path));
    }
    if (count > 0) std::memcpy(it->second.data_ptr(), bytes.data() + pos, count * item);
    pos += count * item;
  }
  return to_state_dict(path, root);
}

StateDictFile read_file_unchecked(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ModelError(
        fmt::format("cannot open state_dict file \"{}\": {}", path, std::strerror(errno)));
  }
  char head[16] = {};
  in.read(head, sizeof(head));
  const size_t got = static_cast<size_t>(in.gcount());
  if (got >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) return read_zip(path);
  // Pickle protocol 2, LONG1 of 10 bytes: torch's legacy magic number 0x1950a86a20f9469cfc6c.
  static const char kLegacy[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
  if (got >= 14 && std::memcmp(head, kLegacy, 14) == 0) {
    in.seekg(0, std::ios::end);
    std::string bytes(static_cast<size_t>(in.tellg()), '\0');
    in.seekg(0);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (static_cast<size_t>(in.gcount()) != bytes.size()) {
      throw ModelError(fmt::format("cannot read state_dict file \"{}\"", path));
    }
    return read_legacy(path, bytes);
  }
  throw ModelError(fmt::format(
      "\"{}\" is not a torch.save file (neither the zip format nor the legacy format); write it "
      "with Python's torch.save(model.state_dict(), path)",
      path));
}

// LibTorch's own errors (zip reader, allocation) on a damaged file are the file's fault too.
StateDictFile read_file(const std::string& path) {
  try {
    return read_file_unchecked(path);
  } catch (const c10::Error& e) {
    throw ModelError(fmt::format("state_dict file \"{}\" is damaged or not a torch.save file: {}",
                                 path, e.what_without_backtrace()));
  }
}

}  // namespace

std::vector<std::pair<std::string, torch::Tensor>> read_state_dict(const std::string& path) {
  return read_file(path).tensors;
}

void load_state_dict(torch::nn::Module& model, const std::string& path) {
  // A TorchScript model's weights live in its scripted module: they load there (the file's keys
  // checked against the module's own names), and the model is frozen and cut again.
  if (auto* ts = dynamic_cast<TorchScriptModelImpl*>(&model)) {
    ts->load_weights(path);
    return;
  }
  const StateDictFile file = read_file(path);
  std::map<std::string, torch::Tensor> targets;  // the model's parameters and buffers
  std::vector<std::string> order;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    targets.emplace(p.key(), p.value());
    order.push_back(p.key());
  }
  for (const auto& b : model.named_buffers(/*recurse=*/true)) {
    targets.emplace(b.key(), b.value());
    order.push_back(b.key());
  }
  std::map<std::string, const torch::Tensor*> given;
  for (const auto& [key, tensor] : file.tensors) given.emplace(key, &tensor);

  // As PyTorch's BatchNorm._load_from_state_dict: files from before BatchNorm version 2 (or
  // without metadata) may lack num_batches_tracked.
  auto tolerated_missing = [&](const std::string& key) {
    const std::string suffix = "num_batches_tracked";
    if (key.size() < suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
      return false;
    }
    std::string prefix = key.substr(0, key.size() - suffix.size());
    if (!prefix.empty()) prefix.pop_back();  // the '.'
    auto it = file.versions.find(prefix);
    return !file.has_metadata || it == file.versions.end() || it->second < 2;
  };

  std::vector<std::string> missing, unexpected;
  for (const auto& key : order) {
    if (!given.count(key) && !tolerated_missing(key)) missing.push_back(key);
  }
  for (const auto& [key, tensor] : file.tensors) {
    if (!targets.count(key)) unexpected.push_back(key);
  }
  auto quote_some = [](const std::vector<std::string>& keys) {
    constexpr size_t kShown = 5;
    std::string text;
    for (size_t i = 0; i < keys.size() && i < kShown; ++i) {
      text += fmt::format("{}\"{}\"", i ? ", " : "", keys[i]);
    }
    if (keys.size() > kShown) text += fmt::format(" and {} more", keys.size() - kShown);
    return text;
  };
  if (!missing.empty() || !unexpected.empty()) {
    std::string what;
    if (!missing.empty()) what += fmt::format("missing key {}", quote_some(missing));
    if (!unexpected.empty()) {
      what += fmt::format("{}unexpected key {}", what.empty() ? "" : "; ", quote_some(unexpected));
    }
    throw ModelError(
        fmt::format("state_dict file \"{}\" does not match the model ({} keys in "
                    "the file, {} parameters and buffers in the model): {}",
                    path, file.tensors.size(), order.size(), what));
  }
  for (const auto& [key, tensor] : file.tensors) {
    const torch::Tensor& target = targets.at(key);
    if (tensor.sizes() != target.sizes()) {
      throw ModelError(fmt::format(
          "state_dict file \"{}\": shape mismatch for \"{}\": the file has {}, the model has {}",
          path, key, to_string(tensor.sizes().vec()), to_string(target.sizes().vec())));
    }
    if (tensor.is_complex() != target.is_complex()) {
      throw ModelError(fmt::format(
          "state_dict file \"{}\": dtype mismatch for \"{}\": the file "
          "has {}, the model has {}",
          path, key, c10::toString(tensor.scalar_type()), c10::toString(target.scalar_type())));
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, tensor] : file.tensors) targets.at(key).copy_(tensor);
}

}  // namespace quilt::models
