#pragma once
// A per-program cache of CPU buffers: the activations of one inference run are freed and
// allocated again with the same sizes in the next run; keeping them avoids malloc's mmap/munmap
// of large blocks and the page faults of touching fresh memory.

#include <c10/core/Allocator.h>

#include <cstddef>
#include <map>
#include <unordered_map>

namespace quilt::backends {

/// A c10 CPU allocator that keeps freed blocks of at least kMinBytes for reuse by a later
/// allocation of the same size. It is installed as the process's CPU allocator only inside a
/// ScopedAllocationCache, so that it never owns memory that outlives the scope: blocks still in use
/// when the scope closes are forgotten and freed like default allocations. Thread-safe.
class AllocationCache final : public c10::Allocator {
 public:
  /// Blocks smaller than this go straight to the default allocator's functions.
  static constexpr size_t kMinBytes = 64 * 1024;

  /// `huge_pages`: align blocks of 2 MiB and more to 2 MiB and advise the kernel to back them
  /// with transparent huge pages.
  explicit AllocationCache(bool huge_pages = true) : huge_pages_(huge_pages) {}
  /// Frees the cached blocks. No scope of this cache may be open.
  ~AllocationCache() override;
  AllocationCache(const AllocationCache&) = delete;
  AllocationCache& operator=(const AllocationCache&) = delete;

  c10::DataPtr allocate(size_t nbytes) const override;
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  /// Bytes held in free blocks, ready for reuse.
  size_t cached_bytes() const;
  /// Allocations served from the cache / from the system since construction.
  size_t hits() const;
  size_t misses() const;
  /// Frees every cached block.
  void clear();

 private:
  friend class ScopedAllocationCache;
  static void release(void* ptr);

  const bool huge_pages_;
  // All state is guarded by one process-wide mutex (see allocation_cache.cc).
  mutable std::unordered_map<void*, size_t> in_use_;  // ptr -> size, blocks handed out
  mutable std::multimap<size_t, void*> free_;         // size -> ptr, blocks ready for reuse
  mutable size_t cached_bytes_ = 0, hits_ = 0, misses_ = 0;
};

/// Installs `cache` as c10's CPU allocator for its lifetime and restores the previous one on
/// destruction. Does nothing if another allocator with a higher priority is installed (then
/// active() is false). Scopes of different caches must not interleave; one thread opens and
/// closes a scope, other threads may allocate meanwhile.
class ScopedAllocationCache {
 public:
  explicit ScopedAllocationCache(AllocationCache& cache);
  ~ScopedAllocationCache();
  ScopedAllocationCache(const ScopedAllocationCache&) = delete;
  ScopedAllocationCache& operator=(const ScopedAllocationCache&) = delete;
  /// Whether `cache` is the CPU allocator now.
  bool active() const { return active_; }

 private:
  AllocationCache& cache_;
  c10::Allocator* previous_ = nullptr;
  bool active_ = false;
};

}  // namespace quilt::backends
