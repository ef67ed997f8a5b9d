#include <llmq/load_balancer.hpp>

#include <gtest/gtest.h>

#include <array>
#include <map>
#include <vector>

namespace {
using llmq::DeploymentLimits;
using llmq::DeploymentNeed;
using llmq::WeightedRoundRobinBalancer;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

DeploymentLimits big(std::int64_t weight) {
  return DeploymentLimits{1'000'000'000, 1'000'000'000'000, seconds(60), weight, true};
}

TEST(WeightedRoundRobinBalancer, WeightsOneTwoThreeGiveProportionalShares) {
  WeightedRoundRobinBalancer b({big(1), big(2), big(3)});
  const std::vector<std::size_t> all{0, 1, 2};
  std::array<int, 3> counts{};
  const int n = 60'000;
  for (int i = 0; i < n; ++i) {
    auto g = b.acquire(all, DeploymentNeed{1, 10}, t0 + milliseconds(i));
    ASSERT_TRUE(g);
    ++counts[g->deployment];
  }
  EXPECT_NEAR(counts[0] / double(n), 1.0 / 6, 0.01);
  EXPECT_NEAR(counts[1] / double(n), 2.0 / 6, 0.01);
  EXPECT_NEAR(counts[2] / double(n), 3.0 / 6, 0.01);
}

TEST(WeightedRoundRobinBalancer, SmoothSequenceInterleaves) {
  WeightedRoundRobinBalancer b({big(5), big(1), big(1)});
  const std::vector<std::size_t> all{0, 1, 2};
  std::vector<std::size_t> seq;
  for (int i = 0; i < 7; ++i) seq.push_back(b.acquire(all, {1, 1}, t0)->deployment);
  // nginx's smooth WRR for 5:1:1 yields a a b a c a a.
  EXPECT_EQ(seq, (std::vector<std::size_t>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(WeightedRoundRobinBalancer, OnlyCandidatesAreChosen) {
  WeightedRoundRobinBalancer b({big(1), big(100), big(1)});
  const std::vector<std::size_t> pinned{2};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(b.acquire(pinned, {1, 1}, t0)->deployment, 2u);
}

TEST(WeightedRoundRobinBalancer, RequestsPerMinuteSlidingWindow) {
  DeploymentLimits l{6, 1'000'000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(b.acquire(c, {1, 1}, t0 + seconds(i)));
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + seconds(30)));
  EXPECT_EQ(b.next_eligible(c, {1, 1}, t0 + seconds(30)), t0 + seconds(60));
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + seconds(60) - milliseconds(1)));
  EXPECT_TRUE(b.acquire(c, {1, 1}, t0 + seconds(60)));  // first charge left the window
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + seconds(60)));
}

TEST(WeightedRoundRobinBalancer, HeldForWindowsOnlyWhenACandidateIsOutOfBackoff) {
  DeploymentLimits l{1, 1'000'000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l, l});
  const std::vector<std::size_t> both{0, 1};
  ASSERT_TRUE(b.acquire(both, {1, 1}, t0));
  ASSERT_TRUE(b.acquire(both, {1, 1}, t0));
  ASSERT_FALSE(b.acquire(both, {1, 1}, t0));
  EXPECT_TRUE(b.held_for_windows(both, t0));  // both windows full, neither backing off
  b.report_failure(0, t0, seconds(10), true);
  EXPECT_TRUE(b.held_for_windows(both, t0));  // 1 waits for its window
  b.report_failure(1, t0, seconds(10), true);
  EXPECT_FALSE(b.held_for_windows(both, t0));  // only backoffs hold it
  EXPECT_TRUE(b.held_for_windows(both, t0 + seconds(10)));
  EXPECT_EQ(b.state(0, t0).paced, 0u);
  b.count_paced(1);
  b.count_paced(1);
  EXPECT_EQ(b.state(0, t0).paced, 0u);
  EXPECT_EQ(b.state(1, t0).paced, 2u);
}

