// The HTTP/1.1 server loop shared by llmq-gateway and llmq-mock-azure (see http_server.hpp).
#include "http_server.hpp"

#include <llmq/log.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#if LLMQ_SERVER_TLS
#include <openssl/ssl.h>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#endif

#include <llmq/errors.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <type_traits>

namespace llmq::server {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using beast::error_code;

constexpr auto kUseAwaitable = asio::as_tuple(asio::use_awaitable);
/// Bytes asked of one read (Beast's own default).
constexpr std::size_t kReadChunk = 64 * 1024;

/// The status of a refusal for a failed read, or none when the connection just closes
/// (the peer left, a timeout, a cancellation).
std::optional<unsigned> refusal_status(const error_code& ec) {
  if (ec == http::error::body_limit) return 413;
  if (ec == http::error::header_limit) return 431;
  if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::end_of_stream && ec != http::error::partial_message)
    return 400;
  return std::nullopt;
}

bool wants_continue(const http::request_parser<http::string_body>& parser) {
  const auto& msg = parser.get();
  return msg.version() >= 11 && beast::iequals(msg[http::field::expect], "100-continue");
}

std::string_view continue_response() { return "HTTP/1.1 100 Continue\r\n\r\n"; }

void log_exception(const std::string& name, std::exception_ptr e) {
  if (!e) return;
  static LogThrottle throttle;  // one per connection otherwise
  const auto held = throttle.admit();
  if (!held) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    logger()->warn("{}: connection ended with: {}{}", name, ex.what(), held_back_note(*held));
  } catch (...) {
    logger()->warn("{}: connection ended with an unknown exception{}", name, held_back_note(*held));
  }
}

/// What the accept loop and the server's bookkeeping need of a connection, whatever its
/// transport.
class ServerConnection : public Connection, public std::enable_shared_from_this<ServerConnection> {
 public:
  explicit ServerConnection(std::uint64_t id) : id_(id) {}
  [[nodiscard]] virtual asio::any_io_executor executor() = 0;
  /// Where run() is cancelled from when the client disconnects mid-request.
  [[nodiscard]] virtual asio::cancellation_slot cancellation_slot() = 0;
  /// Serves requests until the connection should close.
  virtual asio::awaitable<void> run() = 0;
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  /// Idle bookkeeping, under State::mu.
  std::list<std::shared_ptr<ServerConnection>>::iterator idle_pos_;
  bool idle_ = false;
  bool evicted_ = false;

 private:
  std::uint64_t id_;
};

#if LLMQ_SERVER_TLS
namespace ssl = asio::ssl;
using TlsContext = ssl::context;

/// Mozilla's "intermediate" TLS 1.2 suites (forward secret, AEAD only); TLS 1.3 uses
/// OpenSSL's defaults, all of them sound.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

