// The request lifecycle state machine on its own: transitions, and exactly one answer and
// one finish on every path (checked over every sequence of events up to a length).
#include <llmq/detail/request_lifecycle.hpp>

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

namespace {
using llmq::errc;
using llmq::detail::LifecycleActions;
using llmq::detail::RequestLifecycle;
using llmq::detail::RequestState;
using Answer = LifecycleActions::Answer;
namespace asio = boost::asio;

TEST(RequestLifecycle, TheHappyPathStartsTheExecutorAndAnswersWithItsResponse) {
  RequestLifecycle l;
  EXPECT_EQ(l.state(), RequestState::admitted);
  EXPECT_FALSE(l.queued().any());
  EXPECT_EQ(l.state(), RequestState::queued);
  auto a = l.dispatched(false);
  EXPECT_TRUE(a.start_executor);
  EXPECT_EQ(l.state(), RequestState::running);
  a = l.executor_finished(false);
  EXPECT_EQ(a.answer, Answer::response);
  EXPECT_TRUE(a.finish);
  EXPECT_TRUE(l.done());
}

TEST(RequestLifecycle, ASharedBudgetConfirmationComesBetweenGrantAndRun) {
  RequestLifecycle l;
  l.queued();
  auto a = l.dispatched(true);
  EXPECT_TRUE(a.confirm);
  EXPECT_FALSE(a.start_executor);
  EXPECT_EQ(l.state(), RequestState::confirming);
  a = l.confirm_refused();
  EXPECT_TRUE(a.refund_grants);
  EXPECT_TRUE(a.requeue);
  EXPECT_EQ(l.state(), RequestState::queued);  // never ran: a plain queued request again
  l.dispatched(true);
  a = l.confirmed();
  EXPECT_TRUE(a.start_executor);
  EXPECT_EQ(l.state(), RequestState::running);
}

TEST(RequestLifecycle, AFailedStoreUnderFailClosedAnswersWithItsError) {
  RequestLifecycle l;
  l.queued();
  l.dispatched(true);
  auto a = l.confirm_failed_closed();
  EXPECT_EQ(a.answer, Answer::error);
  EXPECT_EQ(a.error, errc::budget_store_unavailable);
  EXPECT_TRUE(a.refund_grants);
  EXPECT_TRUE(a.finish);
}

TEST(RequestLifecycle, ARetryKeepsTheAttemptsAnswerForTheDeadline) {
  RequestLifecycle l;
  l.queued();
  l.dispatched(false);
  auto a = l.executor_finished(true);
  EXPECT_TRUE(a.keep_response);
  EXPECT_TRUE(a.requeue);
  EXPECT_EQ(a.answer, Answer::none);
  EXPECT_EQ(l.state(), RequestState::waiting_to_retry);
  a = l.deadline();
  EXPECT_EQ(a.answer, Answer::last_response);
  EXPECT_TRUE(a.finish);
}

TEST(RequestLifecycle, ANeverRunRequestTimesOutInTheQueue) {
  RequestLifecycle l;
  l.queued();
  auto a = l.deadline();
  EXPECT_EQ(a.answer, Answer::error);
  EXPECT_EQ(a.error, errc::queue_timeout);
  EXPECT_TRUE(a.finish);
}

TEST(RequestLifecycle, AnExecutionTimeoutAnswersAtOnceAndFinishesWhenTheExecutorReturns) {
  RequestLifecycle l;
  l.queued();
  l.dispatched(false);
  auto a = l.execution_deadline();
  EXPECT_EQ(a.error, errc::execution_timeout);
  EXPECT_TRUE(a.cancel_executor);
  EXPECT_FALSE(a.finish);
  EXPECT_FALSE(l.execution_deadline().any());  // once
  a = l.executor_finished(true);               // a retry is no longer wanted
  EXPECT_EQ(a.answer, Answer::none);
  EXPECT_FALSE(a.requeue);
  EXPECT_TRUE(a.finish);
}

TEST(RequestLifecycle, CancellationTypesFollowTheState) {
  using ct = asio::cancellation_type;
  {
    RequestLifecycle l;
    l.queued();
    auto a = l.cancel(ct::total);  // nothing spent: every type
    EXPECT_EQ(a.answer, Answer::cancelled);
    EXPECT_TRUE(a.remove_from_queue);
    EXPECT_TRUE(a.finish);
  }
  {
    RequestLifecycle l;
    l.queued();
    l.dispatched(false);
    EXPECT_FALSE(l.cancel(ct::total).any());  // the executor may have side effects
    EXPECT_FALSE(l.cancel(ct::partial).any());
    auto a = l.cancel(ct::terminal);
    EXPECT_EQ(a.answer, Answer::cancelled);
    EXPECT_TRUE(a.cancel_executor);
    EXPECT_FALSE(a.finish);
    EXPECT_TRUE(l.executor_finished(false).finish);
  }
  {
    RequestLifecycle l;
    l.queued();
    l.dispatched(false);
    l.executor_finished(true);  // an attempt ran: its side effects are known
    EXPECT_FALSE(l.cancel(ct::total).any());
    auto a = l.cancel(ct::partial);
    EXPECT_EQ(a.answer, Answer::cancelled);
    EXPECT_TRUE(a.finish);
  }
  {
    RequestLifecycle l;
    l.queued();
    l.dispatched(true);
    EXPECT_FALSE(l.cancel(ct::total).any());  // the shared budget may be charged
    auto a = l.cancel(ct::partial);
    EXPECT_EQ(a.answer, Answer::cancelled);
    EXPECT_FALSE(a.finish);
    a = l.confirmed();  // the store answered: nothing runs, the request finishes
    EXPECT_FALSE(a.start_executor);
    EXPECT_TRUE(a.finish);
  }
}

TEST(RequestLifecycle, AbandonAnswersEveryStateOnce) {
  for (int stage = 0; stage < 5; ++stage) {
    RequestLifecycle l;
    if (stage >= 1) l.queued();
    if (stage >= 2) l.dispatched(stage == 2);   // 2: confirming, 3+: running
    if (stage == 4) l.executor_finished(true);  // waiting to retry
    auto a = l.abandon(errc::queue_closed);
    EXPECT_NE(a.answer, Answer::none) << "stage " << stage;
    EXPECT_EQ(a.answer, stage == 4 ? Answer::last_response : Answer::error) << "stage " << stage;
    EXPECT_FALSE(l.abandon(errc::queue_closed).any()) << "stage " << stage;
  }
}

/// Every event, with its arguments, as a function of the lifecycle.
std::vector<std::function<LifecycleActions(RequestLifecycle&)>> all_events() {
  using ct = asio::cancellation_type;
  return {
      [](RequestLifecycle& l) { return l.queued(); },
      [](RequestLifecycle& l) { return l.refused(errc::queue_full); },
      [](RequestLifecycle& l) { return l.dispatched(false); },
      [](RequestLifecycle& l) { return l.dispatched(true); },
      [](RequestLifecycle& l) { return l.confirmed(); },
      [](RequestLifecycle& l) { return l.confirm_refused(); },
      [](RequestLifecycle& l) { return l.confirm_failed_closed(); },
      [](RequestLifecycle& l) { return l.executor_finished(false); },
      [](RequestLifecycle& l) { return l.executor_finished(true); },
      [](RequestLifecycle& l) { return l.deadline(); },
      [](RequestLifecycle& l) { return l.execution_deadline(); },
      [](RequestLifecycle& l) { return l.cancel(ct::terminal); },
      [](RequestLifecycle& l) { return l.cancel(ct::partial); },
      [](RequestLifecycle& l) { return l.cancel(ct::total); },
      [](RequestLifecycle& l) { return l.abandon(errc::queue_closed); },
      [](RequestLifecycle& l) { return l.abandon(errc::queue_failed); },
  };
}

constexpr std::size_t kExecutorFinished = 7;  // indexes in all_events()
constexpr std::size_t kExecutorRetry = 8;

TEST(RequestLifecycle, EveryEventSequenceAnswersAtMostOnceAndFinishesOnceAfterTheAnswer) {
  const auto events = all_events();
  const std::size_t n = events.size();
  std::size_t sequences = 0, finished = 0;
  // Every sequence of up to 5 events (16^5 ~ 1e6), from a fresh lifecycle each time.
  std::vector<std::size_t> seq;
  std::function<void(std::size_t)> walk = [&](std::size_t depth) {
    RequestLifecycle l;
    int answers = 0, finishes = 0;
    bool running = false;
    for (std::size_t e : seq) {
      const bool was_running = l.state() == RequestState::running;
      const LifecycleActions a = events[e](l);
      answers += a.answer != Answer::none;
      finishes += a.finish;
      const bool executor_returned = was_running && (e == kExecutorFinished || e == kExecutorRetry);
      if (executor_returned) running = false;
      if (a.start_executor) running = true;
      ASSERT_LE(answers, 1) << "answered twice";
      ASSERT_LE(finishes, 1) << "finished twice";
      if (a.finish) {
        ASSERT_EQ(answers, 1) << "finished without an answer";
        ASSERT_TRUE(l.done());
        ASSERT_FALSE(running) << "finished while its executor runs";
      }
      if (l.done()) {
        ASSERT_EQ(finishes, 1) << "done without finishing";
      }
      if (a.answer == Answer::last_response) {
        ASSERT_TRUE(l.has_run());
      }
      if (a.cancel_executor) {
        ASSERT_EQ(l.state(), RequestState::running);
      }
    }
    ++sequences;
    finished += l.done();
    if (depth == 0) return;
    for (std::size_t e = 0; e < n; ++e) {
      seq.push_back(e);
      walk(depth - 1);
      seq.pop_back();
      if (HasFatalFailure()) return;
    }
  };
  walk(5);
  EXPECT_GT(sequences, 1'000'000u);
  EXPECT_GT(finished, 0u);
}

}  // namespace
