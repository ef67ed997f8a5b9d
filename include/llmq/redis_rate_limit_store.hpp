#pragma once
/// @file redis_rate_limit_store.hpp
/// Per-user limits shared by every process that talks to one Redis (or Redis Cluster).
/// Link target: llmq::redis.

#include <llmq/errors.hpp>
#include <llmq/rate_limit_store.hpp>
#include <llmq/redis.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace llmq {

/// What RedisUserRateLimitStore does when Redis cannot decide (unreachable, timed out,
/// answering with errors).
enum class RateLimitFailurePolicy {
  /// Decide locally with an InMemoryUserRateLimitStore (per process, so the effective
  /// limit is multiplied by the number of processes while Redis is away), log a warning
  /// and count the decision. Availability over exactness.
  fail_open,
  /// Throw RateLimitStoreUnavailableError (503): no request is admitted unchecked.
  fail_closed,
};

/// Thrown by RedisUserRateLimitStore::acquire under RateLimitFailurePolicy::fail_closed
/// when Redis cannot decide (503). `retry_after()` suggests when to try again.
class RateLimitStoreUnavailableError : public StoreUnavailableError {
 public:
  RateLimitStoreUnavailableError(const std::string& why, std::chrono::milliseconds retry_after)
      : StoreUnavailableError("user rate limit store unavailable: " + why,
                              errc::user_limit_store_unavailable, retry_after),
        retry_after_(retry_after) {}

  [[nodiscard]] std::chrono::milliseconds retry_after() const noexcept { return retry_after_; }

 private:
  std::chrono::milliseconds retry_after_;
};

/// Tunables of RedisUserRateLimitStore, each with its default.
struct RedisRateLimitStoreOptions {
  /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS (see
  /// parse_redis_url). For a cluster, any one node; the others are found through
  /// redirects. Default redis://127.0.0.1:6379/0.
  std::string url = "redis://127.0.0.1:6379/0";
  /// Prepended to every key: a user's window is the sorted set `<key_prefix>{<user_id>}`.
  /// Must not contain `{` or `}` (the braces around the user id are the cluster hash
  /// tag). Default "llmq:ul:".
  std::string key_prefix = "llmq:ul:";
  /// Bound on connecting (TCP + TLS handshake + AUTH + SELECT). Default 1 s.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(1)};
  /// Bound on one decision's round trip. Default 500 ms.
  std::chrono::milliseconds command_timeout{500};
  /// First reconnect backoff after a failed connect (doubles up to the max). While
  /// backing off, decisions fail at once (no network wait). Default 100 ms.
  std::chrono::milliseconds reconnect_backoff_initial{100};
  /// Largest reconnect backoff. Default 2 s.
  std::chrono::milliseconds reconnect_backoff_max{std::chrono::seconds(2)};
  /// CA file, client certificate, verification of a `rediss://` url (see
  /// RedisTlsOptions); query parameters of the url override these fields. Ignored for
  /// `redis://`.
  RedisTlsOptions tls;
  /// See RateLimitFailurePolicy. Default fail_open.
  RateLimitFailurePolicy failure_policy = RateLimitFailurePolicy::fail_open;
  /// RateLimitStoreUnavailableError::retry_after() under fail_closed. Default 1 s.
  std::chrono::milliseconds unavailable_retry_after{std::chrono::seconds(1)};
};

/// Counters of a RedisUserRateLimitStore (monotonic since construction).
struct RedisRateLimitStoreCounters {
  std::uint64_t redis_decisions = 0;      ///< decisions Redis made
  std::uint64_t errors = 0;               ///< decisions Redis failed to make
  std::uint64_t fail_open_decisions = 0;  ///< of those, decided locally (fail_open)
};

/// Exact sliding-window log per user in Redis: one sorted set per user, scored by the
/// Redis server's clock (`TIME`, microseconds), updated by one Lua script (EVALSHA, EVAL
/// on NOSCRIPT) that drops entries older than the window, counts, admits by adding a
/// unique member and setting PEXPIRE to the window (so idle users vanish), or refuses
/// with the exact time until the entry that must leave does so. Several processes (or
/// stores) sharing one Redis admit, in total, at most `max_num_requests_in_time_window`
/// per user in any window. User ids are arbitrary bytes (binary-safe arguments; nothing
/// is interpolated into the script).
///
/// Thread safety: acquire() may be called concurrently from any thread.
/// Cancellation: cancelling acquire() abandons the wait (operation_aborted); the script
/// may still run on the server and record the request.
class RedisUserRateLimitStore : public UserRateLimitStore {
 public:
  /// Throws ConfigError for a bad URL or key prefix, or a TLS file that cannot be loaded.
  /// Connects lazily (first acquire).
  RedisUserRateLimitStore(boost::asio::any_io_executor ex, RedisRateLimitStoreOptions options = {});
  ~RedisUserRateLimitStore() override;

  /// Decides for `user_id`. When Redis cannot decide: fail_open decides locally;
  /// fail_closed throws RateLimitStoreUnavailableError. Throws
  /// boost::system::system_error(operation_aborted) when cancelled.
  boost::asio::awaitable<RateLimitDecision> acquire(std::string_view user_id,
                                                    const UserLimits& limits) override;

  /// Closes the Redis connections. Later acquire() calls fail like an outage would.
  boost::asio::awaitable<void> close() override;

  [[nodiscard]] RedisRateLimitStoreCounters counters() const noexcept;

  /// The Redis key holding `user_id`'s window.
  [[nodiscard]] std::string key_for(std::string_view user_id) const;

  /// The underlying client (e.g. to inspect node_count() or redirects()).
  [[nodiscard]] RedisClient& client() noexcept { return *client_; }

  /// The Lua script and its SHA-1, as sent to Redis.
  [[nodiscard]] static const std::string& script();
  [[nodiscard]] static const std::string& script_sha1();

 private:
  RateLimitDecision on_failure(std::string_view user_id, const UserLimits& limits,
                               const std::string& why);

  RedisRateLimitStoreOptions options_;
  std::unique_ptr<RedisClient> client_;
  InMemoryUserRateLimitStore local_;
  std::string member_prefix_;  // random per store: members stay unique across processes
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> redis_decisions_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> fail_open_decisions_{0};
  std::atomic<bool> degraded_{false};
};

}  // namespace llmq
