#include "results/writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <utility>

#include "results/fields_io.h"
#include "results/h5.h"
#include "results/trace_io.h"

namespace quilt::results {
namespace {

// "No space left on device (ENOSPC)": the text and the name users search for.
std::string errno_text(int err) {
  static const std::pair<int, const char*> kNames[] = {
      {ENOSPC, "ENOSPC"},   {EROFS, "EROFS"},   {EACCES, "EACCES"}, {ENAMETOOLONG, "ENAMETOOLONG"},
      {ENOTDIR, "ENOTDIR"}, {EDQUOT, "EDQUOT"}, {EIO, "EIO"}};
  std::string text = std::strerror(err);
  for (const auto& [code, name] : kNames)
    if (code == err) return text + " (" + name + ")";
  return text;
}

std::string parent_directory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Durability of the data before the rename makes it visible: without this a power loss after the
// rename could leave an empty or torn file under the final name.
void fsync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ResultsError(path + ": cannot open for fsync: " + errno_text(errno));
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    throw ResultsError(path + ": fsync failed: " + errno_text(err));
  }
  ::close(fd);
}

// Makes the rename itself durable. Some file systems cannot fsync a directory (EINVAL); the
// rename is still atomic there, so that is not an error.
void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw ResultsError(dir + ": cannot open directory for fsync: " + errno_text(errno));
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    throw ResultsError(dir + ": fsync of directory failed: " + errno_text(err));
  }
  ::close(fd);
}

// Checked before any I/O so that the commonest caller mistakes get a message about the record,
// not about HDF5.
void validate(const std::string& path, const ExperimentRecord& record) {
  std::set<std::string> seen;
  for (size_t i = 0; i < record.runs.size(); ++i) {
    const std::string& id = record.runs[i].id;
    const std::string where = path + ": run #" + std::to_string(i) + " (id '" + id + "')";
    if (id.empty() || id == "." || id.find('/') != std::string::npos ||
        id.find('\0') != std::string::npos) {
      throw ResultsError(where + ": invalid run id (must be non-empty, not '.', without '/')");
    }
    if (!seen.insert(id).second) throw ResultsError(where + ": duplicate run id");
  }
}

void write_provenance(const h5::Group& root, const Provenance& p) {
  fields::write(root.create_group("provenance"), p);
}

void write_stage(const h5::Group& stages, size_t k, const StageRecord& s) {
  fields::write(stages.create_group(std::to_string(k)), s);
}

void write_check(const h5::Group& checks, size_t k, const MetricCheck& c) {
  fields::write(checks.create_group(std::to_string(k)), c);
}

// Training runs only: a "training" group beside the pipeline fields (SCHEMA.md).
void write_training(const h5::Group& run, const TrainingRecord& t) {
  fields::write(run.create_group("training"), t);
}

void validate_run_id(const std::string& where, const std::string& id) {
  if (id.empty() || id == "." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos)
    throw ResultsError(where + ": invalid run id (must be non-empty, not '.', without '/')");
}

void write_run(const h5::Group& runs, const RunRecord& r) {
  h5::Group g = runs.create_group(r.id);
  fields::write(g, r, fields::Which::kAttributes);
  {
    h5::Group params = g.create_group("params");
    for (const auto& [key, value] : r.params) params.write_attribute(key, value);
  }
  fields::write(g, r, fields::Which::kDatasets);
  {
    h5::Group checks = g.create_group("checks", /*track_order=*/true);
    for (size_t k = 0; k < r.checks.size(); ++k) write_check(checks, k, r.checks[k]);
  }
  {
    h5::Group stages = g.create_group("stages", /*track_order=*/true);
    for (size_t k = 0; k < r.stages.size(); ++k) write_stage(stages, k, r.stages[k]);
  }
  if (!r.training.mode.empty()) write_training(g, r.training);
  write_trace(g, r.trace);
  // Last, so that a reader of a file produced by some other, non-atomic path can tell a run that
  // was cut short from a finished one.
  g.write_attribute("complete", static_cast<int64_t>(1));
}

