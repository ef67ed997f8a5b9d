/// @file server.cpp
/// MockAzureServer: a Beast HTTP/1.1 server (one coroutine per connection, each on its
/// own strand) that reads requests, asks MockService for a ResponsePlan and carries it
/// out: plain answers, SSE streams (chunked), delays, resets, stalls, truncated and slow
/// bodies. Responses are serialised by hand so the faults can send exactly the bytes
/// they need.
///
/// Coroutine bodies here avoid braced initialisers holding string literals (g++ 12
/// miscompiles them); such values are built in ordinary functions.

#include <llmq/mock/server.hpp>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <map>
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
using beast::error_code;

constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);

/// One accepted connection. Every member is used on the connection's strand only.
struct Connection {
  beast::tcp_stream stream;
  asio::steady_timer timer;
  bool closed = false;

  explicit Connection(tcp::socket socket)
      : stream(std::move(socket)), timer(stream.get_executor()) {}

  void close() {
    if (closed) return;
    closed = true;
    error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream.close();  // also cancels the stream's expiry timer
    timer.cancel();
  }

  /// Closes with a TCP RST instead of a FIN.
  void reset() {
    if (closed) return;
    closed = true;
    error_code ec;
    stream.socket().set_option(asio::socket_base::linger(true, 0), ec);
    stream.close();
    timer.cancel();
  }
};

bool is_loopback(const asio::ip::address& a) {
  if (a.is_loopback()) return true;
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return false;
}

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

std::string continue_response() { return "HTTP/1.1 100 Continue\r\n\r\n"; }

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

MockHttpRequest to_mock_request(const http::request<http::string_body>& msg, bool loopback) {
  MockHttpRequest req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  for (const auto& field : msg) req.headers.emplace_back(field.name_string(), field.value());
  req.body = msg.body();
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

/// Status for a failed read, or none when the connection should just be closed.
std::optional<unsigned> read_error_status(const error_code& ec) {
  if (ec == http::error::body_limit) return 413;
  if (ec == http::error::header_limit) return 431;
  if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message)
    return 400;
  return std::nullopt;
}

}  // namespace

namespace detail {

struct MockServerState {
  asio::any_io_executor ex;
  MockService service;
  asio::strand<asio::any_io_executor> acceptor_strand;
  tcp::acceptor acceptor;
  mutable std::mutex mu;  // connections, next_id, stopped, listening, port, host
  std::map<std::uint64_t, std::weak_ptr<Connection>> connections;
  std::uint64_t next_id = 0;
  bool stopped = false;
  bool listening = false;
  unsigned short port = 0;
  std::string host;

  MockServerState(asio::any_io_executor e, MockConfig cfg)
      : ex(std::move(e)),
        service(std::move(cfg)),
        acceptor_strand(asio::make_strand(ex)),
        acceptor(acceptor_strand) {}
};

}  // namespace detail

