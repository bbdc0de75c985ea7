#pragma once
// Stores and loads the fields of a record (FieldList in results/record.h) in an HDF5 group: the
// member's type decides how (results/SCHEMA.md, "Types"). Internal to results/.

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "results/h5.h"
#include "results/record.h"

namespace quilt::results::fields {

/// Which fields write() stores: all, or only those kept as attributes or as datasets (so that a
/// group can get other children between the two, as /runs/<id> gets params).
enum class Which { kAll, kAttributes, kDatasets };

inline void write_one(const h5::Group& g, const Field& f, const std::string& value) {
  if (f.text_dataset) {
    g.write_string_dataset(f.name, value);
  } else {
    g.write_attribute(f.name, value);
  }
}
inline void write_one(const h5::Group& g, const Field& f, int value) {
  g.write_attribute(f.name, static_cast<int64_t>(value));
}
inline void write_one(const h5::Group& g, const Field& f, int64_t value) {
  g.write_attribute(f.name, value);
}
inline void write_one(const h5::Group& g, const Field& f, double value) {
  g.write_attribute(f.name, value);
}
inline void write_one(const h5::Group& g, const Field& f, bool value) {
  g.write_attribute(f.name, static_cast<int64_t>(value ? 1 : 0));
}
template <class T>
void write_one(const h5::Group& g, const Field& f, const std::vector<T>& values) {
  g.write_dataset(f.name, values);
}

inline void read_one(const h5::Group& g, const Field& f, std::string& value) {
  value = f.text_dataset ? g.read_string_dataset(f.name) : g.read_string_attribute(f.name);
}
inline void read_one(const h5::Group& g, const Field& f, int& value) {
  value = static_cast<int>(g.read_int64_attribute(f.name));
}
inline void read_one(const h5::Group& g, const Field& f, int64_t& value) {
  value = g.read_int64_attribute(f.name);
}
inline void read_one(const h5::Group& g, const Field& f, double& value) {
  value = g.read_double_attribute(f.name);
}
inline void read_one(const h5::Group& g, const Field& f, bool& value) {
  value = g.read_int64_attribute(f.name) != 0;
}
inline void read_one(const h5::Group& g, const Field& f, std::vector<double>& values) {
  values = g.read_double_vector(f.name);
}
inline void read_one(const h5::Group& g, const Field& f, std::vector<int64_t>& values) {
  values = g.read_int64_vector(f.name);
}
inline void read_one(const h5::Group& g, const Field& f, std::vector<std::string>& values) {
  values = g.read_string_vector(f.name);
}

template <class T>
inline constexpr bool kIsVector = false;
template <class T>
inline constexpr bool kIsVector<std::vector<T>> = true;

/// Writes the fields of `rec` selected by `which` into `g`. Throws ResultsError (HDF5 failures,
/// names already taken).
template <class R>
void write(const h5::Group& g, const R& rec, Which which = Which::kAll) {
  for_each_field(rec, [&](const Field& f, const auto& value) {
    const bool dataset = f.text_dataset || kIsVector<std::decay_t<decltype(value)>>;
    if ((which == Which::kAttributes && dataset) || (which == Which::kDatasets && !dataset)) return;
    write_one(g, f, value);
  });
}

/// Reads every field of `rec` from `g`; a field whose `present_if` names nothing in `g` (a file
/// written before the field existed) keeps its value in `rec`. Throws ResultsError naming the
/// object when a field that should be there is missing or of another type.
template <class R>
void read(const h5::Group& g, R& rec) {
  for_each_field(rec, [&](const Field& f, auto& value) {
    if (f.present_if && !g.has_attribute(f.present_if) && !g.has(f.present_if)) return;
    read_one(g, f, value);
  });
}

}  // namespace quilt::results::fields
