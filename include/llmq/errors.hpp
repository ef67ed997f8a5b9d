#pragma once
/// @file errors.hpp
/// The typed errors of llmq. Each carries the HTTP status it maps to, so a gateway
/// (or any caller) can answer with the right code without a lookup table.

#include <chrono>
#include <stdexcept>
#include <string>

namespace llmq {

/// Base of every llmq exception.
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, int http_status)
      : std::runtime_error(message), http_status_(http_status) {}

  /// The HTTP status this error maps to (400, 404, 429, 503, 504, ...).
  [[nodiscard]] int http_status() const noexcept { return http_status_; }

 private:
  int http_status_;
};

/// A configuration value is missing or wrong. The message names the key path, the
/// problem and, when the value came from YAML, its line:
/// `azure_open_ai[0].azure_oai_models[1].req_per_min: must be a positive integer (line 14)`.
class ConfigError : public Error {
 public:
  explicit ConfigError(const std::string& message) : Error(message, 500) {}
};

/// `execute_request` was called with an empty user id (400).
class UserIdHeaderMissingError : public Error {
 public:
  UserIdHeaderMissingError() : Error("user id is missing: every request needs a user id", 400) {}
};

/// The user has used up `max_num_requests_in_time_window` (429). `retry_after()` is the
/// exact time until the user's oldest admitted request leaves the window.
class UserRateLimitExceededError : public Error {
 public:
  UserRateLimitExceededError(const std::string& user_id, std::chrono::nanoseconds retry_after);

  /// Time until one more request of this user will be admitted.
  [[nodiscard]] std::chrono::nanoseconds retry_after() const noexcept { return retry_after_; }

 private:
  std::chrono::nanoseconds retry_after_;
};

/// The scheduler already holds `max_queue_size` requests (503).
class SchedulerQueueFullError : public Error {
 public:
  explicit SchedulerQueueFullError(std::size_t max_queue_size);
};

/// The request waited `request_timeout_seconds` in the queue without being dispatched (504).
class QueueTimeoutError : public Error {
 public:
  explicit QueueTimeoutError(std::chrono::nanoseconds waited);
};

/// The queue is not accepting or can no longer finish work: `initiate()` has not been
/// called, or `graceful_shutdown()` has begun or has passed its deadline (503).
class QueueClosedError : public Error {
 public:
  explicit QueueClosedError(const std::string& why) : Error(why, 503) {}
};

}  // namespace llmq
