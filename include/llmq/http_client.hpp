#pragma once
/// @file http_client.hpp
/// A small HTTP/1.1 client for upstream LLM calls: keep-alive connection pool per host,
/// TLS with certificate and host name verification, timeouts, size limits, cancellation
/// and incremental (streaming) responses. Part of the `llmq::providers` library; the
/// implementation (Boost.Beast, OpenSSL) is compiled in the library, this header does not
/// include Beast.

#include <llmq/errors.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace llmq {

/// Transport failures of HttpClient, in the error category named "llmq".
enum class http_errc {
  /// Name resolution or the TCP connect failed (refused, unreachable, no address). 503.
  connect_failed = 1,
  /// Resolve + connect + TLS handshake did not finish within `connect_timeout`. 503.
  connect_timeout,
  /// The whole request (waiting for a pooled connection, connecting, sending and reading
  /// the complete response) did not finish within `request_timeout`. 504.
  request_timeout,
  /// The connection was closed or reset before the complete response arrived (this
  /// includes a body cut short of its Content-Length or its last chunk). 502.
  connection_reset,
  /// The response head or body exceeded its limit (`max_response_bytes` for the body). 502.
  response_too_large,
  /// The response is not valid HTTP/1.1. 502.
  bad_response,
  /// The TLS handshake failed: untrusted certificate, host name mismatch, protocol
  /// error, or the CA file could not be loaded. 503.
  tls_failed,
  /// The URL is not `http://` or `https://` with a host and a valid port. 500.
  bad_url,
  /// The request itself is malformed (a method, header name or header value holding
  /// control characters such as CR or LF). 500.
  bad_request,
  /// HttpClient::close() was called before or while the request ran. 503.
  client_closed,
};

/// The "llmq" error category of http_errc.
[[nodiscard]] const boost::system::error_category& http_category() noexcept;

/// Makes an error_code of the "llmq" category (found by ADL, so `ec == http_errc::x` works).
[[nodiscard]] boost::system::error_code make_error_code(http_errc e) noexcept;

/// The enumerator's name ("connect_failed", ...), e.g. for error bodies.
[[nodiscard]] std::string_view to_string(http_errc e) noexcept;

/// The HTTP status an http_errc maps to (see each value).
[[nodiscard]] int http_status_of(http_errc e) noexcept;

/// A transport failure of HttpClient: `code()` says which, `http_status()` maps it (502 for
/// protocol errors, 503 for connect/TLS failures, 504 for request timeouts). The message
/// names the host and port, never a header value (API keys stay out of it).
class HttpError : public Error {
 public:
  HttpError(http_errc code, const std::string& message);

  /// The http_errc as an error_code of the "llmq" category.
  [[nodiscard]] boost::system::error_code code() const noexcept { return code_; }
  [[nodiscard]] http_errc errc() const noexcept { return errc_; }

 private:
  http_errc errc_;
  boost::system::error_code code_;
};

/// Tunables of an HttpClient, each with its default.
struct HttpClientOptions {
  /// Connections open at once to one (scheme, host, port), idle or busy. More concurrent
  /// requests wait for a free connection (the wait counts against request_timeout).
  /// Zero counts as one.
  std::size_t max_connections_per_host = 32;
  /// Longest time for resolve + TCP connect + TLS handshake of a new connection (also
  /// bounded by request_timeout). Zero disables.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  /// Longest time for a whole request: waiting for a pooled connection, connecting,
  /// sending and reading the complete response (for request_streaming: the whole stream).
  /// Zero disables (then only cancellation ends a stalled request).
  std::chrono::milliseconds request_timeout{std::chrono::seconds(120)};
  /// Largest response body accepted; a larger one fails with response_too_large.
  std::size_t max_response_bytes = std::size_t{64} * 1024 * 1024;
  /// A pooled connection idle for longer is closed instead of reused (servers close idle
  /// connections; typical limits are 60 s and more); zero: never reused. Idle connections
  /// are checked when a request needs one; no timer runs in the background.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  /// Verify the server's certificate chain and host name. Turn off only for tests.
  bool verify_peer = true;
  /// PEM file of trusted CA certificates. Empty: the system trust store.
  std::string ca_file;
};

