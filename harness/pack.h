#pragma once
// A tiny binary packer for gathering records across ranks of the same build (same endianness
// and sizes, which one mpirun job guarantees).

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::harness {

class Packer {
 public:
  template <typename T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put(const std::string& s) {
    put<uint64_t>(s.size());
    buf_ += s;
  }
  template <typename T>
  void put(const std::vector<T>& v) {
    put<uint64_t>(v.size());
    for (const auto& x : v) put(x);
  }
  const std::string& bytes() const { return buf_; }

 private:
  std::string buf_;
};

class Unpacker {
 public:
  explicit Unpacker(const std::string& bytes) : buf_(bytes) {}
  template <typename T>
  void get(T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof v);
    std::memcpy(&v, buf_.data() + pos_, sizeof v);
    pos_ += sizeof v;
  }
  void get(std::string& s) {
    uint64_t n = 0;
    get(n);
    need(n);
    s.assign(buf_.data() + pos_, n);
    pos_ += n;
  }
  template <typename T>
  void get(std::vector<T>& v) {
    uint64_t n = 0;
    get(n);
    v.resize(n);
    for (auto& x : v) get(x);
  }

 private:
  void need(size_t n) const {
    if (pos_ + n > buf_.size()) throw std::logic_error("Unpacker: truncated record");
  }
  const std::string& buf_;
  size_t pos_ = 0;
};

}  // namespace quilt::harness