/// ALPN: http/1.1 when the client offers it; otherwise no ALPN (HTTP/1.1 all the same).
int select_http11(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in,
                  unsigned int in_len, void*) {
  static const unsigned char http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  unsigned char selected_len = 0;
  if (SSL_select_next_proto(&selected, &selected_len, http11, sizeof http11, in, in_len) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = selected;
  *out_len = selected_len;
  return SSL_TLSEXT_ERR_OK;
}

/// Runs `load`, turning a failure into a ConfigError that names `what` and `path`.
template <class Load>
void load_tls_file(const char* what, const std::string& path, Load&& load) {
  boost::system::error_code ec;
  load(ec);
  if (ec) throw ConfigError(std::string(what) + " '" + path + "': " + ec.message());
}

std::shared_ptr<TlsContext> make_tls_context(const TlsFiles& f) {
  auto ctx = std::make_shared<TlsContext>(TlsContext::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  ctx->set_options(TlsContext::default_workarounds | TlsContext::no_compression |
                   TlsContext::single_dh_use);
  SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_cipher_list(native, kTls12Ciphers);
  load_tls_file("TLS certificate chain", f.cert_file,
                [&](auto& ec) { ctx->use_certificate_chain_file(f.cert_file, ec); });
  load_tls_file("TLS private key", f.key_file,
                [&](auto& ec) { ctx->use_private_key_file(f.key_file, TlsContext::pem, ec); });
  if (SSL_CTX_check_private_key(native) != 1)
    throw ConfigError("TLS private key '" + f.key_file + "' does not match the certificate in '" +
                      f.cert_file + "'");
  if (!f.client_ca_file.empty()) {
    load_tls_file("TLS client CA file", f.client_ca_file,
                  [&](auto& ec) { ctx->load_verify_file(f.client_ca_file, ec); });
    // The CA names a client is told to choose its certificate by.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(f.client_ca_file.c_str()))
      SSL_CTX_set_client_CA_list(native, names);
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
    static const unsigned char kSessionContext[] = "llmq-http-server";
    SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1);
  }
  SSL_CTX_set_alpn_select_cb(native, select_http11, nullptr);
  return ctx;
}
#else
struct TlsContext {};
#endif

}  // namespace

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(asio::any_io_executor e, ServerOptions o, std::shared_ptr<RequestHandler> h)
      : ex(std::move(e)),
        options(std::move(o)),
        handler(std::move(h)),
        accept_strand(asio::make_strand(ex)),
        acceptor(accept_strand) {
    if (options.max_connections == 0) options.max_connections = 1;
  }

  asio::any_io_executor ex;
  ServerOptions options;
  std::shared_ptr<RequestHandler> handler;
  asio::strand<asio::any_io_executor> accept_strand;
  tcp::acceptor acceptor;

  mutable std::mutex mu;  // everything below
  bool stopping = false;
  std::shared_ptr<TlsContext> tls;  // null: clear text
  std::uint64_t next_id = 0;
  std::map<std::uint64_t, std::weak_ptr<ServerConnection>> all;
  std::list<std::shared_ptr<ServerConnection>> idle;  // longest idle first
  std::size_t alive = 0;                              // coroutines still running
  ServerStats counters;
  std::chrono::steady_clock::time_point last_accept_log{};
  std::uint64_t unlogged_accept_errors = 0;

  bool is_stopping() const {
    std::lock_guard lock(mu);
    return stopping;
  }

  /// Under `mu`: closes the longest-idle connection, if any. True when one was closed.
  bool evict_idle_locked();

  void admit(tcp::socket socket);
  void log_accept_error(const error_code& ec);
  void finished(const std::shared_ptr<ServerConnection>& c);
  void handshake_failed() {
    std::lock_guard lock(mu);
    ++counters.tls_handshake_failures;
  }
};

namespace {

using State = HttpServer::State;

/// The transports: clear text, and TLS over it.
using PlainStream = beast::tcp_stream;
#if LLMQ_SERVER_TLS
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
#endif

template <class Stream>
class ConnectionImpl final : public ServerConnection {
  static constexpr bool kTls = !std::is_same_v<Stream, PlainStream>;

 public:
  ConnectionImpl(std::shared_ptr<State> st, tcp::socket socket, std::uint64_t id,
                 std::shared_ptr<TlsContext> tls)
      : ServerConnection(id),
        st_(std::move(st)),
        tls_(std::move(tls)),
        stream_(make_stream(std::move(socket), tls_.get())),
        timer_(stream_.get_executor()),
        fin_timer_(stream_.get_executor()),
        // A header section plus one read: the parser moves body bytes out as they come.
        buffer_(st_->options.max_header_bytes + kReadChunk) {
    error_code ec;
    const auto remote = socket_().remote_endpoint(ec);
    loopback_ = !ec && is_loopback(remote.address());
    socket_().set_option(tcp::no_delay(true), ec);
    buffer_.reserve(8 * 1024);  // room for a typical request: one read takes it whole
  }

  // ---- Connection --------------------------------------------------------------------

  asio::awaitable<bool> write(std::string_view head, std::string_view body) override {
    if (closed_) co_return false;
    // Answering: a client that closes once it has read the answer has not disconnected
    // early, and there is nothing left to cancel (a write to a peer that is gone fails).
    stop_watching();
    co_return co_await write_part(head, body);
  }