TEST(WeightedRoundRobinBalancer, CallsPerRequestAreCharged) {
  DeploymentLimits l{10, 1'000'000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  ASSERT_TRUE(b.acquire(c, {3, 1}, t0));
  ASSERT_TRUE(b.acquire(c, {3, 1}, t0));
  ASSERT_TRUE(b.acquire(c, {3, 1}, t0));
  EXPECT_FALSE(b.acquire(c, {3, 1}, t0));  // 9 + 3 > 10
  EXPECT_TRUE(b.acquire(c, {1, 1}, t0));
  EXPECT_EQ(b.state(0, t0).requests_in_window, 10);
}

TEST(WeightedRoundRobinBalancer, TokensPerMinuteWindow) {
  DeploymentLimits l{1000, 1000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  ASSERT_TRUE(b.acquire(c, {1, 600}, t0));
  EXPECT_FALSE(b.acquire(c, {1, 500}, t0 + seconds(1)));
  EXPECT_TRUE(b.acquire(c, {1, 400}, t0 + seconds(2)));
  EXPECT_EQ(b.state(0, t0 + seconds(2)).tokens_in_window, 1000);
  EXPECT_EQ(b.next_eligible(c, {1, 500}, t0 + seconds(3)), t0 + seconds(60));
  EXPECT_TRUE(b.acquire(c, {1, 500}, t0 + seconds(60)));
}

TEST(WeightedRoundRobinBalancer, OversizeRequestIsSentAloneNotNever) {
  DeploymentLimits l{1000, 1000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  EXPECT_TRUE(b.acquire(c, {1, 5000}, t0));
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + seconds(59)));
}

TEST(WeightedRoundRobinBalancer, ReconcileReplacesEstimateWithUsage) {
  DeploymentLimits l{1000, 1000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  auto g = b.acquire(c, {1, 900}, t0);
  ASSERT_TRUE(g);
  EXPECT_FALSE(b.acquire(c, {1, 200}, t0));
  b.reconcile(*g, 100);
  EXPECT_EQ(b.state(0, t0).tokens_in_window, 100);
  EXPECT_TRUE(b.acquire(c, {1, 200}, t0));
  b.reconcile(*g, 0);  // "unknown" usage is ignored
  EXPECT_EQ(b.state(0, t0).tokens_in_window, 300);
  // Once the charge has left the window, reconciling it changes nothing.
  (void)b.state(0, t0 + seconds(61));
  b.reconcile(*g, 10'000);
  EXPECT_EQ(b.state(0, t0 + seconds(61)).tokens_in_window, 0);
}

TEST(WeightedRoundRobinBalancer, PacesToOneSecondAndTenSecondWindows) {
  DeploymentLimits l{600, 10'000'000, seconds(60), 1, true};  // 10/s, 100/10s
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  int granted = 0;
  for (int i = 0; i < 50; ++i) granted += b.acquire(c, {1, 1}, t0 + milliseconds(i)).has_value();
  EXPECT_EQ(granted, 10);
  EXPECT_EQ(b.next_eligible(c, {1, 1}, t0 + milliseconds(100)), t0 + seconds(1));
  // Over any 10 s no more than 100; over the minute no more than 600.
  int total = granted;
  for (int ms = 1000; ms < 60'000; ms += 10)
    total += b.acquire(c, {1, 1}, t0 + milliseconds(ms)).has_value();
  EXPECT_EQ(total, 600);
}

TEST(WeightedRoundRobinBalancer, SmallRpmStillGetsOnePerSecond) {
  DeploymentLimits l{30, 1'000'000, seconds(60), 1, true};  // 1/s (floor 0.5 -> 1), 5/10s
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  int granted = 0;
  for (int ms = 0; ms < 10'000; ms += 100)
    granted += b.acquire(c, {1, 1}, t0 + milliseconds(ms)).has_value();
  EXPECT_EQ(granted, 5);
}

TEST(WeightedRoundRobinBalancer, BackoffSkipsOnlyTheFailedDeployment) {
  WeightedRoundRobinBalancer b({big(1), big(1)});
  const std::vector<std::size_t> both{0, 1};
  b.report_failure(0, t0, std::nullopt, false);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.acquire(both, {1, 1}, t0 + seconds(i))->deployment, 1u);
  EXPECT_TRUE(b.state(0, t0).backoff_until.has_value());
  EXPECT_FALSE(b.state(1, t0).backoff_until.has_value());
  const std::vector<std::size_t> only0{0};
  EXPECT_FALSE(b.acquire(only0, {1, 1}, t0 + seconds(59)));
  EXPECT_EQ(b.next_eligible(only0, {1, 1}, t0 + seconds(59)), t0 + seconds(60));
  EXPECT_TRUE(b.acquire(only0, {1, 1}, t0 + seconds(60)));
}

TEST(WeightedRoundRobinBalancer, RetryAfterOverridesErrorBackoff) {
  WeightedRoundRobinBalancer b({big(1)});
  const std::vector<std::size_t> c{0};
  b.report_failure(0, t0, milliseconds(1500), true);
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + milliseconds(1499)));
  EXPECT_TRUE(b.acquire(c, {1, 1}, t0 + milliseconds(1500)));
  EXPECT_EQ(b.state(0, t0).throttled, 1u);
  EXPECT_EQ(b.state(0, t0).failures, 1u);
}

TEST(WeightedRoundRobinBalancer, HoldPausesWithoutCountingFailure) {
  WeightedRoundRobinBalancer b({big(1), big(1)});
  const std::vector<std::size_t> both{0, 1};
  b.hold(1, t0 + seconds(2));
  EXPECT_EQ(b.acquire(both, {1, 1}, t0)->deployment, 0u);
  EXPECT_EQ(b.acquire(both, {1, 1}, t0 + seconds(1))->deployment, 0u);
  EXPECT_EQ(b.state(1, t0).failures, 0u);
  EXPECT_EQ(b.next_eligible(std::vector<std::size_t>{1}, {1, 1}, t0), t0 + seconds(2));
}

TEST(WeightedRoundRobinBalancer, WindowMarginKeepsChargesLonger) {
  DeploymentLimits l{60, 1'000'000, seconds(60), 1, true, milliseconds(50)};  // 1 per 1 s
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  ASSERT_TRUE(b.acquire(c, {1, 1}, t0));
  EXPECT_FALSE(b.acquire(c, {1, 1}, t0 + seconds(1)));  // exact window would admit here
  EXPECT_EQ(b.next_eligible(c, {1, 1}, t0 + seconds(1)), t0 + milliseconds(1050));
  EXPECT_TRUE(b.acquire(c, {1, 1}, t0 + milliseconds(1050)));
}

TEST(WeightedRoundRobinBalancer, RefundGivesAGrantBack) {
  DeploymentLimits l{2, 1000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  auto g1 = b.acquire(c, {1, 400}, t0);
  auto g2 = b.acquire(c, {1, 400}, t0);
  ASSERT_TRUE(g1 && g2);
  EXPECT_FALSE(b.acquire(c, {1, 100}, t0));
  b.refund(*g2);
  EXPECT_EQ(b.state(0, t0).requests_in_window, 1);
  EXPECT_EQ(b.state(0, t0).tokens_in_window, 400);
  EXPECT_TRUE(b.acquire(c, {1, 100}, t0));
}

TEST(WeightedRoundRobinBalancer, PickDoesNotChargeUntilCommit) {
  DeploymentLimits l{1, 1000, seconds(60), 1, false};
  WeightedRoundRobinBalancer b({l});
  const std::vector<std::size_t> c{0};
  ASSERT_TRUE(b.pick(c, {1, 1}, t0));
  ASSERT_TRUE(b.pick(c, {1, 1}, t0));  // nothing was charged
  auto sel = b.pick(c, {1, 1}, t0);
  b.commit(c, *sel, {1, 1}, t0);
  EXPECT_FALSE(b.pick(c, {1, 1}, t0));
}

TEST(WeightedRoundRobinBalancer, NextEligibleIsMaxForNoCandidates) {
  WeightedRoundRobinBalancer b({big(1)});
  EXPECT_EQ(b.next_eligible({}, {1, 1}, t0), Clock::time_point::max());
  const std::vector<std::size_t> c{0};
  EXPECT_EQ(b.next_eligible(c, {1, 1}, t0), t0);
}

TEST(WeightedRoundRobinBalancer, RejectsNonPositiveLimits) {
  EXPECT_THROW(WeightedRoundRobinBalancer({DeploymentLimits{0, 1, seconds(1), 1, true}}),
               std::invalid_argument);
  EXPECT_THROW(WeightedRoundRobinBalancer({DeploymentLimits{1, 1, seconds(1), 0, true}}),
               std::invalid_argument);
}

}  // namespace

namespace {
using llmq::DeploymentGrant;

// --- Priority groups and spillover. ---

DeploymentLimits limited(std::int64_t rpm, std::int64_t priority, std::int64_t weight = 1) {
  DeploymentLimits l{rpm, 1'000'000, seconds(60), weight, false};
  l.priority = priority;
  return l;
}

TEST(WeightedRoundRobinBalancer, SpillsToTheNextGroupOnlyWhenTheBestHasNoRoom) {
  // Two provisioned deployments (priority 0, 2 requests a minute each) and one
  // pay-as-you-go (priority 1).
  WeightedRoundRobinBalancer b({limited(2, 0), limited(2, 0), limited(1000, 1)});
  const std::vector<std::size_t> all{2, 0, 1};
  std::vector<std::size_t> chosen;
  for (int i = 0; i < 4; ++i) {
    auto g = b.acquire(all, {1, 1}, t0 + seconds(i));
    ASSERT_TRUE(g);
    EXPECT_FALSE(g->spilled);
    chosen.push_back(g->deployment);
  }
  EXPECT_EQ(chosen, (std::vector<std::size_t>{0, 1, 0, 1}));
  for (int i = 4; i < 7; ++i) {
    auto g = b.acquire(all, {1, 1}, t0 + seconds(i));
    ASSERT_TRUE(g);
    EXPECT_EQ(g->deployment, 2u);
    EXPECT_TRUE(g->spilled);
  }
  EXPECT_EQ(b.state(2, t0 + seconds(7)).spilled, 3u);
  EXPECT_EQ(b.state(0, t0 + seconds(7)).spilled, 0u);
  // The first provisioned charge leaves its window at 60 s: back to the best group.
  auto g = b.acquire(all, {1, 1}, t0 + seconds(60));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 0u);
  EXPECT_FALSE(g->spilled);
  g = b.acquire(all, {1, 1}, t0 + seconds(61));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 1u);
}

TEST(WeightedRoundRobinBalancer, BackoffOfTheBestGroupSpillsUntilItEnds) {
  DeploymentLimits overflow = big(1);
  overflow.priority = 3;
  WeightedRoundRobinBalancer b({big(1), overflow});
  const std::vector<std::size_t> both{0, 1};
  const auto set = b.candidate_set(both);
  EXPECT_EQ(b.acquire(set, {1, 1}, t0)->deployment, 0u);
  b.report_failure(0, t0, seconds(5), true);
  auto g = b.acquire(set, {1, 1}, t0 + seconds(1));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 1u);
  EXPECT_TRUE(g->spilled);
  EXPECT_EQ(b.acquire(set, {1, 1}, t0 + seconds(5) - milliseconds(1))->deployment, 1u);
  g = b.acquire(set, {1, 1}, t0 + seconds(5));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 0u);
  EXPECT_FALSE(g->spilled);
}

