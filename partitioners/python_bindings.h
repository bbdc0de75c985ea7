#pragma once
// Python bindings of the partitioners: plain dicts and lists in and out. Linked into the
// pybind11 module `quilt` (harness/python/module.cc calls bind_partitioners).

#include <pybind11/pybind11.h>

namespace quilt::partitioners {

/// Adds to `m`: PartitionError (a ValueError), board_profile(), search(), brute_force(),
/// stage_costs() and calibrate(). Call once, from the module's init function.
void bind_partitioners(pybind11::module_& m);

}  // namespace quilt::partitioners
