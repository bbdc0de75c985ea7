#pragma once
// Datasets for training and evaluation: Fashion-MNIST (gzip IDX files), the UCI sets that
// Debian's python3-sklearn ships, seeded synthetic data, CIFAR-10 binary batches and an
// ImageNet-style folder of preprocessed tensors. A Dataset is a pair of in-memory splits
// (float32 samples, int64 labels); fit_to_model() reshapes it for a zoo model's input.

#include "models/model.h"
#include "trainers/train_enums.h"

#include <torch/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace quilt::trainers {

/// A user's mistake about a training setup (missing or damaged data file, unknown dataset,
/// options that cannot work together such as freezing with R = 1). The message names the file
/// or option, what was found and what would be valid. The CLI prints it and exits 2.
class TrainerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A data file or data option the loaders refuse (a TrainerError: catch either).
class DataError : public TrainerError {
 public:
  using TrainerError::TrainerError;
};

/// One split: x {N, ...sample_shape} float32, y {N} int64 in [0, num_classes).
struct Split {
  torch::Tensor x;
  torch::Tensor y;
  /// Number of samples (0 for an empty split).
  int64_t size() const { return y.defined() ? y.size(0) : 0; }
};

/// A dataset in memory: train and test splits, with what the model needs to know.
struct Dataset {
  std::string name;                      ///< "fashion-mnist", "iris", "synthetic", ...
  Split train;                           ///< what training sees (after train_samples)
  Split test;                            ///< what evaluation sees
  models::Shape sample_shape;            ///< shape of one sample ({1, 28, 28}, {4}, ...)
  int64_t num_classes = 0;               ///< labels are 0 .. num_classes - 1
  std::vector<std::string> class_names;  ///< num_classes entries ("0", "1", ... when unknown)
};

/// Everything a loader needs. Fields that do not apply to a dataset are ignored.
struct DataOptions {
  /// The data set (dataset_name(kind) is its loader's name).
  DataKind kind = DataKind::kSynthetic;
  /// Directory of the files; empty = the default for the dataset
  /// (/usr/share/datasets/fashion-mnist; sklearn's datasets/data directory for the UCI sets).
  /// cifar10 and tensor-folder have no default.
  std::string root;
  /// Keep at most this many training samples (0 = all): a seeded, class-stratified subset, for
  /// limited-data transfer learning. Applied after the split and before standardisation.
  int64_t train_samples = 0;
  /// Keep at most this many test samples (0 = all), the first ones of the (seeded) test split.
  int64_t test_samples = 0;
  /// Seeds every random choice of the loader (split, subsets, synthetic samples).
  uint64_t seed = 0;
  /// Fraction of samples held out for testing where the dataset has no fixed split (UCI,
  /// synthetic). The split is stratified by class. In (0, 1).
  double test_fraction = 0.25;
  /// Standardise features with the training split's per-feature mean and standard deviation
  /// (UCI and synthetic: per feature; images: one mean/std per channel). Images are first scaled
  /// to [0, 1].
  bool standardize = true;

  // Synthetic data only.
  int64_t synthetic_samples = 1200;      ///< train + test samples
  int64_t synthetic_classes = 4;         ///< classes (>= 2)
  models::Shape synthetic_shape = {16};  ///< shape of one sample ({F} or {C, H, W})
  double synthetic_separation = 1.0;     ///< distance scale between class means (noise sd 1)
};

/// The loader's name of a data set: its kDataKindNames spelling, the UCI sets by scikit-learn's
/// file names ("uci-breast-cancer" -> "breast_cancer"). Dataset::name and messages use it.
std::string dataset_name(DataKind kind);

/// The loaders' names of every data set, in the order messages list them: "fashion-mnist",
/// "iris", "wine", "breast_cancer", "digits", "synthetic", "cifar10", "tensor-folder".
std::vector<std::string> dataset_names();

/// The data set of a loader's name; throws DataError listing dataset_names() otherwise.
DataKind parse_dataset(const std::string& text);

/// Loads the dataset `options.kind` with the options applied. Throws DataError naming the file
/// and what was expected for a missing, truncated or malformed file, or the option and the valid
/// values for a bad option.
Dataset load_dataset(const DataOptions& options);

