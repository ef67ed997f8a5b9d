#pragma once
/// @file scheduler.hpp
/// The scheduler interface shared by FifoScheduler and FairScheduler: a decision core
/// with no I/O and no clock of its own (time is passed in).
///
/// A scheduler holds queued requests until the runtime dispatches them. Requests are
/// grouped into *resource classes* (the set of deployments a request can use); a class
/// whose head cannot be granted is skipped, so a request waiting for a busy pinned model
/// never blocks one that could run elsewhere. Every request has a *priority* (high,
/// normal, low; strict between levels, with aging so that low is never starved), a
/// *deadline* (exact for every item) and a *user* (for the per-user cap and, in
/// FairScheduler, the fair share).
///
/// Thread safety: none; callers serialise (LLMQueue keeps it on one strand).

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

namespace llmq {

/// Request priority. Strict between levels: a queued high request is offered before any
/// normal one, a normal before any low, except that a request moves up one level for
/// every `SchedulerOptions::priority_aging` it has waited.
enum class Priority : std::uint8_t { high = 0, normal = 1, low = 2 };

/// Number of priority levels.
inline constexpr std::size_t kPriorityLevels = 3;

/// The config spelling of a priority ("high", "normal", "low").
[[nodiscard]] constexpr std::string_view to_string(Priority p) noexcept {
  switch (p) {
    case Priority::high:
      return "high";
    case Priority::normal:
      return "normal";
    case Priority::low:
      return "low";
  }
  return "unknown";
}

/// How a scheduler orders requests of one resource class and priority level.
enum class SchedulingPolicy : std::uint8_t {
  fifo,  ///< arrival order (FifoScheduler)
  fair,  ///< deficit round-robin across users by weight, FIFO per user (FairScheduler)
};

/// Bounds and timing of a scheduler.
struct SchedulerOptions {
  /// Live requests the scheduler holds at most; `push` fails beyond it (`push_front`
  /// does not). Must be > 0.
  std::size_t max_size = 1000;
  /// Requests one user may have queued at once; `push` fails beyond it for that user
  /// alone. 0: no cap.
  std::size_t max_queued_per_user = 0;
  /// A request moves up one priority level for every this much it has waited (a low
  /// request reaches high after twice this). Must be > 0.
  std::chrono::nanoseconds priority_aging{std::chrono::seconds(30)};
};

/// Identifies a queued request, for `cancel`.
struct SchedulerTicket {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
};

/// What the scheduler needs to know about a request besides the item itself.
struct QueuedRequest {
  using time_point = std::chrono::steady_clock::time_point;
  /// Resource class (dense small integers: the scheduler keeps one entry per class up to
  /// the largest seen).
  std::uint32_t resource_class = 0;
  /// `expire` removes the request at or after this time.
  time_point deadline{};
  /// When the request entered the queue; aging counts from here (a retried request
  /// passes its original time). Also moves the scheduler's notion of "now" forward.
  time_point enqueued{};
  Priority priority = Priority::normal;
  /// Who asked: the per-user cap and the fair share are per user id. Copied when needed.
  std::string_view user;
  /// Fair-share weight of the user (its tier's), >= 1. Ignored by FifoScheduler.
  std::uint32_t weight = 1;
  /// This user's cap on queued requests (its tier's); nullopt: the scheduler's
  /// max_queued_per_user; 0: no cap.
  std::optional<std::size_t> max_queued_for_user;
};

/// Why `push` refused a request.
enum class SchedulerRefusal : std::uint8_t {
  queue_full,       ///< the scheduler holds max_size requests
  user_queue_full,  ///< this user has max_queued_per_user requests queued
};

/// Outcome of `push`: a ticket, or why not. The item is untouched when refused.
struct SchedulerPushResult {
  std::optional<SchedulerTicket> ticket;
  SchedulerRefusal refusal = SchedulerRefusal::queue_full;  ///< meaningful without a ticket
  explicit operator bool() const noexcept { return ticket.has_value(); }
};

namespace detail {
/// A non-owning reference to a callable, valid for the duration of one call.
template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  template <class F>
  FunctionRef(F& f) noexcept  // NOLINT(google-explicit-constructor): a parameter adapter
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, Args... args) -> R {
          return (*static_cast<F*>(o))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, Args...);
};
}  // namespace detail

/// The scheduler interface. `Item` must be default-constructible and movable.
///
/// Complexity (both implementations): push, push_front, dispatch of one item, cancel
/// and expiry of one item are O(1) amortised, plus O(log n) for an item whose deadline
/// (or aging time) is earlier than that of an item pushed before it, plus O(number of
/// resource classes) to choose among class heads in `dispatch`.
template <class Item>
class Scheduler {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  virtual ~Scheduler() = default;

