#pragma once
/// @file queue.hpp
/// LLMQueue: the facade that admits, queues, balances, executes and records requests.

#include <llmq/clock.hpp>
#include <llmq/config.hpp>
#include <llmq/deployment_budget_store.hpp>
#include <llmq/detail/erased_handler.hpp>
#include <llmq/errors.hpp>
#include <llmq/executor.hpp>
#include <llmq/rate_limit_store.hpp>
#include <llmq/request.hpp>
#include <llmq/scheduler.hpp>
#include <llmq/stream.hpp>
#include <llmq/telemetry.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/system/error_code.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace llmq {

namespace detail {
class QueueCore;
struct Entry;
}  // namespace detail

/// Tunables of an LLMQueue, each with its default.
struct QueueOptions {
  /// Per-user limit decisions. Null: an InMemoryUserRateLimitStore.
  std::shared_ptr<UserRateLimitStore> user_rate_limit_store;
  /// Where telemetry goes. Null: an InMemoryTelemetryStore (see LLMQueue::telemetry_store()).
  std::shared_ptr<TelemetryStore> telemetry_store;
  /// Deployment budgets shared with other processes (e.g. RedisDeploymentBudgetStore).
  /// Null (default): this queue's own balancer alone decides.
  std::shared_ptr<DeploymentBudgetStore> deployment_budget_store;
  /// When the shared budget store fails: true (default) dispatches on the local decision
  /// alone (logged and counted); false answers the request with a 503 Response.
  bool budget_store_fail_open = true;
  /// Longest time one executor call may run before it is cancelled and its caller gets
  /// a 504 Response. Zero disables. Default 10 min.
  std::chrono::milliseconds execution_timeout{std::chrono::minutes(10)};
  /// Executor runs per request at most; 1 disables retries. A run is retried when the
  /// executor reported an upstream outcome (TelemetryData::llm_outcome /
  /// embedding_outcome) that is transient (408, 409, 429, >= 500 or a connection error)
  /// and not marked `retryable = false`. The failed deployment is in backoff by then, so
  /// the retry goes to another eligible deployment, or waits for the backoff to end.
  /// When all attempts fail the caller gets the last upstream Response. Default 3.
  int max_attempts = 3;
  /// No retry starts later than this after the first dispatch; a retry still waiting
  /// then answers with the last upstream Response. Default 60 s.
  std::chrono::milliseconds retry_budget{std::chrono::seconds(60)};
  /// How long graceful_shutdown() lets queued and in-flight requests finish. Default 30 s.
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(30)};
  /// Telemetry records buffered before new ones are dropped (and counted). Default 10000.
  std::size_t telemetry_buffer_capacity = 10'000;
  /// Records per TelemetryStore::insert_batch call at most. Default 100 (a batch stays
  /// well under the allocator's large-block thresholds).
  std::size_t telemetry_batch_size = 100;
  /// A partial batch is flushed after this long. Default 1 s.
  std::chrono::milliseconds telemetry_flush_interval{std::chrono::seconds(1)};
  /// Store each request's body in its telemetry record. Default off.
  bool record_payload = false;
  /// Cap requests per 1 s and 10 s as Azure does (see DeploymentLimits). Default on.
  bool pace_short_windows = true;
  /// Charges stay in a deployment's windows this much longer than the window, absorbing
  /// jitter between dispatch here and arrival upstream. Default 50 ms.
  std::chrono::milliseconds pacing_margin{50};
  /// Token accounting after a call: the usage the executor reports replaces the estimate
  /// when higher. When lower, the estimate stays charged (Azure charges its estimate on
  /// arrival and keeps it for the minute) unless this is true. Default false.
  bool reconcile_tokens_down = false;
  /// Completion budget assumed for a chat body without max_tokens. Default: Azure's 4096.
  std::int64_t default_max_tokens = 4096;
  /// Request bodies nested deeper than this (arrays and objects) are refused with
  /// errc::invalid_request before anything is queued (checked without recursion). Zero
  /// disables the check, for callers that parsed the body with a depth limit already
  /// (parse_json_bounded in <llmq/request_validation.hpp>, as llmq-gateway does). Default 64.
  std::size_t max_json_depth = 64;
  /// How long graceful_shutdown() waits, after the queue is done, for the telemetry
  /// store's last writes and for the stores to close. Records not written by then are
  /// counted in QueueStats::telemetry_dropped. Default 5 s.
  std::chrono::milliseconds shutdown_flush_timeout{std::chrono::seconds(5)};
  /// How many users QueueStats::users lists (those with the most requests waiting). 0
  /// (default): none, and the queue keeps no per-user count (one hash lookup per push
  /// and per dispatch otherwise).
  std::size_t stats_top_users = 0;
  /// Chunks a streamed answer buffers between its executor and its reader
  /// (execute_streaming_request); a reader further behind holds the executor's writes,
  /// and so its upstream read, back. At least 1. Default kDefaultStreamBufferChunks (16).
  std::size_t stream_buffer_chunks = kDefaultStreamBufferChunks;
  /// Where the queue reads the time and waits (deadlines, timeouts, backoffs, pacing,
  /// telemetry intervals, the shutdown deadline). Null (default): the steady clock. Tests
  /// pass a ManualClock to run all of these in virtual time.
  std::shared_ptr<Clock> clock;
};

