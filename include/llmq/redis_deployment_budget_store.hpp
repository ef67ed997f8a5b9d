#pragma once
/// @file redis_deployment_budget_store.hpp
/// Deployment budgets (RPM, TPM, 1 s / 10 s pacing, backoff) shared by every process that
/// talks to one Redis (or Redis Cluster). Link target: llmq::redis.

#include <llmq/deployment_budget_store.hpp>
#include <llmq/errors.hpp>
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

/// Tunables of RedisDeploymentBudgetStore, each with its default.
struct RedisDeploymentBudgetOptions {
  /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS (see
  /// parse_redis_url). For a cluster, any one node; the others are found through
  /// redirects. Default redis://127.0.0.1:6379/0.
  std::string url = "redis://127.0.0.1:6379/0";
  /// Prepended to every key: a deployment's charges are the sorted set
  /// `<key_prefix>{<unique_model_id>}`, its shared backoff `<key_prefix>{<id>}:backoff`.
  /// Must not contain `{` or `}` (the braces around the id are the cluster hash tag).
  /// Default "llmq:db:".
  std::string key_prefix = "llmq:db:";
  /// Bound on connecting (TCP + TLS handshake + AUTH + SELECT). Default 1 s.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(1)};
  /// Bound on one round trip (a try_charge makes one, two on a NOSCRIPT fallback).
  /// Default 500 ms.
  std::chrono::milliseconds command_timeout{500};
  /// First reconnect backoff after a failed connect (doubles up to the max). While
  /// backing off, calls fail at once (no network wait). Default 100 ms.
  std::chrono::milliseconds reconnect_backoff_initial{100};
  /// Largest reconnect backoff. Default 2 s.
  std::chrono::milliseconds reconnect_backoff_max{std::chrono::seconds(2)};
  /// CA file, client certificate, verification of a `rediss://` url (see
  /// RedisTlsOptions); query parameters of the url override these fields. Ignored for
  /// `redis://`.
  RedisTlsOptions tls;
};

/// Counters of a RedisDeploymentBudgetStore (monotonic since construction).
struct RedisDeploymentBudgetCounters {
  std::uint64_t decisions = 0;  ///< try_charge calls Redis answered (allowed or refused)
  std::uint64_t refusals = 0;   ///< of those, refused
  std::uint64_t errors = 0;     ///< try_charge / report_backoff calls that failed (thrown)
};

/// Thrown by RedisDeploymentBudgetStore when Redis answered with an error reply or with
/// a reply of an unexpected shape (503). Transport failures (unreachable, timed out)
/// arrive as boost::system::system_error with a RedisErrc code.
class DeploymentBudgetStoreError : public Error {
 public:
  explicit DeploymentBudgetStoreError(const std::string& why)
      : Error("deployment budget store: " + why, 503) {}
};

/// An exact sliding-window log per deployment in Redis, applying the same rule as the
/// local WeightedRoundRobinBalancer, but to the charges of every process together:
///
/// - one sorted set per deployment, `<key_prefix>{<unique_model_id>}`, scored by the
///   Redis server's clock (`TIME`, microseconds), one member per charge
///   (`<unique id>:<calls>:<tokens>`), trimmed to the last 60 s, `PEXPIRE` 61 s;
/// - one Lua script (EVALSHA, EVAL on NOSCRIPT) checks the shared backoff key first, then
///   the calls of the last 60 s against `req_per_min`, the tokens of the last 60 s
///   against `tokens_per_min` and, with `pace_short_windows`, the calls of the last 10 s
///   against max(1, rpm/6) and of the last 1 s against max(1, rpm/60). A window admits
///   when used + need <= limit or it is empty. Admitted: the charge is recorded. Refused:
///   nothing is recorded and `retry_after` is the time until enough of the oldest charges
///   have left every blocking window (or the backoff's remaining time), at least 1 ms.
/// - report_backoff() sets `<key_prefix>{<id>}:backoff` with PX, keeping the longer of
///   the current and the new backoff.
///
/// Both keys of a deployment share a hash slot, so everything works on Redis Cluster.
/// Failures (unreachable, timeouts, error replies) throw; the queue then applies
/// QueueOptions::budget_store_fail_open. Nothing blocks a thread; every call is bounded
/// by the connect and command timeouts.
///
/// Thread safety: every member may be called concurrently from any thread.
/// Cancellation: cancelling try_charge() abandons the wait (operation_aborted); the
/// script may still run on the server and record the charge.
class RedisDeploymentBudgetStore : public DeploymentBudgetStore {
 public:
  /// Throws ConfigError for a bad URL or key prefix, or a TLS file that cannot be loaded.
  /// Connects lazily (first call).
  RedisDeploymentBudgetStore(boost::asio::any_io_executor ex,
                             RedisDeploymentBudgetOptions options = {});
  ~RedisDeploymentBudgetStore() override;
  RedisDeploymentBudgetStore(const RedisDeploymentBudgetStore&) = delete;
  RedisDeploymentBudgetStore& operator=(const RedisDeploymentBudgetStore&) = delete;

  /// Charges `need` (calls and tokens are clamped at 0) if every shared window of
  /// `deployment` has room. Throws std::invalid_argument when `limits.req_per_min` or
  /// `limits.tokens_per_min` is not positive; boost::system::system_error (RedisErrc) on
  /// transport failures; DeploymentBudgetStoreError on error replies.
  boost::asio::awaitable<BudgetDecision> try_charge(const Deployment& deployment,
                                                    const DeploymentLimits& limits,
                                                    DeploymentNeed need) override;

  /// Every process's try_charge for `deployment` is refused for `duration` (or for the
  /// longer backoff already set). Non-positive durations are ignored. Throws like
  /// try_charge.
  boost::asio::awaitable<void> report_backoff(const Deployment& deployment,
                                              std::chrono::milliseconds duration) override;

  /// Closes the Redis connections; later calls fail (RedisErrc::closed).
  boost::asio::awaitable<void> close() override;

  [[nodiscard]] RedisDeploymentBudgetCounters counters() const noexcept;

  /// The sorted set holding `unique_model_id`'s charges.
  [[nodiscard]] std::string key_for(std::string_view unique_model_id) const;
  /// The key holding `unique_model_id`'s shared backoff.
  [[nodiscard]] std::string backoff_key_for(std::string_view unique_model_id) const;

  /// The underlying client (e.g. to inspect node_count() or redirects()).
  [[nodiscard]] RedisClient& client() noexcept { return *client_; }

  /// The charge script and its SHA-1, as sent to Redis.
  [[nodiscard]] static const std::string& charge_script();
  [[nodiscard]] static const std::string& charge_script_sha1();
  /// The backoff script (keep the longer PX) and its SHA-1.
  [[nodiscard]] static const std::string& backoff_script();
  [[nodiscard]] static const std::string& backoff_script_sha1();

 private:
  RedisDeploymentBudgetOptions options_;
  std::unique_ptr<RedisClient> client_;
  std::string member_prefix_;  // random per store: members stay unique across processes
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> decisions_{0};
  std::atomic<std::uint64_t> refusals_{0};
  std::atomic<std::uint64_t> errors_{0};
};

}  // namespace llmq
