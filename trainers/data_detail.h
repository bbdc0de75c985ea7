#pragma once
// Internal to trainers/: the helpers that data.cc, data_formats.cc and tensor_folder.cc share (the
// options every loader applies, the seeded split, file checks). Not part of the public interface.

#include "trainers/data.h"

#include <ATen/core/Generator.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace quilt::trainers::detail {

/// A CPU generator seeded with `seed` (every random choice of a loader draws from one).
at::Generator make_generator(uint64_t seed);

/// Throws DataError naming `path` and `what` was expected when it is missing or not a file.
void require_file(const std::string& path, const std::string& what);

/// "60000x28x28"; a negative size (any) prints as "*".
std::string dims_string(const std::vector<int64_t>& dims);

/// "0", "1", ... "n-1": the class names of a data set that has none.
std::vector<std::string> numbered_classes(int64_t n);

/// The samples of `s` at the indices `idx`, in that order.
Split take(const Split& s, const torch::Tensor& idx);

/// Seeded stratified split: round(n_c * fraction) of each class go to test.
std::pair<Split, Split> stratified_split(const Split& all, double test_fraction, uint64_t seed);

/// train_samples, test_samples, standardize: the options every loader shares.
Dataset finish(Dataset d, const DataOptions& o, bool allow_standardize = true);

/// Throws DataError unless options.test_fraction is in (0, 1).
void check_fraction(const DataOptions& o);

}  // namespace quilt::trainers::detail
