// RedisConnection, RedisClient and RedisUserRateLimitStore against real redis-servers on
// loopback: the shared ones (scripts/services.sh; plain and TLS-only), private ones started
// by the tests (some over TLS), and the 3-node cluster. Each test skips with a message when
// its server (or, for TLS, the test certificates) is not there.

#include "store_test_support.hpp"

#include <llmq/log.hpp>
#include <llmq/redis.hpp>
#include <llmq/redis_rate_limit_store.hpp>
#include "redis_protocol.hpp"

#include <gtest/gtest.h>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <map>
#include <set>

namespace llmq {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

using test::cmd;

std::string url_for(std::uint16_t port) { return "redis://127.0.0.1:" + std::to_string(port); }

RedisRateLimitStoreOptions store_options(std::uint16_t port, const std::string& prefix,
                                         RateLimitFailurePolicy policy) {
  RedisRateLimitStoreOptions o;
  o.url = url_for(port);
  o.key_prefix = prefix;
  o.command_timeout = 2s;
  o.failure_policy = policy;
  return o;
}

UserLimits limits(std::int64_t max, std::chrono::milliseconds window) {
  UserLimits l;
  l.max_num_requests_in_time_window = max;
  l.time_window = window;
  return l;
}

asio::awaitable<RateLimitDecision> acquire_one(std::shared_ptr<RedisUserRateLimitStore> store,
                                               std::string user, UserLimits lim) {
  RateLimitDecision d = co_await store->acquire(user, lim);
  co_return d;
}

class RedisTest : public test::RedisServerFixture {
 protected:
  RedisTest() : RedisServerFixture("", ":", 2) {}
};

// --- RedisConnection -------------------------------------------------------------------

asio::awaitable<std::pair<std::string, std::int64_t>> echo_then_incr(
    std::shared_ptr<RedisConnection> c, int i, std::string key) {
  // Binary payload with CRLF inside: a reply given to the wrong caller would show.
  const std::string payload = "m\r\n" + std::to_string(i) + std::string(1, '\0');
  RedisReply echo = co_await c->exec(cmd("ECHO", payload));
  RedisReply incr = co_await c->exec(cmd("INCR", key));
  if (echo.str != payload) throw std::runtime_error("echo mismatch for " + std::to_string(i));
  co_return std::make_pair(echo.str, incr.integer);
}

asio::awaitable<std::int64_t> client_id(std::shared_ptr<RedisConnection> c) {
  RedisReply r = co_await c->exec(cmd("CLIENT", "ID"));
  co_return r.integer;
}

/// 500 concurrent ECHO+INCR pairs on one connection: each caller gets its own replies.
void expect_pipelined_in_order(asio::thread_pool& pool, RedisConfig cfg, const std::string& key) {
  auto conn = std::make_shared<RedisConnection>(pool.get_executor(), std::move(cfg));
  constexpr int n = 500;
  std::vector<std::future<std::pair<std::string, std::int64_t>>> results;
  std::vector<std::future<std::int64_t>> ids;
  for (int i = 0; i < n; ++i) {
    results.push_back(asio::co_spawn(pool, echo_then_incr(conn, i, key), asio::use_future));
    if (i % 50 == 0) ids.push_back(asio::co_spawn(pool, client_id(conn), asio::use_future));
  }
  std::set<std::int64_t> counts;
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(results[static_cast<std::size_t>(i)].wait_for(20s), std::future_status::ready);
    auto [echo, count] = results[static_cast<std::size_t>(i)].get();
    EXPECT_EQ(echo, "m\r\n" + std::to_string(i) + std::string(1, '\0'));
    counts.insert(count);
  }
  // Every INCR answered exactly once: 1..n.
  ASSERT_EQ(counts.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(*counts.begin(), 1);
  EXPECT_EQ(*counts.rbegin(), n);
  // All on one connection.
  std::set<std::int64_t> distinct;
  for (auto& f : ids) distinct.insert(f.get());
  EXPECT_EQ(distinct.size(), 1U);
  EXPECT_TRUE(conn->is_connected());
  test::run(pool, conn->close());
  EXPECT_FALSE(conn->is_connected());
}

TEST_F(RedisTest, ConcurrentExecsArePipelinedAndAnsweredInOrder) {
  expect_pipelined_in_order(pool_, config(), prefix_ + "counter");
}

asio::awaitable<void> cancelled_exec_keeps_pipeline(RedisConfig cfg, std::string key) {
  using namespace asio::experimental::awaitable_operators;
  auto ex = co_await asio::this_coro::executor;
  RedisConnection c(ex, cfg);
  const RedisReply id_before = co_await c.exec(cmd("CLIENT", "ID"));
  asio::steady_timer timer(ex, 50ms);
  const auto started = steady::now();
  auto winner =
      co_await (c.exec(cmd("BLPOP", key, "0.3")) || timer.async_wait(asio::use_awaitable));
  EXPECT_EQ(winner.index(), 1U) << "the timer should win; BLPOP is cancelled";
  EXPECT_LT(steady::now() - started, 250ms) << "cancellation must complete at once";
  // Sent after the abandoned BLPOP: must get its own reply, not BLPOP's nil.
  const RedisReply echo = co_await c.exec(cmd("ECHO", "after"));
  EXPECT_EQ(echo.type, RedisReply::Type::string);
  EXPECT_EQ(echo.str, "after");
  const RedisReply id_after = co_await c.exec(cmd("CLIENT", "ID"));
  EXPECT_EQ(id_before.integer, id_after.integer) << "the connection must not have been reset";
  co_await c.close();
}

TEST_F(RedisTest, CancelledExecDoesNotDesynchroniseThePipeline) {
  test::run(pool_, cancelled_exec_keeps_pipeline(test::redis_config(port_), prefix_ + "list"));
}

asio::awaitable<void> command_timeout_then_recovery(RedisConfig cfg, std::string key) {
  cfg.command_timeout = 200ms;
  RedisConnection c(co_await asio::this_coro::executor, cfg);
  const auto started = steady::now();
  bool timed_out = false;
  try {
    (void)co_await c.exec(cmd("BLPOP", key, "2"));
  } catch (const boost::system::system_error& e) {
    timed_out = e.code() == RedisErrc::command_timeout;
  }
  const auto waited = steady::now() - started;
  EXPECT_TRUE(timed_out);
  EXPECT_GE(waited, 190ms);
  EXPECT_LT(waited, 1s);
  // The next call reconnects at once (the connection had been healthy).
  const RedisReply pong = co_await c.exec(cmd("PING"));
  EXPECT_EQ(pong.str, "PONG");
  co_await c.close();
  bool closed = false;
  try {
    (void)co_await c.exec(cmd("PING"));
  } catch (const boost::system::system_error& e) {
    closed = e.code() == RedisErrc::closed;
  }
  EXPECT_TRUE(closed);
}

TEST_F(RedisTest, CommandTimeoutResetsTheConnectionWhichThenRecovers) {
  test::run(pool_, command_timeout_then_recovery(test::redis_config(port_), prefix_ + "empty"));
}

/// Against a server with `--requirepass s3cret`: password AUTH + SELECT, an ACL user, a
/// wrong password (handshake_failed, not leaked), no AUTH (NOAUTH replies). `scheme` is
/// "redis" or "rediss"; `base` holds the port (and the TLS options).
asio::awaitable<void> auth_and_select(RedisConfig base, std::string scheme) {
  auto ex = co_await asio::this_coro::executor;
  const std::string p = std::to_string(base.port);
  const std::string url = scheme + "://";

  RedisConnection admin(ex, parse_redis_url(url + ":s3cret@127.0.0.1:" + p + "/5", base));
  const RedisReply info = co_await admin.exec(cmd("CLIENT", "INFO"));
  EXPECT_NE(info.str.find(" db=5 "), std::string::npos) << info.str;
  const RedisReply acl =
      co_await admin.exec(cmd("ACL", "SETUSER", "alice", "on", ">pw2", "~*", "&*", "+@all"));
  EXPECT_EQ(acl.str, "OK");

  RedisConnection alice(ex, parse_redis_url(url + "alice:pw2@127.0.0.1:" + p, base));
  const RedisReply who = co_await alice.exec(cmd("ACL", "WHOAMI"));
  EXPECT_EQ(who.str, "alice");

  RedisConnection wrong(ex, parse_redis_url(url + ":wrong-password@127.0.0.1:" + p, base));
  std::string failure;
  try {
    (void)co_await wrong.exec(cmd("PING"));
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), make_error_code(RedisErrc::handshake_failed));
    failure = e.what();
  }
  EXPECT_FALSE(failure.empty());
  EXPECT_EQ(failure.find("wrong-password"), std::string::npos) << "password leaked: " << failure;

  RedisConnection anonymous(ex, base);
  const RedisReply noauth = co_await anonymous.exec(cmd("PING"));
  EXPECT_TRUE(noauth.is_error("NOAUTH")) << noauth.str;  // error replies are returned

  co_await admin.close();
  co_await alice.close();
  co_await wrong.close();
  co_await anonymous.close();
}

