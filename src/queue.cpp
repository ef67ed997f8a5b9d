// LLMQueue runtime: admission on the caller's thread, all queue state on one strand,
// one poller coroutine woken by events, executors spawned per dispatched request.

#include <llmq/errors.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/load_balancer.hpp>
#include <llmq/log.hpp>
#include <llmq/queue.hpp>
#include <llmq/token_estimator.hpp>

#include "block_pool.hpp"
#include "light_strand.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <deque>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <unordered_map>
#include <variant>

namespace llmq {
namespace detail {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::microseconds;

namespace {

/// Wall time derived from steady time with one offset taken at first use: one clock read
/// per event instead of two, and timestamps of one request that never go backwards.
WallTime wall_at(steady::time_point t) {
  static const auto offset =
      std::chrono::system_clock::now().time_since_epoch() - steady::now().time_since_epoch();
  return WallTime(duration_cast<microseconds>(t.time_since_epoch() + offset));
}

WallTime wall_now() { return wall_at(steady::now()); }

Response error_response(int status, std::string_view message, std::string_view type,
                        std::string_view code) {
  return Response{make_error_body(message, type, code), status};
}

/// Appends `v` in base 36 (digits, then lower-case letters).
void append_base36(std::string& out, std::uint64_t v) {
  char buf[16];
  char* p = buf + sizeof buf;
  do {
    *--p = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
    v /= 36;
  } while (v != 0);
  out.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
}

/// Six random base-36 characters that tell this queue's request ids from another's.
std::string random_prefix() {
  std::random_device rd;
  std::string s;
  append_base36(s, 36ULL * 36 * 36 * 36 * 36 + (rd() % (35ULL * 36 * 36 * 36 * 36 * 36)));
  return s;
}

}  // namespace

/// The deployments one kind of request may use.
struct ResourceClass {
  std::uint32_t index = 0;
  bool need_llm = false;
  bool need_emb = false;
  std::vector<std::size_t> llm;  // candidate deployment indexes
  std::vector<std::size_t> emb;
};

/// Delivers the one answer of a request to its caller, on the caller's executor (the only
/// place where the caller's cancellation slot may be cleared). Type-erased; a handler of
/// up to kInline bytes (an awaitable's is one pointer) is stored in place, not allocated.
class Delivery {
 public:
  Delivery() = default;
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;
  ~Delivery() { reset(); }

  /// Stores the handler (replacing, undelivered, any previous one).
  template <class H>
  void emplace(H&& handler) {
    reset();
    using Impl = Holder<std::decay_t<H>>;
    if constexpr (sizeof(Impl) <= kInline && alignof(Impl) <= alignof(std::max_align_t))
      impl_ = ::new (static_cast<void*>(inline_)) Impl(std::forward<H>(handler));
    else
      impl_ = new Impl(std::forward<H>(handler));
  }

  explicit operator bool() const noexcept { return impl_ != nullptr; }
  /// Posts the answer; the handler is taken out first, so this happens at most once.
  void operator()(std::exception_ptr ep, Response r) {
    Base* impl = std::exchange(impl_, nullptr);
    impl->deliver(ep, std::move(r));
    destroy(impl);
  }

 private:
  static constexpr std::size_t kInline = 48;
  struct Base {
    virtual ~Base() = default;
    virtual void deliver(std::exception_ptr ep, Response r) = 0;
  };
  template <class H>
  struct Holder final : Base {
    explicit Holder(H&& h) : handler(std::move(h)) {}
    void deliver(std::exception_ptr ep, Response r) override {
      auto ex = asio::get_associated_executor(handler);
      asio::post(ex, [h = std::move(handler), ep, r = std::move(r)]() mutable {
        asio::get_associated_cancellation_slot(h).clear();
        std::move(h)(ep, std::move(r));
      });
    }
    H handler;
  };
  void destroy(Base* impl) noexcept {
    if (static_cast<void*>(impl) == static_cast<void*>(inline_))
      impl->~Base();
    else
      delete impl;
  }
  void reset() noexcept {
    if (impl_) destroy(std::exchange(impl_, nullptr));
  }
  alignas(std::max_align_t) unsigned char inline_[kInline];
  Base* impl_ = nullptr;
};

struct Entry {
  Request request;
  // Separate block: recorded (moved into the telemetry buffer) when the request is done,
  // while the entry itself may live on a little longer.
  std::unique_ptr<TelemetryData, PoolDelete<TelemetryData>> telemetry;
  const ResourceClass* cls = nullptr;
  std::shared_ptr<RequestExecutor> executor;
  DeploymentNeed llm_need;
  DeploymentNeed emb_need;
  SchedulerTicket ticket;
  steady::time_point queued_steady{};
  steady::time_point dispatched_steady{};
  steady::time_point exec_deadline = steady::time_point::max();
  // confirming: granted locally, waiting for the shared DeploymentBudgetStore.
  enum class State { submitted, queued, confirming, running, done } state = State::submitted;
  bool answered = false;
  bool caller_cancelled = false;
  bool exec_timed_out = false;
  std::optional<DeploymentGrant> llm_grant;
  std::optional<DeploymentGrant> emb_grant;
  ChosenDeployments chosen;
  // One signal per executor run; the run's completion handler co-owns it.
  std::shared_ptr<asio::cancellation_signal> exec_cancel;
  std::optional<steady::time_point> first_dispatch;
  std::optional<Response> last_response;  // of the previous attempt, while retrying
  Delivery deliver;
  // Intrusive list of running entries, in dispatch (== execution deadline) order.
  Entry* run_prev = nullptr;
  Entry* run_next = nullptr;
  bool in_run_list = false;
};
using EntryPtr = std::shared_ptr<Entry>;
using TelemetryPtr = std::unique_ptr<TelemetryData, PoolDelete<TelemetryData>>;

/// Bounded telemetry buffer flushed by a coroutine on the queue's strand.
class TelemetryPipeline : public std::enable_shared_from_this<TelemetryPipeline> {
 public:
  TelemetryPipeline(asio::any_io_executor strand, std::shared_ptr<TelemetryStore> store,
                    const QueueOptions& o)
      : strand_(strand),
        timer_(strand),
        store_(std::move(store)),
        capacity_(o.telemetry_buffer_capacity),
        batch_size_(std::max<std::size_t>(1, o.telemetry_batch_size)),
        interval_(o.telemetry_flush_interval) {
    batch_.reserve(batch_size_);
  }

