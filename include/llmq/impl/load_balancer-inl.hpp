#pragma once
/// @file load_balancer-inl.hpp
/// Compiled once into llmq::llmq by src/load_balancer.cpp, or included by <llmq/load_balancer.hpp>
/// under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/load_balancer.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace llmq {
namespace detail::balancing {
using std::chrono::seconds;

inline constexpr std::int64_t kInf = std::numeric_limits<std::int64_t>::max();
inline constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
// Rounds are rebased before weight * round can approach the int64 range.
inline constexpr std::int64_t kRoundBudget = std::int64_t{1} << 50;

// A window admits `need` when it fits under the limit, or when the window is empty
// (a request larger than a whole window is sent alone rather than never).
inline bool fits(std::int64_t used, std::int64_t need, std::int64_t limit) {
  return used == 0 || used + need <= limit;
}

// What one Charge records of a count: clamped to [0, 2^31 - 1].
inline std::int32_t charge_count(std::int64_t n) {
  return static_cast<std::int32_t>(
      std::clamp<std::int64_t>(n, 0, std::numeric_limits<std::int32_t>::max()));
}

// The largest need `fits` admits.
inline std::int64_t room(std::int64_t used, std::int64_t limit) {
  return used == 0 ? kInf : limit - used;
}

// floor(a / b) for b > 0: a floating-point estimate (an integer division is several
// times slower), corrected exactly.
inline std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  auto q = static_cast<std::int64_t>(static_cast<double>(a) / static_cast<double>(b));
  while (q * b > a) --q;
  while ((q + 1) * b <= a) ++q;
  return q;
}

}  // namespace detail::balancing

LLMQ_INLINE void WeightedRoundRobinBalancer::ChargeLog::push_back(const Charge& c) {
  using namespace detail::balancing;
  if (size_ == ring_.size()) {
    const std::size_t capacity = std::max<std::size_t>(16, 2 * ring_.size());
    std::vector<Charge> bigger(capacity);
    for (std::uint64_t seq = base_; seq < end(); ++seq) bigger[seq & (capacity - 1)] = (*this)[seq];
    ring_.swap(bigger);
    mask_ = capacity - 1;
  }
  ring_[end() & mask_] = c;
  ++size_;
}

LLMQ_INLINE WeightedRoundRobinBalancer::WeightedRoundRobinBalancer(
    std::vector<DeploymentLimits> limits) {
  using namespace detail::balancing;
  states_.reserve(limits.size());
  for (const DeploymentLimits& l : limits) {
    if (l.req_per_min <= 0 || l.tokens_per_min <= 0 || l.weight <= 0)
      throw std::invalid_argument("deployment limits and weight must be positive");
    if (l.weight > kMaxWeight) throw std::invalid_argument("deployment weight is too large");
    if (l.priority < 0) throw std::invalid_argument("deployment priority must be >= 0");
    State s;
    s.limits = l;
    const auto margin = std::chrono::duration_cast<clock::duration>(l.window_margin);
    s.windows.push_back(Window{seconds(60) + margin, l.req_per_min});
    if (l.pace_short_windows) {
      s.windows.push_back(
          Window{seconds(10) + margin, std::max<std::int64_t>(1, l.req_per_min / 6)});
      s.windows.push_back(
          Window{seconds(1) + margin, std::max<std::int64_t>(1, l.req_per_min / 60)});
    }
    s.call_room = kInf;
    s.token_room = kInf;
    states_.push_back(std::move(s));
  }
}

// ---------------------------------------------------------------------------------------
// Candidate sets

