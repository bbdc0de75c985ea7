#pragma once
// What results/h5.cc and results/h5_io.cc share; not part of results/'s interface.

#include "results/h5.h"

#include <string>

namespace quilt::results::h5::internal {

/// Throws ResultsError("<where>: <what>").
[[noreturn]] void fail(const std::string& where, const std::string& what);

/// Throws ResultsError unless `name` can name a child of `loc`: non-empty, not ".", no '/' or NUL.
/// `kind` ("group", "dataset") is for the message.
void check_name(const Location& loc, const std::string& name, const char* kind);

}  // namespace quilt::results::h5::internal
