#include "results/h5.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace quilt::results::h5 {
namespace {

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

// Variable-length strings cannot hold a NUL byte: HDF5 would silently truncate at it.
void check_no_nul(const std::string& where, const std::string& value) {
  if (value.find('\0') != std::string::npos) {
    fail(where, "string value contains a NUL byte, which HDF5 strings cannot store");
  }
}

Handle make_vlen_string_type(const std::string& where) {
  Handle type(check(H5Tcopy(H5T_C_S1), where, "H5Tcopy(H5T_C_S1)"));
  check(H5Tset_size(type.get(), H5T_VARIABLE), where, "H5Tset_size(H5T_VARIABLE)");
  check(H5Tset_cset(type.get(), H5T_CSET_UTF8), where, "H5Tset_cset(UTF8)");
  return type;
}

// A dataset transfer property list whose type-conversion buffer fits `n` elements of at most
// `element_bytes` each. HDF5 1.10 allocates and zeroes the whole conversion buffer (and the
// background buffer) on every H5Dread/H5Dwrite that converts, 1 MiB each by default: for the
// few-element datasets of a run that was most of the cost of appending one (and its page faults
// grew with the process's heap). A larger selection is converted in strips of this size.
Handle transfer_list(size_t n, size_t element_bytes, const std::string& where) {
  constexpr size_t kMaxBytes = size_t{1} << 20;  // HDF5's default
  const size_t element = std::max<size_t>(element_bytes, 16);
  const size_t bytes = std::max(element, std::min(kMaxBytes, std::max<size_t>(n, 1) * element));
  Handle dxpl(check(H5Pcreate(H5P_DATASET_XFER), where, "H5Pcreate(H5P_DATASET_XFER)"));
  check(H5Pset_buffer(dxpl.get(), bytes, nullptr, nullptr), where, "H5Pset_buffer");
  return dxpl;
}

// See Group::create_group.
constexpr unsigned kCompactAttributes = 64;

Handle make_scalar_space(const std::string& where) {
  return Handle(check(H5Screate(H5S_SCALAR), where, "H5Screate(H5S_SCALAR)"));
}

Handle make_1d_space(const std::string& where, size_t n) {
  const hsize_t dims[1] = {static_cast<hsize_t>(n)};
  return Handle(check(H5Screate_simple(1, dims, nullptr), where, "H5Screate_simple"));
}

// How many elements a dataspace holds, and its rank.
struct SpaceShape {
  int rank = 0;
  hssize_t points = 0;
};

SpaceShape space_shape(hid_t space, const std::string& where) {
  SpaceShape s;
  s.rank = static_cast<int>(
      check(H5Sget_simple_extent_ndims(space), where, "H5Sget_simple_extent_ndims"));
  s.points = check(H5Sget_simple_extent_npoints(space), where, "H5Sget_simple_extent_npoints");
  return s;
}

H5T_class_t type_class(hid_t type, const std::string& where) {
  const H5T_class_t c = H5Tget_class(type);
  if (c == H5T_NO_CLASS) check(-1, where, "H5Tget_class");
  return c;
}

// Frees the variable-length strings HDF5 allocated into `ptrs`, also on the way out of a throw.
struct VlenStrings {
  std::vector<char*> ptrs;
  explicit VlenStrings(size_t n) : ptrs(n, nullptr) {}
  ~VlenStrings() {
    for (char* p : ptrs) {
      if (p != nullptr) H5free_memory(p);
    }
  }
  VlenStrings(const VlenStrings&) = delete;
  VlenStrings& operator=(const VlenStrings&) = delete;
};

// Reads `n` strings stored with file type `file_type` through `read(mem_type, buffer)`, which is
// H5Aread or H5Dread. Accepts variable-length and fixed-length strings (the latter from tools
// other than Quilt).
template <typename ReadFn>
std::vector<std::string> read_strings(hid_t file_type, size_t n, const std::string& where,
                                      ReadFn read) {
  if (type_class(file_type, where) != H5T_STRING)
    fail(where, "expected a string, found another type");
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;
  const htri_t is_vlen = H5Tis_variable_str(file_type);
  check(is_vlen, where, "H5Tis_variable_str");
  const H5T_cset_t cset = H5Tget_cset(file_type);
  if (cset == H5T_CSET_ERROR) check(-1, where, "H5Tget_cset");
  if (is_vlen > 0) {
    Handle mem_type = make_vlen_string_type(where);
    check(H5Tset_cset(mem_type.get(), cset), where, "H5Tset_cset");
    VlenStrings buffer(n);
    check(read(mem_type.get(), buffer.ptrs.data()), where, "read variable-length strings");
    for (const char* p : buffer.ptrs) out.emplace_back(p != nullptr ? p : "");
    return out;
  }
  const size_t size = H5Tget_size(file_type);
  if (size == 0) check(-1, where, "H5Tget_size");
  Handle mem_type(check(H5Tcopy(file_type), where, "H5Tcopy"));
  std::vector<char> buffer(size * n + 1, '\0');
  check(read(mem_type.get(), buffer.data()), where, "read fixed-length strings");
  const H5T_str_t pad = H5Tget_strpad(file_type);
  for (size_t i = 0; i < n; ++i) {
    const char* begin = buffer.data() + i * size;
    std::string s(begin, strnlen(begin, size));
    if (pad == H5T_STR_SPACEPAD) {
      const size_t last = s.find_last_not_of(' ');
      s.erase(last == std::string::npos ? 0 : last + 1);
    }
    out.push_back(std::move(s));
  }
  return out;
}

void check_numeric(hid_t file_type, bool integer_only, const std::string& where) {
  const H5T_class_t c = type_class(file_type, where);
  if (c == H5T_INTEGER) return;
  if (c == H5T_FLOAT && !integer_only) return;
  fail(where, integer_only ? "expected an integer, found another type"
                           : "expected a number, found another type");
}

struct OpenAttribute {
  Handle attr, type, space;
  SpaceShape shape;
};

OpenAttribute open_attribute(const Group& g, const std::string& name) {
  const std::string where = g.location().describe() + " attribute '" + name + "'";
  const htri_t exists = H5Aexists(g.id(), name.c_str());
  check(exists, where, "H5Aexists");
  if (exists == 0) fail(where, "missing");
  OpenAttribute a;
  a.attr = Handle(check(H5Aopen(g.id(), name.c_str(), H5P_DEFAULT), where, "H5Aopen"));
  a.type = Handle(check(H5Aget_type(a.attr.get()), where, "H5Aget_type"));
  a.space = Handle(check(H5Aget_space(a.attr.get()), where, "H5Aget_space"));
  a.shape = space_shape(a.space.get(), where);
  if (a.shape.points != 1) {
    fail(where, "expected a single value, found " + std::to_string(a.shape.points));
  }
  return a;
}

struct OpenDataset {
  Handle dataset, type, space;
  SpaceShape shape;
};

OpenDataset open_dataset(const Group& g, const std::string& name, int expected_rank) {
  const std::string where = g.location().describe(name);
  if (!g.has(name)) fail(where, "missing dataset");
  OpenDataset d;
  d.dataset = Handle(check(H5Dopen2(g.id(), name.c_str(), H5P_DEFAULT), where, "H5Dopen2"));
  d.type = Handle(check(H5Dget_type(d.dataset.get()), where, "H5Dget_type"));
  d.space = Handle(check(H5Dget_space(d.dataset.get()), where, "H5Dget_space"));
  d.shape = space_shape(d.space.get(), where);
  if (d.shape.rank != expected_rank) {
    fail(where, "expected a " + std::to_string(expected_rank) + "-D dataset, found rank " +
                    std::to_string(d.shape.rank));
  }
  return d;
}

template <typename T>
std::vector<T> read_numeric_vector(const Group& g, const std::string& name, hid_t mem_type,
                                   bool integer_only) {
  const std::string where = g.location().describe(name);
  OpenDataset d = open_dataset(g, name, 1);
  check_numeric(d.type.get(), integer_only, where);
  std::vector<T> out(static_cast<size_t>(d.shape.points));
  if (!out.empty()) {
    check(H5Dread(d.dataset.get(), mem_type, H5S_ALL, H5S_ALL,
                  transfer_list(out.size(), sizeof(T), where).get(), out.data()),
          where, "H5Dread");
  }
  return out;
}

void write_numeric_dataset(const Group& g, const std::string& name, hid_t file_type, hid_t mem_type,
                           const void* data, size_t n) {
  check_name(g.location(), name, "dataset");
  const std::string where = g.location().describe(name);
  Handle space = make_1d_space(where, n);
  Handle dataset(check(H5Dcreate2(g.id(), name.c_str(), file_type, space.get(), H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT),
                       where, "H5Dcreate2"));
  if (n > 0) {
    check(
        H5Dwrite(dataset.get(), mem_type, H5S_ALL, H5S_ALL, transfer_list(n, 8, where).get(), data),
        where, "H5Dwrite");
  }
  check(H5Dclose(dataset.release()), where, "H5Dclose");
}

Handle create_scalar_attribute(const Group& g, const std::string& name, hid_t file_type,
                               const std::string& where) {
  Handle space = make_scalar_space(where);
  return Handle(
      check(H5Acreate2(g.id(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT),
            where, "H5Acreate2"));
}

herr_t collect_attribute_name(hid_t /*loc*/, const char* name, const H5A_info_t* /*info*/,
                              void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
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
    case H5I_GROUP:
      status = H5Gclose(id);
      break;
    case H5I_DATASET:
      status = H5Dclose(id);
      break;
    case H5I_ATTR:
      status = H5Aclose(id);
      break;
    case H5I_DATASPACE:
      status = H5Sclose(id);
      break;
    case H5I_DATATYPE:
      status = H5Tclose(id);
      break;
    case H5I_GENPROP_LST:
      status = H5Pclose(id);
      break;
    default:
      status = H5Idec_ref(id) < 0 ? -1 : 0;
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

bool Group::has_attribute(const std::string& name) const {
  const htri_t exists = H5Aexists(id(), name.c_str());
  check(exists, location_.describe() + " attribute '" + name + "'", "H5Aexists");
  return exists > 0;
}

std::vector<std::string> Group::attribute_names() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  check(H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute_name, &names),
        location_.describe(), "H5Aiterate2");
  return names;
}

void Group::write_attribute(const std::string& name, const std::string& value) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  if (name.empty()) fail(where, "empty attribute name");
  check_no_nul(where, value);
  Handle type = make_vlen_string_type(where);
  Handle attr = create_scalar_attribute(*this, name, type.get(), where);
  const char* data = value.c_str();
  check(H5Awrite(attr.get(), type.get(), &data), where, "H5Awrite");
  check(H5Aclose(attr.release()), where, "H5Aclose");
}

