#pragma once
// The `gateway:` section of the llmq config, read by llmq-gateway.

#include <llmq/config.hpp>
#include <llmq/queue.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmq::gateway {

/// A client key accepted by the gateway; optionally bound to one user.
struct ClientKey {
  std::string key;   ///< secret: never logged
  std::string user;  ///< empty: the user comes from the user header
  /// `tier`: the user tier (a name in `user_tiers`) of this key's requests; empty: the
  /// user's own tier (its `users` list), else the default tier.
  std::string tier;
  /// `max_priority`: the highest `x-llmq-priority` this key may ask for (high, normal or
  /// low); a higher one is refused with 403. Absent: any.
  std::optional<Priority> max_priority;
};

/// The priority named by `text` ("high", "normal", "low"), or nullopt.
[[nodiscard]] std::optional<Priority> parse_priority(std::string_view text);

/// How many users /metrics shows by queue depth (those with the most requests waiting),
/// so the label set stays bounded however many users there are.
inline constexpr std::size_t kMetricsTopUsers = 10;

struct GatewayConfig {
  std::string listen_address = "127.0.0.1";
  unsigned short port = 8080;
  /// Header naming the user (case-insensitive). Default `x-user-id`.
  std::string user_header = "x-user-id";
  /// When non-empty, every request must carry one of these keys as `api-key: <key>` or
  /// `Authorization: Bearer <key>`.
  std::vector<ClientKey> client_keys;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  /// Deepest JSON nesting accepted in a request body (checked while parsing).
  std::size_t max_json_depth = 64;
  /// A request's header section must arrive within this time of its first byte.
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  /// A client must send the body (after the header section), and read each answer,
  /// within this time.
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  /// Connections waiting longer than this for a request's first byte are closed.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  /// At this many open connections, the longest-idle one is closed to admit a new one;
  /// with none idle the new one is refused.
  std::size_t max_connections = 1024;
  /// One upstream attempt (waiting for a pooled connection, connecting, sending, reading
  /// the whole answer) must finish within this; a timed-out attempt is retried on
  /// another deployment within the queue's retry budget (see queue_options()).
  std::chrono::milliseconds upstream_timeout{std::chrono::seconds(120)};
  /// Upstream connections kept per host (Azure resource or OpenAI-compatible server);
  /// requests beyond wait for a free one.
  std::size_t upstream_max_connections = 256;
  /// I/O threads serving client connections, parsing and upstream I/O (each connection on
  /// its own strand; the queue's state stays on the queue's strand). 0: the hardware
  /// concurrency (see io_threads()).
  std::size_t threads = 0;
  /// Telemetry also goes to this JSON-lines file (empty: not).
  std::string telemetry_jsonl;
  /// Telemetry goes to this PostgreSQL connection string instead (empty: not).
  std::string telemetry_postgres;
  /// Shared state for several gateway replicas: user limits (and, with
  /// share_deployment_budgets, deployment budgets) in this Redis. Empty: in memory.
  std::string redis_url;
  std::string redis_key_prefix = "llmq:";
  /// When Redis is unreachable: admit on local limits (true) or refuse with 503 (false).
  bool redis_fail_open = true;
  bool share_deployment_budgets = true;
  /// Unknown keys in the `gateway:` section are errors unless this is true (then warned).
  bool allow_unknown_keys = false;
  /// Refuse to start without client_keys (a gateway that anyone who reaches it may use).
  bool require_client_keys = false;
  /// Whether GET /metrics is served without a key. Unset: public only while there are no
  /// client_keys; otherwise it needs a client key or an admin key (/healthz and /readyz
  /// stay open).
  std::optional<bool> metrics_public;
  /// Keys of operators: they may read /metrics (and the admin endpoints), not make
  /// inference requests unless also listed in client_keys.
  std::vector<std::string> admin_keys;
  /// One JSON line per request (see access_log.hpp) appended to this file, or "-" for
  /// standard output. Empty: no access log.
  std::string access_log;
  /// TLS on the listener: the certificate chain and its private key (PEM). Both or
  /// neither; empty: clear-text HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// With TLS: clients must present a certificate signed by one of these CAs (PEM).
  std::string tls_client_ca_file;

  [[nodiscard]] bool tls() const { return !tls_cert_file.empty(); }

  /// `threads` as it applies: the hardware concurrency when 0 (at least 1).
  [[nodiscard]] std::size_t io_threads() const;
  /// GET /stats (the dashboard's data) needs a client key or an admin key once either is
  /// configured; without any key it is open, like the API. The page /dashboard itself
  /// holds no data and is served to anyone.
  [[nodiscard]] bool stats_need_key() const { return !client_keys.empty() || !admin_keys.empty(); }

  /// metrics_public as it applies to this configuration.
  [[nodiscard]] bool metrics_are_public() const {
    return metrics_public.value_or(client_keys.empty());
  }
};

/// The gateway section's start-up checks: throws ConfigError when the section asks for
/// something it does not have (require_client_keys without client_keys), else returns
/// the warnings to log once at start (no client keys; listening beyond loopback in clear
/// text).
[[nodiscard]] std::vector<std::string> startup_warnings(const GatewayConfig& config);

/// Upstream attempts per request the gateway's queue makes (QueueOptions::max_attempts).
inline constexpr int kGatewayMaxAttempts = 3;

/// The queue options that follow from the gateway section: `max_attempts`
/// kGatewayMaxAttempts; `retry_budget` upstream_timeout + 30 s (at least the library's
/// 60 s), so that an attempt that timed out can still be retried on another deployment;
/// `execution_timeout` upstream_timeout + 10 s, so that the HTTP client's own (retryable)
/// timeout fires first. No retry starts after the retry budget, so the worst-case answer
/// time of an admitted request is its queue wait (scheduler_limits.request_timeout) +
/// retry_budget + upstream_timeout: 270 s after dispatch with the defaults.
[[nodiscard]] QueueOptions queue_options(const GatewayConfig& config);

/// The whole file: the library's config plus the gateway section.
struct GatewaySettings {
  LLMConfig llm;
  GatewayConfig gateway;
};

/// Parses the YAML text (library keys via llmq::parse_config; `gateway:` here). Throws
/// llmq::ConfigError naming the key and line.
GatewaySettings parse_gateway_settings(std::string_view yaml);
GatewaySettings load_gateway_settings(const std::filesystem::path& path);

}  // namespace llmq::gateway
