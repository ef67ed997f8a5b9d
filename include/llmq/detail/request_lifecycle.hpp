#pragma once
/// @file detail/request_lifecycle.hpp
/// The life of one request in an LLMQueue, as a state machine without I/O: the runtime
/// feeds it events and performs the actions it returns (answer the caller, start or
/// cancel the executor, put the request back in line, finish). Every path ends in
/// exactly one answer and exactly one finish (the one place telemetry is recorded).
///
///   admitted --queued--> queued --dispatched--> confirming --confirmed--> running
///                          ^   \--dispatched (no shared budget store)-------^  |
///                          |                                                   |
///                          +-- confirm_refused (before any run) ---------------+
///                                                                              |
///   waiting_to_retry <--executor_finished(retry)-- running --executor_finished--> done
///     --dispatched--> confirming / running
///
/// Any state but done --cancel / abandon / deadline--> done (answered at once; a
/// confirming or running request finishes when its store call or executor returns).

#include <llmq/errors.hpp>

#include <boost/asio/cancellation_type.hpp>

#include <cassert>
#include <cstdint>
#include <string_view>

namespace llmq::detail {

enum class RequestState : std::uint8_t {
  admitted,          ///< refused or not: admission passed, not in the scheduler yet
  queued,            ///< in the scheduler, never run
  confirming,        ///< granted locally; the shared budget store must confirm the charge
  running,           ///< its executor runs
  waiting_to_retry,  ///< an attempt failed transiently; back in the scheduler for another
  done,              ///< answered and recorded
};

[[nodiscard]] constexpr std::string_view to_string(RequestState s) noexcept {
  switch (s) {
    case RequestState::admitted:
      return "admitted";
    case RequestState::queued:
      return "queued";
    case RequestState::confirming:
      return "confirming";
    case RequestState::running:
      return "running";
    case RequestState::waiting_to_retry:
      return "waiting_to_retry";
    case RequestState::done:
      return "done";
  }
  return "unknown";
}

/// The cancellation types a request honours in each state. Before anything is spent
/// (admitted, queued) every type; once a shared budget was charged or an attempt ran
/// upstream (confirming, waiting_to_retry) the side effects are known, so partial and
/// terminal; while the executor runs (it may have side effects upstream) only terminal.
[[nodiscard]] constexpr boost::asio::cancellation_type_t supported_cancellation(
    RequestState s) noexcept {
  using ct = boost::asio::cancellation_type;
  switch (s) {
    case RequestState::admitted:
    case RequestState::queued:
      return ct::terminal | ct::partial | ct::total;
    case RequestState::confirming:
    case RequestState::waiting_to_retry:
      return ct::terminal | ct::partial;
    case RequestState::running:
      return ct::terminal;
    case RequestState::done:
      return ct::none;
  }
  return ct::none;
}

/// What the runtime does after an event, in this order: remove the request from the
/// scheduler, give back its local grants, answer, cancel the executor, keep the ended
/// attempt's answer, put the request back in line, ask for confirmation, start the
/// executor, finish.
struct LifecycleActions {
  enum class Answer : std::uint8_t {
    none,
    error,          ///< with `error`
    cancelled,      ///< with operation_aborted (the caller gave up)
    response,       ///< with the executor's Response of the attempt that just ended
    last_response,  ///< with the Response of the last attempt (kept while waiting to retry)
  };
  Answer answer = Answer::none;
  errc error{};
  bool remove_from_queue = false;
  bool refund_grants = false;
  bool cancel_executor = false;
  bool keep_response = false;  ///< keep the ended attempt's Response as the last one
  bool requeue = false;        ///< back to the front of the scheduler
  bool confirm = false;        ///< ask the shared budget store to confirm the grant
  bool start_executor = false;
  bool finish = false;  ///< record telemetry; the request is done

  [[nodiscard]] bool any() const noexcept {
    return answer != Answer::none || remove_from_queue || refund_grants || cancel_executor ||
           keep_response || requeue || confirm || start_executor || finish;
  }
};

class RequestLifecycle {
 public:
  using Actions = LifecycleActions;
  using Answer = LifecycleActions::Answer;

  [[nodiscard]] RequestState state() const noexcept { return state_; }
  [[nodiscard]] bool answered() const noexcept { return answered_; }
  [[nodiscard]] bool done() const noexcept { return state_ == RequestState::done; }
  /// An attempt has run (its Response is kept while waiting to retry).
  [[nodiscard]] bool has_run() const noexcept { return has_run_; }
  /// True while the request is in the scheduler (queued or waiting to retry).
  [[nodiscard]] bool in_queue() const noexcept {
    return state_ == RequestState::queued || state_ == RequestState::waiting_to_retry;
  }

  /// Admission refused the request (`why`): answered and finished at once.
  Actions refused(errc why) {
    Actions a;
    if (state_ != RequestState::admitted || answered_) return a;
    answer_error(a, why);
    return finish_unrun(a);
  }