  asio::awaitable<bool> write_part(std::string_view head, std::string_view body) override {
    if (closed_) co_return false;
    const std::array<asio::const_buffer, 2> wire{asio::buffer(head.data(), head.size()),
                                                 asio::buffer(body.data(), body.size())};
    tcp_().expires_after(st_->options.read_timeout);
    auto [ec, n] = co_await asio::async_write(stream_, wire, kUseAwaitable);
    (void)n;
    if (!closed_) tcp_().expires_never();
    co_return !ec && !closed_;
  }

  asio::awaitable<bool> wait(std::chrono::steady_clock::duration d) override {
    if (d.count() <= 0) co_return !closed_;
    timer_.expires_after(d);
    auto [ec] = co_await timer_.async_wait(kUseAwaitable);
    co_return !closed_ && !ec;
  }

  asio::awaitable<void> discard_input() override {
    std::array<char, 4096> sink{};
    tcp_().expires_never();
    while (!closed_) {
      auto [ec, n] = co_await stream_.async_read_some(asio::buffer(sink), kUseAwaitable);
      (void)n;
      if (ec) break;
    }
  }

  void close() override {
    if (closed_) return;
    closed_ = true;
    error_code ec;
    socket_().shutdown(tcp::socket::shutdown_both, ec);
    tcp_().close();  // also cancels the stream's expiry timer
    timer_.cancel();
    fin_timer_.cancel();
  }

  void reset() override {
    if (closed_) return;
    closed_ = true;
    error_code ec;
    socket_().set_option(asio::socket_base::linger(true, 0), ec);
    tcp_().close();
    timer_.cancel();
    fin_timer_.cancel();
  }

  [[nodiscard]] bool closed() const noexcept override { return closed_; }
  [[nodiscard]] bool client_gone() const noexcept override { return gone_; }
  [[nodiscard]] bool stopping() const noexcept override { return st_->is_stopping(); }
  [[nodiscard]] bool remote_is_loopback() const noexcept override { return loopback_; }

  // ---- the server's side -------------------------------------------------------------

  [[nodiscard]] asio::any_io_executor executor() override { return stream_.get_executor(); }
  [[nodiscard]] asio::cancellation_slot cancellation_slot() override { return cancel_.slot(); }

  asio::awaitable<void> run() override {
    if constexpr (kTls) {
      if (!co_await handshake()) {
        close();
        co_return;
      }
    }
    while (!closed_) {
      if (!co_await await_first_byte()) break;
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(st_->options.max_header_bytes));
      parser.body_limit(st_->options.max_body_bytes);
      tcp_().expires_after(st_->options.header_timeout);
      auto [ec, n] = co_await http::async_read_header(stream_, buffer_, parser, kUseAwaitable);
      (void)n;
      if (!ec && !parser.is_done()) {
        if (wants_continue(parser) && !co_await write(continue_response(), {})) break;
        tcp_().expires_after(st_->options.read_timeout);
        auto [body_ec, body_n] = co_await http::async_read(stream_, buffer_, parser, kUseAwaitable);
        (void)body_n;
        ec = body_ec;
      }
      if (closed_) break;
      tcp_().expires_never();
      if (ec) {
        if (const auto status = refusal_status(ec)) co_await refuse(*status);
        break;
      }
      if (!co_await serve(parser.release())) break;
    }
    close();
  }

 private:
  static Stream make_stream(tcp::socket socket, [[maybe_unused]] TlsContext* tls) {
    if constexpr (kTls)
      return Stream(std::move(socket), *tls);
    else
      return Stream(std::move(socket));
  }
  beast::tcp_stream& tcp_() { return beast::get_lowest_layer(stream_); }
  tcp::socket& socket_() { return tcp_().socket(); }

  /// The TLS handshake, within header_timeout.
  asio::awaitable<bool> handshake() {
#if LLMQ_SERVER_TLS
    if constexpr (kTls) {
      tcp_().expires_after(st_->options.header_timeout);
      auto [ec] = co_await stream_.async_handshake(ssl::stream_base::server, kUseAwaitable);
      if (!closed_) tcp_().expires_never();
      if (ec) {
        st_->handshake_failed();
        co_return false;
      }
    }
#endif
    co_return !closed_;
  }

