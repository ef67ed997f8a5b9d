#pragma once
// llmq-gateway: an OpenAI- and Azure-compatible HTTP front end to an LLMQueue.
//
// `Gateway` maps one HTTP request to one LLMQueue call and back (no I/O of its own, so it
// is tested without sockets); `GatewayServer` is the HTTP/1.1 server around it (the
// shared llmq_http_server loop: limits, timeouts, keep-alive, disconnect detection).

#include "access_log.hpp"
#include "dashboard.hpp"
#include "gateway_config.hpp"
#include "metrics.hpp"

#include <llmq/detail/snapshot.hpp>
#include <llmq/queue.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace llmq::gateway {

struct HttpExchange {
  std::string method;
  std::string target;                                        ///< path and query as received
  std::vector<std::pair<std::string, std::string>> headers;  ///< names lower-cased
  std::string body;

  [[nodiscard]] const std::string* header(std::string_view lower_name) const;
};

struct HttpAnswer {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// An error envelope `{"error":{...}}` still to be serialised into `body` (the gateway
  /// adds the request id to it first). Null: `body` is the answer.
  nlohmann::json error;
  /// A streamed answer (`text/event-stream`): its events are still to be sent after the
  /// head (send_event_stream). Null: `body` is the answer.
  std::shared_ptr<ResponseStream> stream;
  /// For a streamed answer: called once it has ended, with its final status (200, the
  /// status of the error that cut it short, 499 when the client left) and the bytes of
  /// events sent.
  std::function<void(int status, std::size_t bytes)> stream_ended;
  /// The answer's request id (finish_answer sets it).
  std::string request_id;
};

/// Sends a streamed answer: `data: <chunk>\n\n` for each chunk as it arrives, then
/// `data: [DONE]\n\n` when the stream completed, or an OpenAI-style error event
/// `data: {"error":{...,"request_id"}}\n\n` when it was cut short (an upstream that broke
/// off, an execution timeout), never a silent truncation. `write` sends bytes; false means
/// the client is gone. Returns the final status: 200, the error's, or 499 when the client
/// left (or the wait was cancelled); the stream is closed then, which cancels the upstream
/// call. Never throws.
boost::asio::awaitable<int> send_event_stream(
    ResponseStream& stream, const std::string& request_id,
    const std::function<boost::asio::awaitable<bool>(std::string_view)>& write);

/// Builds the OpenAI-style error answer `{"error":{"message","type","param","code"}}`
/// (`param` null when empty), not yet serialised (see HttpAnswer::error).
HttpAnswer error_answer(int status, std::string_view message, std::string_view type,
                        std::string_view code, std::string_view param = {});

/// Serialises a pending error envelope with `"request_id"` added, and sets the
/// `x-request-id` header.
void finish_answer(HttpAnswer& a, const std::string& request_id);

/// The client's own `x-request-id` when it is sane (1..128 bytes of printable ASCII),
/// else empty.
[[nodiscard]] std::string client_request_id(const HttpExchange& request);

/// A fresh request id for an answer that has no other (`gw-` + process prefix + counter).
[[nodiscard]] std::string make_request_id();

/// What a configuration reload did (see reload.hpp).
struct ReloadOutcome {
  bool ok = false;
  bool busy = false;                  ///< refused: another reload was running
  std::string error;                  ///< why the file was not used (when not ok)
  std::vector<std::string> warnings;  ///< keys that take effect at a restart, and the
                                      ///< new configuration's start-up warnings
};

class Gateway {
 public:
  Gateway(LLMQueue& queue, GatewayConfig config, std::shared_ptr<Metrics> metrics);

  /// Answers one request; the answer carries an `x-request-id` (and error bodies a
  /// `request_id`). Never throws. Cancellation (the client disconnected): a queued
  /// request is removed from the queue, a running one has its upstream call cancelled;
  /// the answer is then 499 (and is not sent).
  boost::asio::awaitable<HttpAnswer> handle(HttpExchange request);

  [[nodiscard]] const std::shared_ptr<Metrics>& metrics() const noexcept { return metrics_; }

  /// The per-request settings in use (client and admin keys, metrics_public, user_header,
  /// max_json_depth; user_header lower-cased).
  [[nodiscard]] std::shared_ptr<const GatewayConfig> config() const { return config_.load(); }
  /// Requests from now on use `config`; those being answered keep the one they began with.
  /// Thread-safe.
  void reconfigure(GatewayConfig config);