/// Per-request options beside the seed's arguments.
struct RequestOptions {
  /// The request's id (Request::id, TelemetryData::request_id, Response::request_id):
  /// 1..128 printable ASCII characters, e.g. a client's x-request-id. Empty (default):
  /// the queue makes one. Another value is refused with errc::invalid_request.
  std::string request_id;
  /// The request's priority; absent: its tier's default (normal unless configured).
  std::optional<Priority> priority;
  /// The tier whose limits, fair-share weight, default priority and queued cap apply
  /// (a name in `user_tiers`, e.g. from a client key); empty (default): the tier whose
  /// `users` list holds the user id, else the default tier. An unknown name is refused
  /// with errc::invalid_request.
  std::string tier;
};

/// One user in a stats snapshot.
struct UserQueueStats {
  std::string user;
  std::size_t queued = 0;  ///< its requests waiting in the scheduler
};

/// One tier in a stats snapshot.
struct TierStats {
  std::string name;            ///< empty for the default tier
  std::size_t queued = 0;      ///< its requests waiting in the scheduler
  std::uint64_t admitted = 0;  ///< its requests that entered the queue
};

/// One deployment in a stats snapshot.
struct DeploymentStats {
  std::string unique_model_id;
  std::int64_t requests_in_window = 0;  ///< calls charged in the last 60 s
  std::int64_t tokens_in_window = 0;    ///< tokens charged in the last 60 s
  std::int64_t req_per_min = 0;
  std::int64_t tokens_per_min = 0;
  /// Remaining backoff; zero when the deployment is not backing off.
  std::chrono::milliseconds backoff_remaining{0};
  std::uint64_t granted = 0;    ///< requests dispatched to it since start
  std::uint64_t failures = 0;   ///< failures reported since start
  std::uint64_t throttled = 0;  ///< of which 429s
  std::uint64_t spilled = 0;    ///< grants it got because a better priority group had no room
  /// Requests dispatched to it after waiting in the queue for room in a deployment's
  /// window (1 s, 10 s or 60 s; not for backoffs alone): 429s avoided by pacing.
  std::uint64_t paced = 0;
};

/// A snapshot of an LLMQueue.
struct QueueStats {
  std::size_t queue_depth = 0;
  std::size_t in_flight = 0;
  std::uint64_t admitted = 0;             ///< entered the queue
  std::uint64_t completed = 0;            ///< executor finished (any status)
  std::uint64_t rejected_user_limit = 0;  ///< UserRateLimitExceededError
  std::uint64_t rejected_queue_full = 0;  ///< SchedulerQueueFullError
  std::uint64_t rejected_invalid = 0;     ///< bad user id, unknown type, bad preferences or body
  std::uint64_t rejected_closed = 0;      ///< refused or abandoned because the queue was closed
  std::uint64_t rejected_store = 0;       ///< refused because a store was unavailable
  std::uint64_t timed_out = 0;            ///< QueueTimeoutError
  std::uint64_t cancelled = 0;            ///< callers that gave up
  std::uint64_t execution_timeouts = 0;   ///< executors stopped by execution_timeout
  /// Requests that ended, each with its one telemetry record (admitted or not, cancelled
  /// ones included): the rows a store holds are telemetry_records - dropped - failed.
  std::uint64_t telemetry_records = 0;
  std::uint64_t telemetry_dropped = 0;    ///< records not buffered (buffer full)
  std::uint64_t telemetry_failed = 0;     ///< records the store failed to write
  std::uint64_t budget_refusals = 0;      ///< grants the shared budget store refused
  std::uint64_t budget_store_errors = 0;  ///< shared budget store failures
  std::uint64_t rejected_predicted =
      0;  ///< refused by predictive_admission (of rejected_queue_full)
  std::uint64_t rejected_user_queue_full =
      0;  ///< over max_queued_per_user (of rejected_queue_full)
  /// Requests waiting in the scheduler by the priority they were given (high, normal, low).
  std::array<std::size_t, kPriorityLevels> queued_by_priority{};
  std::vector<TierStats> tiers;  ///< the default tier first, then in config order
  /// The QueueOptions::stats_top_users users with the most requests waiting, most first.
  std::vector<UserQueueStats> users;
  std::vector<DeploymentStats> deployments;
};