  /// Live (queued: not cancelled, expired, dispatched or drained) requests.
  [[nodiscard]] virtual std::size_t size() const noexcept = 0;
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  [[nodiscard]] virtual std::size_t max_size() const noexcept = 0;
  /// Requests `user` has queued. FifoScheduler counts only requests pushed under a
  /// per-user cap (it does not track users otherwise); FairScheduler counts all.
  [[nodiscard]] virtual std::size_t queued_for(std::string_view user) const = 0;
  /// Requests queued in `resource_class`.
  [[nodiscard]] virtual std::size_t queued_in(std::uint32_t resource_class) const = 0;
  /// Requests of its class that would be dispatched before `r`, were it pushed now (its
  /// place in line, for a wait prediction), not counting requests that arrive later.
  /// FifoScheduler: everything queued at a better or equal effective priority, O(1).
  /// FairScheduler: the better levels, this user's own queued requests and, for each
  /// other user of the level, what deficit round-robin serves it in the rounds until
  /// this user's turn (to within one round), O(users with requests at that level).
  [[nodiscard]] virtual std::size_t ahead_of(const QueuedRequest& r) const = 0;

  /// Queues `item`. Refused (item untouched) when this user has its cap of requests
  /// queued (`user_queue_full`, checked first) or the scheduler is full.
  SchedulerPushResult push(const QueuedRequest& r, Item&& item) {
    return do_push(r, item, /*front=*/false, /*ages=*/true);
  }

  /// Queues `item` ahead of everything of its priority level (in its class and across
  /// classes): for a request being retried, which has waited longest. Bounded neither by
  /// max_size nor by max_queued_per_user, since the request was admitted once.
  SchedulerTicket push_front(const QueuedRequest& r, Item&& item) {
    return *do_push(r, item, /*front=*/true, /*ages=*/true).ticket;
  }

  /// Queues `item` at normal priority, without a user and without aging (the interface
  /// of the seed's FIFO). Nullopt when full (the item is dropped).
  std::optional<SchedulerTicket> push(std::uint32_t resource_class, Item item,
                                      time_point deadline) {
    return do_push(legacy(resource_class, deadline), item, false, false).ticket;
  }

  /// push_front at normal priority, without a user and without aging.
  SchedulerTicket push_front(std::uint32_t resource_class, Item item, time_point deadline) {
    return *do_push(legacy(resource_class, deadline), item, true, false).ticket;
  }

  /// Removes a queued item. Returns the item if it was still queued.
  std::optional<Item> cancel(SchedulerTicket t) { return do_cancel(t); }

  /// Applies aging up to `now` (requests that have waited long enough move up a level).
  /// `expire` does this too.
  void advance(time_point now) { do_advance(now); }

  /// Applies aging up to `now`, then removes every item whose deadline is at or before
  /// `now`, earliest deadline first, calling `on_expired(Item&&)` for each (after the
  /// item has left the scheduler). Returns how many expired.
  template <class F>
  std::size_t expire(time_point now, F&& on_expired) {
    return do_expire(now, detail::FunctionRef<void(Item &&)>(on_expired));
  }

  /// Offers heads to `try_grant(resource_class, Item&) -> bool`: the best head across
  /// classes by (effective priority, arrival). When it returns true the item is removed
  /// (the callee moved what it needs out of it); when false the class is blocked for
  /// the rest of this call. Stops after `limit` items. Returns the number dispatched.
  /// `try_grant` must not push, cancel or expire.
  template <class F>
  std::size_t dispatch(F&& try_grant, std::size_t limit = std::numeric_limits<std::size_t>::max()) {
    return do_dispatch(detail::FunctionRef<bool(std::uint32_t, Item&)>(try_grant), limit);
  }

  /// Calls `f(resource_class, const Item&)` for the head of every non-empty class (the
  /// item `dispatch` would offer from it), in class order.
  template <class F>
  void for_each_head(F&& f) {
    do_for_each_head(detail::FunctionRef<void(std::uint32_t, const Item&)>(f));
  }

  /// Earliest deadline of a live item, if any. O(1).
  [[nodiscard]] std::optional<time_point> next_deadline() const { return do_next_deadline(); }

  /// Removes every live item, calling `f(Item&&)` for each in arrival order (front-pushed
  /// items first).
  template <class F>
  void drain(F&& f) {
    do_drain(detail::FunctionRef<void(Item &&)>(f));
  }

 protected:
  Scheduler() = default;
  Scheduler(const Scheduler&) = default;
  Scheduler& operator=(const Scheduler&) = default;
  Scheduler(Scheduler&&) noexcept = default;
  Scheduler& operator=(Scheduler&&) noexcept = default;

  /// Moves from `item` only when it returns a ticket. `front` items are never refused.
  virtual SchedulerPushResult do_push(const QueuedRequest& r, Item& item, bool front,
                                      bool ages) = 0;
  virtual std::optional<Item> do_cancel(SchedulerTicket t) = 0;
  virtual void do_advance(time_point now) = 0;
  virtual std::size_t do_expire(time_point now, detail::FunctionRef<void(Item&&)> f) = 0;
  virtual std::size_t do_dispatch(detail::FunctionRef<bool(std::uint32_t, Item&)> f,
                                  std::size_t limit) = 0;
  virtual void do_for_each_head(detail::FunctionRef<void(std::uint32_t, const Item&)> f) = 0;
  [[nodiscard]] virtual std::optional<time_point> do_next_deadline() const = 0;
  virtual void do_drain(detail::FunctionRef<void(Item&&)> f) = 0;

 private:
  static QueuedRequest legacy(std::uint32_t resource_class, time_point deadline) {
    QueuedRequest r;
    r.resource_class = resource_class;
    r.deadline = deadline;
    return r;
  }
};

}  // namespace llmq
