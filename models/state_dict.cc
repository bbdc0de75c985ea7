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

#include "models/torchscript.h"
#include "models/zoo.h"

#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

namespace quilt::models {
namespace {

// ---------------------------------------------------------------------------------------------
// A Python value as the unpickler sees it.

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
using PyRef = std::shared_ptr<PyObj>;

struct PyObj {
  Kind kind = Kind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;             // kStr, kBytes, kBigInt (little-endian bytes), kGlobal ("mod.name")
  std::vector<PyRef> items;  // kTuple, kList
  std::vector<std::pair<PyRef, PyRef>> entries;       // kDict, in insertion order
  std::unordered_map<std::string, size_t> str_index;  // kDict: str key -> entry
  PyRef state;           // kDict: what BUILD set (an OrderedDict's __dict__)
  torch::Tensor tensor;  // kStorage (1-D, the storage's dtype), kTensor
};

PyRef make(Kind kind) {
  auto o = std::make_shared<PyObj>();
  o->kind = kind;
  return o;
}

PyRef make_int(int64_t v) {
  auto o = make(Kind::kInt);
  o->i = v;
  return o;
}

PyRef make_str(Kind kind, std::string s) {
  auto o = make(kind);
  o->s = std::move(s);
  return o;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kBigInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kBytes:
      return "bytes";
    case Kind::kTuple:
      return "tuple";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kGlobal:
      return "class or function";
    case Kind::kStorage:
      return "storage";
    case Kind::kTensor:
      return "tensor";
  }
  return "?";
}

void dict_set(PyObj& dict, PyRef key, PyRef value) {
  if (key->kind == Kind::kStr) {
    auto it = dict.str_index.find(key->s);
    if (it != dict.str_index.end()) {
      dict.entries[it->second].second = std::move(value);
      return;
    }
    dict.str_index.emplace(key->s, dict.entries.size());
  }
  dict.entries.emplace_back(std::move(key), std::move(value));
}

const PyRef* dict_get(const PyObj& dict, const std::string& key) {
  auto it = dict.str_index.find(key);
  return it == dict.str_index.end() ? nullptr : &dict.entries[it->second].second;
}

// Storage class names torch.save writes (torch.FloatStorage, ...) and their dtypes.
std::optional<torch::ScalarType> storage_dtype(const std::string& global) {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"torch.DoubleStorage", torch::kFloat64},
      {"torch.FloatStorage", torch::kFloat32},
      {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},
      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},
      {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},
      {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat},
      {"torch.ComplexDoubleStorage", torch::kComplexDouble},
      {"torch.UntypedStorage", torch::kUInt8},
  };
  auto it = kTypes.find(global);
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

// The only callables a state_dict pickle may name. Everything else is refused, which keeps
// arbitrary pickles (and their code) out.
bool allowed_global(const std::string& name) {
  static const std::set<std::string> kAllowed = {
      "collections.OrderedDict",
      "torch._utils._rebuild_tensor",
      "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_parameter",
      "torch._utils._rebuild_parameter_with_state",
      "torch._tensor._rebuild_from_type_v2",
      "torch.nn.parameter.Parameter",
      "torch.Tensor",
  };
  return kAllowed.count(name) > 0 || storage_dtype(name).has_value();
}

// ---------------------------------------------------------------------------------------------
// The unpickler: pickle protocols 2 to 5, the opcodes Python's pickler emits for the objects
// above.

class Unpickler {
 public:
  using PersistentLoad = std::function<PyRef(const PyRef& pid)>;

  Unpickler(std::string path, const char* data, size_t size, PersistentLoad persistent_load)
      : path_(std::move(path)), data_(data), size_(size), load_(std::move(persistent_load)) {}

  // Parses one pickle starting at *pos; leaves *pos after its STOP.
  PyRef load(size_t* pos) {
    pos_ = *pos;
    stack_.clear();
    marks_.clear();
    memo_.clear();
    while (true) {
      const size_t at = pos_;
      const uint8_t op = u8();
      if (op == '.') break;  // STOP
      step(op, at);
    }
    if (stack_.size() != 1 || !marks_.empty()) fail(pos_, "malformed pickle (stack not empty)");
    *pos = pos_;
    return stack_.back();
  }

