#include "metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace llmq::gateway {
namespace {
std::vector<double> latency_bounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

/// Up to 15 significant digits: counters and Unix timestamps print exactly (%.6g did not).
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

/// Label values are escaped as the exposition format requires.
std::string label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += ' ';
  out += number(v);
  out += '\n';
}

/// A metric with one unlabelled sample.
void single(std::string& out, const char* name, const char* type, const char* help, double v) {
  header(out, name, type, help);
  sample(out, name, "", v);
}
}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += seconds;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name) const {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    sample(out, name + "_bucket", "le=\"" + number(bounds_[i]) + "\"",
           static_cast<double>(cumulative));
  }
  cumulative += counts_.back();
  sample(out, name + "_bucket", "le=\"+Inf\"", static_cast<double>(cumulative));
  sample(out, name + "_sum", "", sum_);
  sample(out, name + "_count", "", static_cast<double>(count_));
}

double Histogram::quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(count_);
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] == 0 || static_cast<double>(below + counts_[i]) < rank) {
      below += counts_[i];
      continue;
    }
    if (i == bounds_.size()) return bounds_.empty() ? 0 : bounds_.back();
    const double lo = i == 0 ? 0 : bounds_[i - 1];
    const double share = (rank - static_cast<double>(below)) / static_cast<double>(counts_[i]);
    return lo + (bounds_[i] - lo) * std::clamp(share, 0.0, 1.0);
  }
  return bounds_.empty() ? 0 : bounds_.back();
}

Metrics::Metrics()
    : queue_wait_(latency_bounds()),
      upstream_latency_(latency_bounds()),
      total_latency_(latency_bounds()),
      time_to_first_token_(latency_bounds()),
      stream_duration_(latency_bounds()),
      last_reload_time_(unix_seconds_now()),
      last_reload_success_time_(last_reload_time_) {}

void Metrics::observe(const TelemetryData& t) {
  std::lock_guard lock(mutex_);
  auto secs = [](std::chrono::microseconds d) { return static_cast<double>(d.count()) / 1e6; };
  if (t.dispatched_at.time_since_epoch().count() != 0) {
    queue_wait_.observe(secs(t.queue_wait));
    upstream_latency_.observe(secs(t.execution_time));
  }
  if (t.completed_at >= t.received_at && t.received_at.time_since_epoch().count() != 0)
    total_latency_.observe(secs(t.completed_at - t.received_at));
  if (t.streamed) {
    ++streamed_;
    if (t.time_to_first_token) time_to_first_token_.observe(secs(*t.time_to_first_token));
    if (t.stream_duration) stream_duration_.observe(secs(*t.stream_duration));
  }
  for (const AttemptRecord& a : t.attempt_log)
    if (a.status == 429) {
      if (!a.llm_deployment.empty()) ++upstream_429_[a.llm_deployment];
      if (!a.embedding_deployment.empty()) ++upstream_429_[a.embedding_deployment];
    }
  // Entered the queue, or refused before (a user limit, a full queue, a bad request).
  if (!t.user_id.empty()) users_.count(t.user_id, t.queued_at.time_since_epoch().count() != 0);
  if (!t.llm_deployment.empty())
    tokens_[t.llm_deployment] += static_cast<std::uint64_t>(t.prompt_tokens + t.completion_tokens);
  if (!t.embedding_deployment.empty())
    tokens_[t.embedding_deployment] += static_cast<std::uint64_t>(t.embedding_tokens);
}

void Metrics::rejected(const std::string& reason) {
  std::lock_guard lock(mutex_);
  ++rejected_[reason];
}

