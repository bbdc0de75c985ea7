// `quilt profile` / `quilt calibrate` as a standalone program, for tests and manual runs until
// the quilt CLI dispatches them: quilt_profile_tool profile|calibrate ARGS...
#include "cli/profile_cmd.h"

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "profile") == 0) {
    return quilt::harness::cmd_profile(argc, argv);
  }
  if (argc >= 2 && std::strcmp(argv[1], "calibrate") == 0) {
    return quilt::harness::cmd_calibrate(argc, argv);
  }
  std::fputs("usage: quilt_profile_tool profile|calibrate ARGS...\n", stderr);
  return 2;
}
