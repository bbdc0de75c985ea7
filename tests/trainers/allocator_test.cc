// common::keep_freed_memory(): on glibc, a block a training step frees is kept for the next one,
// neither served by mmap (fresh zero-filled pages on every allocation) nor trimmed from the heap.

#include "common/allocator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace {

TEST(Allocator, KeepsFreedBlocksInTheHeap) {
#if !defined(__GLIBC__)
  GTEST_SKIP() << "keep_freed_memory() only tunes glibc's malloc";
#else
  ASSERT_TRUE(quilt::common::keep_freed_memory());
  // 16 MiB: well over glibc's default 128 KiB mmap threshold, under the kept one (32 MiB).
  constexpr size_t kBlock = size_t{16} << 20;
  const auto mapped_before = mallinfo2().hblkhd;
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before) << "the block was mmapped, not taken from the heap";
  const auto heap_with_block = mallinfo2().arena;
  std::free(block);
  EXPECT_EQ(mallinfo2().arena, heap_with_block) << "freeing the block trimmed the heap";
#endif
}

}  // namespace
