#pragma once
// Child processes of `quilt reproduce`: started in their own process group with their output in
// a log, waited for while the parent shows progress, and stopped (SIGTERM, then SIGKILL) when the
// parent is asked to stop. POSIX; no LibTorch, no MPI.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace quilt::harness {

/// One child process: its outcome.
struct ChildResult {
  int exit_code = -1;  ///< -1 when it did not exit normally
  int signal = 0;      ///< the signal that ended it, 0 when none
  double wall_s = 0;
  bool interrupted = false;  ///< we stopped it because the parent got a signal
  std::string error;         ///< could not start (fork or waitpid failed)
};

/// Why a child that ran ended badly; `quilt_run` gives the meaning of quilt run's exit codes.
std::string exit_reason(const ChildResult& r, bool quilt_run);

/// `s` quoted for a POSIX shell where it needs quoting.
std::string shell_quote(const std::string& s);

/// argv as one shell command line, for logs and reports.
std::string command_text(const std::vector<std::string>& argv);

/// A child started by start_child_process and not yet collected; its pid is also its process
/// group id. Owned by the caller: poll it until it ends (a child that is never polled to its end
/// stays a zombie until this process exits).
struct RunningChild {
  pid_t pid = -1;
  std::chrono::steady_clock::time_point t0;  ///< when it was started
  std::chrono::steady_clock::time_point stop_sent;
  bool term_sent = false, kill_sent = false;
  bool done = false;   ///< it ended (or never started): `result` is final
  ChildResult result;  ///< wall_s is final once done
  /// Seconds since it was started.
  double elapsed_s() const;
};

/// Starts argv (argv[0] looked up in PATH) in its own process group, stdin from /dev/null, stderr
/// appended to `log_path` and stdout too unless `stdout_path` is given (then truncated and
/// written there). Does not block. On Linux the child gets SIGTERM when this process dies. When
/// fork fails the result is done with `result.error` set; exit code 127: exec failed.
RunningChild start_child_process(const std::vector<std::string>& argv, const std::string& log_path,
                                 const std::string& stdout_path);

/// Does not block: true once the child has ended (then `c.done` and `c.result` are final). Sends
/// the SIGKILL that follows a stop_child_process by 10 s when the group is still there.
bool poll_child_process(RunningChild& c);

/// Asks the child's whole group to stop (SIGTERM now, SIGKILL from poll_child_process 10 s later)
/// and marks the result interrupted. Idempotent; does not block.
void stop_child_process(RunningChild& c);

/// Runs argv (argv[0] looked up in PATH) in its own process group, stdin from /dev/null, stderr
/// appended to `log_path` and stdout too unless `stdout_path` is given (then truncated and
/// written there). Blocks until the child ends. Every `poll_ms` while waiting: once `should_stop`
/// returns true the group gets SIGTERM (SIGKILL 10 s later) and the result is marked interrupted;
/// then `on_tick(seconds since start)` runs. On Linux the child also gets SIGTERM when the parent
/// dies. Exit code 127: the command could not be started.
ChildResult run_child_process(const std::vector<std::string>& argv, const std::string& log_path,
                              const std::string& stdout_path,
                              const std::function<bool()>& should_stop,
                              const std::function<void(double elapsed_s)>& on_tick, int poll_ms);

}  // namespace quilt::harness
