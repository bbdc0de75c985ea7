// quilt_make_test_xclbin OUT [KERNEL...]: writes a synthetic xclbin for XRT's noop shim (default
// kernels quilt_stage0..3 by Quilt's convention). For tests only: it has no bitstream and must
// never be loaded on a real board (XrtBoard refuses it outside XCL_EMULATION_MODE).

#include "tests/backends/xrt_synthetic_xclbin.h"

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.xclbin [KERNEL...]\n", argv[0]);
    return 2;
  }
  quilt::testing::SyntheticXclbin spec;
  spec.kernels = {"quilt_stage0", "quilt_stage1", "quilt_stage2", "quilt_stage3"};
  if (argc > 2) spec.kernels.assign(argv + 2, argv + argc);
  try {
    quilt::testing::write_synthetic_xclbin(argv[1], spec);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
