#pragma once
/// @file queue-inl.hpp
/// LLMQueue runtime: admission on the caller's thread, all queue state on one strand, one
/// dispatcher coroutine woken by events, executors spawned per dispatched request. The
/// life of each request is a RequestLifecycle (detail/request_lifecycle.hpp); this file is
/// the thin loop that feeds it events and performs its actions.
/// Compiled once into llmq::llmq by src/queue.cpp, or included by <llmq/queue.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/queue.hpp>

#include <llmq/detail/request_lifecycle.hpp>
#include <llmq/detail/string_hash.hpp>
#include <llmq/errors.hpp>
#include <llmq/fair_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/load_balancer.hpp>
#include <llmq/log.hpp>
#include <llmq/request_validation.hpp>
#include <llmq/token_estimator.hpp>
#include <llmq/user_tiers.hpp>
#include <llmq/wait_predictor.hpp>

#include <llmq/detail/block_pool.hpp>
#include <llmq/detail/light_strand.hpp>
#include <llmq/detail/snapshot.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <deque>
#include <limits>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <unordered_map>
#include <variant>

namespace llmq {
namespace detail {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;
using time_point = steady::time_point;
using std::chrono::duration_cast;
using std::chrono::microseconds;
using Actions = LifecycleActions;
using Answer = LifecycleActions::Answer;

// Helpers of the runtime below.

/// Wall time derived from steady time with one offset taken at first use: one clock read
/// per event instead of two, and timestamps of one request that never go backwards.
inline WallTime wall_at(time_point t) {
  static const auto offset =
      std::chrono::system_clock::now().time_since_epoch() - steady::now().time_since_epoch();
  return WallTime(duration_cast<microseconds>(t.time_since_epoch() + offset));
}

inline Response error_response(errc e, std::string_view message) {
  return Response{make_error_body(message, error_type_of(e), to_string(e)), http_status_of(e)};
}

inline Response cancelled_response() {
  return Response{make_error_body("request cancelled by caller", "cancelled", "cancelled"), 499};
}

/// Appends `v` in base 36 (digits, then lower-case letters).
inline void append_base36(std::string& out, std::uint64_t v) {
  char buf[16];
  char* p = buf + sizeof buf;
  do {
    *--p = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
    v /= 36;
  } while (v != 0);
  out.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
}

/// Six random base-36 characters that tell this queue's request ids from another's.
inline std::string random_prefix() {
  std::random_device rd;
  std::string s;
  append_base36(s, 36ULL * 36 * 36 * 36 * 36 + (rd() % (35ULL * 36 * 36 * 36 * 36 * 36)));
  return s;
}

inline bool valid_user_id(std::string_view id) {
  if (id.empty() || id.size() > 256) return false;
  for (unsigned char c : id)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

/// What a refused user id is recorded as: at most 256 bytes, control characters as '?'.
inline std::string printable_prefix(std::string_view id) {
  std::string out(id.substr(0, 256));
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

inline bool valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

/// a * b for a token estimate and a call count; a negative estimate (an overflow in the
/// estimator) counts as unbounded.
inline std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  if (a < 0) return std::numeric_limits<std::int64_t>::max();
  if (a == 0 || b <= 0) return 0;
  if (a > std::numeric_limits<std::int64_t>::max() / b)
    return std::numeric_limits<std::int64_t>::max();
  return a * b;
}

inline std::string seconds_text(steady::duration d) {
  const auto ms = std::chrono::round<std::chrono::milliseconds>(d).count();
  std::string frac = std::to_string(ms % 1000);
  frac.insert(0, 3 - frac.size(), '0');
  return std::to_string(ms / 1000) + "." + frac;
}

/// The deployments one kind of request may use.
struct ResourceClass {
  std::uint32_t index = 0;
  bool need_llm = false;
  bool need_emb = false;
  std::vector<std::size_t> llm;  // candidate deployment indexes
  std::vector<std::size_t> emb;
  std::int64_t max_llm_tpm = 0;  // the largest tokens_per_min among the candidates
  std::int64_t max_emb_tpm = 0;
  // The candidates registered with the balancer, on the first dispatch (on the strand,
  // which alone touches the balancer; classes are made on callers' threads): a pick by
  // handle skips hashing the candidate list.
  mutable std::optional<WeightedRoundRobinBalancer::CandidateSet> llm_set;
  mutable std::optional<WeightedRoundRobinBalancer::CandidateSet> emb_set;
  // The last time a request of this class found no candidate with room in its windows
  // (not only backoffs): requests queued by then and dispatched since were held for a
  // window (DeploymentStats::paced). Strand only, like the sets.
  mutable time_point llm_held_at = time_point::min();
  mutable time_point emb_held_at = time_point::min();
};

/// A deployment index that no longer exists (a grant whose deployment a reconfiguration
/// removed): the balancer is not told about it any more.
inline constexpr std::size_t kGoneDeployment = std::numeric_limits<std::size_t>::max();

/// One configuration of a queue, replaced as a whole by LLMQueue::reconfigure(). Immutable
/// once published, but for its resource classes, made on first use on any thread.
struct Setup {
  Setup(LLMConfig c, const QueueOptions& o)
      : config((c.validate(), std::move(c))),
        deployments(config.deployments()),
        limits(limits_of(deployments, o)),
        tiers(config) {}

  static DeploymentLimits limits_of(const Deployment& d, const QueueOptions& o) {
    return DeploymentLimits{d.req_per_min,
                            d.tokens_per_min,
                            d.error_backoff,
                            d.weight > 0 ? d.weight : d.req_per_min,
                            o.pace_short_windows,
                            o.pacing_margin,
                            d.priority};
  }
  static std::vector<DeploymentLimits> limits_of(const std::vector<Deployment>& ds,
                                                 const QueueOptions& o) {
    std::vector<DeploymentLimits> out;
    out.reserve(ds.size());
    for (const Deployment& d : ds) out.push_back(limits_of(d, o));
    return out;
  }

  const LLMConfig config;
  const std::vector<Deployment> deployments;
  const std::vector<DeploymentLimits> limits;
  const UserTierTable tiers;
  // Resource classes by preferences, made on first use (any thread).
  mutable std::mutex classes_mutex;
  mutable std::deque<ResourceClass> classes;
  mutable std::unordered_map<std::string, const ResourceClass*> class_index;
  mutable std::atomic<const ResourceClass*> plain_classes[4] = {};  // need_llm | need_emb << 1
};
using SetupPtr = std::shared_ptr<const Setup>;

struct Entry {
  Request request;
  // The configuration the request was resolved against (tier, class); while it runs, also
  // the owner of the deployments `chosen` points to.
  SetupPtr setup;
  std::string tier_name;  // RequestOptions::tier, when the caller named one
  // Separate block: recorded (moved into the telemetry buffer) when the request is done,
  // while the entry itself may live on a little longer.
  std::unique_ptr<TelemetryData, PoolDelete<TelemetryData>> telemetry;
  const ResourceClass* cls = nullptr;
  std::shared_ptr<RequestExecutor> executor;
  DeploymentNeed llm_need;
  DeploymentNeed emb_need;
  RequestLifecycle life;
  SchedulerTicket ticket;
  bool holds_slot = false;             // counts against max_queue_size
  bool in_scheduler = false;           // counted in the per-tier and per-priority depths
  const TierSettings* tier = nullptr;  // null: RequestOptions named an unknown tier
  std::uint32_t tier_index = 0;
  Priority priority = Priority::normal;
  time_point queued_at{};
  time_point deadline{};  // of its current wait in the scheduler
  time_point dispatched_at{};
  time_point exec_deadline = time_point::max();
  std::optional<time_point> first_dispatch;
  std::optional<DeploymentGrant> llm_grant;
  std::optional<DeploymentGrant> emb_grant;
  ChosenDeployments chosen;
  // One signal per executor run; the run's completion handler co-owns it.
  std::shared_ptr<asio::cancellation_signal> exec_cancel;
  std::optional<Response> last_response;  // of the previous attempt, while waiting to retry
  std::string error_text;                 // the message of a refusal decided at admission
  std::optional<std::chrono::milliseconds> retry_after;  // of a refusal, when known
  ErasedHandler deliver;
  // A streamed request's stream (execute_streaming_request); null otherwise.
  std::shared_ptr<StreamState> stream;
  // Intrusive list of running entries, in dispatch (== execution deadline) order, and of
  // entries waiting for the shared budget store.
  Entry* list_prev = nullptr;
  Entry* list_next = nullptr;
  const void* list = nullptr;  // the EntryList it is in
};
using EntryPtr = std::shared_ptr<Entry>;
using TelemetryPtr = std::unique_ptr<TelemetryData, PoolDelete<TelemetryData>>;

/// An intrusive list of entries (no allocation; an entry is in at most one list).
class EntryList {
 public:
  [[nodiscard]] Entry* head() const noexcept { return head_; }
  void push_back(Entry& e) noexcept {
    assert(e.list == nullptr);
    e.list_prev = tail_;
    e.list_next = nullptr;
    (tail_ ? tail_->list_next : head_) = &e;
    tail_ = &e;
    e.list = this;
  }
  /// Removes `e` if it is in this list (else nothing happens).
  void remove(Entry& e) noexcept {
    if (e.list != this) return;
    (e.list_prev ? e.list_prev->list_next : head_) = e.list_next;
    (e.list_next ? e.list_next->list_prev : tail_) = e.list_prev;
    e.list_prev = e.list_next = nullptr;
    e.list = nullptr;
  }
  /// The entries, as pointers (for walks that change the list).
  [[nodiscard]] std::vector<Entry*> snapshot() const {
    std::vector<Entry*> out;
    for (Entry* e = head_; e != nullptr; e = e->list_next) out.push_back(e);
    return out;
  }

 private:
  Entry* head_ = nullptr;
  Entry* tail_ = nullptr;
};

/// Waits, on the strand, until `work` completes or `deadline` passes, whichever is first.
/// Work that outlives the deadline goes on unobserved (it holds what it needs).
class BoundedWait : public std::enable_shared_from_this<BoundedWait> {
 public:
  BoundedWait(asio::any_io_executor strand, std::shared_ptr<Clock> clock)
      : strand_(strand), timer_(strand, std::move(clock)) {}

  /// True when `work` finished in time.
  static asio::awaitable<bool> run(asio::any_io_executor strand, std::shared_ptr<Clock> clock,
                                   asio::awaitable<void> work, time_point deadline) {
    auto w = std::make_shared<BoundedWait>(strand, clock);
    asio::co_spawn(strand, std::move(work), [w](std::exception_ptr) {
      w->done_ = true;
      w->timer_.cancel();
    });
    while (!w->done_ && w->timer_.now() < deadline) {
      w->timer_.expires_at(deadline);
      co_await w->timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return w->done_;
  }

 private:
  asio::any_io_executor strand_;
  ClockTimer timer_;
  bool done_ = false;
};

/// Bounded telemetry buffer flushed by a coroutine on the queue's strand.
class TelemetryPipeline : public std::enable_shared_from_this<TelemetryPipeline> {
 public:
  TelemetryPipeline(asio::any_io_executor strand, std::shared_ptr<TelemetryStore> store,
                    const QueueOptions& o)
      : strand_(strand),
        clock_(o.clock),
        timer_(strand, o.clock),
        stop_timer_(strand, o.clock),
        store_(std::move(store)),
        capacity_(o.telemetry_buffer_capacity),
        batch_size_(std::max<std::size_t>(1, o.telemetry_batch_size)),
        interval_(o.telemetry_flush_interval) {
    batch_.reserve(batch_size_);
  }

  /// Any thread. Never blocks on I/O; drops (and counts) when the buffer is full or the
  /// pipeline has stopped. The record's allocation is kept until its batch is written.
  void record(TelemetryPtr t) {
    bool wake = false;
    {
      std::lock_guard lock(mutex_);
      if (closed_ || buffer_.size() >= capacity_) {
        ++dropped_;
        return;
      }
      buffer_.push_back(std::move(t));
      wake = buffer_.size() >= batch_size_ && !wake_posted_;
      if (wake) wake_posted_ = true;
    }
    if (wake) asio::post(strand_, [self = shared_from_this()] { self->timer_.cancel(); });
  }

  asio::awaitable<void> run() {
    auto self = shared_from_this();
    try {
      co_await store_->connect();
    } catch (const std::exception& e) {
      logger()->error("telemetry store connect failed: {}", e.what());
    }
    while (!stop_requested_) {
      timer_.expires_after(interval_);
      co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      {
        std::lock_guard lock(mutex_);
        wake_posted_ = false;
      }
      co_await flush();
    }
    co_await flush();
    try {
      co_await store_->close();
    } catch (const std::exception& e) {
      logger()->warn("telemetry store close failed: {}", e.what());
    }
  }

  /// Starts the flusher (once).
  void start() {
    started_ = true;
    asio::co_spawn(strand_, run(), [self = shared_from_this()](std::exception_ptr ep) {
      if (ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          logger()->error("telemetry flusher stopped: {}", e.what());
        }
      }
      self->done_ = true;
      self->stop_timer_.cancel();
    });
  }

  /// On the strand: stops after a final flush and the store's close, waiting until
  /// `deadline` at most; records still buffered then are counted as dropped.
  asio::awaitable<void> stop(time_point deadline) {
    auto self = shared_from_this();
    if (!started_ || done_) {
      close_buffer();
      co_return;
    }
    stop_requested_ = true;
    timer_.cancel();
    while (!done_ && stop_timer_.now() < deadline) {
      stop_timer_.expires_at(deadline);  // the flusher's end cancels it
      co_await stop_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!done_)
      logger()->warn(
          "telemetry store did not finish its last writes within shutdown_flush_timeout");
    close_buffer();
  }

  std::uint64_t dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }
  std::uint64_t failed() const { return failed_; }

 private:
  void close_buffer() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    dropped_ += buffer_.size();
    buffer_.clear();
  }

