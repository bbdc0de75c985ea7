#include "harness/mpi.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace quilt::harness::mpi {

namespace {

double steady_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

volatile std::sig_atomic_t g_signal = 0;
std::atomic<double> g_signal_seen_s{0};  // when the main thread or watchdog first saw it

extern "C" void on_interrupt(int sig) {
  if (g_signal == 0) g_signal = sig;
}

// The watchdog's view of the main thread. Scopes are opened and closed by the main thread only;
// the watchdog thread reads them under the mutex.
struct Watchdog {
  std::mutex mutex;
  std::condition_variable wake;
  std::vector<std::string> waits;  // open StallScopes, innermost last
  std::atomic<double> last_progress_s{0};
  std::atomic<int> writing{0};
  double stall_timeout_s = 0, interrupt_grace_s = 20;
  bool stretch_with_load = false;
  int rank = -1;
  bool stop = false;
  std::thread thread;
};

Watchdog& watchdog() {
  static Watchdog w;
  return w;
}

[[noreturn]] void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; if it did, still end this rank
}

}  // namespace

double stall_stretch(double load1, long cpus) {
  if (!(load1 > 0) || cpus < 1) return 1.0;
  return std::clamp(load1 / (2.0 * static_cast<double>(cpus)), 1.0, 8.0);
}

namespace {

// stall_stretch of this host now: /proc/loadavg's 1-minute figure over the online CPUs (1 where
// either cannot be read).
double host_stall_stretch() {
  std::ifstream in("/proc/loadavg");
  double load1 = 0;
  if (!(in >> load1)) return 1.0;
  return stall_stretch(load1, sysconf(_SC_NPROCESSORS_ONLN));
}

void watch() {
  Watchdog& w = watchdog();
  std::unique_lock<std::mutex> lock(w.mutex);
  while (!w.stop) {
    w.wake.wait_for(lock, std::chrono::milliseconds(200));
    if (w.stop) break;
    const double now = steady_s();
    if (g_signal != 0) {
      double seen = g_signal_seen_s.load();
      if (seen == 0) g_signal_seen_s.compare_exchange_strong(seen, now), seen = now;
      if (now - seen > w.interrupt_grace_s && w.writing.load() == 0) {
        std::fprintf(stderr,
                     "quilt: rank %d: interrupted by signal %d and the run in flight did not "
                     "reach a point where it can stop within %.0f s; aborting the job (exit "
                     "%d). Every finished run is in the result file; --resume continues.\n",
                     w.rank, static_cast<int>(g_signal), w.interrupt_grace_s, kExitInterrupted);
        abort_job(kExitInterrupted);
      }
    }
    if (w.stall_timeout_s > 0 && !w.waits.empty() &&
        now - w.last_progress_s.load() > w.stall_timeout_s) {
      // On a host starved of CPU every rank is slow: the timeout stretches with the load.
      const double stretch = w.stretch_with_load ? host_stall_stretch() : 1.0;
      if (now - w.last_progress_s.load() <= w.stall_timeout_s * stretch) continue;
      const std::string stretched =
          stretch > 1.0 ? fmt::format(", stretched x{:.1f} for this host's load", stretch) : "";
      std::fprintf(stderr,
                   "quilt: rank %d: stalled: no progress for %.0f s while waiting for %s; a peer "
                   "rank or the link to it is dead or stuck (stall timeout: --stall-timeout "
                   "%.0f s%s). Aborting the job (exit %d); every finished run is in the result "
                   "file, --resume continues.\n",
                   w.rank, now - w.last_progress_s.load(), w.waits.back().c_str(),
                   w.stall_timeout_s, stretched.c_str(), kExitStalled);
      abort_job(kExitStalled);
    }
  }
}

}  // namespace

void start_watchdog(double stall_timeout_s, int rank, double interrupt_grace_s,
                    bool stretch_with_load) {
  Watchdog& w = watchdog();
  if (w.thread.joinable()) return;
  w.stall_timeout_s = stall_timeout_s;
  w.stretch_with_load = stretch_with_load;
  w.interrupt_grace_s = interrupt_grace_s;
  w.rank = rank;
  w.stop = false;
  w.last_progress_s = steady_s();
  w.thread = std::thread(watch);
}

