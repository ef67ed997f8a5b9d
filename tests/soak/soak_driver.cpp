// llmq-soak: the fault soak's load and chaos driver (tests/soak/run.sh starts the processes).
//
// Closed-loop clients send chat requests through llmq-gateway (in front of a faulty
// llmq-mock-azure); each request's prompt carries its number, which the mock echoes, so
// every answer is matched to its request. Some clients give up after sending a request
// whole, some after sending half of it. Meanwhile the driver pauses the gateway's Redis
// (SIGSTOP / SIGCONT), restarts its PostgreSQL, and samples the gateway's RSS and open
// descriptors from /proc. At the end it waits for the gateway to be idle and for the
// telemetry to be written, then checks (soak_checks.hpp) and prints the report. Exit code
// 0: every check passed; 1: a violation; 2: bad usage or a failure of the driver itself.
//
// One thread runs everything (Asio coroutines); only the PostgreSQL restart command runs
// on a thread of its own, and psql is run (blocking) only after the load.

#include "soak_checks.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using llmq::soak::Fate;
using llmq::soak::Verdict;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// ---- options ----------------------------------------------------------------------------

struct Options {
  unsigned short gateway_port = 0;
  pid_t gateway_pid = 0;
  unsigned short mock_port = 0;  // 0: no mock stats in the report
  pid_t redis_pid = 0;           // 0: Redis is not paused
  std::string pg_restart;        // shell command; empty: PostgreSQL is not restarted
  std::string psql;              // shell command prefix reaching the telemetry database
  double duration_s = 0;         // load time; 0: until `requests`
  std::uint64_t requests = 0;    // requests to send; 0: for `duration_s`
  int clients = 48;
  double abandon = 0.02;  // fraction of requests sent whole, then left
  double partial = 0.01;  // fraction sent half, then left
  llmq::soak::Bound bound{10, 4, 3, 3};
  double grace_s = 5;  // the client waits bound + grace, then gives up
  std::string model = "soak-chat";
  std::vector<std::string> pinned;  // deployments reached through the Azure-style route
  double pinned_share = 0.2;
  int users = 32;
  double hot_user_share = 0.25;  // share of requests of user "hot" (meets the user limit)
  double redis_pause_first_s = 15, redis_pause_every_s = 30, redis_pause_for_s = 3;
  double pg_restart_first_s = 25, pg_restart_every_s = 30;
  std::uint64_t seed = 1;
  std::string salt;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "llmq-soak: " << problem
            << "\nusage: llmq-soak --gateway-port P --gateway-pid PID --psql CMD"
               " (--duration S | --requests N) [--mock-port P] [--redis-pid PID]"
               " [--pg-restart CMD] [--clients N] [--abandon F] [--partial F]"
               " [--request-timeout S] [--upstream-timeout S] [--max-attempts N] [--slack S]"
               " [--grace S] [--model NAME] [--pinned D1,D2] [--pinned-share F] [--users N]"
               " [--hot-user-share F] [--redis-pause-first S] [--redis-pause-every S]"
               " [--redis-pause-for S] [--pg-restart-first S] [--pg-restart-every S]"
               " [--seed N]\n";
  std::exit(2);
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(k + " needs a value");
    const std::string v = argv[++i];
    try {
      if (k == "--gateway-port")
        o.gateway_port = static_cast<unsigned short>(std::stoul(v));
      else if (k == "--gateway-pid")
        o.gateway_pid = static_cast<pid_t>(std::stol(v));
      else if (k == "--mock-port")
        o.mock_port = static_cast<unsigned short>(std::stoul(v));
      else if (k == "--redis-pid")
        o.redis_pid = static_cast<pid_t>(std::stol(v));
      else if (k == "--pg-restart")
        o.pg_restart = v;
      else if (k == "--psql")
        o.psql = v;
      else if (k == "--duration")
        o.duration_s = std::stod(v);
      else if (k == "--requests")
        o.requests = std::stoull(v);
      else if (k == "--clients")
        o.clients = std::stoi(v);
      else if (k == "--abandon")
        o.abandon = std::stod(v);
      else if (k == "--partial")
        o.partial = std::stod(v);
      else if (k == "--request-timeout")
        o.bound.request_timeout_s = std::stod(v);
      else if (k == "--upstream-timeout")
        o.bound.upstream_timeout_s = std::stod(v);
      else if (k == "--max-attempts")
        o.bound.max_attempts = std::stoi(v);
      else if (k == "--slack")
        o.bound.slack_s = std::stod(v);
      else if (k == "--grace")
        o.grace_s = std::stod(v);
      else if (k == "--model")
        o.model = v;
      else if (k == "--pinned") {
        std::stringstream ss(v);
        for (std::string d; std::getline(ss, d, ',');)
          if (!d.empty()) o.pinned.push_back(d);
      } else if (k == "--pinned-share")
        o.pinned_share = std::stod(v);
      else if (k == "--users")
        o.users = std::stoi(v);
      else if (k == "--hot-user-share")
        o.hot_user_share = std::stod(v);
      else if (k == "--redis-pause-first")
        o.redis_pause_first_s = std::stod(v);
      else if (k == "--redis-pause-every")
        o.redis_pause_every_s = std::stod(v);
      else if (k == "--redis-pause-for")
        o.redis_pause_for_s = std::stod(v);
      else if (k == "--pg-restart-first")
        o.pg_restart_first_s = std::stod(v);
      else if (k == "--pg-restart-every")
        o.pg_restart_every_s = std::stod(v);
      else if (k == "--seed")
        o.seed = std::stoull(v);
      else
        usage("unknown option " + k);
    } catch (const std::logic_error&) {
      usage("bad value for " + k);
    }
  }
  if (o.gateway_port == 0 || o.gateway_pid <= 0)
    usage("--gateway-port and --gateway-pid are required");
  if (o.psql.empty()) usage("--psql is required");
  if ((o.duration_s > 0) == (o.requests > 0)) usage("give one of --duration and --requests");
  if (o.clients < 1 || o.clients > 900) usage("--clients must be in 1..900");
  if (o.abandon < 0 || o.partial < 0 || o.abandon + o.partial > 0.5)
    usage("--abandon + --partial must be in [0, 0.5]");
  if (o.users < 1) usage("--users must be positive");
  if (o.bound.max_attempts < 1) usage("--max-attempts must be positive");
  std::mt19937_64 salt_rng(o.seed ^
                           static_cast<std::uint64_t>(Clock::now().time_since_epoch().count()));
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (int i = 0; i < 8; ++i) o.salt += kAlphabet[salt_rng() % 36];
  return o;
}

