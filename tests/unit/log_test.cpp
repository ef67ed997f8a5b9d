#include <llmq/log.hpp>

#include <gtest/gtest.h>

#include <chrono>

using namespace std::chrono_literals;

TEST(LogThrottle, OneLinePerIntervalAndTheHeldBackOnesAreCounted) {
  llmq::LogThrottle throttle(10s);
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  auto first = throttle.admit(t0);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, 0u);
  EXPECT_FALSE(throttle.admit(t0 + 1s).has_value());
  EXPECT_FALSE(throttle.admit(t0 + 9999ms).has_value());
  auto next = throttle.admit(t0 + 10s);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next, 2u);  // the two in between
  EXPECT_FALSE(throttle.admit(t0 + 15s).has_value());
  auto later = throttle.admit(t0 + 1h);
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(*later, 1u);
}

TEST(LogThrottle, HeldBackNoteSaysHowMany) {
  EXPECT_EQ(llmq::held_back_note(0), "");
  EXPECT_EQ(llmq::held_back_note(1), " (1 similar line held back)");
  EXPECT_EQ(llmq::held_back_note(42), " (42 similar lines held back)");
}
