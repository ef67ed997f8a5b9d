#pragma once
/// @file redis.hpp
/// A small asynchronous Redis client on Boost.Asio: RESP framing by hiredis's formatter
/// and reply reader, I/O by Asio (hiredis's blocking connection API is not used).
///
/// - RedisConnection: one TCP connection to one node, optionally TLS (`rediss://`, see
///   RedisTlsOptions); concurrent exec() calls are pipelined (a write queue and a FIFO of
///   pending replies), reconnects lazily with exponential backoff, AUTH and SELECT on
///   connect, connect and command timeouts.
/// - RedisClient: routes commands over one connection per node and follows Redis Cluster
///   redirects (`-MOVED`, `-ASK`), caching the slot -> node map. Against a standalone
///   server it behaves like one RedisConnection.
///
/// Link target: llmq::redis.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace llmq {

/// One RESP2 reply.
struct RedisReply {
  enum class Type {
    string,   ///< bulk string (`$`), in `str`
    array,    ///< array (`*`), in `elements`
    integer,  ///< integer (`:`), in `integer`
    nil,      ///< null bulk string or null array
    status,   ///< simple string (`+OK`), in `str`
    error,    ///< error (`-ERR ...`), message in `str`
  };
  Type type = Type::nil;
  std::string str;
  std::int64_t integer = 0;
  std::vector<RedisReply> elements;

  [[nodiscard]] bool is_error() const noexcept { return type == Type::error; }
  [[nodiscard]] bool is_nil() const noexcept { return type == Type::nil; }
  /// True for an error reply whose message starts with `prefix` (e.g. "NOSCRIPT").
  [[nodiscard]] bool is_error(std::string_view prefix) const noexcept {
    return type == Type::error && std::string_view(str).substr(0, prefix.size()) == prefix;
  }
  /// Same type, text, integer and elements (compared recursively: replies a server sends
  /// nest at most 7 deep, RedisReplyReader refuses deeper).
  friend bool operator==(const RedisReply&, const RedisReply&) = default;
};

/// Transport and protocol failures of the Redis client. They reach callers as
/// `boost::system::system_error` whose code is in redis_category() ("llmq.redis").
/// Error *replies* of the server (`-ERR ...`) are not failures: they come back as a
/// RedisReply of type `error`.
enum class RedisErrc {
  /// The connection is down and the reconnect backoff has not elapsed yet; the command
  /// was not sent. Retry later (see RedisConfig::reconnect_backoff_initial).
  not_connected = 1,
  /// Resolving, connecting, the TLS handshake, AUTH and SELECT took longer than
  /// RedisConfig::connect_timeout.
  connect_timeout,
  /// No reply within RedisConfig::command_timeout. The connection is reset (a server
  /// that stopped answering cannot be trusted to keep the pipeline in order).
  command_timeout,
  /// The connection failed (reset, closed by the server, refused) while the command was
  /// queued or in flight. The command may or may not have been executed.
  connection_lost,
  /// The server sent bytes that are not RESP, or a reply nobody was waiting for.
  protocol_error,
  /// AUTH or SELECT answered with an error (wrong password, bad database index).
  handshake_failed,
  /// close() was called on the connection or client.
  closed,
  /// A cluster kept redirecting a command (more than RedisConfig::max_redirects hops).
  too_many_redirects,
  /// The TLS handshake of a `rediss://` connection failed, or the server refused the
  /// connection during it (e.g. the server's certificate did not verify, its name did not
  /// match, or the server wants a client certificate). The exception's message names the
  /// reason. Treated like a failed connect: the reconnect backoff applies.
  tls_handshake_failed,
};

/// The category of RedisErrc, named "llmq.redis".
[[nodiscard]] const boost::system::error_category& redis_category() noexcept;

/// Makes RedisErrc usable as a boost::system::error_code.
[[nodiscard]] boost::system::error_code make_error_code(RedisErrc e) noexcept;

