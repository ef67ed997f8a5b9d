#include <llmq/rate_limit_store.hpp>
#include <llmq/sliding_window_limiter.hpp>

#include "allocation_counter.hpp"

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <string>

namespace {
using llmq::SlidingWindowLimiter;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

TEST(SlidingWindowLimiter, AdmitsExactlyMaxPerWindow) {
  SlidingWindowLimiter l;
  for (int i = 0; i < 3; ++i) {
    auto d = l.acquire("u", t0 + seconds(i), 3, seconds(10));
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 2 - i);
  }
  auto d = l.acquire("u", t0 + seconds(5), 3, seconds(10));
  EXPECT_FALSE(d.allowed);
  // Oldest entry (t0) leaves at t0 + 10 s: exactly 5 s from now, not a whole window.
  EXPECT_EQ(d.retry_after, seconds(5));
}

TEST(SlidingWindowLimiter, RejectionsAreNotRecorded) {
  SlidingWindowLimiter l;
  ASSERT_TRUE(l.acquire("u", t0, 1, seconds(10)).allowed);
  for (int i = 1; i < 10; ++i)
    EXPECT_FALSE(l.acquire("u", t0 + seconds(i), 1, seconds(10)).allowed);
  // Had the rejections counted, the user would still be blocked here.
  EXPECT_TRUE(l.acquire("u", t0 + seconds(10), 1, seconds(10)).allowed);
}

TEST(SlidingWindowLimiter, RetryAfterIsExactToTheNanosecond) {
  SlidingWindowLimiter l;
  ASSERT_TRUE(l.acquire("u", t0 + milliseconds(250), 2, seconds(60)).allowed);
  ASSERT_TRUE(l.acquire("u", t0 + milliseconds(900), 2, seconds(60)).allowed);
  auto d = l.acquire("u", t0 + milliseconds(1000), 2, seconds(60));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, milliseconds(59'250));
  EXPECT_FALSE(l.acquire("u", t0 + milliseconds(60'249), 2, seconds(60)).allowed);
  EXPECT_TRUE(l.acquire("u", t0 + milliseconds(60'250), 2, seconds(60)).allowed);
}

TEST(SlidingWindowLimiter, UsersAreIndependent) {
  SlidingWindowLimiter l;
  ASSERT_TRUE(l.acquire("a", t0, 1, seconds(10)).allowed);
  EXPECT_TRUE(l.acquire("b", t0, 1, seconds(10)).allowed);
  EXPECT_FALSE(l.acquire("a", t0, 1, seconds(10)).allowed);
}

TEST(SlidingWindowLimiter, IdleUsersAreEvicted) {
  SlidingWindowLimiter l;
  for (int i = 0; i < 100; ++i) l.acquire("user-" + std::to_string(i), t0, 5, seconds(10));
  EXPECT_EQ(l.user_count(), 100u);
  l.acquire("late", t0 + seconds(5), 5, seconds(10));
  EXPECT_EQ(l.user_count(), 101u);
  l.acquire("later", t0 + seconds(10), 5, seconds(10));  // the first 100 have nothing left
  EXPECT_EQ(l.user_count(), 2u);
  l.evict_idle(t0 + seconds(30), seconds(10));
  EXPECT_EQ(l.user_count(), 0u);
}

TEST(SlidingWindowLimiter, MemoryPerUserIsBounded) {
  SlidingWindowLimiter l;
  const int users = 10'000;
  for (int i = 0; i < users; ++i)
    for (int k = 0; k < 50; ++k)
      l.acquire("user-" + std::to_string(i), t0 + milliseconds(k), 40, seconds(60));
  const double per_user = double(l.memory_bytes()) / users;
  EXPECT_LE(per_user, 1024.0);
  EXPECT_GE(per_user, 40 * 8.0);  // at least the 40 timestamps each
}

TEST(SlidingWindowLimiter, LoweredLimitWaitsForEnoughEntries) {
  SlidingWindowLimiter l;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(l.acquire("u", t0 + seconds(i), 4, seconds(10)).allowed);
  auto d = l.acquire("u", t0 + seconds(4), 2, seconds(10));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, seconds(8));  // entries at 0 s, 1 s and 2 s must leave
}

TEST(SlidingWindowLimiter, UsersWithALongerWindowAreNotEvictedByAShorterOne) {
  SlidingWindowLimiter l;
  ASSERT_TRUE(l.acquire("long", t0, 1, seconds(60)).allowed);
  // Another user's decision with a 1 s window must not drop the first user's history.
  ASSERT_TRUE(l.acquire("short", t0 + seconds(5), 1, seconds(1)).allowed);
  EXPECT_EQ(l.user_count(), 2u);
  const auto d = l.acquire("long", t0 + seconds(10), 1, seconds(60));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, seconds(50));
  // The short-window user is evicted once its own window has passed.
  l.acquire("long", t0 + seconds(20), 1, seconds(60));
  EXPECT_EQ(l.user_count(), 1u);
}

TEST(SlidingWindowLimiter, UsersComingAndGoingDoNotAllocate) {
  SlidingWindowLimiter l;
  // Warm up: 200 users at the limit, then let them all leave their windows.
  auto fill = [&](Clock::time_point at, int first) {
    for (int i = first; i < first + 200; ++i) {
      const std::string id = "user-" + std::to_string(i) + "@tenant.example";
      for (int k = 0; k < 40; ++k) l.acquire(id, at, 40, seconds(60));
    }
  };
  fill(t0, 1000);
  // New users (ids of the same length) reuse the departed users' storage.
  std::vector<std::string> ids;
  for (int i = 2000; i < 2200; ++i) ids.push_back("user-" + std::to_string(i) + "@tenant.example");
  const auto later = t0 + seconds(61);
  const std::size_t before = llmq::test::allocations_on_this_thread();
  for (const std::string& id : ids)
    for (int k = 0; k < 40; ++k) ASSERT_TRUE(l.acquire(id, later, 40, seconds(60)).allowed);
  EXPECT_EQ(llmq::test::allocations_on_this_thread() - before, 0u);
  EXPECT_EQ(l.user_count(), 200u);
  EXPECT_FALSE(l.acquire(ids.front(), later, 40, seconds(60)).allowed);
}

TEST(InMemoryUserRateLimitStore, UsesInjectedClock) {
  Clock::time_point now = t0;
  llmq::InMemoryUserRateLimitStore store([&] { return now; });
  llmq::UserLimits limits;
  limits.max_num_requests_in_time_window = 2;
  limits.time_window = seconds(30);
  boost::asio::io_context io;
  auto call = [&] {
    auto f = boost::asio::co_spawn(io, store.acquire("u", limits), boost::asio::use_future);
    io.restart();
    io.run();
    return f.get();
  };
  EXPECT_TRUE(call().allowed);
  EXPECT_TRUE(call().allowed);
  now += seconds(10);
  auto d = call();
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, seconds(20));
  now += seconds(20);
  EXPECT_TRUE(call().allowed);
  EXPECT_EQ(store.user_count(), 1u);
}

}  // namespace