  /// Admission passed; the request enters the scheduler.
  Actions queued() {
    Actions a;
    if (state_ != RequestState::admitted) return a;
    state_ = RequestState::queued;
    return a;
  }

  /// The balancer granted deployments and the scheduler released the request.
  /// `confirm`: a shared budget store must confirm the charge first.
  Actions dispatched(bool confirm) {
    Actions a;
    if (!in_queue()) return a;
    if (confirm) {
      state_ = RequestState::confirming;
      a.confirm = true;
    } else {
      state_ = RequestState::running;
      has_run_ = true;
      a.start_executor = true;
    }
    return a;
  }

  /// The shared store charged the grant.
  Actions confirmed() {
    Actions a;
    if (state_ != RequestState::confirming) return a;
    if (answered_) return finish_unrun(a);
    state_ = RequestState::running;
    has_run_ = true;
    a.start_executor = true;
    return a;
  }

  /// The shared store refused the grant: back in line for another deployment or time.
  Actions confirm_refused() {
    Actions a;
    if (state_ != RequestState::confirming) return a;
    a.refund_grants = true;
    if (answered_) return finish_unrun(a);
    state_ = has_run_ ? RequestState::waiting_to_retry : RequestState::queued;
    a.requeue = true;
    return a;
  }

  /// The shared store failed and the policy is to refuse.
  Actions confirm_failed_closed() {
    Actions a;
    if (state_ != RequestState::confirming) return a;
    a.refund_grants = true;
    if (!answered_) answer_error(a, errc::budget_store_unavailable);
    return finish_unrun(a);
  }

  /// The executor returned (or threw). `retry`: the attempt failed transiently and
  /// attempts and the retry budget remain.
  Actions executor_finished(bool retry) {
    Actions a;
    if (state_ != RequestState::running) return a;
    if (answered_) {
      a.finish = true;
      state_ = RequestState::done;
      return a;
    }
    if (retry) {
      state_ = RequestState::waiting_to_retry;
      a.keep_response = true;
      a.requeue = true;
      return a;
    }
    answer(a, Answer::response);
    a.finish = true;
    state_ = RequestState::done;
    return a;
  }

  /// Its deadline passed while it was in the scheduler (the scheduler has removed it):
  /// a never-run request times out; one waiting to retry gets its last attempt's answer.
  Actions deadline() {
    Actions a;
    if (!in_queue()) return a;
    if (state_ == RequestState::queued)
      answer_error(a, errc::queue_timeout);
    else
      answer(a, Answer::last_response);
    a.finish = true;
    state_ = RequestState::done;
    return a;
  }

  /// The executor passed the execution timeout: the caller is answered now, the
  /// executor cancelled; the request finishes when the executor returns.
  Actions execution_deadline() {
    Actions a;
    if (state_ != RequestState::running || answered_) return a;
    answer_error(a, errc::execution_timeout);
    a.cancel_executor = true;
    return a;
  }

  /// The caller cancelled with `type`. Ignored when the state does not support the type
  /// (see supported_cancellation).
  Actions cancel(boost::asio::cancellation_type_t type) {
    Actions a;
    if (answered_ ||
        (type & supported_cancellation(state_)) == boost::asio::cancellation_type::none)
      return a;
    answer(a, Answer::cancelled);
    return stop(a);
  }

  /// The queue is shutting down past its deadline (`why` = queue_closed) or its
  /// dispatcher failed (queue_failed): every request is answered now.
  Actions abandon(errc why) {
    Actions a;
    if (state_ == RequestState::done || answered_) return a;
    if (state_ == RequestState::waiting_to_retry)
      answer(a, Answer::last_response);
    else
      answer_error(a, why);
    return stop(a);
  }

 private:
  void answer(Actions& a, Answer how) {
    a.answer = how;
    answered_ = true;
  }
  void answer_error(Actions& a, errc e) {
    a.error = e;
    answer(a, Answer::error);
  }
  Actions& finish_unrun(Actions& a) {
    a.finish = true;
    state_ = RequestState::done;
    return a;
  }
  /// After an answer given from outside the normal flow: end what can end now.
  Actions& stop(Actions& a) {
    switch (state_) {
      case RequestState::admitted:
        return finish_unrun(a);
      case RequestState::queued:
      case RequestState::waiting_to_retry:
        a.remove_from_queue = true;
        return finish_unrun(a);
      case RequestState::confirming:
        return a;  // finishes when the store answers
      case RequestState::running:
        a.cancel_executor = true;  // finishes when the executor returns
        return a;
      case RequestState::done:
        return a;
    }
    return a;
  }

  RequestState state_ = RequestState::admitted;
  bool answered_ = false;
  bool has_run_ = false;
};

}  // namespace llmq::detail
