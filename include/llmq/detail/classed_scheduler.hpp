#pragma once
/// @file detail/classed_scheduler.hpp
/// The machinery FifoScheduler and FairScheduler share: slots, per-class priority lanes,
/// flows (one per user and lane under the fair policy, one per lane under FIFO),
/// deficit round-robin, exact deadline and aging timers.

#include <llmq/detail/string_hash.hpp>
#include <llmq/scheduler.hpp>

#include <algorithm>
#include <array>
#include <cassert>
#include <functional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace llmq::detail {

inline constexpr std::uint32_t kNil = std::numeric_limits<std::uint32_t>::max();

/// Position of a node in one TimerIndex.
template <class TimePoint>
struct TimerHook {
  TimePoint at{};
  std::uint32_t prev = kNil;
  std::uint32_t next = kNil;
  std::uint32_t heap_pos = kNil;
  enum : std::uint8_t { none, list, heap } where = none;
};

/// Nodes ordered by a time, exactly: a list for times that arrive in order (appending is
/// O(1)) and a binary heap for the others (O(log n)). `Node` has a TimerHook member
/// `Hook`.
template <class Node, class TimePoint, TimerHook<TimePoint> Node::*Hook>
class TimerIndex {
 public:
  void insert(std::vector<Node>& nodes, std::uint32_t i, TimePoint at) {
    TimerHook<TimePoint>& h = nodes[i].*Hook;
    h.at = at;
    if (tail_ == kNil || at >= (nodes[tail_].*Hook).at) {
      h.where = TimerHook<TimePoint>::list;
      h.prev = tail_;
      h.next = kNil;
      (tail_ == kNil ? head_ : (nodes[tail_].*Hook).next) = i;
      tail_ = i;
      return;
    }
    h.where = TimerHook<TimePoint>::heap;
    h.heap_pos = static_cast<std::uint32_t>(heap_.size());
    heap_.push_back(i);
    sift_up(nodes, h.heap_pos);
  }

  void erase(std::vector<Node>& nodes, std::uint32_t i) {
    TimerHook<TimePoint>& h = nodes[i].*Hook;
    if (h.where == TimerHook<TimePoint>::list) {
      (h.prev == kNil ? head_ : (nodes[h.prev].*Hook).next) = h.next;
      (h.next == kNil ? tail_ : (nodes[h.next].*Hook).prev) = h.prev;
    } else if (h.where == TimerHook<TimePoint>::heap) {
      const std::uint32_t pos = h.heap_pos;
      const std::uint32_t last = heap_.back();
      heap_.pop_back();
      if (last != i) {
        heap_[pos] = last;
        (nodes[last].*Hook).heap_pos = pos;
        sift_up(nodes, pos);
        sift_down(nodes, (nodes[last].*Hook).heap_pos);
      }
    }
    h = TimerHook<TimePoint>{};
  }

  /// The node with the earliest time (kNil when empty).
  [[nodiscard]] std::uint32_t front(const std::vector<Node>& nodes) const {
    if (heap_.empty()) return head_;
    if (head_ == kNil) return heap_.front();
    return (nodes[heap_.front()].*Hook).at < (nodes[head_].*Hook).at ? heap_.front() : head_;
  }

  void clear() {
    head_ = tail_ = kNil;
    heap_.clear();
  }

 private:
  bool less(const std::vector<Node>& nodes, std::uint32_t a, std::uint32_t b) const {
    return (nodes[heap_[a]].*Hook).at < (nodes[heap_[b]].*Hook).at;
  }
  void swap_at(std::vector<Node>& nodes, std::uint32_t a, std::uint32_t b) {
    std::swap(heap_[a], heap_[b]);
    (nodes[heap_[a]].*Hook).heap_pos = a;
    (nodes[heap_[b]].*Hook).heap_pos = b;
  }
  void sift_up(std::vector<Node>& nodes, std::uint32_t pos) {
    while (pos > 0) {
      const std::uint32_t parent = (pos - 1) / 2;
      if (!less(nodes, pos, parent)) break;
      swap_at(nodes, pos, parent);
      pos = parent;
    }
  }
  void sift_down(std::vector<Node>& nodes, std::uint32_t pos) {
    const auto n = static_cast<std::uint32_t>(heap_.size());
    for (;;) {
      const std::uint32_t l = 2 * pos + 1;
      if (l >= n) break;
      std::uint32_t m = (l + 1 < n && less(nodes, l + 1, l)) ? l + 1 : l;
      if (!less(nodes, m, pos)) break;
      swap_at(nodes, pos, m);
      pos = m;
    }
  }

