// The HTTP/1.1 server of llmq-gateway: the shared llmq_http_server loop with a handler
// that maps each request through Gateway and writes the answer.
#include "gateway.hpp"

#include <http_server.hpp>

#include <boost/beast/http/status.hpp>

#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace llmq::gateway {
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

bool has_body(int status) { return status >= 200 && status != 204 && status != 304; }

/// The status line and header fields of an answer (all of them the gateway's own), as
/// Beast would frame them: Content-Length, and Connection where the version's default
/// differs. Statuses that carry no body (1xx, 204, 304) get neither length nor body.
std::string response_head(const HttpAnswer& a, unsigned version, bool keep_alive,
                          bool streamed = false) {
  std::string head;
  head.reserve(200);
  head += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  head += std::to_string(a.status);
  head += ' ';
  head += http::obsolete_reason(static_cast<http::status>(a.status));
  head += "\r\nServer: llmq-gateway\r\nContent-Type: ";
  head += a.content_type;
  head += "\r\n";
  for (const auto& [k, v] : a.headers) {
    head += k;
    head += ": ";
    head += v;
    head += "\r\n";
  }
  if (version == 10 && keep_alive) head += "Connection: keep-alive\r\n";
  if (version != 10 && !keep_alive) head += "Connection: close\r\n";
  if (streamed) {
    // HTTP/1.1: chunked; HTTP/1.0: the body ends when the connection closes.
    if (version != 10) head += "Transfer-Encoding: chunked\r\n";
  } else if (has_body(a.status)) {
    head += "Content-Length: ";
    head += std::to_string(a.body.size());
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

HttpExchange to_exchange(server::IncomingRequest& req) {
  HttpExchange x;
  x.method = std::move(req.method);
  x.target = std::move(req.target);
  x.headers = std::move(req.headers);
  for (auto& [name, value] : x.headers)
    for (char& c : name)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');  // ASCII token
  x.body = std::move(req.body);
  return x;
}

std::string_view refusal_message(unsigned status) {
  switch (status) {
    case 413:
      return "request body too large";
    case 431:
      return "request headers too large";
    default:
      return "malformed HTTP request";
  }
}

std::string_view refusal_code(unsigned status) {
  switch (status) {
    case 413:
      return "body_too_large";
    case 431:
      return "headers_too_large";
    default:
      return "bad_http";
  }
}

class GatewayHandler final : public server::RequestHandler {
 public:
  explicit GatewayHandler(Gateway& gateway) : gateway_(gateway) {}

  asio::awaitable<bool> serve(server::Connection& conn, server::IncomingRequest req) override {
    const unsigned version = req.version;
    const bool keep_alive = req.keep_alive;
    HttpAnswer answer = co_await gateway_.handle(to_exchange(req));
    if (answer.stream) co_return co_await send_stream(conn, answer, version, keep_alive);
    if (conn.client_gone()) co_return false;  // nobody to answer
    const bool keep = keep_alive && !conn.stopping();
    const std::string head = response_head(answer, version, keep);
    const bool written = co_await conn.write(
        head, has_body(answer.status) ? std::string_view(answer.body) : std::string_view());
    co_return written&& keep;
  }

  /// Sends a streamed answer: the head, then each event as it comes (one HTTP chunk
  /// each, so that it leaves at once), then the last chunk.
  static asio::awaitable<bool> send_stream(server::Connection& conn, HttpAnswer& answer,
                                           unsigned version, bool keep_alive) {
    std::size_t bytes = 0;
    int status = 499;
    bool ok = false;
    const bool chunked = version != 10;
    const bool keep = keep_alive && chunked && !conn.stopping();
    if (!conn.client_gone() &&
        co_await conn.write_part(response_head(answer, version, keep, true))) {
      std::string frame;
      std::function<asio::awaitable<bool>(std::string_view)> write =
          [&](std::string_view event) -> asio::awaitable<bool> {
        bytes += event.size();
        if (!chunked) co_return co_await conn.write_part(event);
        frame.clear();
        char size[20];
        const int n = std::snprintf(size, sizeof size, "%zx\r\n", event.size());
        frame.append(size, static_cast<std::size_t>(n));
        frame += event;
        frame += "\r\n";
        co_return co_await conn.write_part(frame);
      };
      status = co_await send_event_stream(*answer.stream, answer.request_id, write);
      ok = status != 499 && !conn.client_gone();
      if (ok && chunked) ok = co_await conn.write("0\r\n\r\n");
    }
    answer.stream->close();  // cancels the request if it still runs
    answer.stream_ended(status, bytes);
    co_return ok&& keep;
  }

  std::string refusal(unsigned status) override {
    const int s = static_cast<int>(status);
    HttpAnswer a =
        error_answer(s, refusal_message(status), "invalid_request_error", refusal_code(status));
    const std::string id = make_request_id();
    finish_answer(a, id);
    gateway_.refused_by_server(s, id);
    return response_head(a, 11, false) + a.body;
  }

  void on_client_disconnect() override { gateway_.metrics()->client_disconnected(); }

 private:
  Gateway& gateway_;
};

server::TlsFiles tls_files(const GatewayConfig& c) {
  server::TlsFiles f;
  f.cert_file = c.tls_cert_file;
  f.key_file = c.tls_key_file;
  f.client_ca_file = c.tls_client_ca_file;
  return f;
}

server::ServerOptions server_options(const GatewayConfig& c) {
  server::ServerOptions o;
  o.name = "llmq-gateway";
  o.max_connections = c.max_connections;
  o.max_header_bytes = c.max_header_bytes;
  o.max_body_bytes = c.max_body_bytes;
  o.header_timeout = c.header_timeout;
  o.read_timeout = c.read_timeout;
  o.idle_timeout = c.idle_timeout;
  o.cancel_on_disconnect = true;
  o.strand_per_connection = c.io_threads() > 1;
  o.tls = tls_files(c);
  return o;
}

}  // namespace

struct GatewayServer::Impl {
  Impl(asio::any_io_executor ex, Gateway& g, GatewayConfig c)
      : config(std::move(c)),
        server(std::move(ex), server_options(config), std::make_shared<GatewayHandler>(g)) {}
  GatewayConfig config;
  server::HttpServer server;
};

GatewayServer::GatewayServer(asio::any_io_executor ex, Gateway& gateway, GatewayConfig config)
    : impl_(std::make_shared<Impl>(std::move(ex), gateway, std::move(config))) {
  std::weak_ptr<Impl> weak = impl_;
  gateway.metrics()->connection_counters([weak] {
    ConnectionCounters c;
    if (auto impl = weak.lock()) {
      const server::ServerStats s = impl->server.stats();
      c.open = s.open;
      c.refused = s.refused;
      c.evicted = s.evicted;
      c.accept_errors = s.accept_errors;
      c.tls_handshake_failures = s.tls_handshake_failures;
    }
    return c;
  });
}

GatewayServer::~GatewayServer() = default;

unsigned short GatewayServer::listen() {
  return impl_->server.listen(asio::ip::tcp::endpoint(
      asio::ip::make_address(impl_->config.listen_address), impl_->config.port));
}

asio::awaitable<void> GatewayServer::run() {
  auto impl = impl_;
  co_await impl->server.run();
}

void GatewayServer::stop() { impl_->server.stop(); }

std::function<void()> GatewayServer::load_tls(const GatewayConfig& config) const {
  server::LoadedTls loaded = server::HttpServer::load_tls(tls_files(config));
  return [impl = impl_, loaded = std::move(loaded)] { impl->server.use_tls(loaded); };
}

asio::awaitable<void> GatewayServer::drain(std::chrono::milliseconds limit) {
  auto impl = impl_;
  co_await impl->server.drain(limit);
}

std::size_t GatewayServer::connections() const noexcept { return impl_->server.stats().open; }

}  // namespace llmq::gateway
