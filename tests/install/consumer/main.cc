// Uses an installed Quilt: parses an experiment file, checks it against the model zoo (builds
// the models through LibTorch inside quilt::harness) and prints its runs.
#include "harness/experiment.h"
#include "harness/runner.h"

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s EXPERIMENT.yaml\n", argv[0]);
    return 2;
  }
  try {
    const auto e = quilt::harness::load_experiment(argv[1], "");
    quilt::harness::check_experiment(e, e.runs.front().boards.count);
    std::printf("%s: %zu run(s)\n", e.name.c_str(), e.runs.size());
    for (const auto& run : e.runs)
      std::printf("  run %s: %s, R %g\n", run.id.c_str(), run.model.arch.c_str(),
                  run.autoencoder.rate);
    std::printf("%s\n", quilt::harness::did_you_mean("rat", {"rate", "kernel"}).c_str());
  } catch (const quilt::harness::ConfigError& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 2;
  }
  return 0;
}