  std::uint32_t head_ = kNil;
  std::uint32_t tail_ = kNil;
  std::vector<std::uint32_t> heap_;
};

/// Scheduler implementation for both policies. Layout: every resource class has one
/// lane per effective priority level; a lane holds a ring of active *flows* (per user
/// under the fair policy, a single one under FIFO) served by deficit round-robin; a flow
/// holds its requests in arrival order, in one sub-list per base priority (a request
/// that aged into the lane joins the sub-list of its base level, which keeps each
/// sub-list in arrival order without searching). Deadlines and aging times live in
/// TimerIndexes, so both are exact for every item.
template <class Item>
class ClassedScheduler : public Scheduler<Item> {
 public:
  using typename Scheduler<Item>::time_point;

  ClassedScheduler(SchedulerOptions options, SchedulingPolicy policy)
      : options_(options), fair_(policy == SchedulingPolicy::fair) {
    if (options_.max_size == 0) throw std::invalid_argument("scheduler max_size must be > 0");
    if (options_.priority_aging <= std::chrono::nanoseconds::zero())
      throw std::invalid_argument("scheduler priority_aging must be > 0");
  }

  [[nodiscard]] std::size_t size() const noexcept override { return live_; }
  [[nodiscard]] std::size_t max_size() const noexcept override { return options_.max_size; }
  [[nodiscard]] const SchedulerOptions& options() const noexcept { return options_; }

  [[nodiscard]] std::size_t queued_for(std::string_view user) const override {
    auto it = user_index_.find(user);
    return it == user_index_.end() ? 0 : users_[it->second].count;
  }

  [[nodiscard]] std::size_t queued_in(std::uint32_t resource_class) const override {
    return resource_class < classes_.size() ? classes_[resource_class].count : 0;
  }

  [[nodiscard]] std::size_t ahead_of(const QueuedRequest& r) const override {
    if (r.resource_class >= classes_.size()) return 0;
    const Class& c = classes_[r.resource_class];
    const auto level = static_cast<std::size_t>(r.priority);
    std::size_t ahead = 0;
    for (std::size_t l = 0; l < level; ++l) ahead += c.lanes[l].count;
    const Lane& lane = c.lanes[level];
    if (!fair_) return ahead + lane.count;
    // Deficit round-robin: the user's own k queued requests go first, then this one, at
    // `w` per round, so it leaves in round ceil((k + 1) / w); by then each other user
    // has had up to its weight per round of what it has queued.
    std::uint64_t own = 0;
    std::uint32_t own_flow = kNil;
    if (auto it = user_index_.find(r.user); it != user_index_.end()) {
      own_flow = find_flow(users_[it->second], r.resource_class, level);
      if (own_flow != kNil) own = flows_[own_flow].count;
    }
    const std::uint64_t w = std::max<std::uint32_t>(1, r.weight);
    const std::uint64_t rounds = (own + w) / w;
    std::uint64_t others = 0;
    if (lane.current != kNil) {
      std::uint32_t f = lane.current;
      do {
        if (f != own_flow)
          others += std::min<std::uint64_t>(flows_[f].count, rounds * flows_[f].weight);
        f = flows_[f].next;
      } while (f != lane.current);
    }
    return ahead + static_cast<std::size_t>(own + others);
  }