  /// Waits (idle: evictable) for the next request's first byte, unless some are buffered.
  asio::awaitable<bool> await_first_byte() {
    if (buffer_.size() > 0) co_return true;
    {
      std::lock_guard lock(st_->mu);
      if (st_->stopping || evicted_) co_return false;
      idle_pos_ = st_->idle.insert(st_->idle.end(), shared_from_this());
      idle_ = true;
    }
    tcp_().expires_after(st_->options.idle_timeout);
    auto [ec, n] = co_await stream_.async_read_some(
        buffer_.prepare(beast::read_size(buffer_, kReadChunk)), kUseAwaitable);
    bool evicted = false;
    {
      std::lock_guard lock(st_->mu);
      if (idle_) st_->idle.erase(idle_pos_);
      idle_ = false;
      evicted = evicted_;
    }
    if (ec || evicted || closed_) co_return false;
    buffer_.commit(n);
    co_return true;
  }

  static IncomingRequest to_request(http::request<http::string_body>&& msg, bool stopping) {
    IncomingRequest r;
    r.method = std::string(msg.method_string());
    r.target = std::string(msg.target());
    r.headers.reserve(8);
    for (const auto& f : msg) r.headers.emplace_back(f.name_string(), f.value());
    r.version = msg.version();
    r.keep_alive = msg.keep_alive() && !stopping;
    r.body = std::move(msg.body());
    return r;
  }

  /// Hands one request to the handler; true to read the next.
  asio::awaitable<bool> serve(http::request<http::string_body>&& msg) {
    IncomingRequest request = to_request(std::move(msg), st_->is_stopping());
    RequestHandler& handler = *st_->handler;
    bool keep = false;
    try {
      if (st_->options.cancel_on_disconnect && buffer_.size() == 0) {
        // A disconnect emits `cancel_` (bound to this connection's coroutine), which
        // cancels whatever the handler awaits then.
        watching_ = true;
        watch_for_disconnect();
        try {
          keep = co_await handler.serve(*this, std::move(request));
        } catch (...) {
          stop_watching();
          throw;
        }
        stop_watching();
      } else {
        keep = co_await handler.serve(*this, std::move(request));
      }
    } catch (const boost::system::system_error& e) {
      if (!gone_ && e.code() != asio::error::operation_aborted)
        log_exception(st_->options.name, std::current_exception());
      keep = false;
    } catch (...) {
      log_exception(st_->options.name, std::current_exception());
      keep = false;
    }
    co_return keep && !gone_ && !closed_;
  }

  /// Notices the peer's FIN or RST while the handler runs, without consuming bytes: wait
  /// for readability, then peek. (Asio re-arms the edge-triggered registration for a
  /// readiness wait, so a FIN that arrived before the wait still completes it.) Pipelined
  /// bytes end the watch: they are the next request's, read later.
  void watch_for_disconnect() {
    const std::uint64_t generation = ++watch_generation_;
    socket_().async_wait(tcp::socket::wait_read,
                         [self = std::static_pointer_cast<ConnectionImpl>(shared_from_this()),
                          generation](const error_code& ec) {
                           if (ec || generation != self->watch_generation_ || self->closed_) return;
                           self->peer_readable(generation);
                         });
  }

  void peer_readable(std::uint64_t generation) {
    char byte = 0;
    const auto n = ::recv(socket_().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      // Clear text: pipelined bytes. Under TLS they may as well be the client's
      // close_notify (encrypted, so it cannot be told from data): look for the FIN behind
      // them now and then, until the handler is done.
      if constexpr (kTls) watch_for_fin(generation);
      return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      watch_for_disconnect();  // nothing after all
      return;
    }
    gone_ = true;  // FIN (0) or an error such as a reset
    st_->handler->on_client_disconnect();
    cancel_.emit(asio::cancellation_type::terminal);
  }

