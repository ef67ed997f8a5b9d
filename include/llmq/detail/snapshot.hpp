#pragma once
/// @file snapshot.hpp
/// An immutable value published to readers on any thread: readers take a shared_ptr to
/// the current one (valid while they hold it), a writer replaces it as a whole.
///
/// A mutex held for one reference-count increment rather than std::atomic<shared_ptr>:
/// libstdc++ 12's atomic<shared_ptr>::load releases its internal lock with a relaxed
/// operation, so a later store's write of the pointer does not happen after the load's
/// read (a data race by the memory model, reported by ThreadSanitizer). Uncontended,
/// the mutex costs about what that lock bit does.

#include <memory>
#include <mutex>
#include <utility>

namespace llmq::detail {

template <class T>
class Snapshot {
 public:
  Snapshot() = default;
  explicit Snapshot(std::shared_ptr<const T> value) : value_(std::move(value)) {}
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  /// The value now (any thread).
  [[nodiscard]] std::shared_ptr<const T> load() const {
    std::lock_guard lock(mutex_);
    return value_;
  }

  /// Replaces the value (any thread); the old one lives on while readers hold it, and is
  /// released outside the lock.
  void store(std::shared_ptr<const T> value) {
    {
      std::lock_guard lock(mutex_);
      value_.swap(value);
    }
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const T> value_;
};

}  // namespace llmq::detail
