#include "store_test_support.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <cstdlib>
#include <random>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace llmq::test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? std::string(v) : fallback;
}

bool services_required() { return env_or("LLMQ_TEST_REQUIRE_SERVICES", "0") == "1"; }

std::uint16_t redis_port() {
  return static_cast<std::uint16_t>(std::stoi(env_or("LLMQ_TEST_REDIS_PORT", "6390")));
}

std::uint16_t redis_cluster_port() {
  return static_cast<std::uint16_t>(std::stoi(env_or("LLMQ_TEST_REDIS_CLUSTER_PORT", "7101")));
}

std::uint16_t redis_tls_port() {
  return static_cast<std::uint16_t>(std::stoi(env_or("LLMQ_TEST_REDIS_TLS_PORT", "6392")));
}

std::string pg_conninfo() {
  return env_or("LLMQ_TEST_PG_CONNINFO", "host=127.0.0.1 port=5433 user=postgres dbname=postgres");
}

bool tcp_reachable(std::uint16_t port, std::chrono::milliseconds timeout) {
  asio::io_context io;
  tcp::socket socket(io);
  bool ok = false;
  socket.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                       [&](boost::system::error_code ec) { ok = !ec; });
  io.run_for(timeout);
  return ok;
}

std::uint16_t free_port() {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return acceptor.local_endpoint().port();
}

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 gen{std::random_device{}()};
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(digits[gen() % 16]);
  return out;
}

// --- TempDir ---------------------------------------------------------------------------

TempDir::TempDir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "llmq-store-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

// --- RedisProcess ----------------------------------------------------------------------

bool RedisProcess::available() {
  return std::system("command -v redis-server >/dev/null 2>&1") == 0;
}

RedisProcess::RedisProcess(std::uint16_t port, std::vector<std::string> extra_args)
    : port_(port), extra_(std::move(extra_args)) {}

RedisProcess::~RedisProcess() { kill(); }

void RedisProcess::start() {
  if (pid_ > 0) return;
  std::vector<std::string> args = {"redis-server",
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--protected-mode",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--dir",
                                   dir_.path().string()};
  args.insert(args.end(), extra_.begin(), extra_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("cannot spawn redis-server");
  }
  for (int i = 0; i < 200; ++i) {
    if (tcp_reachable(port_, std::chrono::milliseconds(50))) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("redis-server exited at start (port " + std::to_string(port_) + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill();
  throw std::runtime_error("redis-server did not accept connections in 10 s");
}

void RedisProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

// --- TcpProxy --------------------------------------------------------------------------

struct TcpProxy::State {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::optional<std::uint16_t> target;
  std::uint16_t port = 0;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::weak_ptr<tcp::socket>> sockets;
  // Per connection and direction: drop what arrives instead of forwarding it.
  std::vector<std::shared_ptr<bool>> to_server_flags, to_client_flags;

  static asio::awaitable<void> pump(std::shared_ptr<tcp::socket> from,
                                    std::shared_ptr<tcp::socket> to, std::shared_ptr<bool> drop) {
    std::array<char, 8192> buf{};
    for (;;) {
      auto [ec, n] =
          co_await from->async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) break;
      if (*drop) continue;
      auto [wec, w] = co_await asio::async_write(*to, asio::buffer(buf.data(), n),
                                                 asio::as_tuple(asio::use_awaitable));
      if (wec) break;
    }
    boost::system::error_code ignored;
    from->close(ignored);
    to->close(ignored);
  }

  static asio::awaitable<void> session(State* self, std::shared_ptr<tcp::socket> client) {
    if (!self->target) {
      // Black hole: read and drop everything, never answer.
      std::array<char, 8192> buf{};
      for (;;) {
        auto [ec, n] = co_await client->async_read_some(asio::buffer(buf),
                                                        asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
      }
    }
    auto upstream = std::make_shared<tcp::socket>(self->io);
    self->sockets.push_back(upstream);
    auto [ec] = co_await upstream->async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), *self->target),
        asio::as_tuple(asio::use_awaitable));
    if (ec) {
      boost::system::error_code ignored;
      client->close(ignored);
      co_return;
    }
    auto to_server = std::make_shared<bool>(false);
    auto to_client = std::make_shared<bool>(false);
    self->to_server_flags.push_back(to_server);
    self->to_client_flags.push_back(to_client);
    asio::co_spawn(self->io, pump(client, upstream, to_server), asio::detached);
    asio::co_spawn(self->io, pump(upstream, client, to_client), asio::detached);
  }

  static asio::awaitable<void> accept_loop(State* self) {
    for (;;) {
      if (!self->acceptor) co_return;
      auto [ec, socket] =
          co_await self->acceptor->async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      auto client = std::make_shared<tcp::socket>(std::move(socket));
      self->sockets.push_back(client);
      asio::co_spawn(self->io, session(self, client), asio::detached);
    }
  }

  void do_start() {
    if (acceptor) return;
    acceptor.emplace(io);
    const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    acceptor->open(ep.protocol());
    acceptor->set_option(tcp::acceptor::reuse_address(true));
    acceptor->bind(ep);
    acceptor->listen();
    port = acceptor->local_endpoint().port();
    asio::co_spawn(io, accept_loop(this), asio::detached);
  }

  void do_stop() {
    boost::system::error_code ignored;
    if (acceptor) {
      acceptor->close(ignored);
      acceptor.reset();
    }
    for (auto& w : sockets) {
      if (auto s = w.lock()) {
        s->shutdown(tcp::socket::shutdown_both, ignored);
        s->close(ignored);
      }
    }
    sockets.clear();
    to_server_flags.clear();
    to_client_flags.clear();
  }

  template <class F>
  void on_thread(F f) {
    std::promise<void> done;
    asio::post(io, [&] {
      try {
        f();
        done.set_value();
      } catch (...) {
        done.set_exception(std::current_exception());
      }
    });
    done.get_future().get();
  }
};

