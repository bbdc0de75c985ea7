#pragma once
// The result file of a job, before anything is written to it: the path checked (a regular file or
// nothing, a directory that exists or can be made, a name the file system takes) and an exclusive
// lock held for the whole job, so that two jobs never write the same file. No MPI, no LibTorch:
// rank 0 calls these and shares the outcome.

#include <string>

namespace quilt::harness {

/// Checks `output` before a job writes it, and creates its parent directory. Throws ConfigError
/// (exit 2, nothing written) naming the path and the reason when the output exists and is not a
/// regular file (a device such as /dev/null, a FIFO, a socket or a directory: never replaced,
/// whatever --overwrite says), when its parent cannot be made or is not a directory (ENOTDIR,
/// EROFS, EACCES, ...), or when its name is longer than the file system allows (ENAMETOOLONG).
/// Returns whether a regular file is there. Blocks on the file system.
bool check_output_path(const std::string& output);

/// An exclusive lock on a result file for the lifetime of the object: flock() on a lock file
/// beside it ("<output>.lock"; a shorter hashed name when that would be too long), which holds
/// the holder's PID, host and start time. The lock goes with the process (also when it is
/// killed); the lock file is removed when the object is destroyed. File systems without flock()
/// get no lock (a warning on stderr). Move-only.
class OutputLock {
 public:
  OutputLock() = default;
  /// Takes the lock on `output`, or throws ConfigError (exit 2) naming the job that holds it
  /// (PID, host, since when) or why the lock file cannot be made. Does not block.
  static OutputLock acquire(const std::string& output, const std::string& holder_note = "");
  OutputLock(OutputLock&& other) noexcept;
  OutputLock& operator=(OutputLock&& other) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  ~OutputLock();

  /// The lock file's path (empty when not locked).
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  int fd_ = -1;
};

/// The lock file of `output`: "<output>.lock", or "<dir>/.quilt-<hash>.lock" when the name would
/// exceed 255 bytes.
std::string lock_path(const std::string& output);

}  // namespace quilt::harness
