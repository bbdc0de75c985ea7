#pragma once
// Chained setters for options structs, as LibTorch's options have them:
// AutoencoderOptions().set_rate(4).set_kernel(3). The field stays a plain public member.

#include <utility>

/// Declares `Options& set_<field>(Type value)` in the struct `Options`: assigns the member
/// `field` and returns *this.
#define QUILT_CHAINED_SETTER(Options, Type, field) \
  Options& set_##field(Type value) {               \
    field = std::move(value);                      \
    return *this;                                  \
  }