namespace {

using State = detail::MockServerState;

/// Waits on the connection's timer; false when the connection closed meanwhile.
asio::awaitable<bool> wait_for(Connection& conn, std::chrono::steady_clock::duration d) {
  if (d.count() <= 0) co_return !conn.closed;
  conn.timer.expires_after(d);
  auto [ec] = co_await conn.timer.async_wait(kUseAwaitable);
  co_return !conn.closed && !ec;
}

asio::awaitable<bool> write_all(Connection& conn, const std::string& data,
                                std::chrono::milliseconds timeout) {
  if (conn.closed) co_return false;
  conn.stream.expires_after(timeout);
  auto [ec, n] = co_await asio::async_write(conn.stream, asio::buffer(data), kUseAwaitable);
  conn.stream.expires_never();
  co_return !ec && !conn.closed;
}

/// Writes `data` in 8 pieces spread over `total`.
asio::awaitable<bool> write_slowly(Connection& conn, const std::string& data,
                                   std::chrono::milliseconds total,
                                   std::chrono::milliseconds timeout) {
  constexpr std::size_t kPieces = 8;
  const std::size_t piece = (data.size() + kPieces - 1) / kPieces;
  const auto gap = total / static_cast<int>(kPieces);
  for (std::size_t off = 0; off < data.size(); off += piece) {
    if (!co_await wait_for(conn, gap)) co_return false;
    if (!co_await write_all(conn, data.substr(off, piece), timeout)) co_return false;
  }
  co_return true;
}

/// Sends nothing more; drains whatever arrives until the peer closes or the server stops.
asio::awaitable<void> stall_until_closed(Connection& conn) {
  std::array<char, 1024> sink{};
  conn.stream.expires_never();
  for (;;) {
    auto [ec, n] = co_await conn.stream.async_read_some(asio::buffer(sink), kUseAwaitable);
    if (ec || conn.closed) co_return;
  }
}

/// Writes and empties `pending` (nothing to do when it is empty).
asio::awaitable<bool> flush(Connection& conn, std::string& pending,
                            std::chrono::milliseconds timeout) {
  if (pending.empty()) co_return true;
  const bool written = co_await write_all(conn, pending, timeout);
  pending.clear();
  co_return written;
}

/// Writes a stream's events (the first `count` of them), each as a chunk when `chunked`.
/// With a gap, one write per event after waiting it; without, the events are written in
/// batches of about 64 KiB.
asio::awaitable<bool> write_events(Connection& conn, const StreamEvents& events, std::size_t count,
                                   bool chunked, std::chrono::steady_clock::duration first_gap,
                                   std::chrono::steady_clock::duration gap,
                                   std::chrono::milliseconds timeout) {
  constexpr std::size_t kBatch = 64 * 1024;
  std::string pending;
  for (std::size_t i = 0; i < count; ++i) {
    const auto pause = i == 0 ? first_gap : gap;
    if (pause.count() > 0) {
      const bool flushed = co_await flush(conn, pending, timeout);  // due before the pause
      if (!flushed) co_return false;
      const bool waited = co_await wait_for(conn, pause);
      if (!waited) co_return false;
    }
    const std::string event = events.at(i);
    pending += chunked ? chunk_of(event) : event;
    if (pending.size() >= kBatch || i + 1 == count) {
      const bool flushed = co_await flush(conn, pending, timeout);
      if (!flushed) co_return false;
    }
  }
  co_return true;
}

/// Lingering close after an error answer: stop sending, then discard what the peer still
/// sends (e.g. the rest of a too-large body) until it closes or `limit` passes, so the
/// peer reads the answer instead of a reset.
asio::awaitable<void> drain_and_close(Connection& conn, std::chrono::milliseconds limit) {
  error_code ec;
  conn.stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  std::array<char, 4096> sink{};
  conn.stream.expires_after(limit);
  for (;;) {
    auto [read_ec, n] = co_await conn.stream.async_read_some(asio::buffer(sink), kUseAwaitable);
    if (read_ec || conn.closed) break;
  }
  conn.close();
}

/// Carries out one plan. Returns false when the connection must not be reused.
asio::awaitable<bool> carry_out(Connection& conn, const ResponsePlan& plan, bool keep_alive,
                                bool http11, std::chrono::milliseconds timeout) {
  if (!co_await wait_for(conn, plan.delay)) co_return false;
  switch (plan.action) {
    case ResponsePlan::Action::reset:
      conn.reset();
      co_return false;
    case ResponsePlan::Action::stall:
      co_await stall_until_closed(conn);
      co_return false;
    case ResponsePlan::Action::respond: {
      const std::string& body = plan.response.body;
      const std::string head =
          response_head(plan.response, keep_alive && !plan.truncate, body.size(), http11);
      if (plan.truncate) {
        const std::string partial = head + body.substr(0, body.size() / 2);
        co_await write_all(conn, partial, timeout);
        conn.close();
        co_return false;
      }
      if (plan.slow_body.count() > 0) {
        if (!co_await write_all(conn, head, timeout)) co_return false;
        if (!co_await write_slowly(conn, body, plan.slow_body, timeout)) co_return false;
        co_return keep_alive;
      }
      const std::string all = head + body;
      if (!co_await write_all(conn, all, timeout)) co_return false;
      co_return keep_alive;
    }
    case ResponsePlan::Action::stream: {
      // HTTP/1.0 peers get a close-delimited stream.
      const bool chunked = http11;
      const bool cut = plan.cut != ResponsePlan::StreamCut::none;
      const bool keep = keep_alive && chunked && !cut;
      if (!co_await write_all(conn, response_head(plan.response, keep, std::nullopt, http11),
                              timeout))
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
      if (!co_await write_events(conn, events, count, chunked, first_gap, gap, timeout))
        co_return false;
      if (plan.cut == ResponsePlan::StreamCut::stall) {
        co_await stall_until_closed(conn);
        co_return false;
      }
      if (cut || !chunked) {
        conn.close();
        co_return false;
      }
      if (!co_await write_all(conn, last_chunk(), timeout)) co_return false;
      co_return keep;
    }
  }
  co_return false;
}

asio::awaitable<void> run_connection(std::shared_ptr<State> st, std::shared_ptr<Connection> conn,
                                     std::uint64_t id) {
  const MockConfig& cfg = st->service.config();
  const auto timeout = cfg.idle_timeout;
  error_code ep_ec;
  const auto remote = conn->stream.socket().remote_endpoint(ep_ec);
  const bool loopback = !ep_ec && is_loopback(remote.address());
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(cfg.max_header_bytes));
    parser.body_limit(static_cast<std::uint64_t>(cfg.max_body_bytes));
    conn->stream.expires_after(timeout);
    auto [ec, n] = co_await http::async_read_header(conn->stream, buffer, parser, kUseAwaitable);
    if (!ec && !parser.is_done()) {
      const auto expect = parser.get()[http::field::expect];
      if (expect.size() == 12 && beast::iequals(expect, "100-continue")) {
        const std::string cont = continue_response();
        if (!co_await write_all(*conn, cont, timeout)) break;
      }
      conn->stream.expires_after(timeout);
      auto [ec2, n2] = co_await http::async_read(conn->stream, buffer, parser, kUseAwaitable);
      ec = ec2;
    }
    conn->stream.expires_never();
    if (ec) {
      if (conn->closed) break;
      if (const auto status = read_error_status(ec)) {
        st->service.note_protocol_error(*status);
        const MockHttpResponse r = protocol_error(*status);
        const std::string bytes = response_head(r, false, r.body.size(), true) + r.body;
        if (co_await write_all(*conn, bytes, timeout))
          co_await drain_and_close(*conn, std::chrono::milliseconds(2000));
      }
      break;
    }
    const auto& msg = parser.get();
    const bool http11 = msg.version() >= 11;
    const MockHttpRequest req = to_mock_request(msg, loopback);
    const ResponsePlan plan = st->service.handle(req, std::chrono::steady_clock::now());
    const bool keep_alive = msg.keep_alive() && !plan.close;
    if (spdlog::should_log(spdlog::level::debug))  // the arguments cost even when off
      spdlog::debug("llmq-mock-azure: #{} {} {} -> {}{}", id, req.method, path_of(req.target),
                    plan.action == ResponsePlan::Action::reset ? std::string("reset")
                    : plan.action == ResponsePlan::Action::stall
                        ? std::string("stall")
                        : std::to_string(plan.response.status),
                    plan.deployment.empty() ? std::string() : " [" + plan.deployment + "]");
    if (!co_await carry_out(*conn, plan, keep_alive, http11, timeout)) break;
    if (!keep_alive) break;
  }
  if (!conn->closed) {
    error_code ec;
    conn->stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    conn->close();
  }
  std::lock_guard lock(st->mu);
  st->connections.erase(id);
}

