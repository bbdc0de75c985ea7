#pragma once
// Shared by the partitioner tests: `fn` must throw PartitionError whose message holds every part.

#include "partitioners/error.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace quilt::partitioners {

inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no PartitionError thrown";
  } catch (const PartitionError& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) {
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' missing in: " << msg;
    }
  }
}

}  // namespace quilt::partitioners
