#pragma once
// Wall-clock timestamps for result files, logs and reports (no MPI, no LibTorch).

#include <string>

namespace quilt::harness {

/// The current UTC time as ISO 8601 to the second ("2026-12-03T07:49:25Z").
std::string utc_now_iso8601();

/// Seconds since the Unix epoch (CLOCK_REALTIME), to the nanosecond the clock gives.
double unix_now_s();

}  // namespace quilt::harness
