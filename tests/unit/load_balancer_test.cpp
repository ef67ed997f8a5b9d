#include <llmq/load_balancer.hpp>

#include <gtest/gtest.h>

#include <array>
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
