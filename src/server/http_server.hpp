#pragma once
// llmq_http_server: the small HTTP/1.1 server loop that llmq-gateway and llmq-mock-azure
// share (internal, not installed). It owns everything a hostile client can abuse:
//
// - accepting, with a back-off after accept errors (EMFILE, ENFILE, ENOBUFS...) instead of
//   a spin, and the oldest idle connection closed to free a descriptor;
// - at most `max_connections` open; at the limit, the idle keep-alive connection that
//   has waited longest is closed to admit a new one; only when none is idle is the new
//   one refused (closed at once);
// - timeouts: waiting for a request's first byte (`idle_timeout`; such a connection is
//   idle and may be evicted), the whole header section from its first byte
//   (`header_timeout`), the body after the header (`read_timeout`), each write of an
//   answer (`read_timeout`);
// - bounded reads: header and body limits (431 and 413, the latter from Content-Length
//   before any body byte is read), a bounded read buffer;
// - `Expect: 100-continue`, answered with `100 Continue` only when the body is going to
//   be read;
// - keep-alive and pipelining;
// - optionally, noticing a client that disconnects while its request is being handled
//   (without consuming pipelined bytes) and cancelling the handler;
// - optionally, TLS (1.2 and later, ALPN http/1.1), with client certificates required when
//   a CA file is given; the certificates can be replaced while serving (set_tls).
//
// The handler answers each request by writing to its Connection. Beast stays inside
// http_server.cpp.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmq::server {

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses.
[[nodiscard]] bool is_loopback(const boost::asio::ip::address& a);

/// TLS on the listener: PEM files. An empty cert_file means clear text.
struct TlsFiles {
  std::string cert_file;       ///< the certificate chain, the server's own first
  std::string key_file;        ///< its private key (never logged)
  std::string client_ca_file;  ///< non-empty: clients must present a certificate it signed
};

/// TLS files loaded and checked (HttpServer::load_tls), not yet in use; empty: clear text.
class LoadedTls {
 private:
  friend class HttpServer;
  std::shared_ptr<void> context_;
};

/// Limits and timeouts of an HttpServer, each with its default.
struct ServerOptions {
  /// Names the server in log lines.
  std::string name = "llmq";
  /// Connections open at once; see the eviction rule above. Zero counts as one.
  std::size_t max_connections = 1024;
  /// Largest header section; larger gets 431.
  std::size_t max_header_bytes = 16 * 1024;
  /// Largest body; larger gets 413 (without reading it when Content-Length says so).
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  /// From a request's first byte to the end of its header section.
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  /// The body after the header section, and each write of an answer.
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  /// Waiting for the first byte of a request (a new connection's first, or the next on a
  /// keep-alive connection).
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  /// Pause after a failed accept.
  std::chrono::milliseconds accept_backoff{100};
  /// After refusing a request (400/413/431) the server stops sending and discards what
  /// the client still sends for up to this long, so the client reads the refusal rather
  /// than a reset.
  std::chrono::milliseconds linger{std::chrono::seconds(2)};
  /// Each connection on its own strand (for io_contexts run by several threads).
  bool strand_per_connection = false;
  /// Cancel the handler (terminal cancellation) when the client disconnects while its
  /// request is being handled. Only watched while no pipelined bytes are waiting. Needs
  /// each connection's handlers to run one at a time: an io_context run by one thread,
  /// or strand_per_connection.
  bool cancel_on_disconnect = false;
  /// TLS from the start (see HttpServer::set_tls); the handshake must finish within
  /// header_timeout.
  TlsFiles tls;
};

/// One request as received.
struct IncomingRequest {
  std::string method;
  std::string target;                                        ///< path and query
  std::vector<std::pair<std::string, std::string>> headers;  ///< names as sent
  std::string body;
  unsigned version = 11;    ///< 10 or 11
  bool keep_alive = false;  ///< the client wants to keep the connection (and the server lets it)
};

