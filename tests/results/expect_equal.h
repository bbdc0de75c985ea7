#pragma once
// Field-by-field comparison of results records through their field lists (FieldList in
// results/record.h), so that a failure names the field that differs and a field added to a list
// is compared without touching this file.

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "results/record.h"

namespace quilt::results::testing {

// Doubles compare exactly (HDF5 stores IEEE doubles bit for bit); NaN equals NaN, so that
// "not applicable" values round-trip.
inline bool same_value(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }
inline bool same_value(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_value(a[i], b[i])) return false;
  return true;
}
template <class T>
bool same_value(const T& a, const T& b) {
  return a == b;
}

/// EXPECT-compares every field of FieldList<R> of `a` and `b`, naming the field on failure.
template <class R>
void expect_fields_equal(const R& a, const R& b) {
  FieldList<R>::visit([&](const Field& f, auto member) {
    EXPECT_TRUE(same_value(a.*member, b.*member))
        << "field '" << f.name << "' differs: " << ::testing::PrintToString(a.*member) << " vs "
        << ::testing::PrintToString(b.*member);
  });
}

inline void expect_equal(const StageRecord& a, const StageRecord& b, const std::string& where) {
  SCOPED_TRACE(where);
  expect_fields_equal(a, b);
}

inline void expect_equal(const MetricCheck& a, const MetricCheck& b, const std::string& where) {
  SCOPED_TRACE(where);
  expect_fields_equal(a, b);
}

inline void expect_equal(const TrainingRecord& a, const TrainingRecord& b,
                         const std::string& where) {
  SCOPED_TRACE(where);
  expect_fields_equal(a, b);
}

inline void expect_equal(const RunRecord& a, const RunRecord& b, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.params, b.params);
  expect_fields_equal(a, b);
  ASSERT_EQ(a.checks.size(), b.checks.size());
  for (size_t k = 0; k < a.checks.size(); ++k) {
    expect_equal(a.checks[k], b.checks[k], where + " check " + std::to_string(k));
  }
  // Only training runs store a training group.
  EXPECT_EQ(a.training.mode, b.training.mode);
  if (!a.training.mode.empty()) expect_equal(a.training, b.training, where + " training");
  EXPECT_EQ(a.trace.clock, b.trace.clock);
  EXPECT_EQ(a.trace.dropped_events, b.trace.dropped_events);
  EXPECT_EQ(a.trace.max_batches, b.trace.max_batches);
  EXPECT_EQ(a.trace.phases, b.trace.phases);
  EXPECT_EQ(a.trace.rank, b.trace.rank);
  EXPECT_EQ(a.trace.batch, b.trace.batch);
  EXPECT_EQ(a.trace.repetition, b.trace.repetition);
  EXPECT_EQ(a.trace.phase, b.trace.phase);
  EXPECT_EQ(a.trace.start_s, b.trace.start_s);
  EXPECT_EQ(a.trace.end_s, b.trace.end_s);
  ASSERT_EQ(a.stages.size(), b.stages.size());
  for (size_t k = 0; k < a.stages.size(); ++k) {
    expect_equal(a.stages[k], b.stages[k], where + " stage " + std::to_string(k));
  }
}

inline void expect_equal(const Provenance& a, const Provenance& b) {
  SCOPED_TRACE("provenance");
  expect_fields_equal(a, b);
}

/// Compares every field of two experiment records.
inline void expect_equal(const ExperimentRecord& a, const ExperimentRecord& b) {
  EXPECT_EQ(a.schema_version, b.schema_version);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.experiment_hash, b.experiment_hash);
  expect_equal(a.provenance, b.provenance);
  ASSERT_EQ(a.runs.size(), b.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) {
    expect_equal(a.runs[i], b.runs[i], "run " + std::to_string(i) + " (" + a.runs[i].id + ")");
  }
}

}  // namespace quilt::results::testing