/// The deployments of one configuration of an LLMQueue (LLMQueue::deployments()): an
/// immutable snapshot that stays valid while the handle lives, whatever reconfigure()
/// does meanwhile.
class DeploymentList {
 public:
  DeploymentList() = default;
  explicit DeploymentList(std::shared_ptr<const std::vector<Deployment>> list)
      : list_(std::move(list)) {}
  [[nodiscard]] std::vector<Deployment>::const_iterator begin() const noexcept {
    return list_ ? list_->begin() : std::vector<Deployment>::const_iterator();
  }
  [[nodiscard]] std::vector<Deployment>::const_iterator end() const noexcept {
    return list_ ? list_->end() : std::vector<Deployment>::const_iterator();
  }
  [[nodiscard]] std::size_t size() const noexcept { return list_ ? list_->size() : 0; }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  [[nodiscard]] const Deployment& operator[](std::size_t i) const { return (*list_)[i]; }

 private:
  std::shared_ptr<const std::vector<Deployment>> list_;
};

/// The queue. Construct, `co_await initiate()`, then `co_await execute_request(...)` (or
/// `async_execute_request(..., token)`) from any number of coroutines or threads; finally
/// `co_await graceful_shutdown()`.
///
/// Outcomes (see errors.hpp): a refusal or failure decided by llmq is an llmq::errc
/// (async_execute_request's error_code; execute_request throws the matching exception);
/// whatever the executor produced is the Response (an executor that threw gives a 500
/// Response; the queue keeps serving).
///
/// Cancellation (a cancellation slot on the completion handler, e.g. `||` with a timer, or
/// a client that disconnected): honoured according to the request's state, then the
/// operation completes at once with `boost::asio::error::operation_aborted`:
/// - waiting in the queue, nothing spent yet: terminal, partial and total; the request is
///   removed and never runs;
/// - waiting for the shared budget store's confirmation, or waiting to be retried after a
///   failed attempt: terminal and partial (the charge or the attempt already happened);
/// - running: terminal only; the executor is cancelled (terminal), which for the ready-made
///   executors aborts the upstream call.
/// Other types are ignored in that state and the request goes on.
///
/// Thread safety: all members may be called from any thread. State lives on an
/// internal strand of the executor passed in; executors run on that strand.
class LLMQueue {
 public:
  /// Throws ConfigError when `config` is invalid or an executor is null.
  LLMQueue(boost::asio::any_io_executor ex, LLMConfig config,
           std::map<std::string, std::shared_ptr<RequestExecutor>> executors,
           QueueOptions options = {});
  ~LLMQueue();
  LLMQueue(const LLMQueue&) = delete;
  LLMQueue& operator=(const LLMQueue&) = delete;

  /// Connects the telemetry store and starts the dispatcher and telemetry flusher.
  /// Must complete before execute_request. Calling it twice is harmless.
  boost::asio::awaitable<void> initiate();

  /// Admits, queues and runs one request. Completion signature
  /// `void(boost::system::error_code, llmq::Response)`:
  /// - success (no error): the executor's Response (any status);
  /// - an llmq::errc (see errors.hpp) for a refusal or a failure llmq decided; the
  ///   Response then holds the error body `{"error":{"message","type","code"}}` (code: the
  ///   errc's name), its HTTP status, and `retry_after` when llmq knows when to come back
  ///   (user_rate_limited: the exact time; store failures: the store's hint);
  /// - `boost::asio::error::operation_aborted` when the caller cancelled.
  /// The Response's request_id is set in every case once the request was given one.
  ///
  /// `token`: any Asio completion token (a callback, use_awaitable, use_future,
  /// as_tuple(...), deferred, ...). The handler runs on its associated executor (else on
  /// the executor the queue was constructed with), never inside this call.
  template <class CompletionToken>
  requires(!std::is_same_v<std::decay_t<CompletionToken>,
                           RequestOptions>) auto async_execute_request(std::string req_type,
                                                                       nlohmann::json request_data,
                                                                       std::string user_id,
                                                                       ModelPreferences model_pref,
                                                                       CompletionToken&& token) {
    return async_execute_request(std::move(req_type), std::move(request_data), std::move(user_id),
                                 std::move(model_pref), RequestOptions{},
                                 std::forward<CompletionToken>(token));
  }

