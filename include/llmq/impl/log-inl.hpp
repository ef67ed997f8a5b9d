#pragma once
/// @file log-inl.hpp
/// Compiled once into llmq::llmq by src/log.cpp, or included by <llmq/log.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/log.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>
#include <string>

namespace llmq {
namespace detail::logging {
inline std::mutex& logger_mutex() {
  static std::mutex m;
  return m;
}
inline std::shared_ptr<spdlog::logger>& logger_slot() {
  static std::shared_ptr<spdlog::logger> slot;
  return slot;
}
inline std::shared_ptr<spdlog::logger> make_default() {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto l = std::make_shared<spdlog::logger>("llmq", std::move(sink));
  l->set_level(spdlog::level::info);
  return l;
}
}  // namespace detail::logging

LLMQ_INLINE std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard lock(detail::logging::logger_mutex());
  auto& slot = detail::logging::logger_slot();
  if (!slot) slot = detail::logging::make_default();
  return slot;
}

LLMQ_INLINE void set_logger(std::shared_ptr<spdlog::logger> replacement) {
  std::lock_guard lock(detail::logging::logger_mutex());
  detail::logging::logger_slot() = std::move(replacement);
}

LLMQ_INLINE std::optional<std::uint64_t> LogThrottle::admit(clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (last_ && now - *last_ < interval_) {
    ++held_;
    return std::nullopt;
  }
  last_ = now;
  const std::uint64_t held = held_;
  held_ = 0;
  return held;
}

LLMQ_INLINE std::string held_back_note(std::uint64_t held) {
  if (held == 0) return {};
  return " (" + std::to_string(held) + (held == 1 ? " similar line" : " similar lines") +
         " held back)";
}

}  // namespace llmq