 private:
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw ModelError(fmt::format("state_dict file \"{}\": {} (pickle byte {})", path_, what, at));
  }

  const char* take(size_t n) {
    if (n > size_ - pos_) fail(pos_, "truncated pickle");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  template <typename T>
  T little() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));  // pickle integers are little-endian
    return v;
  }
  std::string line() {
    const size_t start = pos_;
    while (pos_ < size_ && data_[pos_] != '\n') ++pos_;
    if (pos_ >= size_) fail(start, "truncated pickle");
    std::string s(data_ + start, pos_ - start);
    ++pos_;
    return s;
  }

  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size())) {
      fail(pos_, "malformed pickle (pop from empty stack)");
    }
    PyRef v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  PyRef& top() {
    if (stack_.empty()) fail(pos_, "malformed pickle (empty stack)");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) fail(pos_, "malformed pickle (no MARK)");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(std::make_move_iterator(stack_.begin() + m),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  PyRef tuple(std::vector<PyRef> items) {
    auto t = make(Kind::kTuple);
    t->items = std::move(items);
    return t;
  }
  void memo_put(uint64_t key) { memo_[key] = top(); }
  void memo_get(uint64_t key, size_t at) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail(at, fmt::format("memo key {} not found", key));
    stack_.push_back(it->second);
  }
  PyRef global(const std::string& module, const std::string& name, size_t at) {
    const std::string full = module + "." + name;
    if (!allowed_global(full)) {
      fail(at, fmt::format("refusing Python object {}: a state_dict file holds only tensors "
                           "(save model.state_dict(), not the model or other objects)",
                           full));
    }
    return make_str(Kind::kGlobal, full);
  }

  void step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = u8();
        if (proto < 2 || proto > 5) fail(at, fmt::format("unsupported pickle protocol {}", proto));
        return;
      }
      case 0x95:
        take(8);
        return;  // FRAME: a framing hint only
      case '(':
        marks_.push_back(stack_.size());
        return;  // MARK
      case '0':
        pop();
        return;  // POP
      case '1':
        pop_mark();
        return;  // POP_MARK
      case '2':
        stack_.push_back(top());
        return;  // DUP
      case 'N':
        stack_.push_back(make(Kind::kNone));
        return;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        auto o = make(Kind::kBool);
        o->b = op == 0x88;
        stack_.push_back(o);
        return;
      }
      case 'J':
        stack_.push_back(make_int(little<int32_t>()));
        return;  // BININT
      case 'K':
        stack_.push_back(make_int(u8()));
        return;  // BININT1
      case 'M':
        stack_.push_back(make_int(little<uint16_t>()));
        return;  // BININT2
      case 0x8a:
      case 0x8b: {  // LONG1, LONG4: little-endian two's complement
        const size_t n = op == 0x8a ? u8() : little<uint32_t>();
        const char* bytes = take(n);
        if (n > 8) {
          stack_.push_back(make_str(Kind::kBigInt, std::string(bytes, n)));
          return;
        }
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k)
          v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[k])) << (8 * k);
        if (n > 0 && n < 8 && (bytes[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);
        stack_.push_back(make_int(static_cast<int64_t>(v)));
        return;
      }
      case 'G': {  // BINFLOAT: big-endian double
        uint64_t bits = 0;
        const char* b = take(8);
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(b[k]);
        auto o = make(Kind::kFloat);
        std::memcpy(&o->f, &bits, sizeof(double));
        stack_.push_back(o);
        return;
      }
      case 'X':     // BINUNICODE
      case 0x8c:    // SHORT_BINUNICODE
      case 0x8d: {  // BINUNICODE8
        const uint64_t n = op == 'X' ? little<uint32_t>() : op == 0x8c ? u8() : little<uint64_t>();
        stack_.push_back(make_str(Kind::kStr, std::string(take(n), n)));
        return;
      }
      case 'T':     // BINSTRING
      case 'U':     // SHORT_BINSTRING
      case 'B':     // BINBYTES
      case 'C':     // SHORT_BINBYTES
      case 0x8e: {  // BINBYTES8
        const uint64_t n = (op == 'U' || op == 'C') ? u8()
                           : op == 0x8e             ? little<uint64_t>()
                                                    : little<uint32_t>();
        stack_.push_back(make_str(Kind::kBytes, std::string(take(n), n)));
        return;
      }
      case ')':
        stack_.push_back(tuple({}));
        return;  // EMPTY_TUPLE
      case 't':
        stack_.push_back(tuple(pop_mark()));
        return;
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        std::vector<PyRef> items(n);
        for (size_t k = n; k-- > 0;) items[k] = pop();
        stack_.push_back(tuple(std::move(items)));
        return;
      }
      case ']':
        stack_.push_back(make(Kind::kList));
        return;    // EMPTY_LIST
      case 'l': {  // LIST
        auto l = make(Kind::kList);
        l->items = pop_mark();
        stack_.push_back(l);
        return;
      }
      case 'a': {  // APPEND
        PyRef v = pop();
        PyRef& l = top();
        if (l->kind != Kind::kList) fail(at, "APPEND to a non-list");
        l->items.push_back(std::move(v));
        return;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        PyRef& l = top();
        if (l->kind != Kind::kList) fail(at, "APPENDS to a non-list");
        for (auto& v : items) l->items.push_back(std::move(v));
        return;
      }
      case '}':
        stack_.push_back(make(Kind::kDict));
        return;    // EMPTY_DICT
      case 'd': {  // DICT
        auto items = pop_mark();
        if (items.size() % 2) fail(at, "DICT with an odd number of items");
        auto d = make(Kind::kDict);
        for (size_t k = 0; k < items.size(); k += 2) dict_set(*d, items[k], items[k + 1]);
        stack_.push_back(d);
        return;
      }
      case 's': {  // SETITEM
        PyRef v = pop();
        PyRef k = pop();
        PyRef& d = top();
        if (d->kind != Kind::kDict) fail(at, "SETITEM on a non-dict");
        dict_set(*d, std::move(k), std::move(v));
        return;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        PyRef& d = top();
        if (d->kind != Kind::kDict) fail(at, "SETITEMS on a non-dict");
        if (items.size() % 2) fail(at, "SETITEMS with an odd number of items");
        for (size_t k = 0; k < items.size(); k += 2) dict_set(*d, items[k], items[k + 1]);
        return;
      }
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        stack_.push_back(global(module, name, at));
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        PyRef name = pop();
        PyRef module = pop();
        if (module->kind != Kind::kStr || name->kind != Kind::kStr) {
          fail(at, "STACK_GLOBAL needs two strings");
        }
        stack_.push_back(global(module->s, name->s, at));
        return;
      }
      case 'R': {  // REDUCE
        PyRef args = pop();
        PyRef callable = pop();
        stack_.push_back(call(*callable, *args, at, 0));
        return;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args); only for the allowed classes
        PyRef args = pop();
        PyRef cls = pop();
        stack_.push_back(call(*cls, *args, at, 0));
        return;
      }
      case 'b': {  // BUILD: obj.__setstate__(state)
        PyRef state = pop();
        PyRef& obj = top();
        if (obj->kind == Kind::kDict) {
          obj->state = std::move(state);  // an OrderedDict's __dict__, e.g. {'_metadata': ...}
        } else if (obj->kind != Kind::kTensor) {
          fail(at, fmt::format("BUILD on a {}", kind_name(obj->kind)));
        }
        return;
      }
      case 'Q': {  // BINPERSID
        PyRef pid = pop();
        stack_.push_back(load_(pid));
        return;
      }
      case 'q':
        memo_put(u8());
        return;  // BINPUT
      case 'r':
        memo_put(little<uint32_t>());
        return;  // LONG_BINPUT
      case 0x94:
        memo_put(memo_.size());
        return;  // MEMOIZE
      case 'h':
        memo_get(u8(), at);
        return;  // BINGET
      case 'j':
        memo_get(little<uint32_t>(), at);
        return;  // LONG_BINGET
      default:
        fail(at, fmt::format("unsupported pickle opcode 0x{:02x}", op));
    }
  }

  std::vector<int64_t> ints(const PyObj& t, size_t at, const char* what) {
    if (t.kind != Kind::kTuple && t.kind != Kind::kList)
      fail(at, fmt::format("{} is not a tuple", what));
    std::vector<int64_t> v;
    for (const auto& x : t.items) {
      if (x->kind != Kind::kInt) fail(at, fmt::format("{} holds a non-integer", what));
      v.push_back(x->i);
    }
    return v;
  }

  PyRef call(const PyObj& callable, const PyObj& args, size_t at, int depth) {
    if (callable.kind != Kind::kGlobal) fail(at, "REDUCE on a non-callable");
    if (args.kind != Kind::kTuple) fail(at, "REDUCE without an argument tuple");
    const std::string& f = callable.s;
    const auto& a = args.items;
    if (f == "collections.OrderedDict") {
      if (!a.empty()) fail(at, "OrderedDict(...) with arguments is not supported");
      return make(Kind::kDict);
    }
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (a.size() < 4 || a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt) {
        fail(at, fmt::format("unexpected arguments to {}", f));
      }
      const auto size = ints(*a[2], at, "tensor size");
      const auto stride = ints(*a[3], at, "tensor stride");
      const int64_t offset = a[1]->i;
      if (size.size() != stride.size()) fail(at, "tensor size and stride differ in rank");
      // The farthest element must lie inside the storage, or as_strided would read past it.
      int64_t last = offset;
      bool empty = false;
      for (size_t d = 0; d < size.size(); ++d) {
        if (size[d] < 0 || stride[d] < 0) fail(at, "negative tensor size or stride");
        if (size[d] == 0) empty = true;
        last += (size[d] - 1) * stride[d];
      }
      const torch::Tensor& storage = a[0]->tensor;
      if (!empty && (offset < 0 || last >= storage.numel())) {
        fail(at, "tensor extends past the end of its storage (corrupt file)");
      }
      auto t = make(Kind::kTensor);
      t->tensor =
          empty ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
      return t;
    }
    if (f == "torch._utils._rebuild_parameter" ||
        f == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Kind::kTensor) fail(at, "unexpected arguments to " + f);
      return a[0];  // requires_grad and hooks do not matter for loading values
    }
    if (f == "torch._tensor._rebuild_from_type_v2") {
      // (func, new_type, args, state): a tensor subclass; rebuild the plain tensor.
      if (a.size() < 3 || depth > 4) fail(at, "unexpected arguments to " + f);
      return call(*a[0], *a[2], at, depth + 1);
    }
    fail(at, fmt::format("cannot call {} while loading a state_dict", f));
  }

  std::string path_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  PersistentLoad load_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
};

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
  // A TorchScript model's weights live in its scripted module, frozen into the graph: they
  // load there, and the model is frozen and cut again.
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