  /// As above, with per-request options.
  template <class CompletionToken>
  auto async_execute_request(std::string req_type, nlohmann::json request_data, std::string user_id,
                             ModelPreferences model_pref, RequestOptions options,
                             CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, Response)>(
        Initiation{core_}, token,
        prepare(std::move(req_type), std::move(request_data), std::move(user_id),
                std::move(model_pref), std::move(options)));
  }

  /// The seed's call: `auto [body, status] = co_await queue.execute_request(...)`.
  /// Returns the executor's Response; throws the exception of an llmq::errc
  /// (UserIdHeaderMissingError, UserRateLimitExceededError, SchedulerQueueFullError,
  /// QueueTimeoutError, QueueClosedError, InvalidRequestError, ExecutionTimeoutError,
  /// StoreUnavailableError), or `boost::system::system_error(operation_aborted)` when
  /// cancelled.
  boost::asio::awaitable<Response> execute_request(std::string req_type,
                                                   nlohmann::json request_data, std::string user_id,
                                                   ModelPreferences model_pref,
                                                   RequestOptions options);
  /// As above, without options. (Not a default argument: g++ 12 copies a defaulted
  /// class-type argument of a coroutine bytewise, which breaks its strings.)
  boost::asio::awaitable<Response> execute_request(std::string req_type,
                                                   nlohmann::json request_data, std::string user_id,
                                                   ModelPreferences model_pref = {});

  /// Admits, queues and runs one request whose answer is streamed: the executor's
  /// process_streaming_request writes chunks, the caller reads them from the returned
  /// ResponseStream as they arrive (see stream.hpp). Completes once the first chunk is
  /// there, or once the request ended without one (then the stream is not streaming()
  /// and holds the Response). The request keeps its deployments while the stream runs;
  /// its token charge is reconciled from the usage the executor reports; an attempt that
  /// fails before its first chunk is retried as execute_request's are, never after it.
  /// Closing the stream early cancels the request (status 499 in telemetry).
  /// The execution_timeout bounds the whole stream.
  ///
  /// Refusals throw as execute_request's do; cancelling the awaiting coroutine before the
  /// first chunk cancels the request and throws `system_error(operation_aborted)`.
  boost::asio::awaitable<ResponseStream> execute_streaming_request(std::string req_type,
                                                                   nlohmann::json request_data,
                                                                   std::string user_id,
                                                                   ModelPreferences model_pref,
                                                                   RequestOptions options);
  /// As above, without options.
  boost::asio::awaitable<ResponseStream> execute_streaming_request(
      std::string req_type, nlohmann::json request_data, std::string user_id,
      ModelPreferences model_pref = {});

  /// execute_streaming_request for any completion token. Completion signature
  /// `void(boost::system::error_code, llmq::ResponseStream)`: no error with the stream
  /// (streaming or not, as above); an llmq::errc with a stream that is not streaming()
  /// and holds the refusal's Response; operation_aborted when cancelled before the first
  /// chunk. The handler runs on its associated executor (else the queue's).
  template <class CompletionToken>
  auto async_execute_streaming_request(std::string req_type, nlohmann::json request_data,
                                       std::string user_id, ModelPreferences model_pref,
                                       RequestOptions options, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken,
                                       void(boost::system::error_code, ResponseStream)>(
        [this](auto handler, std::string rt, nlohmann::json body, std::string user,
               ModelPreferences prefs, RequestOptions opts) {
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto ex = boost::asio::get_associated_executor(handler, executor_of(*core_));
          boost::asio::co_spawn(
              executor_of(*core_),
              open_stream(std::move(rt), std::move(body), std::move(user), std::move(prefs),
                          std::move(opts)),
              boost::asio::bind_cancellation_slot(
                  slot,
                  boost::asio::bind_executor(
                      ex, [h = std::move(handler)](
                              std::exception_ptr ep,
                              std::pair<boost::system::error_code, ResponseStream> p) mutable {
                        if (ep) p.first = boost::asio::error::operation_aborted;
                        std::move(h)(p.first, std::move(p.second));
                      })));
        },
        token, std::move(req_type), std::move(request_data), std::move(user_id),
        std::move(model_pref), std::move(options));
  }

  /// Stops admitting (new calls get errc::queue_closed), lets queued and in-flight work
  /// finish until QueueOptions::shutdown_timeout, then answers what is left with
  /// errc::queue_closed (a request waiting to be retried gets its last attempt's answer)
  /// and cancels running executors, flushes telemetry and closes the stores, each bounded
  /// by QueueOptions::shutdown_flush_timeout. Returns at once when idle. Calling it again
  /// waits for the first call's work.
  boost::asio::awaitable<void> graceful_shutdown();

  /// Adds or replaces the executor for `req_type`. Throws ConfigError if null.
  void register_request_executor(const std::string& req_type,
                                 std::shared_ptr<RequestExecutor> executor);

  /// A consistent snapshot of the queue.
  boost::asio::awaitable<QueueStats> stats();

  /// Switches to a new configuration without stopping: deployments (added, removed, limits,
  /// weights, priorities, endpoints or keys changed), user limits and tiers, scheduler
  /// limits. Throws ConfigError when `config` is invalid, before anything changes.
  /// - A deployment whose unique_model_id stays keeps its windows, backoff and counters
  ///   (under its new limits); a new one starts empty; a removed one gets no new requests.
  /// - Requests running (or confirming with the shared budget store) finish on the
  ///   deployment they have, as it was configured when they got it.
  /// - Requests waiting are resolved again against the new deployments, keeping their
  ///   order and deadlines; one the new configuration cannot serve (its pinned deployment
  ///   or model is gone, or no deployment left could take its estimate) is answered with
  ///   errc::unsatisfiable_preferences or errc::request_too_large (a request waiting to be
  ///   retried: with its last attempt's answer).
  /// - New requests get the new limits; user windows (in the rate-limit store) are kept.
  /// Completes once the new configuration is in use. Executors and QueueOptions stay.
  boost::asio::awaitable<void> reconfigure(LLMConfig config);

  /// The deployments of the configuration in use (ChosenDeployments point into the
  /// configuration a request was dispatched under).
  [[nodiscard]] DeploymentList deployments() const;

  /// The telemetry store in use (the default in-memory one unless one was given).
  [[nodiscard]] std::shared_ptr<TelemetryStore> telemetry_store() const noexcept;

 private:
  struct Initiation {
    std::shared_ptr<detail::QueueCore> core;
    template <class Handler>
    void operator()(Handler&& handler, std::shared_ptr<detail::Entry> entry) const {
      auto slot = boost::asio::get_associated_cancellation_slot(handler);
      start(*core, detail::ErasedHandler(std::forward<Handler>(handler), executor_of(*core)), slot,
            std::move(entry));
    }
  };
  /// The request, moved once into the queue's own record of it (nothing is decided yet).
  [[nodiscard]] std::shared_ptr<detail::Entry> prepare(std::string&& req_type,
                                                       nlohmann::json&& request_data,
                                                       std::string&& user_id,
                                                       ModelPreferences&& model_pref,
                                                       RequestOptions&& options);
  /// Admits a streamed request; returns its stream's state.
  std::shared_ptr<detail::StreamState> launch_stream(std::string&& req_type,
                                                     nlohmann::json&& request_data,
                                                     std::string&& user_id,
                                                     ModelPreferences&& model_pref,
                                                     RequestOptions&& options);
  /// The stream of one request and how it began (the errc of a refusal, or none).
  boost::asio::awaitable<std::pair<boost::system::error_code, ResponseStream>> open_stream(
      std::string req_type, nlohmann::json request_data, std::string user_id,
      ModelPreferences model_pref, RequestOptions options);
  static void start(detail::QueueCore& core, detail::ErasedHandler handler,
                    boost::asio::cancellation_slot slot, std::shared_ptr<detail::Entry> entry);
  [[nodiscard]] static const boost::asio::any_io_executor& executor_of(
      const detail::QueueCore& core) noexcept;

  std::shared_ptr<detail::QueueCore> core_;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/queue-inl.hpp>
#endif
