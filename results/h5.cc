#include "results/h5.h"

#include "results/h5_internal.h"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace quilt::results::h5 {

using internal::check_name;
using internal::fail;

namespace {

// See Group::create_group.
constexpr unsigned kCompactAttributes = 64;

// Collects the descriptions of HDF5's current error stack, outermost (the API call) first.
herr_t collect_error(unsigned /*n*/, const H5E_error2_t* err, void* data) {
  auto* lines = static_cast<std::vector<std::string>*>(data);
  std::string line;
  if (err->func_name != nullptr) line += std::string(err->func_name) + ": ";
  line += err->desc != nullptr ? err->desc : "(no description)";
  lines->push_back(std::move(line));
  return 0;
}

// Set when an HDF5 call failed or a file id could not be closed: HDF5 may then report "infinite
// loop closing library" at exit unless its error printing is off, so ScopedErrorSilence leaves it
// off from then on.
std::atomic<bool> g_unclosed_file{false};

// HDF5's file driver reports an OS failure as one long line ("file write failed: time = ...,
// filename = ..., errno = 28, error message = '...', buf = 0x..., ..."); keep what it was doing and
// the OS's reason with its errno name.
std::string condense_os_error(const std::string& line) {
  const size_t at = line.find("errno = ");
  if (at == std::string::npos) return line;
  const int err = std::atoi(line.c_str() + at + 8);
  if (err <= 0) return line;
  size_t cut = line.find(": time = ");
  if (cut == std::string::npos) cut = line.find(", filename");
  std::string out = line.substr(0, cut == std::string::npos ? at : cut);
  out += std::string(": ") + std::strerror(err);
  if (const char* name = errno_name(err)) out += std::string(" (") + name + ")";
  return out;
}

// The outermost and the innermost entries say the most: what the API call was doing and the
// root cause (often with errno text). The middle of the stack is library plumbing.
std::string take_error_stack() {
  std::vector<std::string> lines;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &lines);
  H5Eclear2(H5E_DEFAULT);
  if (lines.empty()) return "no HDF5 error details";
  if (lines.size() == 1) return condense_os_error(lines.front());
  return lines.front() + " <- " + condense_os_error(lines.back());
}

// Cluster file systems (Lustre, some NFS mounts) often refuse flock(), and HDF5 >= 1.10 then
// refuses to open any file. Locking buys the atomic writer nothing (each write goes to its own
// temporary file), so use it where it works and go on without it where it does not.
void set_best_effort_locking(hid_t fapl, const std::string& where) {
#if H5_VERSION_GE(1, 10, 7)
  check(H5Pset_file_locking(fapl, /*use_file_locking=*/true, /*ignore_when_disabled=*/true), where,
        "H5Pset_file_locking");
#else
  (void)fapl;
  (void)where;
#endif
}

}  // namespace

namespace internal {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw ResultsError(where + ": " + what);
}

void check_name(const Location& loc, const std::string& name, const char* kind) {
  if (name.empty() || name == "." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    fail(loc.describe(), std::string("invalid ") + kind + " name '" + name +
                             "' (must be non-empty, not '.', without '/' or NUL)");
  }
}

}  // namespace internal

const char* errno_name(int err) {
  switch (err) {
    case ENOSPC:
      return "ENOSPC";
    case EROFS:
      return "EROFS";
    case EACCES:
      return "EACCES";
    case EPERM:
      return "EPERM";
    case EIO:
      return "EIO";
    case EDQUOT:
      return "EDQUOT";
    case ENAMETOOLONG:
      return "ENAMETOOLONG";
    case ENOTDIR:
      return "ENOTDIR";
    case ENOENT:
      return "ENOENT";
    case EFBIG:
      return "EFBIG";
    case EEXIST:
      return "EEXIST";
    default:
      return nullptr;
  }
}