/// Reads one IDX file (gzip-compressed when the name ends in .gz, plain otherwise): magic
/// 0x0000080n with unsigned-byte data (type 0x08) and n dimensions, big-endian sizes, then the
/// data. Returns a uint8 tensor of those sizes. Throws DataError naming the file when it is
/// missing, not IDX, of another element type, truncated or longer than its header says, or when
/// `expected_dims` (if not empty) differs from its dimensions ({60000, 28, 28}; -1 = any size).
torch::Tensor read_idx(const std::string& path, const std::vector<int64_t>& expected_dims = {});

/// Fashion-MNIST from `root` (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
/// t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): 60000 / 10000 samples {1, 28, 28}, 10
/// classes, the official split.
Dataset load_fashion_mnist(const DataOptions& options);

/// A UCI set shipped by scikit-learn (kUciIris, kUciWine, kUciBreastCancer, kUciDigits: "iris",
/// "wine", "breast_cancer", "digits"): the header
/// line "n_samples,n_features,class names..." (iris, wine, breast_cancer) or no header (digits,
/// 64 pixel features and the label, gzip), one sample per line, label last. Split by
/// options.test_fraction (stratified, seeded). Sample shape {n_features}.
Dataset load_uci(const DataOptions& options);

/// Seeded Gaussian blobs: class k has mean separation * m_k (m_k a fixed random unit-scale
/// direction per class, drawn from the seed), noise N(0, 1); learnable by a linear model when
/// separation is about 1 or more, so accuracy is meaningful. Any sample shape.
Dataset make_synthetic(const DataOptions& options);

/// CIFAR-10 binary version from `root`: data_batch_1.bin ... data_batch_5.bin (those present, at
/// least one) for training and test_batch.bin for testing; each file a whole number of 3073-byte
/// records (label byte, then 1024 red, 1024 green, 1024 blue pixels, row-major 32x32). Sample
/// shape {3, 32, 32}, 10 classes. Throws DataError naming the file and its size when it is not a
/// multiple of 3073 bytes or a label is > 9.
Dataset load_cifar10(const DataOptions& options);

/// An ImageNet-style folder of preprocessed samples:
///   root/train/<class>/<any name>.qt    root/val/<class>/<any name>.qt
/// Classes are the sub-directory names of root/train in sorted order (val must use the same
/// names; a class may be empty in val). Each file written by write_tensor_file() (raw float32
/// with a shape header, see there) holds one sample when its name ends in ".qt", or several
/// samples of that class along a leading batch dimension when it ends in ".batch.qt"; other
/// files are ignored. Every sample must have the same shape. Files are read in sorted order.
/// Samples are used as stored (already preprocessed): standardize is not applied to them.
/// Throws DataError naming the directory or file for a missing split, no classes, a class of
/// val unknown in train, a damaged file or a sample shape that differs from the first one.
Dataset load_tensor_folder(const DataOptions& options);

/// Writes `t` (float32, contiguous, any shape with 1..8 dimensions) to `path` in the
/// tensor-folder format: the 8 bytes "QUILTT01", int64 ndim, ndim int64 sizes, then the
/// elements as little-endian float32. Throws DataError when the file cannot be written.
void write_tensor_file(const std::string& path, const torch::Tensor& t);

/// Reads a file written by write_tensor_file(). Throws DataError naming the file when it is
/// missing, has another magic, an impossible shape, or is truncated or too long.
torch::Tensor read_tensor_file(const std::string& path);

/// Python's equivalent for users preparing a tensor folder: numpy's
/// f.write(b"QUILTT01"); np.array([a.ndim, *a.shape], "<i8").tofile(f); a.astype("<f4").tofile(f)
/// (documentation only; see trainers/README.md).

/// Reshapes `data` so that a model with input shape `input_shape` takes it:
///  - {F} input: samples are flattened; F must equal their element count, otherwise images are
///    first resized (bilinear) to a square that has F / C pixels per channel, if one exists.
///  - {C, H, W} input: 1-D samples of C*H*W elements are viewed as images; images are resized
///    (bilinear, align_corners false) to H x W; 1 -> 3 channels repeats the channel, 3 -> 1
///    takes the mean.
/// Returns a new Dataset (the input is not changed). Throws DataError naming both shapes when
/// no such mapping exists (e.g. 4 features into a 3x32x32 model).
Dataset fit_to_model(const Dataset& data, const models::Shape& input_shape);

/// A seeded, class-stratified subset of `split` with at most n samples (all when n <= 0 or n >=
/// its size), in a seeded random order. Every class keeps at least one sample when n >= classes.
Split stratified_subset(const Split& split, int64_t n, uint64_t seed);

}  // namespace quilt::trainers