void Group::write_attribute(const std::string& name, int64_t value) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  Handle attr = create_scalar_attribute(*this, name, H5T_STD_I64LE, where);
  check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), where, "H5Awrite");
  check(H5Aclose(attr.release()), where, "H5Aclose");
}

void Group::write_attribute(const std::string& name, double value) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  Handle attr = create_scalar_attribute(*this, name, H5T_IEEE_F64LE, where);
  check(H5Awrite(attr.get(), H5T_NATIVE_DOUBLE, &value), where, "H5Awrite");
  check(H5Aclose(attr.release()), where, "H5Aclose");
}

std::string Group::read_string_attribute(const std::string& name) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  OpenAttribute a = open_attribute(*this, name);
  const hid_t attr = a.attr.get();
  return read_strings(
             a.type.get(), 1, where,
             [attr](hid_t mem_type, void* buffer) { return H5Aread(attr, mem_type, buffer); })
      .front();
}

int64_t Group::read_int64_attribute(const std::string& name) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  OpenAttribute a = open_attribute(*this, name);
  check_numeric(a.type.get(), /*integer_only=*/true, where);
  int64_t value = 0;
  check(H5Aread(a.attr.get(), H5T_NATIVE_INT64, &value), where, "H5Aread");
  return value;
}

double Group::read_double_attribute(const std::string& name) const {
  const std::string where = location_.describe() + " attribute '" + name + "'";
  OpenAttribute a = open_attribute(*this, name);
  check_numeric(a.type.get(), /*integer_only=*/false, where);
  double value = 0;
  check(H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, &value), where, "H5Aread");
  return value;
}

