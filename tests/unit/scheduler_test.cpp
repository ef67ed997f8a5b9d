// Behaviour both schedulers share (FifoScheduler and FairScheduler behind Scheduler<Item>):
// resource classes, bounds, cancellation, deadlines, priorities and aging.
#include <llmq/fair_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>

#include <gtest/gtest.h>

#include "scheduler_test_support.hpp"

#include <set>
#include <string>
#include <vector>

namespace {
using llmq::Priority;
using llmq::QueuedRequest;
using llmq::Scheduler;
using llmq::SchedulerOptions;
using llmq::SchedulerRefusal;
using llmq::test::queued;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

template <class S>
struct Schedulers : ::testing::Test {
  static S make(std::size_t max_size) { return S(SchedulerOptions{max_size}); }
  static S make(SchedulerOptions o) { return S(o); }
};
using Both = ::testing::Types<llmq::FifoScheduler<int>, llmq::FairScheduler<int>>;
TYPED_TEST_SUITE(Schedulers, Both);

std::vector<int> dispatch_all(Scheduler<int>& s, const std::set<std::uint32_t>& open_classes) {
  std::vector<int> out;
  s.dispatch([&](std::uint32_t cls, int& item) {
    if (!open_classes.count(cls)) return false;
    out.push_back(item);
    return true;
  });
  return out;
}

TYPED_TEST(Schedulers, DispatchesInArrivalOrderAcrossClasses) {
  auto s = TestFixture::make(10);
  ASSERT_TRUE(s.push(0, 1, t0 + seconds(10)));
  ASSERT_TRUE(s.push(1, 2, t0 + seconds(10)));
  ASSERT_TRUE(s.push(0, 3, t0 + seconds(10)));
  ASSERT_TRUE(s.push(2, 4, t0 + seconds(10)));
  EXPECT_EQ(s.size(), 4u);
  EXPECT_EQ(dispatch_all(s, {0, 1, 2}), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_TRUE(s.empty());
}

TYPED_TEST(Schedulers, DispatchStopsAtTheLimitAndResumesInOrder) {
  auto s = TestFixture::make(10);
  for (int i = 1; i <= 5; ++i)
    ASSERT_TRUE(s.push(static_cast<std::uint32_t>(i % 2), i, t0 + seconds(10)));
  std::vector<int> out;
  auto take = [&](std::uint32_t, int& item) {
    out.push_back(item);
    return true;
  };
  EXPECT_EQ(s.dispatch(take, 2), 2u);
  EXPECT_EQ(out, (std::vector<int>{1, 2}));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.dispatch(take, 2), 2u);
  EXPECT_EQ(s.dispatch(take, 2), 1u);
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.dispatch(take, 2), 0u);
}

TYPED_TEST(Schedulers, BlockedClassDoesNotBlockOthers) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(10));  // pinned to a busy model
  s.push(1, 2, t0 + seconds(10));
  s.push(0, 3, t0 + seconds(10));
  s.push(1, 4, t0 + seconds(10));
  EXPECT_EQ(dispatch_all(s, {1}), (std::vector<int>{2, 4}));
  EXPECT_EQ(s.size(), 2u);
  // FIFO within the blocked class is kept once it opens.
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{1, 3}));
}

TYPED_TEST(Schedulers, HeadBlocksItsOwnClass) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(10));
  s.push(0, 2, t0 + seconds(10));
  std::vector<int> offered;
  s.dispatch([&](std::uint32_t, int& item) {
    offered.push_back(item);
    return false;
  });
  EXPECT_EQ(offered, std::vector<int>{1});  // the second is never offered past the head
}

TYPED_TEST(Schedulers, RejectsWhenFull) {
  auto s = TestFixture::make(2);
  EXPECT_TRUE(s.push(0, 1, t0));
  EXPECT_TRUE(s.push(1, 2, t0));
  EXPECT_FALSE(s.push(0, 3, t0));
  EXPECT_EQ(s.size(), 2u);
  dispatch_all(s, {0});
  EXPECT_TRUE(s.push(0, 3, t0));
}

