/// @file redis_connection.cpp
/// RedisConnection: one pipelined connection (TCP, or TLS over TCP) on an Asio strand, and
/// the error category (parse_redis_url is in redis_url.cpp). OpenSSL stays in this file:
/// the public header only knows RedisTlsOptions.

#include <llmq/errors.hpp>
#include <llmq/log.hpp>
#include <llmq/redis.hpp>
#include "redis_protocol.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <deque>
#include <optional>
#include <tuple>

namespace llmq {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

// --- error category --------------------------------------------------------------------

namespace {

// boost::system::error_category has a protected non-virtual destructor by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class RedisCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "llmq.redis"; }
  std::string message(int ev) const override {
    switch (static_cast<RedisErrc>(ev)) {
      case RedisErrc::not_connected:
        return "not connected to redis (waiting for the reconnect backoff)";
      case RedisErrc::connect_timeout:
        return "redis connect timed out";
      case RedisErrc::command_timeout:
        return "redis command timed out";
      case RedisErrc::connection_lost:
        return "redis connection lost";
      case RedisErrc::protocol_error:
        return "redis protocol error";
      case RedisErrc::handshake_failed:
        return "redis AUTH/SELECT failed";
      case RedisErrc::closed:
        return "redis connection closed";
      case RedisErrc::too_many_redirects:
        return "too many redis cluster redirects";
      case RedisErrc::tls_handshake_failed:
        return "redis TLS handshake failed";
    }
    return "unknown redis error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& redis_category() noexcept {
  static const RedisCategory category;
  return category;
}

boost::system::error_code make_error_code(RedisErrc e) noexcept {
  return {static_cast<int>(e), redis_category()};
}

// --- TLS -------------------------------------------------------------------------------

namespace {

/// The client context of a rediss:// connection: TLS 1.2 or later, the trusted CAs, the
/// client certificate. Throws ConfigError naming what could not be loaded.
std::shared_ptr<asio::ssl::context> make_tls_context(const RedisTlsOptions& tls) {
  namespace ssl = asio::ssl;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                   ec);
  if (ec) throw ConfigError("redis TLS: cannot restrict the protocol versions: " + ec.message());
  // An encrypted key must fail to load rather than prompt on the terminal.
  ctx->set_password_callback(
      [](std::size_t, ssl::context::password_purpose) { return std::string(); }, ec);
  if (tls.ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
    if (ec) throw ConfigError("redis TLS: cannot use the system trust store: " + ec.message());
  } else {
    ctx->load_verify_file(tls.ca_file, ec);
    if (ec) {
      throw ConfigError("redis TLS: cannot load ca_file '" + tls.ca_file + "': " + ec.message());
    }
  }
  if (!tls.cert_file.empty()) {
    ctx->use_certificate_chain_file(tls.cert_file, ec);
    if (ec) {
      throw ConfigError("redis TLS: cannot load cert_file '" + tls.cert_file +
                        "': " + ec.message());
    }
    const std::string& key = tls.key_file.empty() ? tls.cert_file : tls.key_file;
    ctx->use_private_key_file(key, ssl::context::pem, ec);
    if (ec || SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      throw ConfigError("redis TLS: cannot load the private key from '" + key +
                        "' (an unencrypted PEM key matching cert_file)" +
                        (ec ? ": " + ec.message() : std::string()));
    }
  } else if (!tls.key_file.empty()) {
    throw ConfigError("redis TLS: key_file is set but cert_file is not");
  }
  ctx->set_verify_mode(tls.verify ? ssl::verify_peer : ssl::verify_none, ec);
  if (ec) throw ConfigError("redis TLS: cannot set the verify mode: " + ec.message());
  return ctx;
}

/// Why a TLS connection failed between the handshake and the first reply. With TLS 1.3 a
/// server checks the client's certificate only after the client's handshake is done, and
/// refuses with an alert (or just closes, or resets, the connection).
std::string tls_refusal(const boost::system::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) {
    return "the server refused the connection: " + ec.message();
  }
  return "the server closed the connection before the first reply (does it require a client "
         "certificate?): " +
         ec.message();
}

/// Why a handshake failed: Asio's message plus, when `verified` and the certificate did
/// not verify, OpenSSL's reason (untrusted issuer, expired, host name mismatch, ...).
std::string tls_failure(const boost::system::error_code& ec, SSL* ssl, bool verified) {
  std::string why = ec.message();
  const long verify = verified ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verify != X509_V_OK) {
    why += " (";
    why += X509_verify_cert_error_string(verify);
    why += ")";
  }
  return why;
}

}  // namespace

