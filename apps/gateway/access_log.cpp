#include "access_log.hpp"

#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <ctime>

namespace llmq::gateway {
namespace {

using nlohmann::ordered_json;

double millis(std::chrono::microseconds us) { return static_cast<double>(us.count()) / 1000.0; }

std::FILE* open_log(const std::string& path, bool& owns) {
  if (path == "-") {
    owns = false;
    return stdout;
  }
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (f == nullptr)
    throw ConfigError("gateway.access_log: cannot open '" + path +
                      "' for appending: " + std::strerror(errno));
  owns = true;
  return f;
}

LogThrottle& write_error_throttle() {
  static LogThrottle throttle;
  return throttle;
}

}  // namespace

QueueFacts QueueFacts::of(const TelemetryData& t) {
  QueueFacts f;
  f.deployment = !t.llm_deployment.empty() ? t.llm_deployment : t.embedding_deployment;
  f.queue_wait = t.queue_wait;
  f.upstream = t.execution_time;
  f.attempts = t.attempts;
  f.prompt_tokens = t.prompt_tokens + t.embedding_tokens;
  f.completion_tokens = t.completion_tokens;
  return f;
}

WallTime wall_now() {
  return WallTime(std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch()));
}

std::string iso8601(WallTime t) {
  const auto us = t.time_since_epoch().count();
  std::int64_t secs = us / 1'000'000;
  std::int64_t frac = us % 1'000'000;
  if (frac < 0) {
    frac += 1'000'000;
    --secs;
  }
  const std::time_t tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, static_cast<long long>(frac));
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

std::string access_line(const AccessRecord& r, const QueueFacts* facts) {
  auto text_or_null = [](const std::string& s) {
    return s.empty() ? ordered_json(nullptr) : ordered_json(s);
  };
  ordered_json j;
  j["time"] = iso8601(r.time);
  j["request_id"] = r.request_id;
  j["method"] = text_or_null(r.method);
  j["route"] = text_or_null(r.route);
  j["user"] = text_or_null(r.user);
  j["model"] = text_or_null(r.model);
  j["deployment"] = facts ? text_or_null(facts->deployment) : ordered_json(nullptr);
  j["status"] = r.status;
  if (facts) {
    j["queue_wait_ms"] = millis(facts->queue_wait);
    j["upstream_ms"] = millis(facts->upstream);
    j["attempts"] = facts->attempts;
    j["prompt_tokens"] = facts->prompt_tokens;
    j["completion_tokens"] = facts->completion_tokens;
    j["total_tokens"] = facts->prompt_tokens + facts->completion_tokens;
  } else {
    for (const char* k : {"queue_wait_ms", "upstream_ms", "attempts", "prompt_tokens",
                          "completion_tokens", "total_tokens"})
      j[k] = nullptr;
  }
  j["bytes_in"] = r.bytes_in;
  j["bytes_out"] = r.bytes_out;
  j["duration_ms"] = millis(r.duration);
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

AccessLog::AccessLog(AccessLogOptions options) : options_(std::move(options)) {
  file_ = open_log(options_.path, owns_file_);
}

AccessLog::~AccessLog() {
  std::lock_guard lock(mutex_);
  expire_locked(time_point::max(), true);
  write_locked();
  if (owns_file_) std::fclose(file_);
}

void AccessLog::answered(AccessRecord r, time_point now) {
  std::lock_guard lock(mutex_);
  expire_locked(now, false);
  if (r.queued) {
    Pending other;
    if (take_locked(r.request_id, false, other)) {
      emit_locked(r, &other.facts);
    } else {
      Pending p;
      p.is_answer = true;
      p.id = r.request_id;
      p.answer = std::move(r);
      park_locked(std::move(p), now);
    }
  } else {
    emit_locked(r, nullptr);
  }
  if (buffer_.size() >= options_.flush_bytes) write_locked();
}

void AccessLog::recorded(const TelemetryData& t, time_point now) {
  std::lock_guard lock(mutex_);
  expire_locked(now, false);
  Pending other;
  if (take_locked(t.request_id, true, other)) {
    const QueueFacts facts = QueueFacts::of(t);
    emit_locked(other.answer, &facts);
  } else {
    Pending p;
    p.id = t.request_id;
    p.facts = QueueFacts::of(t);
    park_locked(std::move(p), now);
  }
  if (buffer_.size() >= options_.flush_bytes) write_locked();
}

void AccessLog::flush(time_point now) {
  std::lock_guard lock(mutex_);
  expire_locked(now, false);
  write_locked();
}

void AccessLog::reopen() {
  std::lock_guard lock(mutex_);
  write_locked();
  bool owns = false;
  std::FILE* f = open_log(options_.path, owns);  // throws: the old file stays
  if (owns_file_) std::fclose(file_);
  file_ = f;
  owns_file_ = owns;
}

AccessLogCounters AccessLog::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void AccessLog::park_locked(Pending p, time_point now) {
  p.at = now;
  pending_.push_back(std::move(p));
  by_id_.emplace(pending_.back().id, std::prev(pending_.end()));
}

bool AccessLog::take_locked(const std::string& id, bool want_answer, Pending& out) {
  auto [first, last] = by_id_.equal_range(id);
  for (auto it = first; it != last; ++it) {
    if (it->second->is_answer != want_answer) continue;
    out = std::move(*it->second);
    pending_.erase(it->second);
    by_id_.erase(it);
    return true;
  }
  return false;
}

void AccessLog::expire_locked(time_point now, bool all) {
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    const bool over = pending_.size() > options_.max_pending;
    if (!all && !over && now - p.at < options_.join_wait) break;
    if (p.is_answer) {
      emit_locked(p.answer, nullptr);
      ++counters_.unjoined;
    } else {
      ++counters_.orphans;
    }
    auto [first, last] = by_id_.equal_range(p.id);
    for (auto it = first; it != last; ++it) {
      if (it->second == pending_.begin()) {
        by_id_.erase(it);
        break;
      }
    }
    pending_.pop_front();
  }
}

void AccessLog::emit_locked(const AccessRecord& r, const QueueFacts* facts) {
  buffer_ += access_line(r, facts);
  buffer_ += '\n';
  ++counters_.lines;
}

void AccessLog::write_locked() {
  if (buffer_.empty()) return;
  const std::size_t n = std::fwrite(buffer_.data(), 1, buffer_.size(), file_);
  const bool ok = n == buffer_.size() && std::fflush(file_) == 0;
  if (!ok) {
    ++counters_.write_errors;
    if (auto held = write_error_throttle().admit())
      logger()->warn("llmq-gateway: access log '{}': write failed: {}{}", options_.path,
                     std::strerror(errno), held_back_note(*held));
  }
  buffer_.clear();
}

}  // namespace llmq::gateway
