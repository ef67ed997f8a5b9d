#pragma once
// Test support for the provider tests (not installed, not part of any library): a tiny
// scripted HTTP/1.1 server on 127.0.0.1 (plain or TLS) that records what it received and
// counts connections, a self-signed certificate maker, and a bounded io_context runner.
// Single-threaded: use it from the io_context's one thread.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmq::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

/// One request the server read.
struct ReceivedRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::size_t connection = 0;         // 1 = first accepted connection
  std::size_t nth_on_connection = 0;  // 0 = first request on its connection

  [[nodiscard]] std::optional<std::string> header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) return value;
    }
    return std::nullopt;
  }
};

/// What the server does with one request.
struct Reply {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Non-empty: the body goes out in these pieces, Transfer-Encoding chunked.
  std::vector<std::string> chunks;
  std::chrono::milliseconds chunk_delay{0};
  /// Wait this long before answering.
  std::chrono::milliseconds delay{0};
  /// Written as-is instead of a response; then the connection is closed.
  std::optional<std::string> raw;
  bool close = false;           ///< answer with `Connection: close`, then close
  bool close_silently = false;  ///< answer as keep-alive, then close anyway
  bool drop = false;            ///< close without answering
  bool stall = false;           ///< never answer; wait until the client goes away
};

inline Reply json_reply(int status, std::string body) {
  Reply r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", "application/json");
  return r;
}

class LoopbackServer {
 public:
  using Handler = std::function<Reply(const ReceivedRequest&)>;

  LoopbackServer(asio::io_context& io, Handler handler, asio::ssl::context* tls = nullptr)
      : state_(std::make_shared<State>(io, std::move(handler), tls)) {
    asio::co_spawn(io, accept_loop(state_), asio::detached);
  }
  ~LoopbackServer() { stop(); }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;

  [[nodiscard]] unsigned short port() const { return state_->port; }
  [[nodiscard]] std::string url(std::string_view path = "") const {
    return std::string(state_->tls ? "https" : "http") +
           "://127.0.0.1:" + std::to_string(state_->port) + std::string(path);
  }
  /// Connections accepted so far.
  [[nodiscard]] std::size_t accepted() const { return state_->accepted; }
  /// Connections open now / at most at once.
  [[nodiscard]] std::size_t open() const { return state_->open; }
  [[nodiscard]] std::size_t max_open() const { return state_->max_open; }
  [[nodiscard]] const std::vector<ReceivedRequest>& requests() const { return state_->requests; }

  /// Closes every open connection (server side), keeps accepting.
  void close_connections() {
    auto closers = state_->closers;
    for (auto& [id, close] : closers) close();
  }
  void stop() {
    boost::system::error_code ignored;
    state_->acceptor.close(ignored);
    close_connections();
  }

