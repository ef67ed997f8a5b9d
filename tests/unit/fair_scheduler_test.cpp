// FairScheduler: deficit round-robin across users by weight, FIFO within a user.
#include <llmq/fair_scheduler.hpp>

#include <gtest/gtest.h>

#include "scheduler_test_support.hpp"

#include <map>
#include <string>
#include <vector>

namespace {
using llmq::FairScheduler;
using llmq::Priority;
using llmq::QueuedRequest;
using llmq::SchedulerOptions;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);
const Clock::time_point far = t0 + std::chrono::hours(1);

struct Item {
  std::string user;
  int n = 0;
};

QueuedRequest req(std::string_view user, std::uint32_t weight = 1, std::uint32_t cls = 0,
                  Priority p = Priority::normal) {
  return llmq::test::queued(cls, far, t0, p, user, weight);
}

std::vector<Item> take(FairScheduler<Item>& s, std::size_t n) {
  std::vector<Item> out;
  s.dispatch(
      [&](std::uint32_t, Item& i) {
        out.push_back(std::move(i));
        return true;
      },
      n);
  return out;
}

TEST(FairScheduler, SharesFollowWeightsUnderContention) {
  FairScheduler<Item> s(SchedulerOptions{100'000});
  const std::map<std::string, std::uint32_t> weights{{"a", 1}, {"b", 2}, {"c", 5}};
  // Everyone has far more queued than is dispatched: the queue is contended throughout.
  for (int i = 0; i < 20'000; ++i)
    for (const auto& [user, w] : weights) ASSERT_TRUE(s.push(req(user, w), Item{user, i}));
  std::map<std::string, int> served;
  const int n = 8'000;
  for (const Item& i : take(s, n)) ++served[i.user];
  for (const auto& [user, w] : weights) {
    const double share = served[user] / double(n);
    const double expected = w / 8.0;
    EXPECT_NEAR(share, expected, 0.05 * expected) << user;
  }
}

TEST(FairScheduler, HeavyUserDoesNotDelayALightOne) {
  FairScheduler<Item> s(SchedulerOptions{10'000});
  for (int i = 0; i < 1000; ++i) s.push(req("heavy"), Item{"heavy", i});
  take(s, 1);
  s.push(req("light"), Item{"light", 0});
  // One round: heavy's turn ends, light's comes.
  const auto next = take(s, 2);
  ASSERT_EQ(next.size(), 2u);
  EXPECT_TRUE(next[0].user == "light" || next[1].user == "light");
}

TEST(FairScheduler, FifoWithinEachUser) {
  FairScheduler<Item> s(SchedulerOptions{10'000});
  for (int i = 0; i < 300; ++i) {
    const std::string user = "u" + std::to_string(i % 7);
    s.push(req(user, 1 + static_cast<std::uint32_t>(i % 3)), Item{user, i});
  }
  std::map<std::string, int> last;
  for (const Item& i : take(s, 300)) {
    auto [it, first] = last.emplace(i.user, i.n);
    if (!first) {
      EXPECT_GT(i.n, it->second) << i.user;
      it->second = i.n;
    }
  }
  EXPECT_TRUE(s.empty());
}

TEST(FairScheduler, RoundRobinOrderAtEqualWeights) {
  FairScheduler<Item> s(SchedulerOptions{100});
  for (int i = 0; i < 3; ++i) s.push(req("a"), Item{"a", i});
  for (int i = 0; i < 3; ++i) s.push(req("b"), Item{"b", i});
  s.push(req("c"), Item{"c", 0});
  std::string order;
  for (const Item& i : take(s, 7)) order += i.user;
  EXPECT_EQ(order, "abcabab");
}

TEST(FairScheduler, WeightGivesConsecutiveTurns) {
  FairScheduler<Item> s(SchedulerOptions{100});
  for (int i = 0; i < 6; ++i) s.push(req("a", 3), Item{"a", i});
  for (int i = 0; i < 6; ++i) s.push(req("b", 1), Item{"b", i});
  std::string order;
  for (const Item& i : take(s, 8)) order += i.user;
  EXPECT_EQ(order, "aaabaaab");
}

TEST(FairScheduler, ReturningUserStartsAtTheBackWithoutSavedTurns) {
  FairScheduler<Item> s(SchedulerOptions{100});
  s.push(req("a", 3), Item{"a", 0});
  for (int i = 0; i < 4; ++i) s.push(req("b", 1), Item{"b", i});
  std::string order;
  for (const Item& i : take(s, 2)) order += i.user;  // a empties with two turns unused
  // a comes back behind b's turn in progress, with its weight's worth of turns only.
  for (int i = 1; i < 6; ++i) s.push(req("a", 3), Item{"a", i});
  for (const Item& i : take(s, 8)) order += i.user;
  EXPECT_EQ(order,
            "ab"
            "baaabaab");
}

TEST(FairScheduler, CancelAndExpireKeepTheRoundConsistent) {
  FairScheduler<Item> s(SchedulerOptions{100});
  auto a0 = s.push(req("a"), Item{"a", 0});
  s.push(req("b"), Item{"b", 0});
  auto c0 = s.push(req("c"), Item{"c", 0});
  s.push(req("a"), Item{"a", 1});
  ASSERT_TRUE(a0 && c0);
  EXPECT_EQ(s.cancel(*a0.ticket)->n, 0);
  EXPECT_EQ(s.cancel(*c0.ticket)->user, "c");
  EXPECT_FALSE(s.cancel(*c0.ticket).has_value());
  std::string order;
  for (const Item& i : take(s, 10)) order += i.user + std::to_string(i.n);
  EXPECT_EQ(order, "a1b0");
  EXPECT_EQ(s.queued_for("a"), 0u);
}

TEST(FairScheduler, BlockedClassDoesNotStopOtherClassesUsers) {
  FairScheduler<Item> s(SchedulerOptions{100});
  s.push(req("a", 1, 0), Item{"a", 0});
  s.push(req("b", 1, 1), Item{"b", 0});
  s.push(req("a", 1, 1), Item{"a", 1});
  std::vector<std::string> got;
  s.dispatch([&](std::uint32_t cls, Item& i) {
    if (cls == 0) return false;
    got.push_back(i.user);
    return true;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(s.size(), 1u);
}

TEST(FairScheduler, AheadOfFollowsTheRound) {
  FairScheduler<Item> s(SchedulerOptions{100});
  for (int i = 0; i < 10; ++i) s.push(req("a"), Item{"a", i});
  for (int i = 0; i < 10; ++i) s.push(req("b"), Item{"b", i});
  // A newcomer at weight 1 waits for about one of each other user's requests.
  EXPECT_EQ(s.ahead_of(req("c")), 2u);
  // a's next request comes after its 10 and about 11 of b's (capped at b's 10).
  EXPECT_EQ(s.ahead_of(req("a")), 20u);
  // At weight 5 b's next request comes in its third turn: b's 10, and one of a's in each
  // of the three rounds.
  EXPECT_EQ(s.ahead_of(req("b", 5)), 10u + 3u);
}

TEST(FairScheduler, DrainInArrivalOrder) {
  FairScheduler<Item> s(SchedulerOptions{100});
  s.push(req("b"), Item{"b", 0});
  s.push(req("a", 1, 2), Item{"a", 1});
  s.push_front(req("c"), Item{"c", 2});
  std::vector<int> order;
  s.drain([&](Item&& i) { order.push_back(i.n); });
  EXPECT_EQ(order, (std::vector<int>{2, 0, 1}));
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.queued_for("a"), 0u);
  EXPECT_TRUE(s.push(req("a"), Item{"a", 3}));
  EXPECT_EQ(take(s, 5).size(), 1u);
}

}  // namespace
