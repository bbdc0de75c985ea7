// Cost of results::Appender::commit alone (no MPI, no harness), early against late in a long
// sweep: per commit the wall time, the process's CPU time and the bytes it read and wrote
// (/proc/self/io), as medians over the first and the last `window` commits. CPU time and bytes do
// not depend on the host's load, so they show growth on a busy machine where wall time cannot.
//
//   quilt_bench_append N [trace 0|1] [path]   (default: 10000 1 ./append_commit_bench.h5)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>
#include <vector>

#include "results/writer.h"
#include "tests/results/sample_record.h"

namespace {

double cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

void io_bytes(double* read, double* written) {
  std::ifstream f("/proc/self/io");
  std::string key;
  double v = 0;
  while (f >> key >> v) {
    if (key == "rchar:") *read = v;
    if (key == "wchar:") *written = v;
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace quilt::results;
  const int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  const bool trace = argc > 2 ? std::atoi(argv[2]) != 0 : true;
  const std::string path = argc > 3 ? argv[3] : "append_commit_bench.h5";
  if (n < 2) {
    std::fprintf(stderr, "usage: %s N [trace 0|1] [path]\n", argv[0]);
    return 2;
  }
  ExperimentRecord e = testing::make_sample_record();
  e.runs.clear();
  Appender appender = Appender::create(path, e, false);
  // A 2-stage run as a null-board sweep records it: 2 ranks, 1 warm-up + 2 batches, 3 phases.
  RunRecord base = testing::make_sample_run("x", 0, 2);
  base.trace = TraceRecord{};
  if (trace) {
    TraceRecord& t = base.trace;
    t.clock = "wall";
    t.max_batches = 1000;
    t.phases = {"recv_wait", "compute", "send_wait"};
    for (int r = 0; r < 2; ++r)
      for (int b = -1; b < 2; ++b)
        for (int p = 0; p < 3; ++p) {
          t.rank.push_back(r), t.batch.push_back(b), t.repetition.push_back(0);
          t.phase.push_back(p), t.start_s.push_back(0.1 * b), t.end_s.push_back(0.1 * b + 0.05);
        }
  }
  std::vector<double> wall, cpu, read, written;
  for (int i = 0; i < n; ++i) {
    RunRecord r = base;
    char id[32];
    std::snprintf(id, sizeof id, "%08x%04x", static_cast<unsigned>(i * 2654435761u), i % 65536);
    r.id = id;
    double r0 = 0, w0 = 0, r1 = 0, w1 = 0;
    io_bytes(&r0, &w0);
    const double c0 = cpu_s();
    const auto t0 = std::chrono::steady_clock::now();
    appender.commit(r, e.provenance);
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back(cpu_s() - c0);
    io_bytes(&r1, &w1);
    read.push_back(r1 - r0);
    written.push_back(w1 - w0);
  }
  const int w = std::min(1000, n / 2);
  auto first = [&](const std::vector<double>& v) { return median({v.begin(), v.begin() + w}); };
  auto last = [&](const std::vector<double>& v) { return median({v.end() - w, v.end()}); };
  std::printf("%d commits, trace %s; medians of the first / last %d:\n", n, trace ? "on" : "off",
              w);
  std::printf("  wall %.3f / %.3f ms (x%.2f), cpu %.3f / %.3f ms (x%.2f)\n", 1e3 * first(wall),
              1e3 * last(wall), last(wall) / first(wall), 1e3 * first(cpu), 1e3 * last(cpu),
              last(cpu) / first(cpu));
  std::printf("  read %.0f / %.0f B, written %.0f / %.0f B per commit\n", first(read), last(read),
              first(written), last(written));
  return 0;
}