  /// Writes what is buffered, batch_size_ records per insert_batch call, through one
  /// reused batch buffer (no large allocation per flush).
  asio::awaitable<void> flush() {
    for (;;) {
      batch_.clear();
      {
        std::lock_guard lock(mutex_);
        if (buffer_.empty()) co_return;
        const std::size_t n = std::min(batch_size_, buffer_.size());
        for (std::size_t i = 0; i < n; ++i) {
          batch_.push_back(std::move(*buffer_.front()));
          buffer_.pop_front();
        }
      }
      const std::size_t n = batch_.size();
      try {
        co_await store_->insert_batch(std::span<TelemetryData>(batch_));
      } catch (const std::exception& e) {
        failed_ += n;
        static LogThrottle throttle;
        if (auto held = throttle.admit())
          logger()->warn("telemetry store failed to write {} records: {}{}", n, e.what(),
                         held_back_note(*held));
      }
    }
  }

  asio::any_io_executor strand_;  // the queue's strand
  std::shared_ptr<Clock> clock_;
  ClockTimer timer_;
  ClockTimer stop_timer_;
  std::shared_ptr<TelemetryStore> store_;
  std::size_t capacity_;
  std::size_t batch_size_;
  std::chrono::milliseconds interval_;
  mutable std::mutex mutex_;
  std::deque<TelemetryPtr> buffer_;
  std::uint64_t dropped_ = 0;
  bool wake_posted_ = false;
  bool closed_ = false;
  std::vector<TelemetryData> batch_;  // strand only
  std::uint64_t failed_ = 0;          // strand only
  bool stop_requested_ = false;       // strand only
  bool started_ = false;              // strand only
  bool done_ = false;                 // strand only
};

class QueueCore : public std::enable_shared_from_this<QueueCore> {
 public:
  QueueCore(asio::any_io_executor ex, LLMConfig config,
            std::map<std::string, std::shared_ptr<RequestExecutor>> executors, QueueOptions options)
      : base_(ex),
        strand_(make_light_strand(ex)),
        options_(std::move(options)),
        clock_(options_.clock),
        setup_(std::make_shared<const Setup>(std::move(config), options_)),
        balancer_(setup_->limits),
        scheduler_(make_scheduler<EntryPtr>(setup_->config.scheduler_limits.policy,
                                            scheduler_options(setup_->config.scheduler_limits))),
        tier_counts_(setup_->tiers.tiers().size()),
        poll_timer_(strand_, clock_),
        idle_timer_(strand_, clock_),
        id_prefix_(random_prefix()),
        entry_pool_(std::make_shared<BlockPool>(sizeof(Entry) + 64, pool_blocks(setup_->config))),
        telemetry_pool_(
            std::make_shared<BlockPool>(sizeof(TelemetryData), pool_blocks(setup_->config))) {
    published_.store(setup_);
    for (auto& [name, exec] : executors) register_executor(name, std::move(exec));
    if (!options_.user_rate_limit_store) {
      if (clock_)
        options_.user_rate_limit_store =
            std::make_shared<InMemoryUserRateLimitStore>([c = clock_] { return c->now(); });
      else
        options_.user_rate_limit_store = std::make_shared<InMemoryUserRateLimitStore>();
    }
    if (!options_.telemetry_store)
      options_.telemetry_store = std::make_shared<InMemoryTelemetryStore>();
    telemetry_ = std::make_shared<TelemetryPipeline>(strand_, options_.telemetry_store, options_);
  }

  // ---- the facade's entry points -------------------------------------------------------

  [[nodiscard]] const asio::any_io_executor& base_executor() const noexcept { return base_; }
  /// The configuration in use (any thread).
  [[nodiscard]] SetupPtr setup() const noexcept { return published_.load(); }
  [[nodiscard]] std::shared_ptr<TelemetryStore> telemetry_store() const noexcept {
    return options_.telemetry_store;
  }

  void register_executor(const std::string& name, std::shared_ptr<RequestExecutor> exec) {
    if (!exec) throw ConfigError("request executor '" + name + "' is null");
    std::unique_lock lock(executors_mutex_);
    executors_[name] = std::move(exec);
  }

  /// Runs initiate() on the strand.
  asio::awaitable<void> initiate() {
    auto self = shared_from_this();
    co_await asio::co_spawn(strand_, initiate_on_strand(), asio::use_awaitable);
  }

  asio::awaitable<void> graceful_shutdown() {
    auto self = shared_from_this();
    shutdown_requested_.store(true);
    accepting_.store(false);
    co_await asio::co_spawn(strand_, shutdown(), asio::use_awaitable);
  }

  /// Validates `config` (throws ConfigError), then switches to it on the strand.
  asio::awaitable<void> reconfigure(LLMConfig config) {
    auto self = shared_from_this();
    SetupPtr next = std::make_shared<const Setup>(std::move(config), options_);
    co_await asio::co_spawn(strand_, reconfigure_on_strand(std::move(next)), asio::use_awaitable);
  }

  asio::awaitable<QueueStats> stats() {
    // Note: GCC 12 destroys a capturing lambda temporary twice in `co_return co_await
    // co_spawn(ex, [captures] {...})`, so the strand-side work is a member coroutine.
    auto self = shared_from_this();
    QueueStats s = co_await asio::co_spawn(strand_, stats_on_strand(), asio::use_awaitable);
    co_return s;
  }

  /// Called by ~LLMQueue when graceful_shutdown() was not awaited.
  void detach() {
    accepting_.store(false);
    asio::post(strand_, [self = shared_from_this()] {
      if (self->shutdown_done_) return;
      self->abandon_all(errc::queue_closed, "queue destroyed");
      self->stopped_ = true;
      self->poll_timer_.cancel();
      const time_point deadline = self->now() + self->options_.shutdown_flush_timeout;
      asio::co_spawn(self->strand_, self->telemetry_->stop(deadline), asio::detached);
    });
  }

  /// The queue's record of a request, its arguments moved in (any thread).
  EntryPtr prepare(std::string&& req_type, nlohmann::json&& body, std::string&& user_id,
                   ModelPreferences&& prefs, RequestOptions&& options) {
    EntryPtr e = new_entry();
    e->request.req_type = std::move(req_type);
    e->request.body = std::move(body);
    e->request.user_id = std::move(user_id);
    e->request.preferences = std::move(prefs);
    e->request.id = std::move(options.request_id);  // checked in admit()
    e->setup = setup();
    e->tier_name = std::move(options.tier);
    // The tier: named by the caller, else the user's; an unknown name is refused in admit().
    if (bind_tier(*e, *e->setup)) e->priority = options.priority.value_or(e->tier->priority);
    return e;
  }

