#include <llmq/log.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

namespace llmq {
namespace {
std::mutex& logger_mutex() {
  static std::mutex m;
  return m;
}
std::shared_ptr<spdlog::logger>& logger_slot() {
  static std::shared_ptr<spdlog::logger> slot;
  return slot;
}
std::shared_ptr<spdlog::logger> make_default() {
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto l = std::make_shared<spdlog::logger>("llmq", std::move(sink));
  l->set_level(spdlog::level::info);
  return l;
}
}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard lock(logger_mutex());
  auto& slot = logger_slot();
  if (!slot) slot = make_default();
  return slot;
}

void set_logger(std::shared_ptr<spdlog::logger> replacement) {
  std::lock_guard lock(logger_mutex());
  logger_slot() = std::move(replacement);
}

}  // namespace llmq
