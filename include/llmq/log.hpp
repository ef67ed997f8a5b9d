#pragma once
/// @file log.hpp
/// llmq logs through one spdlog logger named "llmq". Replace it with set_logger() or
/// silence it with `llmq::logger()->set_level(spdlog::level::off)`.

#include <spdlog/logger.h>

#include <memory>

namespace llmq {

/// The library's logger (created on first use, writing to stderr). Thread-safe.
[[nodiscard]] std::shared_ptr<spdlog::logger> logger();

/// Replaces the library's logger; null restores the default. Thread-safe.
void set_logger(std::shared_ptr<spdlog::logger> replacement);

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/log-inl.hpp>
#endif