// ---- shared state -------------------------------------------------------------------------

/// Up to this many examples of each kind of problem are printed.
constexpr std::size_t kExamples = 8;

struct Run {
  explicit Run(asio::io_context& i, Options o) : io(i), opt(std::move(o)), rng(opt.seed) {}

  asio::io_context& io;
  Options opt;
  std::mt19937_64 rng;
  llmq::soak::Ledger ledger;
  bool stopping = false;  // no new requests
  int clients_running = 0;
  int chaos_running = 0;
  Clock::time_point load_start;
  double load_s = 0;  // measured when the load stopped
  std::vector<llmq::soak::ResourceSample> samples;
  std::map<int, std::uint64_t> own_http;  // the driver's own GETs to the gateway, by status
  std::uint64_t unsolicited = 0;          // bytes that no request asked for
  std::map<std::string, std::vector<std::string>> examples;
  int redis_pauses = 0;
  int pg_restarts = 0;
  int pg_restart_failures = 0;
  bool redis_stopped = false;

  [[nodiscard]] double since_start() const {
    return std::chrono::duration<double>(Clock::now() - load_start).count();
  }
  [[nodiscard]] double client_limit_s() const { return opt.bound.seconds() + opt.grace_s; }
  void example(const std::string& kind, const std::string& text) {
    auto& list = examples[kind];
    if (list.size() < kExamples) list.push_back(text);
  }
  double uniform() { return std::uniform_real_distribution<double>(0, 1)(rng); }
};

/// Waits `d` on a fresh timer.
asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(kTuple);
}

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

// ---- requests -----------------------------------------------------------------------------