void Group::write_string_dataset(const std::string& name, const std::string& value) const {
  check_name(location_, name, "dataset");
  const std::string where = location_.describe(name);
  check_no_nul(where, value);
  Handle type = make_vlen_string_type(where);
  Handle space = make_scalar_space(where);
  Handle dataset(check(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT),
                       where, "H5Dcreate2"));
  const char* data = value.c_str();
  check(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL, transfer_list(1, 16, where).get(),
                 &data),
        where, "H5Dwrite");
  check(H5Dclose(dataset.release()), where, "H5Dclose");
}

void Group::write_dataset(const std::string& name, const std::vector<double>& values) const {
  write_numeric_dataset(*this, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.data(),
                        values.size());
}

void Group::write_dataset(const std::string& name, const std::vector<int64_t>& values) const {
  write_numeric_dataset(*this, name, H5T_STD_I64LE, H5T_NATIVE_INT64, values.data(), values.size());
}

void Group::write_dataset(const std::string& name, const std::vector<std::string>& values) const {
  check_name(location_, name, "dataset");
  const std::string where = location_.describe(name);
  std::vector<const char*> data;
  data.reserve(values.size());
  for (const std::string& v : values) {
    check_no_nul(where, v);
    data.push_back(v.c_str());
  }
  Handle type = make_vlen_string_type(where);
  Handle space = make_1d_space(where, values.size());
  Handle dataset(check(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT),
                       where, "H5Dcreate2"));
  if (!data.empty()) {
    check(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL,
                   transfer_list(data.size(), 16, where).get(), data.data()),
          where, "H5Dwrite");
  }
  check(H5Dclose(dataset.release()), where, "H5Dclose");
}

