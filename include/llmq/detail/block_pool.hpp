#pragma once
// Internal: a free list of equally sized blocks for the two objects every request
// allocates in the queue (its Entry and its TelemetryData).
//
// Requests come and go in bursts (thousands admitted, then thousands answered). The
// allocator's per-thread caches hold a handful of blocks per size, so past them every
// such object took the allocator's slow path (bin searches, chunk coalescing). Reusing
// freed blocks LIFO keeps those allocations O(1) and their memory warm. At most
// `max_free` blocks are kept; the rest go back to the allocator.

#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace llmq::detail {

class BlockPool {
 public:
  BlockPool(std::size_t block_size, std::size_t max_free)
      : block_size_(block_size), max_free_(max_free) {
    free_.reserve(max_free_);
  }
  ~BlockPool() {
    for (void* p : free_) ::operator delete(p);
  }
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  /// A block of at least `bytes`; larger requests than the pool's blocks bypass it.
  [[nodiscard]] void* allocate(std::size_t bytes) {
    if (bytes > block_size_) return ::operator new(bytes);
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        void* p = free_.back();
        free_.pop_back();
        return p;
      }
    }
    return ::operator new(block_size_);
  }

  void deallocate(void* p, std::size_t bytes) noexcept {
    if (bytes > block_size_) {
      ::operator delete(p);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (free_.size() < max_free_) {  // never reallocates: reserved up front
        free_.push_back(p);
        return;
      }
    }
    ::operator delete(p);
  }

  [[nodiscard]] std::size_t block_size() const noexcept { return block_size_; }
  /// Blocks kept for reuse.
  [[nodiscard]] std::size_t free_blocks() {
    std::lock_guard lock(mutex_);
    return free_.size();
  }

 private:
  const std::size_t block_size_;
  const std::size_t max_free_;
  std::mutex mutex_;
  std::vector<void*> free_;
};

/// A standard allocator drawing from a shared BlockPool (for std::allocate_shared).
template <class T>
struct PoolAllocator {
  using value_type = T;
  explicit PoolAllocator(std::shared_ptr<BlockPool> p) noexcept : pool(std::move(p)) {}
  template <class U>
  PoolAllocator(const PoolAllocator<U>& other) noexcept : pool(other.pool) {}  // NOLINT

  T* allocate(std::size_t n) { return static_cast<T*>(pool->allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { pool->deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const PoolAllocator<U>& other) const noexcept {
    return pool == other.pool;
  }

  std::shared_ptr<BlockPool> pool;
};

/// Deletes an object whose block came from a BlockPool.
template <class T>
struct PoolDelete {
  std::shared_ptr<BlockPool> pool;
  void operator()(T* p) const noexcept {
    p->~T();
    pool->deallocate(p, sizeof(T));
  }
};

/// Constructs a T in a block of `pool`.
template <class T, class... Args>
std::unique_ptr<T, PoolDelete<T>> make_pooled(const std::shared_ptr<BlockPool>& pool,
                                              Args&&... args) {
  void* mem = pool->allocate(sizeof(T));
  try {
    return std::unique_ptr<T, PoolDelete<T>>(::new (mem) T(std::forward<Args>(args)...),
                                             PoolDelete<T>{pool});
  } catch (...) {
    pool->deallocate(mem, sizeof(T));
    throw;
  }
}

}  // namespace llmq::detail
