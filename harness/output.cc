#include "harness/output.h"

#include "harness/clock.h"
#include "harness/experiment.h"
#include "results/h5.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <utility>

namespace quilt::harness {

namespace {

constexpr size_t kNameMax = 255;  // NAME_MAX of Linux file systems

std::string errno_name(int err) {
  const char* name = results::h5::errno_name(err);
  return name ? name : "errno " + std::to_string(err);
}

std::string os_reason(int err) {
  return fmt::format("{} ({})", std::strerror(err), errno_name(err));
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

ConfigError output_error(const std::string& output, const std::string& message) {
  return ConfigError(output, 0, 0, "--output", message);
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string dirname_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown host";
  return name;
}

}  // namespace

std::string lock_path(const std::string& output) {
  const std::string base = basename_of(output);
  if (base.size() + 5 <= kNameMax) return output + ".lock";
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : output) h = (h ^ c) * 1099511628211ULL;
  return fmt::format("{}/.quilt-{:016x}.lock", dirname_of(output), h);
}

bool check_output_path(const std::string& output) {
  namespace fs = std::filesystem;
  const std::string base = basename_of(output);
  if (base.empty() || base == "." || base == "..")
    throw output_error(output, "names a directory; give a file name such as results/run.h5");
  if (base.size() > kNameMax)
    throw output_error(output, fmt::format("the file name is {} bytes long; file systems allow at "
                                           "most {} ({})",
                                           base.size(), kNameMax, errno_name(ENAMETOOLONG)));
  struct stat st {};
  if (::stat(output.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode))
      throw output_error(output,
                         fmt::format("is {}, not a regular file; Quilt never replaces it (not even "
                                     "with --overwrite). Give a file path such as results/run.h5",
                                     kind_of(st.st_mode)));
    return true;
  }
  const int err = errno;
  if (err != ENOENT) {
    std::string hint;
    if (err == ENOTDIR) hint = "; a part of the path is a regular file, not a directory";
    throw output_error(output, fmt::format("cannot use this path: {}{}", os_reason(err), hint));
  }
  const std::string dir = dirname_of(output);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    std::string hint;
    if (ec.value() == ENOTDIR || ec.value() == EEXIST)
      hint = "; a part of the path is a regular file, not a directory";
    throw output_error(output, fmt::format("cannot create the directory {}: {}{}", dir,
                                           os_reason(ec.value()), hint));
  }
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw output_error(output, fmt::format("{} is not a directory", dir));
  return false;
}

OutputLock OutputLock::acquire(const std::string& output, const std::string& holder_note) {
  OutputLock lock;
  const std::string path = lock_path(output);
  // A job that finishes removes its lock file; one that opened it just before must then lock the
  // file that is at the path now, not the removed one.
  for (int attempt = 0; attempt < 20; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      throw output_error(output,
                         fmt::format("cannot create the lock file {}: {}", path, os_reason(err)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK) {
        char text[512] = {};
        const ssize_t got = ::pread(fd, text, sizeof text - 1, 0);
        ::close(fd);
        std::string holder = got > 0 ? std::string(text, static_cast<size_t>(got)) : "";
        while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' '))
          holder.pop_back();
        throw output_error(
            output,
            fmt::format("another quilt job is writing this file ({}; lock file {}); wait for it "
                        "to end or give another --output",
                        holder.empty() ? "holder unknown" : holder, path));
      }
      ::close(fd);
      if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
        std::fprintf(stderr,
                     "quilt: warning: the file system of %s does not support flock (%s); two jobs "
                     "writing this output would not be stopped\n",
                     output.c_str(), std::strerror(err));
        return lock;
      }
      throw output_error(output, fmt::format("cannot lock {}: {}", path, os_reason(err)));
    }
    struct stat held {
    }, now{};
    if (::fstat(fd, &held) != 0 || ::stat(path.c_str(), &now) != 0 || held.st_ino != now.st_ino ||
        held.st_dev != now.st_dev) {
      ::close(fd);
      continue;
    }
    const std::string holder =
        fmt::format("pid {} on host {}, since {}{}\n", ::getpid(), host_name(), utc_now_iso8601(),
                    holder_note.empty() ? "" : ", " + holder_note);
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, holder.data(), holder.size(), 0) < 0) {
      // The lock holds without the note; only the second job's message is poorer.
    }
    lock.path_ = path;
    lock.fd_ = fd;
    return lock;
  }
  throw output_error(output, fmt::format("cannot lock {}: it keeps being replaced", path));
}

OutputLock::OutputLock(OutputLock&& other) noexcept
    : path_(std::exchange(other.path_, std::string())), fd_(std::exchange(other.fd_, -1)) {}

OutputLock& OutputLock::operator=(OutputLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::exchange(other.path_, std::string());
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

OutputLock::~OutputLock() { release(); }

void OutputLock::release() {
  if (fd_ < 0) return;
  // Unlinked while still held: a job waiting on this file sees that it was replaced.
  ::unlink(path_.c_str());
  ::close(fd_);
  fd_ = -1;
  path_.clear();
}

}  // namespace quilt::harness