/// TLS settings of a `rediss://` connection (RedisConfig::use_tls). Files are PEM and are
/// read when the RedisConnection is constructed (a missing or bad file throws ConfigError
/// there, not at connect time).
struct RedisTlsOptions {
  /// Verify the server: its certificate chain against the trusted CAs, and its name
  /// (server_name, else RedisConfig::host; a DNS name or an IP address, matched against
  /// the certificate's subjectAltName). Default true. `false` accepts any certificate
  /// from anyone, which defeats TLS against an active attacker: for tests only.
  bool verify = true;
  /// Trusted CA certificates (one or more PEM certificates in one file). Empty: the
  /// system trust store (OpenSSL's default paths, on Debian /etc/ssl/certs).
  std::string ca_file;
  /// Client certificate (chain) for servers that require one (Redis `tls-auth-clients
  /// yes`, mutual TLS). Empty: none is sent.
  std::string cert_file;
  /// The private key of cert_file (unencrypted PEM). Empty: read from cert_file.
  std::string key_file;
  /// The name sent as SNI and checked against the server's certificate. Empty: the host
  /// connected to (for a cluster, each node's host as the cluster announces it).
  std::string server_name;
};

/// Where and how to connect. Build it by hand or with parse_redis_url().
struct RedisConfig {
  /// Host name or IP address (IPv6 without brackets). Default 127.0.0.1.
  std::string host = "127.0.0.1";
  /// TCP port. Default 6379.
  std::uint16_t port = 6379;
  /// ACL user name for `AUTH user password`; empty: `AUTH password` (legacy auth).
  std::string username;
  /// Password; empty: no AUTH is sent.
  std::string password;
  /// Logical database selected after connecting (`SELECT db`); 0 sends nothing. Must be
  /// 0 against a cluster. Default 0.
  int database = 0;
  /// Bound on resolve + TCP connect + TLS handshake + AUTH + SELECT. Zero disables.
  /// Default 1 s.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(1)};
  /// Bound on the wait for one exec() (from the call to its reply). On expiry the call
  /// fails with RedisErrc::command_timeout and the connection is reset. Zero disables.
  /// Default 1 s.
  std::chrono::milliseconds command_timeout{std::chrono::seconds(1)};
  /// After a failed connect attempt, exec() fails fast with RedisErrc::not_connected for
  /// this long; the wait doubles per consecutive failure up to reconnect_backoff_max.
  /// A connection that was healthy and then broke is retried at once. Default 100 ms.
  std::chrono::milliseconds reconnect_backoff_initial{100};
  /// Upper bound of the reconnect backoff. Default 2 s.
  std::chrono::milliseconds reconnect_backoff_max{std::chrono::seconds(2)};
  /// Redirects (`MOVED`/`ASK`) one RedisClient command may follow. Default 5.
  int max_redirects = 5;
  /// Speak TLS (OpenSSL) on the TCP connection: set by parse_redis_url() for `rediss://`,
  /// cleared for `redis://`. Every node of a cluster is then reached over TLS too (the
  /// servers need `tls-cluster yes` so that they announce their TLS ports). Default false.
  bool use_tls = false;
  /// Certificates and verification when use_tls is set (ignored otherwise).
  RedisTlsOptions tls;
};

/// Parses `redis://[[user]:password@]host[:port][/db]` or, for TLS,
/// `rediss://[[user]:password@]host[:port][/db][?name=value&...]` into `base` (whose
/// timeouts, backoff and TLS options are kept). User and password may be percent-encoded;
/// an IPv6 host is written in brackets (`redis://[::1]:6379`). Defaults: port 6379, db 0.
/// The scheme sets RedisConfig::use_tls.
///
/// Query parameters of `rediss://` set the fields of RedisTlsOptions: `ca_file`,
/// `cert_file`, `key_file`, `server_name` (percent-encoded values), and `verify`
/// (`true`/`false`, also `1`/`0`, `yes`/`no`). Example:
/// `rediss://:pw@redis.internal:6380/0?ca_file=/etc/llmq/redis-ca.pem`.
///
/// Throws ConfigError for a malformed URL, an unknown or repeated query parameter, or a
/// query parameter on a `redis://` URL.
[[nodiscard]] RedisConfig parse_redis_url(std::string_view url, RedisConfig base = {});