TEST(RedisPrivateServer, AuthWithPasswordOrAclUserAndSelect) {
  if (!test::RedisProcess::available()) LLMQ_SKIP_OR_FAIL("redis-server is not installed");
  test::RedisProcess server(test::free_port(), cmd("--requirepass", "s3cret"));
  server.start();
  asio::thread_pool pool(2);
  test::run(pool, auth_and_select(test::redis_config(server.port()), "redis"));
}

// --- RedisUserRateLimitStore -----------------------------------------------------------

/// Two stores (two "processes") deciding concurrently for 5 users, 120 attempts each:
/// exactly 20 per user are admitted, every decision by Redis.
void expect_two_stores_admit_exactly_max(asio::thread_pool& pool,
                                         const RedisRateLimitStoreOptions& options_a,
                                         const RedisRateLimitStoreOptions& options_b) {
  auto a = std::make_shared<RedisUserRateLimitStore>(pool.get_executor(), options_a);
  auto b = std::make_shared<RedisUserRateLimitStore>(pool.get_executor(), options_b);
  const UserLimits lim = limits(20, 30s);
  constexpr int users = 5;
  constexpr int attempts_per_store = 60;
  std::vector<std::pair<int, std::future<RateLimitDecision>>> futures;
  for (int i = 0; i < attempts_per_store; ++i) {
    for (int u = 0; u < users; ++u) {
      const std::string user = "user-" + std::to_string(u);
      futures.emplace_back(u, asio::co_spawn(pool, acquire_one(a, user, lim), asio::use_future));
      futures.emplace_back(u, asio::co_spawn(pool, acquire_one(b, user, lim), asio::use_future));
    }
  }
  std::map<int, int> admitted;
  for (auto& [u, f] : futures) {
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    const RateLimitDecision d = f.get();
    if (d.allowed) {
      ++admitted[u];
      EXPECT_GE(d.remaining, 0);
      EXPECT_LT(d.remaining, 20);
    } else {
      EXPECT_GT(d.retry_after, 0ns);
      EXPECT_LE(d.retry_after, 30s);
    }
  }
  for (int u = 0; u < users; ++u) EXPECT_EQ(admitted[u], 20) << "user-" << u;
  const auto ca = a->counters();
  const auto cb = b->counters();
  EXPECT_EQ(ca.redis_decisions + cb.redis_decisions,
            static_cast<std::uint64_t>(2 * users * attempts_per_store));
  EXPECT_EQ(ca.errors + cb.errors, 0U);
  test::run(pool, a->close());
  test::run(pool, b->close());
}

TEST_F(RedisTest, TwoStoresSharingRedisAdmitExactlyMaxPerUserUnderConcurrentLoad) {
  const RedisRateLimitStoreOptions o =
      store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed);
  expect_two_stores_admit_exactly_max(pool_, o, o);
}

/// The Redis server's clock in microseconds (what the script uses).
asio::awaitable<std::int64_t> server_time_us(RedisConnection& raw) {
  const RedisReply t = co_await raw.exec(cmd("TIME"));
  co_return std::stoll(t.elements.at(0).str) * 1'000'000 + std::stoll(t.elements.at(1).str);
}