// --- the connection state machine, on its strand ---------------------------------------

namespace detail {

/// The byte stream of one connection attempt: TCP, or TLS over TCP. Every coroutine of the
/// attempt holds it, so a stream whose operations are still completing (aborted by
/// close()) stays alive while the next attempt uses a new one.
class RedisLink {
 public:
  using result = std::tuple<boost::system::error_code, std::size_t>;

  /// TLS when `tls` is given (the SSL object is created here, from that context).
  RedisLink(const asio::strand<asio::any_io_executor>& strand, asio::ssl::context* tls) {
    if (tls != nullptr) {
      tls_.emplace(strand, *tls);
    } else {
      plain_.emplace(strand);
    }
  }

  [[nodiscard]] bool is_tls() const noexcept { return tls_.has_value(); }
  asio::ip::tcp::socket& tcp() { return tls_ ? tls_->next_layer() : *plain_; }

  asio::awaitable<result> read_some(asio::mutable_buffer buffer) {
    if (tls_) co_return co_await tls_->async_read_some(buffer, asio::as_tuple(asio::use_awaitable));
    co_return co_await plain_->async_read_some(buffer, asio::as_tuple(asio::use_awaitable));
  }

  asio::awaitable<result> write(asio::const_buffer buffer) {
    if (tls_)
      co_return co_await asio::async_write(*tls_, buffer, asio::as_tuple(asio::use_awaitable));
    co_return co_await asio::async_write(*plain_, buffer, asio::as_tuple(asio::use_awaitable));
  }

  /// The client side of the TLS handshake with the server called `name` (SNI for a DNS
  /// name; with `verify`, the name the certificate must hold). Returns "" on success, else
  /// why it failed.
  asio::awaitable<std::string> handshake(std::string name, bool verify) {
    std::string why = prepare(name, verify);
    if (!why.empty()) co_return why;
    auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::client,
                                               asio::as_tuple(asio::use_awaitable));
    if (ec) co_return tls_failure(ec, tls_->native_handle(), verify);
    co_return why;
  }

  void close() {
    boost::system::error_code ignored;
    tcp().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    tcp().close(ignored);
  }

 private:
  /// SNI and the host name (or IP address) check, before the handshake.
  std::string prepare(const std::string& name, bool verify) {
    SSL* ssl = tls_->native_handle();
    boost::system::error_code aec;
    (void)asio::ip::make_address(name, aec);
    const bool is_ip = !aec;
    // SSL_set_tlsext_host_name without its C cast. SNI carries DNS names only.
    if (!is_ip && SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                           const_cast<char*>(name.c_str())) != 1) {
      return "invalid server name '" + name + "'";
    }
    if (!verify) return {};
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                         : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
    if (ok != 1) return "cannot check the certificate against the name '" + name + "'";
    return {};
  }

  std::optional<asio::ip::tcp::socket> plain_;
  std::optional<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
};

/// One exec()/exec_pipeline() call: its bytes, the replies it expects, and the timer its
/// caller waits on (cancelled when the replies are in; its expiry is the command timeout).
struct RedisOp {
  explicit RedisOp(const asio::strand<asio::any_io_executor>& s) : timer(s) {}
  std::string wire;
  std::size_t expected = 1;  // 0: "just be connected" (connect())
  std::vector<RedisReply> replies;
  boost::system::error_code ec;
  bool done = false;
  bool abandoned = false;  // the caller left (cancelled or timed out): discard the reply
  bool rearmed = false;    // the timer was moved (connected): its wait was aborted for that
  asio::steady_timer timer;
};

class RedisConnectionState : public std::enable_shared_from_this<RedisConnectionState> {
 public:
  using strand_type = asio::strand<asio::any_io_executor>;

  /// Throws ConfigError when the TLS files of a rediss:// config cannot be loaded.
  RedisConnectionState(const asio::any_io_executor& ex, RedisConfig config)
      : strand_(asio::make_strand(ex)),
        config_(std::move(config)),
        tls_context_(config_.use_tls ? make_tls_context(config_.tls) : nullptr),
        resolver_(strand_),
        write_signal_(strand_),
        connect_deadline_(strand_) {}

  [[nodiscard]] const strand_type& strand() const noexcept { return strand_; }
  [[nodiscard]] bool connected() const noexcept { return connected_.load(); }

