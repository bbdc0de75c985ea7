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

void register_builtin_boards(BoardRegistry& registry) {
  registry.add("emulator", [] { return std::make_unique<EmulatorBoard>(); });
  registry.add("null", [] { return std::make_unique<NullBoard>(); });
  if (xrt_built()) registry.add("xrt", [] { return std::make_unique<XrtBoard>(); });
}

}  // namespace quilt::backends