asio::awaitable<void> exact_retry_after(std::shared_ptr<RedisUserRateLimitStore> store,
                                        RedisConfig cfg) {
  RedisConnection raw(co_await asio::this_coro::executor, cfg);
  const UserLimits lim = limits(2, 2000ms);
  const std::string user = "retry-user";
  const RateLimitDecision d1 = co_await store->acquire(user, lim);
  const RateLimitDecision d2 = co_await store->acquire(user, lim);
  EXPECT_TRUE(d1.allowed);
  EXPECT_EQ(d1.remaining, 1);
  EXPECT_TRUE(d2.allowed);
  EXPECT_EQ(d2.remaining, 0);

  const std::int64_t before = co_await server_time_us(raw);
  const RateLimitDecision d3 = co_await store->acquire(user, lim);
  const std::int64_t after = co_await server_time_us(raw);
  EXPECT_FALSE(d3.allowed);
  EXPECT_EQ(d3.remaining, 0);

  const RedisReply oldest =
      co_await raw.exec(cmd("ZRANGE", store->key_for(user), "0", "0", "WITHSCORES"));
  EXPECT_EQ(oldest.elements.size(), 2U);
  const std::int64_t oldest_us = std::stoll(oldest.elements.at(1).str);
  const std::int64_t retry_us =
      std::chrono::duration_cast<std::chrono::microseconds>(d3.retry_after).count();
  // Exact: the oldest entry's score + window - the script's "now" (between before/after).
  EXPECT_GE(retry_us, oldest_us + 2'000'000 - after);
  EXPECT_LE(retry_us, oldest_us + 2'000'000 - before);
  EXPECT_GT(retry_us, 1'500'000);  // the two admissions were just now

  const RedisReply card = co_await raw.exec(cmd("ZCARD", store->key_for(user)));
  EXPECT_EQ(card.integer, 2) << "a refused request must not be recorded";

  // Waiting exactly that long is enough.
  asio::steady_timer wait(co_await asio::this_coro::executor,
                          std::chrono::duration_cast<steady::duration>(d3.retry_after) + 5ms);
  co_await wait.async_wait(asio::use_awaitable);
  const RateLimitDecision d4 = co_await store->acquire(user, lim);
  EXPECT_TRUE(d4.allowed);
  co_await raw.close();
}

TEST_F(RedisTest, RetryAfterIsExact) {
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  test::run(pool_, exact_retry_after(store, test::redis_config(port_)));
  EXPECT_EQ(store->counters().errors, 0U);
}

asio::awaitable<void> keys_have_ttl(std::shared_ptr<RedisUserRateLimitStore> store, RedisConfig cfg,
                                    std::string prefix) {
  RedisConnection raw(co_await asio::this_coro::executor, cfg);
  const UserLimits lim = limits(3, 10s);
  for (int i = 0; i < 4; ++i) (void)co_await store->acquire("alice", lim);
  const std::string key = prefix + "{alice}";
  EXPECT_EQ(store->key_for("alice"), key);
  const RedisReply type = co_await raw.exec(cmd("TYPE", key));
  EXPECT_EQ(type.str, "zset");
  const RedisReply card = co_await raw.exec(cmd("ZCARD", key));
  EXPECT_EQ(card.integer, 3);
  const RedisReply pttl = co_await raw.exec(cmd("PTTL", key));
  EXPECT_GT(pttl.integer, 9000);
  EXPECT_LE(pttl.integer, 10000);
  const RedisReply bare = co_await raw.exec(cmd("EXISTS", "alice"));
  EXPECT_EQ(bare.integer, 0) << "keys must be namespaced";
  co_await raw.close();
}

TEST_F(RedisTest, KeysArePrefixedHashTaggedAndExpire) {
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  test::run(pool_, keys_have_ttl(store, test::redis_config(port_), prefix_));
}

std::vector<std::string> odd_user_ids() {
  return std::vector<std::string>{std::string(),
                                  std::string(" "),
                                  std::string("a}b{c"),
                                  std::string("}{"),
                                  std::string("{x}"),
                                  std::string("\0\xff\r\n", 4),
                                  std::string("*1\r\n$4\r\nPING\r\n"),
                                  std::string("\xC3\xBCn\xC3\xAF\xC3\xA7\xC3\xB8\x64\xC3\xA9"),
                                  std::string("'; return {1,1,0} --"),
                                  std::string("a"),
                                  std::string("a}"),
                                  std::string(2000, 'x')};
}

asio::awaitable<void> odd_ids_are_limited(std::shared_ptr<RedisUserRateLimitStore> store,
                                          RedisConfig cfg) {
  RedisConnection raw(co_await asio::this_coro::executor, cfg);
  const UserLimits lim = limits(3, 10s);
  for (const std::string& id : odd_user_ids()) {
    int admitted = 0;
    for (int i = 0; i < 4; ++i) {
      const RateLimitDecision d = co_await store->acquire(id, lim);
      if (d.allowed) ++admitted;
    }
    EXPECT_EQ(admitted, 3) << "user id of " << id.size() << " bytes";
    const RedisReply card = co_await raw.exec(cmd("ZCARD", store->key_for(id)));
    EXPECT_EQ(card.integer, 3) << "user id of " << id.size() << " bytes";
  }
  co_await raw.close();
}

TEST_F(RedisTest, ArbitraryUserIdBytesAreSafe) {
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  test::run(pool_, odd_ids_are_limited(store, test::redis_config(port_)));
  EXPECT_EQ(store->counters().errors, 0U);
}

asio::awaitable<void> noscript_fallback(std::shared_ptr<RedisUserRateLimitStore> store,
                                        RedisConfig cfg) {
  RedisConnection raw(co_await asio::this_coro::executor, cfg);
  const RedisReply loaded =
      co_await raw.exec(cmd("SCRIPT", "LOAD", RedisUserRateLimitStore::script()));
  EXPECT_EQ(loaded.str, RedisUserRateLimitStore::script_sha1());
  (void)co_await raw.exec(cmd("SCRIPT", "FLUSH"));
  const RateLimitDecision d = co_await store->acquire("bob", limits(5, 10s));
  EXPECT_TRUE(d.allowed);
  const RedisReply exists =
      co_await raw.exec(cmd("SCRIPT", "EXISTS", RedisUserRateLimitStore::script_sha1()));
  EXPECT_EQ(exists.elements.size(), 1U);
  if (!exists.elements.empty()) {
    EXPECT_EQ(exists.elements[0].integer, 1) << "EVAL caches it";
  }
  co_await raw.close();
}