 protected:
  SchedulerPushResult do_push(const QueuedRequest& r, Item& item, bool front, bool ages) override {
    SchedulerPushResult out;
    const std::size_t cap = r.max_queued_for_user.value_or(options_.max_queued_per_user);
    // FIFO order needs no users: they are tracked only to enforce a cap.
    const bool tracked = fair_ || (cap > 0 && !r.user.empty());
    if (!front) {
      if (cap > 0 && tracked && queued_for(r.user) >= cap) {
        out.refusal = SchedulerRefusal::user_queue_full;
        return out;
      }
      if (live_ >= options_.max_size) {
        out.refusal = SchedulerRefusal::queue_full;
        return out;
      }
    }
    if (r.resource_class >= classes_.size()) {
      if (r.resource_class == kNil) throw std::invalid_argument("resource class out of range");
      classes_.resize(static_cast<std::size_t>(r.resource_class) + 1);
    }
    if (ages) now_ = std::max(now_, r.enqueued);
    const std::uint32_t user = tracked ? acquire_user(r.user) : kNil;
    const std::uint32_t i = allocate_node();
    Node& n = nodes_[i];
    n.item = std::move(item);
    n.seq = front ? --front_seq_ : next_seq_++;
    n.enqueued = r.enqueued;
    n.cls = r.resource_class;
    n.user = user;
    n.ages = ages;
    n.base = static_cast<std::uint8_t>(
        std::min<std::size_t>(static_cast<std::size_t>(r.priority), kPriorityLevels - 1));
    n.eff = ages ? effective_level(n.base, r.enqueued, now_) : n.base;
    n.live = true;
    const std::uint32_t weight = std::max<std::uint32_t>(1, r.weight);
    link(i, weight);
    ++live_;
    if (user != kNil) ++users_[user].count;
    deadlines_.insert(nodes_, i, r.deadline);
    schedule_aging(i);
    out.ticket = SchedulerTicket{i, nodes_[i].generation};
    return out;
  }

  std::optional<Item> do_cancel(SchedulerTicket t) override {
    if (t.slot >= nodes_.size()) return std::nullopt;
    Node& n = nodes_[t.slot];
    if (!n.live || n.generation != t.generation) return std::nullopt;
    std::optional<Item> out(std::move(n.item));
    remove(t.slot);
    return out;
  }

  void do_advance(time_point now) override {
    now_ = std::max(now_, now);
    // Highest levels first: an item that ages twice at once is found in the next index.
    for (auto index_it = aging_.rbegin(); index_it != aging_.rend(); ++index_it) {
      AgingIndex& index = *index_it;
      for (std::uint32_t i = index.front(nodes_); i != kNil && nodes_[i].aging.at <= now_;
           i = index.front(nodes_)) {
        index.erase(nodes_, i);
        promote(i);
      }
    }
  }

  std::size_t do_expire(time_point now, FunctionRef<void(Item&&)> f) override {
    do_advance(now);
    std::size_t n = 0;
    for (std::uint32_t i = deadlines_.front(nodes_); i != kNil && nodes_[i].deadline.at <= now;
         i = deadlines_.front(nodes_)) {
      Item item = std::move(nodes_[i].item);
      remove(i);
      ++n;
      f(std::move(item));
    }
    return n;
  }

  std::size_t do_dispatch(FunctionRef<bool(std::uint32_t, Item&)> try_grant,
                          std::size_t limit) override {
    blocked_.assign(classes_.size(), 0);
    std::size_t n = 0;
    while (n < limit) {
      std::uint32_t best = kNil;
      for (std::uint32_t c = 0; c < classes_.size(); ++c) {
        if (blocked_[c] || classes_[c].count == 0) continue;
        const std::uint32_t h = class_head(c);
        if (best == kNil || nodes_[h].eff < nodes_[best].eff ||
            (nodes_[h].eff == nodes_[best].eff && nodes_[h].seq < nodes_[best].seq)) {
          best = h;
        }
      }
      if (best == kNil) break;
      const std::uint32_t cls = nodes_[best].cls;
      if (try_grant(cls, nodes_[best].item)) {
        take(best);
        ++n;
      } else {
        blocked_[cls] = 1;
      }
    }
    return n;
  }