  /// Any thread. Never blocks on I/O; drops (and counts) when the buffer is full.
  /// The record's allocation is kept (not copied) until its batch is written.
  void record(TelemetryPtr t) {
    bool wake = false;
    {
      std::lock_guard lock(mutex_);
      if (buffer_.size() >= capacity_) {
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
    done_ = true;
    done_timer_.cancel();
  }

  /// On the strand: stop after a final flush; completes when the store is closed.
  asio::awaitable<void> stop() {
    if (!started_) co_return;
    stop_requested_ = true;
    timer_.cancel();
    while (!done_) {
      done_timer_.expires_at(steady::time_point::max());
      co_await done_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  void started() { started_ = true; }

  std::uint64_t dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }
  std::uint64_t failed() const { return failed_; }

 private:
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
        logger()->warn("telemetry store failed to write {} records: {}", n, e.what());
      }
    }
  }

  asio::any_io_executor strand_;  // the queue's strand
  asio::steady_timer timer_;
  asio::steady_timer done_timer_{strand_};
  std::shared_ptr<TelemetryStore> store_;
  std::size_t capacity_;
  std::size_t batch_size_;
  std::chrono::milliseconds interval_;
  mutable std::mutex mutex_;
  std::deque<TelemetryPtr> buffer_;
  std::uint64_t dropped_ = 0;
  bool wake_posted_ = false;
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
      : strand_(make_light_strand(ex)),
        config_(std::move(config)),
        options_(std::move(options)),
        deployments_((config_.validate(), config_.deployments())),
        limits_(make_limits(deployments_, options_)),
        balancer_(limits_),
        scheduler_(config_.scheduler_limits.max_queue_size),
        poll_timer_(strand_),
        idle_timer_(strand_),
        id_prefix_(random_prefix()),
        entry_pool_(std::make_shared<BlockPool>(sizeof(Entry) + 64, pool_blocks(config_))),
        telemetry_pool_(std::make_shared<BlockPool>(sizeof(TelemetryData), pool_blocks(config_))) {
    for (auto& [name, exec] : executors) register_executor(name, std::move(exec));
    if (!options_.user_rate_limit_store)
      options_.user_rate_limit_store = std::make_shared<InMemoryUserRateLimitStore>();
    if (!options_.telemetry_store)
      options_.telemetry_store = std::make_shared<InMemoryTelemetryStore>();
    telemetry_ = std::make_shared<TelemetryPipeline>(strand_, options_.telemetry_store, options_);
  }

  /// Freed entries and records kept for reuse: about a full queue's worth, within bounds.
  static std::size_t pool_blocks(const LLMConfig& c) {
    return std::clamp<std::size_t>(c.scheduler_limits.max_queue_size, 256, 16384);
  }

  /// A new request's telemetry record, its id assigned.
  TelemetryPtr new_telemetry(const std::string& req_type, const std::string& user_id,
                             WallTime received) {
    TelemetryPtr t = make_pooled<TelemetryData>(telemetry_pool_);
    t->request_id = next_request_id();
    t->req_type = req_type;
    t->user_id = user_id;
    t->received_at = received;
    return t;
  }

  EntryPtr new_entry() { return std::allocate_shared<Entry>(PoolAllocator<Entry>(entry_pool_)); }

  static std::vector<DeploymentLimits> make_limits(const std::vector<Deployment>& ds,
                                                   const QueueOptions& o) {
    std::vector<DeploymentLimits> out;
    out.reserve(ds.size());
    for (const Deployment& d : ds)
      out.push_back(DeploymentLimits{d.req_per_min, d.tokens_per_min, d.error_backoff,
                                     d.weight > 0 ? d.weight : d.req_per_min, o.pace_short_windows,
                                     o.pacing_margin});
    return out;
  }

  void register_executor(const std::string& name, std::shared_ptr<RequestExecutor> exec) {
    if (!exec) throw ConfigError("request executor '" + name + "' is null");
    std::unique_lock lock(executors_mutex_);
    executors_[name] = std::move(exec);
  }

  std::shared_ptr<RequestExecutor> find_executor(const std::string& name) const {
    std::shared_lock lock(executors_mutex_);
    auto it = executors_.find(name);
    return it == executors_.end() ? nullptr : it->second;
  }

  // ---- admission (any thread) --------------------------------------------------------

  /// Resolves preferences to a resource class, or explains why none can serve them.
  std::variant<const ResourceClass*, std::string> resolve(const ModelPreferences& p) {
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
        plain_classes_[(p.require_llm_model ? 1U : 0U) | (p.require_embedding_model ? 2U : 0U)];
    if (plain) {
      if (const ResourceClass* c = plain_slot.load(std::memory_order_acquire)) return c;
    }
    std::string key;
    key.reserve(64);
    auto add_key = [&key](bool need, const std::optional<std::string>& id,
                          const std::optional<std::string>& name) {
      key += need ? '1' : '0';
      key += id ? *id : std::string();
      key += '\x1f';
      key += name ? *name : std::string();
      key += '\x1e';
    };
    add_key(p.require_llm_model, p.specific_llm_model, p.llm_model_name);
    add_key(p.require_embedding_model, p.specific_embedding_model, p.embedding_model_name);
    {
      std::lock_guard lock(classes_mutex_);
      if (auto it = class_index_.find(key); it != class_index_.end()) return it->second;
    }
    ResourceClass rc;
    if (p.require_llm_model) {
      rc.need_llm = true;
      auto err = candidates(true, p.specific_llm_model, p.llm_model_name, rc.llm);
      if (!err.empty()) return err;
    }
    if (p.require_embedding_model) {
      rc.need_emb = true;
      auto err = candidates(false, p.specific_embedding_model, p.embedding_model_name, rc.emb);
      if (!err.empty()) return err;
    }
    std::lock_guard lock(classes_mutex_);
    if (auto it = class_index_.find(key); it != class_index_.end()) return it->second;
    rc.index = static_cast<std::uint32_t>(classes_.size());
    classes_.push_back(std::move(rc));
    const ResourceClass* out = &classes_.back();
    class_index_.emplace(std::move(key), out);
    if (plain) plain_slot.store(out, std::memory_order_release);
    return out;
  }

