// The XRT board through XRT's native C++ API. XRT reports every failure as a
// std::runtime_error; each call goes through xrt_call(), which turns it into a BoardError that
// says what was being done and what to check.

#include "backends/xrt_board.h"

#include "common/enum_table.h"
#include "models/model.h"
#include "models/quilt_model.h"

#include <experimental/xrt_system.h>
#include <experimental/xrt_xclbin.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <version.h>
#include <xclbin.h>
#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

namespace quilt::backends {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs one XRT call; a std::exception from XRT becomes a BoardError naming what was being done
// (`doing`, "opening XRT device 0") and what to check (`check`, may be empty).
template <typename F>
auto xrt_call(const std::string& doing, const std::string& check, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const BoardError&) {
    throw;
  } catch (const std::exception& e) {
    throw BoardError(
        fmt::format("XRT failed {}: {}{}", doing, e.what(), check.empty() ? "" : "; " + check));
  }
}

// A get_info query that the device may not support (the noop shim supports few): "unknown".
template <xrt::info::device Param>
std::string info_or_unknown(const xrt::device& device) {
  try {
    return device.template get_info<Param>();
  } catch (const std::exception&) {
    return "unknown";
  }
}

std::string uuid_text(const xrt::uuid& uuid) {
  std::string s = uuid.to_string();
  return s == "00000000-0000-0000-0000-000000000000" ? "none" : s;
}

