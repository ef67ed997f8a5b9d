#pragma once
/// @file rate_window.hpp
/// Azure-style per-deployment rate limits as a pure decision core: exact sliding-window
/// logs, no clock of its own (time is passed in), no locking. Tested with a fake clock.

#include <chrono>
#include <cstdint>
#include <deque>
#include <utility>

namespace llmq::mock {

/// Which limit refused a request.
enum class RateLimitReason {
  none,      ///< admitted
  requests,  ///< a requests window (1 s, 10 s or 60 s) is full
  tokens,    ///< the per-minute token window has no room for the estimate
};

/// Outcome of DeploymentRateLimiter::try_acquire.
struct RateDecision {
  bool allowed = false;
  RateLimitReason reason = RateLimitReason::none;
  /// When refused: exact time until enough entries leave the windows for this request
  /// to fit (a full minute when the estimate alone exceeds the token limit).
  std::chrono::nanoseconds retry_after{0};
  /// Requests left in the minute window after this decision; -1 when unlimited.
  std::int64_t remaining_requests = -1;
  /// Tokens left in the minute window after this decision; -1 when unlimited.
  std::int64_t remaining_tokens = -1;
};

/// Requests per minute (RPM) and tokens per minute (TPM) of one deployment, applied the
/// way Azure does: the RPM is enforced over sliding 1 s windows (rpm/60, at least 1),
/// 10 s windows (rpm/6, at least 1) and the minute; every request is charged its
/// estimated tokens on arrival in a sliding one-minute token window and is refused when
/// the window's sum plus the estimate would pass the TPM. Only admitted requests are
/// recorded, so a refused request is not charged. An entry made at `t` counts at `now`
/// while `now - t < window`.
///
/// Thread safety: none; callers serialise.
class DeploymentRateLimiter {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;
  using duration = clock::duration;

  /// Both 0 = unlimited (0 disables that limit).
  DeploymentRateLimiter(std::int64_t requests_per_minute, std::int64_t tokens_per_minute) noexcept;

  /// Decides at `now` for a request estimated at `tokens`; records it when admitted.
  /// `now` should not go backwards; earlier values are treated as the latest seen.
  RateDecision try_acquire(time_point now, std::int64_t tokens);

  /// Remaining requests / tokens in the minute window at `now` without charging
  /// (-1 when unlimited).
  [[nodiscard]] std::int64_t remaining_requests(time_point now);
  [[nodiscard]] std::int64_t remaining_tokens(time_point now);

  /// Admitted requests within the last `window` before `now`.
  [[nodiscard]] std::int64_t requests_in(time_point now, duration window) const;

  /// Tokens charged within the last minute before `now`.
  [[nodiscard]] std::int64_t tokens_in_minute(time_point now);

  /// Forgets every entry.
  void reset() noexcept;

  [[nodiscard]] std::int64_t requests_per_minute() const noexcept { return rpm_; }
  [[nodiscard]] std::int64_t tokens_per_minute() const noexcept { return tpm_; }
  /// Cap of the 1 s window (0 when unlimited).
  [[nodiscard]] std::int64_t per_second_cap() const noexcept { return cap_1s_; }
  /// Cap of the 10 s window (0 when unlimited).
  [[nodiscard]] std::int64_t per_10_seconds_cap() const noexcept { return cap_10s_; }

 private:
  void expire(time_point now);
  /// Time until the window of length `window` holding `cap` at most admits one more.
  [[nodiscard]] duration request_wait(time_point now, duration window, std::int64_t cap) const;

  std::int64_t rpm_;
  std::int64_t tpm_;
  std::int64_t cap_1s_;
  std::int64_t cap_10s_;
  time_point latest_{};
  std::deque<time_point> requests_;                         // admitted, oldest first
  std::deque<std::pair<time_point, std::int64_t>> tokens_;  // charges, oldest first
  std::int64_t token_sum_ = 0;
};

/// Peak number of events within any sliding 1 s window (the stats' max_requests_in_1s).
class PeakRateTracker {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  /// Records one event at `now` and returns the events within the last second.
  std::uint64_t record(time_point now);
  [[nodiscard]] std::uint64_t peak() const noexcept { return peak_; }
  void reset() noexcept;

 private:
  std::deque<time_point> events_;
  std::uint64_t peak_ = 0;
};

}  // namespace llmq::mock
