#include "backends/allocation_cache.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace quilt::backends {
namespace {

constexpr int64_t kBig = 1 << 16;  // floats: 256 KiB, above AllocationCache::kMinBytes

TEST(AllocationCacheTest, ReusesFreedBlocksInsideItsScope) {
  AllocationCache cache;
  c10::Allocator* before = c10::GetCPUAllocator();
  void* first = nullptr;
  {
    ScopedAllocationCache scope(cache);
    ASSERT_TRUE(scope.active());
    EXPECT_EQ(c10::GetCPUAllocator(), &cache);
    {
      at::Tensor t = torch::empty({kBig});
      first = t.data_ptr();
    }
    EXPECT_EQ(cache.cached_bytes(), kBig * sizeof(float));
    at::Tensor again = torch::empty({kBig});
    EXPECT_EQ(again.data_ptr(), first);
    EXPECT_EQ(cache.hits(), 1u);
    EXPECT_EQ(cache.misses(), 1u);
  }
  EXPECT_EQ(c10::GetCPUAllocator(), before);
}

TEST(AllocationCacheTest, BlocksThatOutliveTheScopeAreFreedNormally) {
  AllocationCache cache;
  at::Tensor escaped, small;
  {
    ScopedAllocationCache scope(cache);
    escaped = torch::ones({kBig});
    small = torch::ones({4});
  }
  // Freed after the scope closed: goes back to the system, not into the cache.
  escaped.reset();
  small.reset();
  EXPECT_EQ(cache.cached_bytes(), 0u);
  {
    ScopedAllocationCache scope(cache);
    at::Tensor t = torch::ones({kBig});
    EXPECT_EQ(cache.hits(), 0u);
  }  // t dies before the scope closes: cached
  EXPECT_EQ(cache.cached_bytes(), kBig * sizeof(float));
}

TEST(AllocationCacheTest, FreesOfDefaultBlocksInsideTheScopeGoToTheSystem) {
  AllocationCache cache;
  at::Tensor made_before = torch::ones({kBig});
  {
    ScopedAllocationCache scope(cache);
    made_before.reset();
    EXPECT_EQ(cache.cached_bytes(), 0u);
  }
  cache.clear();
}

TEST(AllocationCacheTest, MkldnnTensorsUseTheCache) {
  AllocationCache cache;
  at::Tensor dense = torch::randn({2, 16, 32, 32});
  {
    ScopedAllocationCache scope(cache);
    for (int i = 0; i < 3; ++i) {
      at::Tensor m = dense.to_mkldnn();
      at::Tensor back = m.to_dense();
      EXPECT_TRUE(torch::equal(back, dense));
    }
  }
  EXPECT_GE(cache.hits(), 2u);
  cache.clear();
  EXPECT_EQ(cache.cached_bytes(), 0u);
}

}  // namespace
}  // namespace quilt::backends