  /// On the strand: queues `wire` (holding `expected` commands) and waits for the replies.
  static asio::awaitable<std::vector<RedisReply>> run(std::shared_ptr<RedisConnectionState> self,
                                                      std::string wire, std::size_t expected) {
    if (self->phase_ == Phase::closed)
      throw boost::system::system_error(make_error_code(RedisErrc::closed), self->where());
    steady::duration extra{0};
    if (self->phase_ == Phase::idle) {
      const auto now = steady::now();
      if (now < self->next_attempt_) {
        throw boost::system::system_error(make_error_code(RedisErrc::not_connected),
                                          self->down_message(now));
      }
      self->start_connect();
    }
    if (self->phase_ == Phase::connecting) extra = self->config_.connect_timeout;

    auto op = std::make_shared<RedisOp>(self->strand_);
    op->wire = std::move(wire);
    op->expected = expected;
    self->to_write_.push_back(op);
    if (self->phase_ == Phase::connected) self->write_signal_.cancel();

    if (self->config_.command_timeout.count() > 0) {
      op->timer.expires_after(self->config_.command_timeout + extra);
    } else {
      op->timer.expires_at(steady::time_point::max());
    }
    while (!op->done) {
      auto [ec] = co_await op->timer.async_wait(asio::as_tuple(asio::use_awaitable));
      if (op->done) break;
      if (!ec) {
        // No reply in time: the server is stuck or gone. Reset the connection; every
        // call on it (this one included) fails.
        op->abandoned = true;
        self->fail_connection(self->generation_, RedisErrc::command_timeout,
                              "no reply within command_timeout");
        if (!op->done) {  // not on the connection any more (cannot happen; be safe)
          op->done = true;
          op->ec = make_error_code(RedisErrc::command_timeout);
        }
        break;
      }
      // Aborted: either connect_and_run() re-armed the timer (the connection is up, the
      // command timeout now starts) or the caller cancelled us.
      const asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
      if (op->rearmed && cs.cancelled() == asio::cancellation_type::none) {
        op->rearmed = false;
        continue;
      }
      // Cancelled by the caller. The op stays queued: unwritten, it is skipped; written,
      // its reply is read and dropped, so the pipeline keeps its order.
      op->abandoned = true;
      throw boost::system::system_error(asio::error::operation_aborted);
    }
    if (op->ec) {
      std::string what = self->where();
      if (op->ec != make_error_code(RedisErrc::closed) && !self->last_error_.empty())
        what += " (" + self->last_error_ + ")";
      throw boost::system::system_error(op->ec, what);
    }
    co_return std::move(op->replies);
  }

  /// On the strand: closes for good.
  void close_now() {
    if (phase_ == Phase::closed) return;
    phase_ = Phase::closed;
    ++generation_;
    connected_ = false;
    shut_socket();
    fail_all(make_error_code(RedisErrc::closed));
  }

 private:
  enum class Phase { idle, connecting, connected, closed };

  [[nodiscard]] std::string where() const {
    return (config_.use_tls ? "rediss " : "redis ") + config_.host + ":" +
           std::to_string(config_.port);
  }

  /// The name the server's certificate must hold (and SNI).
  [[nodiscard]] std::string tls_name() const {
    return config_.tls.server_name.empty() ? config_.host : config_.tls.server_name;
  }

