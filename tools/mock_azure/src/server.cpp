/// @file server.cpp
/// MockAzureServer: the shared llmq_http_server loop (one coroutine per connection, each
/// on its own strand) with a handler that asks MockService for a ResponsePlan and
/// carries it out: plain answers, SSE streams (chunked), delays, resets, stalls,
/// truncated and slow bodies. Responses are serialised by hand so the faults can send
/// exactly the bytes they need.
///
/// Coroutine bodies here avoid braced initialisers holding string literals (g++ 12
/// miscompiles them); such values are built in ordinary functions.

#include <llmq/mock/server.hpp>

#include <http_server.hpp>

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/http/status.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace llmq::mock {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using server::Connection;
using server::is_loopback;

std::string reason_phrase(unsigned status) {
  const auto phrase = http::obsolete_reason(http::int_to_status(status));
  return phrase.empty() ? std::string("Unknown") : std::string(phrase);
}

/// Status line and headers. `content_length` absent: chunked (HTTP/1.1) or
/// close-delimited (HTTP/1.0).
std::string response_head(const MockHttpResponse& r, bool keep_alive,
                          std::optional<std::size_t> content_length, bool http11) {
  std::string h = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  for (const auto& [name, value] : r.headers) h += name + ": " + value + "\r\n";
  h += "server: llmq-mock-azure\r\n";
  if (content_length)
    h += "content-length: " + std::to_string(*content_length) + "\r\n";
  else if (http11)
    h += "transfer-encoding: chunked\r\n";
  h += keep_alive ? "connection: keep-alive\r\n" : "connection: close\r\n";
  h += "\r\n";
  return h;
}

std::string chunk_of(const std::string& data) {
  std::array<char, 24> size{};
  const int n = std::snprintf(size.data(), size.size(), "%zx\r\n", data.size());
  std::string out(size.data(), static_cast<std::size_t>(n));
  out += data;
  out += "\r\n";
  return out;
}

std::string last_chunk() { return "0\r\n\r\n"; }

/// The answer to a request the HTTP parser rejected.
MockHttpResponse protocol_error(unsigned status) {
  MockHttpResponse r;
  r.status = status;
  r.headers.emplace_back("content-type", "application/json");
  std::string message = status == 413   ? "Request body too large"
                        : status == 431 ? "Request header fields too large"
                                        : "Malformed HTTP request";
  const nlohmann::json body = {{"error", {{"code", std::to_string(status)}, {"message", message}}}};
  r.body = body.dump();
  return r;
}

MockHttpRequest to_mock_request(server::IncomingRequest& msg, bool loopback) {
  MockHttpRequest req;
  req.method = std::move(msg.method);
  req.target = std::move(msg.target);
  req.headers = std::move(msg.headers);
  req.body = std::move(msg.body);
  req.remote_is_loopback = loopback;
  return req;
}

std::string path_of(std::string_view target) {
  return std::string(target.substr(0, target.find('?')));
}

void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("llmq-mock-azure: connection task failed: {}", ex.what());
  } catch (...) {
    spdlog::error("llmq-mock-azure: connection task failed");
  }
}

/// Writes `data` in 8 pieces spread over `total`.
asio::awaitable<bool> write_slowly(Connection& conn, const std::string& data,
                                   std::chrono::milliseconds total) {
  constexpr std::size_t kPieces = 8;
  const std::size_t piece = (data.size() + kPieces - 1) / kPieces;
  const auto gap = total / static_cast<int>(kPieces);
  for (std::size_t off = 0; off < data.size(); off += piece) {
    if (!co_await conn.wait(gap)) co_return false;
    if (!co_await conn.write(std::string_view(data).substr(off, piece))) co_return false;
  }
  co_return true;
}

/// Writes and empties `pending` (nothing to do when it is empty).
asio::awaitable<bool> flush(Connection& conn, std::string& pending) {
  if (pending.empty()) co_return true;
  const bool written = co_await conn.write(pending);
  pending.clear();
  co_return written;
}