LLMQ_INLINE std::size_t WeightedRoundRobinBalancer::SpanHash::operator()(
    std::span<const std::size_t> s) const noexcept {
  using namespace detail::balancing;
  std::size_t h = 0x9e3779b97f4a7c15ULL ^ s.size();
  for (std::size_t x : s) h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

LLMQ_INLINE bool WeightedRoundRobinBalancer::SpanEqual::operator()(
    std::span<const std::size_t> a, std::span<const std::size_t> b) const noexcept {
  using namespace detail::balancing;
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

LLMQ_INLINE WeightedRoundRobinBalancer::CandidateSet WeightedRoundRobinBalancer::candidate_set(
    std::span<const std::size_t> candidates) {
  using namespace detail::balancing;
  return CandidateSet{find_or_add_set(candidates, /*pin=*/true)};
}

LLMQ_INLINE std::uint32_t WeightedRoundRobinBalancer::find_or_add_set(
    std::span<const std::size_t> candidates, bool pin) {
  using namespace detail::balancing;
  if (auto it = set_index_.find(candidates); it != set_index_.end()) {
    Set& s = sets_[it->second];
    if (pin && !s.pinned) {
      s.pinned = true;
      --cached_sets_;
    }
    return it->second;
  }
  for (std::size_t d : candidates)
    if (d >= states_.size()) throw std::out_of_range("candidate deployment out of range");
  if (!pin && cached_sets_ >= kMaxCachedSets) {
    std::uint32_t oldest = kNone;
    for (std::uint32_t i = 0; i < sets_.size(); ++i) {
      const Set& s = sets_[i];
      if (s.live && !s.pinned && (oldest == kNone || s.last_used < sets_[oldest].last_used))
        oldest = i;
    }
    drop_set(oldest);
  }
  std::uint32_t id;
  if (!free_sets_.empty()) {
    id = free_sets_.back();
    free_sets_.pop_back();
  } else {
    if (sets_.size() >= kNone) throw std::length_error("too many candidate sets");
    id = static_cast<std::uint32_t>(sets_.size());
    sets_.emplace_back();
  }
  Set& set = sets_[id];
  set.key.assign(candidates.begin(), candidates.end());
  set.live = true;
  set.pinned = pin;
  set.last_used = epoch_;
  if (!pin) ++cached_sets_;

  // Groups by priority, members in candidate order, each deployment once.
  std::vector<char> seen(states_.size(), 0);
  std::vector<std::size_t> unique;
  for (std::size_t d : candidates) {
    if (seen[d]) continue;
    seen[d] = 1;
    unique.push_back(d);
  }
  std::vector<std::int64_t> priorities;
  for (std::size_t d : unique) priorities.push_back(states_[d].limits.priority);
  std::sort(priorities.begin(), priorities.end());
  priorities.erase(std::unique(priorities.begin(), priorities.end()), priorities.end());
  set.groups.assign(priorities.size(), Group{});
  for (std::uint32_t gi = 0; gi < priorities.size(); ++gi) {
    Group& g = set.groups[gi];
    g.priority = priorities[gi];
    for (std::size_t d : unique) {
      if (states_[d].limits.priority != g.priority) continue;
      Member m;
      m.deployment = d;
      m.weight = states_[d].limits.weight;
      g.max_weight = std::max(g.max_weight, m.weight);
      states_[d].memberships.push_back(
          Membership{id, gi, static_cast<std::uint32_t>(g.members.size())});
      g.members.push_back(m);
    }
    g.rebase_at = std::max<std::int64_t>(1, kRoundBudget / g.max_weight);
    g.leaves = std::bit_ceil(static_cast<std::uint32_t>(g.members.size()));
    g.tree.assign(2 * static_cast<std::size_t>(g.leaves),
                  Node{kNone, kNone, 0, 0, kInf, kInf, kInf, kInf});
    for (std::uint32_t leaf = 0; leaf < g.members.size(); ++leaf) {
      Member& m = g.members[leaf];
      if (!states_[m.deployment].out) {
        m.in = true;
        ++g.in_count;
        g.in_weight += m.weight;
        Node& n = g.tree[g.leaves + leaf];
        n.winner = leaf;
        n.weight = m.weight;
        n.offset = m.offset;
        n.min_call = states_[m.deployment].call_room;
        n.min_token = states_[m.deployment].token_room;
      }
    }
    for (std::uint32_t k = g.leaves; k-- > 1;) recompute(g, k, g.round + 1);
  }
  set_index_.emplace(set.key, id);
  return id;
}

LLMQ_INLINE void WeightedRoundRobinBalancer::drop_set(std::uint32_t id) {
  using namespace detail::balancing;
  Set& set = sets_[id];
  for (const Group& g : set.groups) {
    for (const Member& m : g.members) {
      auto& ms = states_[m.deployment].memberships;
      for (std::size_t i = 0; i < ms.size(); ++i) {
        if (ms[i].set == id) {
          ms[i] = ms.back();
          ms.pop_back();
          break;
        }
      }
    }
  }
  set_index_.erase(set.key);
  if (!set.pinned) --cached_sets_;
  set.groups.clear();
  set.key.clear();
  set.live = false;
  set.pinned = false;
  ++set.generation;
  free_sets_.push_back(id);
}

// ---------------------------------------------------------------------------------------
// Round-robin trees. Member i's smooth-WRR `current` is weight_i * round + offset_i; a
// pick compares current + weight, i.e. the lines weight_i * t + offset_i at t = round + 1.
// Every node keeps the winner of its two children at the current t and the round at
// which the loser's line overtakes (ties go to the earlier candidate), so advancing t
// only revisits nodes whose certificate has failed.

LLMQ_INLINE void WeightedRoundRobinBalancer::recompute(Group& g, std::uint32_t k,
                                                       std::int64_t t) const {
  using namespace detail::balancing;
  certify(g, k, t);
  Node& n = g.tree[k];
  n.sub_fail = std::min({n.fail, g.tree[2 * k].sub_fail, g.tree[2 * k + 1].sub_fail});
}

// Node k's minima, winner and certificate from its children (not its sub_fail).
LLMQ_INLINE void WeightedRoundRobinBalancer::certify(Group& g, std::uint32_t k, std::int64_t t) {
  using namespace detail::balancing;
  const Node& l = g.tree[2 * k];
  const Node& r = g.tree[2 * k + 1];
  Node& n = g.tree[k];
  n.min_call = std::min(l.min_call, r.min_call);
  n.min_token = std::min(l.min_token, r.min_token);
  if (l.winner == kNone || r.winner == kNone) {
    const Node& only = l.winner == kNone ? r : l;
    n.winner = only.winner;
    n.loser = kNone;
    n.weight = only.weight;
    n.offset = only.offset;
    n.fail = kInf;
  } else {
    // Left members come earlier in candidate order: the left wins ties.
    const bool left_wins = l.weight * t + l.offset >= r.weight * t + r.offset;
    const Node& win = left_wins ? l : r;
    const Node& lose = left_wins ? r : l;
    n.winner = win.winner;
    n.loser = lose.winner;
    n.weight = win.weight;
    n.offset = win.offset;
    // The loser leads once slope * t' > gap (>= when it comes earlier: it is the left).
    const std::int64_t slope = lose.weight - win.weight;
    const std::int64_t gap = win.offset - lose.offset - (left_wins ? 0 : 1);
    n.fail = slope > 0 ? floor_div(gap, slope) + 1 : kInf;
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::update_leaf(Group& g, std::uint32_t leaf) {
  using namespace detail::balancing;
  std::uint32_t k = g.leaves + leaf;
  Node& n = g.tree[k];
  const Member& m = g.members[leaf];
  if (m.in) {
    n.winner = leaf;
    n.weight = m.weight;
    n.offset = m.offset;
    n.min_call = states_[m.deployment].call_room;
    n.min_token = states_[m.deployment].token_room;
  } else {
    n.winner = kNone;
    n.min_call = n.min_token = kInf;
  }
  const std::int64_t t = g.round + 1;
  // Winners and certificates first, then the subtree minima of the certificates: the
  // divisions of successive levels do not wait for one another.
  for (std::uint32_t up = k / 2; up >= 1; up /= 2) certify(g, up, t);
  for (std::uint32_t up = k / 2; up >= 1; up /= 2) {
    Node& p = g.tree[up];
    p.sub_fail = std::min({p.fail, g.tree[2 * up].sub_fail, g.tree[2 * up + 1].sub_fail});
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::catch_up(Group& g, std::int64_t t) {
  using namespace detail::balancing;
  if (g.tree[1].sub_fail > t) return;
  stack_.clear();
  stack_.push_back(1);
  while (!stack_.empty()) {
    const std::uint32_t k = stack_.back();
    if (k >= g.leaves) {
      stack_.pop_back();
    } else if (g.tree[2 * k].sub_fail <= t) {
      stack_.push_back(2 * k);
    } else if (g.tree[2 * k + 1].sub_fail <= t) {
      stack_.push_back(2 * k + 1);
    } else {
      // Children are current. Unless this node's own certificate failed or a child's
      // winner changed, only its subtree minimum moves (lines change only in update_leaf,
      // which recomputes the whole path).
      Node& n = g.tree[k];
      const std::uint32_t a = g.tree[2 * k].winner;
      const std::uint32_t b = g.tree[2 * k + 1].winner;
      const bool same = (a == n.winner && b == n.loser) || (a == n.loser && b == n.winner);
      if (n.fail > t && same) {
        n.sub_fail = std::min({n.fail, g.tree[2 * k].sub_fail, g.tree[2 * k + 1].sub_fail});
      } else {
        recompute(g, k, t);  // its certificate now holds past t
      }
      stack_.pop_back();
    }
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::rebase(Group& g) {
  using namespace detail::balancing;
  for (std::uint32_t leaf = 0; leaf < g.members.size(); ++leaf) {
    Member& m = g.members[leaf];
    if (!m.in) continue;
    m.offset += m.weight * g.round;
    g.tree[g.leaves + leaf].offset = m.offset;
  }
  g.round = 0;
  for (std::uint32_t k = g.leaves; k-- > 1;) recompute(g, k, 1);
}

// Marks (with `epoch`) and lists the members in the tree that cannot take `need`. Room
// minima can only understate (windows empty between refreshes), so a member that
// seems too full is refreshed and looked at again; one that seems to fit does.
LLMQ_INLINE void WeightedRoundRobinBalancer::collect_failing(Group& g, DeploymentNeed need,
                                                             time_point now, std::uint64_t epoch) {
  using namespace detail::balancing;
  g.failing.clear();
  g.failing_weight = 0;
  g.failing_epoch = epoch;
  auto all_fit = [&](const Node& n) {
    return n.min_call >= need.calls && n.min_token >= need.tokens;
  };
  if (all_fit(g.tree[1])) return;
  stack_.clear();
  stack_.push_back(1);
  while (!stack_.empty()) {
    const std::uint32_t k = stack_.back();
    stack_.pop_back();
    if (all_fit(g.tree[k])) continue;
    if (k < g.leaves) {
      stack_.push_back(2 * k + 1);
      stack_.push_back(2 * k);
      continue;
    }
    const std::uint32_t leaf = k - g.leaves;
    Member& m = g.members[leaf];
    refresh(m.deployment, now);
    const State& s = states_[m.deployment];
    if (s.call_room >= need.calls && s.token_room >= need.tokens) continue;
    m.failing_epoch = epoch;
    g.failing.push_back(leaf);
    g.failing_weight += m.weight;
  }
}

// No member of `g` can take `need`: nor a larger one until a window of one of them loses
// a charge.
LLMQ_INLINE void WeightedRoundRobinBalancer::remember_full(Group& g, DeploymentNeed need) {
  using namespace detail::balancing;
  time_point until = time_point::max();
  for (std::uint32_t leaf : g.failing) {
    for (const Window& w : states_[g.members[leaf].deployment].windows)
      until = std::min(until, w.next_leave);
  }
  g.full_until = until;
  g.full_need = need;
}

// The best member not marked failing: a node's winner bounds its whole subtree.
LLMQ_INLINE std::uint32_t WeightedRoundRobinBalancer::best_fitting(const Group& g,
                                                                   std::uint64_t epoch) const {
  using namespace detail::balancing;
  const std::int64_t t = g.round + 1;
  auto score = [&](std::uint32_t i) { return g.members[i].weight * t + g.members[i].offset; };
  auto better = [&](std::uint32_t a, std::uint32_t b) {
    const std::int64_t sa = score(a);
    const std::int64_t sb = score(b);
    return sa > sb || (sa == sb && a < b);
  };
  std::uint32_t best = kNone;
  // A walk needs at most one pending sibling per level.
  std::uint32_t pending[64];
  std::size_t top = 0;
  pending[top++] = 1;
  while (top > 0) {
    const std::uint32_t k = pending[--top];
    const std::uint32_t w = g.tree[k].winner;
    if (w == kNone || (best != kNone && !better(w, best))) continue;
    if (g.members[w].failing_epoch != epoch) {
      best = w;
      continue;
    }
    if (k < g.leaves) {
      pending[top++] = 2 * k + 1;
      pending[top++] = 2 * k;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------
// Deployment state

LLMQ_INLINE void WeightedRoundRobinBalancer::advance(State& s, time_point now) {
  using namespace detail::balancing;
  if (now <= s.advanced_to) return;  // nothing can have left the windows since
  s.advanced_to = now;
  const std::uint64_t end = s.log.end();
  for (Window& w : s.windows) {
    if (now < w.next_leave) continue;
    w.next_leave = time_point::max();
    while (w.cursor < end) {
      const Charge& c = s.log[w.cursor];
      if (c.at + w.length > now) {
        w.next_leave = c.at + w.length;
        break;
      }
      w.calls -= c.calls;
      w.tokens -= c.tokens;
      ++w.cursor;
    }
  }
  // Charges behind the longest (60 s) window are no longer needed.
  while (s.log.base() < s.windows.front().cursor) s.log.pop_front();
  // The next charges to leave are read on a later visit, long after they were written:
  // fetch them now, ahead of that (many deployments' logs defeat hardware prefetching).
  for (const Window& w : s.windows) {
    if (w.cursor + 2 < end) __builtin_prefetch(&s.log[w.cursor + 2]);
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::update_rooms(std::size_t d, const Membership* skip) {
  using namespace detail::balancing;
  State& s = states_[d];
  std::int64_t calls = kInf;
  for (const Window& w : s.windows) calls = std::min(calls, room(w.calls, w.call_limit));
  const std::int64_t tokens = room(s.windows.front().tokens, s.limits.tokens_per_min);
  if (calls == s.call_room && tokens == s.token_room) return;
  const bool grew = calls > s.call_room || tokens > s.token_room;
  s.call_room = calls;
  s.token_room = tokens;
  for (const Membership& ms : s.memberships) {
    if (grew) sets_[ms.set].groups[ms.group].full_until = time_point{};
    if (skip != nullptr && ms.set == skip->set && ms.group == skip->group) continue;
    Group& g = sets_[ms.set].groups[ms.group];
    if (!g.members[ms.leaf].in) continue;
    std::uint32_t k = g.leaves + ms.leaf;
    g.tree[k].min_call = calls;
    g.tree[k].min_token = tokens;
    for (k /= 2; k >= 1; k /= 2) {
      Node& n = g.tree[k];
      n.min_call = std::min(g.tree[2 * k].min_call, g.tree[2 * k + 1].min_call);
      n.min_token = std::min(g.tree[2 * k].min_token, g.tree[2 * k + 1].min_token);
    }
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::refresh(std::size_t d, time_point now) {
  using namespace detail::balancing;
  advance(states_[d], now);
  update_rooms(d);
}

// Out of every tree while in backoff or without room for one call; back in when that
// ends (a wake-up is scheduled for the moment it can).
LLMQ_INLINE void WeightedRoundRobinBalancer::update_standing(std::size_t d) {
  using namespace detail::balancing;
  State& s = states_[d];
  const bool out = s.in_backoff || s.call_room < 1;
  if (out != s.out) {
    s.out = out;
    set_in(d, !out);
  }
  if (!out) {
    wake_erase(d);
    return;
  }
  if (s.in_backoff) {
    schedule_wake(d, s.backoff_until);
    return;
  }
  // The earliest moment a full call window loses its oldest charge.
  time_point at = time_point::max();
  for (const Window& w : s.windows) {
    if (room(w.calls, w.call_limit) >= 1) continue;
    at = std::min(at, w.next_leave);
  }
  schedule_wake(d, at);
}

LLMQ_INLINE void WeightedRoundRobinBalancer::set_in(std::size_t d, bool in) {
  using namespace detail::balancing;
  for (const Membership& ms : states_[d].memberships) {
    Group& g = sets_[ms.set].groups[ms.group];
    Member& m = g.members[ms.leaf];
    if (m.in == in) continue;
    if (in) {
      g.full_until = time_point{};
      m.offset = m.current - m.weight * g.round;
      ++g.in_count;
      g.in_weight += m.weight;
    } else {
      m.current = m.weight * g.round + m.offset;
      --g.in_count;
      g.in_weight -= m.weight;
    }
    m.in = in;
    update_leaf(g, ms.leaf);
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::sync(time_point now) {
  using namespace detail::balancing;
  while (!wake_heap_.empty()) {
    const std::size_t d = wake_heap_.front();
    State& s = states_[d];
    if (s.wake_at > now) break;
    wake_erase(d);
    advance(s, now);
    if (s.in_backoff && now >= s.backoff_until) s.in_backoff = false;
    update_rooms(d);
    update_standing(d);
  }
}

// Wake heap: a binary min-heap of deployments by wake_at; wake_pos is 1-based.
LLMQ_INLINE void WeightedRoundRobinBalancer::wake_swap(std::uint32_t a, std::uint32_t b) {
  using namespace detail::balancing;
  std::swap(wake_heap_[a], wake_heap_[b]);
  states_[wake_heap_[a]].wake_pos = a + 1;
  states_[wake_heap_[b]].wake_pos = b + 1;
}

LLMQ_INLINE void WeightedRoundRobinBalancer::wake_sift_up(std::uint32_t pos) {
  using namespace detail::balancing;
  while (pos > 0) {
    const std::uint32_t parent = (pos - 1) / 2;
    if (!(states_[wake_heap_[pos]].wake_at < states_[wake_heap_[parent]].wake_at)) break;
    wake_swap(pos, parent);
    pos = parent;
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::wake_sift_down(std::uint32_t pos) {
  using namespace detail::balancing;
  const auto n = static_cast<std::uint32_t>(wake_heap_.size());
  for (;;) {
    const std::uint32_t l = 2 * pos + 1;
    if (l >= n) return;
    std::uint32_t m = l;
    if (l + 1 < n && states_[wake_heap_[l + 1]].wake_at < states_[wake_heap_[l]].wake_at) m = l + 1;
    if (!(states_[wake_heap_[m]].wake_at < states_[wake_heap_[pos]].wake_at)) return;
    wake_swap(pos, m);
    pos = m;
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::schedule_wake(std::size_t d,
                                                           std::optional<time_point> at) {
  using namespace detail::balancing;
  State& s = states_[d];
  if (!at) {
    wake_erase(d);
    return;
  }
  s.wake_at = *at;
  if (s.wake_pos == 0) {
    wake_heap_.push_back(static_cast<std::uint32_t>(d));
    s.wake_pos = static_cast<std::uint32_t>(wake_heap_.size());
  }
  wake_sift_up(s.wake_pos - 1);
  wake_sift_down(s.wake_pos - 1);
}

LLMQ_INLINE void WeightedRoundRobinBalancer::wake_erase(std::size_t d) {
  using namespace detail::balancing;
  State& s = states_[d];
  if (s.wake_pos == 0) return;
  const std::uint32_t pos = s.wake_pos - 1;
  const auto last = static_cast<std::uint32_t>(wake_heap_.size() - 1);
  if (pos != last) wake_swap(pos, last);
  wake_heap_.pop_back();
  s.wake_pos = 0;
  if (pos < wake_heap_.size()) {
    const std::uint32_t moved = wake_heap_[pos];
    wake_sift_up(pos);
    wake_sift_down(states_[moved].wake_pos - 1);
  }
}

// ---------------------------------------------------------------------------------------
// Decisions

LLMQ_INLINE std::optional<WeightedRoundRobinBalancer::Selection> WeightedRoundRobinBalancer::pick(
    CandidateSet set, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  if (set.id >= sets_.size() || !sets_[set.id].live)
    throw std::invalid_argument("unknown candidate set");
  return pick_in(set.id, need, now);
}

LLMQ_INLINE std::optional<WeightedRoundRobinBalancer::Selection> WeightedRoundRobinBalancer::pick(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  return pick_in(find_or_add_set(candidates, /*pin=*/false), need, now);
}

LLMQ_INLINE std::optional<WeightedRoundRobinBalancer::Selection>
WeightedRoundRobinBalancer::pick_in(std::uint32_t id, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  sync(now);
  need.calls = std::max<std::int64_t>(1, need.calls);
  const std::uint64_t epoch = ++epoch_;
  sets_[id].last_used = epoch;
  for (std::uint32_t gi = 0; gi < sets_[id].groups.size(); ++gi) {
    Group& g = sets_[id].groups[gi];
    if (g.in_count == 0) continue;
    if (now < g.full_until && need.calls >= g.full_need.calls &&
        need.tokens >= g.full_need.tokens) {
      continue;
    }
    collect_failing(g, need, now, epoch);
    if (g.failing.size() == g.in_count) {
      remember_full(g, need);
      continue;
    }
    catch_up(g, g.round + 1);
    const std::uint32_t leaf = best_fitting(g, epoch);
    Selection sel;
    sel.deployment = g.members[leaf].deployment;
    sel.epoch = epoch;
    sel.eligible_weight = g.in_weight - g.failing_weight;
    sel.spilled = gi > 0;
    sel.set = id;
    sel.set_generation = sets_[id].generation;
    sel.group = gi;
    return sel;
  }
  return std::nullopt;
}

LLMQ_INLINE DeploymentGrant WeightedRoundRobinBalancer::commit(const Selection& sel,
                                                               DeploymentNeed need,
                                                               time_point now) {
  using namespace detail::balancing;
  if (sel.deployment >= states_.size()) throw std::out_of_range("deployment out of range");
  need.calls = std::max<std::int64_t>(1, need.calls);
  if (sel.set < sets_.size() && sets_[sel.set].live &&
      sets_[sel.set].generation == sel.set_generation && sel.group < sets_[sel.set].groups.size()) {
    Group& g = sets_[sel.set].groups[sel.group];
    if (g.failing_epoch != sel.epoch) collect_failing(g, need, now, sel.epoch);
    // Smooth WRR: every eligible member gains its weight (the round), except those that
    // could not take this request; the chosen one gives back the eligible total.
    const std::int64_t eligible_weight = g.in_weight - g.failing_weight;
    ++g.round;
    for (std::uint32_t leaf : g.failing) {
      Member& m = g.members[leaf];
      if (!m.in) continue;
      m.offset -= m.weight;
      update_leaf(g, leaf);
    }
    const Membership* chosen = nullptr;
    for (const Membership& ms : states_[sel.deployment].memberships) {
      if (ms.set == sel.set && ms.group == sel.group) chosen = &ms;
    }
    g.failing.clear();
    g.failing_epoch = 0;
    if (chosen == nullptr) return charge(sel.deployment, need, now, sel.spilled, nullptr);
    const Membership where = *chosen;
    Member& m = g.members[where.leaf];
    if (m.in) {
      m.offset -= eligible_weight;
    } else {
      m.current += m.weight - eligible_weight;
    }
    // The charge updates the chosen leaf's rooms with its new offset, in one walk up.
    DeploymentGrant grant = charge(sel.deployment, need, now, sel.spilled, &where);
    if (g.members[where.leaf].in) update_leaf(g, where.leaf);
    if (g.round >= g.rebase_at) rebase(g);
    return grant;
  }
  return charge(sel.deployment, need, now, sel.spilled, nullptr);
}

LLMQ_INLINE DeploymentGrant
WeightedRoundRobinBalancer::commit(std::span<const std::size_t> /*candidates*/,
                                   const Selection& sel, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  return commit(sel, need, now);
}

LLMQ_INLINE DeploymentGrant
WeightedRoundRobinBalancer::charge(std::size_t d, DeploymentNeed need, time_point now, bool spilled,
                                   const Membership* updated_by_caller) {
  using namespace detail::balancing;
  State& s = states_[d];
  advance(s, now);
  const std::uint64_t seq = s.log.end();
  const Charge c{now, charge_count(need.calls), charge_count(need.tokens)};
  s.log.push_back(c);
  for (Window& w : s.windows) {
    w.calls += c.calls;
    w.tokens += c.tokens;
    if (w.next_leave == time_point::max()) w.next_leave = now + w.length;
  }
  ++s.counters.granted;
  if (spilled) ++s.counters.spilled;
  update_rooms(d, updated_by_caller);
  update_standing(d);
  return DeploymentGrant{d, seq, need, spilled};
}

LLMQ_INLINE std::optional<DeploymentGrant> WeightedRoundRobinBalancer::acquire(CandidateSet set,
                                                                               DeploymentNeed need,
                                                                               time_point now) {
  using namespace detail::balancing;
  auto sel = pick(set, need, now);
  if (!sel) return std::nullopt;
  return commit(*sel, need, now);
}

LLMQ_INLINE std::optional<DeploymentGrant> WeightedRoundRobinBalancer::acquire(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  auto sel = pick(candidates, need, now);
  if (!sel) return std::nullopt;
  return commit(*sel, need, now);
}

LLMQ_INLINE void WeightedRoundRobinBalancer::reconcile(const DeploymentGrant& g,
                                                       std::int64_t actual_tokens) {
  using namespace detail::balancing;
  if (actual_tokens <= 0) return;
  State& s = states_.at(g.deployment);
  if (!s.log.holds(g.seq)) return;
  Charge& c = s.log[g.seq];
  const std::int32_t actual = charge_count(actual_tokens);
  const std::int64_t delta = std::int64_t{actual} - c.tokens;
  c.tokens = actual;
  for (Window& w : s.windows)
    if (g.seq >= w.cursor) w.tokens += delta;
  update_rooms(g.deployment);
}

LLMQ_INLINE void WeightedRoundRobinBalancer::refund(const DeploymentGrant& g) {
  using namespace detail::balancing;
  State& s = states_.at(g.deployment);
  if (!s.log.holds(g.seq)) return;
  Charge& c = s.log[g.seq];
  for (Window& w : s.windows) {
    if (g.seq < w.cursor) continue;
    w.calls -= c.calls;
    w.tokens -= c.tokens;
  }
  c.calls = 0;
  c.tokens = 0;
  update_rooms(g.deployment);
  update_standing(g.deployment);
}

LLMQ_INLINE void WeightedRoundRobinBalancer::report_failure(
    std::size_t deployment, time_point now, std::optional<clock::duration> retry_after,
    bool throttled) {
  using namespace detail::balancing;
  State& s = states_.at(deployment);
  const clock::duration wait =
      retry_after ? *retry_after
                  : std::chrono::duration_cast<clock::duration>(s.limits.error_backoff);
  s.backoff_until = std::max(s.backoff_until, now + wait);
  ++s.counters.failures;
  if (throttled) ++s.counters.throttled;
  if (now < s.backoff_until) {
    s.in_backoff = true;
    update_standing(deployment);
  }
}

LLMQ_INLINE void WeightedRoundRobinBalancer::hold(std::size_t deployment, time_point until) {
  using namespace detail::balancing;
  State& s = states_.at(deployment);
  s.backoff_until = std::max(s.backoff_until, until);
  // Out until the next sync at or after `until` (the hold may already be over then).
  s.in_backoff = true;
  update_standing(deployment);
}

LLMQ_INLINE WeightedRoundRobinBalancer::time_point WeightedRoundRobinBalancer::next_fit(
    State& s, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  advance(s, now);
  time_point t = std::max(now, s.backoff_until);
  const std::uint64_t end = s.log.end();
  // For each window, walk its oldest charges until enough have left for `need` to fit.
  auto when_fits = [&](const Window& w, bool tokens) {
    std::int64_t used = tokens ? w.tokens : w.calls;
    const std::int64_t needed = tokens ? need.tokens : need.calls;
    const std::int64_t limit = tokens ? s.limits.tokens_per_min : w.call_limit;
    time_point at = now;
    for (std::uint64_t q = w.cursor; q < end && !fits(used, needed, limit); ++q) {
      const Charge& c = s.log[q];
      used -= tokens ? c.tokens : c.calls;
      at = c.at + w.length;
    }
    return at;
  };
  for (const Window& w : s.windows) t = std::max(t, when_fits(w, false));
  t = std::max(t, when_fits(s.windows.front(), true));
  return t;
}

LLMQ_INLINE WeightedRoundRobinBalancer::time_point WeightedRoundRobinBalancer::next_eligible(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  using namespace detail::balancing;
  need.calls = std::max<std::int64_t>(1, need.calls);
  time_point best = time_point::max();
  for (std::size_t d : candidates) best = std::min(best, next_fit(states_.at(d), need, now));
  return best;
}

LLMQ_INLINE DeploymentState WeightedRoundRobinBalancer::state(std::size_t deployment,
                                                              time_point now) {
  using namespace detail::balancing;
  State& s = states_.at(deployment);
  advance(s, now);
  DeploymentState out = s.counters;
  out.requests_in_window = s.windows.front().calls;
  out.tokens_in_window = s.windows.front().tokens;
  if (now < s.backoff_until) out.backoff_until = s.backoff_until;
  return out;
}

LLMQ_INLINE bool WeightedRoundRobinBalancer::held_for_windows(
    std::span<const std::size_t> candidates, time_point now) const {
  using namespace detail::balancing;
  for (std::size_t d : candidates)
    if (now >= states_.at(d).backoff_until) return true;
  return false;
}

LLMQ_INLINE void WeightedRoundRobinBalancer::count_paced(std::size_t deployment) {
  using namespace detail::balancing;
  ++states_.at(deployment).counters.paced;
}

LLMQ_INLINE void WeightedRoundRobinBalancer::take_over(std::size_t deployment,
                                                       WeightedRoundRobinBalancer& from,
                                                       std::size_t from_deployment,
                                                       time_point now) {
  using namespace detail::balancing;
  State& old = from.states_.at(from_deployment);
  from.advance(old, now);
  State& s = states_.at(deployment);
  s.log = std::move(old.log);
  old.log = ChargeLog{};
  s.backoff_until = old.backoff_until;
  s.counters = old.counters;
  s.in_backoff = now < s.backoff_until;
  s.advanced_to = now;
  const std::uint64_t end = s.log.end();
  for (Window& w : s.windows) {
    w.cursor = end;
    w.calls = 0;
    w.tokens = 0;
    w.next_leave = time_point::max();
    for (std::uint64_t q = s.log.base(); q < end; ++q) {
      const Charge& c = s.log[q];
      if (c.at + w.length <= now) continue;
      if (w.cursor == end) {
        w.cursor = q;
        w.next_leave = c.at + w.length;
      }
      w.calls += c.calls;
      w.tokens += c.tokens;
    }
  }
  while (s.log.base() < s.windows.front().cursor) s.log.pop_front();
  update_rooms(deployment);
  update_standing(deployment);
}

}  // namespace llmq