ScopedErrorSilence::ScopedErrorSilence() {
  // Saving can only fail if the error stack id is bad; then leave printing as it is.
  if (H5Eget_auto2(H5E_DEFAULT, &func_, &data_) >= 0) {
    saved_ = true;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
}

ScopedErrorSilence::ScopedErrorSilence(ScopedErrorSilence&& other) noexcept
    : func_(other.func_), data_(other.data_), saved_(std::exchange(other.saved_, false)) {}

ScopedErrorSilence::~ScopedErrorSilence() {
  if (saved_ && !g_unclosed_file.load()) H5Eset_auto2(H5E_DEFAULT, func_, data_);
}

namespace {

// Closes a group, dataset, attribute, dataspace, datatype or property list with its own close
// function, anything else by dropping our reference.
herr_t close_id(hid_t id) {
  using Close = herr_t (*)(hid_t);
  static const std::pair<H5I_type_t, Close> kClose[] = {
      {H5I_GROUP, H5Gclose},     {H5I_DATASET, H5Dclose},  {H5I_ATTR, H5Aclose},
      {H5I_DATASPACE, H5Sclose}, {H5I_DATATYPE, H5Tclose}, {H5I_GENPROP_LST, H5Pclose}};
  const H5I_type_t type = H5Iget_type(id);
  for (const auto& [t, close] : kClose)
    if (t == type) return close(id);
  return H5Idec_ref(id) < 0 ? -1 : 0;
}

}  // namespace

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.release();
  }
  return *this;
}

hid_t Handle::release() { return std::exchange(id_, H5I_INVALID_HID); }

bool Handle::reset() {
  if (id_ < 0) return true;
  const hid_t id = release();
  herr_t status = -1;
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      status = H5Fclose(id);
      // A damaged file (a metadata checksum error) may refuse to close; the library would then
      // print "infinite loop closing library" at exit. Its printing stays off from here on.
      if (status < 0) {
        g_unclosed_file = true;
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
      }
      break;
    default:
      status = close_id(id);
      break;
  }
  // Destructors cannot throw; drop the error stack so it does not leak into the next report.
  if (status < 0) H5Eclear2(H5E_DEFAULT);
  return status >= 0;
}

std::string Location::child(const std::string& name) const {
  if (path.empty() || path == "/") return "/" + name;
  return path + "/" + name;
}

std::string Location::describe(const std::string& name) const {
  return file + ":" + (name.empty() ? (path.empty() ? "/" : path) : child(name));
}

int64_t check(int64_t status, const std::string& where, const std::string& what) {
  if (status < 0) {
    // After a failure (a damaged file: a metadata checksum error) HDF5 may hold objects it cannot
    // release, and would print "infinite loop closing library" and a line of junk at exit unless
    // its error printing is off then: it stays off (Quilt reports every failure itself).
    g_unclosed_file = true;
    fail(where, what + " failed: " + take_error_stack());
  }
  return status;
}

Group Group::create_group(const std::string& name, bool track_order) const {
  check_name(location_, name, "group");
  const std::string where = location_.describe(name);
  Handle gcpl(check(H5Pcreate(H5P_GROUP_CREATE), where, "H5Pcreate(H5P_GROUP_CREATE)"));
  // Attributes in the object header up to kCompactAttributes (HDF5's default is 8): a run group
  // has about 30, and dense storage gives each group its own fractal heap and B-tree, several
  // objects to allocate, write and read back per group. Past that they move to dense storage.
  check(H5Pset_attr_phase_change(gcpl.get(), kCompactAttributes, kCompactAttributes - 8), where,
        "H5Pset_attr_phase_change");
  if (track_order) {
    check(H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED),
          where, "H5Pset_link_creation_order");
  }
  Handle group(check(H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), where,
                     "H5Gcreate2"));
  return Group(std::move(group), Location{location_.file, location_.child(name)});
}

Group Group::open_group(const std::string& name) const {
  const std::string where = location_.describe(name);
  if (!has(name)) fail(where, "missing group");
  Handle group(check(H5Gopen2(id(), name.c_str(), H5P_DEFAULT), where, "H5Gopen2"));
  return Group(std::move(group), Location{location_.file, location_.child(name)});
}

