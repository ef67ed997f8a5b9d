#pragma once
/// @file snapshot.hpp
/// An immutable value published to readers on any thread: readers take a shared_ptr to
/// the current one (valid while they hold it), a writer replaces it as a whole.
///
/// Not std::atomic<shared_ptr>: libstdc++ 12's load releases its internal lock bit with
/// a relaxed operation, so a later store's write of the pointer does not happen after the
/// load's read (a data race by the memory model, which ThreadSanitizer reports). Here the
/// value sits behind a mutex, tagged with a generation number that is unique in the
/// process; each thread keeps the last value it read with its generation, so a read while
/// nothing changed is one atomic load and a reference-count increment, and only the first
/// read after a store takes the mutex.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace llmq::detail {

template <class T>
class Snapshot {
 public:
  Snapshot() = default;
  explicit Snapshot(std::shared_ptr<const T> value) { store(std::move(value)); }
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  /// The value now (any thread).
  [[nodiscard]] std::shared_ptr<const T> load() const {
    Cache& c = cache();
    if (c.generation == generation_.load(std::memory_order_acquire)) return c.value;
    std::lock_guard lock(mutex_);
    c.value = value_;
    c.generation = generation_.load(std::memory_order_relaxed);
    return c.value;
  }

  /// Replaces the value (any thread). The old one lives on while readers hold it (a
  /// thread's cached copy until that thread reads again).
  void store(std::shared_ptr<const T> value) {
    std::lock_guard lock(mutex_);
    value_.swap(value);
    generation_.store(next_generation().fetch_add(1, std::memory_order_relaxed),
                      std::memory_order_release);
  }

 private:
  /// A thread's last read: generations never repeat, so a match is that very value.
  struct Cache {
    std::uint64_t generation = 0;
    std::shared_ptr<const T> value;
  };
  static Cache& cache() {
    thread_local Cache c;
    return c;
  }
  static std::atomic<std::uint64_t>& next_generation() {
    static std::atomic<std::uint64_t> next{1};
    return next;
  }

  mutable std::mutex mutex_;
  std::shared_ptr<const T> value_;
  std::atomic<std::uint64_t> generation_{0};  // 0: nothing stored (no cache matches it)
};

}  // namespace llmq::detail