TEST(WeightedRoundRobinBalancer, ARequestTooLargeForTheBestGroupSpillsAlone) {
  DeploymentLimits small{1000, 1000, seconds(60), 1, false};
  DeploymentLimits large{1000, 100'000, seconds(60), 1, false};
  large.priority = 1;
  WeightedRoundRobinBalancer b({small, large});
  const std::vector<std::size_t> both{0, 1};
  ASSERT_EQ(b.acquire(both, {1, 900}, t0)->deployment, 0u);
  auto g = b.acquire(both, {1, 500}, t0);  // 900 + 500 > 1000
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 1u);
  EXPECT_TRUE(g->spilled);
  g = b.acquire(both, {1, 100}, t0);  // still fits the best group
  ASSERT_TRUE(g);
  EXPECT_EQ(g->deployment, 0u);
  EXPECT_FALSE(g->spilled);
}

TEST(WeightedRoundRobinBalancer, WeightsApplyWithinTheServingGroup) {
  DeploymentLimits a = big(3);
  DeploymentLimits c = big(1);
  DeploymentLimits spare = big(100);
  spare.priority = 1;
  WeightedRoundRobinBalancer b({a, c, spare});
  const std::vector<std::size_t> all{0, 1, 2};
  std::array<int, 3> counts{};
  for (int i = 0; i < 4000; ++i) ++counts[b.acquire(all, {1, 1}, t0 + milliseconds(i))->deployment];
  EXPECT_EQ(counts[0], 3000);
  EXPECT_EQ(counts[1], 1000);
  EXPECT_EQ(counts[2], 0);
}