/// The raw HTTP/1.1 request of number `n` (keep-alive).
std::string request_bytes(Run& run, std::uint64_t n) {
  json message;
  message["role"] = "user";
  message["content"] = llmq::soak::prompt_of(run.opt.salt, n);
  json body;
  body["messages"] = json::array({message});
  body["max_tokens"] = 16;
  std::string target = "/v1/chat/completions";
  if (!run.opt.pinned.empty() && run.uniform() < run.opt.pinned_share) {
    target = "/openai/deployments/" + run.opt.pinned[run.rng() % run.opt.pinned.size()] +
             "/chat/completions?api-version=2024-10-21";
  } else {
    body["model"] = run.opt.model;
  }
  const std::string user = run.uniform() < run.opt.hot_user_share
                               ? std::string("hot")
                               : "user-" + std::to_string(run.rng() % run.opt.users);
  const std::string text = body.dump();
  std::string r = "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  r += "Content-Type: application/json\r\nx-user-id: " + user + "\r\n";
  r += "Content-Length: " + std::to_string(text.size()) + "\r\n\r\n";
  r += text;
  return r;
}

/// A keep-alive connection of one client.
struct Conn {
  std::unique_ptr<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  std::uint64_t last = 0;  // the request last answered on it

  void close() {
    if (!stream) return;
    beast::error_code ec;
    stream->socket().shutdown(tcp::socket::shutdown_both, ec);
    stream->close();
    stream.reset();
    buffer.clear();
  }
};

asio::awaitable<bool> connect(Run& run, beast::tcp_stream& stream) {
  stream.expires_after(std::chrono::seconds(5));
  const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), run.opt.gateway_port);
  auto [ec] = co_await stream.async_connect(ep, kTuple);
  co_return !ec;
}

std::string describe_request(std::uint64_t n, double t_s) {
  return "request " + std::to_string(n) + " (sent at " + std::to_string(t_s) + " s)";
}

/// One request on the client's keep-alive connection, answer read and judged.
asio::awaitable<void> normal_request(Run& run, Conn& c, std::uint64_t n) {
  const std::string bytes = request_bytes(run, n);
  if (c.stream) {
    // Nothing may arrive between an answer and the next request.
    beast::error_code ec;
    const std::size_t pending = c.stream->socket().available(ec);
    if (!ec && pending > 0) {
      ++run.unsolicited;
      run.example("unsolicited", std::to_string(pending) + " bytes after the answer to request " +
                                     std::to_string(c.last));
      c.close();
    }
  }
  if (!c.stream) {
    c.stream = std::make_unique<beast::tcp_stream>(run.io);
    const bool connected = co_await connect(run, *c.stream);
    if (!connected) {
      c.close();
      run.ledger.finish(n, Fate::no_answer);
      run.example("no_answer", describe_request(n, run.since_start()) + ": connect failed");
      co_return;
    }
  }
  const double sent_at = run.since_start();
  const auto start = Clock::now();
  c.stream->expires_after(seconds(run.client_limit_s()));
  auto [wec, wn] = co_await asio::async_write(*c.stream, asio::buffer(bytes), kTuple);
  http::response_parser<http::string_body> parser;
  parser.body_limit(4 * 1024 * 1024);
  beast::error_code rec = wec;
  if (!wec) {
    auto [ec, rn] = co_await http::async_read(*c.stream, c.buffer, parser, kTuple);
    rec = ec;
  }
  const double latency = std::chrono::duration<double>(Clock::now() - start).count();
  if (rec) {
    const bool timed_out = rec == beast::error::timeout;
    run.ledger.finish(n, timed_out ? Fate::timed_out : Fate::no_answer, latency);
    run.example(timed_out ? "timed_out" : "no_answer", describe_request(n, sent_at) + ": " +
                                                           rec.message() + " after " +
                                                           std::to_string(latency) + " s");
    c.close();
    co_return;
  }
  const auto& msg = parser.get();
  const int status = static_cast<int>(msg.result_int());
  const bool retry_after = msg.find(http::field::retry_after) != msg.end();
  const Verdict v = llmq::soak::classify_answer(run.opt.salt, n, status, retry_after, msg.body());
  run.ledger.finish(n, Fate::answered, latency, status, &v);
  if (v.kind == Verdict::Kind::crossed)
    run.example("crossed", describe_request(n, sent_at) + " got the answer of request " +
                               std::to_string(v.other));
  else if (v.kind == Verdict::Kind::bad)
    run.example("bad", describe_request(n, sent_at) + ": " + v.problem);
  if (latency > run.opt.bound.seconds())
    run.example("over_bound", describe_request(n, sent_at) + ": " + std::to_string(status) +
                                  " after " + std::to_string(latency) + " s");
  c.last = n;
  if (c.buffer.size() > 0) {  // bytes beyond the one answer asked for
    ++run.unsolicited;
    run.example("unsolicited", std::to_string(c.buffer.size()) +
                                   " bytes right after the answer to request " + std::to_string(n));
    c.close();
  } else if (!msg.keep_alive()) {
    c.close();
  }
}