TYPED_TEST(Schedulers, ExpiresAtDeadlineAndReportsNextDeadline) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(5));
  s.push(1, 2, t0 + seconds(7));
  s.push(0, 3, t0 + seconds(9));
  EXPECT_EQ(s.next_deadline(), t0 + seconds(5));
  std::vector<int> expired;
  auto collect = [&](int&& i) { expired.push_back(i); };
  EXPECT_EQ(s.expire(t0 + seconds(4), collect), 0u);
  EXPECT_EQ(s.expire(t0 + seconds(5), collect), 1u);  // deadline itself expires
  EXPECT_EQ(expired, std::vector<int>{1});
  EXPECT_EQ(s.next_deadline(), t0 + seconds(7));
  s.expire(t0 + seconds(100), collect);
  EXPECT_EQ(expired, (std::vector<int>{1, 2, 3}));  // earliest deadline first, across classes
  EXPECT_TRUE(s.empty());
  EXPECT_FALSE(s.next_deadline().has_value());
}

TYPED_TEST(Schedulers, CancelRemovesFromTheMiddle) {
  auto s = TestFixture::make(10);
  auto a = s.push(0, 1, t0 + seconds(5));
  auto b = s.push(0, 2, t0 + seconds(6));
  auto c = s.push(0, 3, t0 + seconds(7));
  ASSERT_TRUE(a && b && c);
  auto got = s.cancel(*b);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, 2);
  EXPECT_FALSE(s.cancel(*b).has_value());  // only once
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{1, 3}));
  EXPECT_FALSE(s.cancel(*a).has_value());  // already dispatched
}

TYPED_TEST(Schedulers, CancelledHeadDoesNotHideDeadline) {
  auto s = TestFixture::make(10);
  auto a = s.push(0, 1, t0 + seconds(1));
  s.push(0, 2, t0 + seconds(3));
  s.cancel(*a);
  EXPECT_EQ(s.next_deadline(), t0 + seconds(3));
}

TYPED_TEST(Schedulers, ManyCancellationsCompact) {
  auto s = TestFixture::make(1000);
  std::vector<llmq::SchedulerTicket> tickets;
  for (int i = 0; i < 200; ++i) tickets.push_back(*s.push(0, i, t0 + seconds(10)));
  for (int i = 1; i < 199; ++i) s.cancel(tickets[static_cast<std::size_t>(i)]);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{0, 199}));
}

TYPED_TEST(Schedulers, PushFrontGoesAheadOfEverythingAndIgnoresBound) {
  auto s = TestFixture::make(2);
  s.push(0, 1, t0 + seconds(10));
  s.push(1, 2, t0 + seconds(10));
  auto t = s.push_front(1, 9, t0 + seconds(10));
  EXPECT_EQ(s.size(), 3u);
  s.push_front(0, 8, t0 + seconds(10));  // the newest retry goes first
  EXPECT_EQ(dispatch_all(s, {0, 1}), (std::vector<int>{8, 9, 1, 2}));
  EXPECT_FALSE(s.cancel(t).has_value());
}

TYPED_TEST(Schedulers, CancelFindsFrontPushedItems) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(10));
  auto t = s.push_front(0, 2, t0 + seconds(10));
  EXPECT_EQ(s.cancel(t), std::optional<int>(2));
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{1}));
}

TYPED_TEST(Schedulers, DrainReturnsEverythingInArrivalOrder) {
  auto s = TestFixture::make(10);
  s.push(1, 1, t0);
  s.push(0, 2, t0);
  auto c = s.push(1, 3, t0);
  s.push(0, 4, t0);
  s.cancel(*c);
  std::vector<int> out;
  s.drain([&](int&& i) { out.push_back(i); });
  EXPECT_EQ(out, (std::vector<int>{1, 2, 4}));
  EXPECT_TRUE(s.empty());
}

TYPED_TEST(Schedulers, ForEachHeadVisitsLiveHeads) {
  auto s = TestFixture::make(10);
  auto a = s.push(0, 1, t0);
  s.push(0, 2, t0);
  s.push(3, 3, t0);
  s.cancel(*a);
  std::vector<std::pair<std::uint32_t, int>> heads;
  s.for_each_head([&](std::uint32_t cls, const int& i) { heads.emplace_back(cls, i); });
  EXPECT_EQ(heads, (std::vector<std::pair<std::uint32_t, int>>{{0, 2}, {3, 3}}));
}

// --- Deadlines are exact for every item, not only for class heads. ---