TEST_F(RedisTest, ScriptShaMatchesRedisAndNoscriptFallsBackToEval) {
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  test::run(pool_, noscript_fallback(store, test::redis_config(port_)));
  EXPECT_EQ(store->counters().errors, 0U);
  EXPECT_EQ(store->counters().redis_decisions, 1U);
}

// --- outages ---------------------------------------------------------------------------

RedisRateLimitStoreOptions outage_options(std::uint16_t port, RateLimitFailurePolicy policy) {
  RedisRateLimitStoreOptions o;
  o.url = url_for(port);
  o.key_prefix = "llmqtest:outage:";
  o.connect_timeout = 300ms;
  o.command_timeout = 300ms;
  o.reconnect_backoff_initial = 50ms;
  o.reconnect_backoff_max = 200ms;
  o.failure_policy = policy;
  o.unavailable_retry_after = 750ms;
  return o;
}

struct OutageResult {
  int open_admitted = 0;
  int closed_unavailable = 0;
  steady::duration slowest{0};
};

asio::awaitable<OutageResult> during_outage(std::shared_ptr<RedisUserRateLimitStore> open,
                                            std::shared_ptr<RedisUserRateLimitStore> closed) {
  OutageResult r;
  const UserLimits lim = limits(3, 60s);
  for (int i = 0; i < 10; ++i) {
    const auto t0 = steady::now();
    const RateLimitDecision d = co_await open->acquire("w", lim);
    r.slowest = std::max(r.slowest, steady::now() - t0);
    if (d.allowed) ++r.open_admitted;
  }
  for (int i = 0; i < 10; ++i) {
    const auto t0 = steady::now();
    try {
      (void)co_await closed->acquire("w", lim);
    } catch (const RateLimitStoreUnavailableError& e) {
      EXPECT_EQ(e.http_status(), 503);
      EXPECT_EQ(e.retry_after(), 750ms);
      ++r.closed_unavailable;
    }
    r.slowest = std::max(r.slowest, steady::now() - t0);
  }
  co_return r;
}

/// Retries until Redis decides again (both stores), at most `limit`.
asio::awaitable<bool> until_recovered(std::shared_ptr<RedisUserRateLimitStore> open,
                                      std::shared_ptr<RedisUserRateLimitStore> closed,
                                      steady::duration limit) {
  auto ex = co_await asio::this_coro::executor;
  const auto deadline = steady::now() + limit;
  const UserLimits lim = limits(100, 60s);
  const std::uint64_t open_before = open->counters().redis_decisions;
  bool open_ok = false;
  bool closed_ok = false;
  while (steady::now() < deadline && !(open_ok && closed_ok)) {
    if (!open_ok) {
      (void)co_await open->acquire("x", lim);
      open_ok = open->counters().redis_decisions > open_before;
    }
    if (!closed_ok) {
      try {
        (void)co_await closed->acquire("x", lim);
        closed_ok = true;
      } catch (const RateLimitStoreUnavailableError&) {
      }
    }
    asio::steady_timer pause(ex, 50ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
  co_return open_ok&& closed_ok;
}

/// A fail_open and a fail_closed store on `server` (started): both decide through Redis;
/// after a crash, decisions are bounded and follow the policy; after a restart on the same
/// port both reach Redis again. `options` is outage_options() for that server (policy
/// replaced); `raw` reaches it directly.
void expect_outage_policies_and_recovery(test::RedisProcess& server,
                                         RedisRateLimitStoreOptions options, RedisConfig raw) {
  asio::thread_pool pool(2);
  options.failure_policy = RateLimitFailurePolicy::fail_open;
  auto open = std::make_shared<RedisUserRateLimitStore>(pool.get_executor(), options);
  options.failure_policy = RateLimitFailurePolicy::fail_closed;
  auto closed = std::make_shared<RedisUserRateLimitStore>(pool.get_executor(), options);
  const UserLimits lim = limits(3, 60s);

  EXPECT_TRUE(test::run(pool, acquire_one(open, "u", lim)).allowed);
  EXPECT_TRUE(test::run(pool, acquire_one(closed, "v", lim)).allowed);
  EXPECT_EQ(open->counters().redis_decisions, 1U);
  EXPECT_EQ(closed->counters().redis_decisions, 1U);

  server.kill();  // mid-run crash: connections reset, port refuses
  const auto t0 = steady::now();
  const OutageResult r = test::run(pool, during_outage(open, closed), 15s);
  EXPECT_LT(steady::now() - t0, 8s);
  EXPECT_LT(r.slowest, 1500ms) << "each decision is bounded by the timeouts";
  EXPECT_EQ(r.open_admitted, 3) << "fail_open limits locally";
  EXPECT_EQ(r.closed_unavailable, 10);
  EXPECT_EQ(open->counters().fail_open_decisions, 10U);
  EXPECT_EQ(open->counters().errors, 10U);
  EXPECT_EQ(closed->counters().errors, 10U);
  EXPECT_EQ(closed->counters().fail_open_decisions, 0U);

  server.start();  // same port, empty
  EXPECT_TRUE(test::run(pool, until_recovered(open, closed, 5s), 15s))
      << "both stores must reach Redis again after it restarts";
  EXPECT_EQ(test::run(pool, test::redis_exec(raw, cmd("EXISTS", open->key_for("x")))).integer, 1);
  test::run(pool, open->close());
  test::run(pool, closed->close());
}

TEST(RedisOutage, FailOpenDecidesLocallyFailClosedThrows503NothingHangsAndServiceResumes) {
  if (!test::RedisProcess::available()) LLMQ_SKIP_OR_FAIL("redis-server is not installed");
  test::RedisProcess server(test::free_port());
  server.start();
  expect_outage_policies_and_recovery(
      server, outage_options(server.port(), RateLimitFailurePolicy::fail_open),
      test::redis_config(server.port()));
}

asio::awaitable<steady::duration> timed_acquire(std::shared_ptr<RedisUserRateLimitStore> store) {
  const auto t0 = steady::now();
  bool unavailable = false;
  try {
    (void)co_await store->acquire("u", limits(3, 1s));
  } catch (const RateLimitStoreUnavailableError&) {
    unavailable = true;
  }
  EXPECT_TRUE(unavailable);
  co_return steady::now() - t0;
}

TEST(RedisOutage, ServerThatNeverAnswersIsBoundedByTheCommandTimeout) {
  test::TcpProxy black_hole(std::nullopt);  // accepts, reads, never answers
  asio::thread_pool pool(2);
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool.get_executor(), outage_options(black_hole.port(), RateLimitFailurePolicy::fail_closed));
  for (int i = 0; i < 2; ++i) {
    const steady::duration took = test::run(pool, timed_acquire(store), 10s);
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 1500ms);
  }
  EXPECT_EQ(store->counters().errors, 2U);
  test::run(pool, store->close());
}

