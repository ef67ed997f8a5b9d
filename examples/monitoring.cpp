// Monitoring llmq: a user-written TelemetryStore that aggregates every request's record
// (answers by status, requests per deployment, queue waits), and `stats()` printed while
// traffic runs. In a service the store would feed a metrics system; llmq-gateway's
// /metrics is built the same way (apps/gateway/metrics.cpp).
//
//   monitoring
//
// Exits 0 when the store saw every request and the counts are the expected ones.

#include "local_executor.hpp"

#include <llmq/llmq.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <mutex>

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Aggregates telemetry records. insert_batch runs on the queue's telemetry flusher; the
/// snapshot may be read from any thread.
class AggregatingTelemetryStore : public llmq::TelemetryStore {
 public:
  struct Totals {
    std::uint64_t records = 0;
    std::map<int, std::uint64_t> by_status;
    std::map<std::string, std::uint64_t> by_deployment;
    std::chrono::microseconds max_queue_wait{0};
  };

  asio::awaitable<void> connect() override { co_return; }
  asio::awaitable<void> close() override { co_return; }

  asio::awaitable<void> insert_batch(std::span<llmq::TelemetryData> batch) override {
    add(batch);
    co_return;
  }

  Totals snapshot() const {
    std::lock_guard lock(mu_);
    return totals_;
  }

 private:
  void add(std::span<llmq::TelemetryData> batch) {
    std::lock_guard lock(mu_);
    for (const llmq::TelemetryData& t : batch) {
      ++totals_.records;
      ++totals_.by_status[t.status];
      if (!t.llm_deployment.empty()) ++totals_.by_deployment[t.llm_deployment];
      totals_.max_queue_wait = std::max(totals_.max_queue_wait, t.queue_wait);
    }
  }

  mutable std::mutex mu_;
  Totals totals_;
};

namespace {

// Two chat deployments, one with twice the other's capacity; 30 requests a minute per user.
constexpr const char* kConfig = R"(
azure_open_ai:
  - api_key: "not-used"
    api_version: "2024-10-21"
    azure_endpoint: "https://example.openai.azure.com/"
    azure_oai_models:
      - {unique_model_id: east, model_name_in_azure: gpt-4o, deployment_name_in_azure: east,
         model_type: chat, req_per_min: 12000, tokens_per_min: 100000000}
      - {unique_model_id: west, model_name_in_azure: gpt-4o, deployment_name_in_azure: west,
         model_type: chat, req_per_min: 6000, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 30
  time_window_in_seconds: 60
scheduler_limits:
  max_queue_size: 1000
  request_timeout_seconds: 30
)";

constexpr int kUsers = 8;
constexpr int kRequestsPerUser = 25;  // within the limit
constexpr int kBatchRequests = 60;    // one batch job: 30 admitted, 30 refused

/// Counts finished tasks; wait() returns once `n` have finished.
class WaitGroup {
 public:
  WaitGroup(asio::any_io_executor ex, int n)
      : timer_(ex, asio::steady_timer::time_point::max()), left_(n) {}
  void done() {
    if (--left_ == 0) timer_.cancel();
  }
  asio::awaitable<void> wait() {
    if (left_ > 0) co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
  }

 private:
  asio::steady_timer timer_;
  int left_;
};

asio::awaitable<void> user(llmq::LLMQueue& queue, std::string id, int requests) {
  for (int i = 0; i < requests; ++i) {
    try {
      co_await queue.execute_request("chat_completion", examples::chat_request("status?"), id);
    } catch (const llmq::UserRateLimitExceededError&) {
      // counted by the telemetry store as a 429 row
    }
  }
}

asio::awaitable<void> print_stats(llmq::LLMQueue& queue, const bool& traffic_done,
                                  std::size_t& most_in_flight) {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (!traffic_done) {
    const llmq::QueueStats s = co_await queue.stats();
    most_in_flight = std::max(most_in_flight, s.in_flight);
    std::cout << "stats: depth " << s.queue_depth << ", in flight " << s.in_flight << ", admitted "
              << s.admitted << ", completed " << s.completed << ", refused (user limit) "
              << s.rejected_user_limit;
    for (const llmq::DeploymentStats& d : s.deployments)
      std::cout << ", " << d.unique_model_id << " " << d.requests_in_window << "/" << d.req_per_min
                << " rpm";
    std::cout << "\n";
    tick.expires_after(100ms);
    co_await tick.async_wait(asio::use_awaitable);
  }
}

int check(bool ok, const std::string& what) {
  std::cout << (ok ? "ok: " : "FAILED: ") << what << "\n";
  return ok ? 0 : 1;
}

asio::awaitable<int> run() {
  auto ex = co_await asio::this_coro::executor;
  auto store = std::make_shared<AggregatingTelemetryStore>();
  llmq::QueueOptions options;
  options.telemetry_store = store;
  llmq::LLMQueue queue(ex, llmq::parse_config(kConfig),
                       {{"chat_completion", std::make_shared<examples::LocalChatExecutor>(20ms)}},
                       std::move(options));
  co_await queue.initiate();

  bool traffic_done = false;
  std::size_t most_in_flight = 0;
  WaitGroup monitor(ex, 1);
  asio::co_spawn(ex, print_stats(queue, traffic_done, most_in_flight),
                 [&](std::exception_ptr) { monitor.done(); });
  WaitGroup users(ex, kUsers + 1);
  for (int u = 0; u < kUsers; ++u)
    asio::co_spawn(ex, user(queue, "user-" + std::to_string(u), kRequestsPerUser),
                   [&](std::exception_ptr) { users.done(); });
  asio::co_spawn(ex, user(queue, "batch-job", kBatchRequests),
                 [&](std::exception_ptr) { users.done(); });
  co_await users.wait();
  traffic_done = true;
  co_await monitor.wait();  // the printer stops within one tick
  const llmq::QueueStats final_stats = co_await queue.stats();
  co_await queue.graceful_shutdown();  // flushes the last telemetry batch

  AggregatingTelemetryStore::Totals t = store->snapshot();
  const std::uint64_t sent = kUsers * kRequestsPerUser + kBatchRequests;
  const std::uint64_t admitted = kUsers * kRequestsPerUser + 30;
  int failures = 0;
  failures += check(t.records == sent, "one record per request: " + std::to_string(t.records));
  failures += check(t.by_status[200] == admitted, "200s: " + std::to_string(t.by_status[200]));
  failures +=
      check(t.by_status[429] == sent - admitted, "429s: " + std::to_string(t.by_status[429]));
  failures +=
      check(t.by_deployment["east"] > t.by_deployment["west"],
            "east (twice west's capacity) served " + std::to_string(t.by_deployment["east"]) +
                ", west " + std::to_string(t.by_deployment["west"]));
  failures +=
      check(final_stats.admitted == admitted && final_stats.rejected_user_limit == 30,
            "stats(): admitted " + std::to_string(final_stats.admitted) +
                ", refused for the user limit " + std::to_string(final_stats.rejected_user_limit));
  failures += check(most_in_flight > 0, "stats() showed work in flight (at most " +
                                            std::to_string(most_in_flight) + ")");
  std::cout << "longest queue wait: " << t.max_queue_wait.count() / 1000 << " ms\n";
  std::cout << "monitoring: " << failures << " failed\n";
  co_return failures;
}

}  // namespace

int main() { return examples::run_example("monitoring", &run); }
