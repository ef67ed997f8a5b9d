// A user-written UserRateLimitStore: fixed daily quotas per customer, looked up in a table
// of the service's own (here a map), instead of llmq's sliding window. The queue asks
// try_acquire_now first, so a store that decides from memory costs no coroutine; acquire
// is the path for stores that must wait (a database, a remote service).
//
//   custom_rate_limit_store [path/to/llm_config.yaml]
//
// Exits 0 when every outcome is the documented one.

#include "local_executor.hpp"

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Each customer has a number of requests per calendar day (UTC); unknown customers get
/// none. The queue's `user_limits` are ignored: the quota table is the authority.
class DailyQuotaStore : public llmq::UserRateLimitStore {
 public:
  explicit DailyQuotaStore(std::map<std::string, std::int64_t, std::less<>> quotas)
      : quotas_(std::move(quotas)) {}

  asio::awaitable<llmq::RateLimitDecision> acquire(std::string_view user_id,
                                                   const llmq::UserLimits& limits) override {
    co_return decide(user_id, limits);
  }

  std::optional<llmq::RateLimitDecision> try_acquire_now(std::string_view user_id,
                                                         const llmq::UserLimits& limits) override {
    return decide(user_id, limits);
  }

 private:
  llmq::RateLimitDecision decide(std::string_view user_id, const llmq::UserLimits&) {
    const auto now = std::chrono::system_clock::now();
    const auto today = std::chrono::floor<std::chrono::days>(now);
    std::lock_guard lock(mu_);
    if (today != day_) {  // a new day: every quota is whole again
      day_ = today;
      used_.clear();
    }
    const auto quota = quotas_.find(user_id);
    const std::int64_t limit = quota == quotas_.end() ? 0 : quota->second;
    auto [used, inserted] = used_.try_emplace(std::string(user_id), 0);
    llmq::RateLimitDecision d;
    if (used->second >= limit) {
      d.allowed = false;
      d.retry_after = today + std::chrono::days(1) - now;  // until midnight UTC
      return d;
    }
    ++used->second;
    d.allowed = true;
    d.remaining = limit - used->second;
    return d;
  }

  std::mutex mu_;
  std::map<std::string, std::int64_t, std::less<>> quotas_;
  std::map<std::string, std::int64_t, std::less<>> used_;
  std::chrono::sys_days day_{};
};

// (Braced lists of string literals are built outside coroutine bodies: g++ 12 rejects
// some of them inside.)
std::map<std::string, std::int64_t, std::less<>> quota_table() {
  return {{"free-tier-customer", 2}, {"paying-customer", 100}};
}

/// What each customer's requests must get, in order.
std::map<std::string, std::vector<std::string>> expected_outcomes() {
  return {{"free-tier-customer", {"200", "200", "429"}},
          {"paying-customer", {"200", "200", "200"}},
          {"stranger", {"429"}}};
}

asio::awaitable<int> run(asio::io_context& io, llmq::LLMConfig config) {
  llmq::QueueOptions options;
  options.user_rate_limit_store = std::make_shared<DailyQuotaStore>(quota_table());
  llmq::LLMQueue queue(io.get_executor(), std::move(config),
                       {{"chat_completion", std::make_shared<examples::LocalChatExecutor>()}},
                       std::move(options));
  co_await queue.initiate();

  int failures = 0;
  auto attempt = [&](const std::string& user) -> asio::awaitable<std::string> {
    try {
      auto [body, status] =
          co_await queue.execute_request("chat_completion", examples::chat_request("hi"), user);
      co_return std::to_string(status);
    } catch (const llmq::UserRateLimitExceededError& e) {
      co_return "429 (retry in " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::minutes>(e.retry_after()).count()) +
          " min)";
    }
  };
  const auto expected = expected_outcomes();
  for (const auto& [user, statuses] : expected) {
    for (const std::string& want : statuses) {
      const std::string got = co_await attempt(user);
      const bool ok = got.rfind(want, 0) == 0;
      std::cout << (ok ? "ok: " : "FAILED: ") << user << " -> " << got << "\n";
      failures += ok ? 0 : 1;
    }
  }
  co_await queue.graceful_shutdown();
  std::cout << "custom_rate_limit_store: " << failures << " failed\n";
  co_return failures == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  const std::string config_path = argc > 1 ? argv[1] : "llm_config.yaml";
  if (std::getenv("LLMQ_EXAMPLE_API_KEY") == nullptr) setenv("LLMQ_EXAMPLE_API_KEY", "not-used", 0);
  asio::io_context io;
  int exit_code = 1;
  asio::co_spawn(io, run(io, llmq::load_config(config_path)), [&](std::exception_ptr ep, int code) {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        std::cerr << "custom_rate_limit_store failed: " << e.what() << "\n";
      }
      return;
    }
    exit_code = code;
  });
  io.run();
  return exit_code;
}