void stop_watchdog() {
  Watchdog& w = watchdog();
  if (!w.thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(w.mutex);
    w.stop = true;
  }
  w.wake.notify_all();
  w.thread.join();
}

StallScope::StallScope(std::string what) {
  Watchdog& w = watchdog();
  std::lock_guard<std::mutex> lock(w.mutex);
  w.waits.push_back(std::move(what));
  w.last_progress_s = steady_s();
}

StallScope::~StallScope() {
  Watchdog& w = watchdog();
  std::lock_guard<std::mutex> lock(w.mutex);
  w.waits.pop_back();
  w.last_progress_s = steady_s();
}

void progress() { watchdog().last_progress_s.store(steady_s(), std::memory_order_relaxed); }

WriteScope::WriteScope() { ++watchdog().writing; }
WriteScope::~WriteScope() { --watchdog().writing; }

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT}) sigaction(sig, &sa, nullptr);
}

int interrupt_signal() { return static_cast<int>(g_signal); }

int any_interrupted(MPI_Comm comm) {
  // The lowest interrupted rank's signal: MPI_MINLOC over (interrupted ? 0 : 1, rank) would need
  // pairs; the largest signal number is enough to name it.
  int mine = interrupt_signal(), all = 0;
  StallScope scope("the other ranks (interrupt check)");
  check(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce(interrupt)");
  return all;
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  throw MpiError(fmt::format("{} failed: {}", what, std::string(text, len)));
}

Environment::Environment(int* argc, char*** argv) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

Environment::~Environment() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    // MPI_Finalize waits for every rank: a rank that never arrives is a stall like any other.
    StallScope scope("the other ranks to finish (MPI_Finalize)");
    MPI_Finalize();
  }
  stop_watchdog();
}

int rank(MPI_Comm comm) {
  int r = 0;
  check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
  return r;
}

int size(MPI_Comm comm) {
  int s = 0;
  check(MPI_Comm_size(comm, &s), "MPI_Comm_size");
  return s;
}

std::string processor_name() {
  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  check(MPI_Get_processor_name(name, &len), "MPI_Get_processor_name");
  return std::string(name, len);
}

std::string library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  check(MPI_Get_library_version(text, &len), "MPI_Get_library_version");
  std::string s(text, len);
  auto nl = s.find_first_of("\n,");
  return nl == std::string::npos ? s : s.substr(0, nl);
}

bool all_ok(bool ok, MPI_Comm comm) {
  StallScope scope("the other ranks (status agreement)");
  int mine = ok ? 1 : 0, all = 0;
  check(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, comm), "MPI_Allreduce");
  return all != 0;
}

std::vector<std::string> gather_strings(const std::string& mine, int root, MPI_Comm comm) {
  StallScope scope("the other ranks (gathering their status on rank " + std::to_string(root) + ")");
  int n = size(comm), me = rank(comm);
  int len = static_cast<int>(mine.size());
  std::vector<int> lens(me == root ? n : 0);
  check(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm), "MPI_Gather");
  std::vector<int> displs(lens.size());
  int total = 0;
  for (size_t i = 0; i < lens.size(); ++i) displs[i] = total, total += lens[i];
  std::string all(static_cast<size_t>(total), '\0');
  check(MPI_Gatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                    root, comm),
        "MPI_Gatherv");
  std::vector<std::string> out;
  for (size_t i = 0; i < lens.size(); ++i) out.push_back(all.substr(displs[i], lens[i]));
  return out;
}

std::string broadcast_string(std::string text, int root, MPI_Comm comm) {
  StallScope scope("rank " + std::to_string(root) + " (broadcast)");
  int len = static_cast<int>(text.size());
  check(MPI_Bcast(&len, 1, MPI_INT, root, comm), "MPI_Bcast");
  text.resize(static_cast<size_t>(len));
  check(MPI_Bcast(text.data(), len, MPI_CHAR, root, comm), "MPI_Bcast");
  return text;
}

}  // namespace quilt::harness::mpi
