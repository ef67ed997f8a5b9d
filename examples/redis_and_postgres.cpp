// The seed's "Advanced Configuration": user limits shared through Redis (a `redis://`
// URL) and telemetry written to PostgreSQL (a `postgresql://` URI). Two queues stand for
// two replicas of a service: the user's window is one, wherever the requests land, and
// every request of both is one row in the database.
//
//   redis_and_postgres [llm_config.yaml] [redis://host:port/db] [postgresql://user@host:port/db]
//
// Defaults: $LLMQ_EXAMPLE_REDIS_URL or redis://127.0.0.1:6379/0, and
// $LLMQ_EXAMPLE_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres.
// Exits 0 when every outcome is the documented one.

#include "local_executor.hpp"

#include <llmq/llmq.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/redis_rate_limit_store.hpp>

#include <boost/asio/this_coro.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

namespace asio = boost::asio;

namespace {

struct Settings {
  llmq::LLMConfig config;
  std::string redis_url;
  std::string postgres_url;
};

/// Filled by main() from the command line, read by run().
Settings& settings() {
  static Settings s;
  return s;
}

std::string argument_or(int argc, char** argv, int i, const char* env, const char* fallback) {
  if (argc > i) return argv[i];
  const char* value = std::getenv(env);
  return value != nullptr ? value : fallback;
}

/// One replica: its own queue, the shared Redis window, the shared telemetry table.
std::unique_ptr<llmq::LLMQueue> replica(const asio::any_io_executor& ex, const Settings& s,
                                        std::shared_ptr<llmq::PostgresTelemetryStore> telemetry) {
  llmq::RedisRateLimitStoreOptions redis;
  redis.url = s.redis_url;
  redis.key_prefix = "llmq:example:";
  // Refuse, rather than let requests through unlimited, while Redis cannot be reached.
  redis.failure_policy = llmq::RateLimitFailurePolicy::fail_closed;
  llmq::QueueOptions options;
  options.user_rate_limit_store = std::make_shared<llmq::RedisUserRateLimitStore>(ex, redis);
  options.telemetry_store = std::move(telemetry);
  return std::make_unique<llmq::LLMQueue>(ex, s.config, examples::local_executors(),
                                          std::move(options));
}

/// The PostgreSQL store of one replica (the table is created on first connect).
std::shared_ptr<llmq::PostgresTelemetryStore> telemetry_store(const asio::any_io_executor& ex,
                                                              const Settings& s) {
  llmq::PostgresTelemetryOptions pg;
  pg.conninfo = s.postgres_url;
  pg.table = "llmq_example_telemetry";
  return std::make_shared<llmq::PostgresTelemetryStore>(ex, pg);
}

asio::awaitable<int> run() {
  const Settings& s = settings();
  const asio::any_io_executor ex = co_await asio::this_coro::executor;
  auto telemetry_a = telemetry_store(ex, s);
  auto telemetry_b = telemetry_store(ex, s);
  auto a = replica(ex, s, telemetry_a);
  auto b = replica(ex, s, telemetry_b);
  co_await a->initiate();
  co_await b->initiate();

  // A user id of this run only, so that a run a moment ago does not count.
  const std::string user =
      "alice-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  int failures = 0;
  auto expect = [&](const char* what, bool ok) {
    std::cout << (ok ? "ok: " : "FAILED: ") << what << "\n";
    failures += ok ? 0 : 1;
  };
  int served = 0;
  int refused = 0;
  for (int i = 0; i < 4; ++i) {
    llmq::LLMQueue& q = i % 2 == 0 ? *a : *b;  // the load balancer in front alternates
    try {
      co_await q.execute_request("chat_completion", examples::chat_request("hi"), user);
      ++served;
    } catch (const llmq::UserRateLimitExceededError& e) {
      ++refused;
      std::cout << "refused: " << e.what() << "\n";
    }
  }
  expect("the user's three requests in the window are served across both replicas", served == 3);
  expect("the fourth is refused, on the replica that served only one of the three", refused == 1);
  co_await a->graceful_shutdown();  // flushes the telemetry
  co_await b->graceful_shutdown();
  const std::uint64_t rows = telemetry_a->rows_written() + telemetry_b->rows_written();
  std::cout << "telemetry rows written to PostgreSQL: " << rows << "\n";
  expect("every request, the refused one included, is a row in PostgreSQL", rows == 4);
  std::cout << "redis_and_postgres: " << failures << " failed\n";
  co_return failures;
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("LLMQ_EXAMPLE_API_KEY") == nullptr) setenv("LLMQ_EXAMPLE_API_KEY", "not-used", 0);
  Settings& s = settings();
  s.config = llmq::load_config(argc > 1 ? argv[1] : "llm_config.yaml");
  // A small window, so that the shared limit shows after a few requests.
  s.config.user_limits.max_num_requests_in_time_window = 3;
  s.redis_url = argument_or(argc, argv, 2, "LLMQ_EXAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0");
  s.postgres_url = argument_or(argc, argv, 3, "LLMQ_EXAMPLE_POSTGRES_URL",
                               "postgresql://postgres@127.0.0.1:5432/postgres");
  return examples::run_example("redis_and_postgres", run);
}
