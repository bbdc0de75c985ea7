#include "harness/cpu_wait.h"

#include <dirent.h>

#include <cstdio>
#include <string>

namespace quilt::harness {

double cpu_wait_s() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  double total_ns = 0;
  bool any = false;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = std::string("/proc/self/task/") + e->d_name + "/schedstat";
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (f == nullptr) continue;  // the thread ended meanwhile
    unsigned long long on_cpu_ns = 0, wait_ns = 0;
    if (std::fscanf(f, "%llu %llu", &on_cpu_ns, &wait_ns) == 2) {
      total_ns += static_cast<double>(wait_ns);
      any = true;
    }
    std::fclose(f);
  }
  ::closedir(dir);
  return any ? 1e-9 * total_ns : -1;
}

}  // namespace quilt::harness
