#pragma once
/// @file telemetry.hpp
/// The per-request telemetry record and the store interface it is written to.

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace llmq {

/// Wall-clock time at microsecond resolution, as recorded in telemetry.
using WallTime = std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>;

/// What the upstream answered one deployment. An executor fills it so that the
/// balancer learns (429 and 5xx start a backoff; Retry-After overrides its length) and
/// the queue can retry (see QueueOptions::max_attempts).
struct UpstreamOutcome {
  /// HTTP status; 0 = not reported. A connection failure (reset, refused, timeout before
  /// any response) is reported as 503 with `connection_error` set.
  int status = 0;
  /// The upstream's Retry-After (from retry-after-ms, x-ms-retry-after-ms or retry-after).
  std::optional<std::chrono::milliseconds> retry_after;
  /// x-ratelimit-remaining-requests / -tokens, when the upstream sent sane values.
  std::optional<std::int64_t> remaining_requests;
  std::optional<std::int64_t> remaining_tokens;
  /// x-ratelimit-reset-requests / -tokens (durations like "1s", "6m0s", "12ms").
  std::optional<std::chrono::milliseconds> reset_requests;
  std::optional<std::chrono::milliseconds> reset_tokens;
  bool connection_error = false;
  /// False for failures that must never be retried even though their status would be
  /// (e.g. OpenAI's 429 `insufficient_quota`).
  bool retryable = true;
};

/// One upstream attempt of a request (the queue may retry on another deployment).
struct AttemptRecord {
  std::string llm_deployment;
  std::string embedding_deployment;
  int status = 0;
  std::chrono::microseconds duration{0};
  /// Served by a worse priority group because a better one among the request's
  /// candidates had no room (see DeploymentConfig::priority).
  bool spilled = false;
};

/// One record per request, for every outcome (rejections included).
struct TelemetryData {
  std::string request_id;
  std::string user_id;
  std::string req_type;
  std::string llm_deployment;        ///< unique_model_id, empty if none was chosen
  std::string embedding_deployment;  ///< unique_model_id, empty if none was chosen

  WallTime received_at{};    ///< execute_request was called
  WallTime queued_at{};      ///< entered the queue (zero if rejected before)
  WallTime dispatched_at{};  ///< handed to the executor (zero if never)
  WallTime completed_at{};   ///< the caller's answer was decided

  std::chrono::microseconds queue_wait{0};      ///< dispatched_at - queued_at
  std::chrono::microseconds execution_time{0};  ///< completed_at - dispatched_at

  std::int64_t estimated_tokens = 0;  ///< what the balancer charged before the call
  // Filled by the executor:
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t embedding_tokens = 0;
  UpstreamOutcome llm_outcome;             ///< filled by the executor, feeds the balancer
  UpstreamOutcome embedding_outcome;       ///< filled by the executor, feeds the balancer
  int attempts = 0;                        ///< executor runs (1 + retries)
  std::vector<AttemptRecord> attempt_log;  ///< one entry per executor run, in order

  /// Streamed answers (LLMQueue::execute_streaming_request): true when chunks reached the
  /// reader; then the two durations below are set.
  bool streamed = false;
  /// From queued_at to the first chunk handed to the reader (time to first token).
  std::optional<std::chrono::microseconds> time_to_first_token;
  /// From the first chunk to the end of the stream (its last chunk, error or abort).
  std::optional<std::chrono::microseconds> stream_duration;

  int status = 0;     ///< the status the caller received (rejections: the error's status)
  std::string error;  ///< error message, empty on success; never contains a key
  std::optional<nlohmann::json> payload;  ///< request body, only if QueueOptions::record_payload
};

/// Attempts of `t` whose grant spilled over (AttemptRecord::spilled).
[[nodiscard]] inline int spillover_count(const TelemetryData& t) noexcept {
  int n = 0;
  for (const AttemptRecord& a : t.attempt_log) n += a.spilled ? 1 : 0;
  return n;
}

/// Converts an attempt log to a JSON array (durations in microseconds).
[[nodiscard]] nlohmann::json to_json(const std::vector<AttemptRecord>& log);

/// Converts a record to JSON (timestamps as microseconds since the Unix epoch).
[[nodiscard]] nlohmann::json to_json(const TelemetryData& t);

/// Where telemetry goes. Called only from the queue's telemetry flusher, one call at a
/// time; an exception from insert_batch counts the batch as lost and is logged.
class TelemetryStore {
 public:
  virtual ~TelemetryStore() = default;
  /// Called once by LLMQueue::initiate().
  virtual boost::asio::awaitable<void> connect() = 0;
  /// Writes a batch of records. The records stay valid until the returned awaitable
  /// completes (the flusher reuses their buffer afterwards, so a store that needs them
  /// longer copies or moves them out); the store may move from them.
  virtual boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) = 0;
  /// Called once by LLMQueue::graceful_shutdown() after the last flush.
  virtual boost::asio::awaitable<void> close() = 0;
};

/// Keeps records in memory, bounded (oldest dropped past `capacity`). Thread-safe.
class InMemoryTelemetryStore : public TelemetryStore {
 public:
  explicit InMemoryTelemetryStore(std::size_t capacity = 100'000) : capacity_(capacity) {}

  boost::asio::awaitable<void> connect() override;
  boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) override;
  boost::asio::awaitable<void> close() override;

  /// A copy of the stored records, oldest first.
  [[nodiscard]] std::vector<TelemetryData> records() const;
  /// Records ever inserted (including those since dropped for capacity).
  [[nodiscard]] std::uint64_t total_inserted() const;
  [[nodiscard]] bool closed() const;

 private:
  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::vector<TelemetryData> records_;
  std::size_t head_ = 0;  // ring start once full
  std::uint64_t total_ = 0;
  bool closed_ = false;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/telemetry-inl.hpp>
#endif