/// The connection a handler answers on. Use it from the handler's coroutine only.
class Connection {
 public:
  virtual ~Connection() = default;
  /// Writes `head` then `body` (one gather write) within read_timeout. False when the
  /// write failed or the connection is closed.
  virtual boost::asio::awaitable<bool> write(std::string_view head, std::string_view body = {}) = 0;
  /// Writes one part of an answer that goes on (a streamed body), within read_timeout;
  /// unlike write(), the disconnect watch stays on, so a client that leaves mid-answer
  /// cancels the handler. End the answer with write(). False as write().
  virtual boost::asio::awaitable<bool> write_part(std::string_view head,
                                                  std::string_view body = {}) = 0;
  /// Waits `d`; false when the connection was closed meanwhile.
  virtual boost::asio::awaitable<bool> wait(std::chrono::steady_clock::duration d) = 0;
  /// Reads and discards until the peer closes or the connection is closed (no timeout).
  virtual boost::asio::awaitable<void> discard_input() = 0;
  /// Closes gracefully (FIN).
  virtual void close() = 0;
  /// Closes with a TCP RST.
  virtual void reset() = 0;
  [[nodiscard]] virtual bool closed() const noexcept = 0;
  /// The client disconnected while this request was handled (cancel_on_disconnect).
  [[nodiscard]] virtual bool client_gone() const noexcept = 0;
  /// The server is stopping: answer with `Connection: close`.
  [[nodiscard]] virtual bool stopping() const noexcept = 0;
  [[nodiscard]] virtual bool remote_is_loopback() const noexcept = 0;
};

/// What an HttpServer serves.
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  /// Answers one request on `conn`. Returns true to keep the connection for the next
  /// request. With cancel_on_disconnect, a client that disconnects meanwhile cancels it
  /// (terminal); a throw closes the connection (logged).
  virtual boost::asio::awaitable<bool> serve(Connection& conn, IncomingRequest request) = 0;
  /// The complete HTTP response (status line, headers, body) for a request the server
  /// refused itself: 400 malformed, 413 body too large, 431 header section too large. The
  /// connection closes after it.
  virtual std::string refusal(unsigned status) = 0;
  /// A client disconnected while its request was handled (before serve is cancelled).
  virtual void on_client_disconnect() {}
};

/// Counters of an HttpServer.
struct ServerStats {
  std::size_t open = 0;                      ///< connections open now
  std::uint64_t accepted = 0;                ///< connections admitted
  std::uint64_t refused = 0;                 ///< closed at accept: at the limit with none idle
  std::uint64_t evicted = 0;                 ///< idle connections closed to admit another
  std::uint64_t accept_errors = 0;           ///< failed accepts (each followed by the back-off)
  std::uint64_t tls_handshake_failures = 0;  ///< TLS handshakes that failed or timed out
};

/// The server. Thread safety: all members may be called from any thread.
class HttpServer {
 public:
  HttpServer(boost::asio::any_io_executor ex, ServerOptions options,
             std::shared_ptr<RequestHandler> handler);
  /// Closes every connection.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Loads the TLS files; connections accepted from then on use them (open ones keep
  /// theirs). An empty cert_file turns TLS off. Throws llmq::ConfigError naming the file
  /// and the problem (unreadable, not PEM, key does not match the certificate), leaving the
  /// server as it was. Thread-safe.
  void set_tls(const TlsFiles& files);
  /// set_tls in two steps: load and check the files (throws as set_tls does)...
  [[nodiscard]] static LoadedTls load_tls(const TlsFiles& files);
  /// ...and put them in use for connections accepted from then on. Thread-safe.
  void use_tls(LoadedTls tls);
  [[nodiscard]] bool tls() const;

  /// Binds and listens; returns the port (useful with port 0). Throws on failure.
  unsigned short listen(const boost::asio::ip::tcp::endpoint& endpoint);
  /// Accepts until stop() or close_all(); each connection runs as its own coroutine.
  boost::asio::awaitable<void> run();
  /// Stops accepting and closes idle connections; busy ones close after their answer.
  void stop();
  /// Stops accepting and closes every connection now.
  void close_all();
  /// Waits until every connection has closed, at most `limit`.
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit);
  [[nodiscard]] ServerStats stats() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace llmq::server