 private:
  struct State {
    State(asio::io_context& io, Handler h, asio::ssl::context* t)
        : acceptor(io), handler(std::move(h)), tls(t) {
      const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
      acceptor.open(endpoint.protocol());
      acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true));
      acceptor.bind(endpoint);
      acceptor.listen();
      port = acceptor.local_endpoint().port();
    }
    asio::ip::tcp::acceptor acceptor;
    Handler handler;
    asio::ssl::context* tls;
    unsigned short port = 0;
    std::size_t accepted = 0;
    std::size_t open = 0;
    std::size_t max_open = 0;
    std::vector<ReceivedRequest> requests;
    std::map<std::size_t, std::function<void()>> closers;
  };

  static asio::awaitable<void> accept_loop(std::shared_ptr<State> st) {
    for (;;) {
      auto [ec, socket] = co_await st->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      const std::size_t id = ++st->accepted;
      ++st->open;
      st->max_open = std::max(st->max_open, st->open);
      asio::co_spawn(st->acceptor.get_executor(), serve(st, std::move(socket), id), asio::detached);
    }
  }

  static asio::awaitable<void> serve(std::shared_ptr<State> st, asio::ip::tcp::socket socket,
                                     std::size_t id) {
    struct OpenGuard {
      State& s;
      std::size_t id;
      ~OpenGuard() {
        --s.open;
        s.closers.erase(id);
      }
    } guard{*st, id};
    if (st->tls) {
      beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *st->tls);
      st->closers[id] = [&stream] { beast::get_lowest_layer(stream).close(); };
      auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server,
                                                  asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      co_await serve_stream(st, stream, id);
    } else {
      beast::tcp_stream stream(std::move(socket));
      st->closers[id] = [&stream] { stream.close(); };
      co_await serve_stream(st, stream, id);
    }
  }

  static std::string reason(int status) {
    switch (status) {
      case 200:
        return "OK";
      case 400:
        return "Bad Request";
      case 401:
        return "Unauthorized";
      case 404:
        return "Not Found";
      case 429:
        return "Too Many Requests";
      case 500:
        return "Internal Server Error";
      case 503:
        return "Service Unavailable";
      default:
        return "Status";
    }
  }

  static std::string head_text(const Reply& r, bool chunked) {
    std::string text = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\n";
    for (const auto& [name, value] : r.headers) text += name + ": " + value + "\r\n";
    if (chunked) {
      text += "Transfer-Encoding: chunked\r\n";
    } else {
      text += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    }
    if (r.close) text += "Connection: close\r\n";
    text += "\r\n";
    return text;
  }

  static std::string hex(std::size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    do {
      out.insert(out.begin(), kDigits[n % 16]);
      n /= 16;
    } while (n != 0);
    return out;
  }

  template <class Stream>
  static asio::awaitable<void> write_text(Stream& stream, const std::string& text) {
    auto [ec, n] =
        co_await asio::async_write(stream, asio::buffer(text), asio::as_tuple(asio::use_awaitable));
    (void)n;
    if (ec) throw boost::system::system_error(ec);
  }

  static asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer timer(co_await asio::this_coro::executor, d);
    auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    (void)ec;
  }

  template <class Stream>
  static asio::awaitable<void> serve_stream(std::shared_ptr<State> st, Stream& stream,
                                            std::size_t id) {
    beast::flat_buffer buffer;
    try {
      for (std::size_t n = 0;; ++n) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(64 * 1024 * 1024);
        auto [ec, bytes] =
            co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
        (void)bytes;
        if (ec) co_return;
        ReceivedRequest req;
        const auto& m = parser.get();
        req.method = std::string(m.method_string());
        req.target = std::string(m.target());
        for (const auto& field : m) {
          std::string name(field.name_string());
          for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          req.headers.emplace_back(std::move(name), std::string(field.value()));
        }
        req.body = m.body();
        req.connection = id;
        req.nth_on_connection = n;
        st->requests.push_back(req);
        const Reply reply = st->handler(req);
        if (reply.delay.count() > 0) co_await pause(reply.delay);
        if (reply.stall) {
          // Wait until the client closes (or sends more, which this server ignores).
          char sink[256];
          for (;;) {
            auto [rec, got] = co_await stream.async_read_some(asio::buffer(sink),
                                                              asio::as_tuple(asio::use_awaitable));
            (void)got;
            if (rec) co_return;
          }
        }
        if (reply.drop) co_return;
        if (reply.raw) {
          co_await write_text(stream, *reply.raw);
          co_return;
        }
        if (reply.chunks.empty()) {
          co_await write_text(stream, head_text(reply, false) + reply.body);
        } else {
          co_await write_text(stream, head_text(reply, true));
          for (const std::string& piece : reply.chunks) {
            if (reply.chunk_delay.count() > 0) co_await pause(reply.chunk_delay);
            if (piece.empty()) continue;
            co_await write_text(stream, hex(piece.size()) + "\r\n" + piece + "\r\n");
          }
          co_await write_text(stream, std::string("0\r\n\r\n"));
        }
        if (reply.close || reply.close_silently) co_return;
      }
    } catch (const std::exception&) {
      // The client went away mid-answer; nothing to do.
    }
  }

  std::shared_ptr<State> state_;
};

/// A self-signed certificate (its own CA) and its private key, both PEM.
struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
};

/// Makes a P-256 self-signed certificate with the given subjectAltName
/// (e.g. "IP:127.0.0.1" or "DNS:other.example"), valid from an hour ago for a day.
inline TestCertificate make_test_certificate(const std::string& common_name,
                                             const std::string& subject_alt_name) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (key == nullptr) throw std::runtime_error("EC key generation failed");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  static long serial = 1;
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (const auto& [nid, value] :
       {std::pair<int, std::string>{NID_subject_alt_name, subject_alt_name},
        std::pair<int, std::string>{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) throw std::runtime_error("bad certificate extension " + value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert, key, EVP_sha256()) == 0) throw std::runtime_error("X509_sign failed");

  auto to_string = [](BIO* bio) {
    char* data = nullptr;
    const long size = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &data);  // BIO_get_mem_data
    std::string out(data, static_cast<std::size_t>(size));
    BIO_free(bio);
    return out;
  };
  BIO* cert_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, cert);
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  TestCertificate out{to_string(cert_bio), to_string(key_bio)};
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

/// A TLS server context presenting `cert`.
inline std::unique_ptr<asio::ssl::context> make_server_tls_context(const TestCertificate& cert) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->use_certificate_chain(asio::buffer(cert.cert_pem));
  ctx->use_private_key(asio::buffer(cert.key_pem), asio::ssl::context::pem);
  return ctx;
}

/// Runs `task` on `io` until it completes or `limit` passes (then throws). Rethrows the
/// task's exception.
template <class T>
T run_bounded(asio::io_context& io, asio::awaitable<T> task,
              std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  struct Result {
    bool done = false;
    std::exception_ptr error;
    std::optional<T> value;
  };
  auto result = std::make_shared<Result>();
  asio::co_spawn(io, std::move(task), [result](std::exception_ptr e, T v) {
    result->done = true;
    result->error = e;
    if (!e) result->value.emplace(std::move(v));
  });
  const auto deadline = std::chrono::steady_clock::now() + limit;
  io.restart();
  while (!result->done && std::chrono::steady_clock::now() < deadline) {
    io.run_one_until(deadline);
  }
  if (!result->done) throw std::runtime_error("test task did not finish in time");
  if (result->error) std::rethrow_exception(result->error);
  return std::move(*result->value);
}

inline asio::awaitable<bool> completed(asio::awaitable<void> task) {
  co_await std::move(task);
  co_return true;
}

/// run_bounded for an awaitable<void>.
inline void run_bounded(asio::io_context& io, asio::awaitable<void> task,
                        std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  (void)run_bounded(io, completed(std::move(task)), limit);
}

}  // namespace llmq::testing
