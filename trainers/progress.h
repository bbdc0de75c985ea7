#pragma once
// Training progress for humans: a bar with rate and ETA when stdout is a terminal, plain
// periodic lines for batch jobs, nothing for tests. Shown by rank 0 only.

#include <cstdint>
#include <cstdio>
#include <string>

namespace quilt::trainers {

/// How progress is shown.
enum class ProgressStyle {
  kAuto,    ///< kBar when the output stream is a terminal (isatty; under mpirun, mpirun's own
            ///< output too: Open MPI gives ranks a pseudo-terminal), kLines otherwise
  kBar,     ///< one line redrawn in place: phase, epoch, [=====>   ], samples/s, ETA
  kLines,   ///< one plain line every line_interval_s and at every epoch end
  kSilent,  ///< nothing
};

/// Parses "auto", "bar", "lines", "silent"; throws TrainerError listing them otherwise.
ProgressStyle parse_progress_style(const std::string& text);

/// Progress settings.
struct ProgressOptions {
  ProgressStyle style = ProgressStyle::kAuto;
  double line_interval_s = 10.0;  ///< kLines: at most one batch line per this many seconds
  std::FILE* out = stdout;        ///< where to write (not owned)
};

/// Reports the progress of one training on rank 0 (on other ranks every call does nothing).
/// Not thread-safe; calls come from the training loop.
class Progress {
 public:
  /// `rank` is the caller's rank (only rank 0 shows anything).
  Progress(const ProgressOptions& options, int rank);
  /// An epoch starts: `label` ("phase 1 (autoencoders) epoch 3/10"), `total_samples` global
  /// samples it will see.
  void start_epoch(const std::string& label, int64_t total_samples);
  /// `samples` more global samples done; `loss` is the running mean training loss.
  void advance(int64_t samples, double loss);
  /// The epoch ended; `summary` ("train loss 0.41 acc 0.86 | test top1 0.84 ...") is printed.
  void end_epoch(const std::string& summary);
  /// A free-form message line (phase changes, failures).
  void message(const std::string& text);
  /// The style in effect (kAuto resolved).
  ProgressStyle style() const { return style_; }

 private:
  void draw(bool force);
  ProgressOptions options_;
  ProgressStyle style_;
  std::string label_;
  int64_t total_ = 0, done_ = 0;
  double loss_ = 0.0, start_s_ = 0.0, last_draw_s_ = 0.0;
};

}  // namespace quilt::trainers