  /// Under TLS, with bytes waiting: the peer is gone once it has shut its side down.
  void watch_for_fin(std::uint64_t generation) {
    pollfd p{};
    p.fd = socket_().native_handle();
    p.events = POLLRDHUP;
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
      gone_ = true;
      st_->handler->on_client_disconnect();
      cancel_.emit(asio::cancellation_type::terminal);
      return;
    }
    fin_timer_.expires_after(std::chrono::milliseconds(100));
    fin_timer_.async_wait([self = std::static_pointer_cast<ConnectionImpl>(shared_from_this()),
                           generation](const error_code& ec) {
      if (ec || generation != self->watch_generation_ || self->closed_) return;
      self->watch_for_fin(generation);
    });
  }

  void stop_watching() {
    if (!watching_) return;
    watching_ = false;
    ++watch_generation_;
    if (closed_) return;
    error_code ec;
    socket_().cancel(ec);  // only the readiness wait is pending now
  }

  /// Answers a refused request, then lingers: stop sending, discard what still arrives
  /// (the rest of an oversize body) for a while, so the client reads the answer.
  asio::awaitable<void> refuse(unsigned status) {
    const std::string answer = st_->handler->refusal(status);
    if (!co_await write(answer, {})) co_return;
    error_code ec;
    socket_().shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 4096> sink{};
    tcp_().expires_after(st_->options.linger);
    while (!closed_) {
      auto [read_ec, n] = co_await stream_.async_read_some(asio::buffer(sink), kUseAwaitable);
      (void)n;
      if (read_ec) break;
    }
  }

  std::shared_ptr<State> st_;
  std::shared_ptr<TlsContext> tls_;  // outlives stream_
  Stream stream_;
  asio::steady_timer timer_;      // Connection::wait
  asio::steady_timer fin_timer_;  // watch_for_fin
  beast::flat_buffer buffer_;
  bool closed_ = false;
  bool gone_ = false;
  bool loopback_ = false;
  std::uint64_t watch_generation_ = 0;
  bool watching_ = false;             // watching for a disconnect while the handler runs
  asio::cancellation_signal cancel_;  // bound to run()'s coroutine (cancel_on_disconnect)
};

asio::awaitable<void> accept_loop(std::shared_ptr<State> st) {
  asio::steady_timer backoff(st->accept_strand);
  for (;;) {
    const asio::any_io_executor conn_ex = st->options.strand_per_connection
                                              ? asio::any_io_executor(asio::make_strand(st->ex))
                                              : st->ex;
    auto [ec, socket] = co_await st->acceptor.async_accept(conn_ex, kUseAwaitable);
    if (ec) {
      if (ec == asio::error::operation_aborted || !st->acceptor.is_open() || st->is_stopping())
        co_return;
      st->log_accept_error(ec);
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        std::lock_guard lock(st->mu);
        st->evict_idle_locked();  // frees a descriptor for the next client
      }
      backoff.expires_after(st->options.accept_backoff);
      co_await backoff.async_wait(kUseAwaitable);
      continue;
    }
    st->admit(std::move(socket));
  }
}

}  // namespace

bool HttpServer::State::evict_idle_locked() {
  if (idle.empty()) return false;
  std::shared_ptr<ServerConnection> victim = std::move(idle.front());
  idle.pop_front();
  victim->idle_ = false;
  victim->evicted_ = true;
  ++counters.evicted;
  --counters.open;
  asio::post(victim->executor(), [victim] { victim->close(); });
  return true;
}

void HttpServer::State::admit(tcp::socket socket) {
  std::shared_ptr<ServerConnection> conn;
  {
    std::lock_guard lock(mu);
    if (stopping) return;
    if (counters.open >= options.max_connections && !evict_idle_locked()) {
      ++counters.refused;
      error_code ignored;
      socket.close(ignored);
      return;
    }
    ++counters.open;
    ++counters.accepted;
    ++alive;
    const std::uint64_t id = ++next_id;
#if LLMQ_SERVER_TLS
    if (tls)
      conn = std::make_shared<ConnectionImpl<TlsStream>>(shared_from_this(), std::move(socket), id,
                                                         tls);
    else
#endif
      conn = std::make_shared<ConnectionImpl<PlainStream>>(shared_from_this(), std::move(socket),
                                                           id, nullptr);
    all.emplace(id, conn);
  }
  auto self = shared_from_this();
  auto done = [self, conn](std::exception_ptr e) {
    log_exception(self->options.name, e);
    self->finished(conn);
  };
  if (options.cancel_on_disconnect)
    asio::co_spawn(conn->executor(), conn->run(),
                   asio::bind_cancellation_slot(conn->cancellation_slot(), std::move(done)));
  else
    asio::co_spawn(conn->executor(), conn->run(), std::move(done));
}