TEST(RedisOutage, UnreachableServerFailsFastWhileBackingOff) {
  asio::thread_pool pool(2);
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool.get_executor(), outage_options(test::free_port(), RateLimitFailurePolicy::fail_closed));
  const steady::duration first = test::run(pool, timed_acquire(store), 10s);
  const steady::duration second = test::run(pool, timed_acquire(store), 10s);
  EXPECT_LT(first, 1s);
  EXPECT_LT(second, 50ms) << "during the backoff no connection is attempted";
  test::run(pool, store->close());
}

// --- cluster ---------------------------------------------------------------------------

class RedisClusterTest : public test::RedisClusterFixture {
 protected:
  RedisClusterTest() : RedisClusterFixture(":") {}
};

asio::awaitable<std::vector<std::int64_t>> zcards_and_ttls(RedisConfig cfg,
                                                           std::vector<std::string> keys) {
  RedisClient client(co_await asio::this_coro::executor, cfg);
  std::vector<std::int64_t> out;
  for (const std::string& k : keys) {
    out.push_back((co_await client.exec_for_key(k, cmd("ZCARD", k))).integer);
    out.push_back((co_await client.exec_for_key(k, cmd("PTTL", k))).integer);
  }
  co_await client.close();
  co_return out;
}

TEST_F(RedisClusterTest, UsersAcrossSlotsAreLimitedExactlyThroughRedirects) {
  auto a = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  auto b = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  const UserLimits lim = limits(4, 30s);
  constexpr int users = 200;
  std::vector<std::string> keys;
  std::set<std::uint16_t> slots;
  std::vector<std::pair<int, std::future<RateLimitDecision>>> futures;
  for (int u = 0; u < users; ++u) {
    const std::string user = prefix_ + "user-" + std::to_string(u);
    keys.push_back(a->key_for(user));
    slots.insert(detail::redis_key_slot(keys.back()));
    for (int i = 0; i < 3; ++i) {
      futures.emplace_back(u, asio::co_spawn(pool_, acquire_one(a, user, lim), asio::use_future));
      futures.emplace_back(u, asio::co_spawn(pool_, acquire_one(b, user, lim), asio::use_future));
    }
  }
  EXPECT_GT(slots.size(), 150U) << "users should spread over many slots";
  std::map<int, int> admitted;
  int failures = 0;
  for (auto& [u, f] : futures) {
    ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
    try {
      if (f.get().allowed) ++admitted[u];
    } catch (const std::exception& e) {
      if (++failures < 5) ADD_FAILURE() << e.what();
    }
  }
  EXPECT_EQ(failures, 0);
  for (int u = 0; u < users; ++u) EXPECT_EQ(admitted[u], 4) << "user " << u;
  EXPECT_GT(a->client().redirects(), 0U) << "2/3 of the slots live on other nodes";
  EXPECT_EQ(a->client().node_count(), 3U);
  EXPECT_EQ(b->client().node_count(), 3U);

  const std::vector<std::int64_t> facts =
      test::run(pool_, zcards_and_ttls(test::redis_config(port_), keys), 30s);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(facts[2 * i], 4) << keys[i];
    EXPECT_GT(facts[2 * i + 1], 0) << keys[i];
  }
  test::run(pool_, a->close());
  test::run(pool_, b->close());
  test::run(pool_, test::redis_delete_keys(test::redis_config(port_), keys), 30s);
}

struct SlotOwner {
  std::uint16_t port = 0;
  std::string id;
};

/// Node (port and id) owning `slot`, and another node, from CLUSTER SLOTS.
asio::awaitable<std::pair<SlotOwner, SlotOwner>> owner_and_other(RedisConfig cfg,
                                                                 std::uint16_t slot) {
  const RedisReply slots = co_await test::redis_exec(cfg, cmd("CLUSTER", "SLOTS"));
  SlotOwner owner;
  SlotOwner other;
  for (const RedisReply& range : slots.elements) {
    const RedisReply& master = range.elements.at(2);
    SlotOwner n;
    n.port = static_cast<std::uint16_t>(master.elements.at(1).integer);
    n.id = master.elements.at(2).str;
    if (range.elements.at(0).integer <= slot && slot <= range.elements.at(1).integer) {
      owner = n;
    } else if (other.id.empty()) {
      other = n;
    }
  }
  co_return std::make_pair(owner, other);
}

