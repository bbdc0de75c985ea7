#pragma once
// Writing an ExperimentRecord to an HDF5 results file (layout: results/SCHEMA.md).

#include <set>
#include <string>
#include <vector>

#include "results/error.h"
#include "results/record.h"

namespace quilt::results {

/// Writes `record` to the HDF5 file `path` (layout of results/SCHEMA.md, schema kSchemaVersion),
/// replacing any file there atomically: the data goes to "<path>.tmp.<pid>" in the same
/// directory, which is closed, fsync'ed and then rename()d over `path` (and the directory is
/// fsync'ed). A process killed at any moment leaves either the previous complete file or the new
/// complete file at `path`, never a partial one; at worst a stale "<path>.tmp.<pid>" remains.
/// On failure the temporary file is removed, `path` is untouched and ResultsError says why (the
/// file, the object path and HDF5's or the OS's reason). Blocks on disk I/O; call from one
/// process (rank 0) at a time per `path`. Run ids must be unique, non-empty, without '/', and
/// strings must not contain NUL bytes.
void write_experiment(const std::string& path, const ExperimentRecord& record);

/// A results file that finished runs are appended to one at a time (results/SCHEMA.md,
/// "Atomicity"): each commit() writes one run group with its `complete` attribute last, lists it
/// in /run_order, closes the file (flushing everything HDF5 holds) and fsyncs it, so its cost does
/// not grow with the runs already in the file. Rank 0 only; not thread-safe. Every failure throws
/// ResultsError naming the file and the reason (the OS's errno text: "No space left on device",
/// "Read-only file system", ...), and the file keeps every run committed before.
class Appender {
 public:
  Appender() = default;
  /// Starts a new results file at `path` holding `header`'s attributes and provenance and no runs
  /// (`header.runs` is ignored). The file is written under a temporary name in the same directory
  /// and renamed to `path`: at once, or, with `replace_at_first_commit` (--overwrite of an
  /// existing file), by the first commit(), so that the previous file stays intact until a run
  /// replaces it.
  static Appender create(const std::string& path, const ExperimentRecord& header,
                         bool replace_at_first_commit);
  /// Continues the existing results file `path` (--resume): its provenance is replaced by
  /// `header.provenance`; its runs stay. The caller has checked that it is this experiment's.
  static Appender resume(const std::string& path, const ExperimentRecord& header);

  Appender(Appender&& other) noexcept;
  Appender& operator=(Appender&& other) noexcept;
  Appender(const Appender&) = delete;
  Appender& operator=(const Appender&) = delete;
  /// Removes a temporary file that no commit() renamed into place.
  ~Appender();

  /// Appends `run` (replacing an earlier group with the same id, e.g. a failed run run again)
  /// and records `provenance`'s end time and boards. Before touching the file it reserves disk
  /// space for the run (fallocate, where the file system supports it), so that a full disk is
  /// found before the file is modified. Blocks on disk I/O.
  void commit(const RunRecord& run, const Provenance& provenance);

  /// The final path of the file.
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string pending_tmp_;          // written, not yet renamed to path_ (replace at first commit)
  std::set<std::string> listed_;     // ids already in /run_order
  std::vector<std::string> boards_;  // provenance boards as last written
};

}  // namespace quilt::results