void HttpServer::State::finished(const std::shared_ptr<ServerConnection>& c) {
  std::lock_guard lock(mu);
  if (c->idle_) {
    idle.erase(c->idle_pos_);
    c->idle_ = false;
  }
  if (!c->evicted_) --counters.open;
  --alive;
  all.erase(c->id());
}

void HttpServer::State::log_accept_error(const error_code& ec) {
  std::lock_guard lock(mu);
  ++counters.accept_errors;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_accept_log < std::chrono::seconds(5)) {
    ++unlogged_accept_errors;
    return;
  }
  logger()->warn("{}: accept failed: {} (backing off {} ms; {} more since the last report)",
                 options.name, ec.message(), options.accept_backoff.count(),
                 unlogged_accept_errors);
  last_accept_log = now;
  unlogged_accept_errors = 0;
}

bool is_loopback(const asio::ip::address& a) {
  if (a.is_loopback()) return true;
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback();
  return false;
}

HttpServer::HttpServer(asio::any_io_executor ex, ServerOptions options,
                       std::shared_ptr<RequestHandler> handler)
    : state_(std::make_shared<State>(std::move(ex), std::move(options), std::move(handler))) {
  if (!state_->options.tls.cert_file.empty()) set_tls(state_->options.tls);
}

LoadedTls HttpServer::load_tls(const TlsFiles& files) {
  LoadedTls loaded;
  if (!files.cert_file.empty()) {
#if LLMQ_SERVER_TLS
    loaded.context_ = make_tls_context(files);
#else
    throw ConfigError("this build of llmq has no TLS support (OpenSSL was not found)");
#endif
  }
  return loaded;
}

void HttpServer::use_tls(LoadedTls tls) {
  std::shared_ptr<TlsContext> ctx = std::static_pointer_cast<TlsContext>(std::move(tls.context_));
  std::lock_guard lock(state_->mu);
  state_->tls = std::move(ctx);
}

void HttpServer::set_tls(const TlsFiles& files) { use_tls(load_tls(files)); }

bool HttpServer::tls() const {
  std::lock_guard lock(state_->mu);
  return state_->tls != nullptr;
}

HttpServer::~HttpServer() { close_all(); }

unsigned short HttpServer::listen(const tcp::endpoint& endpoint) {
  tcp::acceptor& acceptor = state_->acceptor;
  acceptor.open(endpoint.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  return acceptor.local_endpoint().port();
}

asio::awaitable<void> HttpServer::run() {
  std::shared_ptr<State> st = state_;  // the coroutine must not need `this` once suspended
  co_await asio::co_spawn(st->accept_strand, accept_loop(st), asio::use_awaitable);
}

void HttpServer::stop() {
  std::vector<std::shared_ptr<ServerConnection>> idle;
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
    for (auto& c : state_->idle) idle.push_back(c);
  }
  asio::post(state_->accept_strand, [st = state_] {
    error_code ec;
    st->acceptor.close(ec);
  });
  for (auto& c : idle) asio::post(c->executor(), [c] { c->close(); });
}

void HttpServer::close_all() {
  std::vector<std::shared_ptr<ServerConnection>> open;
  {
    std::lock_guard lock(state_->mu);
    state_->stopping = true;
    for (const auto& [id, weak] : state_->all)
      if (auto c = weak.lock()) open.push_back(std::move(c));
  }
  asio::post(state_->accept_strand, [st = state_] {
    error_code ec;
    st->acceptor.close(ec);
  });
  for (auto& c : open) asio::post(c->executor(), [c] { c->close(); });
}

asio::awaitable<void> HttpServer::drain(std::chrono::milliseconds limit) {
  auto st = state_;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  asio::steady_timer poll(co_await asio::this_coro::executor);
  for (;;) {
    {
      std::lock_guard lock(st->mu);
      if (st->alive == 0) co_return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) co_return;
    poll.expires_after(std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(10),
                                                                     deadline - now));
    co_await poll.async_wait(kUseAwaitable);
  }
}

ServerStats HttpServer::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->counters;
}

}  // namespace llmq::server
