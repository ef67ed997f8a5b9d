#pragma once
/// @file store_test_support.hpp
/// Helpers of llmq_store_tests: running coroutines with a bound, environment, free
/// loopback ports, private redis-server processes and a TCP proxy that can be cut.

#include <llmq/config.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/redis.hpp>

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace llmq::test {

/// Runs `a` on `pool` and waits at most `limit` for it; rethrows its exception.
/// Throws std::runtime_error when it did not finish in time (nothing may hang).
template <class T>
T run(boost::asio::thread_pool& pool, boost::asio::awaitable<T> a,
      std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  std::future<T> f = boost::asio::co_spawn(pool, std::move(a), boost::asio::use_future);
  if (f.wait_for(limit) != std::future_status::ready)
    throw std::runtime_error("test coroutine did not finish within the time limit");
  return f.get();
}

inline void run(boost::asio::thread_pool& pool, boost::asio::awaitable<void> a,
                std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  std::future<void> f = boost::asio::co_spawn(pool, std::move(a), boost::asio::use_future);
  if (f.wait_for(limit) != std::future_status::ready)
    throw std::runtime_error("test coroutine did not finish within the time limit");
  f.get();
}

/// An io_context run by its own thread (one "process" of a test). stop() (also the
/// destructor) lets pending work finish for at most 3 s, then stops and joins the thread.
class IoThread {
 public:
  IoThread() : thread_([this] { io_.run(); }) {}
  ~IoThread() { stop(); }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  boost::asio::io_context::executor_type executor() { return io_.get_executor(); }

  template <class T>
  std::future<T> spawn(boost::asio::awaitable<T> a) {
    return boost::asio::co_spawn(io_, std::move(a), boost::asio::use_future);
  }

  /// Runs `a` on the thread and waits at most `limit` for it.
  template <class T>
  T run(boost::asio::awaitable<T> a, std::chrono::milliseconds limit) {
    std::future<T> f = spawn(std::move(a));
    if (f.wait_for(limit) != std::future_status::ready)
      throw std::runtime_error("coroutine did not finish within the time limit");
    return f.get();
  }

  void stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!io_.stopped() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    io_.stop();
    thread_.join();
  }

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      io_.get_executor()};
  std::thread thread_;  // last: starts after everything else exists
};

/// True when LLMQ_TEST_REQUIRE_SERVICES=1: a missing server fails the test instead of
/// skipping it (for CI, where scripts/services.sh start must have run).
bool services_required();

/// Skips the current test with `message`, or fails it under LLMQ_TEST_REQUIRE_SERVICES=1.
/// Use in a test body or SetUp() only (it returns).
#define LLMQ_SKIP_OR_FAIL(message)           \
  do {                                       \
    if (::llmq::test::services_required()) { \
      FAIL() << message;                     \
    } else {                                 \
      GTEST_SKIP() << message;               \
    }                                        \
  } while (false)

/// The environment variable, or `fallback` when unset or empty.
std::string env_or(const char* name, const std::string& fallback);

/// Port of the shared standalone redis-server (LLMQ_TEST_REDIS_PORT, default 6390).
std::uint16_t redis_port();
/// First port of the 3-node cluster (LLMQ_TEST_REDIS_CLUSTER_PORT, default 7101).
std::uint16_t redis_cluster_port();
/// Port of the shared TLS-only redis-server (LLMQ_TEST_REDIS_TLS_PORT, default 6392).
std::uint16_t redis_tls_port();
/// libpq connection string of the test PostgreSQL (LLMQ_TEST_PG_CONNINFO, default
/// "host=127.0.0.1 port=5433 user=postgres dbname=postgres").
std::string pg_conninfo();

