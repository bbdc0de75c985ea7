#pragma once
// Child processes of `quilt reproduce`: started in their own process group with their output in
// a log, waited for while the parent shows progress, and stopped (SIGTERM, then SIGKILL) when the
// parent is asked to stop. POSIX; no LibTorch, no MPI.

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
