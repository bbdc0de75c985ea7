// The parts of the XRT backend that need no XRT library: environment, naming conventions and
// the power JSON. Compiled in every build (xrt_board.cc or xrt_board_stub.cc add the rest).

#include "backends/xrt_board.h"

#include <fmt/format.h>

#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>

namespace quilt::backends {

namespace {

// Where CMake found libxrt_coreutil; the shims (libxrt_core, libxrt_noop) sit beside it.
#ifdef QUILT_XRT_LIBRARY_DIR
constexpr const char* kXrtLibraryDir = QUILT_XRT_LIBRARY_DIR;
#else
constexpr const char* kXrtLibraryDir = "";
#endif

std::string getenv_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

// Value of the first `"key": "value"` after `from` in `text` (XRT's JSON quotes every value).
std::optional<std::string> string_value(const std::string& text, const std::string& key,
                                        size_t from = 0, size_t to = std::string::npos) {
  size_t k = text.find("\"" + key + "\"", from);
  if (k == std::string::npos || (to != std::string::npos && k >= to)) return std::nullopt;
  size_t colon = text.find(':', k);
  if (colon == std::string::npos) return std::nullopt;
  size_t q1 = text.find_first_not_of(" \t\r\n", colon + 1);
  if (q1 == std::string::npos || text[q1] != '"') return std::nullopt;
  size_t q2 = text.find('"', q1 + 1);
  if (q2 == std::string::npos) return std::nullopt;
  return text.substr(q1 + 1, q2 - q1 - 1);
}

std::optional<double> number(const std::optional<std::string>& s) {
  if (!s || s->empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s->c_str(), &end);
  if (errno || end != s->c_str() + s->size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// The object `"key": { ... }` after `from` (no nested objects inside, as in XRT's rails).
std::optional<std::pair<size_t, size_t>> object_span(const std::string& text,
                                                     const std::string& key, size_t from,
                                                     size_t to) {
  size_t k = text.find("\"" + key + "\"", from);
  if (k == std::string::npos || k >= to) return std::nullopt;
  size_t open = text.find('{', k), close = text.find('}', k);
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  return std::make_pair(open, close);
}

}  // namespace

bool xrt_noop_active() { return getenv_or("XCL_EMULATION_MODE", "") == "noop"; }

std::string xrt_stage_kernel_name(size_t stage) { return fmt::format("quilt_stage{}", stage); }

unsigned xrt_default_device_index(std::string* source) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
                          "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    const char* v = std::getenv(var);
    if (!v || !*v) continue;
    char* end = nullptr;
    unsigned long n = std::strtoul(v, &end, 10);
    if (*end || n > 1u << 20) continue;
    if (source) *source = fmt::format("{}={}", var, v);
    return static_cast<unsigned>(n);
  }
  if (source) *source = "default";
  return 0;
}

std::optional<double> parse_electrical_power_w(const std::string& json) {
  if (auto w = number(string_value(json, "power_consumption_watts")); w && *w > 0) return w;
  // The board's input rails: what it draws from the slot and the aux connectors. The other
  // rails are fed from these, so adding them would count the same power twice.
  static const char* kInputRails[] = {"12v_pex", "12v_aux", "12v_aux1", "3v3_pex", "3v3_aux"};
  size_t rails = json.find("\"power_rails\"");
  if (rails == std::string::npos) return std::nullopt;
  double total = 0;
  bool any = false;
  for (const char* rail : kInputRails) {
    size_t id = json.find(fmt::format("\"{}\"", rail), rails);
    if (id == std::string::npos) continue;
    size_t next = json.find("\"id\"", id);
    if (next == std::string::npos) next = json.size();
    auto v = object_span(json, "voltage", id, next);
    auto c = object_span(json, "current", id, next);
    if (!v || !c) continue;
    auto present = [&](std::pair<size_t, size_t> span) {
      return string_value(json, "is_present", span.first, span.second).value_or("") == "true";
    };
    if (!present(*v) || !present(*c)) continue;
    auto volts = number(string_value(json, "volts", v->first, v->second));
    auto amps = number(string_value(json, "amps", c->first, c->second));
    if (!volts || !amps) continue;
    total += *volts * *amps;
    any = true;
  }
  if (!any || total <= 0) return std::nullopt;
  return total;
}

std::string prepare_xrt_environment() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (const char* set = std::getenv("XILINX_XRT"); set && *set)
    return fmt::format("XILINX_XRT={} (from the environment)", set);
  namespace fs = std::filesystem;
  const fs::path libdir = kXrtLibraryDir;
  if (libdir.empty()) return "XILINX_XRT unset (XRT backend not built)";
  // Xilinx's layout (/opt/xilinx/xrt/lib): the prefix is what XILINX_XRT names.
  if (libdir.filename() == "lib") {
    setenv("XILINX_XRT", libdir.parent_path().c_str(), 0);
    return fmt::format("XILINX_XRT={} (set by Quilt: the prefix of {})",
                       libdir.parent_path().string(), libdir.string());
  }
  // Debian's layout (/usr/lib/<multiarch>): a private directory whose lib/ links there. Several
  // ranks may do this at once: the link is made under a unique name and renamed into place.
  fs::path dir = fs::path(getenv_or("TMPDIR", "/tmp")) / fmt::format("quilt-xrt-{}", getuid());
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    throw BoardError(
        fmt::format("cannot create {} for XILINX_XRT: {}; set XILINX_XRT to a "
                    "directory whose lib/ holds XRT's shims ({})",
                    dir.string(), std::strerror(errno), libdir.string()));
  struct stat st {};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid())
    throw BoardError(
        fmt::format("{} is not a directory of this user; set XILINX_XRT to a "
                    "directory whose lib/ links to {}",
                    dir.string(), libdir.string()));
  const fs::path link = dir / "lib";
  std::error_code ec;
  if (fs::read_symlink(link, ec) != libdir) {
    fs::path tmp = dir / fmt::format("lib.{}", getpid());
    fs::remove(tmp, ec);
    if (symlink(libdir.c_str(), tmp.c_str()) != 0 || rename(tmp.c_str(), link.c_str()) != 0)
      throw BoardError(fmt::format("cannot link {} -> {} for XILINX_XRT: {}", link.string(),
                                   libdir.string(), std::strerror(errno)));
  }
  setenv("XILINX_XRT", dir.c_str(), 0);
  return fmt::format("XILINX_XRT={} (set by Quilt: lib -> {})", dir.string(), libdir.string());
}

}  // namespace quilt::backends