  /// Admission, on the caller's thread: everything that can refuse the request without the
  /// strand, then the user limit, then the hand-over to the strand.
  void admit(EntryPtr e, ErasedHandler handler, asio::cancellation_slot slot) {
    const time_point t0 = now();
    e->deliver = std::move(handler);
    Request& req = e->request;
    TelemetryData& t = *(e->telemetry = make_pooled<TelemetryData>(telemetry_pool_));
    t.received_at = wall_at(t0);
    t.req_type = req.req_type;
    const bool user_ok = valid_user_id(req.user_id);
    t.user_id = user_ok ? req.user_id : printable_prefix(req.user_id);
    if (req.id.empty()) {
      req.id = next_request_id();
    } else if (!valid_request_id(req.id)) {
      req.id = next_request_id();
      t.request_id = req.id;
      return refuse(e, errc::invalid_request,
                    "request_id must be 1 to 128 printable ASCII characters");
    }
    t.request_id = req.id;
    if (!accepting_.load(std::memory_order_relaxed))
      return refuse(e, failed_.load() ? errc::queue_failed : errc::queue_closed, closed_reason());
    if (req.user_id.empty())
      return refuse(e, errc::user_id_missing, "user id is missing: every request needs a user id");
    if (!user_ok)
      return refuse(e, errc::invalid_user_id,
                    "user id must be 1 to 256 bytes without control characters");
    if (!e->tier) return refuse(e, errc::invalid_request, "unknown tier '" + e->tier_name + "'");
    e->executor = find_executor(req.req_type);
    if (!e->executor)
      return refuse(e, errc::unknown_request_type, "unknown request type '" + req.req_type + "'");
    const Setup& setup = *e->setup;
    auto resolved = resolve(setup, req.preferences);
    if (auto* why = std::get_if<std::string>(&resolved))
      return refuse(e, errc::unsatisfiable_preferences, *why);
    e->cls = std::get<const ResourceClass*>(resolved);
    if (options_.max_json_depth > 0 && !json_within_depth(req.body, options_.max_json_depth))
      return refuse(e, errc::invalid_request,
                    "request body nests arrays and objects deeper than " +
                        std::to_string(options_.max_json_depth) + " levels");
    if (auto why = estimate(*e, req.body, req.preferences))
      return refuse(e, errc::request_too_large, *why);
    const std::size_t max_queue = setup.config.scheduler_limits.max_queue_size;
    if (!reserve_slot(max_queue))
      return refuse(e, errc::queue_full,
                    "scheduler queue is full (max_queue_size " + std::to_string(max_queue) + ")");
    e->holds_slot = true;
    if (options_.record_payload) t.payload = req.body;
    if (slot.is_connected()) slot.emplace<CancelHandler>(CancelHandler{weak_from_this(), e});
    // The user limit comes last, so that a refused request is not counted against it.
    UserRateLimitStore& store = *options_.user_rate_limit_store;
    if (auto decision = store.try_acquire_now(req.user_id, e->tier->limits)) {
      limit_decided(e, *decision);
      return;
    }
    asio::co_spawn(base_, acquire_user_limit(shared_from_this(), std::move(e)), asio::detached);
  }

 private:
  friend class llmq::LLMQueue;

  struct CancelHandler {
    std::weak_ptr<QueueCore> core;
    std::weak_ptr<Entry> entry;
    void operator()(asio::cancellation_type_t type) const {
      if (type == asio::cancellation_type::none) return;
      auto c = core.lock();
      if (!c) return;
      asio::post(c->strand_, [c, e = entry, type] {
        if (auto p = e.lock()) c->apply(p, p->life.cancel(type), c->now());
      });
    }
  };

  [[nodiscard]] time_point now() const { return clock_ ? clock_->now() : steady::now(); }

  /// Freed entries and records kept for reuse: about a full queue's worth, within bounds.
  static std::size_t pool_blocks(const LLMConfig& c) {
    return std::clamp<std::size_t>(c.scheduler_limits.max_queue_size, 256, 16384);
  }

  EntryPtr new_entry() { return std::allocate_shared<Entry>(PoolAllocator<Entry>(entry_pool_)); }

  static SchedulerOptions scheduler_options(const SchedulerLimits& l) {
    SchedulerOptions o;
    o.max_size = l.max_queue_size;
    o.max_queued_per_user = l.max_queued_per_user;
    o.priority_aging = l.priority_aging;
    return o;
  }

  /// The entry's tier in `s`: the one it names, else its user's. False when it names a
  /// tier `s` does not have.
  static bool bind_tier(Entry& e, const Setup& s) {
    e.tier =
        e.tier_name.empty() ? &s.tiers.lookup(e.request.user_id) : s.tiers.find_tier(e.tier_name);
    if (e.tier == nullptr) return false;
    e.tier_index = static_cast<std::uint32_t>(e.tier - s.tiers.tiers().data());
    return true;
  }

  std::shared_ptr<RequestExecutor> find_executor(const std::string& name) const {
    std::shared_lock lock(executors_mutex_);
    auto it = executors_.find(name);
    return it == executors_.end() ? nullptr : it->second;
  }

  std::string closed_reason() const {
    if (failed_.load()) return "queue dispatcher failed; request refused";
    return shutdown_requested_.load() ? std::string("queue is shutting down; request refused")
                                      : std::string("queue is not running: call initiate() first");
  }

  // ---- admission (any thread) --------------------------------------------------------

  /// Resolves preferences to a resource class, or explains why none can serve them.
  static std::variant<const ResourceClass*, std::string> resolve(const Setup& s,
                                                                 const ModelPreferences& p) {
    if (p.specific_llm_model && !p.require_llm_model)
      return std::string("specific_llm_model is set but require_llm_model is false");
    if (p.specific_embedding_model && !p.require_embedding_model)
      return std::string("specific_embedding_model is set but require_embedding_model is false");
    if (p.require_llm_model && p.num_llm_calls_per_req < 1)
      return std::string("num_llm_calls_per_req must be at least 1");
    if (p.require_embedding_model && p.num_emb_calls_per_req < 1)
      return std::string("num_emb_calls_per_req must be at least 1");
    // Without pins or model names the class depends on the two flags alone: no key, no lock.
    const bool plain = !p.specific_llm_model && !p.specific_embedding_model && !p.llm_model_name &&
                       !p.embedding_model_name;
    std::atomic<const ResourceClass*>& plain_slot =
        s.plain_classes[(p.require_llm_model ? 1U : 0U) | (p.require_embedding_model ? 2U : 0U)];
    if (plain) {
      if (const ResourceClass* c = plain_slot.load(std::memory_order_acquire)) return c;
    }
    // The class key is built in a buffer each thread keeps: no allocation per request.
    thread_local std::string key;
    key.clear();
    auto add_key = [](bool need, const std::optional<std::string>& id,
                      const std::optional<std::string>& name) {
      key += need ? '1' : '0';
      if (id) key += *id;
      key += '\x1f';
      if (name) key += *name;
      key += '\x1e';
    };
    add_key(p.require_llm_model, p.specific_llm_model, p.llm_model_name);
    add_key(p.require_embedding_model, p.specific_embedding_model, p.embedding_model_name);
    {
      std::lock_guard lock(s.classes_mutex);
      if (auto it = s.class_index.find(key); it != s.class_index.end()) return it->second;
    }
    ResourceClass rc;
    if (p.require_llm_model) {
      rc.need_llm = true;
      auto err = candidates(s, true, p.specific_llm_model, p.llm_model_name, rc.llm);
      if (!err.empty()) return err;
      for (std::size_t i : rc.llm)
        rc.max_llm_tpm = std::max(rc.max_llm_tpm, s.limits[i].tokens_per_min);
    }
    if (p.require_embedding_model) {
      rc.need_emb = true;
      auto err = candidates(s, false, p.specific_embedding_model, p.embedding_model_name, rc.emb);
      if (!err.empty()) return err;
      for (std::size_t i : rc.emb)
        rc.max_emb_tpm = std::max(rc.max_emb_tpm, s.limits[i].tokens_per_min);
    }
    std::lock_guard lock(s.classes_mutex);
    if (auto it = s.class_index.find(key); it != s.class_index.end()) return it->second;
    rc.index = static_cast<std::uint32_t>(s.classes.size());
    s.classes.push_back(std::move(rc));
    const ResourceClass* out = &s.classes.back();
    s.class_index.emplace(key, out);
    if (plain) plain_slot.store(out, std::memory_order_release);
    return out;
  }

  static std::string candidates(const Setup& s, bool llm, const std::optional<std::string>& id,
                                const std::optional<std::string>& name,
                                std::vector<std::size_t>& out) {
    const char* kind = llm ? "LLM (chat/completion)" : "embeddings";
    const char* id_key = llm ? "specific_llm_model" : "specific_embedding_model";
    const char* name_key = llm ? "llm_model_name" : "embedding_model_name";
    for (std::size_t i = 0; i < s.deployments.size(); ++i) {
      const Deployment& d = s.deployments[i];
      if (is_llm(d.model_type) != llm) continue;
      if (id && d.unique_model_id != *id) continue;
      if (name && d.model_name_in_azure != *name) continue;
      out.push_back(i);
    }
    if (!out.empty()) return {};
    if (id) {
      for (const Deployment& d : s.deployments)
        if (d.unique_model_id == *id)
          return std::string(id_key) + " '" + *id + "' is not an " + kind + " deployment" +
                 (name ? " of model '" + *name + "'" : std::string());
      return std::string(id_key) + " '" + *id + "' is not a configured unique_model_id";
    }
    if (name) return std::string(name_key) + " '" + *name + "' matches no " + kind + " deployment";
    return std::string("no ") + kind + " deployment is configured";
  }