/// True if a TCP connection to 127.0.0.1:port succeeds within `timeout`.
bool tcp_reachable(std::uint16_t port,
                   std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

/// A loopback port nothing listens on right now.
std::uint16_t free_port();

/// Random lowercase hex of `n` characters (unique key prefixes, table names).
std::string random_hex(std::size_t n);

/// A fresh temporary directory, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A redis-server child process of the test on 127.0.0.1:port (no persistence).
class RedisProcess {
 public:
  /// True if `redis-server` can be found on PATH.
  static bool available();
  RedisProcess(std::uint16_t port, std::vector<std::string> extra_args = {});
  ~RedisProcess();
  RedisProcess(const RedisProcess&) = delete;
  RedisProcess& operator=(const RedisProcess&) = delete;

  /// Starts it and waits (up to 10 s) until it accepts connections. Throws on failure.
  void start();
  /// SIGKILL and reap (a crash, not a clean shutdown).
  void kill();
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  std::uint16_t port_;
  std::vector<std::string> extra_;
  TempDir dir_;
  pid_t pid_ = -1;
};

/// A TCP forwarder on 127.0.0.1 (its own thread) to 127.0.0.1:target, or, without a
/// target, a black hole that accepts connections and never answers. stop() closes the
/// listener and every connection (the server "goes away"); start() listens again on the
/// same port.
class TcpProxy {
 public:
  explicit TcpProxy(std::optional<std::uint16_t> target);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  void start();
  void stop();
  /// The connections open now silently drop what they would forward to the server
  /// and/or to the client (a server that got a statement but whose answer is lost, or one
  /// that never got it); connections made later forward normally.
  void drop_on_open_connections(bool to_server, bool to_client);
  [[nodiscard]] std::uint16_t port() const { return port_; }

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::uint16_t port_;
  std::thread thread_;
};

// --- Redis -----------------------------------------------------------------------------

/// A command from its arguments (keeps braced string lists out of coroutine bodies).
template <class... A>
std::vector<std::string> cmd(A&&... a) {
  return std::vector<std::string>{std::string(std::forward<A>(a))...};
}

/// 127.0.0.1:port, connect timeout 1 s, command timeout 2 s.
RedisConfig redis_config(std::uint16_t port);

// --- TLS -------------------------------------------------------------------------------

/// The test CA and certificates made by scripts/services.sh: LLMQ_TEST_TLS_DIR, else
/// $LLMQ_SERVICES_DIR/tls, else /tmp/llmq-services/tls. ca.crt/key; server.crt/key
/// (DNS:localhost, IP:127.0.0.1); client.crt/key; wrong-host.crt/key
/// (DNS:wrong-host.invalid only).
std::filesystem::path tls_dir();
/// tls_dir() / name, as a string.
std::string tls_file(const std::string& name);
/// True when tls_dir() holds the complete set.
bool tls_files_present();
/// Why a TLS test cannot run (for LLMQ_SKIP_OR_FAIL).
std::string tls_missing_message();

/// redis_config(port) over TLS, trusting the test CA, verifying the server.
RedisConfig redis_tls_config(std::uint16_t port);

/// Arguments that make a RedisProcess on `port` TLS-only, presenting `<cert>.crt` of the
/// test CA, and requiring a client certificate when `auth_clients`.
std::vector<std::string> redis_tls_server_args(std::uint16_t port,
                                               const std::string& cert = "server",
                                               bool auth_clients = false);

/// One command on one node (no redirects).
boost::asio::awaitable<RedisReply> redis_exec(RedisConfig cfg, std::vector<std::string> args);

/// DEL of every key matching `pattern` on one node (SCAN).
boost::asio::awaitable<void> redis_delete_matching(RedisConfig cfg, std::string pattern);

/// DEL of each key through a RedisClient (follows cluster redirects).
boost::asio::awaitable<void> redis_delete_keys(RedisConfig cfg, std::vector<std::string> keys);

/// True if CLUSTER INFO on that node says cluster_state:ok (false on any error).
boost::asio::awaitable<bool> redis_cluster_ok(RedisConfig cfg);

/// Fixture on the shared standalone redis-server, or with `tls` the shared TLS-only one
/// (skips or fails when it, or for TLS the test certificates, are missing): a fresh key
/// prefix "llmqtest:" + head + random hex + tail, whose keys TearDown() deletes.
class RedisServerFixture : public ::testing::Test {
 protected:
  RedisServerFixture(std::string prefix_head, std::string prefix_tail, std::size_t threads,
                     bool tls = false);
  void SetUp() override;
  void TearDown() override;

  /// redis_config(port_), or redis_tls_config(port_) for the TLS server.
  [[nodiscard]] RedisConfig config() const;

  boost::asio::thread_pool pool_;
  std::uint16_t port_ = 0;
  std::string prefix_;

 private:
  std::string head_;
  std::string tail_;
  bool tls_;
};

/// Fixture on the shared 3-node cluster (skips or fails unless it is healthy): a fresh
/// key prefix "llmqtest:" + random hex + tail.
class RedisClusterFixture : public ::testing::Test {
 protected:
  explicit RedisClusterFixture(std::string prefix_tail);
  void SetUp() override;

  boost::asio::thread_pool pool_{2};
  std::uint16_t port_ = 0;
  std::string prefix_;

 private:
  std::string tail_;
};

// --- PostgreSQL ------------------------------------------------------------------------

/// A blocking libpq connection for the test's own checks (only on the test thread).
class PgConnection {
 public:
  explicit PgConnection(const std::string& conninfo);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  /// All rows as text ("NULL" for NULL). Throws on an error.
  std::vector<std::vector<std::string>> query(const std::string& sql);

  /// Rows in `table`; 0 while it does not exist yet.
  std::int64_t count(const std::string& table);

 private:
  PGconn* conn_;
};

/// The value of `key` in a libpq connection string, or "".
std::string pg_conninfo_value(const std::string& conninfo, std::string_view key);

/// Fixture on the test PostgreSQL (skips or fails when it is down): a fresh table name
/// `table_head` + random hex, dropped by TearDown().
class PostgresFixture : public ::testing::Test {
 protected:
  explicit PostgresFixture(std::string table_head);
  void SetUp() override;
  void TearDown() override;

  /// Options of a store on conninfo_ / table_ (connect 2 s, statement 5 s).
  [[nodiscard]] PostgresTelemetryOptions store_options() const;

  std::string conninfo_;
  std::string table_;

 private:
  std::string head_;
};

// --- the queue -------------------------------------------------------------------------

/// One Azure group (endpoint nowhere, api version 2024-10-21) with `models`, a 60 s user
/// window of `user_limit` requests, a queue of `max_queue_size` and 30 s request timeout.
LLMConfig azure_config(std::string api_key, std::vector<AzureModelConfig> models,
                       std::int64_t user_limit, std::size_t max_queue_size);

/// A chat request body: one user message `content`, `max_tokens`.
nlohmann::json chat_body(const std::string& content, int max_tokens);

}  // namespace llmq::test
