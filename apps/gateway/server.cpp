// The Beast HTTP/1.1 server of llmq-gateway.
#include "gateway.hpp"

#include <llmq/log.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <list>
#include <string>
#include <string_view>

namespace llmq::gateway {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct GatewayServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, Gateway& g, GatewayConfig c)
      : executor(ex), acceptor(ex), gateway(g), config(std::move(c)), drained(ex) {}

  asio::any_io_executor executor;
  tcp::acceptor acceptor;
  Gateway& gateway;
  GatewayConfig config;
  bool stopping = false;
  std::size_t open = 0;
  std::list<beast::tcp_stream*> idle;  // connections waiting for their next request
  asio::steady_timer drained;

  static HttpAnswer plain_error(int status, std::string_view message, std::string_view code) {
    return error_answer(status, message, "invalid_request_error", code);
  }

  /// The status line and header fields of an answer (all of them the gateway's own), as
  /// Beast would frame them: Content-Length, and Connection where the version's default
  /// differs. Statuses that carry no body (1xx, 204, 304) get neither length nor body.
  static std::string response_head(const HttpAnswer& a, unsigned version, bool keep_alive) {
    std::string head;
    head.reserve(160);
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
    if (has_body(a.status)) {
      head += "Content-Length: ";
      head += std::to_string(a.body.size());
      head += "\r\n";
    }
    head += "\r\n";
    return head;
  }

  static bool has_body(int status) { return status >= 200 && status != 204 && status != 304; }

  /// Writes one answer (head and body in one gather write) within read_timeout.
  asio::awaitable<beast::error_code> write_answer(beast::tcp_stream& stream, const HttpAnswer& a,
                                                  unsigned version, bool keep_alive) {
    const std::string head = response_head(a, version, keep_alive);
    const std::array<asio::const_buffer, 2> wire{
        asio::buffer(head), has_body(a.status) ? asio::buffer(a.body) : asio::const_buffer()};
    stream.expires_after(config.read_timeout);
    auto [ec, n] = co_await asio::async_write(stream, wire, asio::as_tuple(asio::use_awaitable));
    (void)n;
    co_return ec;
  }

  static HttpExchange to_exchange(http::request<http::string_body>& req) {
    HttpExchange x;
    x.method = std::string(req.method_string());
    x.target = std::string(req.target());
    for (const auto& f : req) {
      std::string name(f.name_string());
      for (char& c : name)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');  // ASCII token
      x.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    x.body = std::move(req.body());
    return x;
  }

  asio::awaitable<void> session(tcp::socket socket) {
    auto self = shared_from_this();
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    // Room for a typical request, so that one read takes it whole (reads ask for the
    // buffer's free space, at least 512 bytes).
    buffer.reserve(8 * 1024);
    for (;;) {
      // Wait for the next request's first byte up to idle_timeout (stop() closes idle
      // connections), then the whole request within read_timeout.
      if (stopping) break;
      auto it = idle.insert(idle.end(), &stream);
      stream.expires_after(config.idle_timeout);
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(config.max_header_bytes));
      parser.body_limit(config.max_body_bytes);
      auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser,
                                                        asio::as_tuple(asio::use_awaitable));
      idle.erase(it);
      (void)hn;
      std::optional<HttpAnswer> early;
      if (!hec) {
        stream.expires_after(config.read_timeout);
        auto [bec, bn] =
            co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
        (void)bn;
        hec = bec;
      }
      if (hec) {
        if (hec == http::error::end_of_stream || hec == beast::error::timeout ||
            hec == asio::error::operation_aborted || hec == asio::error::connection_reset ||
            hec == asio::error::eof || hec == asio::error::bad_descriptor)
          break;
        if (hec == http::error::body_limit)
          early = plain_error(413, "request body too large", "body_too_large");
        else if (hec == http::error::header_limit)
          early = plain_error(431, "request headers too large", "headers_too_large");
        else
          early = plain_error(400, "malformed HTTP request", "bad_http");
        // Answer, then close: the stream's framing can no longer be trusted.
        co_await write_answer(stream, *early, 11, false);
        break;
      }
      auto req = parser.release();
      const bool keep_alive = req.keep_alive() && !stopping;
      const unsigned version = req.version();
      HttpAnswer answer = co_await gateway.handle(to_exchange(req));
      const bool keep = keep_alive && !stopping;
      const beast::error_code wec = co_await write_answer(stream, answer, version, keep);
      if (wec || !keep) break;
    }
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.socket().close(ignored);
  }

  void closed() {
    --open;
    if (open == 0) drained.cancel();
  }
};

GatewayServer::GatewayServer(asio::any_io_executor ex, Gateway& gateway, GatewayConfig config)
    : impl_(std::make_shared<Impl>(ex, gateway, std::move(config))) {}

GatewayServer::~GatewayServer() = default;

unsigned short GatewayServer::listen() {
  tcp::endpoint ep(asio::ip::make_address(impl_->config.listen_address), impl_->config.port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen(asio::socket_base::max_listen_connections);
  return impl_->acceptor.local_endpoint().port();
}

asio::awaitable<void> GatewayServer::run() {
  auto impl = impl_;
  while (!impl->stopping) {
    auto [ec, socket] = co_await impl->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (impl->stopping || ec == asio::error::operation_aborted) break;
      logger()->warn("gateway: accept failed: {}", ec.message());
      continue;
    }
    if (impl->open >= impl->config.max_connections) {
      // Over the limit: refuse at once rather than queue unbounded sockets.
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++impl->open;
    asio::co_spawn(impl->executor, impl->session(std::move(socket)), [impl](std::exception_ptr ep) {
      if (ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          logger()->warn("gateway: connection ended with: {}", e.what());
        }
      }
      impl->closed();
    });
  }
}

void GatewayServer::stop() {
  impl_->stopping = true;
  beast::error_code ignored;
  impl_->acceptor.close(ignored);
  for (beast::tcp_stream* s : impl_->idle) s->socket().close(ignored);
}

asio::awaitable<void> GatewayServer::drain(std::chrono::milliseconds limit) {
  auto impl = impl_;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (impl->open > 0 && std::chrono::steady_clock::now() < deadline) {
    impl->drained.expires_at(deadline);
    co_await impl->drained.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

std::size_t GatewayServer::connections() const noexcept { return impl_->open; }

}  // namespace llmq::gateway
