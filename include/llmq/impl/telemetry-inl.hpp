#pragma once
/// @file telemetry-inl.hpp
/// Compiled once into llmq::llmq by src/telemetry.cpp, or included by <llmq/telemetry.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/telemetry.hpp>

namespace llmq {

namespace detail::telemetry_json {
inline std::int64_t micros(WallTime t) { return t.time_since_epoch().count(); }

inline nlohmann::json outcome_json(const UpstreamOutcome& o) {
  nlohmann::json j = nlohmann::json::object();
  j["status"] = o.status;
  if (o.retry_after) j["retry_after_ms"] = o.retry_after->count();
  return j;
}
}  // namespace detail::telemetry_json

LLMQ_INLINE nlohmann::json to_json(const std::vector<AttemptRecord>& log) {
  nlohmann::json arr = nlohmann::json::array();
  for (const AttemptRecord& a : log) {
    nlohmann::json r = nlohmann::json::object();
    r["llm_deployment"] = a.llm_deployment;
    r["embedding_deployment"] = a.embedding_deployment;
    r["status"] = a.status;
    r["duration_us"] = a.duration.count();
    r["spilled"] = a.spilled;
    arr.push_back(std::move(r));
  }
  return arr;
}

LLMQ_INLINE nlohmann::json to_json(const TelemetryData& t) {
  nlohmann::json j = nlohmann::json::object();
  j["request_id"] = t.request_id;
  j["user_id"] = t.user_id;
  j["req_type"] = t.req_type;
  j["llm_deployment"] = t.llm_deployment;
  j["embedding_deployment"] = t.embedding_deployment;
  j["received_at_us"] = detail::telemetry_json::micros(t.received_at);
  j["queued_at_us"] = detail::telemetry_json::micros(t.queued_at);
  j["dispatched_at_us"] = detail::telemetry_json::micros(t.dispatched_at);
  j["completed_at_us"] = detail::telemetry_json::micros(t.completed_at);
  j["queue_wait_us"] = t.queue_wait.count();
  j["execution_time_us"] = t.execution_time.count();
  j["estimated_tokens"] = t.estimated_tokens;
  j["prompt_tokens"] = t.prompt_tokens;
  j["completion_tokens"] = t.completion_tokens;
  j["embedding_tokens"] = t.embedding_tokens;
  j["llm_outcome"] = detail::telemetry_json::outcome_json(t.llm_outcome);
  j["embedding_outcome"] = detail::telemetry_json::outcome_json(t.embedding_outcome);
  j["attempts"] = t.attempts;
  j["attempt_log"] = to_json(t.attempt_log);
  j["spillovers"] = spillover_count(t);
  j["streamed"] = t.streamed;
  j["time_to_first_token_us"] = t.time_to_first_token
                                    ? nlohmann::json(t.time_to_first_token->count())
                                    : nlohmann::json(nullptr);
  j["stream_duration_us"] =
      t.stream_duration ? nlohmann::json(t.stream_duration->count()) : nlohmann::json(nullptr);
  j["status"] = t.status;
  j["error"] = t.error;
  if (t.payload) j["payload"] = *t.payload;
  return j;
}

LLMQ_INLINE boost::asio::awaitable<void> InMemoryTelemetryStore::connect() {
  std::lock_guard lock(mutex_);
  closed_ = false;
  co_return;
}

LLMQ_INLINE boost::asio::awaitable<void> InMemoryTelemetryStore::insert_batch(
    std::span<TelemetryData> batch) {
  std::lock_guard lock(mutex_);
  for (TelemetryData& t : batch) {
    ++total_;
    if (capacity_ == 0) continue;
    if (records_.size() < capacity_) {
      records_.push_back(std::move(t));
    } else {
      records_[head_] = std::move(t);
      head_ = (head_ + 1) % capacity_;
    }
  }
  co_return;
}

LLMQ_INLINE boost::asio::awaitable<void> InMemoryTelemetryStore::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  co_return;
}

LLMQ_INLINE std::vector<TelemetryData> InMemoryTelemetryStore::records() const {
  std::lock_guard lock(mutex_);
  std::vector<TelemetryData> out;
  out.reserve(records_.size());
  for (std::size_t i = 0; i < records_.size(); ++i)
    out.push_back(records_[(head_ + i) % records_.size()]);
  return out;
}

LLMQ_INLINE std::uint64_t InMemoryTelemetryStore::total_inserted() const {
  std::lock_guard lock(mutex_);
  return total_;
}

LLMQ_INLINE bool InMemoryTelemetryStore::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace llmq
