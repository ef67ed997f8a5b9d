#pragma once
/// @file errors.hpp
/// The error model of llmq.
///
/// Every refusal or failure that llmq itself decides (the request never reached an
/// executor, or the queue stopped it) is an `llmq::errc`: `async_execute_request`
/// completes with it as an error_code of the category named "llmq", and
/// `execute_request` throws the matching exception below (the seed's types where the
/// seed had one). Everything an executor produced is a Response: the upstream's answer
/// with its status (429 and 5xx included), or a 500 Response when the executor threw.
/// A caller that cancels gets `boost::asio::error::operation_aborted`.
///
/// Each exception carries the HTTP status it maps to, its error code and, where useful,
/// a retry-after, so a gateway (or any caller) answers without a lookup table.

#include <boost/system/error_code.hpp>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace llmq {

/// Why llmq refused or stopped a request. Values are stable; 0 is success.
enum class errc {
  /// The user id is empty (400; UserIdHeaderMissingError).
  user_id_missing = 1,
  /// The user id is longer than 256 bytes or holds control characters (400).
  invalid_user_id,
  /// The user used up `max_num_requests_in_time_window`; the answer's retry_after is the
  /// exact time until one more request is admitted (429; UserRateLimitExceededError).
  user_rate_limited,
  /// The scheduler holds `max_queue_size` requests (503; SchedulerQueueFullError).
  queue_full,
  /// The request waited `request_timeout_seconds` without being dispatched
  /// (504; QueueTimeoutError).
  queue_timeout,
  /// The queue is not running: initiate() was not called, or graceful_shutdown() began
  /// (503; QueueClosedError).
  queue_closed,
  /// The queue's dispatcher failed; every waiting request was answered with this and
  /// new ones are refused (503; QueueClosedError).
  queue_failed,
  /// No RequestExecutor is registered for the req_type (404; InvalidRequestError).
  unknown_request_type,
  /// No configured deployment can satisfy the ModelPreferences (400; InvalidRequestError).
  unsatisfiable_preferences,
  /// The request body or options are malformed, e.g. JSON nested deeper than
  /// QueueOptions::max_json_depth or a bad request id (400; InvalidRequestError).
  invalid_request,
  /// The request's token estimate exceeds the tokens_per_min of every deployment that
  /// could serve it: it could never be dispatched (400; InvalidRequestError).
  request_too_large,
  /// The executor did not finish within QueueOptions::execution_timeout; it was cancelled
  /// (504; ExecutionTimeoutError).
  execution_timeout,
  /// The UserRateLimitStore failed and its policy is to refuse (503; StoreUnavailableError).
  user_limit_store_unavailable,
  /// The shared DeploymentBudgetStore failed and QueueOptions::budget_store_fail_open is
  /// false (503; StoreUnavailableError).
  budget_store_unavailable,
};

/// The category of errc, named "llmq".
[[nodiscard]] const boost::system::error_category& error_category() noexcept;

/// Makes an error_code of the "llmq" category (found by ADL, so `ec == llmq::errc::x` works).
[[nodiscard]] boost::system::error_code make_error_code(errc e) noexcept;

/// The enumerator's name ("queue_full", ...): the `code` of llmq's error bodies.
[[nodiscard]] std::string_view to_string(errc e) noexcept;

/// The OpenAI-style error `type` of an errc's error body ("invalid_request_error",
/// "rate_limit_error", "server_overloaded", "timeout", "unavailable").
[[nodiscard]] std::string_view error_type_of(errc e) noexcept;

/// The HTTP status an errc maps to (see each value).
[[nodiscard]] int http_status_of(errc e) noexcept;

/// Base of every llmq exception.
class Error : public std::runtime_error {
 public:
  Error(const std::string& message, int http_status)
      : std::runtime_error(message), http_status_(http_status) {}
  Error(const std::string& message, int http_status, boost::system::error_code code,
        std::optional<std::chrono::milliseconds> retry_after = std::nullopt)
      : std::runtime_error(message),
        http_status_(http_status),
        code_(code),
        retry_after_hint_(retry_after) {}

  /// The HTTP status this error maps to (400, 404, 429, 503, 504, ...).
  [[nodiscard]] int http_status() const noexcept { return http_status_; }
  /// The error code (an llmq::errc for the queue's refusals; empty for ConfigError).
  [[nodiscard]] boost::system::error_code code() const noexcept { return code_; }
  /// When the caller may try again, if llmq knows.
  [[nodiscard]] std::optional<std::chrono::milliseconds> retry_after_hint() const noexcept {
    return retry_after_hint_;
  }

 private:
  int http_status_;
  boost::system::error_code code_;
  std::optional<std::chrono::milliseconds> retry_after_hint_;
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
  UserIdHeaderMissingError();
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

/// The scheduler cannot take the request (503): it already holds `max_queue_size`
/// requests.
class SchedulerQueueFullError : public Error {
 public:
  explicit SchedulerQueueFullError(std::size_t max_queue_size);
  /// With the message of a refusal decided elsewhere (its code, optional retry-after).
  SchedulerQueueFullError(const std::string& message, boost::system::error_code code,
                          std::optional<std::chrono::milliseconds> retry_after)
      : Error(message, 503, code, retry_after) {}
};

/// The request waited `request_timeout_seconds` in the queue without being dispatched (504).
class QueueTimeoutError : public Error {
 public:
  explicit QueueTimeoutError(std::chrono::nanoseconds waited);
  /// With the message of a timeout decided elsewhere.
  explicit QueueTimeoutError(const std::string& message)
      : Error(message, 504, make_error_code(errc::queue_timeout)) {}
};

/// The queue is not accepting or can no longer finish work: `initiate()` has not been
/// called, `graceful_shutdown()` has begun or has passed its deadline, or the queue's
/// dispatcher failed (`code() == errc::queue_failed`) (503).
class QueueClosedError : public Error {
 public:
  explicit QueueClosedError(const std::string& why, errc code = errc::queue_closed)
      : Error(why, 503, make_error_code(code)) {}
};

/// The request was refused as malformed or unservable: unknown req_type (404),
/// unsatisfiable preferences, invalid user id, invalid body, too large for every
/// deployment (400). `code()` says which.
class InvalidRequestError : public Error {
 public:
  InvalidRequestError(const std::string& message, errc code)
      : Error(message, http_status_of(code), make_error_code(code)) {}
};

/// The executor did not finish within QueueOptions::execution_timeout and was cancelled (504).
class ExecutionTimeoutError : public Error {
 public:
  explicit ExecutionTimeoutError(const std::string& message)
      : Error(message, 504, make_error_code(errc::execution_timeout)) {}
};

/// A store llmq depends on for the decision failed and its policy is to refuse (503).
class StoreUnavailableError : public Error {
 public:
  StoreUnavailableError(const std::string& message, errc code,
                        std::optional<std::chrono::milliseconds> retry_after = std::nullopt)
      : Error(message, 503, make_error_code(code), retry_after) {}
};

}  // namespace llmq

template <>
struct boost::system::is_error_code_enum<llmq::errc> : std::true_type {};

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/errors-inl.hpp>
#endif