TcpProxy::TcpProxy(std::optional<std::uint16_t> target) : state_(std::make_shared<State>()) {
  state_->target = target;
  thread_ = std::thread([s = state_] { s->io.run(); });
  start();
  port_ = state_->port;
}

TcpProxy::~TcpProxy() {
  stop();
  state_->work.reset();
  state_->io.stop();
  thread_.join();
}

void TcpProxy::start() {
  state_->on_thread([s = state_] { s->do_start(); });
}

void TcpProxy::stop() {
  state_->on_thread([s = state_] { s->do_stop(); });
}

void TcpProxy::drop_on_open_connections(bool to_server, bool to_client) {
  state_->on_thread([s = state_, to_server, to_client] {
    for (auto& f : s->to_server_flags) *f = *f || to_server;
    for (auto& f : s->to_client_flags) *f = *f || to_client;
    s->to_server_flags.clear();  // connections made from now on forward normally
    s->to_client_flags.clear();
  });
}

// --- Redis -----------------------------------------------------------------------------

RedisConfig redis_config(std::uint16_t port) {
  RedisConfig c;
  c.host = "127.0.0.1";
  c.port = port;
  c.connect_timeout = 1s;
  c.command_timeout = 2s;
  return c;
}

asio::awaitable<RedisReply> redis_exec(RedisConfig cfg, std::vector<std::string> args) {
  RedisConnection c(co_await asio::this_coro::executor, cfg);
  RedisReply r = co_await c.exec(std::move(args));
  co_await c.close();
  co_return r;
}

asio::awaitable<void> redis_delete_matching(RedisConfig cfg, std::string pattern) {
  RedisConnection c(co_await asio::this_coro::executor, cfg);
  std::string cursor = "0";
  do {
    RedisReply r = co_await c.exec(cmd("SCAN", cursor, "MATCH", pattern, "COUNT", "1000"));
    if (r.type != RedisReply::Type::array || r.elements.size() != 2) break;
    cursor = r.elements[0].str;
    for (const RedisReply& k : r.elements[1].elements) (void)co_await c.exec(cmd("DEL", k.str));
  } while (cursor != "0");
  co_await c.close();
}