  [[nodiscard]] std::string down_message(steady::time_point now) const {
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next_attempt_ - now);
    return where() + " (last error: " + last_error_ + "; next attempt in " +
           std::to_string(wait.count()) + " ms)";
  }

  void start_connect() {
    phase_ = Phase::connecting;
    const std::uint64_t gen = ++generation_;
    link_ = std::make_shared<RedisLink>(strand_, tls_context_.get());
    asio::co_spawn(strand_, connect_and_run(shared_from_this(), gen, link_), asio::detached);
  }

  /// AUTH and SELECT as configured (`checked` of them: their replies must not be errors),
  /// then, over TLS, a PING: with TLS 1.3 a server that refuses the client (no or a bad
  /// client certificate) says so only after the handshake, so a round trip is part of
  /// connecting. `count` is the number of commands.
  static std::string handshake_wire(const RedisConfig& cfg, std::size_t& count,
                                    std::size_t& checked) {
    std::string wire;
    count = 0;
    if (!cfg.password.empty()) {
      std::vector<std::string> auth;
      auth.emplace_back("AUTH");
      if (!cfg.username.empty()) auth.push_back(cfg.username);
      auth.push_back(cfg.password);
      wire += format_redis_command(auth);
      ++count;
    }
    if (cfg.database != 0) {
      std::vector<std::string> select;
      select.emplace_back("SELECT");
      select.push_back(std::to_string(cfg.database));
      wire += format_redis_command(select);
      ++count;
    }
    checked = count;
    if (cfg.use_tls) {
      std::vector<std::string> ping;
      ping.emplace_back("PING");
      wire += format_redis_command(ping);
      ++count;
    }
    return wire;
  }

  /// Ends connect attempt `gen` after a failed TLS handshake (or a refusal right after it).
  void fail_tls(std::uint64_t gen, const std::string& why) {
    if (connect_timed_out_) {
      fail_connection(gen, RedisErrc::connect_timeout, "connect timed out (TLS handshake)");
    } else {
      fail_connection(gen, RedisErrc::tls_handshake_failed, "TLS: " + why);
    }
  }

  static asio::awaitable<void> connect_and_run(std::shared_ptr<RedisConnectionState> self,
                                               std::uint64_t gen, std::shared_ptr<RedisLink> link) {
    self->connect_timed_out_ = false;
    if (self->config_.connect_timeout.count() > 0) {
      self->connect_deadline_.expires_after(self->config_.connect_timeout);
      self->connect_deadline_.async_wait([self, gen](boost::system::error_code ec) {
        if (ec || self->generation_ != gen || self->phase_ != Phase::connecting) return;
        self->connect_timed_out_ = true;
        self->shut_socket();
      });
    }
    bool tls_up = false;  // the TLS handshake succeeded; the first reply is still due
    auto failed = [&](const boost::system::error_code& ec, std::string_view what) {
      if (self->generation_ != gen) return;
      if (self->connect_timed_out_) {
        self->fail_connection(gen, RedisErrc::connect_timeout, "connect timed out");
      } else if (tls_up) {
        self->fail_tls(gen, tls_refusal(ec));
      } else {
        self->fail_connection(gen, RedisErrc::connection_lost,
                              std::string(what) + ": " + ec.message());
      }
    };

    auto [rec, endpoints] = co_await self->resolver_.async_resolve(
        self->config_.host, std::to_string(self->config_.port),
        asio::as_tuple(asio::use_awaitable));
    if (self->generation_ != gen) co_return;
    if (rec || self->connect_timed_out_) {
      failed(rec, "resolve");
      co_return;
    }
    auto [cec, endpoint] =
        co_await asio::async_connect(link->tcp(), endpoints, asio::as_tuple(asio::use_awaitable));
    if (self->generation_ != gen) co_return;
    if (cec || self->connect_timed_out_) {
      failed(cec, "connect");
      co_return;
    }
    boost::system::error_code ignored;
    link->tcp().set_option(asio::ip::tcp::no_delay(true), ignored);

    if (link->is_tls()) {
      const std::string why = co_await link->handshake(self->tls_name(), self->config_.tls.verify);
      if (self->generation_ != gen) co_return;
      if (!why.empty() || self->connect_timed_out_) {
        self->fail_tls(gen, why);
        co_return;
      }
      tls_up = true;
    }

    std::size_t expected = 0;
    std::size_t checked = 0;
    const std::string hello = handshake_wire(self->config_, expected, checked);
    if (expected > 0) {
      auto [wec, written] = co_await link->write(asio::buffer(hello));
      if (self->generation_ != gen) co_return;
      if (wec) {
        failed(wec, "write");
        co_return;
      }
      std::vector<RedisReply> replies;
      std::array<char, 4096> buf{};
      for (;;) {
        bool bad = false;
        try {
          while (replies.size() < expected) {
            auto r = self->reader_.next();
            if (!r) break;
            replies.push_back(std::move(*r));
          }
        } catch (const RedisProtocolError&) {
          bad = true;
        }
        if (bad) {
          self->fail_connection(gen, RedisErrc::protocol_error, "bad reply to AUTH/SELECT");
          co_return;
        }
        if (replies.size() >= expected) break;
        auto [ec, n] = co_await link->read_some(asio::buffer(buf));
        if (self->generation_ != gen) co_return;
        if (ec) {
          failed(ec, "read");
          co_return;
        }
        try {
          self->reader_.feed(std::string_view(buf.data(), n));
        } catch (const RedisProtocolError&) {
          bad = true;
        }
        if (bad) {
          self->fail_connection(gen, RedisErrc::protocol_error, "bad reply to AUTH/SELECT");
          co_return;
        }
      }
      for (std::size_t i = 0; i < checked; ++i) {
        const RedisReply& r = replies[i];
        if (r.is_error()) {
          // The server's message (e.g. WRONGPASS) never contains the password.
          self->fail_connection(gen, RedisErrc::handshake_failed, "AUTH/SELECT: " + r.str);
          co_return;
        }
      }
    }
    self->connect_deadline_.cancel();
    // Calls that waited for the connection get their full command timeout from now on.
    if (self->config_.command_timeout.count() > 0) {
      for (const auto& op : self->to_write_) {
        if (op->done) continue;
        op->rearmed = op->timer.expires_after(self->config_.command_timeout) > 0;
      }
    }
    self->phase_ = Phase::connected;
    self->connected_ = true;
    self->backoff_ = std::chrono::milliseconds(0);
    if (self->down_logged_) {
      logger()->info("{}: connected again", self->where());
      self->down_logged_ = false;
    }
    asio::co_spawn(self->strand_, reader_loop(self, gen, link), asio::detached);
    asio::co_spawn(self->strand_, writer_loop(self, gen, link), asio::detached);
  }

  static asio::awaitable<void> reader_loop(std::shared_ptr<RedisConnectionState> self,
                                           std::uint64_t gen, std::shared_ptr<RedisLink> link) {
    std::array<char, 16384> buf{};
    for (;;) {
      auto [ec, n] = co_await link->read_some(asio::buffer(buf));
      if (self->generation_ != gen) co_return;
      if (ec) {
        self->fail_connection(gen, RedisErrc::connection_lost, "read: " + ec.message());
        co_return;
      }
      bool bad = false;
      try {
        self->reader_.feed(std::string_view(buf.data(), n));
        while (auto reply = self->reader_.next()) {
          if (!self->deliver(std::move(*reply))) {
            bad = true;
            break;
          }
        }
      } catch (const RedisProtocolError&) {
        bad = true;
      }
      if (bad) {
        self->fail_connection(gen, RedisErrc::protocol_error, "unexpected or malformed reply");
        co_return;
      }
    }
  }

  static asio::awaitable<void> writer_loop(std::shared_ptr<RedisConnectionState> self,
                                           std::uint64_t gen, std::shared_ptr<RedisLink> link) {
    std::string batch;
    for (;;) {
      if (self->generation_ != gen) co_return;
      batch.clear();
      while (!self->to_write_.empty()) {
        std::shared_ptr<RedisOp> op = std::move(self->to_write_.front());
        self->to_write_.pop_front();
        if (op->abandoned) continue;
        if (op->expected == 0) {
          complete(*op, {});
          continue;
        }
        batch += op->wire;
        self->awaiting_.push_back(std::move(op));
      }
      if (batch.empty()) {
        self->write_signal_.expires_at(steady::time_point::max());
        co_await self->write_signal_.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      auto [ec, n] = co_await link->write(asio::buffer(batch));
      if (self->generation_ != gen) co_return;
      if (ec) {
        self->fail_connection(gen, RedisErrc::connection_lost, "write: " + ec.message());
        co_return;
      }
    }
  }

  /// Hands a reply to the oldest written op; false if none is waiting (desynchronised).
  bool deliver(RedisReply reply) {
    if (awaiting_.empty()) return false;
    RedisOp& op = *awaiting_.front();
    op.replies.push_back(std::move(reply));
    if (op.replies.size() >= op.expected) {
      std::shared_ptr<RedisOp> done = std::move(awaiting_.front());
      awaiting_.pop_front();
      complete(*done, {});
    }
    return true;
  }

  static void complete(RedisOp& op, boost::system::error_code ec) {
    if (op.done) return;
    op.done = true;
    op.ec = ec;
    op.timer.cancel();
  }

  void fail_all(boost::system::error_code ec) {
    std::deque<std::shared_ptr<RedisOp>> written = std::move(awaiting_);
    std::deque<std::shared_ptr<RedisOp>> queued = std::move(to_write_);
    awaiting_.clear();
    to_write_.clear();
    for (auto& op : written) complete(*op, ec);
    for (auto& op : queued) complete(*op, ec);
  }

  void shut_socket() {
    if (link_) link_->close();
    resolver_.cancel();
    write_signal_.cancel();
    connect_deadline_.cancel();
  }

  /// Drops connection `gen` (if still current): fails its calls with `code`, schedules
  /// the next attempt (at once after a healthy connection, else after the backoff).
  void fail_connection(std::uint64_t gen, RedisErrc code, std::string why) {
    if (gen != generation_ || phase_ == Phase::idle || phase_ == Phase::closed) return;
    const bool was_connected = phase_ == Phase::connected;
    ++generation_;
    phase_ = Phase::idle;
    connected_ = false;
    shut_socket();
    reader_.reset();
    const auto now = steady::now();
    if (was_connected) {
      backoff_ = std::chrono::milliseconds(0);
      next_attempt_ = now;
    } else {
      backoff_ = backoff_.count() == 0
                     ? config_.reconnect_backoff_initial
                     : std::min(backoff_ * 2, std::max(config_.reconnect_backoff_max,
                                                       config_.reconnect_backoff_initial));
      next_attempt_ = now + backoff_;
    }
    last_error_ = std::move(why);
    if (!down_logged_) {
      logger()->warn("{}: {}", where(), last_error_);
      down_logged_ = true;
    } else {
      logger()->debug("{}: {}", where(), last_error_);
    }
    fail_all(make_error_code(code));
  }

  strand_type strand_;
  RedisConfig config_;
  std::shared_ptr<asio::ssl::context> tls_context_;  // rediss:// only
  std::shared_ptr<RedisLink> link_;                  // the current attempt's stream
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer write_signal_;
  asio::steady_timer connect_deadline_;
  RedisReplyReader reader_;
  std::deque<std::shared_ptr<RedisOp>> to_write_;  // queued, not yet written
  std::deque<std::shared_ptr<RedisOp>> awaiting_;  // written, replies pending (FIFO)
  Phase phase_ = Phase::idle;
  std::uint64_t generation_ = 0;  // bumped whenever a connection (attempt) ends
  steady::time_point next_attempt_{};
  std::chrono::milliseconds backoff_{0};
  std::string last_error_;
  bool connect_timed_out_ = false;
  bool down_logged_ = false;
  std::atomic<bool> connected_{false};
};

}  // namespace detail