std::optional<double> read_power_w(const xrt::device& device) {
  try {
    return parse_electrical_power_w(device.get_info<xrt::info::device::electrical>());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "65:00.1" and "0000:65:00.1" name the same device.
std::string normalize_bdf(const std::string& bdf) {
  std::string s = lower(bdf);
  if (std::count(s.begin(), s.end(), ':') == 1) s = "0000:" + s;
  return s;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 6 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

constexpr common::EnumTable<ert_cmd_state, 9> kStateNames = {{
    {ERT_CMD_STATE_NEW, "NEW"},
    {ERT_CMD_STATE_QUEUED, "QUEUED"},
    {ERT_CMD_STATE_RUNNING, "RUNNING"},
    {ERT_CMD_STATE_COMPLETED, "COMPLETED"},
    {ERT_CMD_STATE_ERROR, "ERROR"},
    {ERT_CMD_STATE_ABORT, "ABORT"},
    {ERT_CMD_STATE_SUBMITTED, "SUBMITTED"},
    {ERT_CMD_STATE_TIMEOUT, "TIMEOUT"},
    {ERT_CMD_STATE_NORESPONSE, "NORESPONSE"},
}};

// The table's names are string literals: NUL-terminated.
const char* state_name(ert_cmd_state state) {
  const std::string_view name = common::enum_name(kStateNames, state);
  return name == "?" ? "UNKNOWN" : name.data();
}

// The devices that exist, for error messages: "0 (name, bdf), 1 (...)".
std::string device_list_text() {
  std::string out;
  for (const auto& d : list_xrt_devices()) {
    out += fmt::format("{}{} ({}, BDF {})", out.empty() ? "" : ", ", d.index, d.name, d.bdf);
  }
  return out.empty() ? "none" : out;
}

std::string no_device_hint() {
  return "check that the board is installed (lspci -d 10ee:), that XRT's drivers xocl and "
         "xclmgmt are loaded, and XILINX_XRT; to test without a board set "
         "XCL_EMULATION_MODE=noop";
}

// Opens the device `spec` names (index, BDF, or empty: the rank's node-local index).
std::pair<xrt::device, unsigned> open_device(const std::string& spec) {
  prepare_xrt_environment();
  const unsigned count = xrt_device_count();
  if (count == 0)
    throw BoardError(fmt::format("no XRT device found on this host; {}", no_device_hint()));
  unsigned index = 0;
  std::string from;
  if (spec.empty() || is_index(spec)) {
    if (spec.empty()) {
      index = xrt_default_device_index(&from);
      from = fmt::format(" (the rank's node-local index, {}; set boards.devices to choose)", from);
    } else {
      index = static_cast<unsigned>(std::stoul(spec));
      from = " (boards.devices)";
    }
    if (index >= count)
      throw BoardError(fmt::format("no XRT device with index {}{}: this host has {} device(s): {}",
                                   index, from, count, device_list_text()));
  } else {
    const std::string want = normalize_bdf(spec);
    bool found = false;
    std::string seen;
    for (unsigned i = 0; i < count && !found; ++i) {
      xrt::device d =
          xrt_call(fmt::format("opening XRT device {}", i), "", [&] { return xrt::device(i); });
      std::string bdf = info_or_unknown<xrt::info::device::bdf>(d);
      seen += fmt::format("{}{} ({})", seen.empty() ? "" : ", ", bdf, i);
      if (normalize_bdf(bdf) == want) {
        index = i;
        found = true;
      }
    }
    if (!found)
      throw BoardError(fmt::format(
          "no XRT device with PCIe BDF `{}` (boards.devices); the devices here have: {}; give a "
          "BDF as lspci shows it (0000:65:00.1) or a device index",
          spec, seen.empty() ? "none" : seen));
  }
  xrt::device device = xrt_call(fmt::format("opening XRT device {}", index), no_device_hint(),
                                [&] { return xrt::device(index); });
  return {std::move(device), index};
}

// A synthetic xclbin (tests) has no bitstream: refuse it unless an emulation shim is active.
void refuse_bitstreamless_on_hardware(const std::string& path) {
  if (std::getenv("XCL_EMULATION_MODE")) return;
  std::ifstream in(path, std::ios::binary);
  axlf top{};
  if (!in.read(reinterpret_cast<char*>(&top), sizeof top) ||
      std::memcmp(top.m_magic, "xclbin2", 8) != 0)
    throw BoardError(
        fmt::format("{} is not an xclbin (no `xclbin2` magic); give the .xclbin "
                    "that v++ --link wrote",
                    path));
  std::vector<axlf_section_header> headers(top.m_header.m_numSections);
  if (!headers.empty()) {
    headers[0] = top.m_sections[0];
    in.read(reinterpret_cast<char*>(headers.data() + 1),
            static_cast<std::streamsize>((headers.size() - 1) * sizeof(axlf_section_header)));
  }
  for (const auto& h : headers)
    if (h.m_sectionKind == BITSTREAM || h.m_sectionKind == PDI ||
        h.m_sectionKind == BITSTREAM_PARTIAL_PDI)
      return;
  throw BoardError(fmt::format(
      "{} has no bitstream section: it looks like a synthetic xclbin for XRT's noop shim; refusing "
      "to load it on a real board (set XCL_EMULATION_MODE=noop to test with it)",
      path));
}

xrt::xclbin read_xclbin(const std::string& path) {
  return xrt_call(fmt::format("reading xclbin `{}`", path),
                  "is it an xclbin built by v++ --link for this board?",
                  [&] { return xrt::xclbin(path); });
}

// Kernel `name` (of stage `stage`) of `xclbin`, read from `path`; a BoardError listing the
// kernels it has when it lacks that one.
xrt::xclbin::kernel find_kernel(const xrt::xclbin& xclbin, const std::string& path,
                                const std::string& name, size_t stage) {
  std::vector<std::string> names;
  xrt::xclbin::kernel found;
  for (const auto& k :
       xrt_call("listing the kernels of " + path, "", [&] { return xclbin.get_kernels(); })) {
    names.push_back(k.get_name());
    if (k.get_name() == name) found = k;
  }
  if (!found)
    throw BoardError(fmt::format(
        "kernel `{}` (stage {}) is not in xclbin `{}`; it has: {}. By Quilt's convention stage k "
        "runs kernel quilt_stage<k>(float* in, float* out, uint batch)",
        name, stage, path,
        names.empty() ? "no kernels" : fmt::format("{}", fmt::join(names, ", "))));
  return found;
}

}  // namespace

bool xrt_built() { return true; }

std::string xrt_version() { return xrt_build_version; }

unsigned xrt_device_count() {
  prepare_xrt_environment();
  if (xrt_noop_active()) {
    // The noop shim opens any index; Quilt gives it a fixed number of devices.
    const char* n = std::getenv("QUILT_XRT_NOOP_DEVICES");
    if (n && *n) {
      char* end = nullptr;
      unsigned long v = std::strtoul(n, &end, 10);
      if (!*end && v <= 1024) return static_cast<unsigned>(v);
    }
    return 4;
  }
  return xrt_call("counting XRT devices", no_device_hint(),
                  [] { return xrt::system::enumerate_devices(); });
}

void check_xrt_stage(const std::string& device, const std::string& xclbin,
                     const std::string& kernel, size_t stage) {
  open_device(device);
  if (!std::filesystem::is_regular_file(xclbin))
    throw BoardError(
        fmt::format("boards.xclbin: `{}` does not exist (a path relative to the "
                    "directory quilt run starts in)",
                    xclbin));
  const std::string name = kernel.empty() ? xrt_stage_kernel_name(stage) : kernel;
  find_kernel(read_xclbin(xclbin), xclbin, name, stage);
}

std::vector<XrtDeviceInfo> list_xrt_devices() {
  const unsigned count = xrt_device_count();
  std::vector<XrtDeviceInfo> out;
  for (unsigned i = 0; i < count; ++i) {
    XrtDeviceInfo info;
    info.index = i;
    try {
      xrt::device d(i);
      info.name = info_or_unknown<xrt::info::device::name>(d);
      info.bdf = info_or_unknown<xrt::info::device::bdf>(d);
      try {
        info.xclbin_uuid = uuid_text(d.get_xclbin_uuid());
      } catch (const std::exception&) {
        info.xclbin_uuid = "unknown";
      }
      info.power_w = read_power_w(d);
    } catch (const std::exception& e) {
      info.name = info.bdf = info.xclbin_uuid = "unknown";
      info.error = e.what();
    }
    out.push_back(std::move(info));
  }
  return out;
}

std::vector<XrtBandwidth> measure_xrt_bandwidth(unsigned index, const std::vector<size_t>& sizes,
                                                int repeats, const std::string& xclbin, int bank) {
  if (repeats < 1) throw BoardError(fmt::format("repeats must be >= 1 (got {})", repeats));
  auto [device, opened] = open_device(std::to_string(index));
  if (!xclbin.empty()) {
    if (!std::filesystem::is_regular_file(xclbin))
      throw BoardError(fmt::format("xclbin `{}` does not exist", xclbin));
    refuse_bitstreamless_on_hardware(xclbin);
    xrt_call(fmt::format("loading {} on device {}", xclbin, index), "",
             [&] { return device.load_xclbin(xclbin); });
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  std::vector<XrtBandwidth> out;
  for (size_t bytes : sizes) {
    const std::string what =
        fmt::format("a {} MiB buffer in bank {} of device {}", bytes >> 20, bank, index);
    xrt::bo bo = xrt_call("allocating " + what,
                          "a board needs an xclbin loaded to know its memory banks: pass "
                          "--xclbin FILE, or a smaller --size",
                          [&] {
                            return xrt::bo(device, bytes, xrt::bo::flags::normal,
                                           static_cast<xrt::memory_group>(bank));
                          });
    xrt_call("filling " + what, "", [&] {
      auto* p = bo.map<unsigned char*>();
      for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(i * 131u);
    });
    std::vector<double> h2d, d2h;
    xrt_call("syncing " + what, "", [&] {
      bo.sync(XCL_BO_SYNC_BO_TO_DEVICE);  // warm-up: pins pages, maps the DMA
      bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE);
      for (int r = 0; r < repeats; ++r) {
        auto t0 = Clock::now();
        bo.sync(XCL_BO_SYNC_BO_TO_DEVICE);
        h2d.push_back(seconds_since(t0));
        auto t1 = Clock::now();
        bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE);
        d2h.push_back(seconds_since(t1));
      }
    });
    XrtBandwidth b;
    b.bytes = bytes;
    b.repeats = repeats;
    auto gbps = [&](double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0.0; };
    b.h2d_gbps = gbps(median(h2d));
    b.d2h_gbps = gbps(median(d2h));
    out.push_back(b);
  }
  return out;
}

struct XrtBoard::Impl {
  xrt::device device;
  unsigned index = 0;
  std::string name, bdf;
  std::string xclbin_path, kernel_name;
  xrt::uuid uuid;
  xrt::kernel kernel;
  xrt::bo in, out;
  xrt::run run;
  std::vector<int64_t> in_shape, out_shape;  // with the batch dimension
  size_t in_bytes = 0, out_bytes = 0;
  at::ScalarType in_dtype = at::kFloat, out_dtype = at::kFloat;  // per boards.precision
  double h2d_s = 0, kernel_s = 0, d2h_s = 0;

  // Power window: a sampler thread appends (seconds since start, watts) until stopped.
  std::thread sampler;
  std::mutex mutex;
  std::condition_variable wake;
  bool stop = false;
  std::vector<std::pair<double, std::optional<double>>> samples;
  std::optional<double> average_w;

  void stop_sampler() {
    if (!sampler.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
    }
    wake.notify_all();
    sampler.join();
  }
  ~Impl() { stop_sampler(); }
};

XrtBoard::XrtBoard(XrtBoardOptions options) : options_(options) {}

XrtBoard::~XrtBoard() = default;

std::string XrtBoard::description() const {
  const char* noop =
      xrt_noop_active() ? " [XRT noop shim: nothing computed, timings meaningless]" : "";
  if (!impl_) return fmt::format("Alveo board through XRT {} (not loaded){}", xrt_version(), noop);
  return fmt::format("Alveo {} (XRT {}, device {}, BDF {}; xclbin {} uuid {}; kernel {}){}",
                     impl_->name, xrt_version(), impl_->index, impl_->bdf, impl_->xclbin_path,
                     uuid_text(impl_->uuid), impl_->kernel_name, noop);
}

namespace {

// What load() can check before touching XRT.
void check_assignment(const StageAssignment& a) {
  if (!a.model) throw BoardError("xrt board: the stage assignment has no model");
  const auto& model = *a.model;
  if (a.stage >= model.num_stages())
    throw BoardError(fmt::format("stage {} does not exist: the model has {} stage(s)", a.stage,
                                 model.num_stages()));
  if (a.batch_size < 1) throw BoardError(fmt::format("batch size {} must be >= 1", a.batch_size));
  if (a.batch_size > UINT32_MAX)
    throw BoardError(
        fmt::format("batch size {} does not fit the kernel's uint argument", a.batch_size));
  if (a.xclbin.empty())
    throw BoardError("xrt board: no xclbin given (boards.xclbin: the kernel binary to load)");
  if (!std::filesystem::is_regular_file(a.xclbin))
    throw BoardError(
        fmt::format("xclbin `{}` does not exist or is not a file (boards.xclbin); "
                    "give the path of the .xclbin that v++ --link wrote",
                    a.xclbin));
}

// The shapes, dtypes and sizes of the stage's input and output batches.
void set_tensors(XrtBoard::Impl& b, const StageAssignment& a) {
  const auto& model = *a.model;
  const auto& spec = model.stage(a.stage);
  b.in_shape = {a.batch_size};
  b.in_shape.insert(b.in_shape.end(), spec.in_shape.begin(), spec.in_shape.end());
  b.out_shape = {a.batch_size};
  b.out_shape.insert(b.out_shape.end(), spec.out_shape.begin(), spec.out_shape.end());
  // Tensors between stages are in the wire format of the precision (bf16, int8's uint8 codes);
  // the model's input and output are float32.
  auto wire = [&](bool wired) {
    if (!wired || a.precision == Precision::kFp32) return at::kFloat;
    return a.precision == Precision::kBf16 ? at::kBFloat16 : at::kByte;
  };
  b.in_dtype = wire(a.stage > 0);
  b.out_dtype = wire(a.stage + 1 < model.num_stages());
  auto bytes_of = [](const std::vector<int64_t>& shape, at::ScalarType dtype) {
    size_t n = c10::elementSize(dtype);
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
  };
  b.in_bytes = bytes_of(b.in_shape, b.in_dtype);
  b.out_bytes = bytes_of(b.out_shape, b.out_dtype);
}

// The kernel's buffers, zeroed on the board, and its run with the arguments set.
void allocate_buffers(XrtBoard::Impl& b, int64_t batch_size) {
  const std::string& kname = b.kernel_name;
  b.in = xrt_call(fmt::format("allocating the {}-byte input buffer of `{}`", b.in_bytes, kname),
                  "is the batch too large for the bank the xclbin connects argument 0 to?",
                  [&] { return xrt::bo(b.device, b.in_bytes, b.kernel.group_id(0)); });
  b.out = xrt_call(fmt::format("allocating the {}-byte output buffer of `{}`", b.out_bytes, kname),
                   "is the batch too large for the bank the xclbin connects argument 1 to?",
                   [&] { return xrt::bo(b.device, b.out_bytes, b.kernel.group_id(1)); });
  // Defined contents from the start: a kernel that writes only part of its output (or the noop
  // shim, which writes nothing) must not hand the pipeline uninitialised memory.
  xrt_call("clearing the buffers", "", [&] {
    std::memset(b.in.map(), 0, b.in_bytes);
    std::memset(b.out.map(), 0, b.out_bytes);
    b.in.sync(XCL_BO_SYNC_BO_TO_DEVICE);
    b.out.sync(XCL_BO_SYNC_BO_TO_DEVICE);
  });
  xrt_call(fmt::format("setting the arguments of `{}`", kname), "", [&] {
    b.run = xrt::run(b.kernel);
    b.run.set_arg(0, b.in);
    b.run.set_arg(1, b.out);
    b.run.set_arg(2, static_cast<uint32_t>(batch_size));
  });
}

}  // namespace

void XrtBoard::load(const StageAssignment& a) {
  check_assignment(a);
  refuse_bitstreamless_on_hardware(a.xclbin);
  impl_.reset();
  auto impl = std::make_unique<Impl>();
  auto [device, index] = open_device(a.device);
  impl->device = std::move(device);
  impl->index = index;
  impl->name = info_or_unknown<xrt::info::device::name>(impl->device);
  impl->bdf = info_or_unknown<xrt::info::device::bdf>(impl->device);
  impl->xclbin_path = a.xclbin;
  impl->kernel_name = a.kernel.empty() ? xrt_stage_kernel_name(a.stage) : a.kernel;
  const std::string& kname = impl->kernel_name;

  xrt::xclbin xclbin = read_xclbin(a.xclbin);
  const xrt::xclbin::kernel found = find_kernel(xclbin, a.xclbin, kname, a.stage);
  if (found.get_num_args() != 3)
    throw BoardError(fmt::format(
        "kernel `{}` in `{}` has {} argument(s); Quilt's convention is 3: (float* in, float* out, "
        "uint batch)",
        kname, a.xclbin, found.get_num_args()));
  impl->uuid = xrt_call(fmt::format("loading xclbin `{}` on device {}", a.xclbin, index),
                        "was it built for this board's shell (platform)? `xbutil examine` names "
                        "the shell",
                        [&] { return impl->device.load_xclbin(xclbin); });
  impl->kernel = xrt_call(fmt::format("opening kernel `{}` of `{}`", kname, a.xclbin), "",
                          [&] { return xrt::kernel(impl->device, impl->uuid, kname); });
  set_tensors(*impl, a);
  allocate_buffers(*impl, a.batch_size);
  impl_ = std::move(impl);
}

at::Tensor XrtBoard::run(const at::Tensor& input) {
  if (!impl_) throw BoardError("xrt board: run() before load()");
  Impl& b = *impl_;
  if (input.scalar_type() != b.in_dtype || !input.is_contiguous() ||
      static_cast<size_t>(input.nbytes()) != b.in_bytes)
    throw BoardError(
        fmt::format("xrt board: the input must be a contiguous {} tensor of "
                    "shape {} ({} bytes); got {} {}",
                    c10::toString(b.in_dtype), fmt::join(b.in_shape, "x"), b.in_bytes,
                    fmt::join(input.sizes().vec(), "x"), std::string(input.dtype().name())));
  at::Tensor output = at::empty(b.out_shape, b.out_dtype);
  auto t0 = Clock::now();
  xrt_call("copying the input to the board (H2D)", "", [&] {
    b.in.write(input.data_ptr());
    b.in.sync(XCL_BO_SYNC_BO_TO_DEVICE);
  });
  b.h2d_s = seconds_since(t0);
  auto t1 = Clock::now();
  ert_cmd_state state = xrt_call(fmt::format("running kernel `{}`", b.kernel_name), "", [&] {
    b.run.start();
    return b.run.wait(std::chrono::milliseconds(options_.kernel_timeout_ms));
  });
  b.kernel_s = seconds_since(t1);
  if (state != ERT_CMD_STATE_COMPLETED) {
    if (state == ERT_CMD_STATE_TIMEOUT) {
      try {
        b.run.abort();
      } catch (const std::exception&) {
        // The board may be past help; the BoardError below says what happened.
      }
    }
    throw BoardError(fmt::format(
        "kernel `{}` on device {} ended in state {} ({}), not COMPLETED{}", b.kernel_name, b.index,
        state_name(state), static_cast<int>(state),
        state == ERT_CMD_STATE_TIMEOUT
            ? fmt::format(" after {} ms; a kernel that never finishes often reads its arguments "
                          "in another order than (in, out, batch)",
                          options_.kernel_timeout_ms)
            : ""));
  }
  auto t2 = Clock::now();
  xrt_call("copying the output from the board (D2H)", "", [&] {
    b.out.sync(XCL_BO_SYNC_BO_FROM_DEVICE);
    b.out.read(output.data_ptr());
  });
  b.d2h_s = seconds_since(t2);
  return output;
}

double XrtBoard::last_h2d_s() const { return impl_ ? impl_->h2d_s : 0; }
double XrtBoard::last_kernel_s() const { return impl_ ? impl_->kernel_s : 0; }
double XrtBoard::last_d2h_s() const { return impl_ ? impl_->d2h_s : 0; }
unsigned XrtBoard::device_index() const { return impl_ ? impl_->index : 0; }

void XrtBoard::start_power_window() {
  if (!impl_) throw BoardError("xrt board: start_power_window() before load()");
  Impl& b = *impl_;
  b.stop_sampler();
  b.samples.clear();
  b.stop = false;
  const auto start = Clock::now();
  const auto period = std::chrono::duration<double>(1.0 / std::max(options_.power_sample_hz, 0.1));
  b.samples.emplace_back(0.0, read_power_w(b.device));
  b.sampler = std::thread([&b, start, period] {
    std::unique_lock<std::mutex> lock(b.mutex);
    while (!b.wake.wait_for(lock, period, [&] { return b.stop; })) {
      lock.unlock();
      auto w = read_power_w(b.device);
      double t = seconds_since(start);
      lock.lock();
      b.samples.emplace_back(t, w);
    }
    lock.unlock();
    auto w = read_power_w(b.device);  // the window's end
    lock.lock();
    b.samples.emplace_back(seconds_since(start), w);
  });
}

std::optional<double> XrtBoard::stop_power_window() {
  if (!impl_) return std::nullopt;
  Impl& b = *impl_;
  b.stop_sampler();
  // Trapezoids between consecutive readings that both exist; none -> unavailable.
  double energy = 0, covered = 0;
  for (size_t i = 1; i < b.samples.size(); ++i) {
    const auto& [t0, w0] = b.samples[i - 1];
    const auto& [t1, w1] = b.samples[i];
    if (!w0 || !w1) continue;
    energy += 0.5 * (*w0 + *w1) * (t1 - t0);
    covered += t1 - t0;
  }
  if (covered <= 0) {
    b.average_w.reset();
    return std::nullopt;
  }
  b.average_w = energy / covered;
  // Scale to the whole window when some readings were missing.
  return *b.average_w * b.samples.back().first;
}

std::optional<double> XrtBoard::window_average_power_w() const {
  return impl_ ? impl_->average_w : std::nullopt;
}

}  // namespace quilt::backends