TYPED_TEST(Schedulers, RetriedItemWithALaterDeadlineDoesNotHideEarlierOnes) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(10));
  s.push(0, 2, t0 + seconds(11));
  // A retry goes to the front of its class with its own (later) deadline.
  s.push_front(0, 9, t0 + seconds(60));
  EXPECT_EQ(s.next_deadline(), t0 + seconds(10));
  std::vector<int> expired;
  auto collect = [&](int&& i) { expired.push_back(i); };
  EXPECT_EQ(s.expire(t0 + seconds(10), collect), 1u);
  EXPECT_EQ(expired, std::vector<int>{1});
  EXPECT_EQ(s.expire(t0 + seconds(11), collect), 1u);
  EXPECT_EQ(expired, (std::vector<int>{1, 2}));
  EXPECT_EQ(s.next_deadline(), t0 + seconds(60));
  EXPECT_EQ(s.size(), 1u);
}

TYPED_TEST(Schedulers, RetriedItemWithAnEarlierDeadlineExpiresFirst) {
  auto s = TestFixture::make(10);
  s.push(0, 1, t0 + seconds(30));
  s.push(1, 2, t0 + seconds(31));
  s.push_front(1, 8, t0 + seconds(5));  // retried: it was queued long ago
  s.push_front(0, 9, t0 + seconds(3));
  EXPECT_EQ(s.next_deadline(), t0 + seconds(3));
  std::vector<int> expired;
  auto collect = [&](int&& i) { expired.push_back(i); };
  s.expire(t0 + seconds(4), collect);
  EXPECT_EQ(expired, std::vector<int>{9});
  EXPECT_EQ(s.next_deadline(), t0 + seconds(5));
  s.expire(t0 + seconds(31), collect);
  EXPECT_EQ(expired, (std::vector<int>{9, 8, 1, 2}));
}

TYPED_TEST(Schedulers, DeadlinesAreExactAcrossPriorities) {
  auto s = TestFixture::make(10);
  // Each priority level has its own queue; deadlines interleave across them.
  ASSERT_TRUE(s.push(queued(0, t0 + seconds(9), t0, Priority::low), 1));
  ASSERT_TRUE(s.push(queued(0, t0 + seconds(4), t0, Priority::high), 2));
  ASSERT_TRUE(s.push(queued(0, t0 + seconds(7), t0, Priority::normal), 3));
  ASSERT_TRUE(s.push(queued(0, t0 + seconds(2), t0, Priority::low), 4));
  std::vector<int> expired;
  auto collect = [&](int&& i) { expired.push_back(i); };
  for (int sec = 0; sec <= 10; ++sec) s.expire(t0 + seconds(sec), collect);
  EXPECT_EQ(expired, (std::vector<int>{4, 2, 3, 1}));
}

// --- Priorities and aging. ---

std::vector<int> take_all(Scheduler<int>& s) { return dispatch_all(s, {0, 1, 2, 3}); }

TYPED_TEST(Schedulers, StrictPriorityWithinAndAcrossClasses) {
  auto s = TestFixture::make(10);
  const auto d = t0 + seconds(100);
  s.push(queued(0, d, t0, Priority::low), 1);
  s.push(queued(1, d, t0, Priority::normal), 2);
  s.push(queued(0, d, t0, Priority::high), 3);
  s.push(queued(1, d, t0, Priority::high), 4);
  s.push(queued(0, d, t0, Priority::normal), 5);
  EXPECT_EQ(take_all(s), (std::vector<int>{3, 4, 2, 5, 1}));
}

TYPED_TEST(Schedulers, BlockedHighClassLetsLowerPrioritiesElsewhereRun) {
  auto s = TestFixture::make(10);
  const auto d = t0 + seconds(100);
  s.push(queued(0, d, t0, Priority::high), 1);
  s.push(queued(1, d, t0, Priority::low), 2);
  EXPECT_EQ(dispatch_all(s, {1}), std::vector<int>{2});
}

