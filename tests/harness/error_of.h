#pragma once
// The message of the ConfigError that parsing an experiment file's text throws (file name
// "exp.yaml"), or "" when it parses: for tests of bad input.

#include "harness/experiment.h"

#include <string>

namespace quilt::harness::testing {

inline std::string error_of(const std::string& text) {
  try {
    parse_experiment(text, "exp.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace quilt::harness::testing