void Group::append_to_string_dataset(const std::string& name, const std::string& value) const {
  const std::string where = location_.describe(name);
  check_no_nul(where, value);
  std::vector<std::string> before;
  if (has(name)) {
    Handle dataset(check(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), where, "H5Dopen2"));
    Handle space(check(H5Dget_space(dataset.get()), where, "H5Dget_space"));
    hsize_t dims[1] = {0}, max_dims[1] = {0};
    if (check(H5Sget_simple_extent_ndims(space.get()), where, "H5Sget_simple_extent_ndims") != 1)
      fail(where, "expected a 1-D dataset");
    check(H5Sget_simple_extent_dims(space.get(), dims, max_dims), where,
          "H5Sget_simple_extent_dims");
    Handle type = make_vlen_string_type(where);
    if (max_dims[0] == H5S_UNLIMITED) {
      const hsize_t extent[1] = {dims[0] + 1};
      check(H5Dset_extent(dataset.get(), extent), where, "H5Dset_extent");
      Handle file_space(check(H5Dget_space(dataset.get()), where, "H5Dget_space"));
      const hsize_t start[1] = {dims[0]}, count[1] = {1};
      check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
            where, "H5Sselect_hyperslab");
      Handle mem_space = make_1d_space(where, 1);
      const char* data = value.c_str();
      check(H5Dwrite(dataset.get(), type.get(), mem_space.get(), file_space.get(),
                     transfer_list(1, 16, where).get(), &data),
            where, "H5Dwrite");
      check(H5Dclose(dataset.release()), where, "H5Dclose");
      return;
    }
    dataset.reset();
    before = read_string_vector(name);
    remove(name);
  }
  before.push_back(value);
  write_extendable_dataset(name, before);
}

