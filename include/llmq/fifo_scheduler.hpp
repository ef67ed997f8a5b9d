#pragma once
/// @file fifo_scheduler.hpp
/// Bounded FIFO scheduler with resource classes: a decision core with no I/O.
///
/// Requests are grouped into classes (the set of deployments a request can use). Order
/// is FIFO within a class and by arrival across classes; a class whose head cannot be
/// granted is skipped, so a request waiting for a busy pinned model never blocks one
/// that could run elsewhere. Every request carries a deadline; `expire` removes those
/// past it. All operations are O(1) amortised per request except `cancel` (O(log n))
/// and class selection (O(number of classes)).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

namespace llmq {

/// Identifies a queued item, for cancellation.
struct SchedulerTicket {
  std::uint32_t resource_class = 0;
  std::uint64_t seq = 0;
};

/// `Item` must be default-constructible and movable.
template <class Item>
class FifoScheduler {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// `max_size`: live items the scheduler holds at most (push fails beyond it).
  explicit FifoScheduler(std::size_t max_size) : max_size_(max_size) {}

  /// Live (not cancelled, not expired, not dispatched) items.
  [[nodiscard]] std::size_t size() const noexcept { return live_; }
  [[nodiscard]] bool empty() const noexcept { return live_ == 0; }
  [[nodiscard]] std::size_t max_size() const noexcept { return max_size_; }

  /// Queues `item` in `resource_class`. Returns nullopt when full (the item is untouched).
  std::optional<SchedulerTicket> push(std::uint32_t resource_class, Item item,
                                      time_point deadline) {
    if (live_ >= max_size_) return std::nullopt;
    if (resource_class >= classes_.size()) classes_.resize(resource_class + 1);
    Class& c = classes_[resource_class];
    const std::uint64_t seq = next_seq_++;
    c.slots.push_back(Slot{seq, deadline, std::move(item), false});
    ++live_;
    return SchedulerTicket{resource_class, seq};
  }

  /// Queues `item` ahead of everything queued (in its class and across classes): for a
  /// request being retried, which has waited longest. Not bounded by max_size, since the
  /// item was already admitted once.
  SchedulerTicket push_front(std::uint32_t resource_class, Item item, time_point deadline) {
    if (resource_class >= classes_.size()) classes_.resize(resource_class + 1);
    Class& c = classes_[resource_class];
    const std::uint64_t seq = --front_seq_;
    c.slots.push_front(Slot{seq, deadline, std::move(item), false});
    ++live_;
    return SchedulerTicket{resource_class, seq};
  }

  /// Removes a queued item. Returns the item if it was still queued.
  std::optional<Item> cancel(SchedulerTicket t) {
    if (t.resource_class >= classes_.size()) return std::nullopt;
    Class& c = classes_[t.resource_class];
    auto it = std::lower_bound(c.slots.begin(), c.slots.end(), t.seq,
                               [](const Slot& s, std::uint64_t seq) { return s.seq < seq; });
    if (it == c.slots.end() || it->seq != t.seq || it->cancelled) return std::nullopt;
    std::optional<Item> out(std::move(it->item));
    it->item = Item{};
    it->cancelled = true;
    --live_;
    ++c.tombstones;
    trim_front(c);
    if (c.tombstones > 32 && c.tombstones > c.slots.size() / 2) compact(c);
    return out;
  }

  /// Removes every item whose deadline is at or before `now`, oldest first per class,
  /// calling `on_expired(Item&&)` for each. Deadlines are monotonic within a class when
  /// callers use one timeout, which makes this O(expired).
  template <class F>
  std::size_t expire(time_point now, F&& on_expired) {
    std::size_t n = 0;
    for (Class& c : classes_) {
      trim_front(c);
      while (!c.slots.empty() && c.slots.front().deadline <= now) {
        Slot& s = c.slots.front();
        Item item = std::move(s.item);
        c.slots.pop_front();
        --live_;
        ++n;
        on_expired(std::move(item));
        trim_front(c);
      }
    }
    return n;
  }

  /// Offers heads to `try_grant(resource_class, Item&) -> bool` in arrival order across
  /// classes. When it returns true the item is removed (the callee moved what it needs
  /// out of it); when false the class is blocked for the rest of this call.
  /// Stops after `limit` items. Returns the number of items dispatched.
  template <class F>
  std::size_t dispatch(F&& try_grant, std::size_t limit = std::numeric_limits<std::size_t>::max()) {
    blocked_.assign(classes_.size(), false);
    std::size_t n = 0;
    while (n < limit) {
      Class* best = nullptr;
      std::uint32_t best_index = 0;
      for (std::uint32_t i = 0; i < classes_.size(); ++i) {
        Class& c = classes_[i];
        if (blocked_[i]) continue;
        trim_front(c);
        if (c.slots.empty()) continue;
        if (best == nullptr || c.slots.front().seq < best->slots.front().seq) {
          best = &c;
          best_index = i;
        }
      }
      if (best == nullptr) return n;
      Slot& head = best->slots.front();
      if (try_grant(best_index, head.item)) {
        best->slots.pop_front();
        --live_;
        ++n;
      } else {
        blocked_[best_index] = true;
      }
    }
    return n;
  }

  /// Calls `f(resource_class, const Item&)` for the head of every non-empty class.
  template <class F>
  void for_each_head(F&& f) {
    for (std::uint32_t i = 0; i < classes_.size(); ++i) {
      trim_front(classes_[i]);
      if (!classes_[i].slots.empty()) f(i, std::as_const(classes_[i].slots.front().item));
    }
  }

  /// Earliest deadline of a live item, if any.
  [[nodiscard]] std::optional<time_point> next_deadline() {
    std::optional<time_point> best;
    for (Class& c : classes_) {
      trim_front(c);
      if (!c.slots.empty() && (!best || c.slots.front().deadline < *best))
        best = c.slots.front().deadline;
    }
    return best;
  }

  /// Removes every live item in arrival order, calling `f(Item&&)` for each.
  template <class F>
  void drain(F&& f) {
    std::vector<Slot> all;
    for (Class& c : classes_) {
      for (Slot& s : c.slots)
        if (!s.cancelled) all.push_back(std::move(s));
      c.slots.clear();
      c.tombstones = 0;
    }
    live_ = 0;
    std::sort(all.begin(), all.end(), [](const Slot& a, const Slot& b) { return a.seq < b.seq; });
    for (Slot& s : all) f(std::move(s.item));
  }

 private:
  struct Slot {
    std::uint64_t seq;
    time_point deadline;
    Item item;
    bool cancelled;
  };
  struct Class {
    std::deque<Slot> slots;
    std::size_t tombstones = 0;
  };

  static void trim_front(Class& c) {
    while (!c.slots.empty() && c.slots.front().cancelled) {
      c.slots.pop_front();
      --c.tombstones;
    }
  }
  static void compact(Class& c) {
    std::deque<Slot> kept;
    for (Slot& s : c.slots)
      if (!s.cancelled) kept.push_back(std::move(s));
    c.slots.swap(kept);
    c.tombstones = 0;
  }

  std::size_t max_size_;
  std::size_t live_ = 0;
  // Sequence numbers grow from the middle of the range; push_front takes smaller ones,
  // so every class stays sorted by seq and older-first across classes.
  static constexpr std::uint64_t kSeqOrigin = std::uint64_t{1} << 63;
  std::uint64_t next_seq_ = kSeqOrigin;
  std::uint64_t front_seq_ = kSeqOrigin;
  std::vector<Class> classes_;
  std::vector<bool> blocked_;
};

}  // namespace llmq