asio::awaitable<void> redis_delete_keys(RedisConfig cfg, std::vector<std::string> keys) {
  RedisClient client(co_await asio::this_coro::executor, cfg);
  for (const std::string& k : keys) (void)co_await client.exec_for_key(k, cmd("DEL", k));
  co_await client.close();
}

asio::awaitable<bool> redis_cluster_ok(RedisConfig cfg) {
  try {
    const RedisReply info = co_await redis_exec(cfg, cmd("CLUSTER", "INFO"));
    co_return info.str.find("cluster_state:ok") != std::string::npos;
  } catch (const std::exception&) {
    co_return false;
  }
}

// --- TLS -------------------------------------------------------------------------------

std::filesystem::path tls_dir() {
  const std::string services = env_or("LLMQ_SERVICES_DIR", "/tmp/llmq-services");
  return env_or("LLMQ_TEST_TLS_DIR", services + "/tls");
}

std::string tls_file(const std::string& name) { return (tls_dir() / name).string(); }

bool tls_files_present() { return std::filesystem::exists(tls_dir() / "complete"); }

std::string tls_missing_message() {
  return "no test certificates in " + tls_dir().string() +
         " (run scripts/services.sh start, or set LLMQ_TEST_TLS_DIR)";
}

RedisConfig redis_tls_config(std::uint16_t port) {
  RedisConfig c = redis_config(port);
  c.use_tls = true;
  c.tls.ca_file = tls_file("ca.crt");
  return c;
}

std::vector<std::string> redis_tls_server_args(std::uint16_t port, const std::string& cert,
                                               bool auth_clients) {
  // Later arguments win: "--port 0" turns off the plain port RedisProcess asks for.
  return std::vector<std::string>{"--port",
                                  "0",
                                  "--tls-port",
                                  std::to_string(port),
                                  "--tls-cert-file",
                                  tls_file(cert + ".crt"),
                                  "--tls-key-file",
                                  tls_file(cert + ".key"),
                                  "--tls-ca-cert-file",
                                  tls_file("ca.crt"),
                                  "--tls-auth-clients",
                                  auth_clients ? "yes" : "no"};
}

RedisServerFixture::RedisServerFixture(std::string prefix_head, std::string prefix_tail,
                                       std::size_t threads, bool tls)
    : pool_(threads), head_(std::move(prefix_head)), tail_(std::move(prefix_tail)), tls_(tls) {}

void RedisServerFixture::SetUp() {
  port_ = tls_ ? redis_tls_port() : redis_port();
  if (!tcp_reachable(port_)) {
    LLMQ_SKIP_OR_FAIL("no " << (tls_ ? "TLS " : "") << "redis-server on 127.0.0.1:" << port_
                            << " (run scripts/services.sh start, or set "
                            << (tls_ ? "LLMQ_TEST_REDIS_TLS_PORT" : "LLMQ_TEST_REDIS_PORT") << ")");
  }
  if (tls_ && !tls_files_present()) LLMQ_SKIP_OR_FAIL(tls_missing_message());
  prefix_ = "llmqtest:" + head_ + random_hex(10) + tail_;
}

RedisConfig RedisServerFixture::config() const {
  return tls_ ? redis_tls_config(port_) : redis_config(port_);
}

void RedisServerFixture::TearDown() {
  if (prefix_.empty()) return;
  try {
    run(pool_, redis_delete_matching(config(), prefix_ + "*"), 10s);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cleanup failed: " << e.what();
  }
}

RedisClusterFixture::RedisClusterFixture(std::string prefix_tail) : tail_(std::move(prefix_tail)) {}

