#pragma once
// Builds the QueuedRequest that scheduler tests push.
#include <llmq/scheduler.hpp>

#include <chrono>
#include <cstdint>
#include <string_view>

namespace llmq::test {

inline QueuedRequest queued(std::uint32_t cls, std::chrono::steady_clock::time_point deadline,
                            std::chrono::steady_clock::time_point enqueued,
                            Priority p = Priority::normal, std::string_view user = "u",
                            std::uint32_t weight = 1) {
  QueuedRequest r;
  r.resource_class = cls;
  r.deadline = deadline;
  r.enqueued = enqueued;
  r.priority = p;
  r.user = user;
  r.weight = weight;
  return r;
}

}  // namespace llmq::test
