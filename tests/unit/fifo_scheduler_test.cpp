#include <llmq/fifo_scheduler.hpp>

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace {
using llmq::FifoScheduler;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

const Clock::time_point t0{};

std::vector<int> dispatch_all(FifoScheduler<int>& s, const std::set<std::uint32_t>& open_classes) {
  std::vector<int> out;
  s.dispatch([&](std::uint32_t cls, int& item) {
    if (!open_classes.count(cls)) return false;
    out.push_back(item);
    return true;
  });
  return out;
}

TEST(FifoScheduler, DispatchesInArrivalOrderAcrossClasses) {
  FifoScheduler<int> s(10);
  ASSERT_TRUE(s.push(0, 1, t0 + seconds(10)));
  ASSERT_TRUE(s.push(1, 2, t0 + seconds(10)));
  ASSERT_TRUE(s.push(0, 3, t0 + seconds(10)));
  ASSERT_TRUE(s.push(2, 4, t0 + seconds(10)));
  EXPECT_EQ(s.size(), 4u);
  EXPECT_EQ(dispatch_all(s, {0, 1, 2}), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_TRUE(s.empty());
}

TEST(FifoScheduler, DispatchStopsAtTheLimitAndResumesInOrder) {
  FifoScheduler<int> s(10);
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

TEST(FifoScheduler, BlockedClassDoesNotBlockOthers) {
  FifoScheduler<int> s(10);
  s.push(0, 1, t0 + seconds(10));  // pinned to a busy model
  s.push(1, 2, t0 + seconds(10));
  s.push(0, 3, t0 + seconds(10));
  s.push(1, 4, t0 + seconds(10));
  EXPECT_EQ(dispatch_all(s, {1}), (std::vector<int>{2, 4}));
  EXPECT_EQ(s.size(), 2u);
  // FIFO within the blocked class is kept once it opens.
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{1, 3}));
}

TEST(FifoScheduler, HeadBlocksItsOwnClass) {
  FifoScheduler<int> s(10);
  s.push(0, 1, t0 + seconds(10));
  s.push(0, 2, t0 + seconds(10));
  std::vector<int> offered;
  s.dispatch([&](std::uint32_t, int& item) {
    offered.push_back(item);
    return false;
  });
  EXPECT_EQ(offered, std::vector<int>{1});  // the second is never offered past the head
}

TEST(FifoScheduler, RejectsWhenFull) {
  FifoScheduler<int> s(2);
  EXPECT_TRUE(s.push(0, 1, t0));
  EXPECT_TRUE(s.push(1, 2, t0));
  EXPECT_FALSE(s.push(0, 3, t0));
  EXPECT_EQ(s.size(), 2u);
  dispatch_all(s, {0});
  EXPECT_TRUE(s.push(0, 3, t0));
}

TEST(FifoScheduler, ExpiresAtDeadlineAndReportsNextDeadline) {
  FifoScheduler<int> s(10);
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
  EXPECT_EQ(expired, (std::vector<int>{1, 3, 2}));
  EXPECT_TRUE(s.empty());
  EXPECT_FALSE(s.next_deadline().has_value());
}

TEST(FifoScheduler, CancelRemovesFromTheMiddle) {
  FifoScheduler<int> s(10);
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

TEST(FifoScheduler, CancelledHeadDoesNotHideDeadline) {
  FifoScheduler<int> s(10);
  auto a = s.push(0, 1, t0 + seconds(1));
  s.push(0, 2, t0 + seconds(3));
  s.cancel(*a);
  EXPECT_EQ(s.next_deadline(), t0 + seconds(3));
}

TEST(FifoScheduler, ManyCancellationsCompact) {
  FifoScheduler<int> s(1000);
  std::vector<llmq::SchedulerTicket> tickets;
  for (int i = 0; i < 200; ++i) tickets.push_back(*s.push(0, i, t0 + seconds(10)));
  for (int i = 1; i < 199; ++i) s.cancel(tickets[static_cast<std::size_t>(i)]);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{0, 199}));
}

TEST(FifoScheduler, PushFrontGoesAheadOfEverythingAndIgnoresBound) {
  FifoScheduler<int> s(2);
  s.push(0, 1, t0 + seconds(10));
  s.push(1, 2, t0 + seconds(10));
  auto t = s.push_front(1, 9, t0 + seconds(10));
  EXPECT_EQ(s.size(), 3u);
  s.push_front(0, 8, t0 + seconds(10));  // the newest retry goes first
  EXPECT_EQ(dispatch_all(s, {0, 1}), (std::vector<int>{8, 9, 1, 2}));
  EXPECT_FALSE(s.cancel(t).has_value());
}

TEST(FifoScheduler, CancelFindsFrontPushedItems) {
  FifoScheduler<int> s(10);
  s.push(0, 1, t0 + seconds(10));
  auto t = s.push_front(0, 2, t0 + seconds(10));
  EXPECT_EQ(s.cancel(t), std::optional<int>(2));
  EXPECT_EQ(dispatch_all(s, {0}), (std::vector<int>{1}));
}

TEST(FifoScheduler, DrainReturnsEverythingInArrivalOrder) {
  FifoScheduler<int> s(10);
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

TEST(FifoScheduler, ForEachHeadVisitsLiveHeads) {
  FifoScheduler<int> s(10);
  auto a = s.push(0, 1, t0);
  s.push(0, 2, t0);
  s.push(3, 3, t0);
  s.cancel(*a);
  std::vector<std::pair<std::uint32_t, int>> heads;
  s.for_each_head([&](std::uint32_t cls, const int& i) { heads.emplace_back(cls, i); });
  EXPECT_EQ(heads, (std::vector<std::pair<std::uint32_t, int>>{{0, 2}, {3, 3}}));
}

}  // namespace
