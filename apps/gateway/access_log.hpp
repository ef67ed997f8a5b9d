#pragma once
// The access log of llmq-gateway (`gateway.access_log`): one JSON line per request, joined
// from what the gateway knows when it answers (route, user, status, bytes) and what the
// queue records about it (deployment, queue wait, upstream time, tokens). The queue's
// record reaches the gateway with its telemetry a little later (within the flush
// interval), so a line is written when both halves are in, or after `join_wait` with the
// half that came. Never a key, a header value other than the request id, or a body.

#include <llmq/telemetry.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace llmq::gateway {

/// What the gateway knows of one answered request.
struct AccessRecord {
  WallTime time{};  ///< when the answer was ready
  std::string request_id;
  std::string method;
  std::string route;  ///< the path (no query), cut to 256 bytes
  std::string user;   ///< empty when none was established
  std::string model;  ///< as the client named it (body or Azure path), cut to 64 bytes
  int status = 0;
  std::size_t bytes_in = 0;               ///< request body
  std::size_t bytes_out = 0;              ///< answer body
  std::chrono::microseconds duration{0};  ///< from the request's arrival to its answer
  /// The request went to the queue, so its telemetry record will follow.
  bool queued = false;
};

/// What the queue recorded about a request (from its TelemetryData).
struct QueueFacts {
  std::string deployment;  ///< the LLM deployment, else the embeddings one
  std::chrono::microseconds queue_wait{0};
  std::chrono::microseconds upstream{0};  ///< dispatch to answer, retries included
  int attempts = 0;
  std::int64_t prompt_tokens = 0;  ///< embedding tokens included
  std::int64_t completion_tokens = 0;

  static QueueFacts of(const TelemetryData& t);
};

/// The JSON line (without the newline) for a request; `facts` null when the queue's half
/// is missing (the gateway answered itself, or the record never came).
[[nodiscard]] std::string access_line(const AccessRecord& r, const QueueFacts* facts);

/// The wall clock now, as an AccessRecord's time.
[[nodiscard]] WallTime wall_now();

/// UTC ISO 8601 with microseconds: "2026-12-02T10:11:12.345678Z".
[[nodiscard]] std::string iso8601(WallTime t);

struct AccessLogOptions {
  /// A file to append to, or "-" for standard output.
  std::string path;
  /// How long a half waits for the other.
  std::chrono::milliseconds join_wait{std::chrono::seconds(5)};
  /// Halves waiting at most; beyond, the oldest is written (or dropped) at once.
  std::size_t max_pending = 10'000;
  /// Buffered bytes that trigger a write before the next flush().
  std::size_t flush_bytes = 64 * 1024;
};

/// Counters of an AccessLog.
struct AccessLogCounters {
  std::uint64_t lines = 0;     ///< written
  std::uint64_t unjoined = 0;  ///< written without the queue's half after join_wait
  std::uint64_t orphans = 0;   ///< queue records whose answer never came (dropped)
  std::uint64_t write_errors = 0;
};

/// Thread-safe: answered() on the gateway's threads, recorded() from the telemetry
/// flusher, flush() from a timer.
class AccessLog {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  /// Opens the file (appending). Throws llmq::ConfigError naming the path when it cannot.
  explicit AccessLog(AccessLogOptions options);
  /// Writes every waiting half and closes the file.
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  void answered(AccessRecord r, time_point now);
  void recorded(const TelemetryData& t, time_point now);
  /// Writes the answers whose queue record did not come within join_wait, drops records
  /// whose answer did not come, and writes the buffer out.
  void flush(time_point now);
  /// Closes and opens the file again (after a log rotation; on reload). Throws
  /// llmq::ConfigError when it cannot, keeping the old file open.
  void reopen();
  [[nodiscard]] AccessLogCounters counters() const;

 private:
  struct Pending {
    time_point at;
    bool is_answer = false;
    AccessRecord answer;
    QueueFacts facts;
    std::string id;
  };
  using PendingList = std::list<Pending>;

  void expire_locked(time_point now, bool all);
  void emit_locked(const AccessRecord& r, const QueueFacts* facts);
  void write_locked();
  /// Keeps a half until the other comes (or join_wait passes).
  void park_locked(Pending p, time_point now);
  /// Takes the waiting half of the other kind for `id`, if any.
  bool take_locked(const std::string& id, bool want_answer, Pending& out);

  AccessLogOptions options_;
  mutable std::mutex mutex_;
  std::FILE* file_ = nullptr;
  bool owns_file_ = false;
  std::string buffer_;
  PendingList pending_;  // oldest first
  std::unordered_multimap<std::string, PendingList::iterator> by_id_;
  AccessLogCounters counters_;
};

}  // namespace llmq::gateway