  /// What `POST /admin/reload` (with an admin key) runs; unset: that route is 404. Set
  /// before serving.
  void set_reload(std::function<boost::asio::awaitable<ReloadOutcome>()> reload) {
    reload_ = std::move(reload);
  }

  /// /readyz answers 200 only while ready.
  void set_ready(bool ready) noexcept { ready_.store(ready); }

  /// Where each answer is logged (gateway.access_log); null: nowhere. Set before serving.
  void set_access_log(std::shared_ptr<AccessLog> log) { access_log_ = std::move(log); }
  [[nodiscard]] const std::shared_ptr<AccessLog>& access_log() const noexcept {
    return access_log_;
  }

  /// Adds the queue's depth and in-flight count now to the samples /stats returns (the
  /// gateway calls it once a second).
  boost::asio::awaitable<void> record_sample();

  /// Logs a request the HTTP server refused before it reached handle() (malformed, too
  /// large): counted in the metrics, and a line in the access log.
  void refused_by_server(int status, const std::string& request_id);

 private:
  struct Route;
  /// What handle() learns about a request while answering it, for the access log.
  struct Facts {
    std::shared_ptr<const GatewayConfig> config;  ///< the settings this request is served by
    std::string request_id;  ///< the client's (when sane), else the queue's once it has one
    std::string user;
    std::string model;
    bool queued = false;  ///< handed to the queue: a telemetry record follows
  };
  boost::asio::awaitable<HttpAnswer> answer(const HttpExchange& request, Facts& facts);
  /// The API key a request presents (`api-key`, or `Authorization: Bearer`), else empty.
  static std::string presented_key(const HttpExchange& request);
  /// The request presents one of the client keys or admin keys (or, with `admin_only`,
  /// one of the admin keys).
  [[nodiscard]] static bool presents_operator_key(const HttpExchange& request,
                                                  const GatewayConfig& config,
                                                  bool admin_only = false);
  boost::asio::awaitable<HttpAnswer> handle_reload(const HttpExchange& request,
                                                   const GatewayConfig& config);
  boost::asio::awaitable<HttpAnswer> handle_inference(const HttpExchange& request,
                                                      const Route& route, RequestOptions options,
                                                      Facts& facts);
  /// A streamed chat request (`"stream": true`): the stream, or the answer it ended with.
  boost::asio::awaitable<HttpAnswer> handle_streamed(const std::string& req_type,
                                                     nlohmann::json body, std::string user,
                                                     ModelPreferences prefs, RequestOptions options,
                                                     Facts& facts);
  /// The answer carrying an executor's whole Response.
  static HttpAnswer whole_answer(Response r);
  HttpAnswer reject(int status, std::string_view message, std::string_view type,
                    std::string_view code, std::string_view reason, std::string_view param = {});
  /// The /stats answer for `stats`.
  HttpAnswer stats_answer(const QueueStats& stats) const;
  /// The answer to a request llmq refused or ended (`ec`, an llmq::errc, with its
  /// Response), or whose client left (operation_aborted: 499, not sent).
  HttpAnswer refusal(const boost::system::error_code& ec, const Response& r,
                     const GatewayConfig& config);

  LLMQueue& queue_;
  detail::Snapshot<GatewayConfig> config_;
  std::function<boost::asio::awaitable<ReloadOutcome>()> reload_;
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<AccessLog> access_log_;
  StatsHistory history_;
  std::atomic<bool> ready_{false};
};

/// The HTTP/1.1 server (keep-alive, limits, slow-client timeouts, max connections with
/// idle eviction, 100-continue, cancellation of requests whose client disconnected).
class GatewayServer {
 public:
  GatewayServer(boost::asio::any_io_executor ex, Gateway& gateway, GatewayConfig config);
  ~GatewayServer();

  /// Binds and listens; returns the port (useful with port 0). Throws on failure.
  unsigned short listen();
  /// Accepts until stop(); each connection is served by its own coroutine.
  boost::asio::awaitable<void> run();
  /// Stops accepting and closes idle keep-alive connections.
  void stop();
  /// Loads and checks the TLS files `config` names (throws ConfigError naming the file,
  /// changing nothing); the returned action puts them in use for connections accepted
  /// from then on.
  [[nodiscard]] std::function<void()> load_tls(const GatewayConfig& config) const;
  /// Waits until every connection has closed, at most `limit`.
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit);
  [[nodiscard]] std::size_t connections() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace llmq::gateway
