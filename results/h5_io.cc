// The attributes and datasets of a Group (results/h5.h): typed reads and writes, each checked.

#include "results/h5.h"
#include "results/h5_internal.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace quilt::results::h5 {

using internal::check_name;
using internal::fail;

namespace {

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

}  // namespace

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

namespace {

// A numeric scalar attribute of g read as T (mem_type its native HDF5 type); integer_only
// refuses a float attribute.
template <typename T>
T read_numeric_attribute(const Group& g, const std::string& name, hid_t mem_type,
                         bool integer_only) {
  const std::string where = g.location().describe() + " attribute '" + name + "'";
  OpenAttribute a = open_attribute(g, name);
  check_numeric(a.type.get(), integer_only, where);
  T value = 0;
  check(H5Aread(a.attr.get(), mem_type, &value), where, "H5Aread");
  return value;
}

// The strings of dataset `name` of g: a scalar (rank 0, one string) or a 1-D dataset (rank 1).
std::vector<std::string> read_string_values(const Group& g, const std::string& name, int rank) {
  const std::string where = g.location().describe(name);
  OpenDataset d = open_dataset(g, name, rank);
  const hid_t dataset = d.dataset.get();
  const Handle dxpl =
      transfer_list(static_cast<size_t>(d.shape.points), H5Tget_size(d.type.get()), where);
  const hid_t xfer = dxpl.get();
  const size_t count = rank == 0 ? 1 : static_cast<size_t>(d.shape.points);
  return read_strings(d.type.get(), count, where, [dataset, xfer](hid_t mem_type, void* buffer) {
    return H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, xfer, buffer);
  });
}

}  // namespace

int64_t Group::read_int64_attribute(const std::string& name) const {
  return read_numeric_attribute<int64_t>(*this, name, H5T_NATIVE_INT64, /*integer_only=*/true);
}

double Group::read_double_attribute(const std::string& name) const {
  return read_numeric_attribute<double>(*this, name, H5T_NATIVE_DOUBLE, /*integer_only=*/false);
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
  return read_string_values(*this, name, /*rank=*/0).front();
}

std::vector<double> Group::read_double_vector(const std::string& name) const {
  return read_numeric_vector<double>(*this, name, H5T_NATIVE_DOUBLE, /*integer_only=*/false);
}

std::vector<int64_t> Group::read_int64_vector(const std::string& name) const {
  return read_numeric_vector<int64_t>(*this, name, H5T_NATIVE_INT64, /*integer_only=*/true);
}

std::vector<std::string> Group::read_string_vector(const std::string& name) const {
  return read_string_values(*this, name, /*rank=*/1);
}

File::File(ScopedErrorSilence silence, Handle file, std::string path)
    : silence_(std::move(silence)), path_(std::move(path)), file_(std::move(file)) {
  const Location root{path_, "/"};
  root_ = Group(Handle(check(H5Gopen2(file_.get(), "/", H5P_DEFAULT), root.describe(), "H5Gopen2")),
                root);
}

}  // namespace quilt::results::h5
