#include "trainers/augment.h"

#include <stdexcept>

namespace quilt::trainers {
}  // namespace quilt::trainers
namespace quilt::trainers {
void validate(const AugmentOptions&) { throw std::logic_error("not implemented yet"); }
torch::Tensor augment(const torch::Tensor&, const AugmentOptions&, uint64_t) { throw std::logic_error("not implemented yet"); }
uint64_t batch_seed(uint64_t, int64_t, int64_t) { throw std::logic_error("not implemented yet"); }
}  // namespace quilt::trainers
