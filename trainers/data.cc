#include "trainers/data.h"

#include <stdexcept>

namespace quilt::trainers {
}  // namespace quilt::trainers
namespace quilt::trainers {
namespace {
[[noreturn]] void todo(const char* f) { throw std::logic_error(std::string(f) + ": not implemented yet"); }
}
std::vector<std::string> dataset_names() { return {"fashion-mnist", "iris", "wine", "breast_cancer", "digits", "synthetic", "cifar10", "tensor-folder"}; }
Dataset load_dataset(const DataOptions&) { todo(__func__); }
torch::Tensor read_idx(const std::string&, const std::vector<int64_t>&) { todo(__func__); }
Dataset load_fashion_mnist(const DataOptions&) { todo(__func__); }
Dataset load_uci(const DataOptions&) { todo(__func__); }
Dataset make_synthetic(const DataOptions&) { todo(__func__); }
Dataset load_cifar10(const DataOptions&) { todo(__func__); }
Dataset load_tensor_folder(const DataOptions&) { todo(__func__); }
void write_tensor_file(const std::string&, const torch::Tensor&) { todo(__func__); }
torch::Tensor read_tensor_file(const std::string&) { todo(__func__); }
Dataset fit_to_model(const Dataset&, const models::Shape&) { todo(__func__); }
Split stratified_subset(const Split&, int64_t, uint64_t) { todo(__func__); }
}  // namespace quilt::trainers