  std::string candidates(bool llm, const std::optional<std::string>& id,
                         const std::optional<std::string>& name,
                         std::vector<std::size_t>& out) const {
    const char* kind = llm ? "LLM (chat/completion)" : "embeddings";
    const char* id_key = llm ? "specific_llm_model" : "specific_embedding_model";
    const char* name_key = llm ? "llm_model_name" : "embedding_model_name";
    for (std::size_t i = 0; i < deployments_.size(); ++i) {
      const Deployment& d = deployments_[i];
      if (is_llm(d.model_type) != llm) continue;
      if (id && d.unique_model_id != *id) continue;
      if (name && d.model_name_in_azure != *name) continue;
      out.push_back(i);
    }
    if (!out.empty()) return {};
    if (id) {
      for (const Deployment& d : deployments_)
        if (d.unique_model_id == *id)
          return std::string(id_key) + " '" + *id + "' is not an " + kind + " deployment" +
                 (name ? " of model '" + *name + "'" : std::string());
      return std::string(id_key) + " '" + *id + "' is not a configured unique_model_id";
    }
    if (name) return std::string(name_key) + " '" + *name + "' matches no " + kind + " deployment";
    return std::string("no ") + kind + " deployment is configured";
  }

  bool reserve_slot() {
    const std::size_t prev = reserved_.fetch_add(1, std::memory_order_relaxed);
    if (prev < config_.scheduler_limits.max_queue_size) return true;
    reserved_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void release_slot() { reserved_.fetch_sub(1, std::memory_order_relaxed); }

  /// "<prefix>-<counter>" (both base 36): at most 15 characters for the first 2.8e12
  /// requests, so the id stays inside std::string's inline buffer.
  std::string next_request_id() {
    const std::uint64_t n = next_id_.fetch_add(1, std::memory_order_relaxed);
    std::string id = id_prefix_;
    id += '-';
    append_base36(id, n);
    return id;
  }

  void record_rejection(TelemetryPtr t, int status, std::string_view error,
                        std::atomic<std::uint64_t>& counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
    t->status = status;
    t->error = error;
    t->completed_at = wall_now();
    telemetry_->record(std::move(t));
  }

  // ---- submission and cancellation -----------------------------------------------------

  struct CancelHandler {
    std::weak_ptr<QueueCore> core;
    std::weak_ptr<Entry> entry;
    void operator()(asio::cancellation_type_t type) const {
      if (type == asio::cancellation_type::none) return;
      auto c = core.lock();
      if (!c) return;
      asio::post(c->strand_, [c, e = entry] {
        if (auto p = e.lock()) c->on_caller_cancel(p);
      });
    }
  };

  template <class Token>
  auto async_submit(EntryPtr e, Token&& token) {
    return asio::async_initiate<Token, void(std::exception_ptr, Response)>(
        [self = shared_from_this()](auto handler, EntryPtr entry) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          if (slot.is_connected()) slot.template emplace<CancelHandler>(CancelHandler{self, entry});
          entry->deliver.emplace(std::move(handler));
          asio::post(self->strand_, [self, entry = std::move(entry)]() mutable {
            self->on_submit(std::move(entry));
          });
        },
        token, std::move(e));
  }

  void answer(Entry& e, std::exception_ptr ep, Response r) {
    if (e.answered) return;
    e.answered = true;
    r.request_id = e.request.id;
    e.deliver(ep, std::move(r));
  }

  template <class E>
  void answer_error(Entry& e, E error) {
    e.telemetry->status = error.http_status();
    e.telemetry->error = error.what();
    answer(e, std::make_exception_ptr(std::move(error)), Response{});
  }

