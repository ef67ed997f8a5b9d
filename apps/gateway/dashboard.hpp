#pragma once
// llmq-gateway's dashboard: the JSON document of GET /stats (docs/dashboard.md), the
// bounded state behind it (a ring of per-second queue samples, per-user counts for the
// top users) and the page's assets, built into the binary (cmake/embed_text.cmake).

#include <llmq/queue.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmq::gateway {

/// The queue at one moment, as the dashboard's chart shows it.
struct QueueSample {
  double time = 0;  ///< Unix time, seconds
  std::size_t depth = 0;
  std::size_t in_flight = 0;
};

/// The last `capacity` samples, oldest first (one a second: 5 minutes by default).
/// Thread-safe.
class StatsHistory {
 public:
  static constexpr std::size_t kDefaultCapacity = 300;
  explicit StatsHistory(std::size_t capacity = kDefaultCapacity);
  /// Appends `s`, dropping the oldest sample once `capacity` are kept.
  void record(QueueSample s);
  [[nodiscard]] std::vector<QueueSample> samples() const;

 private:
  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::deque<QueueSample> ring_;
};

/// One user's requests since start.
struct UserTally {
  std::string user;
  std::uint64_t admitted = 0;  ///< entered the queue
  std::uint64_t refused = 0;   ///< refused before entering it (user limit, queue full, ...)
};

/// Admitted and refused requests per user, for at most kMaxUsers users whatever the
/// traffic: once that many are counted, a new user replaces the one with the fewest
/// requests (the busiest users stay, so the top lists stay right; a forgotten user's
/// counts restart if it returns). Not thread-safe (Metrics serialises it).
class UserCounts {
 public:
  static constexpr std::size_t kMaxUsers = 1000;
  void count(const std::string& user, bool admitted);
  /// The `n` users with the most admitted (or refused) requests, most first; ties by name.
  [[nodiscard]] std::vector<UserTally> top_admitted(std::size_t n) const;
  [[nodiscard]] std::vector<UserTally> top_refused(std::size_t n) const;
  [[nodiscard]] std::size_t tracked() const noexcept { return users_.size(); }
  /// Users dropped to make room since start.
  [[nodiscard]] std::uint64_t forgotten() const noexcept { return forgotten_; }

 private:
  struct Counts {
    std::uint64_t admitted = 0;
    std::uint64_t refused = 0;
  };
  [[nodiscard]] std::vector<UserTally> top(std::size_t n, bool by_admitted) const;
  std::unordered_map<std::string, Counts> users_;
  std::uint64_t forgotten_ = 0;
};

/// Latency percentiles in seconds, estimated from a histogram's buckets.
struct Percentiles {
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  std::uint64_t count = 0;
};

/// What /stats takes from the gateway's Metrics (see Metrics::dashboard_view).
struct DashboardView {
  std::vector<UserTally> top_admitted;
  std::vector<UserTally> top_refused;
  std::size_t users_tracked = 0;
  std::uint64_t users_forgotten = 0;
  Percentiles queue_wait;
  Percentiles upstream;
  Percentiles total;
  std::unordered_map<std::string, std::uint64_t> tokens;  ///< by deployment
};

/// The users each top list of /stats holds at most.
inline constexpr std::size_t kStatsTopUsers = 10;

/// The document GET /stats answers (docs/dashboard.md): the queue, its recent samples,
/// each deployment against its limits, the top users and latency percentiles. `now` is
/// Unix time in seconds.
[[nodiscard]] nlohmann::json stats_document(const QueueStats& stats,
                                            const DeploymentList& deployments,
                                            const DashboardView& view,
                                            const std::vector<QueueSample>& samples, double now);

/// Unix time now, in seconds.
[[nodiscard]] double unix_seconds_now();

/// The dashboard's files, built into the binary.
namespace dashboard_assets {
std::string_view index_html();
std::string_view app_js();
std::string_view app_css();
}  // namespace dashboard_assets

}  // namespace llmq::gateway
