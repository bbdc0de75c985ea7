#include "backends/registry.h"

#include "backends/emulator.h"
#include "backends/null_board.h"
#include "backends/xrt_board.h"

#include <fmt/format.h>

namespace quilt::backends {

void BoardRegistry::add(const std::string& backend, BoardFactory factory) {
  if (backend.empty()) throw BoardError("a board backend needs a name");
  if (!factory) throw BoardError(fmt::format("board backend \"{}\" has no factory", backend));
  if (!factories_.emplace(backend, std::move(factory)).second)
    throw BoardError(fmt::format("board backend \"{}\" is already registered", backend));
}

std::unique_ptr<Board> BoardRegistry::make(const std::string& backend) const {
  auto it = factories_.find(backend);
  if (it == factories_.end()) {
    throw BoardError(fmt::format("unknown board backend \"{}\"; valid backends: {}", backend,
                                 factories_.empty() ? std::string("(none registered)")
                                                    : fmt::format("{}", fmt::join(names(), ", "))));
  }
  return it->second();
}

std::vector<std::string> BoardRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, factory] : factories_) out.push_back(name);
  return out;
}

namespace {

// A board that stands in for one that could not be opened: everything is the inner board's,
// except that its description carries the warning into the result file.
class FallbackBoard final : public Board {
 public:
  FallbackBoard(std::unique_ptr<Board> inner, std::string warning)
      : inner_(std::move(inner)), warning_(std::move(warning)) {}
  std::string backend() const override { return inner_->backend(); }
  std::string description() const override { return warning_ + inner_->description(); }
  void load(const StageAssignment& assignment) override { inner_->load(assignment); }
  at::Tensor run(const at::Tensor& input) override { return inner_->run(input); }

 private:
  std::unique_ptr<Board> inner_;
  std::string warning_;
};

}  // namespace

std::unique_ptr<Board> make_loaded_board(const BoardRegistry& registry, const std::string& backend,
                                         const StageAssignment& assignment,
                                         const std::string& fallback) {
  std::string reason;
  try {
    auto board = registry.make(backend);
    board->load(assignment);
    return board;
  } catch (const BoardError& e) {
    if (fallback.empty() || fallback == backend) throw;
    reason = e.what();
  }
  try {
    auto board = registry.make(fallback);
    board->load(assignment);
    return std::make_unique<FallbackBoard>(
        std::move(board), fmt::format("WARNING: {} board unavailable ({}); fell back to {}: ",
                                      backend, reason, fallback));
  } catch (const BoardError& e) {
    throw BoardError(fmt::format("{} board unavailable ({}); the fallback {} failed too: {}",
                                 backend, reason, fallback, e.what()));
  }
}

void register_builtin_boards(BoardRegistry& registry) {
  registry.add("emulator", [] { return std::make_unique<EmulatorBoard>(); });
  registry.add("null", [] { return std::make_unique<NullBoard>(); });
  if (xrt_built()) registry.add("xrt", [] { return std::make_unique<XrtBoard>(); });
}

}  // namespace quilt::backends
