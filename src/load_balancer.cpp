#include <llmq/load_balancer.hpp>

#include <algorithm>
#include <stdexcept>

namespace llmq {
namespace {
using std::chrono::seconds;

// A window admits `need` when it fits under the limit, or when the window is empty
// (a request larger than a whole window is sent alone rather than never).
bool fits(std::int64_t used, std::int64_t need, std::int64_t limit) {
  return used == 0 || used + need <= limit;
}
}  // namespace

WeightedRoundRobinBalancer::WeightedRoundRobinBalancer(std::vector<DeploymentLimits> limits) {
  states_.reserve(limits.size());
  for (const DeploymentLimits& l : limits) {
    if (l.req_per_min <= 0 || l.tokens_per_min <= 0 || l.weight <= 0)
      throw std::invalid_argument("deployment limits and weight must be positive");
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
    states_.push_back(std::move(s));
  }
}

void WeightedRoundRobinBalancer::advance(State& s, time_point now) {
  if (now <= s.advanced_to) return;  // nothing can have left the windows since
  s.advanced_to = now;
  const std::uint64_t end = s.base_seq + s.log.size();
  for (Window& w : s.windows) {
    while (w.cursor < end) {
      const Charge& c = s.log[w.cursor - s.base_seq];
      if (c.at > now - w.length) break;
      w.calls -= c.calls;
      w.tokens -= c.tokens;
      ++w.cursor;
    }
  }
  // Charges behind the longest (60 s) window are no longer needed.
  while (s.base_seq < s.windows.front().cursor) {
    s.log.pop_front();
    ++s.base_seq;
  }
}

bool WeightedRoundRobinBalancer::eligible(State& s, DeploymentNeed need, time_point now) {
  if (now < s.backoff_until) return false;
  advance(s, now);
  const Window& minute = s.windows.front();
  if (!fits(minute.tokens, need.tokens, s.limits.tokens_per_min)) return false;
  return std::all_of(s.windows.begin(), s.windows.end(),
                     [&](const Window& w) { return fits(w.calls, need.calls, w.call_limit); });
}

std::optional<WeightedRoundRobinBalancer::Selection> WeightedRoundRobinBalancer::pick(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  const std::uint64_t epoch = ++epoch_;
  std::optional<Selection> best;
  std::int64_t best_score = 0;
  std::int64_t total = 0;
  for (std::size_t d : candidates) {
    State& s = states_.at(d);
    if (!eligible(s, need, now)) continue;
    s.eligible_epoch = epoch;
    total += s.limits.weight;
    const std::int64_t score = s.current + s.limits.weight;
    if (!best || score > best_score) {
      best = Selection{d, epoch, 0};
      best_score = score;
    }
  }
  if (best) best->eligible_weight = total;
  return best;
}

DeploymentGrant WeightedRoundRobinBalancer::commit(std::span<const std::size_t> candidates,
                                                   const Selection& sel, DeploymentNeed need,
                                                   time_point now) {
  for (std::size_t d : candidates) {
    State& s = states_[d];
    if (s.eligible_epoch == sel.epoch) s.current += s.limits.weight;
  }
  State& chosen = states_.at(sel.deployment);
  chosen.current -= sel.eligible_weight;
  const std::uint64_t seq = chosen.base_seq + chosen.log.size();
  chosen.log.push_back(Charge{now, need.calls, need.tokens});
  for (Window& w : chosen.windows) {
    w.calls += need.calls;
    w.tokens += need.tokens;
  }
  ++chosen.counters.granted;
  return DeploymentGrant{sel.deployment, seq, need};
}

std::optional<DeploymentGrant> WeightedRoundRobinBalancer::acquire(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  auto sel = pick(candidates, need, now);
  if (!sel) return std::nullopt;
  return commit(candidates, *sel, need, now);
}

void WeightedRoundRobinBalancer::reconcile(const DeploymentGrant& g, std::int64_t actual_tokens) {
  if (actual_tokens <= 0) return;
  State& s = states_.at(g.deployment);
  if (g.seq < s.base_seq || g.seq >= s.base_seq + s.log.size()) return;
  Charge& c = s.log[g.seq - s.base_seq];
  const std::int64_t delta = actual_tokens - c.tokens;
  c.tokens = actual_tokens;
  for (Window& w : s.windows)
    if (g.seq >= w.cursor) w.tokens += delta;
}

void WeightedRoundRobinBalancer::refund(const DeploymentGrant& g) {
  State& s = states_.at(g.deployment);
  if (g.seq < s.base_seq || g.seq >= s.base_seq + s.log.size()) return;
  Charge& c = s.log[g.seq - s.base_seq];
  for (Window& w : s.windows) {
    if (g.seq < w.cursor) continue;
    w.calls -= c.calls;
    w.tokens -= c.tokens;
  }
  c.calls = 0;
  c.tokens = 0;
}

void WeightedRoundRobinBalancer::report_failure(std::size_t deployment, time_point now,
                                                std::optional<clock::duration> retry_after,
                                                bool throttled) {
  State& s = states_.at(deployment);
  const clock::duration wait =
      retry_after ? *retry_after
                  : std::chrono::duration_cast<clock::duration>(s.limits.error_backoff);
  s.backoff_until = std::max(s.backoff_until, now + wait);
  ++s.counters.failures;
  if (throttled) ++s.counters.throttled;
}

void WeightedRoundRobinBalancer::hold(std::size_t deployment, time_point until) {
  State& s = states_.at(deployment);
  s.backoff_until = std::max(s.backoff_until, until);
}

WeightedRoundRobinBalancer::time_point WeightedRoundRobinBalancer::next_fit(State& s,
                                                                            DeploymentNeed need,
                                                                            time_point now) {
  advance(s, now);
  time_point t = std::max(now, s.backoff_until);
  const std::uint64_t end = s.base_seq + s.log.size();
  // For each window, walk its oldest charges until enough have left for `need` to fit.
  auto when_fits = [&](const Window& w, bool tokens) {
    std::int64_t used = tokens ? w.tokens : w.calls;
    const std::int64_t needed = tokens ? need.tokens : need.calls;
    const std::int64_t limit = tokens ? s.limits.tokens_per_min : w.call_limit;
    time_point at = now;
    for (std::uint64_t q = w.cursor; q < end && !fits(used, needed, limit); ++q) {
      const Charge& c = s.log[q - s.base_seq];
      used -= tokens ? c.tokens : c.calls;
      at = c.at + w.length;
    }
    return at;
  };
  for (const Window& w : s.windows) t = std::max(t, when_fits(w, false));
  t = std::max(t, when_fits(s.windows.front(), true));
  return t;
}

WeightedRoundRobinBalancer::time_point WeightedRoundRobinBalancer::next_eligible(
    std::span<const std::size_t> candidates, DeploymentNeed need, time_point now) {
  time_point best = time_point::max();
  for (std::size_t d : candidates) best = std::min(best, next_fit(states_.at(d), need, now));
  return best;
}

DeploymentState WeightedRoundRobinBalancer::state(std::size_t deployment, time_point now) {
  State& s = states_.at(deployment);
  advance(s, now);
  DeploymentState out = s.counters;
  out.requests_in_window = s.windows.front().calls;
  out.tokens_in_window = s.windows.front().tokens;
  if (now < s.backoff_until) out.backoff_until = s.backoff_until;
  return out;
}

}  // namespace llmq