asio::awaitable<void> accept_loop(std::shared_ptr<State> st) {
  asio::steady_timer backoff(st->acceptor_strand);
  for (;;) {
    asio::any_io_executor conn_ex = asio::make_strand(st->ex);
    auto [ec, socket] = co_await st->acceptor.async_accept(conn_ex, kUseAwaitable);
    if (ec) {
      if (ec == asio::error::operation_aborted || !st->acceptor.is_open()) co_return;
      // E.g. too many open files: breathe, then go on accepting.
      spdlog::warn("llmq-mock-azure: accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(kUseAwaitable);
      continue;
    }
    auto conn = std::make_shared<Connection>(std::move(socket));
    std::uint64_t id = 0;
    {
      std::lock_guard lock(st->mu);
      if (st->stopped) {
        conn->close();
        co_return;
      }
      id = ++st->next_id;
      st->connections.emplace(id, conn);
    }
    asio::co_spawn(conn->stream.get_executor(), run_connection(st, conn, id), log_exception);
  }
}

}  // namespace

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
  const tcp::endpoint endpoint(addr, port);
  tcp::acceptor& acceptor = state_->acceptor;
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  const unsigned short bound = acceptor.local_endpoint().port();
  {
    std::lock_guard lock(state_->mu);
    state_->port = bound;
    if (addr.is_unspecified())
      state_->host = addr.is_v6() ? "[::1]" : "127.0.0.1";
    else
      state_->host = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  }
  asio::co_spawn(state_->acceptor_strand, accept_loop(state_), log_exception);
  return bound;
}

void MockAzureServer::stop() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stopped) return;
    state_->stopped = true;
    for (const auto& [id, weak] : state_->connections)
      if (auto c = weak.lock()) open.push_back(std::move(c));
  }
  asio::post(state_->acceptor_strand, [st = state_] {
    error_code ec;
    st->acceptor.close(ec);
  });
  for (auto& c : open) asio::post(c->stream.get_executor(), [c] { c->close(); });
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
