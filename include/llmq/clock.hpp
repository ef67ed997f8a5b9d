#pragma once
/// @file clock.hpp
/// Where an LLMQueue reads the time and waits: the steady clock by default, or a Clock
/// of your own (QueueOptions::clock). ManualClock is a virtual clock for tests: time moves
/// only when the test advances it, so timeouts, retries, pacing and shutdown deadlines
/// are tested without sleeping.

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace llmq {

/// A source of time and of timed waits.
///
/// Thread safety: implementations must allow every member to be called from any thread.
class Clock {
 public:
  using duration = std::chrono::steady_clock::duration;
  using time_point = std::chrono::steady_clock::time_point;
  using wait_handler = boost::asio::any_completion_handler<void(boost::system::error_code)>;

  virtual ~Clock() = default;

  /// The current time.
  [[nodiscard]] virtual time_point now() const = 0;

  /// Arranges for `handler` to be invoked through `ex` with no error once now() >= `at`
  /// (soon, when that is already so), or with `operation_aborted` after cancel_wait(id).
  /// Returns the wait's id (never 0).
  virtual std::uint64_t async_wait_until(time_point at, boost::asio::any_io_executor ex,
                                         wait_handler handler) = 0;

  /// Completes wait `id` with `operation_aborted` if it is still pending; else nothing.
  virtual void cancel_wait(std::uint64_t id) = 0;
};

/// A virtual clock: now() stays where it is until advance() or set() moves it; waits due
/// by then complete in time order.
///
/// Thread safety: all members may be called from any thread.
class ManualClock final : public Clock {
 public:
  /// Starts at `start` (by default one hour after the steady clock's epoch, so that
  /// `now() - x` stays valid for the durations tests use).
  explicit ManualClock(time_point start = time_point{} + std::chrono::hours(1)) : now_(start) {}

  [[nodiscard]] time_point now() const override {
    std::lock_guard lock(mutex_);
    return now_;
  }

  std::uint64_t async_wait_until(time_point at, boost::asio::any_io_executor ex,
                                 wait_handler handler) override {
    std::unique_lock lock(mutex_);
    const std::uint64_t id = next_id_++;
    if (at <= now_) {
      lock.unlock();
      complete(std::move(ex), std::move(handler), {});
      return id;
    }
    waits_.emplace(id, Wait{at, std::move(ex), std::move(handler)});
    return id;
  }

  void cancel_wait(std::uint64_t id) override {
    std::unique_lock lock(mutex_);
    auto node = waits_.extract(id);
    lock.unlock();
    if (node.empty()) return;
    complete(std::move(node.mapped().ex), std::move(node.mapped().handler),
             boost::asio::error::operation_aborted);
  }

  /// Moves time forward by `d` (negative: ignored) and completes the waits now due.
  void advance(duration d) {
    if (d > duration::zero()) set(now() + d);
  }

  /// Moves time to `t` (earlier than now: ignored) and completes the waits now due, in
  /// the order of their times.
  void set(time_point t) {
    // Waits are moved by construction only: any_completion_handler's move assignment
    // wraps the handler instead of moving it in Boost 1.81.
    std::vector<std::map<std::uint64_t, Wait>::node_type> due;
    {
      std::lock_guard lock(mutex_);
      if (t <= now_) return;
      now_ = t;
      std::vector<std::pair<time_point, std::uint64_t>> order;
      for (const auto& [id, w] : waits_)
        if (w.at <= now_) order.emplace_back(w.at, id);
      std::sort(order.begin(), order.end());
      for (const auto& [at, id] : order) due.push_back(waits_.extract(id));
    }
    for (auto& node : due)
      complete(std::move(node.mapped().ex), std::move(node.mapped().handler), {});
  }

  /// Completes every pending wait with `operation_aborted` (e.g. at the end of a test,
  /// so that coroutines waiting on this clock unwind).
  void cancel_all() {
    std::map<std::uint64_t, Wait> all;
    {
      std::lock_guard lock(mutex_);
      all.swap(waits_);
    }
    for (auto& [id, w] : all)
      complete(std::move(w.ex), std::move(w.handler), boost::asio::error::operation_aborted);
  }

  /// Waits not completed yet.
  [[nodiscard]] std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return waits_.size();
  }

  /// The time of the earliest pending wait, if any.
  [[nodiscard]] std::optional<time_point> next_wait() const {
    std::lock_guard lock(mutex_);
    std::optional<time_point> best;
    for (const auto& [id, w] : waits_)
      if (!best || w.at < *best) best = w.at;
    return best;
  }

 private:
  struct Wait {
    time_point at;
    boost::asio::any_io_executor ex;
    wait_handler handler;
  };

  static void complete(boost::asio::any_io_executor ex, wait_handler handler,
                       boost::system::error_code ec) {
    boost::asio::post(ex, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
  }

  mutable std::mutex mutex_;
  time_point now_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Wait> waits_;
};

/// A timer on a Clock: a steady_timer when the clock is null, else waits of that clock.
/// Like asio timers it allows one expiry and any number of waits; cancel() completes the
/// pending waits with `operation_aborted`. Per-operation cancellation (a cancellation
/// slot on the wait's handler) is supported.
///
/// Thread safety: as asio::steady_timer (one thread or strand at a time).
class ClockTimer {
 public:
  using time_point = Clock::time_point;
  using duration = Clock::duration;

  ClockTimer(boost::asio::any_io_executor ex, std::shared_ptr<Clock> clock)
      : ex_(ex), clock_(std::move(clock)), steady_(ex) {}
  ~ClockTimer() { cancel(); }
  ClockTimer(const ClockTimer&) = delete;
  ClockTimer& operator=(const ClockTimer&) = delete;

  [[nodiscard]] time_point now() const {
    return clock_ ? clock_->now() : std::chrono::steady_clock::now();
  }

  /// Sets the expiry; pending waits are cancelled, as with asio timers.
  void expires_at(time_point t) {
    expiry_ = t;
    if (clock_)
      cancel();
    else
      steady_.expires_at(t);  // cancels its pending waits itself
  }
  void expires_after(duration d) { expires_at(now() + d); }
  [[nodiscard]] time_point expiry() const noexcept { return expiry_; }

  /// Completes with no error at the expiry, or `operation_aborted` when cancelled.
  template <class Token>
  auto async_wait(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto handler) {
          if (!clock_) {
            steady_.async_wait(std::move(handler));
            return;
          }
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          const std::uint64_t id =
              clock_->async_wait_until(expiry_, ex_, Clock::wait_handler(std::move(handler)));
          // expires_at() and cancel() forget completed waits; a timer waited on again and
          // again without them keeps at most kKept ids (of waits that are most likely done).
          if (pending_.size() >= kKept)
            pending_.erase(pending_.begin(), pending_.begin() + kKept / 2);
          pending_.push_back(id);
          if (slot.is_connected()) {
            slot.assign([clock = clock_, id](boost::asio::cancellation_type_t type) {
              if (type != boost::asio::cancellation_type::none) clock->cancel_wait(id);
            });
          }
        },
        token);
  }

  /// Completes every pending wait with `operation_aborted`.
  void cancel() {
    if (!clock_) {
      steady_.cancel();
      return;
    }
    std::vector<std::uint64_t> ids;
    ids.swap(pending_);
    for (std::uint64_t id : ids) clock_->cancel_wait(id);
  }

 private:
  boost::asio::any_io_executor ex_;
  std::shared_ptr<Clock> clock_;
  boost::asio::steady_timer steady_;
  time_point expiry_{};
  static constexpr std::size_t kKept = 1024;
  std::vector<std::uint64_t> pending_;  // clock waits; completed ones are cancelled harmlessly
};

}  // namespace llmq