asio::awaitable<void> ask_during_migration(std::shared_ptr<RedisUserRateLimitStore> store,
                                           RedisConfig seed, std::string user, std::uint16_t slot) {
  auto ex = co_await asio::this_coro::executor;
  const auto [owner, other] = co_await owner_and_other(seed, slot);
  EXPECT_FALSE(owner.id.empty());
  EXPECT_FALSE(other.id.empty());
  RedisConnection source(ex, test::redis_config(owner.port));
  RedisConnection target(ex, test::redis_config(other.port));
  const std::string s = std::to_string(slot);
  const std::string key = store->key_for(user);
  EXPECT_EQ((co_await target.exec(cmd("CLUSTER", "SETSLOT", s, "IMPORTING", owner.id))).str, "OK");
  EXPECT_EQ((co_await source.exec(cmd("CLUSTER", "SETSLOT", s, "MIGRATING", other.id))).str, "OK");
  std::string failure;
  try {
    const std::uint64_t before = store->client().redirects();
    // The key does not exist on the migrating source: it answers -ASK.
    const RateLimitDecision d = co_await store->acquire(user, limits(2, 10s));
    EXPECT_TRUE(d.allowed);
    EXPECT_GT(store->client().redirects(), before);
    std::vector<std::vector<std::string>> check;
    check.push_back(cmd("ASKING"));
    check.push_back(cmd("ZCARD", key));
    const std::vector<RedisReply> on_target = co_await target.exec_pipeline(check);
    EXPECT_EQ(on_target.at(1).integer, 1) << "the entry was written on the importing node";
    std::vector<std::vector<std::string>> del;
    del.push_back(cmd("ASKING"));
    del.push_back(cmd("DEL", key));
    (void)co_await target.exec_pipeline(del);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  // Always restore the slot.
  (void)co_await source.exec(cmd("CLUSTER", "SETSLOT", s, "STABLE"));
  (void)co_await target.exec(cmd("CLUSTER", "SETSLOT", s, "STABLE"));
  co_await source.close();
  co_await target.close();
  EXPECT_TRUE(failure.empty()) << failure;
}

TEST_F(RedisClusterTest, FollowsAskDuringSlotMigration) {
  auto store = std::make_shared<RedisUserRateLimitStore>(
      pool_.get_executor(), store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed));
  // A user whose slot no other test's users use (their tags are "<prefix>user-<n>", random).
  std::string user;
  for (int i = 0;; ++i) {
    user = prefix_ + "ask-" + std::to_string(i);
    if (detail::redis_key_slot(store->key_for(user)) % 97 == 13) break;
  }
  const std::uint16_t slot = detail::redis_key_slot(store->key_for(user));
  test::run(pool_, ask_during_migration(store, test::redis_config(port_), user, slot), 30s);
  EXPECT_EQ(store->counters().errors, 0U);
  test::run(pool_, store->close());
}

// --- TLS (rediss://) ---------------------------------------------------------------------
// The shared TLS-only server of scripts/services.sh (port 6392, no client certificate
// required) and private ones started with the same test CA.

class RedisTlsTest : public test::RedisServerFixture {
 protected:
  RedisTlsTest() : RedisServerFixture("tls", ":", 2, true) {}
};

/// rediss://127.0.0.1:port, trusting the test CA through the url's ca_file parameter.
std::string tls_url_for(std::uint16_t port) {
  return "rediss://127.0.0.1:" + std::to_string(port) + "?ca_file=" + test::tls_file("ca.crt");
}

/// What one call did: the reply's text, or the error it threw; and how long it took.
struct CallOutcome {
  std::string reply;
  boost::system::error_code code;
  std::string what;
  steady::duration took{0};
};

/// `n` PINGs, one after the other, on one fresh connection.
asio::awaitable<std::vector<CallOutcome>> pings(RedisConfig cfg, int n) {
  RedisConnection c(co_await asio::this_coro::executor, std::move(cfg));
  std::vector<CallOutcome> out;
  for (int i = 0; i < n; ++i) {
    CallOutcome o;
    const auto t0 = steady::now();
    try {
      o.reply = (co_await c.exec(cmd("PING"))).str;
    } catch (const boost::system::system_error& e) {
      o.code = e.code();
      o.what = e.what();
    }
    o.took = steady::now() - t0;
    out.push_back(std::move(o));
  }
  co_await c.close();
  co_return out;
}

CallOutcome ping_once(asio::thread_pool& pool, RedisConfig cfg) {
  return test::run(pool, pings(std::move(cfg), 1), 10s).at(0);
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

TEST_F(RedisTlsTest, ConcurrentExecsArePipelinedAndAnsweredInOrder) {
  expect_pipelined_in_order(pool_, config(), prefix_ + "counter");
}

TEST_F(RedisTlsTest, TwoStoresAdmitExactlyMaxPerUserUnderConcurrentLoad) {
  // One store trusts the CA through the url, the other through its options.
  RedisRateLimitStoreOptions a = store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed);
  a.url = tls_url_for(port_);
  RedisRateLimitStoreOptions b = a;
  b.url = "rediss://127.0.0.1:" + std::to_string(port_);
  b.tls.ca_file = test::tls_file("ca.crt");
  expect_two_stores_admit_exactly_max(pool_, a, b);
}

TEST_F(RedisTlsTest, RetryAfterIsExact) {
  RedisRateLimitStoreOptions o = store_options(port_, prefix_, RateLimitFailurePolicy::fail_closed);
  o.url = tls_url_for(port_);
  auto store = std::make_shared<RedisUserRateLimitStore>(pool_.get_executor(), o);
  test::run(pool_, exact_retry_after(store, config()));
  EXPECT_EQ(store->counters().errors, 0U);
  EXPECT_EQ(store->counters().redis_decisions, 4U);
}

TEST_F(RedisTlsTest, UntrustedCertificateFailsClearlyAndBacksOffUnlessVerificationIsOff) {
  RedisConfig cfg = config();
  cfg.tls.ca_file.clear();  // the system trust store, which does not hold the test CA
  cfg.reconnect_backoff_initial = 10s;
  cfg.reconnect_backoff_max = 10s;
  const std::vector<CallOutcome> calls = test::run(pool_, pings(cfg, 2), 10s);
  EXPECT_EQ(calls[0].code, make_error_code(RedisErrc::tls_handshake_failed)) << calls[0].what;
  EXPECT_TRUE(contains(calls[0].what, "TLS")) << calls[0].what;
  EXPECT_TRUE(contains(calls[0].what, "certificate verify failed")) << calls[0].what;
  EXPECT_LT(calls[0].took, 1s);
  // The failed handshake counts as a failed connect: no new attempt during the backoff,
  // and the reason is still in the message.
  EXPECT_EQ(calls[1].code, make_error_code(RedisErrc::not_connected)) << calls[1].what;
  EXPECT_TRUE(contains(calls[1].what, "certificate verify failed")) << calls[1].what;
  EXPECT_LT(calls[1].took, 50ms);

  cfg.tls.verify = false;  // the testing opt-out: any certificate is accepted
  const CallOutcome unverified = ping_once(pool_, cfg);
  EXPECT_EQ(unverified.reply, "PONG") << unverified.what;
}

