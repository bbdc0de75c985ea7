#pragma once
// Thin RAII wrappers around the HDF5 C API, in the spirit of HighFive: one checked wrapper per
// call, every failure turned into a ResultsError that names the file and the object path and
// carries HDF5's own error stack text. Only what results/ needs: files, groups, scalar and 1-D
// attributes and datasets of strings, int64 and double.
//
// Strings are stored as variable-length UTF-8 (H5T_C_S1, H5T_VARIABLE, H5T_CSET_UTF8); readers also
// accept fixed-length strings written by other tools. Numbers are stored little-endian
// (H5T_STD_I64LE, H5T_IEEE_F64LE) whatever the host.

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

#include "results/error.h"

namespace quilt::results::h5 {

/// The symbolic name of an errno value ("ENOSPC"), or nullptr for one not listed.
const char* errno_name(int err);

/// While alive, HDF5's automatic printing of its error stack to stderr is off for this thread;
/// the previous setting is restored on destruction. Failures are reported through ResultsError.
class ScopedErrorSilence {
 public:
  ScopedErrorSilence();
  ~ScopedErrorSilence();
  ScopedErrorSilence(ScopedErrorSilence&& other) noexcept;
  ScopedErrorSilence& operator=(ScopedErrorSilence&&) = delete;
  ScopedErrorSilence(const ScopedErrorSilence&) = delete;
  ScopedErrorSilence& operator=(const ScopedErrorSilence&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
  bool saved_ = false;
};

/// Owns one HDF5 identifier (file, group, dataset, attribute, dataspace, datatype or property
/// list) and closes it with the matching H5*close on destruction. Move-only.
class Handle {
 public:
  Handle() = default;
  /// Takes ownership of `id`; a negative id means "none".
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.release()) {}
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  /// The identifier, still owned by this handle.
  hid_t get() const { return id_; }
  /// Whether it holds an identifier.
  bool valid() const { return id_ >= 0; }
  /// Gives up ownership without closing.
  hid_t release();
  /// Closes the identifier now; returns false when HDF5 reported a failure.
  bool reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

/// Where an object lives, for error messages: "file.h5:/runs/abc".
struct Location {
  std::string file;
  std::string path;
  /// `path` joined with a child name.
  std::string child(const std::string& name) const;
  /// "file:path" or "file:path/name".
  std::string describe(const std::string& name = {}) const;
};

/// Throws ResultsError "<where>: <what>: <HDF5 error stack>" when `status` is negative; returns it
/// otherwise. Use right after the HDF5 call so that the stack is that call's.
int64_t check(int64_t status, const std::string& where, const std::string& what);

/// An open HDF5 group (the root group of a File included). Not thread-safe. Objects it creates or
/// opens borrow the file: keep the File alive while they are.
class Group {
 public:
  /// An empty group object (no HDF5 id); assign to it later.
  Group() = default;
  /// Takes ownership of the open group id in `handle`, known as `location` in messages.
  Group(Handle handle, Location location) : handle_(std::move(handle)), location_(location) {}

  /// The HDF5 id, still owned by this object (for raw HDF5 calls).
  hid_t id() const { return handle_.get(); }
  /// File and path of this group, for error messages.
  const Location& location() const { return location_; }

  /// Creates a child group `name` (fails if it exists). `track_order` records link creation order
  /// so that tools such as h5py list children in the order they were made.
  Group create_group(const std::string& name, bool track_order = false) const;
  /// Opens an existing child group; throws ResultsError naming the path when it is missing.
  Group open_group(const std::string& name) const;
  /// Whether a link (group or dataset) called `name` exists directly in this group.
  bool has(const std::string& name) const;
  /// Names of the links directly in this group, in name order.
  std::vector<std::string> child_names() const;
  /// Closes the group now; throws ResultsError on failure. Idempotent.
  void close();