namespace detail {
class RedisConnectionState;
struct RedisClientState;
}  // namespace detail

/// One connection to one Redis server.
///
/// The connection is opened by the first exec() (or connect()), and reopened by a later
/// exec() after it broke, no earlier than the reconnect backoff allows. All I/O runs on
/// an internal strand of the executor passed in; nothing ever blocks a thread.
///
/// Thread safety: every member may be called concurrently from any thread.
/// Lifetime: destroy it (or co_await close()) before its io_context is destroyed; the
/// destructor closes the connection asynchronously.
class RedisConnection {
 public:
  /// Does not connect. With config.use_tls, reads the TLS files (RedisTlsOptions) and
  /// throws ConfigError, naming the file, when one cannot be loaded.
  RedisConnection(boost::asio::any_io_executor ex, RedisConfig config);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  /// Sends one command (binary-safe arguments, e.g. `{"SET", key, value}`) and returns
  /// its reply; an error reply is returned, not thrown. Concurrent calls share the
  /// connection in pipeline order.
  ///
  /// Throws boost::system::system_error with a RedisErrc code (see there).
  /// Cancellation (terminal): the call completes at once with operation_aborted; the
  /// command, if already written, still gets its reply read and discarded, so the
  /// pipeline stays in order.
  boost::asio::awaitable<RedisReply> exec(std::vector<std::string> args);

  /// Sends several commands back to back (nothing of another caller in between) and
  /// returns their replies in order. Same errors and cancellation as exec().
  boost::asio::awaitable<std::vector<RedisReply>> exec_pipeline(
      std::vector<std::vector<std::string>> commands);

  /// Opens the connection now if it is not open. Throws like exec().
  boost::asio::awaitable<void> connect();

  /// Closes the connection; pending and later calls fail with RedisErrc::closed.
  boost::asio::awaitable<void> close();

  /// True while a connection is established (a snapshot).
  [[nodiscard]] bool is_connected() const noexcept;

  [[nodiscard]] const RedisConfig& config() const noexcept { return config_; }

 private:
  RedisConfig config_;
  std::shared_ptr<detail::RedisConnectionState> state_;
};

/// A client for a standalone server or a Redis Cluster. Keeps one RedisConnection per
/// node it has talked to; the first is the node of the configuration (the seed).
///
/// Routing: exec_for_key() sends to the node that the cached slot map names for the
/// key's hash slot (the seed while nothing is known). On `-MOVED slot host:port` it
/// records the slot's new owner, refreshes the whole map with `CLUSTER SLOTS` (at most
/// once a second) and resends; on `-ASK slot host:port` it resends once to that node
/// preceded by `ASKING`, without touching the map. Multi-key commands must use keys of
/// one slot (a hash tag `{...}`).
///
/// Thread safety: every member may be called concurrently from any thread.
class RedisClient {
 public:
  /// Does not connect. Throws ConfigError like RedisConnection's constructor.
  RedisClient(boost::asio::any_io_executor ex, RedisConfig config);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// Sends a command whose (first) key is `key`, following redirects. Throws like
  /// RedisConnection::exec(), and RedisErrc::too_many_redirects.
  boost::asio::awaitable<RedisReply> exec_for_key(std::string key, std::vector<std::string> args);

  /// Sends a command without a key to the seed node (redirects are still followed).
  boost::asio::awaitable<RedisReply> exec(std::vector<std::string> args);

  /// Closes every connection; later calls fail with RedisErrc::closed.
  boost::asio::awaitable<void> close();

  /// Nodes known so far (the seed plus every node a redirect or CLUSTER SLOTS named).
  [[nodiscard]] std::size_t node_count() const;
  /// Redirects followed since construction.
  [[nodiscard]] std::uint64_t redirects() const noexcept;

  [[nodiscard]] const RedisConfig& config() const noexcept;

 private:
  std::shared_ptr<detail::RedisClientState> state_;
};

}  // namespace llmq

namespace boost::system {
template <>
struct is_error_code_enum<llmq::RedisErrc> : std::true_type {};
}  // namespace boost::system
