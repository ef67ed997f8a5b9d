#pragma once
/// @file config.hpp
/// Configuration of the mock Azure OpenAI server (see tools/mock_azure/README.md for the
/// YAML format). Aggregates with documented defaults; "0 disables" where stated.

#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llmq::mock {

/// A bad configuration value. `what()` names the key (e.g. `deployments[1].req_per_min`)
/// and, for YAML input, the line. Never quotes a secret.
class MockConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How long the server waits before it answers.
struct LatencyConfig {
  enum class Distribution {
    fixed,      ///< always `ms`
    uniform,    ///< uniform in [min_ms, max_ms]
    lognormal,  ///< median_ms * exp(sigma * N(0, 1)), clamped to [min_ms, max_ms] (max 0: none)
  };
  Distribution distribution = Distribution::fixed;
  double ms = 0;         ///< fixed delay, milliseconds
  double min_ms = 0;     ///< uniform lower bound / lognormal floor
  double max_ms = 0;     ///< uniform upper bound / lognormal cap (0 = no cap)
  double median_ms = 0;  ///< lognormal median
  double sigma = 0.5;    ///< lognormal shape
};

/// Faults injected into a deployment's answers. Rates are probabilities in [0, 1]; their
/// sum must not exceed 1. One uniform draw per admitted request picks at most one fault.
struct FaultConfig {
  std::map<unsigned, double> error_rate;  ///< HTTP status (400..599) -> probability
  double reset_rate = 0;                  ///< close the TCP connection (RST) without answering
  double stall_rate = 0;                  ///< never answer; wait until the peer closes or stop()
  double malformed_rate = 0;              ///< 200 with a body that is not valid JSON
  double truncated_rate = 0;              ///< Content-Length larger than the body sent, then close
  double slow_body_rate = 0;  ///< headers at once, then the body in 8 chunks over slow_body_ms
  std::chrono::milliseconds slow_body_ms{2000};           ///< total time to send a slow body
  bool force_429 = false;                                 ///< every request gets 429 (not charged)
  std::chrono::milliseconds force_429_retry_after{1000};  ///< retry-after sent by force_429

  // Mid-stream faults: drawn like the others, applied to streamed answers only (a request
  // without "stream": true that draws one is answered normally).
  double stream_break_rate = 0;      ///< close the connection after `stream_fault_after` events
  double stream_stall_rate = 0;      ///< send `stream_fault_after` events, then nothing more
  double stream_malformed_rate = 0;  ///< event number `stream_fault_after` is cut (invalid JSON)
  /// Intact events (the first one is the prompt filter results) before a mid-stream fault;
  /// clamped so that `data: [DONE]` is never reached by a break or a stall.
  std::size_t stream_fault_after = 3;

  /// 429 bursts: windows of `burst_429_duration` during which every request gets 429
  /// (not charged) with a retry-after of the time left in the window. The first window
  /// opens with the first request after these faults were set; with a period, one opens
  /// every `burst_429_period` from then on (0: only the first). Duration 0: no bursts.
  std::chrono::milliseconds burst_429_duration{0};
  std::chrono::milliseconds burst_429_period{0};

  /// Sum of all fault probabilities.
  [[nodiscard]] double total_rate() const noexcept;
};

/// What a deployment serves.
enum class DeploymentType { chat, embeddings };

/// "chat" / "embeddings".
[[nodiscard]] std::string_view to_string(DeploymentType t) noexcept;

/// One deployment the mock serves.
struct DeploymentConfig {
  std::string name;   ///< deployment name (path segment or "model" in the body)
  std::string model;  ///< model reported in responses; defaults to `name`
  DeploymentType type = DeploymentType::chat;
  std::int64_t req_per_min = 0;             ///< requests per minute (0 = unlimited)
  std::int64_t tokens_per_min = 0;          ///< estimated tokens per minute (0 = unlimited)
  std::string api_key;                      ///< secret; empty: only the server-wide key applies
  std::optional<LatencyConfig> latency;     ///< absent: the server default
  std::optional<int> embedding_dimensions;  ///< absent: the server default
  /// Streamed answers: events per second after the first one (absent: the server default).
  std::optional<double> stream_tokens_per_second;
  FaultConfig faults;  ///< initial faults (changeable at runtime)
};

/// The whole server configuration.
struct MockConfig {
  /// Server-wide key accepted by every deployment. When neither this nor a deployment's
  /// own key is set, that deployment accepts any (or no) key. Secret: never logged.
  std::string api_key;
  std::uint64_t seed = 42;       ///< seeds every deployment's RNG (latency, faults)
  LatencyConfig latency;         ///< default latency (0 ms)
  int embedding_dimensions = 8;  ///< default embedding size (requests may set `dimensions`)
  /// Streamed answers send one event every 1/rate seconds after the first one (one word,
  /// about one token, per content event). 0: as fast as the socket takes them.
  double stream_tokens_per_second = 0;
  std::size_t max_body_bytes = 4 * 1024 * 1024;   ///< larger request bodies get 413
  std::size_t max_header_bytes = 16 * 1024;       ///< larger request headers get 431
  std::chrono::milliseconds idle_timeout{30000};  ///< keep-alive idle timeout
  bool allow_any_host = false;  ///< listen() on a non-loopback address only when true
  std::vector<DeploymentConfig> deployments;
};

/// Parses YAML text. Throws MockConfigError naming the key (and line) on bad input.
[[nodiscard]] MockConfig parse_mock_config(std::string_view yaml_text);

/// Reads and parses a YAML file. Throws MockConfigError (also when unreadable).
[[nodiscard]] MockConfig load_mock_config(const std::filesystem::path& path);

/// Parses a fault configuration given as JSON (the body of PUT
/// /mock/deployments/{name}/faults; same keys as the YAML `faults`). Throws MockConfigError.
[[nodiscard]] FaultConfig parse_fault_config(const nlohmann::json& j);

/// Fault configuration as JSON (the same keys parse_fault_config reads).
[[nodiscard]] nlohmann::json to_json(const FaultConfig& f);

/// Checks invariants of a config built in code (names unique and non-empty, rates in
/// range, ...). Throws MockConfigError.
void validate(const MockConfig& cfg);

}  // namespace llmq::mock