TEST_F(RedisTlsTest, ServerNameIsVerifiedAgainstTheCertificate) {
  RedisConfig by_name = config();
  by_name.host = "localhost";  // in the certificate as DNS:localhost
  const CallOutcome named = ping_once(pool_, by_name);
  EXPECT_EQ(named.reply, "PONG") << named.what;

  RedisConfig sni = config();
  sni.tls.server_name = "localhost";
  const CallOutcome with_sni = ping_once(pool_, sni);
  EXPECT_EQ(with_sni.reply, "PONG") << with_sni.what;

  RedisConfig wrong = config();
  wrong.tls.server_name = "wrong-host.invalid";  // not in the certificate
  const CallOutcome mismatch = ping_once(pool_, wrong);
  EXPECT_EQ(mismatch.code, make_error_code(RedisErrc::tls_handshake_failed)) << mismatch.what;
  EXPECT_TRUE(contains(mismatch.what, "hostname mismatch")) << mismatch.what;
  EXPECT_LT(mismatch.took, 1s);

  wrong.tls.verify = false;
  EXPECT_EQ(ping_once(pool_, wrong).reply, "PONG");
}

TEST_F(RedisTlsTest, StoresFailOpenOrClosedWhenTheCertificateDoesNotVerify) {
  RedisRateLimitStoreOptions o = outage_options(port_, RateLimitFailurePolicy::fail_open);
  o.url = "rediss://127.0.0.1:" + std::to_string(port_);  // system trust store: untrusted
  o.key_prefix = prefix_;
  auto open = std::make_shared<RedisUserRateLimitStore>(pool_.get_executor(), o);
  o.failure_policy = RateLimitFailurePolicy::fail_closed;
  auto closed = std::make_shared<RedisUserRateLimitStore>(pool_.get_executor(), o);
  const auto t0 = steady::now();
  const OutageResult r = test::run(pool_, during_outage(open, closed), 15s);
  EXPECT_LT(steady::now() - t0, 8s);
  EXPECT_LT(r.slowest, 1500ms);
  EXPECT_EQ(r.open_admitted, 3) << "fail_open limits locally";
  EXPECT_EQ(r.closed_unavailable, 10);
  EXPECT_EQ(open->counters().fail_open_decisions, 10U);
  EXPECT_EQ(open->counters().redis_decisions, 0U);
  std::string why;
  try {
    (void)test::run(pool_, acquire_one(closed, "w", limits(3, 60s)));
  } catch (const RateLimitStoreUnavailableError& e) {
    why = e.what();
  }
  EXPECT_TRUE(contains(why, "certificate verify failed")) << why;
  test::run(pool_, open->close());
  test::run(pool_, closed->close());
}

TEST_F(RedisTlsTest, PlainRedisUrlAgainstTheTlsServerFailsBounded) {
  RedisConfig plain = test::redis_config(port_);
  plain.command_timeout = 500ms;
  const CallOutcome o = ping_once(pool_, plain);
  EXPECT_TRUE(o.reply.empty());
  EXPECT_TRUE(o.code == make_error_code(RedisErrc::connection_lost) ||
              o.code == make_error_code(RedisErrc::command_timeout))
      << o.what;
  EXPECT_LT(o.took, 1500ms);
}

TEST_F(RedisTest, RedissAgainstAPlainServerFailsWithinTheConnectTimeout) {
  RedisConfig tls = config();
  tls.use_tls = true;
  tls.tls.verify = false;  // not even a certificate arrives
  tls.connect_timeout = 500ms;
  const CallOutcome o = ping_once(pool_, tls);
  EXPECT_TRUE(o.reply.empty());
  EXPECT_TRUE(o.code == make_error_code(RedisErrc::tls_handshake_failed) ||
              o.code == make_error_code(RedisErrc::connect_timeout))
      << o.what;
  EXPECT_LT(o.took, 1500ms);
}

/// Skips (or fails) a test that starts its own TLS redis-server when it cannot.
#define LLMQ_REQUIRE_PRIVATE_TLS_SERVER()                                                     \
  do {                                                                                        \
    if (!test::RedisProcess::available()) LLMQ_SKIP_OR_FAIL("redis-server is not installed"); \
    if (!test::tls_files_present()) LLMQ_SKIP_OR_FAIL(test::tls_missing_message());           \
  } while (false)

TEST(RedisTlsPrivateServer, CertificateWithoutTheIpAddressIsRejected) {
  LLMQ_REQUIRE_PRIVATE_TLS_SERVER();
  const std::uint16_t port = test::free_port();
  test::RedisProcess server(port, test::redis_tls_server_args(port, "wrong-host"));
  server.start();
  asio::thread_pool pool(2);
  const CallOutcome by_ip = ping_once(pool, test::redis_tls_config(port));
  EXPECT_EQ(by_ip.code, make_error_code(RedisErrc::tls_handshake_failed)) << by_ip.what;
  EXPECT_TRUE(contains(by_ip.what, "IP address mismatch")) << by_ip.what;
  // The chain is fine: the name in the certificate is accepted.
  RedisConfig named = test::redis_tls_config(port);
  named.tls.server_name = "wrong-host.invalid";
  const CallOutcome ok = ping_once(pool, named);
  EXPECT_EQ(ok.reply, "PONG") << ok.what;
}