/// Writes a stream's events (the first `count` of them), each as a chunk when `chunked`.
/// With a gap, one write per event after waiting it; without, the events are written in
/// batches of about 64 KiB.
asio::awaitable<bool> write_events(Connection& conn, const StreamEvents& events, std::size_t count,
                                   bool chunked, std::chrono::steady_clock::duration first_gap,
                                   std::chrono::steady_clock::duration gap) {
  constexpr std::size_t kBatch = 64 * 1024;
  std::string pending;
  for (std::size_t i = 0; i < count; ++i) {
    const auto pause = i == 0 ? first_gap : gap;
    if (pause.count() > 0) {
      const bool flushed = co_await flush(conn, pending);  // due before the pause
      if (!flushed) co_return false;
      const bool waited = co_await conn.wait(pause);
      if (!waited) co_return false;
    }
    const std::string event = events.at(i);
    pending += chunked ? chunk_of(event) : event;
    if (pending.size() >= kBatch || i + 1 == count) {
      const bool flushed = co_await flush(conn, pending);
      if (!flushed) co_return false;
    }
  }
  co_return true;
}

/// Carries out one plan. Returns false when the connection must not be reused.
asio::awaitable<bool> carry_out(Connection& conn, const ResponsePlan& plan, bool keep_alive,
                                bool http11) {
  if (!co_await conn.wait(plan.delay)) co_return false;
  switch (plan.action) {
    case ResponsePlan::Action::reset:
      conn.reset();
      co_return false;
    case ResponsePlan::Action::stall:
      // Answer nothing; drain whatever arrives until the peer closes or we stop.
      co_await conn.discard_input();
      co_return false;
    case ResponsePlan::Action::respond: {
      const std::string& body = plan.response.body;
      const std::string head =
          response_head(plan.response, keep_alive && !plan.truncate, body.size(), http11);
      if (plan.truncate) {
        co_await conn.write(head, std::string_view(body).substr(0, body.size() / 2));
        conn.close();
        co_return false;
      }
      if (plan.slow_body.count() > 0) {
        if (!co_await conn.write(head)) co_return false;
        if (!co_await write_slowly(conn, body, plan.slow_body)) co_return false;
        co_return keep_alive;
      }
      if (!co_await conn.write(head, body)) co_return false;
      co_return keep_alive;
    }
    case ResponsePlan::Action::stream: {
      // HTTP/1.0 peers get a close-delimited stream.
      const bool chunked = http11;
      const bool cut = plan.cut != ResponsePlan::StreamCut::none;
      const bool keep = keep_alive && chunked && !cut;
      if (!co_await conn.write(response_head(plan.response, keep, std::nullopt, http11)))
        co_return false;
      const StreamEvents& events = *plan.events;
      const std::size_t count = cut ? std::min(plan.cut_after, events.size()) : events.size();
      // A slow body spreads every event over slow_body; else the token rate paces them.
      std::chrono::steady_clock::duration first_gap{0};
      std::chrono::steady_clock::duration gap = plan.event_gap;
      if (plan.slow_body.count() > 0 && events.size() > 0) {
        gap = std::chrono::duration_cast<std::chrono::steady_clock::duration>(plan.slow_body) /
              events.size();
        first_gap = gap;
      }
      if (!co_await write_events(conn, events, count, chunked, first_gap, gap)) co_return false;
      if (plan.cut == ResponsePlan::StreamCut::stall) {
        co_await conn.discard_input();
        co_return false;
      }
      if (cut || !chunked) {
        conn.close();
        co_return false;
      }
      if (!co_await conn.write(last_chunk())) co_return false;
      co_return keep;
    }
  }
  co_return false;
}

std::string plan_outcome(const ResponsePlan& plan) {
  if (plan.action == ResponsePlan::Action::reset) return "reset";
  if (plan.action == ResponsePlan::Action::stall) return "stall";
  return std::to_string(plan.response.status);
}

/// Serves the mock's routes on the shared server loop.
class MockHandler final : public server::RequestHandler {
 public:
  explicit MockHandler(MockService& service) : service_(service) {}

  asio::awaitable<bool> serve(Connection& conn, server::IncomingRequest msg) override {
    const bool http11 = msg.version >= 11;
    const bool wants_keep_alive = msg.keep_alive;
    const MockHttpRequest req = to_mock_request(msg, conn.remote_is_loopback());
    const ResponsePlan plan = service_.handle(req, std::chrono::steady_clock::now());
    const bool keep_alive = wants_keep_alive && !plan.close;
    if (spdlog::should_log(spdlog::level::debug))  // the arguments cost even when off
      spdlog::debug("llmq-mock-azure: {} {} -> {}{}", req.method, path_of(req.target),
                    plan_outcome(plan),
                    plan.deployment.empty() ? std::string() : " [" + plan.deployment + "]");
    const bool keep = co_await carry_out(conn, plan, keep_alive, http11);
    co_return keep&& keep_alive;
  }

