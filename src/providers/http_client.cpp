// HttpClient: Beast HTTP/1.1 over plain TCP or OpenSSL, a keep-alive pool per origin.
//
// Everything runs on one strand per client: the pool bookkeeping needs no lock, and
// Beast's stream timers, the resolver watchdog and close() never race the request
// coroutines. The public awaitables co_spawn onto that strand, which also carries the
// caller's cancellation across (co_spawn forwards the awaiting coroutine's slot).

#include <llmq/http_client.hpp>
#include <llmq/log.hpp>
#include "http_url.hpp"

#include <llmq/detail/light_strand.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace llmq {
namespace detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = asio::steady_timer::clock_type;
using boost::system::error_code;

namespace {

/// Largest response head accepted (status line + headers).
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
/// Body bytes handed to a callback at most at once.
constexpr std::size_t kChunkSize = 16 * 1024;

/// ASCII lower case (header names are ASCII tokens; no locale lookup per byte).
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower_copy(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos) continue;
    return false;
  }
  return true;
}

bool is_field_value(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

/// Headers the client manages itself; a caller's copy is dropped.
bool is_managed_header(std::string_view name) {
  return iequals(name, "host") || iequals(name, "content-length") ||
         iequals(name, "transfer-encoding") || iequals(name, "connection");
}

std::chrono::milliseconds ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

[[noreturn]] void throw_aborted() {
  throw boost::system::system_error(asio::error::operation_aborted);
}

/// Calls `on_expire` once at `deadline` unless destroyed first. The handler checks a
/// shared flag, so it never touches what the destroyed watchdog guarded.
class Watchdog {
 public:
  Watchdog(const asio::any_io_executor& ex, Clock::time_point deadline,
           std::function<void()> on_expire)
      : timer_(std::make_shared<asio::steady_timer>(ex, deadline)),
        state_(std::make_shared<State>()) {
    state_->on_expire = std::move(on_expire);
    timer_->async_wait([state = state_, timer = timer_](error_code ec) {
      if (ec || !state->armed) return;
      state->fired = true;
      state->on_expire();
    });
  }
  ~Watchdog() {
    state_->armed = false;
    timer_->cancel();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  [[nodiscard]] bool fired() const noexcept { return state_->fired; }

 private:
  struct State {
    bool armed = true;
    bool fired = false;
    std::function<void()> on_expire;
  };
  std::shared_ptr<asio::steady_timer> timer_;
  std::shared_ptr<State> state_;
};

}  // namespace

/// One pooled connection: plain TCP or TLS over TCP, and its read buffer.
struct Connection {
  std::uint64_t id = 0;
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  std::vector<char> chunk = std::vector<char>(kChunkSize);
  Clock::time_point idle_since{};

  beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }

  void close() {
    error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().close();
  }

  /// True when the server has not closed or written to the idle connection.
  bool looks_alive() {
    if (buffer.size() != 0) return false;
    auto& socket = tcp().socket();
    if (!socket.is_open()) return false;
    char byte = 0;
    const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
};

/// Who is waiting for a connection of a full pool. `granted` with a null `conn` hands
/// over the right to open a new connection.
struct PoolWaiter {
  explicit PoolWaiter(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  bool granted = false;
  std::unique_ptr<Connection> conn;
};

/// The connections of one origin. `open` counts idle, busy and connecting ones.
struct HostPool {
  std::size_t open = 0;
  std::deque<std::unique_ptr<Connection>> idle;  // most recently used at the back
  std::deque<std::shared_ptr<PoolWaiter>> waiters;
};

/// What the caller wants done with the response as it arrives: collected whole into
/// `collect`, or handed to the callbacks.
struct ResponseSink {
  HttpResponse* collect = nullptr;
  std::function<void(const HttpResponse&)> on_head;
  std::function<void(std::string_view)> on_chunk;
  /// Awaited before the next read: the reader's pace is the stream's.
  std::function<asio::awaitable<void>(std::string_view)> on_chunk_async;
};

/// Distinct URLs whose split is kept (a client talks to a few deployments).
constexpr std::size_t kUrlCacheSize = 256;

/// A URL split for requests: its parts, pool key and the form used in log lines.
struct ParsedUrl {
  UrlParts parts;
  std::string origin;
  std::string log_target;
};

/// A request ready to send: its head (request line and header fields) and body.
struct WireRequest {
  std::string method;
  std::string head;
  std::string body;
};

/// How one request/response exchange on a connection ended.
struct ExchangeResult {
  error_code ec;
  bool got_response_bytes = false;
  bool keep_alive = false;
  int status = 0;
};

/// Runs `work` on `strand` and awaits it, forwarding the awaiting coroutine's cancellation.
/// Not co_spawn's own forwarding: that one posts a pointer into the awaiting coroutine's
/// slot, which dangles if the work completes and the awaiting coroutine moves on before
/// the post runs. Here the signal is shared by everything that may still emit on it.
template <class T>
asio::awaitable<T> run_on_strand(asio::any_io_executor strand, asio::awaitable<T> work) {
  auto signal = std::make_shared<asio::cancellation_signal>();
  const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
  asio::cancellation_slot slot = state.slot();
  if (slot.is_connected()) {
    slot.assign([signal, strand](asio::cancellation_type type) {
      asio::dispatch(strand, [signal, type] { signal->emit(type); });
    });
  }
  // Completing the co_await clears the awaiting coroutine's slot (and the lambda above).
  co_return co_await asio::co_spawn(
      strand, std::move(work), asio::bind_cancellation_slot(signal->slot(), asio::use_awaitable));
}

class HttpClientImpl : public std::enable_shared_from_this<HttpClientImpl> {
 public:
  HttpClientImpl(asio::any_io_executor ex, HttpClientOptions options)
      : executor_(std::move(ex)),
        strand_(detail::make_light_strand(executor_)),
        options_(std::move(options)) {
    if (options_.max_connections_per_host == 0) options_.max_connections_per_host = 1;
  }

  [[nodiscard]] const asio::any_io_executor& executor() const noexcept { return executor_; }
  [[nodiscard]] const asio::any_io_executor& strand() const { return strand_; }
  [[nodiscard]] const HttpClientOptions& options() const noexcept { return options_; }

  void close() {
    asio::post(strand_, [self = shared_from_this()] { self->close_now(); });
  }

  static asio::awaitable<HttpResponse> fetch(std::shared_ptr<HttpClientImpl> self,
                                             HttpRequest req) {
    HttpResponse out;
    ResponseSink sink;
    sink.collect = &out;
    co_await perform(self, std::move(req), sink);
    co_return out;
  }

  static asio::awaitable<void> stream(std::shared_ptr<HttpClientImpl> self, HttpRequest req,
                                      std::function<void(const HttpResponse&)> on_head,
                                      std::function<void(std::string_view)> on_chunk) {
    ResponseSink sink;
    sink.on_head = std::move(on_head);
    sink.on_chunk = std::move(on_chunk);
    co_await perform(self, std::move(req), sink);
  }

  static asio::awaitable<void> stream_paced(
      std::shared_ptr<HttpClientImpl> self, HttpRequest req,
      std::function<void(const HttpResponse&)> on_head,
      std::function<asio::awaitable<void>(std::string_view)> on_chunk) {
    ResponseSink sink;
    sink.on_head = std::move(on_head);
    sink.on_chunk_async = std::move(on_chunk);
    co_await perform(self, std::move(req), sink);
  }

 private:
  /// Holds a pool slot (and maybe a connection) of one origin; gives it back on exit.
  class Lease {
   public:
    Lease(HttpClientImpl& client, const std::string& origin) : client_(client), origin_(origin) {}
    ~Lease() {
      if (active_) client_.give_back(origin_, std::move(conn), false);
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    void activate(std::unique_ptr<Connection> c) {
      conn = std::move(c);
      active_ = true;
    }
    void release(bool reusable) {
      active_ = false;
      client_.give_back(origin_, std::move(conn), reusable);
    }

    std::unique_ptr<Connection> conn;

   private:
    HttpClientImpl& client_;
    const std::string& origin_;
    bool active_ = false;
  };

  /// Removes a waiter that leaves without its grant; returns a grant it did not take.
  class WaiterGuard {
   public:
    WaiterGuard(HttpClientImpl& client, HostPool& pool, const std::string& origin,
                std::shared_ptr<PoolWaiter> waiter)
        : client_(client), pool_(pool), origin_(origin), waiter_(std::move(waiter)) {}
    ~WaiterGuard() {
      if (taken_) return;
      if (waiter_->granted) {
        client_.give_back(origin_, std::move(waiter_->conn), true);
      } else {
        auto it = std::find(pool_.waiters.begin(), pool_.waiters.end(), waiter_);
        if (it != pool_.waiters.end()) pool_.waiters.erase(it);
      }
    }
    WaiterGuard(const WaiterGuard&) = delete;
    WaiterGuard& operator=(const WaiterGuard&) = delete;
    void take() { taken_ = true; }

   private:
    HttpClientImpl& client_;
    HostPool& pool_;
    const std::string& origin_;
    std::shared_ptr<PoolWaiter> waiter_;
    bool taken_ = false;
  };

  static asio::awaitable<void> perform(std::shared_ptr<HttpClientImpl> self, HttpRequest req,
                                       ResponseSink& sink) {
    HttpClientImpl& me = *self;
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = me.options_.request_timeout.count() > 0
                                           ? start + me.options_.request_timeout
                                           : Clock::time_point::max();

    const std::shared_ptr<const ParsedUrl> parsed = me.parse_url(req.url);
    const UrlParts* const url = &parsed->parts;
    const WireRequest msg = build_message(std::move(req), *url);
    const std::string& origin = parsed->origin;
    const std::string& log_target = parsed->log_target;
    const bool head_request = msg.method == "HEAD";

    for (int attempt = 0;; ++attempt) {
      if (me.closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
      Lease lease(me, origin);
      lease.activate(co_await me.acquire(origin, deadline));
      if (me.closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
      if (Clock::now() >= deadline) {
        // A slot granted just as the wait expired: do not start a request that has no time.
        throw HttpError(http_errc::request_timeout,
                        "request to " + origin + " timed out after " +
                            std::to_string(me.options_.request_timeout.count()) +
                            " ms waiting for a connection");
      }
      const bool reused = lease.conn != nullptr;
      if (!reused) co_await me.open_connection(*url, origin, deadline, lease);

      ExchangeResult result;
      if (lease.conn->tls) {
        result =
            co_await me.exchange(*lease.conn->tls, *lease.conn, msg, deadline, head_request, sink);
      } else {
        result = co_await me.exchange(*lease.conn->plain, *lease.conn, msg, deadline, head_request,
                                      sink);
      }
      const std::uint64_t conn_id = lease.conn->id;
      if (!result.ec) {
        lease.release(result.keep_alive);
        logger()->debug("HTTP {} {}{} -> {} in {} ms (connection #{}{})", msg.method, origin,
                        log_target, result.status, ms_since(start).count(), conn_id,
                        reused ? ", reused" : "");
        co_return;
      }
      if (reused && attempt == 0 && !result.got_response_bytes && is_stale_failure(result.ec)) {
        logger()->debug(
            "HTTP {} {}{}: reused connection #{} failed before the response ({}); "
            "retrying on a new connection",
            msg.method, origin, log_target, conn_id, result.ec.message());
        continue;  // the lease closes the dead connection
      }
      me.throw_exchange_error(result.ec, origin);
    }
  }

  /// The request as it goes on the wire: the head (request line, Host, the caller's
  /// headers, Content-Length) written out here, then the body; HTTP/1.1 keep-alive. The
  /// URL parser already refused spaces and control characters in host and target.
  static WireRequest build_message(HttpRequest req, const UrlParts& url) {
    if (!is_token(req.method)) {
      throw HttpError(http_errc::bad_request, "invalid HTTP method");
    }
    WireRequest msg;
    std::string& head = msg.head;
    head.reserve(256 + req.headers.size() * 48);
    head += req.method;
    head += ' ';
    head += url.target;
    head += " HTTP/1.1\r\nHost: ";
    head += url.host_header;
    head += "\r\n";
    for (const auto& [name, value] : req.headers) {
      if (!is_token(name)) throw HttpError(http_errc::bad_request, "invalid header name");
      if (!is_field_value(value)) {
        // Name only: the value may be a key.
        throw HttpError(http_errc::bad_request,
                        "invalid value of header '" + name + "' (control characters)");
      }
      if (is_managed_header(name)) continue;
      head += name;
      head += ": ";
      head += value;
      head += "\r\n";
    }
    // As HTTP/1.1 framing wants it: a length for any body, and for an empty one where the
    // method normally carries one.
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" ||
        req.method == "OPTIONS") {
      head += "Content-Length: ";
      head += std::to_string(req.body.size());
      head += "\r\n";
    }
    head += "\r\n";
    msg.method = std::move(req.method);
    msg.body = std::move(req.body);
    return msg;
  }

  /// A pooled connection (non-null) or the right to open one (null); either way one slot
  /// of the origin's pool is held by the caller afterwards.
  asio::awaitable<std::unique_ptr<Connection>> acquire(const std::string& origin,
                                                       Clock::time_point deadline) {
    HostPool& pool = pools_[origin];
    const Clock::time_point now = Clock::now();
    while (!pool.idle.empty()) {
      std::unique_ptr<Connection> conn = std::move(pool.idle.back());
      pool.idle.pop_back();
      if (now - conn->idle_since < options_.idle_timeout && conn->looks_alive()) {
        busy_.insert(conn.get());
        co_return conn;
      }
      logger()->debug("HTTP {}: dropping stale idle connection #{}", origin, conn->id);
      conn->close();
      --pool.open;
    }
    if (pool.open < options_.max_connections_per_host) {
      ++pool.open;
      co_return nullptr;
    }

    auto waiter = std::make_shared<PoolWaiter>(strand());
    waiter->timer.expires_at(deadline);
    pool.waiters.push_back(waiter);
    WaiterGuard guard(*this, pool, origin, waiter);
    auto [ec] = co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (waiter->granted) {
      const asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
      if (cs.cancelled() != asio::cancellation_type::none) throw_aborted();  // guard gives back
      guard.take();
      if (waiter->conn) busy_.insert(waiter->conn.get());
      co_return std::move(waiter->conn);
    }
    if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
    if (ec == asio::error::operation_aborted) throw_aborted();
    throw HttpError(http_errc::request_timeout,
                    "no free connection to " + origin + " within request_timeout (" +
                        std::to_string(options_.request_timeout.count()) + " ms; " +
                        std::to_string(options_.max_connections_per_host) + " connections busy)");
  }

  /// Returns a slot (and its connection, if any) to the pool: to the first waiter, to
  /// the idle list, or frees it.
  void give_back(const std::string& origin, std::unique_ptr<Connection> conn, bool reusable) {
    HostPool& pool = pools_[origin];
    if (conn) {
      busy_.erase(conn.get());
      if (!reusable || closed_) {
        conn->close();
        conn.reset();
      } else {
        conn->idle_since = Clock::now();
      }
    }
    if (!closed_ && !pool.waiters.empty()) {
      std::shared_ptr<PoolWaiter> waiter = std::move(pool.waiters.front());
      pool.waiters.pop_front();
      waiter->granted = true;
      waiter->conn = std::move(conn);
      waiter->timer.cancel();
      return;
    }
    if (conn) {
      pool.idle.push_back(std::move(conn));
      return;
    }
    --pool.open;
  }

  void close_now() {
    closed_ = true;
    for (auto& [origin, pool] : pools_) {
      for (auto& conn : pool.idle) conn->close();
      pool.open -= pool.idle.size();
      pool.idle.clear();
      for (auto& waiter : pool.waiters) waiter->timer.cancel();
    }
    for (Connection* conn : busy_) conn->close();
  }

  ssl::context& tls_context() {
    if (!ssl_context_) {
      auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
      ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      error_code ec;
      if (options_.ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
      } else {
        ctx->load_verify_file(options_.ca_file, ec);
      }
      if (ec) {
        throw HttpError(
            http_errc::tls_failed,
            "cannot load the trusted CA certificates" +
                (options_.ca_file.empty() ? std::string() : " from '" + options_.ca_file + "'") +
                ": " + ec.message());
      }
      ssl_context_ = std::move(ctx);
    }
    return *ssl_context_;
  }

  /// Resolves, connects and (for https) handshakes a new connection into `lease`.
  asio::awaitable<void> open_connection(const UrlParts& url, const std::string& origin,
                                        Clock::time_point request_deadline, Lease& lease) {
    const Clock::time_point connect_deadline =
        options_.connect_timeout.count() > 0
            ? std::min(request_deadline, Clock::now() + options_.connect_timeout)
            : request_deadline;
    const bool connect_limited = connect_deadline < request_deadline;
    auto timeout_error = [&] {
      return connect_limited
                 ? HttpError(http_errc::connect_timeout,
                             "connecting to " + origin + " timed out after " +
                                 std::to_string(options_.connect_timeout.count()) + " ms")
                 : HttpError(http_errc::request_timeout,
                             "request to " + origin + " timed out while connecting");
    };

    auto conn = std::make_unique<Connection>();
    conn->id = next_connection_id_++;
    // Reads take what the socket holds up to the buffer's free space (at least 512
    // bytes): room for a typical answer means one read per answer, not one per 512 bytes.
    conn->buffer.reserve(kChunkSize);
    if (url.tls) {
      conn->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(strand(), tls_context());
    } else {
      conn->plain = std::make_unique<beast::tcp_stream>(strand());
    }
    busy_.insert(conn.get());
    Connection& c = *conn;
    lease.conn = std::move(conn);

    std::vector<tcp::endpoint> endpoints;
    if (url.host_is_ip) {
      error_code aec;
      const asio::ip::address address = asio::ip::make_address(url.host, aec);
      if (aec) throw HttpError(http_errc::bad_url, "invalid IP address in URL: " + url.host);
      endpoints.emplace_back(address, url.port);
    } else {
      tcp::resolver resolver(strand());
      Watchdog watchdog(strand(), connect_deadline, [&resolver] { resolver.cancel(); });
      // The resolver ignores cancellation slots: cancel it from the caller's slot.
      asio::cancellation_slot slot = (co_await asio::this_coro::cancellation_state).slot();
      if (slot.is_connected()) {
        slot.assign([&resolver](asio::cancellation_type) { resolver.cancel(); });
      }
      auto [ec, results] = co_await resolver.async_resolve(url.host, std::to_string(url.port),
                                                           asio::as_tuple(asio::use_awaitable));
      if (slot.is_connected()) slot.clear();
      if (ec) {
        if (watchdog.fired()) throw timeout_error();
        if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
        if (ec == asio::error::operation_aborted) throw_aborted();
        throw HttpError(http_errc::connect_failed,
                        "cannot resolve " + url.host + ": " + ec.message());
      }
      for (const auto& entry : results) endpoints.push_back(entry.endpoint());
    }
    if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");

    beast::tcp_stream& stream = c.tcp();
    stream.expires_at(connect_deadline);
    auto [cec, endpoint] =
        co_await stream.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
    (void)endpoint;
    if (cec) {
      if (cec == beast::error::timeout) throw timeout_error();
      if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
      if (cec == asio::error::operation_aborted) throw_aborted();
      throw HttpError(http_errc::connect_failed,
                      "cannot connect to " + origin + ": " + cec.message());
    }
    error_code ignored;
    stream.socket().set_option(tcp::no_delay(true), ignored);

    if (c.tls) {
      auto& tls = *c.tls;
      if (!url.host_is_ip) {
        // SSL_set_tlsext_host_name without its C cast.
        SSL_ctrl(tls.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                 const_cast<char*>(url.host.c_str()));
      }
      if (options_.verify_peer) {
        tls.set_verify_mode(ssl::verify_peer);
        tls.set_verify_callback(ssl::host_name_verification(url.host));
      } else {
        tls.set_verify_mode(ssl::verify_none);
      }
      auto [hec] = co_await tls.async_handshake(ssl::stream_base::client,
                                                asio::as_tuple(asio::use_awaitable));
      if (hec) {
        if (hec == beast::error::timeout) throw timeout_error();
        if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
        if (hec == asio::error::operation_aborted) throw_aborted();
        std::string why = hec.message();
        const long verify = SSL_get_verify_result(tls.native_handle());
        if (verify != X509_V_OK) {
          why += " (";
          why += X509_verify_cert_error_string(verify);
          why += ")";
        }
        throw HttpError(http_errc::tls_failed, "TLS handshake with " + origin + " failed: " + why);
      }
    }
    stream.expires_never();
  }

  /// Writes the request and reads the response into `sink`. Errors are returned, except
  /// those thrown by the sink's callbacks.
  template <class Stream>
  asio::awaitable<ExchangeResult> exchange(Stream& stream, Connection& conn, const WireRequest& msg,
                                           Clock::time_point deadline, bool head_request,
                                           ResponseSink& sink) {
    ExchangeResult result;
    conn.tcp().expires_at(deadline);
    const std::array<asio::const_buffer, 2> wire{asio::buffer(msg.head), asio::buffer(msg.body)};
    auto [wec, written] =
        co_await asio::async_write(stream, wire, asio::as_tuple(asio::use_awaitable));
    (void)written;
    if (wec) {
      result.ec = wec;
      co_return result;
    }

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(static_cast<std::uint64_t>(options_.max_response_bytes));
    if (head_request) parser.skip(true);
    auto [hec, head_bytes] = co_await http::async_read_header(stream, conn.buffer, parser,
                                                              asio::as_tuple(asio::use_awaitable));
    (void)head_bytes;
    if (hec) {
      result.ec = hec;
      result.got_response_bytes = parser.got_some() || conn.buffer.size() != 0;
      co_return result;
    }
    result.got_response_bytes = true;

    HttpResponse head;
    head.status = static_cast<int>(parser.get().result_int());
    result.status = head.status;
    for (const auto& field : parser.get()) {
      head.headers.emplace_back(lower_copy(field.name_string()), std::string(field.value()));
    }
    if (sink.collect != nullptr) {
      if (const auto length = parser.content_length()) {
        // The announced length, within reason: a larger body still grows as it arrives.
        constexpr std::uint64_t kMaxReserve = 1024 * 1024;
        sink.collect->body.reserve(static_cast<std::size_t>(std::min(
            {*length, kMaxReserve, static_cast<std::uint64_t>(options_.max_response_bytes)})));
      }
      sink.collect->status = head.status;
      sink.collect->headers = std::move(head.headers);
    } else if (sink.on_head) {
      sink.on_head(head);
    }

    while (!parser.is_done()) {
      parser.get().body().data = conn.chunk.data();
      parser.get().body().size = conn.chunk.size();
      // read_some: hand each piece over as it arrives (async_read would fill the buffer).
      auto [bec, body_bytes] = co_await http::async_read_some(stream, conn.buffer, parser,
                                                              asio::as_tuple(asio::use_awaitable));
      (void)body_bytes;
      const std::size_t got = conn.chunk.size() - parser.get().body().size;
      if (got != 0) {
        if (sink.collect != nullptr) {
          sink.collect->body.append(conn.chunk.data(), got);
        } else if (sink.on_chunk) {
          sink.on_chunk(std::string_view(conn.chunk.data(), got));
        } else if (sink.on_chunk_async) {
          co_await sink.on_chunk_async(std::string_view(conn.chunk.data(), got));
        }
      }
      if (bec == http::error::need_buffer) continue;
      if (bec) {
        result.ec = bec;
        co_return result;
      }
    }
    conn.tcp().expires_never();
    result.keep_alive = parser.get().keep_alive() && conn.buffer.size() == 0;
    co_return result;
  }

  /// A URL split once: calls to the same deployment reuse it.
  std::shared_ptr<const ParsedUrl> parse_url(const std::string& text) {
    if (auto it = urls_.find(text); it != urls_.end()) return it->second;
    std::optional<UrlParts> parts = parse_http_url(text);
    if (!parts) {
      throw HttpError(http_errc::bad_url,
                      "invalid URL: expected http:// or https:// with a host and a valid port");
    }
    auto parsed = std::make_shared<ParsedUrl>();
    parsed->origin = parts->origin();
    parsed->log_target = url_for_log(parts->target);
    parsed->parts = std::move(*parts);
    if (urls_.size() >= kUrlCacheSize) urls_.clear();  // URLs with ever-changing queries
    urls_.emplace(text, parsed);
    return parsed;
  }

  static bool is_stale_failure(const error_code& ec) {
    return ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::broken_pipe || ec == asio::error::connection_aborted ||
           ec == asio::error::not_connected || ec == asio::error::bad_descriptor ||
           ec == http::error::end_of_stream || ec == http::error::partial_message ||
           ec == ssl::error::stream_truncated;
  }

  [[noreturn]] void throw_exchange_error(const error_code& ec, const std::string& origin) {
    if (ec == beast::error::timeout) {
      throw HttpError(http_errc::request_timeout,
                      "request to " + origin + " timed out after " +
                          std::to_string(options_.request_timeout.count()) + " ms");
    }
    if (closed_) throw HttpError(http_errc::client_closed, "HTTP client is closed");
    if (ec == asio::error::operation_aborted) throw_aborted();
    if (ec == http::error::body_limit || ec == http::error::header_limit ||
        ec == http::error::buffer_overflow) {
      throw HttpError(http_errc::response_too_large,
                      "response from " + origin + " exceeds the limit (max_response_bytes " +
                          std::to_string(options_.max_response_bytes) + "): " + ec.message());
    }
    if (is_stale_failure(ec) || ec.category() == asio::error::get_ssl_category() ||
        ec.category() == asio::error::get_system_category()) {
      throw HttpError(
          http_errc::connection_reset,
          "connection to " + origin + " closed before the response was complete: " + ec.message());
    }
    if (ec.category() == error_code(http::error::bad_version).category()) {
      throw HttpError(http_errc::bad_response,
                      "invalid HTTP response from " + origin + ": " + ec.message());
    }
    throw HttpError(http_errc::connection_reset,
                    "request to " + origin + " failed: " + ec.message());
  }

  asio::any_io_executor executor_;
  asio::any_io_executor strand_;  // a strand (make_light_strand: copies do not allocate)
  HttpClientOptions options_;
  std::unique_ptr<ssl::context> ssl_context_;
  std::map<std::string, HostPool> pools_;  // node-based: references stay valid
  std::unordered_map<std::string, std::shared_ptr<const ParsedUrl>> urls_;
  std::unordered_set<Connection*> busy_;  // connecting or exchanging; close() aborts them
  std::uint64_t next_connection_id_ = 1;
  bool closed_ = false;
};

}  // namespace detail

HttpClient::HttpClient(boost::asio::any_io_executor ex, HttpClientOptions options)
    : impl_(std::make_shared<detail::HttpClientImpl>(std::move(ex), std::move(options))) {}

HttpClient::~HttpClient() {
  if (impl_) impl_->close();
}

boost::asio::awaitable<HttpResponse> HttpClient::request(HttpRequest req) {
  std::shared_ptr<detail::HttpClientImpl> impl = impl_;
  auto work = detail::HttpClientImpl::fetch(impl, std::move(req));
  HttpResponse response = co_await detail::run_on_strand(impl->strand(), std::move(work));
  co_return response;
}

boost::asio::awaitable<void> HttpClient::request_streaming(
    HttpRequest req, std::function<void(const HttpResponse& head)> on_head,
    std::function<void(std::string_view chunk)> on_body_chunk) {
  std::shared_ptr<detail::HttpClientImpl> impl = impl_;
  auto work = detail::HttpClientImpl::stream(impl, std::move(req), std::move(on_head),
                                             std::move(on_body_chunk));
  co_await detail::run_on_strand(impl->strand(), std::move(work));
}

boost::asio::awaitable<void> HttpClient::request_streaming_paced(
    HttpRequest req, std::function<void(const HttpResponse& head)> on_head,
    std::function<boost::asio::awaitable<void>(std::string_view chunk)> on_body_chunk) {
  std::shared_ptr<detail::HttpClientImpl> impl = impl_;
  auto work = detail::HttpClientImpl::stream_paced(impl, std::move(req), std::move(on_head),
                                                   std::move(on_body_chunk));
  co_await detail::run_on_strand(impl->strand(), std::move(work));
}

void HttpClient::close() { impl_->close(); }

boost::asio::any_io_executor HttpClient::get_executor() const noexcept { return impl_->executor(); }

const HttpClientOptions& HttpClient::options() const noexcept { return impl_->options(); }

}  // namespace llmq
