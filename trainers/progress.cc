#include "trainers/progress.h"

#include "trainers/data.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

namespace quilt::trainers {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string hms(double s) {
  if (!(s >= 0.0) || s > 1e7) return "--:--";
  auto t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
  return fmt::format("{:02}:{:02}", t / 60, t % 60);
}

// Whether `f` shows on a terminal. Under mpirun, Open MPI gives every rank a pseudo-terminal
// even when mpirun's own output goes to a file (`mpirun ... > log`), so a rank believes its
// isatty() only when its parent (mpirun, or the local daemon) writes to a terminal too.
bool shows_on_terminal(std::FILE* f) {
  if (!isatty(fileno(f))) return false;
  if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr && std::getenv("PMI_SIZE") == nullptr &&
      std::getenv("PMIX_RANK") == nullptr)
    return true;
  const std::string fd = "/proc/" + std::to_string(getppid()) + "/fd/1";
  char target[512];
  const ssize_t n = readlink(fd.c_str(), target, sizeof target - 1);
  if (n <= 0) return false;  // cannot tell: plain lines are safe in a terminal too
  const std::string t(target, static_cast<size_t>(n));
  return t.rfind("/dev/pts/", 0) == 0 || t.rfind("/dev/tty", 0) == 0;
}

}  // namespace

ProgressStyle parse_progress_style(const std::string& text) {
  if (text == "auto") return ProgressStyle::kAuto;
  if (text == "bar") return ProgressStyle::kBar;
  if (text == "lines") return ProgressStyle::kLines;
  if (text == "silent") return ProgressStyle::kSilent;
  throw TrainerError(
      fmt::format("unknown progress style \"{}\"; valid: auto, bar, lines, silent", text));
}

Progress::Progress(const ProgressOptions& options, int rank)
    : options_(options), style_(options.style) {
  if (rank != 0 || options_.out == nullptr) {
    style_ = ProgressStyle::kSilent;
  } else if (style_ == ProgressStyle::kAuto) {
    style_ = shows_on_terminal(options_.out) ? ProgressStyle::kBar : ProgressStyle::kLines;
  }
}

void Progress::start_epoch(const std::string& label, int64_t total_samples) {
  if (style_ == ProgressStyle::kSilent) return;
  label_ = label;
  total_ = total_samples;
  done_ = 0;
  loss_ = 0.0;
  start_s_ = last_draw_s_ = now_s();
  if (style_ == ProgressStyle::kLines) {
    std::fprintf(options_.out, "%s: %lld samples\n", label_.c_str(),
                 static_cast<long long>(total_));
    std::fflush(options_.out);
  }
}

void Progress::advance(int64_t samples, double loss) {
  if (style_ == ProgressStyle::kSilent) return;
  done_ += samples;
  loss_ = loss;
  draw(false);
}

void Progress::draw(bool force) {
  const double t = now_s();
  const double elapsed = t - start_s_;
  const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1.0;
  if (style_ == ProgressStyle::kBar) {
    // Redrawing a terminal line more than ~10 times a second costs more than it shows.
    if (!force && t - last_draw_s_ < 0.1 && done_ < total_) return;
    constexpr int kWidth = 30;
    const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(done_) / total_) : 1.0;
    const int fill = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<size_t>(fill), '=');
    if (fill < kWidth) bar += '>' + std::string(static_cast<size_t>(kWidth - fill - 1), ' ');
    std::fprintf(options_.out, "\r%s [%s] %3.0f%% loss %.4f %.0f samples/s ETA %s\033[K",
                 label_.c_str(), bar.c_str(), 100.0 * frac, loss_, rate, hms(eta).c_str());
    std::fflush(options_.out);
    last_draw_s_ = t;
  } else if (style_ == ProgressStyle::kLines) {
    if (!force && t - last_draw_s_ < options_.line_interval_s) return;
    std::fprintf(options_.out, "%s: %lld/%lld samples, loss %.4f, %.0f samples/s, ETA %s\n",
                 label_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_),
                 loss_, rate, hms(eta).c_str());
    std::fflush(options_.out);
    last_draw_s_ = t;
  }
}

void Progress::end_epoch(const std::string& summary) {
  if (style_ == ProgressStyle::kSilent) return;
  const double elapsed = now_s() - start_s_;
  if (style_ == ProgressStyle::kBar) {
    draw(true);
    std::fprintf(options_.out, "\n");
  }
  std::fprintf(options_.out, "%s done in %s: %s\n", label_.c_str(), hms(elapsed).c_str(),
               summary.c_str());
  std::fflush(options_.out);
}

void Progress::message(const std::string& text) {
  if (style_ == ProgressStyle::kSilent) return;
  std::fprintf(options_.out, "%s\n", text.c_str());
  std::fflush(options_.out);
}

}  // namespace quilt::trainers
