#pragma once
/// @file sliding_window_limiter.hpp
/// Exact per-user sliding-window log: a decision core with no I/O and no clock of its
/// own (time is passed in), so it is tested with a fake clock.

#include <llmq/detail/string_hash.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmq {

/// Outcome of one limiter decision.
struct RateLimitDecision {
  bool allowed = false;
  /// When refused: exact time until the oldest entry leaves the window.
  std::chrono::nanoseconds retry_after{0};
  /// Requests the user may still make in the current window (after this one).
  std::int64_t remaining = 0;
};

/// Admits at most `max_requests` per user within any window of length `window` (both
/// may differ between users, e.g. by tier). Only admitted requests are recorded.
/// Per-user memory is at most `max_requests` timestamps; a user whose newest entry has
/// left its window is evicted (amortised O(1)), and its storage (map node, key buffer,
/// timestamp ring) is kept for the next new user, so users coming and going do not
/// allocate. Not thread-safe: callers serialise (InMemoryUserRateLimitStore holds a mutex).
class SlidingWindowLimiter {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  SlidingWindowLimiter() { spare_.reserve(kMaxSpareUsers); }

  /// Decides for `user_id` at `now`; records the request when it is allowed.
  /// `now` must not go backwards by more than the window (earlier values are clamped).
  RateLimitDecision acquire(std::string_view user_id, time_point now, std::int64_t max_requests,
                            clock::duration window);

  /// Removes users whose every entry is older than their window (that of their last
  /// decision) or `window`, whichever is longer, before `now`. Users are visited in
  /// order of their last admission and the walk stops at the first one still active.
  void evict_idle(time_point now, clock::duration window = clock::duration::zero());

  /// Users currently tracked.
  [[nodiscard]] std::size_t user_count() const noexcept { return users_.size(); }

  /// Heap bytes held for per-user state, including storage kept for reuse (an estimate
  /// that counts containers' capacity).
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  struct User {
    std::unique_ptr<std::int64_t[]> ring;  // admission times, ns since clock epoch
    std::uint32_t capacity = 0;
    std::uint32_t start = 0;
    std::uint32_t count = 0;
    std::int64_t window = 0;   // ns, of the last decision
    User* lru_prev = nullptr;  // ordered by last admission, oldest first
    User* lru_next = nullptr;
    const std::string* key = nullptr;
  };
  void lru_unlink(User& u) noexcept;
  void lru_push_back(User& u) noexcept;
  static std::int64_t newest(const User& u) noexcept;
  static void push(User& u, std::int64_t t, std::int64_t max_requests);

  using Map = std::unordered_map<std::string, User, detail::StringHash, std::equal_to<>>;
  void release(Map::iterator it);

  /// Evicted users' nodes kept for reuse at most.
  static constexpr std::size_t kMaxSpareUsers = 1024;

  Map users_;
  std::vector<Map::node_type> spare_;
  User* lru_head_ = nullptr;
  User* lru_tail_ = nullptr;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/sliding_window_limiter-inl.hpp>
#endif