TEST(WeightedRoundRobinBalancer, RegisteredSetsAndSpansAgree) {
  WeightedRoundRobinBalancer b1({big(5), big(1), big(1)});
  WeightedRoundRobinBalancer b2({big(5), big(1), big(1)});
  const std::vector<std::size_t> all{0, 1, 2};
  const auto set = b2.candidate_set(all);
  EXPECT_EQ(b2.candidate_set(all).id, set.id);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(b1.acquire(all, {1, 1}, t0)->deployment, b2.acquire(set, {1, 1}, t0)->deployment);
}

TEST(WeightedRoundRobinBalancer, CandidateOutOfRangeThrows) {
  WeightedRoundRobinBalancer b({big(1)});
  const std::vector<std::size_t> bad{3};
  EXPECT_THROW((void)b.pick(bad, {1, 1}, t0), std::out_of_range);
  EXPECT_THROW((void)b.pick(WeightedRoundRobinBalancer::CandidateSet{7}, {1, 1}, t0),
               std::invalid_argument);
}

TEST(WeightedRoundRobinBalancer, ManyDistinctSpansAreCachedWithinABound) {
  std::vector<DeploymentLimits> limits(20, big(1));
  WeightedRoundRobinBalancer b(limits);
  // Every pair of deployments, as a separate span: more than the cache keeps.
  int picks = 0;
  for (std::size_t i = 0; i < 20; ++i)
    for (std::size_t j = 0; j < 20; ++j) {
      if (i == j) continue;
      const std::vector<std::size_t> pair{i, j};
      auto g = b.acquire(pair, {1, 1}, t0);
      ASSERT_TRUE(g);
      EXPECT_TRUE(g->deployment == i || g->deployment == j);
      ++picks;
    }
  EXPECT_EQ(picks, 380);
}