void write_contents(const h5::Group& root, const ExperimentRecord& record) {
  root.write_attribute("quilt_format", "quilt-results");
  root.write_attribute("schema_version", static_cast<int64_t>(kSchemaVersion));
  root.write_attribute("name", record.name);
  root.write_attribute("experiment_hash", record.experiment_hash);
  write_provenance(root, record.provenance);
  std::vector<std::string> order;
  order.reserve(record.runs.size());
  {
    h5::Group runs = root.create_group("runs", /*track_order=*/true);
    for (const RunRecord& run : record.runs) {
      write_run(runs, run);
      order.push_back(run.id);
    }
  }
  // Extendable, so that Appender can list runs it adds later.
  root.write_extendable_dataset("run_order", order);
}

// The temporary file beside `path`: a short name, so that a final name close to the file
// system's limit (255 bytes) still has a temporary one.
std::string temporary_name(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  uint64_t h = 1469598103934665603ULL;  // FNV-1a of the final name
  for (unsigned char c : path) h = (h ^ c) * 1099511628211ULL;
  char name[64];
  std::snprintf(name, sizeof name, ".quilt-%016llx.%d.tmp", static_cast<unsigned long long>(h),
                static_cast<int>(::getpid()));
  return dir + name;
}

// Bytes a run group may take in the file: its numbers and strings plus HDF5's object headers,
// heaps and B-tree nodes (a few KiB per group), with a wide margin.
uint64_t reserve_bytes(const RunRecord& r) {
  uint64_t payload = 0;
  auto add = [&](const auto& v) { payload += 8 * v.size(); };
  add(r.latency_s);
  add(r.repetition_throughput_sps);
  add(r.repetition_duration_s);
  for (const auto& s : r.stages) {
    add(s.compute_s), add(s.recv_wait_s), add(s.send_wait_s), add(s.h2d_s), add(s.d2h_s);
    payload += s.board_description.size() + s.host.size() + s.units.size();
  }
  for (const auto& [k, v] : r.params) payload += k.size() + v.size();
  payload += r.failure.size() + 8 * 32 * (1 + r.training.epoch.size());
  for (const auto& x : r.invalid_reasons) payload += x.size();
  const uint64_t groups = 4 + r.stages.size() + r.checks.size();
  return 2 * payload + 8192 * groups + 65536;
}

// Reserves `bytes` past the end of `path` (not changing its size), so that the writes that follow
// land in allocated blocks and a full disk shows here, before the file is modified. File systems
// without fallocate (some NFS) get no reservation.
void reserve_space(const std::string& path, uint64_t bytes, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw ResultsError(path + ": cannot open for writing: " + errno_text(errno));
  struct stat st {};
  int rc = ::fstat(fd, &st);
  int err = rc == 0 ? 0 : errno;
  if (rc == 0) {
    rc = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, st.st_size, static_cast<off_t>(bytes));
    err = rc == 0 ? 0 : errno;
  }
  ::close(fd);
  if (rc == 0 || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) return;
  throw ResultsError(path + ": cannot reserve " + std::to_string((bytes + 1023) / 1024) +
                     " KiB to append " + what + ": " + errno_text(err));
}

}  // namespace

void write_experiment(const std::string& path, const ExperimentRecord& record) {
  h5::ScopedErrorSilence silence;
  if (path.empty()) throw ResultsError("results file path is empty");
  validate(path, record);
  const std::string tmp = temporary_name(path);
  try {
    {
      h5::File file = h5::File::create(tmp);
      write_contents(file.root(), record);
      file.close();
    }
    fsync_file(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      throw ResultsError(tmp + ": cannot rename to " + path + ": " + errno_text(errno));
    }
  } catch (const ResultsError& e) {
    std::remove(tmp.c_str());
    throw ResultsError("cannot write results file " + path + " (left unchanged): " + e.what());
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  fsync_directory(parent_directory(path));
}

}  // namespace quilt::results

