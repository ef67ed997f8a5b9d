#pragma once
// Test helper: captures every formatted line of llmq::logger() at trace level while alive
// and restores the previous logger afterwards.

#include <llmq/log.hpp>

#include <gtest/gtest.h>
#include <spdlog/sinks/base_sink.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace llmq::testing {

class LogCapture {
 public:
  LogCapture() : previous_(llmq::logger()), sink_(std::make_shared<Sink>()) {
    auto logger = std::make_shared<spdlog::logger>("llmq", sink_);
    logger->set_level(spdlog::level::trace);
    llmq::set_logger(std::move(logger));
  }
  ~LogCapture() { llmq::set_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  [[nodiscard]] std::vector<std::string> lines() const {
    std::lock_guard lock(sink_->lines_mutex);
    return sink_->lines;
  }
  /// Fails the test if a secret shows up in any line; returns the number of lines.
  std::size_t expect_no_secret(const std::vector<std::string>& secrets) const {
    const auto all = lines();
    for (const auto& line : all) {
      for (const auto& secret : secrets) {
        EXPECT_EQ(line.find(secret), std::string::npos) << "secret in log line: " << line;
      }
    }
    return all.size();
  }

 private:
  class Sink : public spdlog::sinks::base_sink<std::mutex> {
   public:
    mutable std::mutex lines_mutex;
    std::vector<std::string> lines;

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      spdlog::memory_buf_t formatted;
      formatter_->format(msg, formatted);
      std::lock_guard lock(lines_mutex);
      lines.emplace_back(formatted.data(), formatted.size());
    }
    void flush_() override {}
  };

  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<Sink> sink_;
};

}  // namespace llmq::testing
