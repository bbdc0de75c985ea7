#include "backends/allocation_cache.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <cstdlib>
#include <mutex>

namespace quilt::backends {
namespace {

// One lock for every cache and for the active pointer: a deleter only gets the data pointer, so
// it must find the cache that handed it out, and a cache may close its scope on one thread while
// another thread frees.
std::mutex& lock() {
  static std::mutex m;
  return m;
}
AllocationCache* g_active = nullptr;  // the cache whose scope is open, guarded by lock()

constexpr size_t kHugePage = 2 << 20;

// Blocks of at least a huge page are 2 MiB-aligned and advised for transparent huge pages (where
// the kernel only gives them on request): oneDNN streams through activations of several MiB, and
// 4 KiB pages cost it TLB misses. Every block is freeable by c10's default deleter (free()),
// so a block this cache forgets is released correctly after its scope.
void* system_allocate(size_t nbytes, bool huge_pages) {
  if (huge_pages && nbytes >= kHugePage) {
    void* ptr = nullptr;
    const size_t rounded = (nbytes + kHugePage - 1) / kHugePage * kHugePage;
    if (posix_memalign(&ptr, kHugePage, rounded) == 0) {
      madvise(ptr, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
      return ptr;
    }
  }
  return c10::GetDefaultCPUAllocator()->raw_allocate(nbytes);
}
void system_free(void* ptr) { c10::GetDefaultCPUAllocator()->raw_deleter()(ptr); }

}  // namespace

AllocationCache::~AllocationCache() {
  std::lock_guard<std::mutex> g(lock());
  TORCH_INTERNAL_ASSERT(g_active != this, "AllocationCache destroyed inside its scope");
  for (auto& [size, ptr] : free_) system_free(ptr);
  free_.clear();
}

c10::DataPtr AllocationCache::allocate(size_t nbytes) const {
  void* ptr = nullptr;
  if (nbytes >= kMinBytes) {
    std::lock_guard<std::mutex> g(lock());
    auto it = free_.find(nbytes);
    if (it != free_.end()) {
      ptr = it->second;
      free_.erase(it);
      cached_bytes_ -= nbytes;
      ++hits_;
    } else {
      ++misses_;
    }
  }
  if (ptr == nullptr) ptr = system_allocate(nbytes, huge_pages_);
  if (nbytes >= kMinBytes) {
    std::lock_guard<std::mutex> g(lock());
    in_use_[ptr] = nbytes;
  }
  // c10::Allocator::raw_allocate needs the context to be the data pointer.
  return {ptr, ptr, &release, c10::Device(c10::DeviceType::CPU)};
}

void AllocationCache::release(void* ptr) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> g(lock());
    if (g_active != nullptr) {
      auto it = g_active->in_use_.find(ptr);
      if (it != g_active->in_use_.end()) {
        g_active->free_.emplace(it->second, ptr);
        g_active->cached_bytes_ += it->second;
        g_active->in_use_.erase(it);
        return;
      }
    }
  }
  // A small block, a block forgotten when its scope closed, or one the default allocator made.
  system_free(ptr);
}

size_t AllocationCache::cached_bytes() const {
  std::lock_guard<std::mutex> g(lock());
  return cached_bytes_;
}
size_t AllocationCache::hits() const {
  std::lock_guard<std::mutex> g(lock());
  return hits_;
}
size_t AllocationCache::misses() const {
  std::lock_guard<std::mutex> g(lock());
  return misses_;
}

void AllocationCache::clear() {
  std::lock_guard<std::mutex> g(lock());
  for (auto& [size, ptr] : free_) system_free(ptr);
  free_.clear();
  cached_bytes_ = 0;
}

ScopedAllocationCache::ScopedAllocationCache(AllocationCache& cache) : cache_(cache) {
  previous_ = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&cache_, /*priority=*/0);
  active_ = c10::GetCPUAllocator() == &cache_;
  if (active_) {
    std::lock_guard<std::mutex> g(lock());
    TORCH_INTERNAL_ASSERT(g_active == nullptr, "nested ScopedAllocationCache");
    g_active = &cache_;
  }
}

ScopedAllocationCache::~ScopedAllocationCache() {
  if (!active_) return;
  c10::SetCPUAllocator(previous_, /*priority=*/0);
  std::lock_guard<std::mutex> g(lock());
  g_active = nullptr;
  // Blocks still in use (the run's output, anything kept by the caller) are freed later by
  // whatever allocator is current then; they were made by the default allocator, so that is
  // safe once this cache forgets them.
  cache_.in_use_.clear();
}

}  // namespace quilt::backends