/// One HTTP request. `Host`, `Content-Length`, `Transfer-Encoding` and `Connection` are
/// set by the client (a caller's copy is dropped).
///
/// Note: inside coroutine bodies g++ 12 miscompiles braced initializers that hold string
/// literals (`HttpRequest{"POST", "http://..."}`); assign the fields one by one there.
struct HttpRequest {
  std::string method = "POST";
  /// `http://host[:port]/path?query` or `https://...` (IPv6 hosts in brackets).
  std::string url;
  /// Sent in order. Values are never logged.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// One HTTP response.
struct HttpResponse {
  int status = 0;
  /// In the order received; names lower-cased.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// The first header of that name (compared case-insensitively), if any.
  [[nodiscard]] std::optional<std::string> header(std::string_view name) const;
};

namespace detail {
class HttpClientImpl;
}

/// HTTP/1.1 client with a keep-alive connection pool per (scheme, host, port).
///
/// - Pool: at most `max_connections_per_host` connections per host; callers beyond wait
///   (FIFO) for a free one. A pooled connection that was closed by the server or idled
///   past `idle_timeout` is replaced; if a reused connection fails before any byte of
///   the response arrived, the request is sent once more on a new connection.
/// - TLS (https): OpenSSL, peer verification on by default (system trust store or
///   `ca_file`), SNI and host name verification. `http://` URLs use plain TCP.
/// - Every status code is a successful result; only transport failures throw.
///
/// Throws (from the awaitables): HttpError (see http_errc);
/// `boost::system::system_error(operation_aborted)` when the caller cancelled.
///
/// Cancellation: terminal cancellation of the awaiting coroutine (e.g. through a
/// cancellation slot, or `||` with a timer) aborts the request promptly; its connection
/// is closed, not pooled, and the awaitable completes with `operation_aborted`.
///
/// Thread safety: all members may be called from any thread; the client runs its work on
/// an internal strand of the executor given. Copies are not possible; share it with a
/// `std::shared_ptr`. Requests in flight keep the internal state alive, so the client
/// object may be destroyed before they finish (its destructor calls close()).
class HttpClient {
 public:
  /// `ex`: where connections, timers and callbacks run (through an internal strand).
  explicit HttpClient(boost::asio::any_io_executor ex, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends one request and reads the whole response.
  boost::asio::awaitable<HttpResponse> request(HttpRequest req);

  /// Sends one request and hands the response over as it arrives: `on_head` once with
  /// the status and headers (empty body), then `on_body_chunk` for each piece of body
  /// (chunked encoding already removed). Completes after the last piece. Callbacks run on
  /// the client's strand while the awaiting coroutine is suspended; they must not block.
  /// An exception thrown by a callback aborts the request (its connection is closed) and
  /// propagates. `request_timeout` and `max_response_bytes` apply to the whole stream.
  boost::asio::awaitable<void> request_streaming(
      HttpRequest req, std::function<void(const HttpResponse& head)> on_head,
      std::function<void(std::string_view chunk)> on_body_chunk);

  /// request_streaming with backpressure: `on_body_chunk` is awaited before the next read,
  /// so a consumer that takes its time slows the upstream (TCP flow control) instead of
  /// buffering. The piece it gets is valid until its awaitable completes. It runs on the
  /// client's strand. An exception from it (e.g. `operation_aborted` when its reader has
  /// gone) aborts the request: the connection is closed, never pooled half-read.
  /// `request_timeout` bounds the whole stream, time spent in `on_body_chunk` included.
  boost::asio::awaitable<void> request_streaming_paced(
      HttpRequest req, std::function<void(const HttpResponse& head)> on_head,
      std::function<boost::asio::awaitable<void>(std::string_view chunk)> on_body_chunk);

  /// Closes idle connections and every connection in use (their requests fail with
  /// client_closed), wakes waiters (client_closed); later requests fail with
  /// client_closed. Returns at once; the closing happens on the client's strand.
  void close();

  /// The executor given to the constructor.
  [[nodiscard]] boost::asio::any_io_executor get_executor() const noexcept;

  /// The options in use.
  [[nodiscard]] const HttpClientOptions& options() const noexcept;

 private:
  std::shared_ptr<detail::HttpClientImpl> impl_;
};

}  // namespace llmq

template <>
struct boost::system::is_error_code_enum<llmq::http_errc> : std::true_type {};
