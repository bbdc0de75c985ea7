#pragma once
// A small, safe unpickler for the subset of Python's pickle that torch.save emits: containers,
// scalars, strings and a fixed set of PyTorch globals (tensor rebuild functions, storage types,
// OrderedDict). It never executes anything from the data, like torch.load(weights_only=True).
// models/state_dict.cc reads torch.save files with it; see there why not torch::pickle_load.

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace quilt::models::pickle {

/// What kind of Python value a PyObj holds.
enum class Kind {
  kNone,
  kBool,
  kInt,
  kBigInt,
  kFloat,
  kStr,
  kBytes,
  kTuple,
  kList,
  kDict,
  kGlobal,
  kStorage,
  kTensor,
};

struct PyObj;
/// Values are shared, as in Python (the memo and containers refer to the same object).
using PyRef = std::shared_ptr<PyObj>;

/// A Python value as the unpickler sees it.
struct PyObj {
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;             ///< kStr, kBytes, kBigInt (little-endian bytes), kGlobal ("mod.name")
  std::vector<PyRef> items;  ///< kTuple, kList
  std::vector<std::pair<PyRef, PyRef>> entries;       ///< kDict, in insertion order
  std::unordered_map<std::string, size_t> str_index;  ///< kDict: str key -> entry
  PyRef state;           ///< kDict: what BUILD set (an OrderedDict's __dict__)
  torch::Tensor tensor;  ///< kStorage (1-D, the storage's dtype), kTensor
};

/// A new value of `kind` with its fields empty.
PyRef make(Kind kind);

/// Python's name of a kind ("dict", "tensor"), for messages.
const char* kind_name(Kind k);

/// The value of the str key `key` in a kDict, or nullptr when absent.
const PyRef* dict_get(const PyObj& dict, const std::string& key);

/// The dtype of a storage class name torch.save writes ("torch.FloatStorage"), or nullopt.
std::optional<torch::ScalarType> storage_dtype(const std::string& global);

/// Reads pickles (protocols 2 to 5) one after another from `data` (not owned; must outlive the
/// Unpickler). Only the globals a state_dict needs may be named; anything else, and malformed or
/// truncated data, throws ModelError naming `path` and the byte offset.
class Unpickler {
 public:
  /// Turns a persistent id (torch.save's storage references) into a value.
  using PersistentLoad = std::function<PyRef(const PyRef& pid)>;

  Unpickler(std::string path, const char* data, size_t size, PersistentLoad persistent_load);
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  /// Parses one pickle starting at *pos; leaves *pos after its STOP.
  PyRef load(size_t* pos);

 private:
  class Machine;
  std::unique_ptr<Machine> machine_;
};

}  // namespace quilt::models::pickle