  /// Estimates the request's tokens per deployment kind; explains why it could never be
  /// dispatched when the estimate exceeds the tokens_per_min of every candidate.
  std::optional<std::string> estimate(Entry& e, const nlohmann::json& body,
                                      const ModelPreferences& p) {
    const ResourceClass& rc = *e.cls;
    if (rc.need_llm) {
      e.llm_need.calls = p.num_llm_calls_per_req;
      e.llm_need.tokens = saturating_mul(estimate_chat_tokens(body, options_.default_max_tokens),
                                         p.num_llm_calls_per_req);
    }
    if (rc.need_emb) {
      e.emb_need.calls = p.num_emb_calls_per_req;
      e.emb_need.tokens = saturating_mul(estimate_embedding_tokens(body), p.num_emb_calls_per_req);
    }
    const std::int64_t total =
        e.llm_need.tokens > std::numeric_limits<std::int64_t>::max() - e.emb_need.tokens
            ? std::numeric_limits<std::int64_t>::max()
            : e.llm_need.tokens + e.emb_need.tokens;
    e.telemetry->estimated_tokens = total;
    return too_large(e, rc);
  }

  /// Why no deployment of `rc` could ever take the entry's estimate, if none can.
  static std::optional<std::string> too_large(const Entry& e, const ResourceClass& rc) {
    auto why = [](const char* kind, std::int64_t need, std::int64_t tpm) {
      return "the request's estimated " + std::string(kind) + " tokens (" + std::to_string(need) +
             ") exceed the tokens_per_min of every deployment that could serve it (at most " +
             std::to_string(tpm) + "); lower max_tokens or the prompt";
    };
    if (rc.need_llm && e.llm_need.tokens > rc.max_llm_tpm)
      return why("chat", e.llm_need.tokens, rc.max_llm_tpm);
    if (rc.need_emb && e.emb_need.tokens > rc.max_emb_tpm)
      return why("embedding", e.emb_need.tokens, rc.max_emb_tpm);
    return std::nullopt;
  }

