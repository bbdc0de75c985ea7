// quilt_results_example FILE.h5: writes the sample record of tests/results/sample_record.h to
// FILE.h5, for tests (tests/python/test_results_schema.py) that check the layout from Python.

#include <cstdio>
#include <exception>

#include "results/writer.h"
#include "tests/results/sample_record.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE.h5\n", argv[0]);
    return 2;
  }
  try {
    quilt::results::write_experiment(argv[1], quilt::results::testing::make_sample_record());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quilt_results_example: %s\n", e.what());
    return 1;
  }
  return 0;
}
