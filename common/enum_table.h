#pragma once
// Name tables of enums: ONE constexpr table per enum gives its spellings, from which its
// to_string, its parse and the list of valid values that error messages print all follow, so the
// names live in one place. Header-only and free of LibTorch and YAML: the torch-free experiment
// parser (quilt::config) reads the tables of trainers/ and backends/ enums without linking them.

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace quilt::common {

/// One value of an enum and its spelling (in files, messages and recorded parameters).
template <typename E>
struct EnumName {
  E value;
  std::string_view name;
};

/// An enum's table: every value once, in the order messages list them.
template <typename E, size_t N>
using EnumTable = std::array<EnumName<E>, N>;

/// The spelling of `value` in `table`; "?" for a value the table lacks (a bug).
template <typename E, size_t N>
constexpr std::string_view enum_name(const EnumTable<E, N>& table, E value) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  return "?";
}

/// The value spelled `name` in `table`, or std::nullopt.
template <typename E, size_t N>
constexpr std::optional<E> enum_parse(const EnumTable<E, N>& table, std::string_view name) {
  for (const auto& entry : table)
    if (entry.name == name) return entry.value;
  return std::nullopt;
}

/// Every spelling of `table`, in its order (the valid values an error message lists).
template <typename E, size_t N>
std::vector<std::string> enum_names(const EnumTable<E, N>& table) {
  std::vector<std::string> out;
  out.reserve(N);
  for (const auto& entry : table) out.emplace_back(entry.name);
  return out;
}

}  // namespace quilt::common