// --- The balancer against a direct model of its rules, over random operations. ---

// Direct model: every decision recomputed from the full charge history.
class ModelBalancer {
 public:
  explicit ModelBalancer(std::vector<DeploymentLimits> limits) : limits_(std::move(limits)) {
    backoff_until_.assign(limits_.size(), Clock::time_point{});
    charges_.resize(limits_.size());
  }

  bool eligible(std::size_t d, DeploymentNeed need, Clock::time_point now) const {
    if (now < backoff_until_[d]) return false;
    const DeploymentLimits& l = limits_[d];
    struct W {
      Clock::duration len;
      std::int64_t limit;
    };
    std::vector<W> windows{{seconds(60), l.req_per_min}};
    if (l.pace_short_windows) {
      windows.push_back({seconds(10), std::max<std::int64_t>(1, l.req_per_min / 6)});
      windows.push_back({seconds(1), std::max<std::int64_t>(1, l.req_per_min / 60)});
    }
    for (std::size_t wi = 0; wi < windows.size(); ++wi) {
      std::int64_t calls = 0;
      std::int64_t tokens = 0;
      for (const Charge& c : charges_[d]) {
        if (c.at > now - windows[wi].len) {
          calls += c.calls;
          tokens += c.tokens;
        }
      }
      if (calls != 0 && calls + need.calls > windows[wi].limit) return false;
      if (wi == 0 && tokens != 0 && tokens + need.tokens > l.tokens_per_min) return false;
    }
    return true;
  }

  std::optional<std::pair<std::size_t, bool>> acquire(const std::vector<std::size_t>& cands,
                                                      DeploymentNeed need, Clock::time_point now,
                                                      std::vector<std::int64_t>& current) {
    std::vector<std::int64_t> prios;
    for (std::size_t d : cands) prios.push_back(limits_[d].priority);
    std::sort(prios.begin(), prios.end());
    prios.erase(std::unique(prios.begin(), prios.end()), prios.end());
    for (std::size_t gi = 0; gi < prios.size(); ++gi) {
      std::int64_t total = 0;
      std::optional<std::size_t> best;
      std::vector<std::size_t> eligible_members;
      for (std::size_t i = 0; i < cands.size(); ++i) {
        const std::size_t d = cands[i];
        if (limits_[d].priority != prios[gi] || !eligible(d, need, now)) continue;
        eligible_members.push_back(i);
        total += limits_[d].weight;
        if (!best || current[i] + limits_[d].weight > current[*best] + limits_[cands[*best]].weight)
          best = i;
      }
      if (!best) continue;
      for (std::size_t i : eligible_members) current[i] += limits_[cands[i]].weight;
      current[*best] -= total;
      charges_[cands[*best]].push_back(Charge{now, need.calls, need.tokens});
      return std::make_pair(cands[*best], gi > 0);
    }
    return std::nullopt;
  }

  void fail(std::size_t d, Clock::time_point until) {
    backoff_until_[d] = std::max(backoff_until_[d], until);
  }
  void refund(std::size_t d, std::size_t index) {
    charges_[d][index].calls = charges_[d][index].tokens = 0;
  }
  void reconcile(std::size_t d, std::size_t index, std::int64_t tokens) {
    charges_[d][index].tokens = tokens;
  }
  std::size_t charge_count(std::size_t d) const { return charges_[d].size(); }