  bool reserve_slot(std::size_t max_queue) {
    const std::size_t prev = reserved_.fetch_add(1, std::memory_order_relaxed);
    if (prev < max_queue) return true;
    reserved_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void release_slot(Entry& e) {
    if (!e.holds_slot) return;
    e.holds_slot = false;
    reserved_.fetch_sub(1, std::memory_order_relaxed);
  }
  /// A request that goes back in line takes a slot again (not bounded: it was admitted).
  void retake_slot(Entry& e) {
    if (e.holds_slot) return;
    e.holds_slot = true;
    reserved_.fetch_add(1, std::memory_order_relaxed);
  }

  /// "<prefix>-<counter>" (both base 36): at most 15 characters for the first 2.8e12
  /// requests, so the id stays inside std::string's inline buffer.
  std::string next_request_id() {
    const std::uint64_t n = next_id_.fetch_add(1, std::memory_order_relaxed);
    std::string id = id_prefix_;
    id += '-';
    append_base36(id, n);
    return id;
  }

  /// Refuses a request that has not entered the scheduler (any thread).
  void refuse(const EntryPtr& e, errc why, std::string message,
              std::optional<std::chrono::milliseconds> retry_after = std::nullopt) {
    e->error_text = std::move(message);
    e->retry_after = retry_after;
    apply(e, e->life.refused(why), now(), nullptr, /*on_strand=*/false);
  }

  static asio::awaitable<void> acquire_user_limit(std::shared_ptr<QueueCore> self, EntryPtr e) {
    RateLimitDecision decision;
    std::optional<std::string> failure;
    std::optional<std::chrono::milliseconds> hint;
    try {
      decision = co_await self->options_.user_rate_limit_store->acquire(e->request.user_id,
                                                                        e->tier->limits);
    } catch (const Error& ex) {
      failure = ex.what();
      hint = ex.retry_after_hint();
    } catch (const std::exception& ex) {
      failure = std::string("user rate limit store failed: ") + ex.what();
    }
    if (failure) {
      self->refuse(e, errc::user_limit_store_unavailable, *failure, hint);
      co_return;
    }
    self->limit_decided(e, decision);
  }

  void limit_decided(const EntryPtr& e, const RateLimitDecision& d) {
    if (!d.allowed) {
      UserRateLimitExceededError err(e->request.user_id, d.retry_after);
      return refuse(e, errc::user_rate_limited, err.what(),
                    std::chrono::ceil<std::chrono::milliseconds>(d.retry_after));
    }
    asio::post(strand_, [self = shared_from_this(), e]() mutable { self->on_submit(e); });
  }

  // ---- the finishing path and the other actions (strand) -----------------------------

  void count(errc why) {
    switch (why) {
      case errc::user_rate_limited:
        ++rejected_user_limit_;
        break;
      case errc::queue_full:
        ++rejected_queue_full_;
        break;
      case errc::queue_timeout:
        ++timed_out_;
        break;
      case errc::execution_timeout:
        ++execution_timeouts_;
        break;
      case errc::queue_closed:
      case errc::queue_failed:
        ++rejected_closed_;
        break;
      case errc::user_limit_store_unavailable:
      case errc::budget_store_unavailable:
        ++rejected_store_;
        break;
      default:
        ++rejected_invalid_;
        break;
    }
  }

  /// The message of an error answer, with what the request's state tells.
  std::string error_message(const Entry& e, errc why, time_point at) const {
    if (!e.error_text.empty()) return e.error_text;
    switch (why) {
      case errc::queue_timeout:
        return "request waited " + seconds_text(at - e.queued_at) +
               " s in the queue without being dispatched (request_timeout_seconds)";
      case errc::execution_timeout:
        return "request executor did not finish within execution_timeout";
      case errc::queue_closed:
        return abandon_reason_.empty() ? closed_reason() : abandon_reason_;
      case errc::queue_failed:
        return "queue dispatcher failed: " + failure_;
      default:
        return std::string(make_error_code(why).message());
    }
  }

  /// Performs a lifecycle step's actions at `t`, in their documented order. `current` is
  /// the Response of the attempt that just ended, if any. Off the strand (`on_strand`
  /// false) only for a request that never entered the scheduler: its actions touch no
  /// strand state.
  void apply(const EntryPtr& e, const Actions& a, time_point t, Response* current = nullptr,
             bool on_strand = true) {
    if (a.any()) perform(*e, &e, a, t, current, on_strand);
  }
  /// The same for an entry reached through a list (confirming or running): the actions of
  /// such a step (answer, cancel, finish) never need to share the entry.
  void apply(Entry& e, const Actions& a, time_point t) {
    if (a.any()) perform(e, nullptr, a, t, nullptr, true);
  }

  void perform(Entry& e, const EntryPtr* owner, const Actions& a, time_point t, Response* current,
               bool on_strand) {
    if (a.remove_from_queue) {
      if (e.in_scheduler) {
        scheduler_->cancel(e.ticket);
        unscheduled(e);
      }
      release_slot(e);
    }
    if (a.refund_grants) refund(e);
    if (a.answer != Answer::none) answer(e, a, current, t);
    if (a.cancel_executor && e.exec_cancel) e.exec_cancel->emit(asio::cancellation_type::terminal);
    if (a.keep_response && current) e.last_response = std::move(*current);
    if (a.requeue || a.confirm || a.start_executor) {
      assert(owner != nullptr);
      if (a.requeue) requeue(*owner);
      if (a.confirm) begin_confirm(*owner);
      if (a.start_executor) start(*owner, t);
    }
    if (a.finish) finish(e, t, on_strand);
  }

  void answer(Entry& e, const Actions& a, Response* current, time_point at) {
    TelemetryData& t = *e.telemetry;
    boost::system::error_code ec;
    Response r;
    switch (a.answer) {
      case Answer::none:
        return;
      case Answer::error: {
        count(a.error);
        ec = make_error_code(a.error);
        const std::string message = error_message(e, a.error, at);
        r = error_response(a.error, message);
        r.retry_after = e.retry_after;
        t.error = message;
        if (a.error == errc::queue_timeout)
          t.queue_wait = duration_cast<microseconds>(at - e.queued_at);
        break;
      }
      case Answer::cancelled:
        ++cancelled_;
        ec = asio::error::operation_aborted;
        r = cancelled_response();
        t.error = e.life.has_run() ? "cancelled by caller" : "cancelled by caller while queued";
        if (!e.first_dispatch) t.queue_wait = duration_cast<microseconds>(at - e.queued_at);
        break;
      case Answer::response:
      case Answer::last_response:
        ++completed_;
        if (a.answer == Answer::last_response) {
          r = std::move(*e.last_response);
          e.last_response.reset();
        } else if (current) {
          r = std::move(*current);
        }
        if (r.status >= 400 && t.error.empty()) t.error = error_message_of(r.body);
        break;
    }
    t.status = r.status;
    t.completed_at = wall_at(at);
    r.request_id = e.request.id;
    e.deliver(ec, std::move(r));
  }

  /// The one finishing path: the request is done; its record goes to telemetry.
  void finish(Entry& e, time_point at, bool on_strand) {
    release_slot(e);
    TelemetryData& t = *e.telemetry;
    if (t.completed_at == WallTime{}) t.completed_at = wall_at(at);
    if (e.first_dispatch) t.execution_time = duration_cast<microseconds>(at - *e.first_dispatch);
    if (e.stream) {
      if (const auto times = e.stream->chunk_times()) {
        t.streamed = true;
        t.time_to_first_token = duration_cast<microseconds>(times->first - e.queued_at);
        t.stream_duration = duration_cast<microseconds>(std::max(at, times->second) - times->first);
      }
    }
    telemetry_->record(std::move(e.telemetry));
    records_.fetch_add(1, std::memory_order_relaxed);
    if (!on_strand) return;
    if (!scheduler_->empty()) wake();
    notify_idle();
  }

  void refund(Entry& e) {
    for (const std::optional<DeploymentGrant>* g : {&e.llm_grant, &e.emb_grant})
      if (*g && (*g)->deployment != kGoneDeployment) balancer_.refund(**g);
    e.llm_grant.reset();
    e.emb_grant.reset();
    e.chosen = ChosenDeployments{};
  }

  // ---- submission and the dispatcher (strand) ----------------------------------------

  void on_submit(const EntryPtr& e) {
    if (e->life.done()) return;  // cancelled on its way here
    if (!accepting_.load(std::memory_order_relaxed) || stopped_) {
      apply(e, e->life.abandon(failed_.load() ? errc::queue_failed : errc::queue_closed), now());
      return;
    }
    if (e->setup != setup_) {  // admitted under a configuration replaced since
      if (const std::optional<errc> why = rebind(*e)) return refuse(e, *why, e->error_text);
    }
    const SchedulerLimits& limits = setup_->config.scheduler_limits;
    const time_point t = now();
    e->telemetry->queued_at = wall_at(t);
    e->queued_at = t;
    e->deadline = t + limits.request_timeout;
    const QueuedRequest qr = queued_request(*e, t);
    if (limits.predictive_admission) {
      const DispatchRateEstimator& rate = class_rate(e->cls->index);
      const std::uint64_t ahead = scheduler_->ahead_of(qr);
      const std::optional<std::chrono::nanoseconds> wait = predict_wait(rate, ahead);
      if (wait && *wait > limits.request_timeout) {
        ++rejected_predicted_;
        refuse(e, errc::queue_full,
               "the queue would not reach this request within request_timeout_seconds (" +
                   std::to_string(ahead) + " ahead of it)",
               std::chrono::ceil<std::chrono::seconds>(*wait));
        return;
      }
    }
    SchedulerPushResult pushed = scheduler_->push(qr, EntryPtr(e));
    if (!pushed) {
      if (pushed.refusal == SchedulerRefusal::user_queue_full) {
        ++rejected_user_queue_full_;
        refuse(e, errc::queue_full,
               "user has max_queued_per_user (" + std::to_string(e->tier->max_queued_per_user) +
                   ") requests queued");
      } else {  // cannot happen while reservations bound the queue; kept as a guard
        refuse(e, errc::queue_full, "scheduler queue is full");
      }
      return;
    }
    e->ticket = *pushed.ticket;
    scheduled(*e);
    e->life.queued();
    ++admitted_;
    ++tier_counts_[e->tier_index].admitted;
    wake();
  }

  void wake() {
    if (poller_waiting_ && !wake_pending_) {
      wake_pending_ = true;
      poll_timer_.cancel();
    }
  }

  /// What the scheduler needs to know of a request queued at `enqueued`.
  static QueuedRequest queued_request(const Entry& e, time_point enqueued) {
    QueuedRequest r;
    r.resource_class = e.cls->index;
    r.deadline = e.deadline;
    r.enqueued = enqueued;
    r.priority = e.priority;
    r.user = e.request.user_id;
    r.weight = std::max<std::uint32_t>(1, e.tier->weight);
    r.max_queued_for_user = e.tier->max_queued_per_user;
    return r;
  }

  /// The entry entered (scheduled) or left (unscheduled) the scheduler.
  void scheduled(Entry& e) {
    e.in_scheduler = true;
    ++tier_counts_[e.tier_index].queued;
    ++priority_counts_[static_cast<std::size_t>(e.priority)];
    if (options_.stats_top_users > 0) {
      auto it = user_queued_.find(std::string_view(e.request.user_id));
      if (it == user_queued_.end()) it = user_queued_.emplace(e.request.user_id, 0).first;
      ++it->second;
    }
  }
  void unscheduled(Entry& e) {
    if (!e.in_scheduler) return;
    e.in_scheduler = false;
    --tier_counts_[e.tier_index].queued;
    --priority_counts_[static_cast<std::size_t>(e.priority)];
    if (options_.stats_top_users > 0) {
      auto it = user_queued_.find(std::string_view(e.request.user_id));
      if (it != user_queued_.end() && --it->second == 0) user_queued_.erase(it);
    }
  }

  DispatchRateEstimator& class_rate(std::uint32_t cls) {
    if (cls >= class_rates_.size()) class_rates_.resize(cls + 1);
    return class_rates_[cls];
  }

  /// Requests dispatched per dispatcher turn at most.
  static constexpr std::size_t kDispatchSlice = 64;

  asio::awaitable<void> poller() {
    auto self = shared_from_this();
    try {
      while (!stopped_) {
        wake_pending_ = false;
        const time_point t = now();
        queue_pending_retries();
        scheduler_->expire(t, [&](EntryPtr&& e) {
          unscheduled(*e);
          apply(e, e->life.deadline(), t);
        });
        expire_running(t);
        const std::size_t dispatched = scheduler_->dispatch(
            [&](std::uint32_t, EntryPtr& e) { return try_dispatch(e, t); }, kDispatchSlice);
        if (!retry_pending_.empty()) continue;
        if (dispatched == kDispatchSlice) {
          // More may be ready: let the work just started (and everything else on this
          // thread) run first, then go on. Keeps each turn short under a deep queue.
          co_await asio::post(strand_, asio::use_awaitable);
          continue;
        }
        poll_timer_.expires_at(next_wake(t));
        poller_waiting_ = true;
        co_await poll_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
        poller_waiting_ = false;
      }
    } catch (const std::exception& ex) {
      fail(ex.what());
    } catch (...) {
      fail("unknown exception");
    }
  }

  /// The dispatcher failed: loud, and nobody waits for it. Every waiting caller is
  /// answered with errc::queue_failed and new calls are refused.
  void fail(const std::string& what) {
    logger()->critical(
        "llmq: the queue's dispatcher failed ({}); every waiting request is "
        "answered with queue_failed and new requests are refused",
        what);
    failure_ = what;
    failed_.store(true);
    accepting_.store(false);
    stopped_ = true;
    poller_waiting_ = false;
    abandon_all(errc::queue_failed, {});
  }

  time_point next_wake(time_point t) {
    time_point next = time_point::max();
    if (auto d = scheduler_->next_deadline()) next = std::min(next, *d);
    if (Entry* r = running_.head()) next = std::min(next, r->exec_deadline);
    scheduler_->for_each_head([&](std::uint32_t, const EntryPtr& e) {
      time_point at = t;
      if (e->cls->need_llm) at = std::max(at, balancer_.next_eligible(e->cls->llm, e->llm_need, t));
      if (e->cls->need_emb) at = std::max(at, balancer_.next_eligible(e->cls->emb, e->emb_need, t));
      // A blocked head is never eligible "now"; never spin.
      next = std::min(next, std::max(at, t + std::chrono::milliseconds(1)));
    });
    return next;
  }

  bool try_dispatch(EntryPtr& e, time_point t) {
    const ResourceClass& rc = *e->cls;
    std::optional<WeightedRoundRobinBalancer::Selection> ls;
    std::optional<WeightedRoundRobinBalancer::Selection> es;
    if (rc.need_llm && !rc.llm_set) rc.llm_set = balancer_.candidate_set(rc.llm);
    if (rc.need_emb && !rc.emb_set) rc.emb_set = balancer_.candidate_set(rc.emb);
    if (rc.need_llm && !(ls = balancer_.pick(*rc.llm_set, e->llm_need, t))) {
      if (rc.llm_held_at != t && balancer_.held_for_windows(rc.llm, t)) rc.llm_held_at = t;
      return false;
    }
    if (rc.need_emb && !(es = balancer_.pick(*rc.emb_set, e->emb_need, t))) {
      if (rc.emb_held_at != t && balancer_.held_for_windows(rc.emb, t)) rc.emb_held_at = t;
      return false;
    }
    // Paced: its first dispatch, and its class was held for a window while it waited.
    const bool first = !e->first_dispatch;
    if (ls) {
      if (first && rc.llm_held_at >= e->queued_at) balancer_.count_paced(ls->deployment);
      e->llm_grant = balancer_.commit(*ls, e->llm_need, t);
      e->chosen.llm = &e->setup->deployments[ls->deployment];
      e->telemetry->llm_deployment = e->chosen.llm->unique_model_id;
    }
    if (es) {
      if (first && rc.emb_held_at >= e->queued_at) balancer_.count_paced(es->deployment);
      e->emb_grant = balancer_.commit(*es, e->emb_need, t);
      e->chosen.embedding = &e->setup->deployments[es->deployment];
      e->telemetry->embedding_deployment = e->chosen.embedding->unique_model_id;
    }
    release_slot(*e);
    unscheduled(*e);
    if (setup_->config.scheduler_limits.predictive_admission) {
      const std::uint32_t cls = rc.index;
      class_rate(cls).record(t, 1, scheduler_->queued_in(cls) - 1);
    }
    EntryPtr entry = std::move(e);
    apply(entry, entry->life.dispatched(options_.deployment_budget_store != nullptr), t);
    return true;
  }

  void expire_running(time_point t) {
    while (Entry* r = running_.head()) {
      if (r->exec_deadline > t) break;
      running_.remove(*r);
      // The entry stays alive: its executor's coroutine holds it (and its grants).
      overdue_.push_back(*r);
      apply(*r, r->life.execution_deadline(), t);
    }
  }

  /// Puts a request back in line: the poller queues it at the front on its next turn.
  void requeue(const EntryPtr& e) {
    retake_slot(*e);
    retry_pending_.push_back(e);
    wake();
  }

  void queue_pending_retries() {
    for (EntryPtr& e : retry_pending_) {
      if (!e->life.in_queue()) continue;  // cancelled or abandoned meanwhile
      if (e->setup != setup_) {           // it ran under a configuration replaced since
        if (const std::optional<errc> why = rebind(*e)) {
          apply(e, e->life.abandon(*why), now());
          continue;
        }
      }
      // A retry is bounded by the retry budget; a request the shared budget store sent
      // back before its first run keeps its queue deadline.
      e->deadline = e->first_dispatch
                        ? *e->first_dispatch + options_.retry_budget
                        : e->queued_at + setup_->config.scheduler_limits.request_timeout;
      e->ticket = scheduler_->push_front(queued_request(*e, e->queued_at), EntryPtr(e));
      scheduled(*e);
    }
    retry_pending_.clear();
  }

  // ---- reconfiguration (strand) ------------------------------------------------------

  /// Binds a request resolved against an earlier configuration to the current one: its
  /// tier (the one it names, else its user's; the default when the named one is gone) and
  /// its resource class. The error (the reason in error_text) when the current
  /// deployments cannot serve it.
  std::optional<errc> rebind(Entry& e) {
    const Setup& s = *setup_;
    if (!bind_tier(e, s)) {
      e.tier = &s.tiers.default_tier();
      e.tier_index = 0;
    }
    auto resolved = resolve(s, e.request.preferences);
    if (auto* why = std::get_if<std::string>(&resolved)) {
      e.error_text = *why + " (since the queue was reconfigured)";
      return errc::unsatisfiable_preferences;
    }
    const ResourceClass* cls = std::get<const ResourceClass*>(resolved);
    if (auto why = too_large(e, *cls)) {
      e.error_text = *why + " (since the queue was reconfigured)";
      return errc::request_too_large;
    }
    e.cls = cls;
    e.setup = setup_;
    return std::nullopt;
  }

  /// Switches to `next`: deployments matched by unique_model_id keep their windows,
  /// backoff and counters; requests holding a grant keep it (and finish on the deployment
  /// they have); waiting requests are resolved again, in their order, into a scheduler
  /// made for the new limits; those the new deployments cannot serve are answered.
  asio::awaitable<void> reconfigure_on_strand(SetupPtr next) {
    auto self = shared_from_this();
    const time_point t = now();
    const Setup& old = *setup_;
    std::unordered_map<std::string_view, std::size_t> old_index;
    for (std::size_t i = 0; i < old.deployments.size(); ++i)
      old_index.emplace(old.deployments[i].unique_model_id, i);
    std::vector<std::size_t> moved_to(old.deployments.size(), kGoneDeployment);
    WeightedRoundRobinBalancer balancer(next->limits);
    for (std::size_t j = 0; j < next->deployments.size(); ++j) {
      const auto it = old_index.find(next->deployments[j].unique_model_id);
      if (it == old_index.end()) continue;
      balancer.take_over(j, balancer_, it->second, t);
      moved_to[it->second] = j;
    }
    balancer_ = std::move(balancer);
    auto remap = [&](std::optional<DeploymentGrant>& g) {
      if (g && g->deployment != kGoneDeployment) g->deployment = moved_to[g->deployment];
    };
    for (const EntryList* list : {&confirming_, &running_, &overdue_})
      for (Entry* e = list->head(); e != nullptr; e = e->list_next) {
        remap(e->llm_grant);
        remap(e->emb_grant);
      }

    // Requests waiting, retries first, in the order they would have been served.
    queue_pending_retries();
    std::vector<EntryPtr> waiting;
    waiting.reserve(scheduler_->size());
    scheduler_->drain([&](EntryPtr&& e) {
      e->in_scheduler = false;
      waiting.push_back(std::move(e));
    });
    std::vector<TierCounts> counts(next->tiers.tiers().size());
    for (std::size_t i = 0; i < counts.size(); ++i)
      for (std::size_t k = 0; k < tier_counts_.size(); ++k)
        if (old.tiers.tiers()[k].name == next->tiers.tiers()[i].name)
          counts[i].admitted = tier_counts_[k].admitted;
    tier_counts_ = std::move(counts);
    priority_counts_ = {};
    user_queued_.clear();
    class_rates_.clear();
    scheduler_ = make_scheduler<EntryPtr>(next->config.scheduler_limits.policy,
                                          scheduler_options(next->config.scheduler_limits));
    setup_ = next;
    published_.store(std::move(next));
    // Pushed to the front in reverse, so that they keep their order ahead of new arrivals
    // (and are bounded neither by a smaller max_queue_size nor per-user caps).
    for (auto it = waiting.rbegin(); it != waiting.rend(); ++it) {
      EntryPtr& e = *it;
      if (const std::optional<errc> why = rebind(*e)) {
        apply(e, e->life.abandon(*why), t);
        continue;
      }
      e->ticket = scheduler_->push_front(queued_request(*e, e->queued_at), EntryPtr(e));
      scheduled(*e);
    }
    logger()->info("llmq: reconfigured: {} deployments, {} requests waiting",
                   setup_->deployments.size(), scheduler_->size());
    wake();
    co_return;
  }

  // ---- shared deployment budgets ------------------------------------------------------

  void begin_confirm(const EntryPtr& e) {
    ++in_flight_;
    confirming_.push_back(*e);
    asio::co_spawn(strand_, confirm(e), [](std::exception_ptr ep) {
      if (ep) logger()->error("llmq: budget confirmation failed unexpectedly");
    });
  }

  /// Asks the shared store to charge what the local balancer granted; then runs the
  /// request, or puts it back at the front of the queue with the refusing deployment held.
  asio::awaitable<void> confirm(EntryPtr e) {
    auto self = shared_from_this();
    std::optional<std::chrono::milliseconds> refused;
    const std::optional<DeploymentGrant>* refused_grant = nullptr;
    bool store_failed_closed = false;
    for (const std::optional<DeploymentGrant>* g : {&e->llm_grant, &e->emb_grant}) {
      if (!g->has_value()) continue;
      // The deployment as granted (a reconfiguration meanwhile does not change it).
      const Deployment& d = g == &e->llm_grant ? *e->chosen.llm : *e->chosen.embedding;
      const DeploymentLimits limits = Setup::limits_of(d, options_);
      try {
        const BudgetDecision bd =
            co_await options_.deployment_budget_store->try_charge(d, limits, (*g)->need);
        if (!bd.allowed) {
          refused = bd.retry_after;
          refused_grant = g;
          break;
        }
      } catch (const std::exception& ex) {
        ++budget_store_errors_;
        static LogThrottle throttle;
        if (auto held = throttle.admit())
          logger()->warn("llmq: deployment budget store failed ({}): {}{}", d.unique_model_id,
                         ex.what(), held_back_note(*held));
        if (!options_.budget_store_fail_open) {
          store_failed_closed = true;
          break;
        }
      }
    }
    --in_flight_;
    confirming_.remove(*e);
    if (store_failed_closed) {
      apply(e, e->life.confirm_failed_closed(), now());
      co_return;
    }
    if (!refused) {
      apply(e, e->life.confirmed(), now());
      co_return;
    }
    ++budget_refusals_;
    // What the shared budget refused must not use up this queue's own windows.
    if (const std::size_t d = (*refused_grant)->deployment; d != kGoneDeployment)
      balancer_.hold(d, now() + std::max<steady::duration>(*refused, std::chrono::milliseconds(1)));
    apply(e, e->life.confirm_refused(), now());
  }

  void share_backoff(std::size_t deployment, steady::duration wait) {
    if (!options_.deployment_budget_store) return;
    auto work = options_.deployment_budget_store->report_backoff(
        setup_->deployments[deployment], std::chrono::ceil<std::chrono::milliseconds>(wait));
    asio::co_spawn(strand_, std::move(work), [](std::exception_ptr ep) {
      static LogThrottle throttle;
      if (!ep) return;
      if (auto held = throttle.admit())
        logger()->warn("llmq: could not share a deployment backoff{}", held_back_note(*held));
    });
  }

  // ---- executors ---------------------------------------------------------------------

  void start(const EntryPtr& e, time_point t) {
    e->dispatched_at = t;
    if (!e->first_dispatch) {
      e->first_dispatch = t;
      e->telemetry->dispatched_at = wall_at(t);
      e->telemetry->queue_wait = duration_cast<microseconds>(t - e->queued_at);
    }
    e->exec_deadline =
        options_.execution_timeout.count() > 0 ? t + options_.execution_timeout : time_point::max();
    running_.push_back(*e);
    ++in_flight_;
    // The completion handler keeps the signal alive until co_spawn is done with its slot.
    e->exec_cancel = std::make_shared<asio::cancellation_signal>();
    auto signal = e->exec_cancel;
    asio::co_spawn(strand_, run(e),
                   asio::bind_cancellation_slot(signal->slot(), [signal](std::exception_ptr) {}));
  }

  asio::awaitable<void> run(EntryPtr e) {
    auto self = shared_from_this();
    Response r;
    bool threw = false;
    try {
      if (e->stream) {
        StreamWriter out(e->stream);
        r = co_await e->executor->process_streaming_request(e->request, e->chosen, *e->telemetry,
                                                            out);
      } else {
        r = co_await e->executor->process_request(e->request, e->chosen, *e->telemetry);
      }
    } catch (const std::exception& ex) {
      threw = true;
      r = executor_failure(*e, ex.what());
    } catch (...) {
      threw = true;
      r = executor_failure(*e, "unknown exception");
    }
    if (e->stream && e->stream->reader_closed()) {
      // The reader left; its cancellation may not have reached the strand yet.
      threw = true;  // no retry
      r = cancelled_response();
    }
    attempt_done(e, std::move(r), threw);
  }

  Response executor_failure(const Entry& e, std::string_view what) {
    std::string msg = "request executor '" + e.request.req_type + "' failed: ";
    msg += what;
    static LogThrottle throttle;
    if (!e.life.answered())
      if (auto held = throttle.admit())
        logger()->warn("{} (request {}){}", msg, e.request.id, held_back_note(*held));
    return Response{make_error_body(msg, "executor_error", "internal_error"), 500};
  }

  void attempt_done(const EntryPtr& e, Response r, bool threw) {
    const time_point t = now();
    running_.remove(*e);
    overdue_.remove(*e);
    --in_flight_;
    TelemetryData& tel = *e->telemetry;
    // Only what the executor reports about the upstream feeds the balancer; its own
    // exceptions and statuses without a reported outcome do not back a deployment off.
    const bool ours = e->life.answered();  // cancelled, timed out or abandoned by the queue
    if (!ours) {
      apply_outcome(e->llm_grant, tel.llm_outcome, t);
      apply_outcome(e->emb_grant, tel.embedding_outcome, t);
    }
    reconcile(e->llm_grant, tel.prompt_tokens + tel.completion_tokens);
    reconcile(e->emb_grant, tel.embedding_tokens);
    AttemptRecord attempt;
    attempt.llm_deployment = e->chosen.llm ? e->chosen.llm->unique_model_id : std::string();
    attempt.embedding_deployment =
        e->chosen.embedding ? e->chosen.embedding->unique_model_id : std::string();
    attempt.status = r.status;
    attempt.duration = duration_cast<microseconds>(t - e->dispatched_at);
    attempt.spilled =
        (e->llm_grant && e->llm_grant->spilled) || (e->emb_grant && e->emb_grant->spilled);
    tel.attempt_log.push_back(std::move(attempt));
    tel.attempts = static_cast<int>(tel.attempt_log.size());
    if (!r.retry_after && (r.status == 429 || r.status == 503)) {
      if (tel.llm_outcome.retry_after)
        r.retry_after = tel.llm_outcome.retry_after;
      else if (tel.embedding_outcome.retry_after)
        r.retry_after = tel.embedding_outcome.retry_after;
    }
    const bool retry = !ours && !threw && should_retry(*e, r, t);
    if (retry) {
      logger()->debug("request {} attempt {} got {}; retrying", e->request.id, tel.attempts,
                      r.status);
      e->llm_grant.reset();
      e->emb_grant.reset();
      e->chosen = ChosenDeployments{};
      tel.llm_outcome = UpstreamOutcome{};
      tel.embedding_outcome = UpstreamOutcome{};
    }
    apply(e, e->life.executor_finished(retry), t, &r);
  }

  void apply_outcome(const std::optional<DeploymentGrant>& g, const UpstreamOutcome& o,
                     time_point t) {
    if (!g || g->deployment == kGoneDeployment || (o.status == 0 && !o.connection_error)) return;
    const int status = o.connection_error && o.status == 0 ? 503 : o.status;
    if (status == 429 || status >= 500) {
      std::optional<steady::duration> retry;
      if (o.retry_after && o.retry_after->count() >= 0) retry = *o.retry_after;
      balancer_.report_failure(g->deployment, t, retry, status == 429);
      share_backoff(g->deployment,
                    retry ? *retry : steady::duration(setup_->limits[g->deployment].error_backoff));
    }
    // The upstream says the budget is spent until a reset: stay away until then.
    using std::chrono::seconds;
    if (o.remaining_requests && *o.remaining_requests <= 0)
      balancer_.hold(g->deployment, t + (o.reset_requests ? steady::duration(*o.reset_requests)
                                                          : steady::duration(seconds(1))));
    if (o.remaining_tokens && *o.remaining_tokens <= 0)
      balancer_.hold(g->deployment, t + (o.reset_tokens ? steady::duration(*o.reset_tokens)
                                                        : steady::duration(seconds(1))));
  }

  /// Replaces a grant's estimate by the usage reported. Azure keeps charging its own
  /// estimate for the minute, so by default a lower usage does not give tokens back.
  void reconcile(const std::optional<DeploymentGrant>& g, std::int64_t actual) {
    if (!g || g->deployment == kGoneDeployment || actual <= 0) return;
    balancer_.reconcile(*g,
                        options_.reconcile_tokens_down ? actual : std::max(actual, g->need.tokens));
  }

  static bool retryable_status(int status) {
    return status == 408 || status == 409 || status == 429 || status >= 500;
  }

  /// Retry when a reported upstream outcome says the failure is transient, attempts and
  /// the retry budget remain, and nothing said "never retry".
  bool should_retry(const Entry& e, const Response& r, time_point t) const {
    if (r.status < 400) return false;
    if (e.telemetry->attempts >= options_.max_attempts) return false;
    if (e.stream && e.stream->written() > 0) return false;  // the reader has seen chunks
    if (t - *e.first_dispatch >= options_.retry_budget) return false;
    bool transient = false;
    auto check = [&](bool granted, const UpstreamOutcome& o) {
      if (!granted || (o.status == 0 && !o.connection_error)) return true;
      if (!o.retryable) return false;
      transient = transient || o.connection_error || retryable_status(o.status);
      return true;
    };
    const bool allowed = check(e.llm_grant.has_value(), e.telemetry->llm_outcome) &&
                         check(e.emb_grant.has_value(), e.telemetry->embedding_outcome);
    return allowed && transient;
  }

  static std::string error_message_of(const nlohmann::json& body) {
    if (body.is_object()) {
      auto err = body.find("error");
      if (err != body.end()) {
        if (err->is_object()) {
          auto m = err->find("message");
          if (m != err->end() && m->is_string()) return m->get<std::string>();
        }
        if (err->is_string()) return err->get<std::string>();
      }
    }
    std::string s = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (s.size() > 500) s.resize(500);
    return s;
  }

  // ---- lifecycle ---------------------------------------------------------------------

  asio::awaitable<void> initiate_on_strand() {
    if (started_) co_return;
    started_ = true;
    telemetry_->start();
    asio::co_spawn(strand_, poller(), [](std::exception_ptr ep) {
      if (ep) logger()->critical("llmq: the queue's dispatcher ended with an exception");
    });
    accepting_.store(!shutdown_requested_.load());
    co_return;
  }

  bool idle() const { return scheduler_->empty() && retry_pending_.empty() && in_flight_ == 0; }

  void notify_idle() {
    if (shutting_down_ && idle()) idle_timer_.cancel();
  }

  asio::awaitable<void> shutdown() {
    auto self = shared_from_this();
    if (shutdown_started_) {
      while (!shutdown_done_) {
        done_signal_.expires_at(time_point::max());
        co_await done_signal_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      co_return;
    }
    shutdown_started_ = true;
    shutting_down_ = true;
    accepting_.store(false);
    const time_point deadline = now() + options_.shutdown_timeout;
    while (!idle() && now() < deadline) {
      idle_timer_.expires_at(deadline);
      co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!idle()) {
      logger()->warn("shutdown deadline passed with {} queued and {} running requests",
                     scheduler_->size() + retry_pending_.size(), in_flight_);
      abandon_all(errc::queue_closed, "queue shut down before the request could finish");
      // Give cancelled executors a moment to unwind.
      const time_point grace = now() + std::chrono::seconds(1);
      while (in_flight_ > 0 && now() < grace) {
        idle_timer_.expires_at(grace);
        co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    }
    stopped_ = true;
    poll_timer_.cancel();
    const time_point flush_deadline = now() + options_.shutdown_flush_timeout;
    co_await telemetry_->stop(flush_deadline);
    if (options_.deployment_budget_store)
      co_await close_store(options_.deployment_budget_store->close(), "deployment budget store",
                           flush_deadline);
    co_await close_store(options_.user_rate_limit_store->close(), "user rate limit store",
                         flush_deadline);
    shutdown_done_ = true;
    done_signal_.cancel();
  }

  asio::awaitable<void> close_store(asio::awaitable<void> close, const char* what,
                                    time_point deadline) {
    auto guarded = [](asio::awaitable<void> c, const char* name) -> asio::awaitable<void> {
      try {
        co_await std::move(c);
      } catch (const std::exception& e) {
        logger()->warn("{} close failed: {}", name, e.what());
      }
    };
    if (!co_await BoundedWait::run(strand_, clock_, guarded(std::move(close), what), deadline))
      logger()->warn("{} did not close within shutdown_flush_timeout", what);
  }

  /// Answers every request that is not done yet (strand): queued and waiting ones are
  /// removed, confirming and running ones answered (running executors cancelled).
  void abandon_all(errc why, std::string reason) {
    abandon_reason_ = std::move(reason);
    queue_pending_retries();
    std::vector<EntryPtr> queued;
    scheduler_->drain([&](EntryPtr&& e) {
      unscheduled(*e);
      queued.push_back(std::move(e));
    });
    const time_point t = now();
    for (EntryPtr& e : queued) apply(e, e->life.abandon(why), t);
    for (Entry* e : confirming_.snapshot()) apply(*e, e->life.abandon(why), t);
    for (Entry* e : running_.snapshot()) {
      running_.remove(*e);
      apply(*e, e->life.abandon(why), t);
    }
    notify_idle();
  }

  asio::awaitable<QueueStats> stats_on_strand() { co_return stats_now(); }

  QueueStats stats_now() {
    QueueStats s;
    s.queue_depth = scheduler_->size() + retry_pending_.size();
    s.in_flight = in_flight_;
    s.admitted = admitted_.load();
    s.completed = completed_.load();
    s.rejected_user_limit = rejected_user_limit_.load();
    s.rejected_queue_full = rejected_queue_full_.load();
    s.rejected_invalid = rejected_invalid_.load();
    s.rejected_closed = rejected_closed_.load();
    s.rejected_store = rejected_store_.load();
    s.timed_out = timed_out_.load();
    s.cancelled = cancelled_.load();
    s.execution_timeouts = execution_timeouts_.load();
    s.telemetry_dropped = telemetry_->dropped();
    s.telemetry_failed = telemetry_->failed();
    s.budget_refusals = budget_refusals_.load();
    s.budget_store_errors = budget_store_errors_.load();
    s.telemetry_records = records_.load();
    s.rejected_predicted = rejected_predicted_.load();
    s.rejected_user_queue_full = rejected_user_queue_full_.load();
    s.queued_by_priority = priority_counts_;
    if (options_.stats_top_users > 0) {
      s.users.reserve(user_queued_.size());
      for (const auto& [user, n] : user_queued_) s.users.push_back(UserQueueStats{user, n});
      const std::size_t top = std::min(options_.stats_top_users, s.users.size());
      std::partial_sort(s.users.begin(), s.users.begin() + static_cast<std::ptrdiff_t>(top),
                        s.users.end(), [](const UserQueueStats& a, const UserQueueStats& b) {
                          return a.queued != b.queued ? a.queued > b.queued : a.user < b.user;
                        });
      s.users.resize(top);
    }
    s.tiers.reserve(tier_counts_.size());
    for (std::size_t i = 0; i < tier_counts_.size(); ++i)
      s.tiers.push_back(TierStats{setup_->tiers.tiers()[i].name, tier_counts_[i].queued,
                                  tier_counts_[i].admitted});
    const time_point t = now();
    const std::vector<Deployment>& deployments = setup_->deployments;
    for (std::size_t i = 0; i < deployments.size(); ++i) {
      const DeploymentState st = balancer_.state(i, t);
      DeploymentStats d;
      d.unique_model_id = deployments[i].unique_model_id;
      d.requests_in_window = st.requests_in_window;
      d.tokens_in_window = st.tokens_in_window;
      d.req_per_min = deployments[i].req_per_min;
      d.tokens_per_min = deployments[i].tokens_per_min;
      if (st.backoff_until)
        d.backoff_remaining = std::chrono::ceil<std::chrono::milliseconds>(*st.backoff_until - t);
      d.granted = st.granted;
      d.failures = st.failures;
      d.spilled = st.spilled;
      d.throttled = st.throttled;
      d.paced = st.paced;
      s.deployments.push_back(std::move(d));
    }
    return s;
  }

  asio::any_io_executor base_;    // the executor given: admission's own work runs here
  asio::any_io_executor strand_;  // a strand over it (make_light_strand)
  QueueOptions options_;
  std::shared_ptr<Clock> clock_;  // null: the steady clock
  SetupPtr setup_;                // the configuration in use (strand; see published_)
  std::shared_ptr<TelemetryPipeline> telemetry_;

  // Any thread:
  mutable std::shared_mutex executors_mutex_;
  std::map<std::string, std::shared_ptr<RequestExecutor>, std::less<>> executors_;
  Snapshot<Setup> published_;  // setup_, for admission on callers' threads
  std::atomic<std::size_t> reserved_{0};
  std::atomic<bool> accepting_{false};
  std::atomic<bool> shutdown_requested_{false};
  std::atomic<bool> failed_{false};
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<std::uint64_t> admitted_{0}, completed_{0}, rejected_user_limit_{0},
      rejected_queue_full_{0}, rejected_invalid_{0}, rejected_closed_{0}, rejected_store_{0},
      timed_out_{0}, cancelled_{0}, execution_timeouts_{0}, budget_refusals_{0},
      budget_store_errors_{0}, rejected_predicted_{0}, rejected_user_queue_full_{0}, records_{0};

  // Strand only:
  WeightedRoundRobinBalancer balancer_;
  std::unique_ptr<Scheduler<EntryPtr>> scheduler_;
  std::vector<DispatchRateEstimator> class_rates_;  // by resource class (predictive admission)
  struct TierCounts {
    std::size_t queued = 0;
    std::uint64_t admitted = 0;
  };
  std::vector<TierCounts> tier_counts_;
  std::array<std::size_t, kPriorityLevels> priority_counts_{};
  // Requests waiting per user (only with QueueOptions::stats_top_users).
  std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>> user_queued_;
  ClockTimer poll_timer_;
  ClockTimer idle_timer_;
  ClockTimer done_signal_{strand_, nullptr};  // a signal: never expires, only cancelled
  bool poller_waiting_ = false;
  bool wake_pending_ = false;
  bool started_ = false;
  bool stopped_ = false;
  bool shutting_down_ = false;
  bool shutdown_started_ = false;
  bool shutdown_done_ = false;
  std::size_t in_flight_ = 0;  // confirming + running
  std::vector<EntryPtr> retry_pending_;
  EntryList running_;     // in execution-deadline order
  EntryList overdue_;     // answered at execution_timeout; the executor has not returned
  EntryList confirming_;  // waiting for the shared budget store
  std::string abandon_reason_;
  std::string failure_;

  const std::string id_prefix_;
  const std::shared_ptr<BlockPool> entry_pool_;
  const std::shared_ptr<BlockPool> telemetry_pool_;
};

}  // namespace detail

LLMQ_INLINE LLMQueue::LLMQueue(boost::asio::any_io_executor ex, LLMConfig config,
                               std::map<std::string, std::shared_ptr<RequestExecutor>> executors,
                               QueueOptions options)
    : core_(std::make_shared<detail::QueueCore>(std::move(ex), std::move(config),
                                                std::move(executors), std::move(options))) {}

LLMQ_INLINE LLMQueue::~LLMQueue() { core_->detach(); }

LLMQ_INLINE boost::asio::awaitable<void> LLMQueue::initiate() {
  auto core = core_;
  co_await core->initiate();
}

LLMQ_INLINE std::shared_ptr<detail::Entry> LLMQueue::prepare(std::string&& req_type,
                                                             nlohmann::json&& request_data,
                                                             std::string&& user_id,
                                                             ModelPreferences&& model_pref,
                                                             RequestOptions&& options) {
  return core_->prepare(std::move(req_type), std::move(request_data), std::move(user_id),
                        std::move(model_pref), std::move(options));
}

LLMQ_INLINE void LLMQueue::start(detail::QueueCore& core, detail::ErasedHandler handler,
                                 boost::asio::cancellation_slot slot,
                                 std::shared_ptr<detail::Entry> entry) {
  core.admit(std::move(entry), std::move(handler), slot);
}

LLMQ_INLINE const boost::asio::any_io_executor& LLMQueue::executor_of(
    const detail::QueueCore& core) noexcept {
  return core.base_executor();
}

namespace detail {

inline std::string message_of(const Response& r) {
  if (r.body.is_object()) {
    auto e = r.body.find("error");
    if (e != r.body.end() && e->is_object()) {
      auto m = e->find("message");
      if (m != e->end() && m->is_string()) return m->get<std::string>();
    }
  }
  return "llmq error";
}

/// The exception execute_request throws for an error of async_execute_request.
[[noreturn]] inline void throw_error(const boost::system::error_code& ec, const Response& r,
                                     const std::string& user_id) {
  if (ec == boost::asio::error::operation_aborted)
    throw boost::system::system_error(ec, "request cancelled by caller");
  const std::string message = message_of(r);
  if (ec.category() == error_category()) {
    const auto e = static_cast<errc>(ec.value());
    switch (e) {
      case errc::user_id_missing:
        throw UserIdHeaderMissingError();
      case errc::user_rate_limited:
        throw UserRateLimitExceededError(user_id,
                                         r.retry_after.value_or(std::chrono::milliseconds(0)));
      case errc::queue_full:
        throw SchedulerQueueFullError(message, ec, r.retry_after);
      case errc::queue_timeout:
        throw QueueTimeoutError(message);
      case errc::queue_closed:
      case errc::queue_failed:
        throw QueueClosedError(message, e);
      case errc::execution_timeout:
        throw ExecutionTimeoutError(message);
      case errc::user_limit_store_unavailable:
      case errc::budget_store_unavailable:
        throw StoreUnavailableError(message, e, r.retry_after);
      default:
        throw InvalidRequestError(message, e);
    }
  }
  throw Error(message, r.status, ec, r.retry_after);
}

}  // namespace detail

LLMQ_INLINE boost::asio::awaitable<Response> LLMQueue::execute_request(std::string req_type,
                                                                       nlohmann::json request_data,
                                                                       std::string user_id,
                                                                       ModelPreferences model_pref,
                                                                       RequestOptions options) {
  auto [ec, r] = co_await async_execute_request(std::move(req_type), std::move(request_data),
                                                user_id, std::move(model_pref), std::move(options),
                                                boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec) detail::throw_error(ec, r, user_id);
  co_return std::move(r);
}

LLMQ_INLINE boost::asio::awaitable<Response> LLMQueue::execute_request(
    std::string req_type, nlohmann::json request_data, std::string user_id,
    ModelPreferences model_pref) {
  return execute_request(std::move(req_type), std::move(request_data), std::move(user_id),
                         std::move(model_pref), RequestOptions{});
}

LLMQ_INLINE std::shared_ptr<detail::StreamState> LLMQueue::launch_stream(
    std::string&& req_type, nlohmann::json&& request_data, std::string&& user_id,
    ModelPreferences&& model_pref, RequestOptions&& options) {
  detail::QueueCore& core = *core_;
  auto state = std::make_shared<detail::StreamState>(
      core.base_executor(), core.options_.stream_buffer_chunks, core.clock_);
  // Known from the start, for readers that need it before the end (e.g. an error event).
  if (options.request_id.empty()) options.request_id = core.next_request_id();
  state->set_request_id(options.request_id);
  std::shared_ptr<detail::Entry> entry =
      prepare(std::move(req_type), std::move(request_data), std::move(user_id),
              std::move(model_pref), std::move(options));
  entry->stream = state;
  // The answer comes through the stream's strand, which also carries the reader's
  // cancellation (StreamState::close_reader), so the slot is never used from two threads.
  auto finish = [state](boost::system::error_code ec, Response r) {
    state->finish(ec, std::move(r));
  };
  boost::asio::cancellation_slot slot = state->cancel_signal().slot();
  start(core,
        detail::ErasedHandler(boost::asio::bind_cancellation_slot(
                                  slot, boost::asio::bind_executor(state->strand(), finish)),
                              core.base_executor()),
        slot, std::move(entry));
  return state;
}

LLMQ_INLINE boost::asio::awaitable<std::pair<boost::system::error_code, ResponseStream>>
LLMQueue::open_stream(std::string req_type, nlohmann::json request_data, std::string user_id,
                      ModelPreferences model_pref, RequestOptions options) {
  ResponseStream stream(launch_stream(std::move(req_type), std::move(request_data),
                                      std::move(user_id), std::move(model_pref),
                                      std::move(options)));
  co_await stream.begin();  // cancelled: closes the stream, which cancels the request
  boost::system::error_code ec = stream.streaming() ? boost::system::error_code() : stream.error();
  co_return std::make_pair(ec, std::move(stream));
}

LLMQ_INLINE boost::asio::awaitable<ResponseStream> LLMQueue::execute_streaming_request(
    std::string req_type, nlohmann::json request_data, std::string user_id,
    ModelPreferences model_pref, RequestOptions options) {
  auto [ec, stream] = co_await open_stream(std::move(req_type), std::move(request_data), user_id,
                                           std::move(model_pref), std::move(options));
  if (ec) detail::throw_error(ec, stream.response(), user_id);
  co_return std::move(stream);
}

LLMQ_INLINE boost::asio::awaitable<ResponseStream> LLMQueue::execute_streaming_request(
    std::string req_type, nlohmann::json request_data, std::string user_id,
    ModelPreferences model_pref) {
  return execute_streaming_request(std::move(req_type), std::move(request_data), std::move(user_id),
                                   std::move(model_pref), RequestOptions{});
}

LLMQ_INLINE boost::asio::awaitable<void> LLMQueue::graceful_shutdown() {
  auto core = core_;
  co_await core->graceful_shutdown();
}

LLMQ_INLINE void LLMQueue::register_request_executor(const std::string& req_type,
                                                     std::shared_ptr<RequestExecutor> executor) {
  core_->register_executor(req_type, std::move(executor));
}

LLMQ_INLINE boost::asio::awaitable<QueueStats> LLMQueue::stats() {
  auto core = core_;
  QueueStats s = co_await core->stats();
  co_return s;
}

LLMQ_INLINE boost::asio::awaitable<void> LLMQueue::reconfigure(LLMConfig config) {
  auto core = core_;
  co_await core->reconfigure(std::move(config));
}

LLMQ_INLINE DeploymentList LLMQueue::deployments() const {
  detail::SetupPtr setup = core_->setup();
  const std::vector<Deployment>* list = &setup->deployments;
  return DeploymentList(std::shared_ptr<const std::vector<Deployment>>(std::move(setup), list));
}

LLMQ_INLINE std::shared_ptr<TelemetryStore> LLMQueue::telemetry_store() const noexcept {
  return core_->telemetry_store();
}

}  // namespace llmq
