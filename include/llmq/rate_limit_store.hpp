#pragma once
/// @file rate_limit_store.hpp
/// Where per-user sliding windows live: in memory (default) or shared (Redis).

#include <llmq/config.hpp>
#include <llmq/sliding_window_limiter.hpp>

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <mutex>
#include <optional>
#include <string_view>

namespace llmq {

/// Per-user limit decisions. Implementations must be safe to call from several threads
/// and must not block the calling thread on I/O.
class UserRateLimitStore {
 public:
  virtual ~UserRateLimitStore() = default;

  /// Records one request of `user_id` if `limits` allow it. Refused requests are not
  /// recorded. `user_id` stays valid until the returned awaitable completes.
  virtual boost::asio::awaitable<RateLimitDecision> acquire(std::string_view user_id,
                                                            const UserLimits& limits) = 0;

  /// The same decision when the store can make it at once, without waiting (the queue
  /// then admits without a coroutine of its own); nullopt when it must wait, and then
  /// nothing is recorded. Default: nullopt.
  virtual std::optional<RateLimitDecision> try_acquire_now(std::string_view user_id,
                                                           const UserLimits& limits);

  /// Releases connections; called by LLMQueue::graceful_shutdown().
  virtual boost::asio::awaitable<void> close();
};

/// The default store: a SlidingWindowLimiter behind a mutex. `clock` is injectable for tests.
class InMemoryUserRateLimitStore : public UserRateLimitStore {
 public:
  using clock_function = std::function<SlidingWindowLimiter::time_point()>;

  explicit InMemoryUserRateLimitStore(clock_function clock = &SlidingWindowLimiter::clock::now);

  boost::asio::awaitable<RateLimitDecision> acquire(std::string_view user_id,
                                                    const UserLimits& limits) override;

  std::optional<RateLimitDecision> try_acquire_now(std::string_view user_id,
                                                   const UserLimits& limits) override;

  /// The decision itself, without a coroutine frame.
  RateLimitDecision acquire_now(std::string_view user_id, const UserLimits& limits);

  [[nodiscard]] std::size_t user_count() const;

 private:
  mutable std::mutex mutex_;
  clock_function clock_;
  SlidingWindowLimiter limiter_;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/rate_limit_store-inl.hpp>
#endif
