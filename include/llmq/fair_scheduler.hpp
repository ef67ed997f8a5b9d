#pragma once
/// @file fair_scheduler.hpp
/// Bounded fair scheduler: within each resource class and priority level, deficit
/// round-robin across users (a user's share is its weight, from its tier), FIFO within
/// each user. A decision core with no I/O (see scheduler.hpp for the interface).
///
/// Each active user of a lane gets, per round, as many requests as its weight; a user
/// that empties its queue leaves the round and starts at the back when it returns, so
/// a user cannot save up turns. Across classes, heads are offered by (effective
/// priority, arrival), and a class whose head cannot be granted is skipped, as in
/// FifoScheduler.

#include <llmq/detail/classed_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/scheduler.hpp>

#include <memory>

namespace llmq {

template <class Item>
class FairScheduler final : public detail::ClassedScheduler<Item> {
 public:
  explicit FairScheduler(SchedulerOptions options)
      : detail::ClassedScheduler<Item>(options, SchedulingPolicy::fair) {}
};

/// A scheduler of the given policy.
template <class Item>
[[nodiscard]] std::unique_ptr<Scheduler<Item>> make_scheduler(SchedulingPolicy policy,
                                                              SchedulerOptions options) {
  if (policy == SchedulingPolicy::fair) return std::make_unique<FairScheduler<Item>>(options);
  return std::make_unique<FifoScheduler<Item>>(options);
}

}  // namespace llmq
