#pragma once
/// @file errors-inl.hpp
/// The "llmq" error category and the messages of the errors in errors.hpp.
/// Compiled once into llmq::llmq by src/errors.cpp, or included by <llmq/errors.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/errors.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace llmq {
namespace detail::error_text {

/// "12.345": a millisecond count as seconds with three decimals (negative -> 0).
inline std::string seconds_text(std::chrono::milliseconds ms) {
  const std::int64_t count = ms.count() < 0 ? 0 : ms.count();
  std::string fraction = std::to_string(count % 1000);
  fraction.insert(0, 3 - fraction.size(), '0');
  return std::to_string(count / 1000) + "." + fraction;
}

inline std::string rate_limit_message(const std::string& user_id,
                                      std::chrono::nanoseconds retry_after) {
  // Rounded up: waiting the printed time is always enough.
  return "rate limit exceeded for user '" + user_id + "'; retry after " +
         seconds_text(std::chrono::ceil<std::chrono::milliseconds>(retry_after)) + " s";
}

inline std::string queue_timeout_message(std::chrono::nanoseconds waited) {
  return "request waited " + seconds_text(std::chrono::round<std::chrono::milliseconds>(waited)) +
         " s in the queue without being dispatched (request_timeout_seconds)";
}

struct Row {
  std::string_view name;
  int status;
  std::string_view type;
  std::string_view message;
};

inline constexpr std::string_view kInvalid = "invalid_request_error";

/// Indexed by errc value.
inline constexpr Row kRows[] = {
    {"success", 200, "", "success"},
    {"user_id_missing", 400, kInvalid, "user id is missing: every request needs a user id"},
    {"invalid_user_id", 400, kInvalid, "user id must be 1 to 256 bytes without control characters"},
    {"user_rate_limited", 429, "rate_limit_error", "user rate limit exceeded"},
    {"queue_full", 503, "server_overloaded", "scheduler queue is full"},
    {"queue_timeout", 504, "timeout", "request timed out in the queue"},
    {"queue_closed", 503, "unavailable", "queue is not running"},
    {"queue_failed", 503, "unavailable", "queue dispatcher failed"},
    {"unknown_request_type", 404, kInvalid, "unknown request type"},
    {"unsatisfiable_preferences", 400, kInvalid,
     "no configured deployment satisfies the model preferences"},
    {"invalid_request", 400, kInvalid, "invalid request"},
    {"request_too_large", 400, kInvalid, "request exceeds the tokens_per_min of every deployment"},
    {"execution_timeout", 504, "timeout",
     "request executor did not finish within execution_timeout"},
    {"user_limit_store_unavailable", 503, "unavailable", "user rate limit store unavailable"},
    {"budget_store_unavailable", 503, "unavailable", "shared deployment budget store unavailable"},
};

inline const Row* row(int ev) noexcept {
  if (ev < 0 || static_cast<std::size_t>(ev) >= std::size(kRows)) return nullptr;
  return &kRows[ev];
}

// boost::system::error_category has a protected non-virtual destructor by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class Category final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "llmq"; }
  [[nodiscard]] std::string message(int ev) const override {
    const Row* r = row(ev);
    return r ? std::string(r->message) : "unknown llmq error " + std::to_string(ev);
  }
};
#pragma GCC diagnostic pop

}  // namespace detail::error_text

LLMQ_INLINE const boost::system::error_category& error_category() noexcept {
  static const detail::error_text::Category category;
  return category;
}

LLMQ_INLINE boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

LLMQ_INLINE std::string_view to_string(errc e) noexcept {
  const detail::error_text::Row* r = detail::error_text::row(static_cast<int>(e));
  return r ? r->name : std::string_view("unknown");
}

LLMQ_INLINE std::string_view error_type_of(errc e) noexcept {
  const detail::error_text::Row* r = detail::error_text::row(static_cast<int>(e));
  return r ? r->type : std::string_view("server_error");
}

LLMQ_INLINE int http_status_of(errc e) noexcept {
  const detail::error_text::Row* r = detail::error_text::row(static_cast<int>(e));
  return r ? r->status : 500;
}

LLMQ_INLINE UserIdHeaderMissingError::UserIdHeaderMissingError()
    : Error("user id is missing: every request needs a user id", 400,
            make_error_code(errc::user_id_missing)) {}

LLMQ_INLINE UserRateLimitExceededError::UserRateLimitExceededError(
    const std::string& user_id, std::chrono::nanoseconds retry_after)
    : Error(detail::error_text::rate_limit_message(user_id, retry_after), 429,
            make_error_code(errc::user_rate_limited),
            std::chrono::ceil<std::chrono::milliseconds>(retry_after)),
      retry_after_(retry_after) {}

LLMQ_INLINE SchedulerQueueFullError::SchedulerQueueFullError(std::size_t max_queue_size)
    : Error("scheduler queue is full (max_queue_size " + std::to_string(max_queue_size) + ")", 503,
            make_error_code(errc::queue_full)) {}

LLMQ_INLINE QueueTimeoutError::QueueTimeoutError(std::chrono::nanoseconds waited)
    : Error(detail::error_text::queue_timeout_message(waited), 504,
            make_error_code(errc::queue_timeout)) {}

}  // namespace llmq