  void on_submit(EntryPtr e) {
    if (!accepting_.load(std::memory_order_relaxed) || stopped_) {
      release_slot();
      finish_unqueued(*e, QueueClosedError("queue is shutting down; request not queued"));
      rejected_invalid_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    const steady::time_point now = steady::now();
    e->telemetry->queued_at = wall_at(now);
    e->queued_steady = now;
    auto ticket =
        scheduler_.push(e->cls->index, EntryPtr(e), now + config_.scheduler_limits.request_timeout);
    if (!ticket) {  // cannot happen while reservations bound the queue; kept as a guard
      release_slot();
      rejected_queue_full_.fetch_add(1, std::memory_order_relaxed);
      finish_unqueued(*e, SchedulerQueueFullError(config_.scheduler_limits.max_queue_size));
      return;
    }
    e->ticket = *ticket;
    e->state = Entry::State::queued;
    admitted_.fetch_add(1, std::memory_order_relaxed);
    wake();
  }

  template <class E>
  void finish_unqueued(Entry& e, E error) {
    e.state = Entry::State::done;
    answer_error(e, std::move(error));
    e.telemetry->completed_at = wall_now();
    telemetry_->record(std::move(e.telemetry));
    notify_idle();
  }

  void on_caller_cancel(const EntryPtr& e) {
    if (e->answered || e->state == Entry::State::done) return;
    cancelled_.fetch_add(1, std::memory_order_relaxed);
    e->caller_cancelled = true;
    const auto aborted = std::make_exception_ptr(
        boost::system::system_error(asio::error::operation_aborted, "request cancelled by caller"));
    if (e->state == Entry::State::queued) {
      // Queued in the scheduler, or waiting in retry_pending_ (skipped there once done).
      scheduler_.cancel(e->ticket);
      release_slot();
      e->state = Entry::State::done;
      e->telemetry->status = 499;
      e->telemetry->error = "cancelled by caller while queued";
      e->telemetry->completed_at = wall_now();
      e->telemetry->queue_wait = duration_cast<microseconds>(steady::now() - e->queued_steady);
      answer(*e, aborted, Response{});
      telemetry_->record(std::move(e->telemetry));
      notify_idle();
    } else if (e->state == Entry::State::confirming) {
      e->telemetry->status = 499;
      e->telemetry->error = "cancelled by caller";
      e->telemetry->completed_at = wall_now();
      answer(*e, aborted, Response{});
    } else if (e->state == Entry::State::running) {
      answer(*e, aborted, Response{});
      e->exec_cancel->emit(asio::cancellation_type::terminal);
    }
  }

  // ---- the poller ----------------------------------------------------------------------

  void wake() {
    if (poller_waiting_ && !wake_pending_) {
      wake_pending_ = true;
      poll_timer_.cancel();
    }
  }

  /// Requests dispatched per poller turn at most.
  static constexpr std::size_t kDispatchSlice = 64;

  asio::awaitable<void> poller() {
    auto self = shared_from_this();
    while (!stopped_) {
      wake_pending_ = false;
      const steady::time_point now = steady::now();
      queue_pending_retries();
      scheduler_.expire(now, [&](EntryPtr&& e) { on_queue_timeout(e, now); });
      expire_running(now);
      const std::size_t dispatched = scheduler_.dispatch(
          [&](std::uint32_t, EntryPtr& e) { return try_dispatch(e, now); }, kDispatchSlice);
      if (!retry_pending_.empty()) continue;
      if (dispatched == kDispatchSlice) {
        // More may be ready: let the work just started (and everything else on this
        // thread) run first, then go on. Keeps each turn short under a deep queue.
        co_await asio::post(strand_, asio::use_awaitable);
        continue;
      }
      poll_timer_.expires_at(next_wake(now));
      poller_waiting_ = true;
      co_await poll_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      poller_waiting_ = false;
    }
  }

  steady::time_point next_wake(steady::time_point now) {
    steady::time_point next = steady::time_point::max();
    if (auto d = scheduler_.next_deadline()) next = std::min(next, *d);
    if (run_head_) next = std::min(next, run_head_->exec_deadline);
    scheduler_.for_each_head([&](std::uint32_t, const EntryPtr& e) {
      steady::time_point t = now;
      if (e->cls->need_llm) t = std::max(t, balancer_.next_eligible(e->cls->llm, e->llm_need, now));
      if (e->cls->need_emb) t = std::max(t, balancer_.next_eligible(e->cls->emb, e->emb_need, now));
      // A blocked head is never eligible "now"; never spin.
      next = std::min(next, std::max(t, now + std::chrono::milliseconds(1)));
    });
    return next;
  }

  void on_queue_timeout(const EntryPtr& e, steady::time_point now) {
    release_slot();
    if (e->last_response) {  // a retry found no deployment in time: the last answer stands
      answer_with_last_response(*e);
      return;
    }
    timed_out_.fetch_add(1, std::memory_order_relaxed);
    const auto waited = now - e->queued_steady;
    e->telemetry->queue_wait = duration_cast<microseconds>(waited);
    finish_unqueued(*e, QueueTimeoutError(waited));
  }

  void answer_with_last_response(Entry& e) {
    completed_.fetch_add(1, std::memory_order_relaxed);
    Response r = std::move(*e.last_response);
    e.last_response.reset();
    e.state = Entry::State::done;
    e.telemetry->status = r.status;
    if (e.telemetry->error.empty()) e.telemetry->error = error_message(r.body);
    e.telemetry->completed_at = wall_now();
    answer(e, nullptr, std::move(r));
    telemetry_->record(std::move(e.telemetry));
    notify_idle();
  }

  bool try_dispatch(EntryPtr& e, steady::time_point now) {
    const ResourceClass& rc = *e->cls;
    std::optional<WeightedRoundRobinBalancer::Selection> ls;
    std::optional<WeightedRoundRobinBalancer::Selection> es;
    if (rc.need_llm && !(ls = balancer_.pick(rc.llm, e->llm_need, now))) return false;
    if (rc.need_emb && !(es = balancer_.pick(rc.emb, e->emb_need, now))) return false;
    if (ls) {
      e->llm_grant = balancer_.commit(rc.llm, *ls, e->llm_need, now);
      e->chosen.llm = &deployments_[ls->deployment];
      e->telemetry->llm_deployment = e->chosen.llm->unique_model_id;
    }
    if (es) {
      e->emb_grant = balancer_.commit(rc.emb, *es, e->emb_need, now);
      e->chosen.embedding = &deployments_[es->deployment];
      e->telemetry->embedding_deployment = e->chosen.embedding->unique_model_id;
    }
    release_slot();
    if (options_.deployment_budget_store) {
      begin_confirm(std::move(e));
    } else {
      start(std::move(e), now);
    }
    return true;
  }

  // ---- shared deployment budgets ------------------------------------------------------

  void begin_confirm(EntryPtr e) {
    e->state = Entry::State::confirming;
    ++in_flight_;
    auto work = confirm(std::move(e));
    asio::co_spawn(strand_, std::move(work), [](std::exception_ptr ep) {
      if (ep) logger()->error("llmq: budget confirmation failed unexpectedly");
    });
  }

  /// Asks the shared store to charge what the local balancer granted; then runs the
  /// request, or puts it back at the front of the queue with the refusing deployment held.
  asio::awaitable<void> confirm(EntryPtr e) {
    auto self = shared_from_this();
    std::optional<std::chrono::milliseconds> refused;
    std::size_t refused_deployment = 0;
    bool store_failed_closed = false;
    for (const std::optional<DeploymentGrant>* g : {&e->llm_grant, &e->emb_grant}) {
      if (!g->has_value()) continue;
      const std::size_t d = (*g)->deployment;
      try {
        const BudgetDecision bd = co_await options_.deployment_budget_store->try_charge(
            deployments_[d], limits_[d], (*g)->need);
        if (!bd.allowed) {
          refused = bd.retry_after;
          refused_deployment = d;
          break;
        }
      } catch (const std::exception& ex) {
        budget_store_errors_.fetch_add(1, std::memory_order_relaxed);
        logger()->warn("llmq: deployment budget store failed ({}): {}",
                       deployments_[d].unique_model_id, ex.what());
        if (!options_.budget_store_fail_open) {
          store_failed_closed = true;
          break;
        }
      }
    }
    --in_flight_;
    if (e->answered || e->state != Entry::State::confirming) {  // cancelled or shut down meanwhile
      e->state = Entry::State::done;
      telemetry_->record(std::move(e->telemetry));
      notify_idle();
      co_return;
    }
    const steady::time_point now = steady::now();
    if (store_failed_closed) {
      completed_.fetch_add(1, std::memory_order_relaxed);
      e->state = Entry::State::done;
      e->telemetry->status = 503;
      e->telemetry->error = "shared deployment budget store unavailable";
      e->telemetry->completed_at = wall_at(now);
      answer(*e, nullptr,
             error_response(503, "shared deployment budget store unavailable", "unavailable",
                            "budget_store_unavailable"));
      telemetry_->record(std::move(e->telemetry));
      notify_idle();
      co_return;
    }
    if (!refused) {
      start(std::move(e), now);
      co_return;
    }
    budget_refusals_.fetch_add(1, std::memory_order_relaxed);
    // What the shared budget refused must not use up this queue's own windows.
    if (e->llm_grant) balancer_.refund(*e->llm_grant);
    if (e->emb_grant) balancer_.refund(*e->emb_grant);
    balancer_.hold(refused_deployment,
                   now + std::max<steady::duration>(*refused, std::chrono::milliseconds(1)));
    e->llm_grant.reset();
    e->emb_grant.reset();
    e->chosen = ChosenDeployments{};
    e->state = Entry::State::queued;
    reserved_.fetch_add(1, std::memory_order_relaxed);
    retry_pending_.push_back(std::move(e));
    wake();
  }

  void share_backoff(std::size_t deployment, steady::duration wait) {
    if (!options_.deployment_budget_store) return;
    auto work = options_.deployment_budget_store->report_backoff(
        deployments_[deployment], std::chrono::ceil<std::chrono::milliseconds>(wait));
    asio::co_spawn(strand_, std::move(work), [](std::exception_ptr ep) {
      if (ep) logger()->warn("llmq: could not share a deployment backoff");
    });
  }

  void start(EntryPtr e, steady::time_point now) {
    e->state = Entry::State::running;
    e->dispatched_steady = now;
    if (!e->first_dispatch) {
      e->first_dispatch = now;
      e->telemetry->dispatched_at = wall_at(now);
      e->telemetry->queue_wait = duration_cast<microseconds>(now - e->queued_steady);
    }
    if (options_.execution_timeout.count() > 0) e->exec_deadline = now + options_.execution_timeout;
    run_list_push(*e);
    ++in_flight_;
    // The completion handler keeps the signal alive until co_spawn is done with its slot.
    e->exec_cancel = std::make_shared<asio::cancellation_signal>();
    auto signal = e->exec_cancel;
    auto work = run(std::move(e));
    asio::co_spawn(strand_, std::move(work),
                   asio::bind_cancellation_slot(signal->slot(), [signal](std::exception_ptr) {}));
  }

  asio::awaitable<void> run(EntryPtr e) {
    auto self = shared_from_this();
    Response r;
    bool threw = false;
    try {
      r = co_await e->executor->process_request(e->request, e->chosen, *e->telemetry);
    } catch (const std::exception& ex) {
      threw = true;
      r = executor_failure(*e, ex.what());
    } catch (...) {
      threw = true;
      r = executor_failure(*e, "unknown exception");
    }
    finish(e, std::move(r), threw);
  }

  Response executor_failure(const Entry& e, std::string_view what) {
    if (e.caller_cancelled)
      return error_response(499, "request cancelled by caller", "cancelled", "cancelled");
    if (e.exec_timed_out)
      return error_response(504, "executor timed out", "timeout", "execution_timeout");
    std::string msg = "request executor '" + e.request.req_type + "' failed: ";
    msg += what;
    logger()->warn("{} (request {})", msg, e.request.id);
    return error_response(500, msg, "executor_error", "internal_error");
  }

  void finish(const EntryPtr& e, Response r, bool threw) {
    const steady::time_point now = steady::now();
    run_list_remove(*e);
    --in_flight_;
    TelemetryData& t = *e->telemetry;
    // Feed the balancer: reported outcomes first; otherwise the Response status, for a
    // single chosen deployment, unless the queue itself stopped the executor.
    const bool ours = e->caller_cancelled || e->exec_timed_out;
    const bool single = (e->llm_grant.has_value() + e->emb_grant.has_value()) == 1;
    const int fallback = (single && !ours) ? (threw ? 500 : r.status) : 0;
    apply_outcome(e->llm_grant, t.llm_outcome, fallback, now);
    apply_outcome(e->emb_grant, t.embedding_outcome, fallback, now);
    reconcile(e->llm_grant, t.prompt_tokens + t.completion_tokens);
    reconcile(e->emb_grant, t.embedding_tokens);
    AttemptRecord attempt;
    attempt.llm_deployment = e->chosen.llm ? e->chosen.llm->unique_model_id : std::string();
    attempt.embedding_deployment =
        e->chosen.embedding ? e->chosen.embedding->unique_model_id : std::string();
    attempt.status = threw ? 500 : r.status;
    attempt.duration = duration_cast<microseconds>(now - e->dispatched_steady);
    t.attempt_log.push_back(std::move(attempt));
    t.attempts = static_cast<int>(t.attempt_log.size());
    if (!r.retry_after && (r.status == 429 || r.status == 503)) {
      if (t.llm_outcome.retry_after)
        r.retry_after = t.llm_outcome.retry_after;
      else if (t.embedding_outcome.retry_after)
        r.retry_after = t.embedding_outcome.retry_after;
    }
    if (!e->answered && !threw && should_retry(*e, r, now)) {
      requeue(e, std::move(r));
      return;
    }
    completed_.fetch_add(1, std::memory_order_relaxed);
    t.completed_at = wall_at(now);
    t.execution_time = duration_cast<microseconds>(now - *e->first_dispatch);
    if (e->answered) {
      // The caller was answered already (cancelled, timed out or shut down).
      if (t.status == 0) t.status = e->caller_cancelled ? 499 : 504;
    } else {
      t.status = r.status;
      if (r.status >= 400 && t.error.empty()) t.error = error_message(r.body);
      answer(*e, nullptr, std::move(r));
    }
    e->state = Entry::State::done;
    telemetry_->record(std::move(e->telemetry));
    if (!scheduler_.empty()) wake();
    notify_idle();
  }

  /// Replaces a grant's estimate by the usage reported. Azure keeps charging its own
  /// estimate for the minute, so by default a lower usage does not give tokens back.
  void reconcile(const std::optional<DeploymentGrant>& g, std::int64_t actual) {
    if (!g || actual <= 0) return;
    balancer_.reconcile(*g,
                        options_.reconcile_tokens_down ? actual : std::max(actual, g->need.tokens));
  }

  static bool retryable_status(int status) {
    return status == 408 || status == 409 || status == 429 || status >= 500;
  }

  /// Retry when a reported upstream outcome says the failure is transient, attempts and
  /// the retry budget remain, and nothing said "never retry".
  bool should_retry(const Entry& e, const Response& r, steady::time_point now) const {
    if (r.status < 400 || e.caller_cancelled || e.exec_timed_out) return false;
    if (e.telemetry->attempts >= options_.max_attempts) return false;
    if (now - *e.first_dispatch >= options_.retry_budget) return false;
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

  /// Puts a failed attempt back at the front of the queue. The failed deployment is in
  /// backoff now, so the balancer picks another eligible one, or waits for the backoff.
  void requeue(const EntryPtr& e, Response r) {
    logger()->debug("request {} attempt {} got {}; retrying", e->request.id, e->telemetry->attempts,
                    r.status);
    e->last_response = std::move(r);
    e->llm_grant.reset();
    e->emb_grant.reset();
    e->chosen = ChosenDeployments{};
    e->telemetry->llm_outcome = UpstreamOutcome{};
    e->telemetry->embedding_outcome = UpstreamOutcome{};
    e->state = Entry::State::queued;
    reserved_.fetch_add(1, std::memory_order_relaxed);
    // An executor that completes without suspending finishes inside the poller's
    // dispatch loop; the scheduler is not re-entered: the poller queues it next.
    retry_pending_.push_back(e);
    wake();
  }

  void queue_pending_retries() {
    for (EntryPtr& e : retry_pending_) {
      if (e->state != Entry::State::queued || e->answered) continue;  // cancelled meanwhile
      // A retry is bounded by the retry budget; a request the shared budget store sent
      // back before its first run keeps its queue deadline.
      const auto deadline = e->first_dispatch
                                ? *e->first_dispatch + options_.retry_budget
                                : e->queued_steady + config_.scheduler_limits.request_timeout;
      e->ticket = scheduler_.push_front(e->cls->index, e, deadline);
    }
    retry_pending_.clear();
  }

  static std::string error_message(const nlohmann::json& body) {
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
    std::string s = body.dump();
    if (s.size() > 500) s.resize(500);
    return s;
  }

  void apply_outcome(const std::optional<DeploymentGrant>& g, const UpstreamOutcome& o,
                     int fallback, steady::time_point now) {
    if (!g) return;
    const int status =
        o.connection_error && o.status == 0 ? 503 : (o.status != 0 ? o.status : fallback);
    if (status == 429 || status >= 500) {
      std::optional<steady::duration> retry;
      if (o.retry_after && o.retry_after->count() >= 0) retry = *o.retry_after;
      balancer_.report_failure(g->deployment, now, retry, status == 429);
      share_backoff(g->deployment,
                    retry ? *retry : steady::duration(limits_[g->deployment].error_backoff));
    }
    // The upstream says the budget is spent until a reset: stay away until then.
    using std::chrono::seconds;
    if (o.remaining_requests && *o.remaining_requests <= 0)
      balancer_.hold(g->deployment, now + (o.reset_requests ? steady::duration(*o.reset_requests)
                                                            : steady::duration(seconds(1))));
    if (o.remaining_tokens && *o.remaining_tokens <= 0)
      balancer_.hold(g->deployment, now + (o.reset_tokens ? steady::duration(*o.reset_tokens)
                                                          : steady::duration(seconds(1))));
  }

  void expire_running(steady::time_point now) {
    while (run_head_ && run_head_->exec_deadline <= now) {
      Entry& e = *run_head_;
      run_list_remove(e);
      e.exec_timed_out = true;
      if (!e.answered) {
        e.telemetry->status = 504;
        e.telemetry->error = "executor timed out";
        answer(e, nullptr,
               error_response(504, "request executor did not finish within execution_timeout",
                              "timeout", "execution_timeout"));
      }
      e.exec_cancel->emit(asio::cancellation_type::terminal);
    }
  }

  void run_list_push(Entry& e) {
    e.run_prev = run_tail_;
    e.run_next = nullptr;
    (run_tail_ ? run_tail_->run_next : run_head_) = &e;
    run_tail_ = &e;
    e.in_run_list = true;
  }
  void run_list_remove(Entry& e) {
    if (!e.in_run_list) return;
    (e.run_prev ? e.run_prev->run_next : run_head_) = e.run_next;
    (e.run_next ? e.run_next->run_prev : run_tail_) = e.run_prev;
    e.run_prev = e.run_next = nullptr;
    e.in_run_list = false;
  }

  // ---- lifecycle ---------------------------------------------------------------------

  asio::awaitable<void> initiate() {
    if (started_) co_return;
    started_ = true;
    auto self = shared_from_this();
    telemetry_->started();
    asio::co_spawn(
        strand_, [self]() -> asio::awaitable<void> { co_await self->telemetry_->run(); },
        [](std::exception_ptr ep) {
          if (!ep) return;
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            logger()->error("telemetry flusher stopped: {}", e.what());
          }
        });
    asio::co_spawn(strand_, poller(), [](std::exception_ptr ep) {
      if (!ep) return;
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        logger()->critical("llmq poller stopped: {}", e.what());
      }
    });
    accepting_.store(true);
    co_return;
  }