void Group::write_extendable_dataset(const std::string& name,
                                     const std::vector<std::string>& values) const {
  check_name(location_, name, "dataset");
  const std::string where = location_.describe(name);
  std::vector<const char*> data;
  for (const std::string& v : values) {
    check_no_nul(where, v);
    data.push_back(v.c_str());
  }
  Handle type = make_vlen_string_type(where);
  const hsize_t dims[1] = {data.size()}, max_dims[1] = {H5S_UNLIMITED}, chunk[1] = {256};
  Handle space(check(H5Screate_simple(1, dims, max_dims), where, "H5Screate_simple"));
  Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), where, "H5Pcreate(H5P_DATASET_CREATE)"));
  check(H5Pset_chunk(dcpl.get(), 1, chunk), where, "H5Pset_chunk");
  Handle dataset(check(
      H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
      where, "H5Dcreate2"));
  if (!data.empty())
    check(H5Dwrite(dataset.get(), type.get(), H5S_ALL, H5S_ALL,
                   transfer_list(data.size(), 16, where).get(), data.data()),
          where, "H5Dwrite");
  check(H5Dclose(dataset.release()), where, "H5Dclose");
}

void Group::remove(const std::string& name) const {
  if (!has(name)) return;
  check(H5Ldelete(id(), name.c_str(), H5P_DEFAULT), location_.describe(name), "H5Ldelete");
}

void Group::remove_attribute(const std::string& name) const {
  if (!has_attribute(name)) return;
  check(H5Adelete(id(), name.c_str()), location_.describe() + " attribute '" + name + "'",
        "H5Adelete");
}

std::string Group::read_string_dataset(const std::string& name) const {
  const std::string where = location_.describe(name);
  OpenDataset d = open_dataset(*this, name, 0);
  const hid_t dataset = d.dataset.get();
  const Handle dxpl =
      transfer_list(static_cast<size_t>(d.shape.points), H5Tget_size(d.type.get()), where);
  const hid_t xfer = dxpl.get();
  return read_strings(d.type.get(), 1, where,
                      [dataset, xfer](hid_t mem_type, void* buffer) {
                        return H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, xfer, buffer);
                      })
      .front();
}

std::vector<double> Group::read_double_vector(const std::string& name) const {
  return read_numeric_vector<double>(*this, name, H5T_NATIVE_DOUBLE, /*integer_only=*/false);
}

std::vector<int64_t> Group::read_int64_vector(const std::string& name) const {
  return read_numeric_vector<int64_t>(*this, name, H5T_NATIVE_INT64, /*integer_only=*/true);
}

std::vector<std::string> Group::read_string_vector(const std::string& name) const {
  const std::string where = location_.describe(name);
  OpenDataset d = open_dataset(*this, name, 1);
  const hid_t dataset = d.dataset.get();
  const Handle dxpl =
      transfer_list(static_cast<size_t>(d.shape.points), H5Tget_size(d.type.get()), where);
  const hid_t xfer = dxpl.get();
  return read_strings(d.type.get(), static_cast<size_t>(d.shape.points), where,
                      [dataset, xfer](hid_t mem_type, void* buffer) {
                        return H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, xfer, buffer);
                      });
}

File::File(ScopedErrorSilence silence, Handle file, std::string path)
    : silence_(std::move(silence)), path_(std::move(path)), file_(std::move(file)) {
  const Location root{path_, "/"};
  root_ = Group(Handle(check(H5Gopen2(file_.get(), "/", H5P_DEFAULT), root.describe(), "H5Gopen2")),
                root);
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
