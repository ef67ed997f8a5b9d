/// @file errors.cpp
/// Out-of-line constructors of the errors in errors.hpp (their messages).

#include <llmq/errors.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace llmq {
namespace {

/// "12.345": a millisecond count as seconds with three decimals (negative -> 0).
std::string seconds_text(std::chrono::milliseconds ms) {
  const std::int64_t count = ms.count() < 0 ? 0 : ms.count();
  std::string fraction = std::to_string(count % 1000);
  fraction.insert(0, 3 - fraction.size(), '0');
  return std::to_string(count / 1000) + "." + fraction;
}

std::string rate_limit_message(const std::string& user_id, std::chrono::nanoseconds retry_after) {
  // Rounded up: waiting the printed time is always enough.
  return "rate limit exceeded for user '" + user_id + "'; retry after " +
         seconds_text(std::chrono::ceil<std::chrono::milliseconds>(retry_after)) + " s";
}

std::string queue_timeout_message(std::chrono::nanoseconds waited) {
  return "request waited " + seconds_text(std::chrono::round<std::chrono::milliseconds>(waited)) +
         " s in the queue without being dispatched (request_timeout_seconds)";
}

}  // namespace

UserRateLimitExceededError::UserRateLimitExceededError(const std::string& user_id,
                                                       std::chrono::nanoseconds retry_after)
    : Error(rate_limit_message(user_id, retry_after), 429), retry_after_(retry_after) {}

SchedulerQueueFullError::SchedulerQueueFullError(std::size_t max_queue_size)
    : Error("scheduler queue is full (max_queue_size " + std::to_string(max_queue_size) + ")",
            503) {}

QueueTimeoutError::QueueTimeoutError(std::chrono::nanoseconds waited)
    : Error(queue_timeout_message(waited), 504) {}

}  // namespace llmq
