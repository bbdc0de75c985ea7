#include "cli/boards_cmd.h"

#include "backends/profile.h"
#include "backends/xrt_board.h"
#include "cli/cli.h"
#include "harness/experiment.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace quilt::harness {

namespace {

constexpr int kOk = 0, kNoBoards = 1, kUsage = 2;

struct Options {
  std::vector<size_t> sizes_mib = {4, 16, 64};
  int repeats = 5;
  int device = -1;  // all
  std::string xclbin;
  bool bandwidth = true;
};

// A positive integer option value, or an error naming the option.
bool positive(const std::string& text, int64_t max, int64_t* out) {
  try {
    size_t used = 0;
    long long v = std::stoll(text, &used);
    if (used != text.size() || v < 1 || v > max) return false;
    *out = v;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string power_text(const std::optional<double>& w) {
  return w ? fmt::format("{:.1f} W", *w) : "unavailable";
}

void print_profiles() {
  fmt::print(
      "\nboard profiles (built in; `boards.profile` in experiments, `quilt plan` predicts "
      "with them):\n");
  fmt::print("{:<12} {:>10} {:>6} {:>9} {:>9} {:>12}  {}\n", "name", "peak TF/s", "eff.",
             "H2D GB/s", "D2H GB/s", "power W", "description");
  for (const auto& name : backends::builtin_board_profiles()) {
    try {
      auto p = backends::load_board_profile(name);
      std::string power = "-";
      if (p.power_idle_w && p.power_busy_w)
        power = fmt::format("{:.0f}..{:.0f}", *p.power_idle_w, *p.power_busy_w);
      else if (p.power_busy_w)
        power = fmt::format("<= {:.0f}", *p.power_busy_w);
      else if (p.power_idle_w)
        power = fmt::format(">= {:.0f}", *p.power_idle_w);
      std::string desc = p.description.substr(0, p.description.find('\n'));
      fmt::print("{:<12} {:>10.2f} {:>6.2f} {:>9.1f} {:>9.1f} {:>12}  {}\n", name,
                 p.board.peak_flops / 1e12, p.board.efficiency, p.board.h2d_gbps, p.board.d2h_gbps,
                 power, desc);
    } catch (const std::exception& e) {
      fmt::print("{:<12} cannot be loaded: {}\n", name, e.what());
    }
  }
}

// --size's value: comma-separated buffer sizes in MiB, each from 1 to 16384.
std::vector<size_t> parse_sizes(const std::string& v) {
  std::vector<size_t> sizes_mib;
  int64_t n = 0;
  for (size_t pos = 0; pos <= v.size();) {
    size_t comma = v.find(',', pos);
    std::string part = v.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!positive(part, 16384, &n))
      throw ConfigError("<command line>", 0, 0, "--size",
                        fmt::format("needs buffer sizes in MiB from 1 to 16384, comma-separated "
                                    "(got `{}`) (see `quilt boards --help`)",
                                    v));
    sizes_mib.push_back(static_cast<size_t>(n));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return sizes_mib;
}

// XRT's version and environment, and a note when its noop shim is active.
void print_xrt_header() {
  std::string env;
  try {
    env = backends::prepare_xrt_environment();
  } catch (const std::exception& e) {
    env = e.what();
  }
  fmt::print("XRT {}: {}\n", backends::xrt_version(), env);
  if (backends::xrt_noop_active())
    fmt::print(
        "note: XCL_EMULATION_MODE=noop: XRT's noop shim is active; the {} device(s) "
        "below are simulated (QUILT_XRT_NOOP_DEVICES), nothing is computed and the "
        "bandwidths mean nothing\n",
        [] {
          try {
            return std::to_string(backends::xrt_device_count());
          } catch (const std::exception&) {
            return std::string("?");
          }
        }());
}

// One line per device; kNoBoards when one cannot be opened.
int print_devices(const std::vector<backends::XrtDeviceInfo>& devices) {
  int rc = kOk;
  fmt::print("\nXRT devices: {}\n", devices.size());
  fmt::print("{:<6} {:<40} {:<14} {:<38} {}\n", "index", "name", "BDF", "xclbin uuid", "power");
  for (const auto& d : devices) {
    if (!d.error.empty()) {
      fmt::print("{:<6} cannot be opened: {}\n", d.index, d.error);
      rc = kNoBoards;
      continue;
    }
    fmt::print("{:<6} {:<40} {:<14} {:<38} {}\n", d.index, d.name, d.bdf, d.xclbin_uuid,
               power_text(d.power_w));
  }
  return rc;
}

// The host<->board bandwidth of the devices --device selects; kNoBoards when one fails.
int print_bandwidth(const std::vector<backends::XrtDeviceInfo>& devices, const Options& o) {
  int rc = kOk;
  fmt::print(
      "\nhost<->board bandwidth (median of {} timed syncs each way per size; "
      "1 GB/s = 1e9 B/s):\n",
      o.repeats);
  fmt::print("{:<6} {:>9} {:>10} {:>10}\n", "device", "size MiB", "H2D GB/s", "D2H GB/s");
  std::vector<size_t> bytes;
  for (auto m : o.sizes_mib) bytes.push_back(m << 20);
  for (const auto& d : devices) {
    if (o.device >= 0 && static_cast<int>(d.index) != o.device) continue;
    if (!d.error.empty()) continue;
    try {
      for (const auto& b : backends::measure_xrt_bandwidth(d.index, bytes, o.repeats, o.xclbin))
        fmt::print("{:<6} {:>9} {:>10.2f} {:>10.2f}\n", d.index, b.bytes >> 20, b.h2d_gbps,
                   b.d2h_gbps);
    } catch (const std::exception& e) {
      fmt::print("{:<6} unavailable: {}\n", d.index, e.what());
      rc = kNoBoards;
    }
  }
  if (backends::xrt_noop_active())
    fmt::print("(noop shim: its syncs move no data; these bandwidths mean nothing)\n");
  return rc;
}

// The XRT part of the report: kOk, kNoBoards (no XRT, no device, or one failed) or kUsage (no
// such --device; then nothing more is printed).
int print_xrt(const Options& o) {
  if (!backends::xrt_built()) {
    fmt::print(
        "XRT: not built: this quilt has no XRT backend, so it cannot see Alveo boards "
        "(install libxrt-dev and uuid-dev and reconfigure)\n");
    return kNoBoards;
  }
  print_xrt_header();
  std::vector<backends::XrtDeviceInfo> devices;
  try {
    devices = backends::list_xrt_devices();
  } catch (const std::exception& e) {
    fmt::print("XRT devices: cannot enumerate: {}\n", e.what());
  }
  if (devices.empty()) {
    fmt::print(
        "XRT devices: none found. Check that the board is installed (lspci -d 10ee:), "
        "that XRT's drivers xocl and xclmgmt are loaded, and XILINX_XRT; to try the "
        "software path without a board set XCL_EMULATION_MODE=noop\n");
    return kNoBoards;
  }
  int rc = print_devices(devices);
  if (o.device >= static_cast<int>(devices.size())) {
    fmt::print(stderr, "quilt boards: --device: no device {}; this host has {} (0..{})\n", o.device,
               devices.size(), devices.size() - 1);
    return kUsage;
  }
  if (o.bandwidth) rc = std::max(rc, print_bandwidth(devices, o));
  return rc;
}

}  // namespace

int cmd_boards(int argc, char** argv) {
  Options o;
  cli::Parser p("boards",
                "The XRT devices (Alveo boards) here: name, PCIe BDF, loaded xclbin, power; the "
                "host<->board DMA bandwidth of each; the built-in board profiles. Exit 1 when XRT "
                "is not built or no device is found.");
  p.option("--size", "MIB[,MIB...]", "DMA buffer sizes to measure, MiB (default 4,16,64)",
           [&](const std::string& v) { o.sizes_mib = parse_sizes(v); })
      .option("--repeats", "N", "timed syncs each way, median kept (default 5)", &o.repeats, 1)
      .option("--device", "N", "only this device (default: all)", &o.device, 0)
      .option("--xclbin", "FILE", "load this xclbin before measuring", &o.xclbin)
      .flag("--no-bandwidth", "list the devices without measuring", [&] { o.bandwidth = false; })
      .note("XCL_EMULATION_MODE=noop runs XRT's noop shim (no board; its numbers mean nothing).")
      .example("quilt boards --size 16 --repeats 10");
  try {
    if (!p.parse(argc, argv)) return kOk;
  } catch (const ConfigError& e) {
    fmt::print(stderr, "quilt boards: error: {}\n", e.what());
    return kUsage;
  }

  const int rc = print_xrt(o);
  if (rc == kUsage) return rc;
  print_profiles();
  std::fflush(stdout);
  return rc;
}

}  // namespace quilt::harness
