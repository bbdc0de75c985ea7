#include "trainers/train.h"

#include <stdexcept>

namespace quilt::trainers {
}  // namespace quilt::trainers
namespace quilt::trainers {
namespace {
[[noreturn]] void todo(const char* f) { throw std::logic_error(std::string(f) + ": not implemented yet"); }
}
std::string to_string(Mode) { todo(__func__); }
Mode parse_mode(const std::string&) { todo(__func__); }
std::string to_string(OptimizerKind) { todo(__func__); }
OptimizerKind parse_optimizer(const std::string&) { todo(__func__); }
void validate(const TrainOptions&) { todo(__func__); }
TrainResult train(models::QuiltModel&, const Dataset&, const TrainOptions&, const Parallel&) { todo(__func__); }
Evaluation evaluate(models::QuiltModel&, const Split&, int64_t, int64_t, const Parallel&) { todo(__func__); }
ProxyResult train_proxy(models::Model, const Dataset&, const ProxyOptions&) { todo(__func__); }
void set_base_trainable(models::QuiltModel&, bool) { todo(__func__); }
}  // namespace quilt::trainers
