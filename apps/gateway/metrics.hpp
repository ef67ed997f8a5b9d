#pragma once
// Prometheus text exposition for llmq-gateway: the queue's stats plus histograms fed by
// telemetry records (a TelemetryStore decorator) and the gateway's own counters.

#include "access_log.hpp"
#include "dashboard.hpp"

#include <llmq/queue.hpp>
#include <llmq/telemetry.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace llmq::gateway {

/// A cumulative histogram with fixed bucket bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double seconds);
  /// Appends `name_bucket{le=...}`, `name_sum`, `name_count` lines.
  void render(std::string& out, const std::string& name) const;
  /// The value below which a share `q` (0..1) of the observations fell, interpolated
  /// linearly inside its bucket (the last bound for the +Inf bucket); 0 when empty.
  [[nodiscard]] double quantile(double q) const;
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

/// The HTTP server's connection counters, for /metrics.
struct ConnectionCounters {
  std::size_t open = 0;
  std::uint64_t refused = 0;        ///< closed at accept: at max_connections, none idle
  std::uint64_t evicted = 0;        ///< idle connections closed to admit another
  std::uint64_t accept_errors = 0;  ///< failed accepts (e.g. out of file descriptors)
  std::uint64_t tls_handshake_failures = 0;
};

class Metrics {
 public:
  Metrics();

  /// Called for every telemetry record (from the queue's flusher).
  void observe(const TelemetryData& t);
  /// A request the gateway answered itself (auth, bad input, queue errors), by reason.
  void rejected(const std::string& reason);
  /// An HTTP answer, by status.
  void answered(int status);
  /// A client disconnected while its request was queued or running (it was cancelled).
  void client_disconnected();
  /// A streamed answer began (+1) or ended (-1), for llmq_gateway_streams_open.
  void stream_open(int delta) noexcept { streams_open_.fetch_add(delta); }
  /// A configuration reload ended at `unix_seconds` (ok: its file is in use). Until the
  /// first, the configuration read at start counts as the last successful one.
  void config_reloaded(bool ok, double unix_seconds);
  /// Where render() reads the connection counters from (called on each render).
  void connection_counters(std::function<ConnectionCounters()> source);

  /// The whole exposition, queue stats included.
  std::string render(const QueueStats& stats) const;

  /// What /stats shows beside the queue's stats: the top `top_users` users by admitted
  /// and by refused requests, latency percentiles, tokens by deployment.
  [[nodiscard]] DashboardView dashboard_view(std::size_t top_users) const;

 private:
  mutable std::mutex mutex_;
  Histogram queue_wait_;
  Histogram upstream_latency_;
  Histogram total_latency_;
  Histogram time_to_first_token_;
  Histogram stream_duration_;
  std::atomic<std::int64_t> streams_open_{0};
  std::uint64_t streamed_ = 0;
  std::map<std::string, std::uint64_t> rejected_;
  /// By status 100-599 (nothing else is sent). Atomic: counted for every answer, from
  /// every I/O thread, without the mutex.
  std::array<std::atomic<std::uint64_t>, 500> http_status_{};
  std::map<std::string, std::uint64_t> upstream_429_;  // by deployment
  std::map<std::string, std::uint64_t> tokens_;        // by deployment
  std::uint64_t client_disconnects_ = 0;
  std::uint64_t reloads_succeeded_ = 0;
  std::uint64_t reloads_failed_ = 0;
  bool last_reload_ok_ = true;
  double last_reload_time_ = 0;  // the start until a reload
  double last_reload_success_time_ = 0;
  UserCounts users_;
  std::function<ConnectionCounters()> connections_;
};

/// Forwards to `inner` after feeding `metrics` (and the access log, if any: each record
/// completes its request's line).
class MetricsTelemetryStore : public TelemetryStore {
 public:
  MetricsTelemetryStore(std::shared_ptr<Metrics> metrics, std::shared_ptr<TelemetryStore> inner,
                        std::shared_ptr<AccessLog> access_log = nullptr);
  boost::asio::awaitable<void> connect() override;
  boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) override;
  boost::asio::awaitable<void> close() override;

 private:
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<TelemetryStore> inner_;
  std::shared_ptr<AccessLog> access_log_;
};

}  // namespace llmq::gateway
