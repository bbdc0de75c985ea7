// Test helper: prints slurm_job_array() for an experiment file, so the SLURM end-to-end test can
// submit a generated job array whether or not `quilt plan --slurm` exists in this build.
//   quilt_slurm_array_tool FILE BUILD_DIR OUTPUT_DIR

#include "harness/slurm.h"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s FILE BUILD_DIR OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    quilt::harness::SlurmOptions options;
    options.build_dir = argv[2];
    options.output_dir = argv[3];
    auto text = quilt::harness::slurm_job_array(quilt::harness::load_experiment(argv[1]), options);
    std::fputs(text.c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
