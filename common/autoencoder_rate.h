#pragma once
// The autoencoder's rules, in one place: which reduction rates R and kernel sizes are valid, and
// how many channels the code keeps. models/ builds the layers, partitioners/ costs them, and the
// harness reads R from experiment files; each states these rules in its own error type.

#include <cstdint>

namespace quilt::common {

/// Whether `rate` is a valid autoencoder reduction rate R: finite and >= 1 (1 = no autoencoder).
bool valid_rate(double rate);

/// Whether `kernel` is a valid autoencoder kernel size: odd and >= 1, so that "same" padding keeps
/// the spatial size.
bool valid_kernel(int64_t kernel);

/// ceil(channels / rate), at least 1; a quotient within 1e-9 of an integer counts as that integer
/// (3 / (3 / 1.0) is 1, not 2). Requires channels >= 1 and valid_rate(rate) (asserted).
int64_t encoded_channels(int64_t channels, double rate);

}  // namespace quilt::common
