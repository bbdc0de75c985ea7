#include "backends/precision.h"

#include <fstream>
#include <sstream>

namespace quilt::backends {

const std::vector<std::string>& precision_names() {
  static const std::vector<std::string> names = common::enum_names(kPrecisionNames);
  return names;
}

int64_t element_bytes(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return 4;
    case Precision::kBf16:
      return 2;
    case Precision::kInt8:
      return 1;
  }
  return 4;
}

bool cpu_has_native_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16") return true;
    return false;  // the first CPU's flags speak for all
  }
  return false;
}

}  // namespace quilt::backends