// --- RedisConnection -------------------------------------------------------------------

RedisConnection::RedisConnection(asio::any_io_executor ex, RedisConfig config)
    : config_(std::move(config)),
      state_(std::make_shared<detail::RedisConnectionState>(ex, config_)) {}

RedisConnection::~RedisConnection() {
  asio::post(state_->strand(), [state = state_] { state->close_now(); });
}

asio::awaitable<RedisReply> RedisConnection::exec(std::vector<std::string> args) {
  std::string wire = detail::format_redis_command(args);
  std::shared_ptr<detail::RedisConnectionState> state = state_;
  std::vector<RedisReply> replies = co_await asio::co_spawn(
      state->strand(), detail::RedisConnectionState::run(state, std::move(wire), 1),
      asio::use_awaitable);
  co_return std::move(replies.front());
}

asio::awaitable<std::vector<RedisReply>> RedisConnection::exec_pipeline(
    std::vector<std::vector<std::string>> commands) {
  if (commands.empty()) co_return std::vector<RedisReply>();
  std::string wire;
  for (const auto& c : commands) wire += detail::format_redis_command(c);
  std::shared_ptr<detail::RedisConnectionState> state = state_;
  std::vector<RedisReply> replies = co_await asio::co_spawn(
      state->strand(), detail::RedisConnectionState::run(state, std::move(wire), commands.size()),
      asio::use_awaitable);
  co_return replies;
}

asio::awaitable<void> RedisConnection::connect() {
  std::shared_ptr<detail::RedisConnectionState> state = state_;
  std::vector<RedisReply> none = co_await asio::co_spawn(
      state->strand(), detail::RedisConnectionState::run(state, std::string(), 0),
      asio::use_awaitable);
  (void)none;
}

namespace {
asio::awaitable<void> close_on_strand(std::shared_ptr<detail::RedisConnectionState> state) {
  state->close_now();
  co_return;
}
}  // namespace

asio::awaitable<void> RedisConnection::close() {
  std::shared_ptr<detail::RedisConnectionState> state = state_;
  co_await asio::co_spawn(state->strand(), close_on_strand(state), asio::use_awaitable);
}

bool RedisConnection::is_connected() const noexcept { return state_->connected(); }

}  // namespace llmq
