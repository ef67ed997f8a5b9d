// Multi-tenant limits: two tenants' users share one queue. Each tenant is a user tier
// (`user_tiers`) with its own sliding-window limit and fair-share weight; requests are
// scheduled fairly across users (`policy: fair`), so one tenant's burst does not hold the
// other's requests back; a batch job runs at low priority. The service names the tier
// per request (RequestOptions::tier), as llmq-gateway does from a client key.
//
//   multi_tenant
//
// Exits 0 when every user got exactly its tier's share and the refusals said when to
// come back.

#include "local_executor.hpp"

#include <llmq/llmq.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <iostream>
#include <map>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

// Tenant "acme" pays for 5 requests a minute per user and 3x the share when the queue is
// contended; everyone else (tenant "globex" here) gets the default 2 a minute.
constexpr const char* kConfig = R"(
azure_open_ai:
  - api_key: "not-used"
    api_version: "2024-10-21"
    azure_endpoint: "https://example.openai.azure.com/"
    azure_oai_models:
      - {unique_model_id: gpt-4o, model_name_in_azure: gpt-4o, deployment_name_in_azure: gpt-4o,
         model_type: chat, req_per_min: 6000, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 2
  time_window_in_seconds: 60
scheduler_limits:
  policy: fair
user_tiers:
  acme:
    max_num_requests_in_time_window: 5
    weight: 3
  batch:
    users: [nightly-report]
    max_num_requests_in_time_window: 100
    priority: low
)";

struct User {
  std::string id;
  std::string tier;  // the tenant's tier, as the service knows it; empty: by user id
  int requests = 0;
  int expect_admitted = 0;
};

std::vector<User> users() {
  return {{"acme-alice", "acme", 7, 5},
          {"acme-bob", "acme", 3, 3},
          {"globex-carol", "", 4, 2},
          {"nightly-report", "", 10, 10}};
}

struct Tally {
  int admitted = 0;
  int refused = 0;
  std::chrono::nanoseconds longest_retry_after{0};
};

asio::awaitable<void> run_user(llmq::LLMQueue& queue, User u, Tally& tally) {
  llmq::RequestOptions options;
  options.tier = u.tier;
  for (int i = 0; i < u.requests; ++i) {
    try {
      co_await queue.execute_request("chat_completion", examples::chat_request("hello"), u.id, {},
                                     options);
      ++tally.admitted;
    } catch (const llmq::UserRateLimitExceededError& e) {
      ++tally.refused;
      tally.longest_retry_after = std::max(tally.longest_retry_after, e.retry_after());
    }
  }
}

asio::awaitable<int> run() {
  auto ex = co_await asio::this_coro::executor;
  llmq::LLMQueue queue(ex, llmq::parse_config(kConfig), examples::local_executors());
  co_await queue.initiate();

  const std::vector<User> all = users();
  std::map<std::string, Tally> tallies;
  int left = static_cast<int>(all.size());
  asio::steady_timer done(ex, asio::steady_timer::time_point::max());
  for (const User& u : all)
    asio::co_spawn(ex, run_user(queue, u, tallies[u.id]), [&](std::exception_ptr) {
      if (--left == 0) done.cancel();
    });
  co_await done.async_wait(asio::as_tuple(asio::use_awaitable));
  const llmq::QueueStats stats = co_await queue.stats();
  co_await queue.graceful_shutdown();

  int failures = 0;
  for (const User& u : all) {
    const Tally& t = tallies[u.id];
    const bool ok = t.admitted == u.expect_admitted &&
                    (t.refused == 0 || t.longest_retry_after > std::chrono::seconds(50));
    std::cout << (ok ? "ok: " : "FAILED: ") << u.id << " (tier "
              << (u.tier.empty() ? std::string("by user id") : u.tier) << "): " << t.admitted
              << " admitted, " << t.refused << " refused";
    if (t.refused > 0)
      std::cout << ", retry in "
                << std::chrono::duration_cast<std::chrono::seconds>(t.longest_retry_after).count()
                << " s";
    std::cout << "\n";
    failures += ok ? 0 : 1;
  }
  for (const llmq::TierStats& t : stats.tiers)
    std::cout << "tier " << (t.name.empty() ? std::string("(default)") : t.name) << ": "
              << t.admitted << " admitted\n";
  std::cout << "multi_tenant: " << failures << " failed\n";
  co_return failures;
}

}  // namespace

int main() { return examples::run_example("multi_tenant", &run); }