/// A request sent whole (or, with `half`, half of it) on a new connection, then left: the
/// connection is closed after a random pause without reading anything.
asio::awaitable<void> left_request(Run& run, std::uint64_t n, bool half) {
  std::string bytes = request_bytes(run, n);
  if (half) {  // the head and half the body: the gateway waits for the rest
    const std::size_t body_at = bytes.find("\r\n\r\n") + 4;
    bytes.resize(body_at + (bytes.size() - body_at) / 2);
  }
  const double pause_s = run.uniform() * (half ? 0.1 : 0.3);
  beast::tcp_stream stream(run.io);
  const bool connected = co_await connect(run, stream);
  if (!connected) {
    run.ledger.finish(n, Fate::no_answer);
    run.example("no_answer", describe_request(n, run.since_start()) + ": connect failed");
    co_return;
  }
  stream.expires_after(std::chrono::seconds(10));
  auto [ec, written] = co_await asio::async_write(stream, asio::buffer(bytes), kTuple);
  if (ec) {
    // Not sent as planned: a whole request the gateway may or may not have read.
    run.ledger.finish(n, half ? Fate::partial : Fate::no_answer);
    if (!half)
      run.example("no_answer",
                  describe_request(n, run.since_start()) + ": write failed: " + ec.message());
    co_return;
  }
  co_await sleep_for(seconds(pause_s));
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.close();
  run.ledger.finish(n, half ? Fate::partial : Fate::abandoned);
}

bool more_requests(const Run& run) {
  if (run.stopping) return false;
  return run.opt.requests == 0 || run.ledger.size() < run.opt.requests;
}

asio::awaitable<void> client(Run& run) {
  Conn conn;
  while (more_requests(run)) {
    const std::uint64_t n = run.ledger.open();
    const double u = run.uniform();
    if (u < run.opt.abandon)
      co_await left_request(run, n, false);
    else if (u < run.opt.abandon + run.opt.partial)
      co_await left_request(run, n, true);
    else
      co_await normal_request(run, conn, n);
  }
  conn.close();
  --run.clients_running;
}

/// GET on a new connection to 127.0.0.1:port; status 0 when it failed.
asio::awaitable<std::pair<int, std::string>> get(Run& run, unsigned short port,
                                                 const std::string& target) {
  beast::tcp_stream stream(run.io);
  stream.expires_after(std::chrono::seconds(10));
  const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), port);
  auto [cec] = co_await stream.async_connect(ep, kTuple);
  std::pair<int, std::string> out{0, std::string()};
  if (cec) co_return out;
  const std::string req =
      "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(req), kTuple);
  if (wec) co_return out;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kTuple);
  if (rec) co_return out;
  out.first = static_cast<int>(parser.get().result_int());
  out.second = parser.get().body();
  if (port == run.opt.gateway_port) ++run.own_http[out.first];
  co_return out;
}

asio::awaitable<llmq::soak::Metrics> scrape(Run& run) {
  auto [status, body] = co_await get(run, run.opt.gateway_port, "/metrics");
  if (status != 200) throw std::runtime_error("GET /metrics answered " + std::to_string(status));
  co_return llmq::soak::Metrics::parse(body);
}

// ---- chaos and sampling ---------------------------------------------------------------------

void signal_redis(Run& run, int sig) {
  if (run.opt.redis_pid > 0 && ::kill(run.opt.redis_pid, sig) != 0)
    std::cerr << "llmq-soak: kill(redis, " << sig << ") failed\n";
}

/// Waits until `t_s` of the load; false when the event is not to start: the load stopped,
/// or a timed load is in its last 5 s (the event would outlast it).
asio::awaitable<bool> wait_for_event(Run& run, double t_s) {
  if (run.opt.duration_s > 0 && t_s >= run.opt.duration_s - 5) co_return false;
  while (!run.stopping && run.since_start() < t_s)
    co_await sleep_for(std::chrono::milliseconds(50));
  co_return !run.stopping;
}