TYPED_TEST(Schedulers, AgingMovesUpOneLevelPerPeriod) {
  SchedulerOptions o{10};
  o.priority_aging = seconds(30);
  auto s = TestFixture::make(o);
  const auto d = t0 + seconds(1000);
  s.push(queued(0, d, t0, Priority::low), 1);
  s.push(queued(0, d, t0 + seconds(1), Priority::normal), 2);
  s.advance(t0 + seconds(29));
  std::vector<int> heads;
  s.for_each_head([&](std::uint32_t, const int& i) { heads.push_back(i); });
  EXPECT_EQ(heads, std::vector<int>{2});
  // At 30 s the low request is normal and older than 2; at 31 s 2 becomes high.
  s.advance(t0 + seconds(30));
  heads.clear();
  s.for_each_head([&](std::uint32_t, const int& i) { heads.push_back(i); });
  EXPECT_EQ(heads, std::vector<int>{1});
  s.advance(t0 + seconds(31));
  heads.clear();
  s.for_each_head([&](std::uint32_t, const int& i) { heads.push_back(i); });
  EXPECT_EQ(heads, std::vector<int>{2});
  // At 60 s the low one reaches high too and, older, goes first.
  s.advance(t0 + seconds(60));
  EXPECT_EQ(take_all(s), (std::vector<int>{1, 2}));
}

TYPED_TEST(Schedulers, LowIsNeverStarvedByAStreamOfHighRequests) {
  // One dispatch per second, two high requests arriving per second (the backlog of high
  // requests only grows): the low request still leaves after twice the aging period.
  SchedulerOptions o{100'000};
  o.priority_aging = seconds(10);
  auto s = TestFixture::make(o);
  const auto d = t0 + std::chrono::hours(10);
  int next = 100;
  for (int i = 0; i < 5; ++i) s.push(queued(0, d, t0, Priority::high), next++);
  s.push(queued(0, d, t0, Priority::low), 1);
  int low_left_at = -1;
  for (int sec = 0; sec < 200 && low_left_at < 0; ++sec) {
    const auto now = t0 + seconds(sec);
    s.push(queued(0, d, now, Priority::high), next++);
    s.push(queued(0, d, now, Priority::high), next++);
    s.advance(now);
    s.dispatch(
        [&](std::uint32_t, int& item) {
          if (item == 1) low_left_at = sec;
          return true;
        },
        1);
  }
  // It reaches high at 2 x 10 s and, older than every high request still queued (the
  // five queued before it left in the first five seconds), leaves at once.
  EXPECT_EQ(low_left_at, 20);
}

TYPED_TEST(Schedulers, RetriedRequestKeepsItsAge) {
  SchedulerOptions o{10};
  o.priority_aging = seconds(30);
  auto s = TestFixture::make(o);
  const auto d = t0 + seconds(1000);
  s.push(queued(0, d, t0 + seconds(40), Priority::normal), 1);
  // Queued at t0 as low, retried at 40 s: it has aged one level (normal) and goes to the
  // front of that level.
  s.push_front(queued(0, d, t0, Priority::low), 9);
  s.push(queued(0, d, t0 + seconds(40), Priority::high), 2);
  s.advance(t0 + seconds(40));
  EXPECT_EQ(take_all(s), (std::vector<int>{2, 9, 1}));
}

// --- Per-user cap. ---

TYPED_TEST(Schedulers, MaxQueuedPerUserRefusesOnlyThatUser) {
  SchedulerOptions o{4};
  o.max_queued_per_user = 2;
  auto s = TestFixture::make(o);
  const auto d = t0 + seconds(100);
  ASSERT_TRUE(s.push(queued(0, d, t0, Priority::normal, "alice"), 1));
  ASSERT_TRUE(s.push(queued(0, d, t0, Priority::normal, "alice"), 2));
  const auto third = s.push(queued(0, d, t0, Priority::normal, "alice"), 3);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.refusal, SchedulerRefusal::user_queue_full);
  EXPECT_EQ(s.queued_for("alice"), 2u);
  ASSERT_TRUE(s.push(queued(0, d, t0, Priority::normal, "bob"), 4));
  ASSERT_TRUE(s.push(queued(0, d, t0, Priority::normal, "carol"), 5));
  const auto full = s.push(queued(0, d, t0, Priority::normal, "dave"), 6);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.refusal, SchedulerRefusal::queue_full);
  // A retry is not refused (the request was admitted once) and counts for the user.
  s.push_front(queued(0, d, t0, Priority::normal, "alice"), 7);
  EXPECT_EQ(s.queued_for("alice"), 3u);
  s.dispatch([](std::uint32_t, int&) { return true; });
  EXPECT_EQ(s.queued_for("alice"), 0u);
  EXPECT_TRUE(s.push(queued(0, d, t0, Priority::normal, "alice"), 8));
}

