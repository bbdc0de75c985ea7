#include "cli/child_process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

namespace quilt::harness {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

// Why a child that ran ended badly; `quilt_run` gives the meaning of quilt run's exit codes.
std::string exit_reason(const ChildResult& r, bool quilt_run) {
  if (r.signal) return fmt::format("killed by signal {}", r.signal);
  if (r.exit_code == 127) return "exit code 127: could not start the command";
  if (quilt_run && r.exit_code == 1) return "exit code 1: a run failed";
  if (quilt_run && r.exit_code == 2) return "exit code 2: bad input";
  return fmt::format("exit code {}", r.exit_code);
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,+@") == std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string command_text(const std::vector<std::string>& argv) {
  std::vector<std::string> q;
  for (const auto& a : argv) q.push_back(shell_quote(a));
  return fmt::format("{}", fmt::join(q, " "));
}

double RunningChild::elapsed_s() const { return seconds_since(t0); }

RunningChild start_child_process(const std::vector<std::string>& argv, const std::string& log_path,
                                 const std::string& stdout_path) {
  RunningChild c;
  c.t0 = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    c.result.error = fmt::format("fork failed: {}", std::strerror(errno));
    c.done = true;
    return c;
  }
  if (pid == 0) {
    setpgid(0, 0);  // its own group: a signal to reproduce is forwarded to the whole job
#ifdef __linux__
    // A reproduce that is killed outright (SIGKILL: no handler runs) still stops its job.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) _exit(127);
#endif
    int err = open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
    int out =
        stdout_path.empty() ? err : open(stdout_path.c_str(), O_WRONLY | O_TRUNC | O_CREAT, 0644);
    int null = open("/dev/null", O_RDONLY);
    if (err < 0 || out < 0 || null < 0) _exit(127);
    dup2(null, 0);
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "quilt reproduce: cannot start %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  c.pid = pid;
  return c;
}

bool poll_child_process(RunningChild& c) {
  if (c.done) return true;
  int status = 0;
  pid_t w = waitpid(c.pid, &status, WNOHANG);
  if (w == c.pid) {
    if (WIFEXITED(status)) c.result.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) c.result.signal = WTERMSIG(status);
  } else if (w < 0 && errno != EINTR) {
    c.result.error = fmt::format("waitpid failed: {}", std::strerror(errno));
  } else {
    if (c.term_sent && !c.kill_sent && seconds_since(c.stop_sent) > 10) {
      kill(-c.pid, SIGKILL);
      c.kill_sent = true;
    }
    return false;
  }
  c.result.wall_s = seconds_since(c.t0);
  c.done = true;
  return true;
}

void stop_child_process(RunningChild& c) {
  if (c.done || c.term_sent) return;
  kill(-c.pid, SIGTERM);
  c.term_sent = true;
  c.result.interrupted = true;
  c.stop_sent = Clock::now();
}

ChildResult run_child_process(const std::vector<std::string>& argv, const std::string& log_path,
                              const std::string& stdout_path,
                              const std::function<bool()>& should_stop,
                              const std::function<void(double elapsed_s)>& on_tick, int poll_ms) {
  RunningChild c = start_child_process(argv, log_path, stdout_path);
  while (!poll_child_process(c)) {
    if (should_stop()) stop_child_process(c);
    on_tick(c.elapsed_s());
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  return c.result;
}

}  // namespace quilt::harness
