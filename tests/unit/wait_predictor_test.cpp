#include <llmq/fifo_scheduler.hpp>
#include <llmq/wait_predictor.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <vector>

namespace {
using llmq::DispatchRateEstimator;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);

TEST(DispatchRateEstimator, UnknownUntilEnoughBusyIntervals) {
  DispatchRateEstimator e(seconds(10), 4);
  EXPECT_FALSE(e.rate());
  for (int i = 0; i < 4; ++i) e.record(t0 + milliseconds(100 * i), 1, 10);
  EXPECT_FALSE(e.rate());  // 3 intervals
  e.record(t0 + milliseconds(400), 1, 10);
  ASSERT_TRUE(e.rate());
  EXPECT_NEAR(*e.rate(), 10.0, 1e-6);
  EXPECT_FALSE(llmq::predict_wait(DispatchRateEstimator{}, 5));
}

TEST(DispatchRateEstimator, IdleTimeIsNotServiceTime) {
  DispatchRateEstimator e(seconds(10), 1);
  for (int i = 0; i <= 20; ++i) e.record(t0 + milliseconds(50 * i), 1, i < 20 ? 5 : 0);
  ASSERT_TRUE(e.rate());
  EXPECT_NEAR(*e.rate(), 20.0, 1e-6);
  // The queue stayed empty for a minute; the next dispatch ends an idle spell.
  e.record(t0 + seconds(61), 1, 3);
  EXPECT_NEAR(*e.rate(), 20.0, 1e-6);
  e.record(t0 + seconds(61) + milliseconds(50), 1, 2);
  EXPECT_NEAR(*e.rate(), 20.0, 1e-6);
}

TEST(DispatchRateEstimator, BurstsAreMeasuredAtTheirAverageRate) {
  // Ten dispatches at the start of each second (a deployment whose 1 s window refills),
  // each burst spread over a few microseconds as on a real clock.
  DispatchRateEstimator e(seconds(10), 1);
  EXPECT_FALSE(e.rate());
  int queued = 100;
  for (int burst = 0; burst < 2; ++burst)
    for (int i = 0; i < 10; ++i)
      e.record(t0 + seconds(burst) + std::chrono::microseconds(3 * i), 1, --queued);
  // The first burst opened the busy spell and took none of its time: 10 in the second.
  ASSERT_TRUE(e.rate());
  EXPECT_NEAR(*e.rate(), 10.0, 0.01);
  EXPECT_EQ(e.intervals(), 1u);  // one burst, one busy interval
  for (int burst = 2; burst < 6; ++burst)
    for (int i = 0; i < 10; ++i) e.record(t0 + seconds(burst), 1, --queued);  // exact ties
  EXPECT_NEAR(*e.rate(), 10.0, 0.01);
  EXPECT_EQ(e.intervals(), 5u);
}

TEST(DispatchRateEstimator, DispatchesCloserThanAMillisecondStillAddUp) {
  DispatchRateEstimator e(seconds(10), 8);
  for (int i = 0; i < 200; ++i) e.record(t0 + std::chrono::microseconds(100 * i), 1, 50);
  ASSERT_TRUE(e.rate());  // 20 ms of busy time: more than 8 intervals of 1 ms
  EXPECT_NEAR(*e.rate(), 10'000.0, 10.0);
}

TEST(DispatchRateEstimator, FollowsAChangeOfRate) {
  DispatchRateEstimator e(seconds(2), 1);
  Clock::time_point now = t0;
  for (int i = 0; i < 200; ++i) e.record(now += milliseconds(10), 1, 50);  // 100/s
  EXPECT_NEAR(*e.rate(), 100.0, 0.5);
  for (int i = 0; i < 400; ++i) e.record(now += milliseconds(40), 1, 50);  // 25/s for 16 s
  EXPECT_NEAR(*e.rate(), 25.0, 0.5);
}

TEST(WaitPredictor, ErrorOnASteadyQueueIsSmall) {
  // A FIFO queue served at 40 requests/s with a request arriving every 20 ms (so it is
  // always backlogged): the prediction at admission against the wait then measured.
  llmq::FifoScheduler<int> s(100'000);
  DispatchRateEstimator e(seconds(5));
  struct Waiting {
    Clock::time_point arrived;
    std::chrono::nanoseconds predicted;
  };
  std::vector<Waiting> info;
  double worst = 0;
  int measured = 0;
  const auto deadline = t0 + std::chrono::hours(1);
  for (int i = 0; i < 50; ++i) {
    s.push(0, -1, deadline);  // an initial backlog (not measured)
  }
  Clock::time_point next_arrival = t0;
  Clock::time_point next_dispatch = t0;
  for (int step = 0; step < 20'000; ++step) {
    if (next_arrival <= next_dispatch) {
      const auto now = next_arrival;
      llmq::QueuedRequest r;
      r.deadline = deadline;
      r.enqueued = now;
      const auto wait = llmq::predict_wait(e, s.ahead_of(r));
      info.push_back(Waiting{now, wait.value_or(std::chrono::nanoseconds(-1))});
      s.push(0, static_cast<int>(info.size() - 1), deadline);
      next_arrival += milliseconds(20);
    } else {
      const auto now = next_dispatch;
      const std::size_t n = s.dispatch(
          [&](std::uint32_t, int& id) {
            if (id >= 0 && info[static_cast<std::size_t>(id)].predicted.count() >= 0) {
              const Waiting& w = info[static_cast<std::size_t>(id)];
              const double actual = std::chrono::duration<double>(now - w.arrived).count();
              const double predicted = std::chrono::duration<double>(w.predicted).count();
              if (actual > 0.5) {
                worst = std::max(worst, std::abs(predicted - actual) / actual);
                ++measured;
              }
            }
            return true;
          },
          1);
      if (n > 0) e.record(now, n, s.size());
      next_dispatch += milliseconds(25);
    }
  }
  ASSERT_GT(measured, 1000);
  EXPECT_LT(worst, 0.05);
}

TEST(WaitPredictor, AdmissionRefusesOnlyWhatCannotMakeItInTime) {
  DispatchRateEstimator e(seconds(10), 1);
  for (int i = 0; i <= 10; ++i) e.record(t0 + milliseconds(100 * i), 1, 100);  // 10/s
  EXPECT_TRUE(llmq::admit_by_prediction(e, 49, seconds(5)));                   // 5 s predicted
  EXPECT_FALSE(llmq::admit_by_prediction(e, 50, seconds(5)));                  // 5.1 s
  EXPECT_TRUE(llmq::admit_by_prediction(DispatchRateEstimator{}, 1'000'000, seconds(1)));
}

}  // namespace
