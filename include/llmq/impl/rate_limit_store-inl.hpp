#pragma once
/// @file rate_limit_store-inl.hpp
/// Compiled once into llmq::llmq by src/rate_limit_store.cpp, or included by
/// <llmq/rate_limit_store.hpp> under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/rate_limit_store.hpp>

namespace llmq {

LLMQ_INLINE boost::asio::awaitable<void> UserRateLimitStore::close() { co_return; }

LLMQ_INLINE std::optional<RateLimitDecision> UserRateLimitStore::try_acquire_now(
    std::string_view, const UserLimits&) {
  return std::nullopt;
}

LLMQ_INLINE InMemoryUserRateLimitStore::InMemoryUserRateLimitStore(clock_function clock)
    : clock_(std::move(clock)) {}

LLMQ_INLINE RateLimitDecision InMemoryUserRateLimitStore::acquire_now(std::string_view user_id,
                                                                      const UserLimits& limits) {
  std::lock_guard lock(mutex_);
  return limiter_.acquire(user_id, clock_(), limits.max_num_requests_in_time_window,
                          limits.time_window);
}

LLMQ_INLINE std::optional<RateLimitDecision> InMemoryUserRateLimitStore::try_acquire_now(
    std::string_view user_id, const UserLimits& limits) {
  return acquire_now(user_id, limits);
}

LLMQ_INLINE boost::asio::awaitable<RateLimitDecision> InMemoryUserRateLimitStore::acquire(
    std::string_view user_id, const UserLimits& limits) {
  co_return acquire_now(user_id, limits);
}

LLMQ_INLINE std::size_t InMemoryUserRateLimitStore::user_count() const {
  std::lock_guard lock(mutex_);
  return limiter_.user_count();
}

}  // namespace llmq