/// Pauses Redis (SIGSTOP) for redis_pause_for_s, first at redis_pause_first_s, then every
/// redis_pause_every_s, while the load runs.
asio::awaitable<void> redis_chaos(Run& run) {
  double next = run.opt.redis_pause_first_s;
  while (run.opt.redis_pid > 0 && run.opt.redis_pause_every_s > 0) {
    const bool due = co_await wait_for_event(run, next);
    if (!due) break;
    signal_redis(run, SIGSTOP);
    run.redis_stopped = true;
    ++run.redis_pauses;
    co_await sleep_for(seconds(run.opt.redis_pause_for_s));
    signal_redis(run, SIGCONT);
    run.redis_stopped = false;
    next += run.opt.redis_pause_every_s;
  }
  --run.chaos_running;
}

/// Restarts PostgreSQL (the --pg-restart command, on a thread), first at
/// pg_restart_first_s, then every pg_restart_every_s, while the load runs.
asio::awaitable<void> pg_chaos(Run& run) {
  double next = run.opt.pg_restart_first_s;
  while (!run.opt.pg_restart.empty() && run.opt.pg_restart_every_s > 0) {
    const bool due = co_await wait_for_event(run, next);
    if (!due) break;
    auto finished = std::make_shared<std::atomic<bool>>(false);
    auto result = std::make_shared<std::atomic<int>>(0);
    std::thread restart([cmd = run.opt.pg_restart, finished, result] {
      result->store(std::system(cmd.c_str()));
      finished->store(true);
    });
    while (!finished->load()) co_await sleep_for(std::chrono::milliseconds(50));
    restart.join();
    ++run.pg_restarts;
    if (result->load() != 0) ++run.pg_restart_failures;
    next += run.opt.pg_restart_every_s;
  }
  --run.chaos_running;
}

std::optional<llmq::soak::ResourceSample> sample(pid_t pid, double t) {
  const std::string dir = "/proc/" + std::to_string(pid);
  std::ifstream status(dir + "/status");
  llmq::soak::ResourceSample s;
  s.t_s = t;
  bool found = false;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      s.rss_kib = std::stod(line.substr(6));
      found = true;
    }
  }
  if (!found) return std::nullopt;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++s.fds;
  if (ec) return std::nullopt;
  return s;
}

asio::awaitable<void> sampler(Run& run) {
  while (!run.stopping) {
    if (auto s = sample(run.opt.gateway_pid, run.since_start())) run.samples.push_back(*s);
    co_await sleep_for(std::chrono::milliseconds(500));
  }
}

// ---- the end --------------------------------------------------------------------------------

/// Output of a shell command (blocking), or nothing when it failed.
std::optional<std::string> shell(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  if (::pclose(p) != 0) return std::nullopt;
  return out;
}

struct Rows {
  std::uint64_t all = 0;
  std::uint64_t ok = 0;
};

std::optional<Rows> count_rows(const Run& run) {
  const auto out = shell(run.opt.psql +
                         " -At -c 'SELECT count(*), count(*) FILTER (WHERE status = 200) FROM "
                         "llmq_telemetry' 2>/dev/null");
  if (!out) return std::nullopt;
  Rows r;
  if (std::sscanf(out->c_str(), "%" SCNu64 "|%" SCNu64, &r.all, &r.ok) != 2) return std::nullopt;
  return r;
}

