// LLMQueue end to end with the shared stores: two queues (each on its own io_context
// thread with its own Redis connection, as two processes would be) sharing user limits
// in Redis; a private redis-server killed and restarted under a running queue
// (fail_closed and fail_open); telemetry of every request, rejections included, in
// PostgreSQL and SQLite; PostgreSQL cut mid-run through a TCP proxy while requests keep
// flowing. Tests whose server is missing skip (or fail under LLMQ_TEST_REQUIRE_SERVICES=1).

#include "store_test_support.hpp"

#include <llmq/llmq.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/redis.hpp>
#include <llmq/redis_rate_limit_store.hpp>
#include <llmq/sqlite_telemetry_store.hpp>

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
#include <map>
#include <set>

namespace llmq {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using nlohmann::json;

// --- the queue under test ------------------------------------------------------------

AzureModelConfig chat_deployment(std::string id) {
  AzureModelConfig m;
  m.unique_model_id = id;
  m.model_name_in_azure = "gpt-4o";
  m.deployment_name_in_azure = std::move(id);
  m.model_type = ModelType::chat;
  m.req_per_min = 10'000'000;
  m.tokens_per_min = 10'000'000'000;
  return m;
}

/// Two chat deployments, `user_limit` requests per user per 60 s, a roomy queue.
LLMConfig queue_config(std::int64_t user_limit) {
  std::vector<AzureModelConfig> models;
  models.push_back(chat_deployment("chat-a"));
  models.push_back(chat_deployment("chat-b"));
  return test::azure_config("sk-QUEUE-STORE-TEST", std::move(models), user_limit, 100'000);
}

json chat_body() { return test::chat_body("Hello from the store tests", 16); }

/// Answers 200 at once with the request's id and user.
class EchoIdExecutor : public RequestExecutor {
 public:
  asio::awaitable<Response> process_request(const Request& req, const ChosenDeployments&,
                                            TelemetryData& telemetry) override {
    calls.fetch_add(1, std::memory_order_relaxed);
    telemetry.prompt_tokens = 5;
    telemetry.completion_tokens = 1;
    json body = json::object();
    body["id"] = req.id;
    body["user"] = req.user_id;
    co_return Response{std::move(body), 200};
  }
  std::atomic<int> calls{0};
};

std::map<std::string, std::shared_ptr<RequestExecutor>> chat_executors(
    std::shared_ptr<EchoIdExecutor> e) {
  std::map<std::string, std::shared_ptr<RequestExecutor>> m;
  m.emplace("chat", std::move(e));
  return m;
}

/// What one execute_request call came to.
struct Outcome {
  enum class Kind { answered, user_limited, store_unavailable, other_error };
  Kind kind = Kind::other_error;
  int status = 0;                          ///< Response status or the error's http_status
  std::string request_id;                  ///< from the echo body, when answered 200
  std::chrono::nanoseconds retry_after{};  ///< of a refusal
  steady::duration took{};
  std::string error;
};

std::string describe(const Outcome& o) {
  return "status " + std::to_string(o.status) + " kind " +
         std::to_string(static_cast<int>(o.kind)) +
         (o.error.empty() ? std::string() : " error: " + o.error);
}

asio::awaitable<Outcome> fire_one(LLMQueue& queue, std::string req_type, std::string user) {
  Outcome o;
  const auto t0 = steady::now();
  try {
    Response r = co_await queue.execute_request(std::move(req_type), chat_body(), std::move(user));
    o.kind = Outcome::Kind::answered;
    o.status = r.status;
    if (r.body.is_object() && r.body.contains("id") && r.body["id"].is_string())
      o.request_id = r.body["id"].get<std::string>();
  } catch (const UserRateLimitExceededError& e) {
    o.kind = Outcome::Kind::user_limited;
    o.status = e.http_status();
    o.retry_after = e.retry_after();
    o.error = e.what();
  } catch (const StoreUnavailableError& e) {
    o.kind = Outcome::Kind::store_unavailable;
    o.status = e.http_status();
    o.retry_after = e.retry_after_hint().value_or(std::chrono::milliseconds(0));
    o.error = e.what();
    if (e.code() != errc::user_limit_store_unavailable) o.kind = Outcome::Kind::other_error;
  } catch (const Error& e) {
    o.status = e.http_status();
    o.error = e.what();
  } catch (const std::exception& e) {
    o.error = e.what();
  }
  o.took = steady::now() - t0;
  co_return o;
}

/// One "process": an io_context on its own thread, and an LLMQueue on it. Stores are
/// made on executor() before start(). The destructor stops the thread before the queue
/// (and the stores it owns) are destroyed.
class QueueProcess {
 public:
  QueueProcess() = default;
  ~QueueProcess() {
    io_.stop();
    queue_.reset();
  }
  QueueProcess(const QueueProcess&) = delete;
  QueueProcess& operator=(const QueueProcess&) = delete;

  asio::any_io_executor executor() { return io_.executor(); }

  void start(LLMConfig config, std::map<std::string, std::shared_ptr<RequestExecutor>> executors,
             QueueOptions options) {
    queue_ = std::make_unique<LLMQueue>(io_.executor(), std::move(config), std::move(executors),
                                        std::move(options));
    run(queue_->initiate());
  }

  LLMQueue& queue() { return *queue_; }

  template <class T>
  std::future<T> spawn(asio::awaitable<T> a) {
    return io_.spawn(std::move(a));
  }

  /// Runs `a` on the queue's thread and waits at most `limit` for it.
  template <class T>
  T run(asio::awaitable<T> a, std::chrono::milliseconds limit = 30s) {
    return io_.run(std::move(a), limit);
  }

  std::future<Outcome> fire(std::string req_type, std::string user) {
    return spawn(fire_one(*queue_, std::move(req_type), std::move(user)));
  }

  QueueStats stats() { return run(queue_->stats(), 10s); }

  /// graceful_shutdown(), bounded; returns how long it took.
  steady::duration shutdown(std::chrono::milliseconds limit = 10s) {
    const auto t0 = steady::now();
    run(queue_->graceful_shutdown(), limit);
    return steady::now() - t0;
  }

 private:
  test::IoThread io_;
  std::unique_ptr<LLMQueue> queue_;
};

/// Waits for every future (all within `limit` overall).
std::vector<Outcome> collect(std::vector<std::future<Outcome>>& futures,
                             std::chrono::milliseconds limit = 30s) {
  const auto deadline = steady::now() + limit;
  std::vector<Outcome> out;
  out.reserve(futures.size());
  for (auto& f : futures) {
    if (f.wait_until(deadline) != std::future_status::ready)
      throw std::runtime_error("requests did not all finish within the time limit");
    out.push_back(f.get());
  }
  futures.clear();
  return out;
}

/// `n` concurrent requests of `user` on `p`.
std::vector<Outcome> burst(QueueProcess& p, int n, const std::string& user,
                           std::chrono::milliseconds limit = 15s) {
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < n; ++i) futures.push_back(p.fire("chat", user));
  return collect(futures, limit);
}

QueueOptions fast_flush_options() {
  QueueOptions o;
  o.telemetry_flush_interval = 20ms;
  o.shutdown_timeout = 5s;
  return o;
}

// --- Redis helpers -------------------------------------------------------------------

using test::redis_config;
using test::redis_exec;

/// ZCARD of `key` (entries in a user's window).
std::int64_t zcard(asio::thread_pool& pool, std::uint16_t port, const std::string& key) {
  const RedisReply r = test::run(pool, redis_exec(redis_config(port), test::cmd("ZCARD", key)));
  return r.integer;
}

RedisRateLimitStoreOptions shared_store_options(std::uint16_t port, const std::string& prefix) {
  RedisRateLimitStoreOptions o;
  o.url = "redis://127.0.0.1:" + std::to_string(port) + "/0";
  o.key_prefix = prefix;
  o.command_timeout = 2s;  // generous: a slow CI box must not turn into 503s
  // fail_closed: a Redis problem shows up as a 503 instead of a silent local decision.
  o.failure_policy = RateLimitFailurePolicy::fail_closed;
  return o;
}

class QueueStoreRedis : public test::RedisServerFixture {
 protected:
  QueueStoreRedis() : RedisServerFixture("queue:", ":", 1) {}
};

// --- a. two queues, one Redis ----------------------------------------------------------

TEST_F(QueueStoreRedis, TwoQueuesSharingRedisAdmitExactlyTheLimitPerUserInTotal) {
  constexpr std::int64_t limit = 7;
  constexpr int users = 6;
  constexpr int per_user_per_queue = 3 * static_cast<int>(limit);
  QueueProcess a;
  QueueProcess b;
  auto exec_a = std::make_shared<EchoIdExecutor>();
  auto exec_b = std::make_shared<EchoIdExecutor>();
  auto store_a =
      std::make_shared<RedisUserRateLimitStore>(a.executor(), shared_store_options(port_, prefix_));
  auto store_b =
      std::make_shared<RedisUserRateLimitStore>(b.executor(), shared_store_options(port_, prefix_));
  QueueOptions oa = fast_flush_options();
  oa.user_rate_limit_store = store_a;
  QueueOptions ob = fast_flush_options();
  ob.user_rate_limit_store = store_b;
  a.start(queue_config(limit), chat_executors(exec_a), oa);
  b.start(queue_config(limit), chat_executors(exec_b), ob);

  auto user = [](int u) { return "user-" + std::to_string(u); };
  std::vector<std::future<Outcome>> futures;
  std::vector<std::string> who;
  for (int i = 0; i < per_user_per_queue; ++i) {
    for (int u = 0; u < users; ++u) {
      futures.push_back(a.fire("chat", user(u)));
      who.push_back(user(u));
      futures.push_back(b.fire("chat", user(u)));
      who.push_back(user(u));
    }
  }
  const std::vector<Outcome> outcomes = collect(futures, 60s);

  std::map<std::string, int> admitted;
  std::map<std::string, int> refused;
  std::set<std::string> ids;
  for (std::size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    if (o.kind == Outcome::Kind::answered && o.status == 200) {
      ++admitted[who[i]];
      EXPECT_TRUE(ids.insert(o.request_id).second) << "duplicate request id " << o.request_id;
    } else if (o.kind == Outcome::Kind::user_limited) {
      ++refused[who[i]];
      EXPECT_EQ(o.status, 429);
      EXPECT_GT(o.retry_after, 0ns) << who[i];
      EXPECT_LE(o.retry_after, 60s) << who[i];
    } else {
      ADD_FAILURE() << "unexpected outcome for " << who[i] << ": " << describe(o);
    }
  }
  for (int u = 0; u < users; ++u) {
    EXPECT_EQ(admitted[user(u)], limit) << user(u);
    EXPECT_EQ(refused[user(u)], 2 * per_user_per_queue - limit) << user(u);
    EXPECT_EQ(zcard(pool_, port_, store_a->key_for(user(u))), limit) << user(u);
  }
  EXPECT_EQ(exec_a->calls.load() + exec_b->calls.load(), users * limit);

  const QueueStats sa = a.stats();
  const QueueStats sb = b.stats();
  EXPECT_EQ(sa.admitted + sb.admitted, static_cast<std::uint64_t>(users * limit));
  EXPECT_EQ(sa.rejected_user_limit + sb.rejected_user_limit,
            static_cast<std::uint64_t>(users * (2 * per_user_per_queue - limit)));
  const RedisRateLimitStoreCounters ca = store_a->counters();
  const RedisRateLimitStoreCounters cb = store_b->counters();
  EXPECT_EQ(ca.redis_decisions + cb.redis_decisions, outcomes.size());
  EXPECT_EQ(ca.errors + cb.errors, 0U);
  EXPECT_EQ(ca.redis_decisions, static_cast<std::uint64_t>(users * per_user_per_queue));
  EXPECT_EQ(cb.redis_decisions, static_cast<std::uint64_t>(users * per_user_per_queue));

  EXPECT_LT(a.shutdown(), 5s);
  EXPECT_LT(b.shutdown(), 5s);
}

// --- b. Redis killed and restarted under a running queue -------------------------------

RedisRateLimitStoreOptions outage_store_options(std::uint16_t port, RateLimitFailurePolicy policy) {
  RedisRateLimitStoreOptions o;
  o.url = "redis://127.0.0.1:" + std::to_string(port) + "/0";
  o.key_prefix = "llmqtest:outage:";  // a private server: nothing else lives there
  o.connect_timeout = 500ms;
  o.command_timeout = 500ms;
  o.reconnect_backoff_initial = 50ms;
  o.reconnect_backoff_max = 200ms;
  o.failure_policy = policy;
  o.unavailable_retry_after = 1s;
  return o;
}

/// Bound on one decision while Redis is down: the timeouts above plus slack.
constexpr auto outage_decision_bound = 1500ms;

/// Fires one request at a time until Redis (not the local fallback) admits one.
bool wait_until_redis_admits(QueueProcess& p, RedisUserRateLimitStore& store,
                             const std::string& user, std::chrono::milliseconds limit) {
  const auto deadline = steady::now() + limit;
  while (steady::now() < deadline) {
    const std::uint64_t before = store.counters().redis_decisions;
    const Outcome o = p.run(fire_one(p.queue(), "chat", user), 5s);
    if (o.kind == Outcome::Kind::answered && o.status == 200 &&
        store.counters().redis_decisions > before)
      return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

void redis_killed_and_restarted(RateLimitFailurePolicy policy) {
  const bool closed = policy == RateLimitFailurePolicy::fail_closed;
  test::RedisProcess server(test::free_port());
  server.start();
  asio::thread_pool pool(1);
  QueueProcess p;
  auto exec = std::make_shared<EchoIdExecutor>();
  auto store = std::make_shared<RedisUserRateLimitStore>(
      p.executor(), outage_store_options(server.port(), policy));
  QueueOptions options = fast_flush_options();
  options.user_rate_limit_store = store;
  p.start(queue_config(1000), chat_executors(exec), options);

  // Up: Redis decides.
  for (const Outcome& o : burst(p, 10, "alice")) EXPECT_EQ(o.status, 200) << describe(o);
  EXPECT_EQ(store->counters().redis_decisions, 10U);
  EXPECT_EQ(zcard(pool, server.port(), store->key_for("alice")), 10);

  // Killed while a burst is in flight: every request ends, quickly, as 200 or (fail_closed) 503.
  {
    std::vector<std::future<Outcome>> futures;
    for (int i = 0; i < 20; ++i) futures.push_back(p.fire("chat", "bob"));
    server.kill();
    for (const Outcome& o : collect(futures, 10s)) {
      const bool ok = (o.kind == Outcome::Kind::answered && o.status == 200) ||
                      (closed && o.kind == Outcome::Kind::store_unavailable && o.status == 503);
      EXPECT_TRUE(ok) << describe(o);
      EXPECT_LT(o.took, outage_decision_bound) << describe(o);
    }
  }

  // Down: three bursts, spread over the reconnect backoff.
  const QueueStats before_down = p.stats();
  const RedisRateLimitStoreCounters counters_before_down = store->counters();
  const auto down_started = steady::now();
  for (int wave = 0; wave < 3; ++wave) {
    for (const Outcome& o : burst(p, 10, "carol", 10s)) {
      if (closed) {
        EXPECT_EQ(o.kind, Outcome::Kind::store_unavailable) << describe(o);
        EXPECT_EQ(o.status, 503) << describe(o);
        EXPECT_EQ(o.retry_after, 1s);
      } else {
        EXPECT_EQ(o.kind, Outcome::Kind::answered) << describe(o);
        EXPECT_EQ(o.status, 200) << describe(o);
      }
      EXPECT_LT(o.took, outage_decision_bound) << describe(o);
    }
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_LT(steady::now() - down_started, 6s) << "nothing may wait for the dead server";
  const QueueStats after_down = p.stats();
  const RedisRateLimitStoreCounters counters_after_down = store->counters();
  EXPECT_EQ(counters_after_down.redis_decisions, counters_before_down.redis_decisions);
  EXPECT_EQ(counters_after_down.errors - counters_before_down.errors, 30U);
  if (closed) {
    EXPECT_EQ(after_down.admitted, before_down.admitted) << "fail_closed admits nothing unchecked";
    EXPECT_EQ(counters_after_down.fail_open_decisions, 0U);
  } else {
    EXPECT_EQ(after_down.admitted - before_down.admitted, 30U);
    EXPECT_EQ(counters_after_down.fail_open_decisions - counters_before_down.fail_open_decisions,
              30U);
  }

  // Restarted (same port, empty): Redis decides again.
  server.start();
  ASSERT_TRUE(wait_until_redis_admits(p, *store, "dave", 5s))
      << "the queue must reach Redis again after it restarts";
  const RedisRateLimitStoreCounters counters_back = store->counters();
  for (const Outcome& o : burst(p, 10, "dave")) EXPECT_EQ(o.status, 200) << describe(o);
  EXPECT_EQ(store->counters().redis_decisions - counters_back.redis_decisions, 10U);
  EXPECT_EQ(store->counters().errors, counters_back.errors);
  EXPECT_EQ(zcard(pool, server.port(), store->key_for("dave")), 11)
      << "the restarted server holds the window of every request admitted since";

  EXPECT_LT(p.shutdown(), 5s);
}

TEST_F(QueueStoreRedis, TierLimitsApplyThroughRedis) {
  // The default tier allows 2 requests per window; the gold tier 5. The queue hands each
  // user's tier limit to the Redis store, which enforces it.
  LLMConfig config = queue_config(2);
  UserTier gold;
  gold.name = "gold";
  gold.users = {"gold-user"};
  gold.max_num_requests_in_time_window = 5;
  config.user_tiers.push_back(gold);
  QueueProcess q;
  auto store =
      std::make_shared<RedisUserRateLimitStore>(q.executor(), shared_store_options(port_, prefix_));
  QueueOptions o = fast_flush_options();
  o.user_rate_limit_store = store;
  q.start(config, chat_executors(std::make_shared<EchoIdExecutor>()), o);
  std::map<std::string, int> admitted;
  for (const std::string user : {"plain-user", "gold-user"}) {
    std::vector<std::future<Outcome>> futures;
    for (int i = 0; i < 8; ++i) futures.push_back(q.fire("chat", user));
    for (const Outcome& out : collect(futures, 30s))
      admitted[user] += out.kind == Outcome::Kind::answered && out.status == 200;
  }
  EXPECT_EQ(admitted["plain-user"], 2);
  EXPECT_EQ(admitted["gold-user"], 5);
}

TEST(QueueStoreRedisOutage, FailClosedRefusesWith503QuicklyWhileDownAndAdmitsAfterRestart) {
  if (!test::RedisProcess::available()) LLMQ_SKIP_OR_FAIL("redis-server is not installed");
  redis_killed_and_restarted(RateLimitFailurePolicy::fail_closed);
}

TEST(QueueStoreRedisOutage, FailOpenKeepsAdmittingWhileDownAndReturnsToRedisAfterRestart) {
  if (!test::RedisProcess::available()) LLMQ_SKIP_OR_FAIL("redis-server is not installed");
  redis_killed_and_restarted(RateLimitFailurePolicy::fail_open);
}

// --- telemetry through the queue: a scripted sequence ----------------------------------

/// One request of the script and the status its caller must get.
struct Step {
  std::string user;
  std::string req_type;
  int status = 0;
};

/// Sequential: with a limit of 3, five requests each of two users (3 admitted, 2
/// refused), interleaved, and one of an unknown type in the middle.
std::vector<Step> telemetry_script() {
  std::vector<Step> steps;
  int sent_a = 0;
  int sent_b = 0;
  for (int i = 0; i < 10; ++i) {
    const bool a = i % 2 == 0;
    const int n = a ? ++sent_a : ++sent_b;
    steps.push_back(Step{a ? "ann" : "ben", "chat", n <= 3 ? 200 : 429});
    if (i == 4) steps.push_back(Step{"ann", "no_such_type", 404});
  }
  return steps;
}

constexpr std::int64_t script_limit = 3;

/// Runs the script one request after another; checks each caller's answer.
std::vector<Outcome> run_script(QueueProcess& p, const std::vector<Step>& steps) {
  std::vector<Outcome> outcomes;
  for (const Step& s : steps) {
    Outcome o = p.run(fire_one(p.queue(), s.req_type, s.user), 10s);
    EXPECT_EQ(o.status, s.status) << s.user << " " << s.req_type << ": " << describe(o);
    if (s.status == 429) {
      EXPECT_EQ(o.kind, Outcome::Kind::user_limited) << describe(o);
    }
    if (s.status == 200) {
      EXPECT_FALSE(o.request_id.empty());
    }
    outcomes.push_back(std::move(o));
  }
  return outcomes;
}

/// The same query for PostgreSQL and SQLite, in the order the requests were made.
const char* const script_rows_sql =
    "SELECT request_id, user_id, req_type, status, "
    "CASE WHEN queued_at IS NULL THEN 0 ELSE 1 END, "
    "CASE WHEN error = '' THEN 0 ELSE 1 END, llm_deployment "
    "FROM %T ORDER BY received_at, id";

std::string rows_sql(const std::string& table) {
  std::string sql = script_rows_sql;
  sql.replace(sql.find("%T"), 2, table);
  return sql;
}

/// Exactly one row per request of the script, in order, with the caller's status and
/// (for admitted requests) the id the executor saw.
void check_script_rows(const std::vector<std::vector<std::string>>& rows,
                       const std::vector<Step>& steps, const std::vector<Outcome>& outcomes) {
  ASSERT_EQ(rows.size(), steps.size()) << "one row per request";
  std::set<std::string> ids;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    ASSERT_EQ(row.size(), 7U);
    SCOPED_TRACE("request " + std::to_string(i) + " (" + steps[i].user + ", " + steps[i].req_type +
                 ")");
    EXPECT_FALSE(row[0].empty());
    EXPECT_TRUE(ids.insert(row[0]).second) << "duplicate request id " << row[0];
    EXPECT_EQ(row[1], steps[i].user);
    EXPECT_EQ(row[2], steps[i].req_type);
    EXPECT_EQ(row[3], std::to_string(steps[i].status));
    const bool admitted = steps[i].status == 200;
    EXPECT_EQ(row[4], admitted ? "1" : "0") << "only admitted requests were queued";
    EXPECT_EQ(row[5], admitted ? "0" : "1") << "rejections carry their error";
    if (admitted) {
      EXPECT_EQ(row[0], outcomes[i].request_id) << "the id the executor saw";
      EXPECT_TRUE(row[6] == "chat-a" || row[6] == "chat-b") << row[6];
    } else {
      EXPECT_EQ(row[6], "");
    }
  }
}

// --- PostgreSQL ----------------------------------------------------------------------

class QueueStorePostgres : public test::PostgresFixture {
 protected:
  QueueStorePostgres() : PostgresFixture("llmq_queue_test_") {}
};

TEST_F(QueueStorePostgres, OneRowPerRequestWithTheCallersStatusRejectionsIncluded) {
  QueueProcess p;
  auto store = std::make_shared<PostgresTelemetryStore>(p.executor(), store_options());
  QueueOptions options = fast_flush_options();
  options.telemetry_store = store;
  p.start(queue_config(script_limit), chat_executors(std::make_shared<EchoIdExecutor>()), options);
  const std::vector<Step> steps = telemetry_script();
  const std::vector<Outcome> outcomes = run_script(p, steps);
  EXPECT_LT(p.shutdown(), 5s);
  const QueueStats s = p.stats();
  EXPECT_EQ(s.telemetry_failed, 0U);
  EXPECT_EQ(s.telemetry_dropped, 0U);
  EXPECT_EQ(store->rows_written(), steps.size());
  EXPECT_FALSE(store->is_connected()) << "graceful_shutdown closes the store";

  test::PgConnection pg(conninfo_);
  check_script_rows(pg.query(rows_sql(table_)), steps, outcomes);
}

TEST_F(QueueStorePostgres, PostgresStoppedMidRunRequestsKeepFlowing) {
  const std::string host = test::pg_conninfo_value(conninfo_, "host");
  const std::string port = test::pg_conninfo_value(conninfo_, "port");
  if ((host != "127.0.0.1" && host != "localhost") || port.empty())
    GTEST_SKIP() << "the proxy test needs host=127.0.0.1 and a port in LLMQ_TEST_PG_CONNINFO";
  test::TcpProxy proxy(static_cast<std::uint16_t>(std::stoi(port)));

  QueueProcess p;
  PostgresTelemetryOptions o = store_options();
  o.conninfo = conninfo_ + " host=127.0.0.1 port=" + std::to_string(proxy.port());
  o.connect_timeout = 1s;
  o.statement_timeout = 2s;
  auto store = std::make_shared<PostgresTelemetryStore>(p.executor(), o);
  QueueOptions options = fast_flush_options();
  options.telemetry_store = store;
  options.telemetry_batch_size = 5;
  p.start(queue_config(1'000'000), chat_executors(std::make_shared<EchoIdExecutor>()), options);

  // Flowing: the rows arrive through the proxy.
  std::size_t sent = 0;
  for (const Outcome& r : burst(p, 20, "erin")) EXPECT_EQ(r.status, 200) << describe(r);
  sent += 20;
  test::PgConnection pg(conninfo_);
  const auto deadline = steady::now() + 5s;
  while (pg.count(table_) < 20 && steady::now() < deadline) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(pg.count(table_), 20) << "telemetry must reach PostgreSQL before the cut";

  // PostgreSQL "stops": the connection is cut and the port refuses.
  proxy.stop();
  for (int wave = 0; wave < 6; ++wave) {
    for (const Outcome& r : burst(p, 10, "erin", 10s)) {
      EXPECT_EQ(r.status, 200) << describe(r);
      EXPECT_LT(r.took, 1s) << "requests must not wait for the telemetry store";
    }
    sent += 10;
    std::this_thread::sleep_for(50ms);  // lets the flusher try (and fail) a few batches
  }
  std::uint64_t failed = 0;
  const auto fail_deadline = steady::now() + 5s;
  while ((failed = p.stats().telemetry_failed) == 0 && steady::now() < fail_deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_GT(failed, 0U) << "lost batches are counted";

  // Shutting down with PostgreSQL still away: bounded, the last flush fails fast.
  EXPECT_LT(p.shutdown(10s), 5s);
  const QueueStats s = p.stats();
  EXPECT_EQ(s.completed, sent);
  EXPECT_EQ(s.telemetry_dropped, 0U);
  EXPECT_GT(s.telemetry_failed, 0U);
  EXPECT_LE(s.telemetry_failed, sent - 20);
  const std::int64_t rows = pg.count(table_);
  // A batch reported as failed may still have committed (cut after COMMIT, before the
  // answer), so the table holds at least what was not reported lost, at most everything.
  EXPECT_GE(static_cast<std::uint64_t>(rows) + s.telemetry_failed, sent);
  EXPECT_LE(static_cast<std::uint64_t>(rows), sent);
  EXPECT_EQ(pg.query("SELECT count(DISTINCT request_id) FROM " + table_).at(0).at(0),
            std::to_string(rows));
}

// --- SQLite --------------------------------------------------------------------------

std::vector<std::vector<std::string>> sqlite_rows(const std::filesystem::path& path,
                                                  const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    throw std::runtime_error("cannot open " + path.string());
  }
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    const std::string why = sqlite3_errmsg(db);
    sqlite3_close(db);
    throw std::runtime_error("sqlite: " + why);
  }
  std::vector<std::vector<std::string>> rows;
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int c = 0; c < sqlite3_column_count(st); ++c) {
      const unsigned char* text = sqlite3_column_text(st, c);
      row.emplace_back(text == nullptr
                           ? "NULL"
                           : std::string(reinterpret_cast<const char*>(text),
                                         static_cast<std::size_t>(sqlite3_column_bytes(st, c))));
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

TEST(QueueStoreSqlite, OneRowPerRequestWithTheCallersStatusRejectionsIncluded) {
  test::TempDir dir;
  const std::filesystem::path path = dir.path() / "queue.sqlite3";
  const std::vector<Step> steps = telemetry_script();
  std::vector<Outcome> outcomes;
  {
    QueueProcess p;
    SqliteTelemetryOptions o;
    o.path = path;
    o.table = "queue_telemetry";
    auto store = std::make_shared<SqliteTelemetryStore>(p.executor(), o);
    QueueOptions options = fast_flush_options();
    options.telemetry_store = store;
    p.start(queue_config(script_limit), chat_executors(std::make_shared<EchoIdExecutor>()),
            options);
    outcomes = run_script(p, steps);
    EXPECT_LT(p.shutdown(), 5s);
    const QueueStats s = p.stats();
    EXPECT_EQ(s.telemetry_failed, 0U);
    EXPECT_EQ(s.telemetry_dropped, 0U);
    EXPECT_EQ(s.rejected_user_limit, 4U);
    EXPECT_EQ(s.rejected_invalid, 1U);
    EXPECT_EQ(store->rows_written(), steps.size());
  }  // the queue and the store (and with it the database handle) are gone
  check_script_rows(sqlite_rows(path, rows_sql("queue_telemetry")), steps, outcomes);
}

}  // namespace
}  // namespace llmq