TYPED_TEST(Schedulers, ARequestCarriesItsTiersCap) {
  SchedulerOptions o{100};
  o.max_queued_per_user = 1;
  auto s = TestFixture::make(o);
  const auto d = t0 + seconds(100);
  auto vip = queued(0, d, t0, Priority::normal, "vip");
  vip.max_queued_for_user = 0;  // uncapped tier
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(s.push(vip, int{i}));
  auto batch = queued(0, d, t0, Priority::low, "etl");
  batch.max_queued_for_user = 2;
  ASSERT_TRUE(s.push(batch, 3));
  ASSERT_TRUE(s.push(batch, 4));
  EXPECT_EQ(s.push(batch, 5).refusal, SchedulerRefusal::user_queue_full);
  ASSERT_TRUE(s.push(queued(0, d, t0, Priority::normal, "plain"), 6));
  EXPECT_EQ(s.push(queued(0, d, t0, Priority::normal, "plain"), 7).refusal,
            SchedulerRefusal::user_queue_full);
}

TYPED_TEST(Schedulers, RefusedPushLeavesTheItemUntouched) {
  SchedulerOptions o{1};
  auto s = TestFixture::make(o);
  ASSERT_TRUE(s.push(queued(0, t0 + seconds(1), t0), 1));
  int item = 42;
  EXPECT_FALSE(s.push(queued(0, t0 + seconds(1), t0), std::move(item)));
  EXPECT_EQ(item, 42);
}

TYPED_TEST(Schedulers, ManyItemsExpireInDeadlineOrder) {
  // A pseudo-random mix of pushes, front pushes and priorities: every item expires
  // exactly at its deadline.
  auto s = TestFixture::make(100'000);
  std::vector<std::pair<Clock::time_point, int>> expected;
  std::uint64_t x = 12345;
  for (int i = 0; i < 2000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const auto deadline = t0 + milliseconds(static_cast<int>((x >> 33) % 100'000));
    const auto p = static_cast<Priority>((x >> 20) % 3);
    const auto cls = static_cast<std::uint32_t>((x >> 10) % 4);
    const std::string user = "u" + std::to_string((x >> 40) % 7);
    if ((x >> 5) % 5 == 0) {
      s.push_front(queued(cls, deadline, t0, p, user), int{i});
    } else {
      ASSERT_TRUE(s.push(queued(cls, deadline, t0, p, user), int{i}));
    }
    expected.emplace_back(deadline, i);
  }
  std::vector<std::pair<Clock::time_point, int>> got;
  for (int ms = 0; ms <= 101'000; ms += 997) {
    const auto now = t0 + milliseconds(ms);
    if (auto next = s.next_deadline()) {
      EXPECT_GT(*next, now - milliseconds(997));
    }
    s.expire(now, [&](int&& i) {
      got.emplace_back(expected[static_cast<std::size_t>(i)].first, i);
      EXPECT_LE(expected[static_cast<std::size_t>(i)].first, now);
      EXPECT_GT(expected[static_cast<std::size_t>(i)].first, now - milliseconds(997));
    });
  }
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; }));
  EXPECT_TRUE(s.empty());
}

TYPED_TEST(Schedulers, AheadOfCountsBetterAndEqualPriorities) {
  auto s = TestFixture::make(100);
  const auto d = t0 + seconds(100);
  for (int i = 0; i < 3; ++i) s.push(queued(0, d, t0, Priority::high, "a"), int{i});
  for (int i = 0; i < 4; ++i) s.push(queued(0, d, t0, Priority::normal, "a"), int{i});
  for (int i = 0; i < 5; ++i) s.push(queued(0, d, t0, Priority::low, "a"), int{i});
  s.push(queued(1, d, t0, Priority::high, "a"), 0);
  EXPECT_EQ(s.ahead_of(queued(0, d, t0, Priority::high, "a")), 3u);
  EXPECT_EQ(s.ahead_of(queued(0, d, t0, Priority::normal, "a")), 7u);
  EXPECT_EQ(s.ahead_of(queued(0, d, t0, Priority::low, "a")), 12u);
  EXPECT_EQ(s.ahead_of(queued(2, d, t0, Priority::low, "a")), 0u);
}

}  // namespace