void RedisClusterFixture::SetUp() {
  port_ = redis_cluster_port();
  if (!tcp_reachable(port_) || !run(pool_, redis_cluster_ok(redis_config(port_)), 10s)) {
    LLMQ_SKIP_OR_FAIL("no healthy redis cluster at 127.0.0.1:"
                      << port_
                      << " (run scripts/services.sh start, or set LLMQ_TEST_REDIS_CLUSTER_PORT)");
  }
  prefix_ = "llmqtest:" + random_hex(10) + tail_;
}

// --- PostgreSQL ------------------------------------------------------------------------

PgConnection::PgConnection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string why = PQerrorMessage(conn_);
    PQfinish(conn_);
    throw std::runtime_error("PgConnection: " + why);
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
}

PgConnection::~PgConnection() { PQfinish(conn_); }

std::vector<std::vector<std::string>> PgConnection::query(const std::string& sql) {
  PGresult* r = PQexec(conn_, sql.c_str());
  const ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const std::string why = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("PgConnection: " + why);
  }
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(r); ++c)
      row.emplace_back(PQgetisnull(r, i, c) ? "NULL" : PQgetvalue(r, i, c));
    rows.push_back(std::move(row));
  }
  PQclear(r);
  return rows;
}

std::int64_t PgConnection::count(const std::string& table) {
  if (query("SELECT to_regclass('" + table + "') IS NULL").at(0).at(0) == "t") return 0;
  return std::stoll(query("SELECT count(*) FROM " + table).at(0).at(0));
}

std::string pg_conninfo_value(const std::string& conninfo, std::string_view key) {
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &err);
  if (options == nullptr) {
    if (err != nullptr) PQfreemem(err);
    return "";
  }
  std::string value;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o)
    if (std::string_view(o->keyword) == key && o->val != nullptr) value = o->val;
  PQconninfoFree(options);
  return value;
}

PostgresFixture::PostgresFixture(std::string table_head) : head_(std::move(table_head)) {}

void PostgresFixture::SetUp() {
  conninfo_ = pg_conninfo();
  if (PQping(conninfo_.c_str()) != PQPING_OK) {
    LLMQ_SKIP_OR_FAIL("no PostgreSQL at '"
                      << conninfo_
                      << "' (run scripts/services.sh start, or set LLMQ_TEST_PG_CONNINFO)");
  }
  table_ = head_ + random_hex(12);
}

void PostgresFixture::TearDown() {
  if (table_.empty()) return;
  try {
    PgConnection(conninfo_).query("DROP TABLE IF EXISTS " + table_);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "cleanup failed: " << e.what();
  }
}

PostgresTelemetryOptions PostgresFixture::store_options() const {
  PostgresTelemetryOptions o;
  o.conninfo = conninfo_;
  o.table = table_;
  o.connect_timeout = 2s;
  o.statement_timeout = 5s;
  return o;
}

// --- the queue -------------------------------------------------------------------------

LLMConfig azure_config(std::string api_key, std::vector<AzureModelConfig> models,
                       std::int64_t user_limit, std::size_t max_queue_size) {
  AzureOpenAIConfig group;
  group.api_key = std::move(api_key);
  group.api_version = "2024-10-21";
  group.azure_endpoint = "http://127.0.0.1:1/";
  for (auto& m : models) group.azure_oai_models.push_back(std::move(m));
  LLMConfig c;
  c.azure_open_ai.push_back(std::move(group));
  c.user_limits.max_num_requests_in_time_window = user_limit;
  c.user_limits.time_window = 60s;
  c.scheduler_limits.max_queue_size = max_queue_size;
  c.scheduler_limits.request_timeout = 30s;
  return c;
}

nlohmann::json chat_body(const std::string& content, int max_tokens) {
  nlohmann::json msg = nlohmann::json::object();
  msg["role"] = "user";
  msg["content"] = content;
  nlohmann::json body = nlohmann::json::object();
  body["messages"] = nlohmann::json::array();
  body["messages"].push_back(std::move(msg));
  body["max_tokens"] = max_tokens;
  return body;
}

}  // namespace llmq::test
