// The unpickler of models/pickle.h.

#include "models/pickle.h"

#include "models/model.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <array>
#include <cstring>
#include <initializer_list>
#include <iterator>
#include <map>
#include <set>

namespace quilt::models::pickle {

PyRef make(Kind kind) {
  auto o = std::make_shared<PyObj>();
  o->kind = kind;
  return o;
}

const char* kind_name(Kind k) {
  // Indexed by Kind, in its order.
  static const char* const kNames[] = {"None",
                                       "bool",
                                       "int",
                                       "int",
                                       "float",
                                       "str",
                                       "bytes",
                                       "tuple",
                                       "list",
                                       "dict",
                                       "class or function",
                                       "storage",
                                       "tensor"};
  static_assert(std::size(kNames) == static_cast<size_t>(Kind::kTensor) + 1,
                "kind_name: one name per Kind");
  const auto i = static_cast<size_t>(k);
  return i < std::size(kNames) ? kNames[i] : "?";
}

const PyRef* dict_get(const PyObj& dict, const std::string& key) {
  auto it = dict.str_index.find(key);
  return it == dict.str_index.end() ? nullptr : &dict.entries[it->second].second;
}

// Storage class names torch.save writes (torch.FloatStorage, ...) and their dtypes: PyTorch's
// legacy storage classes are named after the dtype's legacy name, which is c10's (Float, Long,
// ComplexDouble); torch.UntypedStorage holds bytes.
std::optional<torch::ScalarType> storage_dtype(const std::string& global) {
  static const std::map<std::string, torch::ScalarType> kTypes = [] {
    std::map<std::string, torch::ScalarType> types = {{"torch.UntypedStorage", torch::kUInt8}};
    for (const auto t : {torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16,
                         torch::kInt64, torch::kInt32, torch::kInt16, torch::kInt8, torch::kUInt8,
                         torch::kBool, torch::kComplexFloat, torch::kComplexDouble}) {
      types.emplace(fmt::format("torch.{}Storage", c10::toString(t)), t);
    }
    return types;
  }();
  auto it = kTypes.find(global);
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// The unpickler: pickle protocols 2 to 5, the opcodes Python's pickler emits for the objects
// above.

class Unpickler::Machine {
 public:
  Machine(std::string path, const char* data, size_t size, PersistentLoad persistent_load)
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

  // One opcode's handler; `op` is the opcode (several share a handler), `at` its byte offset.
  using Handler = void (Machine::*)(uint8_t op, size_t at);

  // The handler of every opcode this unpickler knows (nullptr for the others).
  static const std::array<Handler, 256>& handlers() {
    static const std::array<Handler, 256> kHandlers = [] {
      std::array<Handler, 256> h{};
      auto set = [&h](std::initializer_list<uint8_t> ops, Handler f) {
        for (const uint8_t op : ops) h[op] = f;
      };
      set({0x80}, &Machine::op_proto);
      set({0x95}, &Machine::op_frame);
      set({'('}, &Machine::op_mark);
      set({'0'}, &Machine::op_pop);
      set({'1'}, &Machine::op_pop_mark);
      set({'2'}, &Machine::op_dup);
      set({'N'}, &Machine::op_none);
      set({0x88, 0x89}, &Machine::op_bool);
      set({'J', 'K', 'M'}, &Machine::op_int);
      set({0x8a, 0x8b}, &Machine::op_long);
      set({'G'}, &Machine::op_binfloat);
      set({'X', 0x8c, 0x8d}, &Machine::op_unicode);
      set({'T', 'U', 'B', 'C', 0x8e}, &Machine::op_bytes);
      set({')', ']', '}'}, &Machine::op_empty);
      set({'t'}, &Machine::op_tuple);
      set({0x85, 0x86, 0x87}, &Machine::op_small_tuple);
      set({'l'}, &Machine::op_list);
      set({'a'}, &Machine::op_append);
      set({'e'}, &Machine::op_appends);
      set({'d'}, &Machine::op_dict);
      set({'s'}, &Machine::op_setitem);
      set({'u'}, &Machine::op_setitems);
      set({'c'}, &Machine::op_global);
      set({0x93}, &Machine::op_stack_global);
      set({'R', 0x81}, &Machine::op_reduce);
      set({'b'}, &Machine::op_build);
      set({'Q'}, &Machine::op_binpersid);
      set({'q', 'r', 0x94}, &Machine::op_put);
      set({'h', 'j'}, &Machine::op_get);
      return h;
    }();
    return kHandlers;
  }

  void step(uint8_t op, size_t at) {
    const Handler f = handlers()[op];
    if (f == nullptr) fail(at, fmt::format("unsupported pickle opcode 0x{:02x}", op));
    (this->*f)(op, at);
  }

  void op_proto(uint8_t, size_t at) {
    const uint8_t proto = u8();
    if (proto < 2 || proto > 5) fail(at, fmt::format("unsupported pickle protocol {}", proto));
  }
  void op_frame(uint8_t, size_t) { take(8); }  // a framing hint only
  void op_mark(uint8_t, size_t) { marks_.push_back(stack_.size()); }
  void op_pop(uint8_t, size_t) { pop(); }
  void op_pop_mark(uint8_t, size_t) { pop_mark(); }
  void op_dup(uint8_t, size_t) { stack_.push_back(top()); }
  void op_none(uint8_t, size_t) { stack_.push_back(make(Kind::kNone)); }
  void op_bool(uint8_t op, size_t) {  // NEWTRUE, NEWFALSE
    auto o = make(Kind::kBool);
    o->b = op == 0x88;
    stack_.push_back(o);
  }
  void op_int(uint8_t op, size_t) {  // BININT, BININT1, BININT2
    const int64_t v = op == 'J'   ? int64_t{little<int32_t>()}
                      : op == 'K' ? int64_t{u8()}
                                  : int64_t{little<uint16_t>()};
    stack_.push_back(make_int(v));
  }
  void op_long(uint8_t op, size_t) {  // LONG1, LONG4: little-endian two's complement
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
  }
  void op_binfloat(uint8_t, size_t) {  // big-endian double
    uint64_t bits = 0;
    const char* b = take(8);
    for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(b[k]);
    auto o = make(Kind::kFloat);
    std::memcpy(&o->f, &bits, sizeof(double));
    stack_.push_back(o);
  }
  void op_unicode(uint8_t op, size_t) {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
    const uint64_t n = op == 'X' ? little<uint32_t>() : op == 0x8c ? u8() : little<uint64_t>();
    stack_.push_back(make_str(Kind::kStr, std::string(take(n), n)));
  }
  // BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES, BINBYTES8
  void op_bytes(uint8_t op, size_t) {
    const uint64_t n = (op == 'U' || op == 'C') ? u8()
                       : op == 0x8e             ? little<uint64_t>()
                                                : little<uint32_t>();
    stack_.push_back(make_str(Kind::kBytes, std::string(take(n), n)));
  }
  void op_empty(uint8_t op, size_t) {  // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT
    stack_.push_back(op == ')' ? tuple({}) : make(op == ']' ? Kind::kList : Kind::kDict));
  }
  void op_tuple(uint8_t, size_t) { stack_.push_back(tuple(pop_mark())); }
  void op_small_tuple(uint8_t op, size_t) {  // TUPLE1..3
    const size_t n = op - 0x84;
    std::vector<PyRef> items(n);
    for (size_t k = n; k-- > 0;) items[k] = pop();
    stack_.push_back(tuple(std::move(items)));
  }
  void op_list(uint8_t, size_t) {
    auto l = make(Kind::kList);
    l->items = pop_mark();
    stack_.push_back(l);
  }
  void op_append(uint8_t, size_t at) {
    PyRef v = pop();
    PyRef& l = top();
    if (l->kind != Kind::kList) fail(at, "APPEND to a non-list");
    l->items.push_back(std::move(v));
  }
  void op_appends(uint8_t, size_t at) {
    auto items = pop_mark();
    PyRef& l = top();
    if (l->kind != Kind::kList) fail(at, "APPENDS to a non-list");
    for (auto& v : items) l->items.push_back(std::move(v));
  }
  void op_dict(uint8_t, size_t at) {
    auto items = pop_mark();
    if (items.size() % 2) fail(at, "DICT with an odd number of items");
    auto d = make(Kind::kDict);
    for (size_t k = 0; k < items.size(); k += 2) dict_set(*d, items[k], items[k + 1]);
    stack_.push_back(d);
  }
  void op_setitem(uint8_t, size_t at) {
    PyRef v = pop();
    PyRef k = pop();
    PyRef& d = top();
    if (d->kind != Kind::kDict) fail(at, "SETITEM on a non-dict");
    dict_set(*d, std::move(k), std::move(v));
  }
  void op_setitems(uint8_t, size_t at) {
    auto items = pop_mark();
    PyRef& d = top();
    if (d->kind != Kind::kDict) fail(at, "SETITEMS on a non-dict");
    if (items.size() % 2) fail(at, "SETITEMS with an odd number of items");
    for (size_t k = 0; k < items.size(); k += 2) dict_set(*d, items[k], items[k + 1]);
  }
  void op_global(uint8_t, size_t at) {
    std::string module = line();
    std::string name = line();
    stack_.push_back(global(module, name, at));
  }
  void op_stack_global(uint8_t, size_t at) {
    PyRef name = pop();
    PyRef module = pop();
    if (module->kind != Kind::kStr || name->kind != Kind::kStr) {
      fail(at, "STACK_GLOBAL needs two strings");
    }
    stack_.push_back(global(module->s, name->s, at));
  }
  // REDUCE, and NEWOBJ (cls.__new__(cls, *args)): only for the allowed classes.
  void op_reduce(uint8_t, size_t at) {
    PyRef args = pop();
    PyRef callable = pop();
    stack_.push_back(call(*callable, *args, at, 0));
  }
  void op_build(uint8_t, size_t at) {  // obj.__setstate__(state)
    PyRef state = pop();
    PyRef& obj = top();
    if (obj->kind == Kind::kDict) {
      obj->state = std::move(state);  // an OrderedDict's __dict__, e.g. {'_metadata': ...}
    } else if (obj->kind != Kind::kTensor) {
      fail(at, fmt::format("BUILD on a {}", kind_name(obj->kind)));
    }
  }
  void op_binpersid(uint8_t, size_t) {
    PyRef pid = pop();
    stack_.push_back(load_(pid));
  }
  void op_put(uint8_t op, size_t) {  // BINPUT, LONG_BINPUT, MEMOIZE
    memo_put(op == 'q' ? u8() : op == 'r' ? little<uint32_t>() : memo_.size());
  }
  void op_get(uint8_t op, size_t at) {  // BINGET, LONG_BINGET
    memo_get(op == 'h' ? u8() : little<uint32_t>(), at);
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

Unpickler::Unpickler(std::string path, const char* data, size_t size,
                     PersistentLoad persistent_load)
    : machine_(std::make_unique<Machine>(std::move(path), data, size, std::move(persistent_load))) {
}

Unpickler::~Unpickler() = default;

PyRef Unpickler::load(size_t* pos) { return machine_->load(pos); }

}  // namespace quilt::models::pickle