TEST(RedisTlsPrivateServer, MutualTlsWithAuthAndSelect) {
  LLMQ_REQUIRE_PRIVATE_TLS_SERVER();
  const std::uint16_t port = test::free_port();
  std::vector<std::string> args = test::redis_tls_server_args(port, "server", true);
  args.emplace_back("--requirepass");
  args.emplace_back("s3cret");
  test::RedisProcess server(port, args);
  server.start();
  asio::thread_pool pool(2);

  // Without a client certificate the server refuses (with TLS 1.3 only after the
  // handshake; connecting includes a round trip, so it is still a handshake failure).
  RedisConfig anonymous = parse_redis_url("rediss://:s3cret@127.0.0.1:" + std::to_string(port),
                                          test::redis_tls_config(port));
  anonymous.reconnect_backoff_initial = 10s;
  const std::vector<CallOutcome> refused = test::run(pool, pings(anonymous, 2), 10s);
  EXPECT_EQ(refused[0].code, make_error_code(RedisErrc::tls_handshake_failed)) << refused[0].what;
  EXPECT_TRUE(contains(refused[0].what, "TLS")) << refused[0].what;
  EXPECT_LT(refused[0].took, 1s);
  EXPECT_EQ(refused[1].code, make_error_code(RedisErrc::not_connected)) << "backoff applies";
  for (const CallOutcome& o : refused)
    EXPECT_FALSE(contains(o.what, "s3cret")) << "password leaked: " << o.what;

  // With it: AUTH (password and ACL user), SELECT, wrong password, NOAUTH, over TLS.
  RedisConfig with_cert = test::redis_tls_config(port);
  with_cert.tls.cert_file = test::tls_file("client.crt");
  with_cert.tls.key_file = test::tls_file("client.key");
  test::run(pool, auth_and_select(with_cert, "rediss"));

  // A key that does not belong to the certificate is refused when loading.
  RedisConfig mismatched = with_cert;
  mismatched.tls.key_file = test::tls_file("server.key");
  EXPECT_THROW(RedisConnection(pool.get_executor(), mismatched), ConfigError);
}

TEST(RedisTlsPrivateServer, StoresFollowTheirPolicyDuringAnOutageAndResumeAfterARestart) {
  LLMQ_REQUIRE_PRIVATE_TLS_SERVER();
  const std::uint16_t port = test::free_port();
  test::RedisProcess server(port, test::redis_tls_server_args(port));
  server.start();
  RedisRateLimitStoreOptions o = outage_options(port, RateLimitFailurePolicy::fail_open);
  o.url = tls_url_for(port);
  expect_outage_policies_and_recovery(server, o, test::redis_tls_config(port));
}

// A two-node Redis Cluster whose nodes speak TLS only (clients and cluster bus): redirects
// lead to the other node over TLS too.

/// True if nothing listens on 127.0.0.1:port (a bind succeeds).
bool port_free(std::uint16_t port) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  const asio::ip::tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.bind(ep, ec);
  return !ec;
}

/// A free port whose cluster bus port (+10000) is free too.
std::uint16_t cluster_node_port() {
  for (int i = 0; i < 200; ++i) {
    const std::uint16_t p = test::free_port();
    if (p <= 55535 && port_free(static_cast<std::uint16_t>(p + 10000))) return p;
  }
  throw std::runtime_error("no port pair (p, p + 10000) free on 127.0.0.1");
}

std::vector<std::string> tls_cluster_node_args(std::uint16_t port) {
  std::vector<std::string> args = test::redis_tls_server_args(port);
  for (const char* a :
       {"--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-node-timeout", "2000"})
    args.emplace_back(a);
  return args;
}

/// Slots 0-8191 on `a`, the rest on `b`; `a` meets `b`. True once both say the cluster
/// is ok (within 20 s).
asio::awaitable<bool> form_two_node_cluster(RedisConfig a, RedisConfig b) {
  auto ex = co_await asio::this_coro::executor;
  const RedisReply ra = co_await test::redis_exec(a, cmd("CLUSTER", "ADDSLOTSRANGE", "0", "8191"));
  const RedisReply rb =
      co_await test::redis_exec(b, cmd("CLUSTER", "ADDSLOTSRANGE", "8192", "16383"));
  const RedisReply meet =
      co_await test::redis_exec(a, cmd("CLUSTER", "MEET", "127.0.0.1", std::to_string(b.port)));
  EXPECT_EQ(ra.str, "OK");
  EXPECT_EQ(rb.str, "OK");
  EXPECT_EQ(meet.str, "OK");
  const auto deadline = steady::now() + 20s;
  while (steady::now() < deadline) {
    const bool ok_a = co_await test::redis_cluster_ok(a);
    const bool ok_b = co_await test::redis_cluster_ok(b);
    if (ok_a && ok_b) co_return true;
    asio::steady_timer pause(ex, 100ms);
    co_await pause.async_wait(asio::use_awaitable);
  }
  co_return false;
}

TEST(RedisTlsCluster, RedirectsAreFollowedOverTls) {
  LLMQ_REQUIRE_PRIVATE_TLS_SERVER();
  const std::uint16_t pa = cluster_node_port();
  test::RedisProcess a(pa, tls_cluster_node_args(pa));
  a.start();
  const std::uint16_t pb = cluster_node_port();
  test::RedisProcess b(pb, tls_cluster_node_args(pb));
  b.start();
  asio::thread_pool pool(2);
  ASSERT_TRUE(test::run(
      pool, form_two_node_cluster(test::redis_tls_config(pa), test::redis_tls_config(pb)), 30s))
      << "the two TLS nodes did not form a cluster";

  RedisRateLimitStoreOptions o =
      store_options(pa, "llmqtest:tlscluster:", RateLimitFailurePolicy::fail_closed);
  o.url = tls_url_for(pa);
  auto store = std::make_shared<RedisUserRateLimitStore>(pool.get_executor(), o);
  const UserLimits lim = limits(3, 30s);
  constexpr int users = 40;
  std::vector<std::pair<int, std::future<RateLimitDecision>>> futures;
  for (int u = 0; u < users; ++u) {
    for (int i = 0; i < 4; ++i) {
      futures.emplace_back(
          u, asio::co_spawn(pool, acquire_one(store, "user-" + std::to_string(u), lim),
                            asio::use_future));
    }
  }
  std::map<int, int> admitted;
  int failures = 0;
  for (auto& [u, f] : futures) {
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    try {
      if (f.get().allowed) ++admitted[u];
    } catch (const std::exception& e) {
      if (++failures < 5) ADD_FAILURE() << e.what();
    }
  }
  EXPECT_EQ(failures, 0);
  for (int u = 0; u < users; ++u) EXPECT_EQ(admitted[u], 3) << "user " << u;
  EXPECT_GT(store->client().redirects(), 0U) << "half of the slots live on the other node";
  EXPECT_EQ(store->client().node_count(), 2U);
  EXPECT_EQ(store->counters().errors, 0U);
  test::run(pool, store->close());
}

}  // namespace
}  // namespace llmq