std::string fmt(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

void print_mock_stats(const std::string& body) {
  const json stats = json::parse(body, nullptr, false);
  if (!stats.is_object() || !stats.contains("deployments")) return;
  std::cout << "mock (upstream requests per deployment):\n";
  for (const auto& [name, d] : stats["deployments"].items()) {
    std::cout << "  " << name << ": " << d.value("requests", 0) << " requests, " << d.value("ok", 0)
              << " ok, " << d.value("rate_limited", 0) << " 429 (" << d.value("bursts_429", 0)
              << " in bursts), errors " << d.value("errors", json::object()).dump() << ", resets "
              << d.value("resets", 0) << ", stalls " << d.value("stalls", 0) << ", malformed "
              << d.value("malformed", 0) << ", truncated " << d.value("truncated", 0)
              << ", slow bodies " << d.value("slow_bodies", 0) << "\n";
  }
}

/// The report of the run (everything but the mock's stats and the verdict).
void print_report(const Run& run, const llmq::soak::Tally& t, const llmq::soak::Observed& observed,
                  double drained_s) {
  const llmq::soak::Bound& bound = run.opt.bound;
  std::cout << "load: " << t.requests << " requests in " << fmt(run.load_s) << " s ("
            << fmt(static_cast<double>(t.requests) / run.load_s, 0) << "/s); last answer "
            << fmt(drained_s - run.load_s) << " s after the load stopped\n";
  std::cout << "fates:";
  for (const auto& [f, n] : t.fates) std::cout << " " << llmq::soak::to_string(f) << " " << n;
  std::cout << "\nanswers by status:";
  for (const auto& [s, n] : t.statuses) std::cout << " " << s << ": " << n;
  std::cout << "\nerror codes:";
  for (const auto& [c, n] : t.codes) std::cout << " " << (c.empty() ? "(none)" : c) << ": " << n;
  std::cout << "\nlatency of answers (s):";
  const char* names[] = {"p50", "p99", "p99.9", "max"};
  for (std::size_t i = 0; i < t.latency_quantiles.size(); ++i)
    std::cout << " " << names[i] << " " << fmt(t.latency_quantiles[i], 3);
  std::cout << "; bound " << fmt(bound.seconds()) << " s, " << t.over_bound << " over it\n";
  const auto& om = observed.metrics;
  std::cout << "gateway /metrics: http answers";
  for (const auto& [labels, v] : om.family("llmq_gateway_http_responses_total"))
    std::cout << " " << labels << " " << fmt(v, 0);
  std::cout << " (own GETs before the last scrape:";
  for (const auto& [s, n] : observed.own_http) std::cout << " " << s << ": " << n;
  std::cout << "); queue saw " << fmt(llmq::soak::queue_seen(om), 0) << " (admitted "
            << fmt(om.value("llmq_admitted_total"), 0) << ", completed "
            << fmt(om.value("llmq_completed_total"), 0) << ", rejected";
  for (const auto& [labels, v] : om.family("llmq_rejected_total"))
    std::cout << " " << labels << " " << fmt(v, 0);
  std::cout << "); telemetry dropped " << fmt(om.value("llmq_telemetry_dropped_total"), 0)
            << ", failed " << fmt(om.value("llmq_telemetry_failed_total"), 0) << "\n";
  std::cout << "postgres rows: "
            << (observed.pg_rows ? std::to_string(*observed.pg_rows) : std::string("unknown"))
            << " (status 200: "
            << (observed.pg_rows_200 ? std::to_string(*observed.pg_rows_200) : std::string("?"))
            << ")\n";
  const llmq::soak::Flatness& f = observed.flatness;
  std::cout << "gateway RSS: first quarter " << fmt(f.q1_rss_kib / 1024) << " MiB, last quarter "
            << fmt(f.q4_rss_kib / 1024) << " MiB; open fds " << fmt(f.q1_fds) << " vs "
            << fmt(f.q4_fds) << " (" << f.q1_samples << " / " << f.q4_samples << " samples)\n";
  std::cout << "chaos: redis paused " << run.redis_pauses << " x " << fmt(run.opt.redis_pause_for_s)
            << " s, postgres restarted " << run.pg_restarts << " x\n";
}

asio::awaitable<void> run_soak(Run& run, int& exit_code) {
  // The gateway must be ready before the clock starts.
  for (int i = 0;; ++i) {
    auto [status, body] = co_await get(run, run.opt.gateway_port, "/readyz");
    if (status == 200) break;
    if (i >= 300) throw std::runtime_error("the gateway did not become ready within 30 s");
    co_await sleep_for(std::chrono::milliseconds(100));
  }
  const llmq::soak::Bound& bound = run.opt.bound;
  std::cout << "soak: " << run.opt.clients << " clients, "
            << (run.opt.duration_s > 0 ? fmt(run.opt.duration_s, 0) + " s"
                                       : std::to_string(run.opt.requests) + " requests")
            << ", run " << run.opt.salt << "; bound per answer: " << bound.describe() << std::endl;

  run.load_start = Clock::now();
  run.clients_running = run.opt.clients;
  for (int i = 0; i < run.opt.clients; ++i) asio::co_spawn(run.io, client(run), asio::detached);
  run.chaos_running = 2;
  asio::co_spawn(run.io, redis_chaos(run), asio::detached);
  asio::co_spawn(run.io, pg_chaos(run), asio::detached);
  asio::co_spawn(run.io, sampler(run), asio::detached);
  double last_report = 0;
  while (more_requests(run) &&
         (run.opt.duration_s <= 0 || run.since_start() < run.opt.duration_s)) {
    co_await sleep_for(std::chrono::milliseconds(100));
    if (run.since_start() - last_report >= 10) {
      last_report = run.since_start();
      std::cout << "  " << fmt(last_report, 0) << " s: " << run.ledger.size() << " requests"
                << std::endl;
    }
  }
  run.stopping = true;
  run.load_s = run.since_start();
  while (run.clients_running > 0 || run.chaos_running > 0)
    co_await sleep_for(std::chrono::milliseconds(50));
  if (run.redis_stopped) signal_redis(run, SIGCONT);
  const double drained_s = run.since_start();

  // Idle: nothing queued or in flight. Every request was sent before the load stopped, so
  // each (also an abandoned one, whose client does not wait) has had its bound by then.
  llmq::soak::Observed observed;
  llmq::soak::Metrics m;
  const auto idle_deadline = run.load_start + seconds(run.load_s + bound.seconds() + 1);
  for (;;) {
    m = co_await scrape(run);
    observed.queue_depth = m.value("llmq_queue_depth");
    observed.in_flight = m.value("llmq_in_flight");
    observed.idle = observed.queue_depth == 0 && observed.in_flight == 0;
    if (observed.idle || Clock::now() > idle_deadline) break;
    co_await sleep_for(std::chrono::milliseconds(200));
  }
  // Telemetry: every record written or counted lost (the flusher runs every 200 ms). While
  // requests are still in flight their records cannot be there: no wait then.
  std::optional<Rows> rows;
  const auto rows_deadline = Clock::now() + std::chrono::seconds(observed.idle ? 30 : 0);
  for (;;) {
    rows = count_rows(run);
    m = co_await scrape(run);
    if (rows &&
        static_cast<double>(rows->all) + llmq::soak::telemetry_lost(m) >= llmq::soak::queue_seen(m))
      break;
    if (Clock::now() > rows_deadline) break;
    co_await sleep_for(std::chrono::milliseconds(250));
  }
  co_await sleep_for(std::chrono::milliseconds(500));  // a late row would still show
  rows = count_rows(run);
  observed.own_http = run.own_http;  // before the final scrape, which counts itself after
  observed.metrics = co_await scrape(run);
  if (rows) {
    observed.pg_rows = rows->all;
    observed.pg_rows_200 = rows->ok;
  }
  observed.flatness = llmq::soak::flatness(run.samples, run.load_s);

  const llmq::soak::Tally t = llmq::soak::tally(run.ledger, bound.seconds());
  std::vector<std::string> violations = llmq::soak::check(t, observed);
  if (run.unsolicited > 0)
    violations.push_back(std::to_string(run.unsolicited) +
                         " times bytes arrived that no request asked for (an extra answer)");
  if (run.pg_restart_failures > 0)
    violations.push_back(std::to_string(run.pg_restart_failures) +
                         " PostgreSQL restarts failed (the soak's own setup)");

  print_report(run, t, observed, drained_s);
  if (run.opt.mock_port != 0) {
    auto [status, body] = co_await get(run, run.opt.mock_port, "/mock/stats");
    if (status == 200) print_mock_stats(body);
  }
  for (const auto& [kind, list] : run.examples) {
    std::cout << "examples of " << kind << ":\n";
    for (const std::string& e : list) std::cout << "  " << e << "\n";
  }
  if (violations.empty()) {
    std::cout << "PASS: no violation" << std::endl;
    exit_code = 0;
  } else {
    std::cout << "FAIL: " << violations.size() << " violations\n";
    for (const std::string& v : violations) std::cout << "  - " << v << "\n";
    std::cout.flush();
    exit_code = 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_options(argc, argv);
  std::signal(SIGPIPE, SIG_IGN);
  asio::io_context io(1);
  Run run(io, std::move(opt));
  int exit_code = 2;
  asio::co_spawn(io, run_soak(run, exit_code), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "llmq-soak: " << ex.what() << "\n";
      }
      exit_code = 2;
    }
    if (run.redis_stopped) signal_redis(run, SIGCONT);
    io.stop();
  });
  io.run();
  return exit_code;
}