bool Group::has(const std::string& name) const {
  if (name.empty() || name.find('/') != std::string::npos) return false;
  const htri_t exists = H5Lexists(id(), name.c_str(), H5P_DEFAULT);
  check(exists, location_.describe(name), "H5Lexists");
  return exists > 0;
}

std::vector<std::string> Group::child_names() const {
  const std::string where = location_.describe();
  H5G_info_t info;
  check(H5Gget_info(id(), &info), where, "H5Gget_info");
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t size =
        H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    check(size, where, "H5Lget_name_by_idx");
    std::vector<char> buffer(static_cast<size_t>(size) + 1, '\0');
    check(H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, buffer.data(), buffer.size(),
                             H5P_DEFAULT),
          where, "H5Lget_name_by_idx");
    names.emplace_back(buffer.data(), static_cast<size_t>(size));
  }
  return names;
}

void Group::close() {
  if (!handle_.valid()) return;
  check(H5Gclose(handle_.release()), location_.describe(), "H5Gclose");
}

File File::create(const std::string& path) {
  ScopedErrorSilence silence;
  const std::string where = path + ":/";
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), where, "H5Pcreate(H5P_FILE_ACCESS)"));
  // 1.8 format: dense attribute storage (no 64 KiB header limit) and creation-order tracking.
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), where,
        "H5Pset_libver_bounds");
  // SEMI: H5Fclose fails while objects are open, instead of silently deferring the real close;
  // the atomic writer must know the file is complete before it renames it.
  check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_SEMI), where, "H5Pset_fclose_degree");
  set_best_effort_locking(fapl.get(), where);
  Handle file(
      check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), where, "H5Fcreate"));
  // The guard moves into the File: a second guard here would restore printing on return, out of
  // order with the File's.
  return File(std::move(silence), std::move(file), path);
}

File File::open_read_write(const std::string& path) {
  ScopedErrorSilence silence;
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) throw ResultsError(path + ": not an HDF5 file (no HDF5 signature found)");
  if (is_hdf5 < 0) H5Eclear2(H5E_DEFAULT);
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), path, "H5Pcreate(H5P_FILE_ACCESS)"));
  check(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST), path,
        "H5Pset_libver_bounds");
  check(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_SEMI), path, "H5Pset_fclose_degree");
  set_best_effort_locking(fapl.get(), path);
  Handle file(check(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), path, "H5Fopen"));
  return File(std::move(silence), std::move(file), path);
}

File File::open_read_only(const std::string& path) {
  ScopedErrorSilence silence;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) throw ResultsError(path + ": results file not found");
    throw ResultsError(path + ": cannot access results file: " + std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) throw ResultsError(path + ": is a directory, not a results file");
  // Opening a FIFO would block until someone writes to it; a device is never a results file.
  if (!S_ISREG(st.st_mode))
    throw ResultsError(path +
                       ": is not a regular file (a FIFO, socket or device), not a results "
                       "file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 == 0) throw ResultsError(path + ": not an HDF5 file (no HDF5 signature found)");
  // A negative answer (the probe itself failed) is left to H5Fopen, whose error says more.
  if (is_hdf5 < 0) H5Eclear2(H5E_DEFAULT);
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), path, "H5Pcreate(H5P_FILE_ACCESS)"));
  set_best_effort_locking(fapl.get(), path);
  Handle file(check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), path, "H5Fopen"));
  // The guard moves into the File: a second guard here would restore printing on return, out of
  // order with the File's.
  return File(std::move(silence), std::move(file), path);
}

void File::close() {
  root_.close();
  if (!file_.valid()) return;
  const herr_t status = H5Fclose(file_.release());
  if (status < 0) {
    g_unclosed_file = true;  // see Handle::reset
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  check(status, path_, "H5Fclose");
}

}  // namespace quilt::results::h5