  bool idle() const { return scheduler_.empty() && retry_pending_.empty() && in_flight_ == 0; }

  void notify_idle() {
    if (shutting_down_ && idle()) idle_timer_.cancel();
  }

  asio::awaitable<void> shutdown() {
    auto self = shared_from_this();
    if (shutdown_started_) {
      while (!shutdown_done_) {
        done_timer_.expires_at(steady::time_point::max());
        co_await done_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      co_return;
    }
    shutdown_started_ = true;
    shutting_down_ = true;
    accepting_.store(false);
    const steady::time_point deadline = steady::now() + options_.shutdown_timeout;
    while (!idle() && steady::now() < deadline) {
      idle_timer_.expires_at(deadline);
      co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!idle()) {
      logger()->warn("shutdown deadline passed with {} queued and {} running requests",
                     scheduler_.size(), in_flight_);
      abandon_all("queue shut down before the request could finish");
      // Give cancelled executors a moment to unwind.
      const steady::time_point grace = steady::now() + std::chrono::seconds(1);
      while (in_flight_ > 0 && steady::now() < grace) {
        idle_timer_.expires_at(grace);
        co_await idle_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    }
    stopped_ = true;
    poll_timer_.cancel();
    co_await telemetry_->stop();
    if (options_.deployment_budget_store) {
      try {
        co_await options_.deployment_budget_store->close();
      } catch (const std::exception& e) {
        logger()->warn("deployment budget store close failed: {}", e.what());
      }
    }
    try {
      co_await options_.user_rate_limit_store->close();
    } catch (const std::exception& e) {
      logger()->warn("user rate limit store close failed: {}", e.what());
    }
    shutdown_done_ = true;
    done_timer_.cancel();
  }

  /// Fails every queued request and cancels every running one (strand).
  void abandon_all(const std::string& why) {
    queue_pending_retries();
    scheduler_.drain([&](EntryPtr&& e) {
      release_slot();
      if (e->last_response)
        answer_with_last_response(*e);
      else
        finish_unqueued(*e, QueueClosedError(why));
    });
    std::vector<Entry*> running;
    for (Entry* e = run_head_; e != nullptr; e = e->run_next) running.push_back(e);
    for (Entry* e : running) {
      if (!e->answered) answer_error(*e, QueueClosedError(why));
      e->exec_cancel->emit(asio::cancellation_type::terminal);
    }
  }

  /// Called by ~LLMQueue when graceful_shutdown() was not awaited.
  void detach() {
    accepting_.store(false);
    asio::post(strand_, [self = shared_from_this()] {
      if (self->shutdown_done_) return;
      self->abandon_all("queue destroyed");
      self->stopped_ = true;
      self->poll_timer_.cancel();
      asio::co_spawn(self->strand_, self->telemetry_->stop(), asio::detached);
    });
  }

  asio::awaitable<QueueStats> stats_on_strand() { co_return stats_now(); }

  QueueStats stats_now() {
    QueueStats s;
    s.queue_depth = scheduler_.size() + retry_pending_.size();
    s.in_flight = in_flight_;
    s.admitted = admitted_.load();
    s.completed = completed_.load();
    s.rejected_user_limit = rejected_user_limit_.load();
    s.rejected_queue_full = rejected_queue_full_.load();
    s.rejected_invalid = rejected_invalid_.load();
    s.timed_out = timed_out_.load();
    s.cancelled = cancelled_.load();
    s.telemetry_dropped = telemetry_->dropped();
    s.telemetry_failed = telemetry_->failed();
    s.budget_refusals = budget_refusals_.load();
    s.budget_store_errors = budget_store_errors_.load();
    const steady::time_point now = steady::now();
    for (std::size_t i = 0; i < deployments_.size(); ++i) {
      const DeploymentState st = balancer_.state(i, now);
      DeploymentStats d;
      d.unique_model_id = deployments_[i].unique_model_id;
      d.requests_in_window = st.requests_in_window;
      d.tokens_in_window = st.tokens_in_window;
      d.req_per_min = deployments_[i].req_per_min;
      d.tokens_per_min = deployments_[i].tokens_per_min;
      if (st.backoff_until)
        d.backoff_remaining = std::chrono::ceil<std::chrono::milliseconds>(*st.backoff_until - now);
      d.granted = st.granted;
      d.failures = st.failures;
      d.throttled = st.throttled;
      s.deployments.push_back(std::move(d));
    }
    return s;
  }

  asio::any_io_executor strand_;  // a strand (make_light_strand)
  LLMConfig config_;
  QueueOptions options_;
  const std::vector<Deployment> deployments_;
  const std::vector<DeploymentLimits> limits_;
  std::shared_ptr<TelemetryPipeline> telemetry_;

  // Any thread:
  mutable std::shared_mutex executors_mutex_;
  std::map<std::string, std::shared_ptr<RequestExecutor>, std::less<>> executors_;
  std::mutex classes_mutex_;
  std::deque<ResourceClass> classes_;
  std::unordered_map<std::string, const ResourceClass*> class_index_;
  std::atomic<const ResourceClass*> plain_classes_[4] = {};  // by need_llm | need_emb << 1
  std::atomic<std::size_t> reserved_{0};
  std::atomic<bool> accepting_{false};
  std::atomic<bool> shutdown_requested_{false};
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<std::uint64_t> admitted_{0}, completed_{0}, rejected_user_limit_{0},
      rejected_queue_full_{0}, rejected_invalid_{0}, timed_out_{0}, cancelled_{0},
      budget_refusals_{0}, budget_store_errors_{0};

  // Strand only:
  WeightedRoundRobinBalancer balancer_;
  FifoScheduler<EntryPtr> scheduler_;
  asio::steady_timer poll_timer_;
  asio::steady_timer idle_timer_;
  asio::steady_timer done_timer_{strand_};
  bool poller_waiting_ = false;
  bool wake_pending_ = false;
  bool started_ = false;
  bool stopped_ = false;
  bool shutting_down_ = false;
  bool shutdown_started_ = false;
  bool shutdown_done_ = false;
  std::size_t in_flight_ = 0;
  std::vector<EntryPtr> retry_pending_;
  Entry* run_head_ = nullptr;
  Entry* run_tail_ = nullptr;

  const std::string id_prefix_;
  const std::shared_ptr<BlockPool> entry_pool_;
  const std::shared_ptr<BlockPool> telemetry_pool_;
};

}  // namespace detail

namespace asio = boost::asio;

LLMQueue::LLMQueue(asio::any_io_executor ex, LLMConfig config,
                   std::map<std::string, std::shared_ptr<RequestExecutor>> executors,
                   QueueOptions options)
    : core_(std::make_shared<detail::QueueCore>(std::move(ex), std::move(config),
                                                std::move(executors), std::move(options))) {}

LLMQueue::~LLMQueue() { core_->detach(); }

asio::awaitable<void> LLMQueue::initiate() {
  auto core = core_;
  co_await asio::co_spawn(core->strand_, core->initiate(), asio::use_awaitable);
}

namespace {
std::string closed_reason(bool shutting_down) {
  return shutting_down ? std::string("queue is shutting down; request refused")
                       : std::string("queue is not running: call initiate() first");
}
}  // namespace

asio::awaitable<Response> LLMQueue::execute_request(std::string req_type,
                                                    nlohmann::json request_data,
                                                    std::string user_id,
                                                    ModelPreferences model_pref) {
  auto core = core_;
  const WallTime received = detail::wall_now();
  detail::TelemetryPtr t = core->new_telemetry(req_type, user_id, received);
  if (!core->accepting_.load(std::memory_order_relaxed)) {
    QueueClosedError err(closed_reason(core->shutdown_requested_.load()));
    core->record_rejection(std::move(t), err.http_status(), err.what(), core->rejected_invalid_);
    throw err;
  }
  if (user_id.empty()) {
    UserIdHeaderMissingError err;
    core->record_rejection(std::move(t), err.http_status(), err.what(), core->rejected_invalid_);
    throw err;
  }
  auto executor = core->find_executor(req_type);
  if (!executor) {
    std::string msg = "unknown request type '" + req_type + "'";
    core->record_rejection(std::move(t), 404, msg, core->rejected_invalid_);
    co_return detail::error_response(404, msg, "invalid_request_error", "unknown_request_type");
  }
  auto resolved = core->resolve(model_pref);
  if (auto* why = std::get_if<std::string>(&resolved)) {
    core->record_rejection(std::move(t), 400, *why, core->rejected_invalid_);
    co_return detail::error_response(400, *why, "invalid_request_error",
                                     "unsatisfiable_model_preferences");
  }
  const detail::ResourceClass* cls = std::get<const detail::ResourceClass*>(resolved);
  if (!core->reserve_slot()) {
    SchedulerQueueFullError err(core->config_.scheduler_limits.max_queue_size);
    core->record_rejection(std::move(t), err.http_status(), err.what(), core->rejected_queue_full_);
    throw err;
  }
  RateLimitDecision decision;
  try {
    decision =
        co_await core->options_.user_rate_limit_store->acquire(user_id, core->config_.user_limits);
  } catch (...) {
    core->release_slot();
    throw;
  }
  if (!decision.allowed) {
    core->release_slot();
    UserRateLimitExceededError err(user_id, decision.retry_after);
    core->record_rejection(std::move(t), err.http_status(), err.what(), core->rejected_user_limit_);
    throw err;
  }
  detail::EntryPtr e = core->new_entry();
  e->cls = cls;
  e->executor = std::move(executor);
  if (cls->need_llm) {
    e->llm_need.calls = model_pref.num_llm_calls_per_req;
    e->llm_need.tokens = estimate_chat_tokens(request_data, core->options_.default_max_tokens) *
                         model_pref.num_llm_calls_per_req;
  }
  if (cls->need_emb) {
    e->emb_need.calls = model_pref.num_emb_calls_per_req;
    e->emb_need.tokens = estimate_embedding_tokens(request_data) * model_pref.num_emb_calls_per_req;
  }
  t->estimated_tokens = e->llm_need.tokens + e->emb_need.tokens;
  if (core->options_.record_payload) t->payload = request_data;
  e->request.id = t->request_id;
  e->request.req_type = std::move(req_type);
  e->request.user_id = std::move(user_id);
  e->request.body = std::move(request_data);
  e->request.preferences = std::move(model_pref);
  e->telemetry = std::move(t);
  Response response = co_await core->async_submit(std::move(e), asio::use_awaitable);
  co_return response;
}

asio::awaitable<void> LLMQueue::graceful_shutdown() {
  auto core = core_;
  core->shutdown_requested_.store(true);
  core->accepting_.store(false);
  co_await asio::co_spawn(core->strand_, core->shutdown(), asio::use_awaitable);
}

void LLMQueue::register_request_executor(const std::string& req_type,
                                         std::shared_ptr<RequestExecutor> executor) {
  core_->register_executor(req_type, std::move(executor));
}

asio::awaitable<QueueStats> LLMQueue::stats() {
  // Note: GCC 12 destroys a capturing lambda temporary twice in `co_return co_await
  // co_spawn(ex, [captures] {...})`, so the strand-side work is a member coroutine.
  auto core = core_;
  QueueStats s =
      co_await asio::co_spawn(core->strand_, core->stats_on_strand(), asio::use_awaitable);
  co_return s;
}

const std::vector<Deployment>& LLMQueue::deployments() const noexcept {
  return core_->deployments_;
}

std::shared_ptr<TelemetryStore> LLMQueue::telemetry_store() const noexcept {
  return core_->options_.telemetry_store;
}

boost::asio::awaitable<void> DeploymentBudgetStore::report_backoff(const Deployment&,
                                                                   std::chrono::milliseconds) {
  co_return;
}

boost::asio::awaitable<void> DeploymentBudgetStore::close() { co_return; }

}  // namespace llmq