  void do_for_each_head(FunctionRef<void(std::uint32_t, const Item&)> f) override {
    for (std::uint32_t c = 0; c < classes_.size(); ++c) {
      if (classes_[c].count > 0) f(c, std::as_const(nodes_[class_head(c)].item));
    }
  }

  [[nodiscard]] std::optional<time_point> do_next_deadline() const override {
    const std::uint32_t i = deadlines_.front(nodes_);
    if (i == kNil) return std::nullopt;
    return nodes_[i].deadline.at;
  }

  void do_drain(FunctionRef<void(Item&&)> f) override {
    std::vector<std::pair<std::uint64_t, Item>> all;
    all.reserve(live_);
    for (Node& n : nodes_) {
      if (n.live) all.emplace_back(n.seq, std::move(n.item));
    }
    reset();
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [seq, item] : all) f(std::move(item));
  }

 private:
  using Hook = TimerHook<time_point>;

  struct Node {
    Item item{};
    std::uint64_t seq = 0;
    time_point enqueued{};
    std::uint32_t generation = 0;
    std::uint32_t cls = 0;
    std::uint32_t user = kNil;
    std::uint32_t flow = kNil;
    std::uint32_t prev = kNil;  // within the flow's sub-list
    std::uint32_t next = kNil;  // within the flow's sub-list; the free list when not live
    std::uint8_t base = 1;      // priority given at push
    std::uint8_t eff = 1;       // after aging
    bool live = false;
    bool ages = false;
    Hook deadline;
    Hook aging;
  };
  using DeadlineIndex = TimerIndex<Node, time_point, &Node::deadline>;
  using AgingIndex = TimerIndex<Node, time_point, &Node::aging>;

  struct Flow {
    std::array<std::uint32_t, kPriorityLevels> head{kNil, kNil, kNil};  // by base level
    std::array<std::uint32_t, kPriorityLevels> tail{kNil, kNil, kNil};
    std::uint32_t count = 0;
    std::int64_t deficit = 0;
    std::uint32_t weight = 1;
    std::uint32_t prev = kNil;  // ring of the lane's active flows; free list when unused
    std::uint32_t next = kNil;
    std::uint32_t user = kNil;
    std::uint32_t cls = 0;
    std::uint8_t level = 0;
  };
  struct Lane {
    std::uint32_t current = kNil;  // the flow being served
    std::uint32_t count = 0;       // requests
    std::uint64_t weight = 0;      // of the active flows
  };
  struct Class {
    std::array<Lane, kPriorityLevels> lanes{};
    std::array<std::uint32_t, kPriorityLevels> shared_flow{kNil, kNil, kNil};  // FIFO policy
    std::uint32_t count = 0;
  };
  struct User {
    std::uint32_t count = 0;
    const std::string* key = nullptr;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> flows;  // (class * levels + level, flow)
    std::uint32_t next_free = kNil;
  };
  using UserMap = std::unordered_map<std::string, std::uint32_t, StringHash, std::equal_to<>>;

  static std::uint8_t effective_level(std::uint8_t base, time_point enqueued, time_point now,
                                      std::chrono::nanoseconds aging) {
    if (now <= enqueued) return base;
    const auto hops = static_cast<std::uint64_t>((now - enqueued) / aging);
    return static_cast<std::uint8_t>(base - std::min<std::uint64_t>(base, hops));
  }
  std::uint8_t effective_level(std::uint8_t base, time_point enqueued, time_point now) const {
    return effective_level(base, enqueued, now, options_.priority_aging);
  }

  // The index holding items of base `b` waiting to leave level `e` (1 <= e <= b).
  static std::size_t aging_slot(std::uint8_t b, std::uint8_t e) {
    return static_cast<std::size_t>(b * (b - 1) / 2 + (e - 1));
  }

  void schedule_aging(std::uint32_t i) {
    Node& n = nodes_[i];
    if (!n.ages || n.eff == 0) return;
    const auto hops = static_cast<std::int64_t>(n.base - n.eff + 1);
    const time_point at = n.enqueued + std::chrono::duration_cast<typename time_point::duration>(
                                           options_.priority_aging * hops);
    aging_[aging_slot(n.base, n.eff)].insert(nodes_, i, at);
  }

  void erase_aging(std::uint32_t i) {
    Node& n = nodes_[i];
    if (n.aging.where != Hook::none) aging_[aging_slot(n.base, n.eff)].erase(nodes_, i);
  }

  std::uint32_t allocate_node() {
    if (free_node_ != kNil) {
      const std::uint32_t i = free_node_;
      free_node_ = nodes_[i].next;
      nodes_[i].next = kNil;
      return i;
    }
    if (nodes_.size() >= kNil - 1) throw std::length_error("scheduler slots exhausted");
    nodes_.emplace_back();
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }

  std::uint32_t acquire_user(std::string_view id) {
    if (auto it = user_index_.find(id); it != user_index_.end()) return it->second;
    std::uint32_t u;
    if (free_user_ != kNil) {
      u = free_user_;
      free_user_ = users_[u].next_free;
    } else {
      u = static_cast<std::uint32_t>(users_.size());
      users_.emplace_back();
    }
    // Reuse a map node of a departed user: no allocation while users come and go.
    typename UserMap::iterator it;
    if (!spare_user_nodes_.empty()) {
      auto node = std::move(spare_user_nodes_.back());
      spare_user_nodes_.pop_back();
      node.key().assign(id.data(), id.size());
      node.mapped() = u;
      it = user_index_.insert(std::move(node)).position;
    } else {
      it = user_index_.emplace(std::string(id), u).first;
    }
    User& user = users_[u];
    user.count = 0;
    user.key = &it->first;
    user.flows.clear();
    user.next_free = kNil;
    return u;
  }

  void release_user(std::uint32_t u) {
    User& user = users_[u];
    spare_user_nodes_.push_back(user_index_.extract(*user.key));
    user.key = nullptr;
    user.next_free = free_user_;
    free_user_ = u;
  }

  std::uint32_t find_flow(const User& user, std::uint32_t cls, std::size_t level) const {
    const std::uint32_t key =
        cls * static_cast<std::uint32_t>(kPriorityLevels) + static_cast<std::uint32_t>(level);
    for (const auto& [k, f] : user.flows)
      if (k == key) return f;
    return kNil;
  }

  std::uint32_t& flow_slot(std::uint32_t cls, std::uint8_t level, std::uint32_t user) {
    if (!fair_) return classes_[cls].shared_flow[level];
    User& u = users_[user];
    const std::uint32_t key =
        cls * static_cast<std::uint32_t>(kPriorityLevels) + static_cast<std::uint32_t>(level);
    for (auto& [k, f] : u.flows)
      if (k == key) return f;
    u.flows.emplace_back(key, kNil);
    return u.flows.back().second;
  }

  void forget_flow(const Flow& f) {
    if (!fair_) {
      classes_[f.cls].shared_flow[f.level] = kNil;
      return;
    }
    auto& flows = users_[f.user].flows;
    const std::uint32_t key =
        f.cls * static_cast<std::uint32_t>(kPriorityLevels) + static_cast<std::uint32_t>(f.level);
    for (auto& entry : flows) {
      if (entry.first == key) {
        entry = flows.back();
        flows.pop_back();
        return;
      }
    }
  }

  // Puts node `i` (cls, eff, user set) into its flow, activating the flow if needed.
  void link(std::uint32_t i, std::uint32_t weight) {
    Node& n = nodes_[i];
    Lane& lane = classes_[n.cls].lanes[n.eff];
    std::uint32_t& slot = flow_slot(n.cls, n.eff, n.user);
    if (slot == kNil) {
      slot = allocate_flow();
      Flow& f = flows_[slot];
      f.user = n.user;
      f.cls = n.cls;
      f.level = n.eff;
      f.weight = fair_ ? weight : 1;
      activate(lane, slot);
    } else if (fair_ && flows_[slot].weight != weight) {
      lane.weight = lane.weight - flows_[slot].weight + weight;
      flows_[slot].weight = weight;
    }
    const std::uint32_t fi = slot;
    n.flow = fi;
    insert_sorted(flows_[fi], i);
    ++flows_[fi].count;
    ++lane.count;
    ++classes_[n.cls].count;
  }

  // Sub-lists stay in seq order: pushes append, front pushes (smallest seq) prepend, and
  // an item that aged in joins in seq order (searched from the end it is nearer to).
  void insert_sorted(Flow& f, std::uint32_t i) {
    Node& n = nodes_[i];
    std::uint32_t& head = f.head[n.base];
    std::uint32_t& tail = f.tail[n.base];
    std::uint32_t after = tail;  // insert after this node (kNil: at the head)
    if (tail != kNil && n.seq < nodes_[tail].seq) {
      if (n.seq < nodes_[head].seq) {
        after = kNil;
      } else if (n.seq < kSeqOrigin) {  // a front push: near the head
        after = head;
        while (nodes_[after].next != kNil && nodes_[nodes_[after].next].seq < n.seq)
          after = nodes_[after].next;
      } else {
        while (nodes_[after].seq > n.seq) after = nodes_[after].prev;
      }
    }
    n.prev = after;
    n.next = after == kNil ? head : nodes_[after].next;
    (n.prev == kNil ? head : nodes_[n.prev].next) = i;
    (n.next == kNil ? tail : nodes_[n.next].prev) = i;
  }

  // Takes node `i` out of its flow (deactivating an emptied flow) and its counters.
  void unlink(std::uint32_t i) {
    Node& n = nodes_[i];
    const std::uint32_t fi = n.flow;
    Flow& f = flows_[fi];
    (n.prev == kNil ? f.head[n.base] : nodes_[n.prev].next) = n.next;
    (n.next == kNil ? f.tail[n.base] : nodes_[n.next].prev) = n.prev;
    n.prev = n.next = kNil;
    n.flow = kNil;
    Lane& lane = classes_[n.cls].lanes[n.eff];
    --lane.count;
    --classes_[n.cls].count;
    if (--f.count == 0) {
      deactivate(lane, fi);
      forget_flow(f);
      release_flow(fi);
    }
  }

  void remove(std::uint32_t i) {
    unlink(i);
    deadlines_.erase(nodes_, i);
    erase_aging(i);
    Node& n = nodes_[i];
    if (n.user != kNil && --users_[n.user].count == 0) release_user(n.user);
    n.item = Item{};
    n.live = false;
    ++n.generation;
    n.user = kNil;
    n.next = free_node_;
    free_node_ = i;
    --live_;
  }

  // Dispatches node `i`, the head of its lane's current flow.
  void take(std::uint32_t i) {
    const std::uint32_t fi = nodes_[i].flow;
    Lane& lane = classes_[nodes_[i].cls].lanes[nodes_[i].eff];
    const bool last = flows_[fi].count == 1;
    if (fair_) --flows_[fi].deficit;
    remove(i);
    if (fair_ && !last && lane.current == fi && flows_[fi].deficit < 1) rotate(lane);
  }

  void promote(std::uint32_t i) {
    Node& n = nodes_[i];
    const std::uint32_t weight = flows_[n.flow].weight;
    unlink(i);
    --nodes_[i].eff;
    link(i, weight);
    schedule_aging(i);
  }

  std::uint32_t allocate_flow() {
    if (free_flow_ != kNil) {
      const std::uint32_t f = free_flow_;
      free_flow_ = flows_[f].next;
      flows_[f] = Flow{};
      return f;
    }
    flows_.emplace_back();
    return static_cast<std::uint32_t>(flows_.size() - 1);
  }

  void release_flow(std::uint32_t f) {
    flows_[f].next = free_flow_;
    free_flow_ = f;
  }

  // Deficit round-robin: a flow that becomes active joins the ring just before the
  // current flow (last in the round); each turn adds the flow's weight to its deficit
  // and one request costs 1.
  void activate(Lane& lane, std::uint32_t fi) {
    Flow& f = flows_[fi];
    lane.weight += f.weight;
    f.deficit = 0;
    if (lane.current == kNil) {
      f.prev = f.next = fi;
      lane.current = fi;
      f.deficit = f.weight;
      return;
    }
    Flow& cur = flows_[lane.current];
    f.next = lane.current;
    f.prev = cur.prev;
    flows_[cur.prev].next = fi;
    cur.prev = fi;
  }

  void deactivate(Lane& lane, std::uint32_t fi) {
    Flow& f = flows_[fi];
    lane.weight -= f.weight;
    if (f.next == fi) {
      lane.current = kNil;
    } else {
      flows_[f.prev].next = f.next;
      flows_[f.next].prev = f.prev;
      if (lane.current == fi) {
        lane.current = f.next;
        flows_[lane.current].deficit += flows_[lane.current].weight;
      }
    }
    f.prev = f.next = kNil;
  }

  void rotate(Lane& lane) {
    lane.current = flows_[lane.current].next;
    Flow& f = flows_[lane.current];
    f.deficit += f.weight;
  }

  std::uint32_t flow_head(const Flow& f) const {
    std::uint32_t best = kNil;
    for (std::uint32_t h : f.head)
      if (h != kNil && (best == kNil || nodes_[h].seq < nodes_[best].seq)) best = h;
    return best;
  }

  // The request `dispatch` would offer from a non-empty class.
  std::uint32_t class_head(std::uint32_t c) const {
    for (const Lane& lane : classes_[c].lanes)
      if (lane.count > 0) return flow_head(flows_[lane.current]);
    return kNil;
  }

  void reset() {
    for (Node& n : nodes_) {
      if (!n.live) continue;
      const std::uint32_t generation = n.generation + 1;
      n = Node{};
      n.generation = generation;
    }
    // Rebuild the free list over every slot.
    free_node_ = kNil;
    for (std::uint32_t i = static_cast<std::uint32_t>(nodes_.size()); i-- > 0;) {
      nodes_[i].next = free_node_;
      free_node_ = i;
    }
    for (User& u : users_) {
      if (u.key != nullptr) spare_user_nodes_.push_back(user_index_.extract(*u.key));
    }
    users_.clear();
    free_user_ = kNil;
    flows_.clear();
    free_flow_ = kNil;
    classes_.assign(classes_.size(), Class{});
    deadlines_.clear();
    for (AgingIndex& a : aging_) a.clear();
    live_ = 0;
  }

  // Sequence numbers grow from the middle of the range; push_front takes smaller ones.
  static constexpr std::uint64_t kSeqOrigin = std::uint64_t{1} << 63;

  SchedulerOptions options_;
  bool fair_;
  std::size_t live_ = 0;
  std::uint64_t next_seq_ = kSeqOrigin;
  std::uint64_t front_seq_ = kSeqOrigin;
  time_point now_{};
  std::vector<Node> nodes_;
  std::uint32_t free_node_ = kNil;
  std::vector<Flow> flows_;
  std::uint32_t free_flow_ = kNil;
  std::vector<Class> classes_;
  std::vector<User> users_;
  std::uint32_t free_user_ = kNil;
  UserMap user_index_;
  std::vector<typename UserMap::node_type> spare_user_nodes_;
  DeadlineIndex deadlines_;
  std::array<AgingIndex, kPriorityLevels*(kPriorityLevels - 1) / 2> aging_;
  std::vector<char> blocked_;
};

}  // namespace llmq::detail