namespace quilt::results {

Appender Appender::create(const std::string& path, const ExperimentRecord& header,
                          bool replace_at_first_commit) {
  h5::ScopedErrorSilence silence;
  if (path.empty()) throw ResultsError("results file path is empty");
  Appender a;
  a.path_ = path;
  const std::string tmp = temporary_name(path);
  ExperimentRecord empty;
  empty.name = header.name;
  empty.experiment_hash = header.experiment_hash;
  empty.provenance = header.provenance;
  try {
    {
      h5::File file = h5::File::create(tmp);
      write_contents(file.root(), empty);
      file.close();
    }
    fsync_file(tmp);
    if (!replace_at_first_commit) {
      if (std::rename(tmp.c_str(), path.c_str()) != 0)
        throw ResultsError(tmp + ": cannot rename to " + path + ": " + errno_text(errno));
      fsync_directory(parent_directory(path));
    } else {
      a.pending_tmp_ = tmp;
    }
  } catch (const ResultsError& e) {
    std::remove(tmp.c_str());
    throw ResultsError("cannot create results file " + path + ": " + e.what());
  }
  a.boards_ = header.provenance.boards;
  return a;
}

Appender Appender::resume(const std::string& path, const ExperimentRecord& header) {
  h5::ScopedErrorSilence silence;
  Appender a;
  a.path_ = path;
  try {
    h5::File file = h5::File::open_read_write(path);
    const h5::Group& root = file.root();
    root.remove("provenance");
    write_provenance(root, header.provenance);
    if (root.has("run_order"))
      for (auto& id : root.read_string_vector("run_order")) a.listed_.insert(std::move(id));
    file.close();
    fsync_file(path);
  } catch (const ResultsError& e) {
    throw ResultsError("cannot continue results file " + path + ": " + e.what());
  }
  a.boards_ = header.provenance.boards;
  return a;
}

Appender::Appender(Appender&& other) noexcept
    : path_(std::move(other.path_)),
      pending_tmp_(std::exchange(other.pending_tmp_, std::string())),
      listed_(std::move(other.listed_)),
      boards_(std::move(other.boards_)) {}

Appender& Appender::operator=(Appender&& other) noexcept {
  if (this != &other) {
    if (!pending_tmp_.empty()) std::remove(pending_tmp_.c_str());
    path_ = std::move(other.path_);
    pending_tmp_ = std::exchange(other.pending_tmp_, std::string());
    listed_ = std::move(other.listed_);
    boards_ = std::move(other.boards_);
  }
  return *this;
}

Appender::~Appender() {
  if (!pending_tmp_.empty()) std::remove(pending_tmp_.c_str());
}

void Appender::commit(const RunRecord& run, const Provenance& provenance) {
  h5::ScopedErrorSilence silence;
  const std::string target = pending_tmp_.empty() ? path_ : pending_tmp_;
  const std::string what = "run " + run.id;
  try {
    validate_run_id(path_ + ": " + what, run.id);
    reserve_space(target, reserve_bytes(run), what);
    h5::File file = h5::File::open_read_write(target);
    const h5::Group& root = file.root();
    {
      h5::Group runs = root.open_group("runs");
      // A run run again (failed before, or cut short by a crash) replaces its old group; its
      // place in /run_order stays.
      runs.remove(run.id);
      write_run(runs, run);
    }
    if (!listed_.count(run.id)) root.append_to_string_dataset("run_order", run.id);
    {
      h5::Group p = root.open_group("provenance");
      p.remove_attribute("end_utc");
      p.write_attribute("end_utc", provenance.end_utc);
      if (provenance.boards != boards_) {
        p.remove("boards");
        p.write_dataset("boards", provenance.boards);
      }
    }
    file.close();
    fsync_file(target);
    if (!pending_tmp_.empty()) {
      if (std::rename(target.c_str(), path_.c_str()) != 0)
        throw ResultsError(target + ": cannot rename to " + path_ + ": " + errno_text(errno));
      pending_tmp_.clear();
      fsync_directory(parent_directory(path_));
    }
  } catch (const ResultsError& e) {
    throw ResultsError("cannot append " + what + " to results file " + path_ +
                       " (it keeps every run committed before): " + e.what());
  }
  listed_.insert(run.id);
  boards_ = provenance.boards;
}

}  // namespace quilt::results