void Metrics::answered(int status) {
  if (status < 100 || status > 599) return;  // not an HTTP status: never sent
  http_status_[static_cast<std::size_t>(status - 100)].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::client_disconnected() {
  std::lock_guard lock(mutex_);
  ++client_disconnects_;
}

void Metrics::config_reloaded(bool ok, double unix_seconds) {
  std::lock_guard lock(mutex_);
  ++(ok ? reloads_succeeded_ : reloads_failed_);
  last_reload_ok_ = ok;
  last_reload_time_ = unix_seconds;
  if (ok) last_reload_success_time_ = unix_seconds;
}

void Metrics::connection_counters(std::function<ConnectionCounters()> source) {
  std::lock_guard lock(mutex_);
  connections_ = std::move(source);
}

std::string Metrics::render(const QueueStats& s) const {
  std::string out;
  out.reserve(8192);
  header(out, "llmq_queue_depth", "gauge", "Requests waiting in the queue.");
  sample(out, "llmq_queue_depth", "", static_cast<double>(s.queue_depth));
  header(out, "llmq_queue_depth_by_priority", "gauge",
         "Requests waiting in the queue, by the priority they were given.");
  for (const Priority p : {Priority::high, Priority::normal, Priority::low})
    sample(out, "llmq_queue_depth_by_priority", "priority=\"" + std::string(to_string(p)) + "\"",
           static_cast<double>(s.queued_by_priority[static_cast<std::size_t>(p)]));
  header(out, "llmq_queue_depth_by_tier", "gauge",
         "Requests waiting in the queue, by user tier (\"\" for the default tier).");
  for (const TierStats& t : s.tiers)
    sample(out, "llmq_queue_depth_by_tier", "tier=\"" + label(t.name) + "\"",
           static_cast<double>(t.queued));
  header(out, "llmq_queue_depth_by_user", "gauge",
         "Requests waiting in the queue, for the users with the most waiting (at most 10).");
  for (const UserQueueStats& u : s.users)
    sample(out, "llmq_queue_depth_by_user", "user=\"" + label(u.user) + "\"",
           static_cast<double>(u.queued));
  header(out, "llmq_admitted_by_tier_total", "counter", "Requests admitted, by user tier.");
  for (const TierStats& t : s.tiers)
    sample(out, "llmq_admitted_by_tier_total", "tier=\"" + label(t.name) + "\"",
           static_cast<double>(t.admitted));
  header(out, "llmq_in_flight", "gauge", "Requests being executed.");
  sample(out, "llmq_in_flight", "", static_cast<double>(s.in_flight));
  header(out, "llmq_admitted_total", "counter", "Requests admitted into the queue.");
  sample(out, "llmq_admitted_total", "", static_cast<double>(s.admitted));
  header(out, "llmq_completed_total", "counter", "Requests whose executor finished.");
  sample(out, "llmq_completed_total", "", static_cast<double>(s.completed));
  header(out, "llmq_rejected_total", "counter", "Requests refused, by reason.");
  sample(out, "llmq_rejected_total", "reason=\"user_limit\"",
         static_cast<double>(s.rejected_user_limit));
  sample(out, "llmq_rejected_total", "reason=\"user_queue_full\"",
         static_cast<double>(s.rejected_user_queue_full));
  sample(out, "llmq_rejected_total", "reason=\"predicted_timeout\"",
         static_cast<double>(s.rejected_predicted));
  // The reasons are disjoint: queue_full counts the refusals for the queue's size alone.
  sample(out, "llmq_rejected_total", "reason=\"queue_full\"",
         static_cast<double>(s.rejected_queue_full - s.rejected_user_queue_full -
                             s.rejected_predicted));
  sample(out, "llmq_rejected_total", "reason=\"invalid\"", static_cast<double>(s.rejected_invalid));
  sample(out, "llmq_rejected_total", "reason=\"queue_timeout\"", static_cast<double>(s.timed_out));
  sample(out, "llmq_rejected_total", "reason=\"cancelled\"", static_cast<double>(s.cancelled));
  header(out, "llmq_telemetry_records_total", "counter",
         "Requests that ended, each with its telemetry record (admitted or not).");
  sample(out, "llmq_telemetry_records_total", "", static_cast<double>(s.telemetry_records));
  header(out, "llmq_telemetry_dropped_total", "counter",
         "Telemetry records dropped (buffer full).");
  sample(out, "llmq_telemetry_dropped_total", "", static_cast<double>(s.telemetry_dropped));
  header(out, "llmq_telemetry_failed_total", "counter",
         "Telemetry records the store failed to write.");
  sample(out, "llmq_telemetry_failed_total", "", static_cast<double>(s.telemetry_failed));

  header(out, "llmq_deployment_requests_total", "counter", "Requests dispatched to a deployment.");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_requests_total", "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.granted));
  header(out, "llmq_deployment_requests_in_window", "gauge", "Calls charged in the last 60 s.");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_requests_in_window",
           "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.requests_in_window));
  header(out, "llmq_deployment_tokens_in_window", "gauge", "Tokens charged in the last 60 s.");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_tokens_in_window",
           "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.tokens_in_window));
  header(out, "llmq_deployment_failures_total", "counter",
         "Upstream failures reported (429 and 5xx).");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_failures_total", "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.failures));
  header(out, "llmq_deployment_spilled_total", "counter",
         "Requests a deployment got because a better priority group had no room.");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_spilled_total", "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.spilled));
  header(out, "llmq_deployment_paced_total", "counter",
         "Requests sent to a deployment after waiting for room in its 1 s / 10 s / 60 s "
         "windows (429s avoided by pacing).");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_paced_total", "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.paced));
  header(out, "llmq_deployment_backoff_seconds", "gauge", "Remaining backoff (0 = in rotation).");
  for (const auto& d : s.deployments)
    sample(out, "llmq_deployment_backoff_seconds",
           "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(d.backoff_remaining.count()) / 1000.0);

  std::lock_guard lock(mutex_);
  header(out, "llmq_deployment_throttled_total", "counter",
         "429 answers received from a deployment.");
  for (const auto& d : s.deployments) {
    auto it = upstream_429_.find(d.unique_model_id);
    sample(out, "llmq_deployment_throttled_total",
           "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(it == upstream_429_.end() ? 0 : it->second));
  }
  header(out, "llmq_deployment_tokens_total", "counter", "Tokens used (as the upstream reported).");
  for (const auto& d : s.deployments) {
    auto it = tokens_.find(d.unique_model_id);
    sample(out, "llmq_deployment_tokens_total", "deployment=\"" + label(d.unique_model_id) + "\"",
           static_cast<double>(it == tokens_.end() ? 0 : it->second));
  }
  header(out, "llmq_gateway_rejected_total", "counter",
         "Requests the gateway answered with an error, by reason.");
  for (const auto& [reason, n] : rejected_)
    sample(out, "llmq_gateway_rejected_total", "reason=\"" + label(reason) + "\"",
           static_cast<double>(n));
  header(out, "llmq_gateway_http_responses_total", "counter", "HTTP answers by status.");
  for (std::size_t i = 0; i < http_status_.size(); ++i)
    if (const std::uint64_t n = http_status_[i].load(std::memory_order_relaxed); n != 0)
      sample(out, "llmq_gateway_http_responses_total", "status=\"" + std::to_string(i + 100) + "\"",
             static_cast<double>(n));
  single(out, "llmq_gateway_client_disconnects_total", "counter",
         "Clients that disconnected while their request was queued or running (cancelled).",
         static_cast<double>(client_disconnects_));
  const ConnectionCounters c = connections_ ? connections_() : ConnectionCounters{};
  single(out, "llmq_gateway_connections_open", "gauge", "Client connections open.",
         static_cast<double>(c.open));
  single(out, "llmq_gateway_connections_refused_total", "counter",
         "Connections closed at accept (max_connections reached, none idle).",
         static_cast<double>(c.refused));
  single(out, "llmq_gateway_connections_evicted_total", "counter",
         "Idle keep-alive connections closed to admit another.", static_cast<double>(c.evicted));
  single(out, "llmq_gateway_accept_errors_total", "counter",
         "Failed accepts (e.g. out of file descriptors), each followed by a back-off.",
         static_cast<double>(c.accept_errors));
  single(out, "llmq_gateway_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed or timed out (bad or no client certificate, a client "
         "speaking clear text, no common protocol version or cipher).",
         static_cast<double>(c.tls_handshake_failures));
  header(out, "llmq_gateway_config_reloads_total", "counter",
         "Configuration reloads (SIGHUP, POST /admin/reload), by outcome.");
  sample(out, "llmq_gateway_config_reloads_total", "result=\"success\"",
         static_cast<double>(reloads_succeeded_));
  sample(out, "llmq_gateway_config_reloads_total", "result=\"failure\"",
         static_cast<double>(reloads_failed_));
  single(out, "llmq_gateway_config_last_reload_successful", "gauge",
         "1 when the last configuration reload (or the start) succeeded, else 0.",
         last_reload_ok_ ? 1.0 : 0.0);
  single(out, "llmq_gateway_config_last_reload_timestamp_seconds", "gauge",
         "Unix time of the last configuration reload attempt (the start until one).",
         last_reload_time_);
  single(out, "llmq_gateway_config_last_reload_success_timestamp_seconds", "gauge",
         "Unix time the configuration in use was read.", last_reload_success_time_);
  header(out, "llmq_queue_wait_seconds", "histogram", "Time from queueing to dispatch.");
  queue_wait_.render(out, "llmq_queue_wait_seconds");
  header(out, "llmq_upstream_latency_seconds", "histogram",
         "Time from dispatch to the executor's answer.");
  upstream_latency_.render(out, "llmq_upstream_latency_seconds");
  header(out, "llmq_request_latency_seconds", "histogram", "Time from arrival to answer.");
  total_latency_.render(out, "llmq_request_latency_seconds");
  single(out, "llmq_streamed_requests_total", "counter",
         "Requests whose answer was streamed (at least one chunk reached the client).",
         static_cast<double>(streamed_));
  single(out, "llmq_gateway_streams_open", "gauge", "Streamed answers being sent now.",
         static_cast<double>(streams_open_.load()));
  header(out, "llmq_time_to_first_token_seconds", "histogram",
         "Streamed answers: time from queueing to the first chunk.");
  time_to_first_token_.render(out, "llmq_time_to_first_token_seconds");
  header(out, "llmq_stream_duration_seconds", "histogram",
         "Streamed answers: time from the first chunk to the end of the stream.");
  stream_duration_.render(out, "llmq_stream_duration_seconds");
  return out;
}

DashboardView Metrics::dashboard_view(std::size_t top_users) const {
  std::lock_guard lock(mutex_);
  DashboardView v;
  v.top_admitted = users_.top_admitted(top_users);
  v.top_refused = users_.top_refused(top_users);
  v.users_tracked = users_.tracked();
  v.users_forgotten = users_.forgotten();
  auto percentiles = [](const Histogram& h) {
    return Percentiles{h.quantile(0.5), h.quantile(0.9), h.quantile(0.99), h.count()};
  };
  v.queue_wait = percentiles(queue_wait_);
  v.upstream = percentiles(upstream_latency_);
  v.total = percentiles(total_latency_);
  v.tokens.insert(tokens_.begin(), tokens_.end());
  return v;
}

MetricsTelemetryStore::MetricsTelemetryStore(std::shared_ptr<Metrics> metrics,
                                             std::shared_ptr<TelemetryStore> inner,
                                             std::shared_ptr<AccessLog> access_log)
    : metrics_(std::move(metrics)), inner_(std::move(inner)), access_log_(std::move(access_log)) {}

boost::asio::awaitable<void> MetricsTelemetryStore::connect() { co_await inner_->connect(); }

boost::asio::awaitable<void> MetricsTelemetryStore::insert_batch(std::span<TelemetryData> batch) {
  for (const TelemetryData& t : batch) metrics_->observe(t);
  if (access_log_) {
    const auto now = std::chrono::steady_clock::now();
    for (const TelemetryData& t : batch) access_log_->recorded(t, now);
  }
  co_await inner_->insert_batch(batch);
}

boost::asio::awaitable<void> MetricsTelemetryStore::close() { co_await inner_->close(); }

}  // namespace llmq::gateway
