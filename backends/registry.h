#pragma once
// Board implementations by backend name, registered explicitly (no static initializers).

#include "backends/board.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace quilt::backends {

/// Makes a fresh, unloaded board.
using BoardFactory = std::function<std::unique_ptr<Board>()>;

/// Backend name -> factory. Filled by register_builtin_boards() and by users with their own
/// boards; read by the harness on every rank.
class BoardRegistry {
 public:
  /// Registers `factory` under `backend`. Throws BoardError if the name is taken or empty.
  void add(const std::string& backend, BoardFactory factory);
  /// A new board of the named backend. Throws BoardError naming the valid backends.
  std::unique_ptr<Board> make(const std::string& backend) const;
  /// The registered backend names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& backend) const { return factories_.count(backend) > 0; }

 private:
  std::map<std::string, BoardFactory> factories_;
};

/// Adds the built-in boards: "emulator" (EmulatorBoard), "null" (NullBoard) and, when this build
/// has XRT (xrt_built()), "xrt" (XrtBoard).
void register_builtin_boards(BoardRegistry& registry);

/// Makes a board of `backend` and loads `assignment` on it. When that throws BoardError and
/// `fallback` names another backend, makes and loads that one instead: the returned board is the
/// fallback's, and its description() starts with "WARNING: <backend> board unavailable
/// (<reason>); fell back to <fallback>: ". With an empty `fallback` the BoardError propagates;
/// when the fallback fails too, its error does, naming both. Blocks like Board::load.
std::unique_ptr<Board> make_loaded_board(const BoardRegistry& registry, const std::string& backend,
                                         const StageAssignment& assignment,
                                         const std::string& fallback = "");

}  // namespace quilt::backends
