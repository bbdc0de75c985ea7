// libFuzzer target for the experiment-file parser: any bytes in, and the only way out other
// than success is a ConfigError whose message names the file. Anything else (another exception,
// a crash, a sanitizer report, a hang) is a parser bug.
// Build: cmake --preset fuzz && cmake --build --preset fuzz --target quilt_experiment_fuzz
// Run:   build/fuzz/bin/quilt_experiment_fuzz -dict=tests/fuzz/experiment.dict CORPUS_DIR \
//          experiments tests/experiments/bad
#include "harness/experiment.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

constexpr const char* kPath = "fuzz.yaml";

void parse(const std::string& text, const std::string& scale) {
  try {
    auto e = quilt::harness::parse_experiment(text, kPath, scale);
    // A file that parses expands to at least one run, each with an id.
    if (e.runs.empty()) {
      std::fprintf(stderr, "parse_experiment returned an experiment without runs\n");
      std::abort();
    }
    for (const auto& run : e.runs)
      if (run.id.empty()) {
        std::fprintf(stderr, "run %zu has no id\n", run.index);
        std::abort();
      }
  } catch (const quilt::harness::ConfigError& e) {
    // Expected for bad input; the message must say which file.
    if (std::string(e.what()).rfind(kPath, 0) != 0) {
      std::fprintf(stderr, "ConfigError without the file name: %s\n", e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parse_experiment threw a non-ConfigError exception: %s\n", e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "parse_experiment threw a non-std::exception\n");
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  parse(text, "");
  // Scales are another path through the parser (overrides, a sweep replaced by the scale's).
  if (text.find("scales") != std::string::npos) parse(text, "here");
  return 0;
}