  /// Whether this group has an attribute `name`.
  bool has_attribute(const std::string& name) const;
  /// Names of this group's attributes, in name order.
  std::vector<std::string> attribute_names() const;
  /// Writes a scalar attribute: a UTF-8 string (no NUL bytes), an int64 or a float64. Throws
  /// ResultsError when the attribute exists. A bool argument is ambiguous on purpose: cast it.
  void write_attribute(const std::string& name, const std::string& value) const;
  void write_attribute(const std::string& name, const char* value) const {
    write_attribute(name, std::string(value));
  }
  void write_attribute(const std::string& name, int64_t value) const;
  void write_attribute(const std::string& name, double value) const;
  /// Reads a scalar attribute. Throws ResultsError naming file, path and attribute when it is
  /// missing, not a single value, or of another type (integers may be read as double).
  std::string read_string_attribute(const std::string& name) const;
  int64_t read_int64_attribute(const std::string& name) const;
  double read_double_attribute(const std::string& name) const;

  /// Writes a new dataset: a scalar string, or a 1-D array (possibly of length 0). Throws
  /// ResultsError when the name is taken or invalid, or a string holds a NUL byte.
  void write_string_dataset(const std::string& name, const std::string& value) const;
  void write_dataset(const std::string& name, const std::vector<double>& values) const;
  void write_dataset(const std::string& name, const std::vector<int64_t>& values) const;
  void write_dataset(const std::string& name, const std::vector<std::string>& values) const;
  /// Appends one string to the 1-D string dataset `name`, creating it (chunked, extendable) when
  /// it is missing. A dataset of fixed size (written by write_dataset or an older Quilt) is
  /// rewritten once as an extendable one with the same values first.
  void append_to_string_dataset(const std::string& name, const std::string& value) const;
  /// Writes a new 1-D string dataset that append_to_string_dataset can extend (chunked,
  /// unlimited maximum size).
  void write_extendable_dataset(const std::string& name,
                                const std::vector<std::string>& values) const;
  /// Deletes the link `name` (a group or dataset) if it exists. The space it used is not
  /// reclaimed in the file.
  void remove(const std::string& name) const;
  /// Deletes the attribute `name` if it exists.
  void remove_attribute(const std::string& name) const;

  /// Reads a scalar string dataset or a 1-D dataset. Throws ResultsError naming the dataset when it
  /// is missing or has another rank or type class.
  std::string read_string_dataset(const std::string& name) const;
  std::vector<double> read_double_vector(const std::string& name) const;
  std::vector<int64_t> read_int64_vector(const std::string& name) const;
  std::vector<std::string> read_string_vector(const std::string& name) const;

 private:
  Handle handle_;
  Location location_;
};

/// An open HDF5 file and its root group "/". Silences HDF5's error printing while open. Move-only.
/// Close explicitly with close() to see errors; the destructor closes and ignores failures.
class File {
 public:
  /// Creates (truncating) `path` for writing, in the HDF5 1.8 file format (creation order of
  /// links; a group's attributes in its object header up to 64, in dense storage past that).
  /// close() fails if any object of the file is still open, so that a successful close() means
  /// every byte has been handed to the operating system.
  static File create(const std::string& path);
  /// Opens an existing HDF5 file for reading and writing (appending runs). Throws ResultsError
  /// naming the file and the reason (missing, not HDF5, read-only file system, locked).
  static File open_read_write(const std::string& path);
  /// Opens an existing HDF5 file read-only. Throws ResultsError when it is missing or not HDF5.
  static File open_read_only(const std::string& path);

  File(File&&) = default;
  /// Closes silently; call close() first to see errors.
  ~File() = default;

  /// The root group "/". Valid until close().
  const Group& root() const { return root_; }
  /// Closes the root group and the file; throws ResultsError on failure. Idempotent.
  void close();
  /// The file name given to create() or open_read_only().
  const std::string& path() const { return path_; }

 private:
  File(ScopedErrorSilence silence, Handle file, std::string path);
  // Declaration order matters: destroyed bottom-up, so the root group closes before the file and
  // errors stay silenced until both are gone.
  ScopedErrorSilence silence_;
  std::string path_;
  Handle file_;
  Group root_;
};

}  // namespace quilt::results::h5
