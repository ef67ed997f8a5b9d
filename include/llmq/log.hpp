#pragma once
/// @file log.hpp
/// llmq logs through one spdlog logger named "llmq". Replace it with set_logger() or
/// silence it with `llmq::logger()->set_level(spdlog::level::off)`.

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace llmq {

/// The library's logger (created on first use, writing to stderr). Thread-safe.
[[nodiscard]] std::shared_ptr<spdlog::logger> logger();

/// Replaces the library's logger; null restores the default. Thread-safe.
void set_logger(std::shared_ptr<spdlog::logger> replacement);

/// Bounds a log line that could repeat per request or per connection (a failing store, an
/// unreachable upstream): at most one line per `interval`, the others counted. Keep one
/// per call site (e.g. a function-local static). Thread-safe.
///
///     static llmq::LogThrottle throttle;
///     if (auto held = throttle.admit())
///       llmq::logger()->warn("store failed: {}{}", why, llmq::held_back_note(*held));
class LogThrottle {
 public:
  using clock = std::chrono::steady_clock;
  explicit LogThrottle(clock::duration interval = std::chrono::seconds(10)) noexcept
      : interval_(interval) {}

  /// A value when a line may be logged at `now`: how many were held back since the last
  /// one. Nullopt: hold this one back (it is counted).
  [[nodiscard]] std::optional<std::uint64_t> admit(clock::time_point now = clock::now());

 private:
  std::mutex mutex_;
  clock::duration interval_;
  std::optional<clock::time_point> last_;
  std::uint64_t held_ = 0;
};

/// " (N similar lines held back)" for N > 0, else empty: the end of a throttled line.
[[nodiscard]] std::string held_back_note(std::uint64_t held);

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/log-inl.hpp>
#endif
