#pragma once
// The message of the ModelError that `f` throws, or "(no ModelError)" when it throws none: for
// the models tests of bad input.

#include "models/model.h"

#include <functional>
#include <string>

namespace quilt::models::testing {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "(no ModelError)";
}

}  // namespace quilt::models::testing
