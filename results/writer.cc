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

#include "results/h5.h"
#include "results/trace_io.h"

namespace quilt::results {
namespace {

// "No space left on device (ENOSPC)": the text and the name users search for.
std::string errno_text(int err) {
  std::string text = std::strerror(err);
  switch (err) {
    case ENOSPC:
      return text + " (ENOSPC)";
    case EROFS:
      return text + " (EROFS)";
    case EACCES:
      return text + " (EACCES)";
    case ENAMETOOLONG:
      return text + " (ENAMETOOLONG)";
    case ENOTDIR:
      return text + " (ENOTDIR)";
    case EDQUOT:
      return text + " (EDQUOT)";
    case EIO:
      return text + " (EIO)";
    default:
      return text;
  }
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
  h5::Group g = root.create_group("provenance");
  g.write_attribute("quilt_version", p.quilt_version);
  g.write_attribute("git_commit", p.git_commit);
  g.write_attribute("git_dirty", static_cast<int64_t>(p.git_dirty ? 1 : 0));
  g.write_attribute("torch_version", p.torch_version);
  g.write_attribute("mpi_version", p.mpi_version);
  g.write_attribute("hdf5_version", p.hdf5_version);
  g.write_attribute("xrt_version", p.xrt_version);
  g.write_attribute("compiler", p.compiler);
  g.write_attribute("command_line", p.command_line);
  g.write_attribute("experiment_path", p.experiment_path);
  g.write_attribute("created_utc", p.created_utc);
  g.write_attribute("start_utc", p.start_utc);
  g.write_attribute("end_utc", p.end_utc);
  g.write_attribute("scale", p.scale);
  g.write_dataset("hosts", p.hosts);
  g.write_dataset("boards", p.boards);
  g.write_string_dataset("experiment_text", p.experiment_text);
  g.write_string_dataset("resolved_experiment", p.resolved_experiment);
}

void write_stage(const h5::Group& stages, size_t k, const StageRecord& s) {
  h5::Group g = stages.create_group(std::to_string(k));
  g.write_attribute("rank", static_cast<int64_t>(s.rank));
  g.write_attribute("host", s.host);
  g.write_attribute("board", s.board);
  g.write_attribute("board_description", s.board_description);
  g.write_attribute("units", s.units);
  g.write_attribute("bytes_sent", s.bytes_sent);
  g.write_attribute("bytes_received", s.bytes_received);
  g.write_attribute("predicted_compute_s", s.predicted_compute_s);
  g.write_attribute("predicted_comm_s", s.predicted_comm_s);
  g.write_attribute("predicted_exec_s", s.predicted_exec_s);
  g.write_dataset("in_shape", s.in_shape);
  g.write_dataset("out_shape", s.out_shape);
  g.write_dataset("compute_s", s.compute_s);
  g.write_dataset("recv_wait_s", s.recv_wait_s);
  g.write_dataset("send_wait_s", s.send_wait_s);
  g.write_dataset("h2d_s", s.h2d_s);
  g.write_dataset("d2h_s", s.d2h_s);
  g.write_attribute("busy_s", s.busy_s);
  g.write_attribute("energy_j", s.energy_j);
}

void write_check(const h5::Group& checks, size_t k, const MetricCheck& c) {
  h5::Group g = checks.create_group(std::to_string(k));
  g.write_attribute("metric", c.metric);
  g.write_attribute("value", c.value);
  g.write_attribute("reference", c.reference);
  g.write_attribute("tolerance", c.tolerance);
  g.write_attribute("better", c.better);
  g.write_attribute("passed", static_cast<int64_t>(c.passed ? 1 : 0));
}

// Training runs only: a "training" group beside the pipeline fields (SCHEMA.md).
void write_training(const h5::Group& run, const TrainingRecord& t) {
  h5::Group g = run.create_group("training");
  g.write_attribute("mode", t.mode);
  g.write_attribute("dataset", t.dataset);
  g.write_attribute("data_source", t.data_source);
  g.write_attribute("stand_in", t.stand_in);
  g.write_attribute("train_samples", t.train_samples);
  g.write_attribute("test_samples", t.test_samples);
  g.write_attribute("classes", t.classes);
  g.write_attribute("ranks", t.ranks);
  g.write_attribute("global_batch", t.global_batch);
  g.write_attribute("phase1_epochs", t.phase1_epochs);
  g.write_attribute("final_test_loss", t.final_test_loss);
  g.write_attribute("final_top1", t.final_top1);
  g.write_attribute("final_top5", t.final_top5);
  g.write_attribute("train_s", t.train_s);
  g.write_attribute("full_epoch_s", t.full_epoch_s);
  g.write_attribute("proxy_speedup", t.proxy_speedup);
  g.write_attribute("checkpoint", t.checkpoint);
  g.write_attribute("pretrained", t.pretrained);
  g.write_attribute("pretrain_top1", t.pretrain_top1);
  g.write_attribute("converged", t.converged);
  g.write_attribute("converge_window", t.converge_window);
  g.write_attribute("converge_margin_pt", t.converge_margin_pt);
  g.write_attribute("precision", t.precision);
  g.write_attribute("precision_top1", t.precision_top1);
  g.write_attribute("precision_agreement", t.precision_agreement);
  g.write_dataset("epoch", t.epoch);
  g.write_dataset("phase", t.phase);
  g.write_dataset("train_loss", t.train_loss);
  g.write_dataset("train_top1", t.train_top1);
  g.write_dataset("test_loss", t.test_loss);
  g.write_dataset("test_top1", t.test_top1);
  g.write_dataset("test_top5", t.test_top5);
  g.write_dataset("epoch_s", t.epoch_s);
  g.write_dataset("samples_per_s", t.samples_per_s);
}

void validate_run_id(const std::string& where, const std::string& id) {
  if (id.empty() || id == "." || id.find('/') != std::string::npos ||
      id.find('\0') != std::string::npos)
    throw ResultsError(where + ": invalid run id (must be non-empty, not '.', without '/')");
}

void write_run(const h5::Group& runs, const RunRecord& r) {
  h5::Group g = runs.create_group(r.id);
  g.write_attribute("status", r.status);
  g.write_attribute("failure", r.failure);
  g.write_attribute("batch_size", r.batch_size);
  g.write_attribute("warmup_batches", r.warmup_batches);
  g.write_attribute("measured_batches", r.measured_batches);
  g.write_attribute("start_unix_s", r.start_unix_s);
  g.write_attribute("end_unix_s", r.end_unix_s);
  g.write_attribute("throughput_sps", r.throughput_sps);
  g.write_attribute("duration_s", r.duration_s);
  g.write_attribute("latency_p50_s", r.latency_p50_s);
  g.write_attribute("latency_p90_s", r.latency_p90_s);
  g.write_attribute("latency_p99_s", r.latency_p99_s);
  g.write_attribute("max_abs_error", r.max_abs_error);
  g.write_attribute("failed_rank", r.failed_rank);
  g.write_attribute("repetitions", r.repetitions);
  g.write_attribute("throughput_median_sps", r.throughput_median_sps);
  g.write_attribute("throughput_mean_sps", r.throughput_mean_sps);
  g.write_attribute("throughput_std_sps", r.throughput_std_sps);
  g.write_attribute("throughput_ci95_low_sps", r.throughput_ci95_low_sps);
  g.write_attribute("throughput_ci95_high_sps", r.throughput_ci95_high_sps);
  g.write_attribute("validity", r.validity);
  g.write_attribute("time_model", r.time_model);
  g.write_attribute("precision", r.precision);
  g.write_attribute("element_bytes", r.element_bytes);
  g.write_attribute("dilation", r.dilation);
  g.write_attribute("overruns", r.overruns);
  g.write_attribute("cpu_wait_fraction", r.cpu_wait_fraction);
  g.write_attribute("energy_j", r.energy_j);
  g.write_attribute("energy_per_sample_j", r.energy_per_sample_j);
  g.write_attribute("energy_source", r.energy_source);
  {
    h5::Group params = g.create_group("params");
    for (const auto& [key, value] : r.params) params.write_attribute(key, value);
  }
  g.write_dataset("latency_s", r.latency_s);
  g.write_dataset("cut_names", r.cut_names);
  g.write_dataset("cut_bytes_per_sample", r.cut_bytes_per_sample);
  g.write_dataset("cut_wire_bytes_per_sample", r.cut_wire_bytes_per_sample);
  g.write_dataset("cut_requested_rate", r.cut_requested_rate);
  g.write_dataset("cut_effective_rate", r.cut_effective_rate);
  g.write_dataset("repetition_throughput_sps", r.repetition_throughput_sps);
  g.write_dataset("repetition_duration_s", r.repetition_duration_s);
  g.write_dataset("invalid_reasons", r.invalid_reasons);
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
