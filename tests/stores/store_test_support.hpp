#pragma once
/// @file store_test_support.hpp
/// Helpers of llmq_store_tests: running coroutines with a bound, environment, free
/// loopback ports, private redis-server processes and a TCP proxy that can be cut.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
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
  [[nodiscard]] std::uint16_t port() const { return port_; }

  struct State;

 private:
  std::shared_ptr<State> state_;
  std::uint16_t port_;
  std::thread thread_;
};

}  // namespace llmq::test
