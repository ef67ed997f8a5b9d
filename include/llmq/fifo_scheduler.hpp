#pragma once
/// @file fifo_scheduler.hpp
/// Bounded FIFO scheduler with resource classes and priorities: a decision core with no
/// I/O (see scheduler.hpp for the interface).
///
/// Within a resource class and priority level, requests leave in arrival order; across
/// classes, heads are offered by (effective priority, arrival). A class whose head cannot
/// be granted is skipped, so a request waiting for a busy pinned model never blocks one
/// that could run elsewhere.

#include <llmq/detail/classed_scheduler.hpp>
#include <llmq/scheduler.hpp>

namespace llmq {

template <class Item>
class FifoScheduler final : public detail::ClassedScheduler<Item> {
 public:
  explicit FifoScheduler(SchedulerOptions options)
      : detail::ClassedScheduler<Item>(options, SchedulingPolicy::fifo) {}

  /// `max_size`: live items the scheduler holds at most (push fails beyond it).
  explicit FifoScheduler(std::size_t max_size) : FifoScheduler(SchedulerOptions{max_size}) {}
};

}  // namespace llmq