  std::string refusal(unsigned status) override {
    service_.note_protocol_error(status);
    const MockHttpResponse r = protocol_error(status);
    return response_head(r, false, r.body.size(), true) + r.body;
  }

 private:
  MockService& service_;
};

server::ServerOptions server_options(const MockConfig& cfg) {
  server::ServerOptions o;
  o.name = "llmq-mock-azure";
  o.max_connections = std::size_t{1} << 20;  // the mock limits nothing but requests
  o.max_header_bytes = cfg.max_header_bytes;
  o.max_body_bytes = cfg.max_body_bytes;
  o.header_timeout = cfg.idle_timeout;
  o.read_timeout = cfg.idle_timeout;
  o.idle_timeout = cfg.idle_timeout;
  o.strand_per_connection = true;
  return o;
}

}  // namespace

namespace detail {

struct MockServerState {
  MockService service;
  server::HttpServer server;
  asio::strand<asio::any_io_executor> strand;
  mutable std::mutex mu;  // stopped, listening, port, host
  bool stopped = false;
  bool listening = false;
  unsigned short port = 0;
  std::string host;

  MockServerState(asio::any_io_executor ex, MockConfig cfg)
      : service(std::move(cfg)),
        server(ex, server_options(service.config()), std::make_shared<MockHandler>(service)),
        strand(asio::make_strand(ex)) {}
};

}  // namespace detail

MockAzureServer::MockAzureServer(boost::asio::any_io_executor ex, MockConfig cfg)
    : state_(std::make_shared<detail::MockServerState>(std::move(ex), std::move(cfg))) {}

MockAzureServer::~MockAzureServer() { stop(); }

unsigned short MockAzureServer::listen(const std::string& address, unsigned short port) {
  const asio::ip::address addr =
      asio::ip::make_address(address == "localhost" ? std::string("127.0.0.1") : address);
  if (!is_loopback(addr) && !state_->service.config().allow_any_host)
    throw std::invalid_argument("llmq-mock-azure: refusing to listen on non-loopback address " +
                                address + " (allow_any_host is off)");
  {
    std::lock_guard lock(state_->mu);
    if (state_->listening) throw std::logic_error("llmq-mock-azure: listen() called twice");
    if (state_->stopped) throw std::logic_error("llmq-mock-azure: listen() after stop()");
    state_->listening = true;
  }
  const unsigned short bound = state_->server.listen(tcp::endpoint(addr, port));
  {
    std::lock_guard lock(state_->mu);
    state_->port = bound;
    if (addr.is_unspecified())
      state_->host = addr.is_v6() ? "[::1]" : "127.0.0.1";
    else
      state_->host = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  }
  // The state outlives the accept loop (the completion handler holds it).
  asio::co_spawn(state_->strand, state_->server.run(), [st = state_](std::exception_ptr e) {
    (void)st;
    log_exception(e);
  });
  return bound;
}

void MockAzureServer::stop() {
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    state_->stopped = true;
  }
  state_->server.close_all();
}

unsigned short MockAzureServer::port() const noexcept {
  std::lock_guard lock(state_->mu);
  return state_->port;
}

std::string MockAzureServer::base_url() const {
  std::lock_guard lock(state_->mu);
  return "http://" + state_->host + ":" + std::to_string(state_->port);
}

DeploymentCounters MockAzureServer::counters(const std::string& deployment) const {
  return state_->service.counters(deployment);
}

void MockAzureServer::set_faults(const std::string& deployment, FaultConfig faults) {
  state_->service.set_faults(deployment, std::move(faults));
}

void MockAzureServer::reset() { state_->service.reset(); }

nlohmann::json MockAzureServer::stats() const {
  return state_->service.stats(std::chrono::steady_clock::now());
}

MockService& MockAzureServer::service() noexcept { return state_->service; }

}  // namespace llmq::mock