 private:
  struct Charge {
    Clock::time_point at;
    std::int64_t calls;
    std::int64_t tokens;
  };
  std::vector<DeploymentLimits> limits_;
  std::vector<Clock::time_point> backoff_until_;
  std::vector<std::vector<Charge>> charges_;
};

TEST(WeightedRoundRobinBalancer, MatchesTheDirectModelOverRandomOperations) {
  std::uint64_t x = 0x5eed;
  auto rnd = [&](std::uint64_t n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (x >> 33) % n;
  };
  for (int round = 0; round < 40; ++round) {
    std::vector<DeploymentLimits> limits;
    const std::size_t n = 2 + rnd(round < 20 ? 9 : 40);
    for (std::size_t i = 0; i < n; ++i) {
      DeploymentLimits l{
          static_cast<std::int64_t>(5 + rnd(120)), static_cast<std::int64_t>(500 + rnd(5000)),
          seconds(60), static_cast<std::int64_t>(1 + rnd(round % 2 == 0 ? 6 : 1000)), rnd(2) == 0};
      l.priority = static_cast<std::int64_t>(rnd(3));
      limits.push_back(l);
    }
    WeightedRoundRobinBalancer b(limits);
    ModelBalancer model(limits);
    // Three overlapping candidate lists, each with its own round-robin state.
    std::vector<std::vector<std::size_t>> sets;
    for (int s = 0; s < 3; ++s) {
      std::vector<std::size_t> c;
      for (std::size_t d = 0; d < n; ++d)
        if (rnd(3) != 0) c.push_back(d);
      if (c.empty()) c.push_back(rnd(n));
      std::reverse(c.begin(), c.end());
      sets.push_back(c);
    }
    // Equal lists are one candidate set (one round-robin state).
    std::map<std::vector<std::size_t>, std::vector<std::int64_t>> current;
    for (const auto& c : sets) current.emplace(c, std::vector<std::int64_t>(c.size(), 0));
    std::vector<DeploymentGrant> grants;
    std::vector<std::size_t> grant_index;  // charge index in the model
    Clock::time_point now = t0;
    for (int op = 0; op < 1500; ++op) {
      now += milliseconds(rnd(4) == 0 ? rnd(20'000) : rnd(400));
      const std::uint64_t kind = rnd(20);
      if (kind == 0) {
        const std::size_t d = rnd(n);
        const auto wait = milliseconds(rnd(8000));
        b.report_failure(d, now, wait, false);
        model.fail(d, now + wait);
      } else if (kind == 1) {
        const std::size_t d = rnd(n);
        const auto until = now + milliseconds(rnd(5000));
        b.hold(d, until);
        model.fail(d, until);
      } else if (kind == 2 && !grants.empty()) {
        const std::size_t i = rnd(grants.size());
        b.refund(grants[i]);
        model.refund(grants[i].deployment, grant_index[i]);
      } else if (kind == 3 && !grants.empty()) {
        const std::size_t i = rnd(grants.size());
        const auto tokens = static_cast<std::int64_t>(1 + rnd(900));
        b.reconcile(grants[i], tokens);
        model.reconcile(grants[i].deployment, grant_index[i], tokens);
      } else {
        const std::size_t s = rnd(sets.size());
        const DeploymentNeed need{static_cast<std::int64_t>(1 + rnd(3) / 2),
                                  static_cast<std::int64_t>(rnd(700))};
        const auto peek = b.pick(sets[s], need, now);
        const auto again = b.pick(sets[s], need, now);  // a pick alone changes nothing
        ASSERT_EQ(peek.has_value(), again.has_value());
        if (peek) {
          ASSERT_EQ(peek->deployment, again->deployment);
        }
        const auto expected = model.acquire(sets[s], need, now, current[sets[s]]);
        const auto got = b.acquire(sets[s], need, now);
        ASSERT_EQ(got.has_value(), expected.has_value()) << "round " << round << " op " << op;
        if (!got) {
          const auto at = b.next_eligible(sets[s], need, now);
          EXPECT_GT(at, now);
          continue;
        }
        ASSERT_EQ(got->deployment, expected->first) << "round " << round << " op " << op;
        ASSERT_EQ(got->spilled, expected->second);
        grants.push_back(*got);
        grant_index.push_back(model.charge_count(got->deployment) - 1);
        if (grants.size() > 64) {
          grants.erase(grants.begin());
          grant_index.erase(grant_index.begin());
        }
      }
    }
  }
}

}  // namespace
