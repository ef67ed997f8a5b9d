#include "gateway.hpp"

#include <llmq/errors.hpp>
#include <llmq/log.hpp>
#include <llmq/request.hpp>
#include <llmq/request_validation.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <optional>
#include <random>

namespace llmq::gateway {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string retry_after_seconds(std::chrono::nanoseconds d) {
  const auto s = std::chrono::ceil<std::chrono::seconds>(d).count();
  return std::to_string(std::max<std::int64_t>(1, s));
}

/// Splits "/a/b?x=y" into path and query.
std::pair<std::string_view, std::string_view> split_target(std::string_view target) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

/// Constant-time comparison, so a key cannot be guessed byte by byte from timings.
bool same_key(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

HttpAnswer json_answer(int status, const nlohmann::json& body) {
  HttpAnswer a;
  a.status = status;
  a.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return a;
}

/// A client-chosen name for a message: at most 64 bytes of it.
std::string shown(std::string_view name) {
  if (name.size() <= 64) return std::string(name);
  return std::string(name.substr(0, 64)) + "...";
}

/// The Retry-After headers of a 429/503: the upstream's when it sent one, else 1 s.
void add_retry_after(HttpAnswer& a, const std::optional<std::chrono::milliseconds>& upstream) {
  if (!upstream) {
    a.headers.emplace_back("retry-after", "1");
    return;
  }
  a.headers.emplace_back("retry-after", retry_after_seconds(*upstream));
  a.headers.emplace_back("retry-after-ms",
                         std::to_string(std::max<std::int64_t>(0, upstream->count())));
}

LogThrottle& store_refusal_throttle() {
  static LogThrottle throttle;
  return throttle;
}

/// The access log's line for a request, but for what the answer decides (status, bytes
/// out, time, duration).
AccessRecord access_record(const HttpExchange& request, std::string request_id, std::string user,
                           std::string model, bool queued) {
  AccessRecord r;
  r.request_id = std::move(request_id);
  r.method = request.method.substr(0, 16);
  r.route = std::string(split_target(request.target).first.substr(0, 256));
  r.user = std::move(user);
  r.model = std::move(model);
  r.bytes_in = request.body.size();
  r.queued = queued;
  return r;
}

/// Logs `r` as answered now with `status` and `bytes_out` (see AccessRecord).
void log_answered(AccessLog& log, AccessRecord r, int status, std::size_t bytes_out,
                  std::chrono::steady_clock::time_point started) {
  const auto now = std::chrono::steady_clock::now();
  r.time = wall_now();
  r.status = status;
  r.bytes_out = bytes_out;
  r.duration = std::chrono::duration_cast<std::chrono::microseconds>(now - started);
  log.answered(std::move(r), now);
}

bool is_error_envelope(const nlohmann::json& body) {
  if (!body.is_object()) return false;
  const auto e = body.find("error");
  return e != body.end() && e->is_object();
}

/// The `data:` event that ends a stream cut short: the error envelope of `r` (or one
/// naming its status), with the request id.
std::string stream_error_event(const Response& r, const std::string& request_id) {
  nlohmann::json body;
  if (!is_raw_body(r.body) && is_error_envelope(r.body)) {
    body = r.body;
  } else {
    body = make_error_body("the stream ended with status " + std::to_string(r.status),
                           "upstream_error", "stream_error");
  }
  body["error"]["request_id"] = request_id;
  return "data: " + body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n";
}

/// The answer to a reload that was done.
HttpAnswer reload_answer(const ReloadOutcome& o, std::size_t deployments) {
  nlohmann::json body = nlohmann::json::object();
  body["reloaded"] = true;
  body["deployments"] = deployments;
  body["warnings"] = o.warnings;
  return json_answer(200, body);
}

std::shared_ptr<const GatewayConfig> normalised(GatewayConfig config) {
  config.user_header = lower(config.user_header);
  return std::make_shared<const GatewayConfig>(std::move(config));
}

/// One of the dashboard's files, with headers that let it run nothing but itself: no
/// inline script or style, no other origin, no framing, never cached.
HttpAnswer dashboard_file(std::string_view body, std::string content_type) {
  HttpAnswer a;
  a.content_type = std::move(content_type);
  a.body = std::string(body);
  a.headers.emplace_back("content-security-policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; "
                         "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                         "form-action 'none'; frame-ancestors 'none'");
  a.headers.emplace_back("x-content-type-options", "nosniff");
  a.headers.emplace_back("x-frame-options", "DENY");
  a.headers.emplace_back("referrer-policy", "no-referrer");
  a.headers.emplace_back("cache-control", "no-store");
  return a;
}

/// The dashboard's file at `path`, if it is one.
std::optional<HttpAnswer> dashboard_route(std::string_view path) {
  if (path == "/dashboard" || path == "/dashboard/")
    return dashboard_file(dashboard_assets::index_html(), "text/html; charset=utf-8");
  if (path == "/dashboard/app.js")
    return dashboard_file(dashboard_assets::app_js(), "text/javascript; charset=utf-8");
  if (path == "/dashboard/app.css")
    return dashboard_file(dashboard_assets::app_css(), "text/css; charset=utf-8");
  return std::nullopt;
}

}  // namespace

const std::string* HttpExchange::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

HttpAnswer error_answer(int status, std::string_view message, std::string_view type,
                        std::string_view code, std::string_view param) {
  HttpAnswer a;
  a.status = status;
  a.error = make_error_body(message, type, code);
  a.error["error"]["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  return a;
}

void finish_answer(HttpAnswer& a, const std::string& request_id) {
  a.headers.emplace_back("x-request-id", request_id);
  a.request_id = request_id;
  if (a.error.is_null()) return;
  if (is_error_envelope(a.error)) a.error["error"]["request_id"] = request_id;
  a.body = a.error.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  a.error = nlohmann::json();
}

std::string client_request_id(const HttpExchange& request) {
  const std::string* id = request.header("x-request-id");
  if (id == nullptr || id->empty() || id->size() > 128) return {};
  for (const char c : *id)
    if (c < 0x20 || c > 0x7E) return {};
  return *id;
}

std::string make_request_id() {
  static const std::string prefix = [] {
    std::random_device rd;
    std::string p = "gw-";
    constexpr std::string_view digits = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int i = 0; i < 6; ++i) p += digits[rd() % digits.size()];
    return p + "-";
  }();
  static std::atomic<std::uint64_t> next{1};
  return prefix + std::to_string(next.fetch_add(1, std::memory_order_relaxed));
}

/// What a route asks of the queue.
struct Gateway::Route {
  enum class Kind { chat, embeddings } kind = Kind::chat;
  std::string model;  ///< `model` from the body, or `{deployment}` from an Azure path
};

std::string Gateway::presented_key(const HttpExchange& request) {
  if (const std::string* k = request.header("api-key")) return *k;
  if (const std::string* auth = request.header("authorization"))
    if (lower(auth->substr(0, 7)) == "bearer ") return auth->substr(7);
  return {};
}

bool Gateway::presents_operator_key(const HttpExchange& request, const GatewayConfig& config,
                                    bool admin_only) {
  const std::string presented = presented_key(request);
  if (presented.empty()) return false;
  bool found = false;  // every key compared, in constant time each
  if (!admin_only)
    for (const ClientKey& k : config.client_keys) found = same_key(k.key, presented) || found;
  for (const std::string& k : config.admin_keys) found = same_key(k, presented) || found;
  return found;
}

Gateway::Gateway(LLMQueue& queue, GatewayConfig config, std::shared_ptr<Metrics> metrics)
    : queue_(queue), config_(normalised(std::move(config))), metrics_(std::move(metrics)) {}

void Gateway::reconfigure(GatewayConfig config) { config_.store(normalised(std::move(config))); }

HttpAnswer Gateway::reject(int status, std::string_view message, std::string_view type,
                           std::string_view code, std::string_view reason, std::string_view param) {
  metrics_->rejected(std::string(reason));
  return error_answer(status, message, type, code, param);
}

boost::asio::awaitable<HttpAnswer> Gateway::handle(HttpExchange request) {
  const auto started = std::chrono::steady_clock::now();
  Facts facts;
  facts.request_id = client_request_id(request);
  HttpAnswer a = co_await answer(request, facts);
  if (facts.request_id.empty()) facts.request_id = make_request_id();
  finish_answer(a, facts.request_id);
  std::optional<AccessRecord> line;
  if (access_log_)
    line = access_record(request, std::move(facts.request_id), std::move(facts.user),
                         std::move(facts.model), facts.queued);
  if (a.stream) {
    // Counted and logged once the stream has ended, with the status it ended with.
    metrics_->stream_open(1);
    a.stream_ended = [metrics = metrics_, log = access_log_, line = std::move(line), started](
                         int status, std::size_t bytes) mutable {
      metrics->stream_open(-1);
      if (status != 499) metrics->answered(status);
      if (log && line) log_answered(*log, std::move(*line), status, bytes, started);
    };
    co_return a;
  }
  // 499: the client left, nothing is sent (counted as a disconnect instead).
  if (a.status != 499) metrics_->answered(a.status);
  if (line) log_answered(*access_log_, std::move(*line), a.status, a.body.size(), started);
  co_return a;
}

boost::asio::awaitable<int> send_event_stream(
    ResponseStream& stream, const std::string& request_id,
    const std::function<boost::asio::awaitable<bool>(std::string_view)>& write) {
  std::string event;
  try {
    while (std::optional<std::string> chunk = co_await stream.next()) {
      event.clear();
      event.reserve(chunk->size() + 8);
      event += "data: ";
      event += *chunk;
      event += "\n\n";
      if (!co_await write(event)) {
        stream.close();
        co_return 499;
      }
    }
  } catch (const std::exception&) {
    stream.close();  // the wait was cancelled: the client left
    co_return 499;
  }
  const Response& end = stream.response();
  const int status = stream.error() == boost::asio::error::operation_aborted ? 499 : end.status;
  if (status == 200) {
    event = "data: [DONE]\n\n";
  } else {
    event = stream_error_event(end, request_id);
  }
  try {
    if (!co_await write(event)) co_return 499;
  } catch (const std::exception&) {
    co_return 499;
  }
  co_return status;
}

boost::asio::awaitable<void> Gateway::record_sample() {
  const QueueStats stats = co_await queue_.stats();
  history_.record(QueueSample{unix_seconds_now(), stats.queue_depth, stats.in_flight});
}

HttpAnswer Gateway::stats_answer(const QueueStats& stats) const {
  HttpAnswer a = json_answer(
      200, stats_document(stats, queue_.deployments(), metrics_->dashboard_view(kStatsTopUsers),
                          history_.samples(), unix_seconds_now()));
  a.headers.emplace_back("cache-control", "no-store");
  a.headers.emplace_back("x-content-type-options", "nosniff");
  return a;
}

void Gateway::refused_by_server(int status, const std::string& request_id) {
  metrics_->answered(status);
  if (!access_log_) return;
  AccessRecord r;
  r.time = wall_now();
  r.request_id = request_id;
  r.status = status;
  access_log_->answered(std::move(r), std::chrono::steady_clock::now());
}

boost::asio::awaitable<HttpAnswer> Gateway::answer(const HttpExchange& request, Facts& facts) {
  facts.config = config_.load();
  const GatewayConfig& config = *facts.config;
  const auto [path, query] = split_target(request.target);
  if (request.method == "GET") {
    if (path == "/healthz") co_return json_answer(200, nlohmann::json::object());
    if (path == "/readyz") {
      if (ready_.load()) co_return json_answer(200, nlohmann::json::object());
      co_return reject(503, "not ready", "unavailable", "not_ready", "not_ready");
    }
    if (path == "/metrics") {
      if (!config.metrics_are_public() && !presents_operator_key(request, config))
        co_return reject(401,
                         "/metrics needs a client key or an admin key (send api-key or "
                         "Authorization: Bearer)",
                         "invalid_request_error", "invalid_api_key", "unauthorized");
      QueueStats stats = co_await queue_.stats();
      HttpAnswer a;
      a.content_type = "text/plain; version=0.0.4";
      a.body = metrics_->render(stats);
      co_return a;
    }
    if (path == "/stats") {
      if (config.stats_need_key() && !presents_operator_key(request, config))
        co_return reject(401,
                         "/stats needs a client key or an admin key (send api-key or "
                         "Authorization: Bearer)",
                         "invalid_request_error", "invalid_api_key", "unauthorized");
      const QueueStats stats = co_await queue_.stats();
      co_return stats_answer(stats);
    }
    if (std::optional<HttpAnswer> page = dashboard_route(path)) co_return std::move(*page);
  }

  if (path == "/admin/reload" && reload_) {
    if (request.method != "POST") {
      HttpAnswer a = reject(405, "method not allowed; use POST", "invalid_request_error",
                            "method_not_allowed", "bad_request");
      a.headers.emplace_back("allow", "POST");
      co_return a;
    }
    co_return co_await handle_reload(request, config);
  }

  Route route;
  const std::string_view azure_prefix = "/openai/deployments/";
  if (path == "/v1/chat/completions" || path == "/openai/v1/chat/completions") {
    route.kind = Route::Kind::chat;
  } else if (path == "/v1/embeddings" || path == "/openai/v1/embeddings") {
    route.kind = Route::Kind::embeddings;
  } else if (path.starts_with(azure_prefix)) {
    const std::string_view rest = path.substr(azure_prefix.size());
    const auto slash = rest.find('/');
    const std::string_view op =
        slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    if (slash == 0 || (op != "/chat/completions" && op != "/embeddings"))
      co_return reject(404, "unknown route", "invalid_request_error", "not_found", "not_found");
    route.kind = op == "/embeddings" ? Route::Kind::embeddings : Route::Kind::chat;
    route.model = std::string(rest.substr(0, slash));
    facts.model = shown(route.model);
  } else {
    co_return reject(404, "unknown route", "invalid_request_error", "not_found", "not_found");
  }
  if (request.method != "POST") {
    HttpAnswer a = reject(405, "method not allowed; use POST", "invalid_request_error",
                          "method_not_allowed", "bad_request");
    a.headers.emplace_back("allow", "POST");
    co_return a;
  }

  // Client authentication, then the user, the tier and the priority.
  RequestOptions options;
  std::optional<Priority> max_priority;
  if (!config.client_keys.empty()) {
    const std::string presented = presented_key(request);
    const ClientKey* match = nullptr;
    for (const ClientKey& k : config.client_keys)
      if (same_key(k.key, presented)) match = &k;
    if (match == nullptr)
      co_return reject(401, "invalid or missing API key (send api-key or Authorization: Bearer)",
                       "invalid_request_error", "invalid_api_key", "unauthorized");
    facts.user = match->user;
    options.tier = match->tier;
    max_priority = match->max_priority;
  }
  // The request's priority: `x-llmq-priority`, within what the client key allows.
  if (const std::string* p = request.header("x-llmq-priority")) {
    options.priority = parse_priority(*p);
    if (!options.priority)
      co_return reject(400, "header x-llmq-priority: must be one of: high, normal, low",
                       "invalid_request_error", "invalid_priority", "bad_request",
                       "x-llmq-priority");
    if (max_priority && *options.priority < *max_priority)
      co_return reject(403,
                       "header x-llmq-priority: this API key may not ask for priority " +
                           std::string(to_string(*options.priority)),
                       "permission_error", "priority_not_allowed", "forbidden", "x-llmq-priority");
  }
  if (facts.user.empty()) {
    if (const std::string* u = request.header(config.user_header)) {
      // The user id becomes a limiter key, a Redis key and a telemetry field.
      if (const std::optional<RequestProblem> p = validate_user_id(*u))
        co_return reject(400, "header " + config.user_header + ": " + p->message,
                         "invalid_request_error", p->code, "bad_request", config.user_header);
      facts.user = *u;
    }
  }
  co_return co_await handle_inference(request, route, std::move(options), facts);
}

boost::asio::awaitable<HttpAnswer> Gateway::handle_inference(const HttpExchange& request,
                                                             const Route& route,
                                                             RequestOptions options, Facts& facts) {
  // Everything the client sent is checked before anything is queued: nesting while
  // parsing, the model, then the fields that decide cost and routing.
  const bool chat = route.kind == Route::Kind::chat;
  nlohmann::json body;
  if (const std::optional<RequestProblem> p =
          parse_json_bounded(request.body, facts.config->max_json_depth, body))
    co_return reject(400, p->message, "invalid_request_error", p->code, "bad_request", p->param);
  if (!body.is_object())
    co_return reject(400, "the request body must be a JSON object", "invalid_request_error",
                     "invalid_json", "bad_request");
  const auto stream_field = body.find("stream");
  const bool streamed =
      chat && stream_field != body.end() && stream_field->is_boolean() && stream_field->get<bool>();

  std::string model = route.model;
  if (model.empty()) {
    auto m = body.find("model");
    if (m == body.end() || !m->is_string() || m->get_ref<const std::string&>().empty())
      co_return reject(400, "\"model\" is required: a model name or a unique_model_id",
                       "invalid_request_error", "missing_model", "bad_request", "model");
    model = m->get<std::string>();
    facts.model = shown(model);
  }

  // `model` names a deployment (pinned) or a model (balanced over its deployments).
  ModelPreferences prefs;
  prefs.require_llm_model = chat;
  prefs.require_embedding_model = !chat;
  bool known = false;
  const DeploymentList deployments = queue_.deployments();  // one configuration for both
  for (const Deployment& d : deployments) {
    if (is_llm(d.model_type) != chat) continue;
    if (d.unique_model_id == model || d.deployment_name_in_azure == model) {
      (chat ? prefs.specific_llm_model : prefs.specific_embedding_model) = d.unique_model_id;
      known = true;
      break;
    }
  }
  if (!known) {
    for (const Deployment& d : deployments) {
      if (is_llm(d.model_type) == chat && d.model_name_in_azure == model) {
        (chat ? prefs.llm_model_name : prefs.embedding_model_name) = model;
        known = true;
        break;
      }
    }
  }
  if (!known)
    co_return reject(404,
                     std::string("the model '") + shown(model) + "' does not exist or serves no " +
                         (chat ? "chat completions" : "embeddings"),
                     "invalid_request_error", "model_not_found", "not_found", "model");
  if (const std::optional<RequestProblem> p =
          chat ? validate_chat_body(body) : validate_embeddings_body(body))
    co_return reject(400, p->message, "invalid_request_error", p->code, "bad_request", p->param);

  const std::string req_type = chat ? "chat_completion" : "embeddings";
  options.request_id = facts.request_id;  // the client's, when it sent a sane one
  facts.queued = true;
  std::string user;  // the access log keeps the user; else it moves to the queue
  if (access_log_)
    user = facts.user;
  else
    user = std::move(facts.user);
  if (streamed) {
    co_return co_await handle_streamed(req_type, std::move(body), std::move(user), std::move(prefs),
                                       std::move(options), facts);
  }
  auto [ec, r] = co_await queue_.async_execute_request(
      req_type, std::move(body), std::move(user), std::move(prefs), std::move(options),
      boost::asio::as_tuple(boost::asio::use_awaitable));
  if (facts.request_id.empty()) facts.request_id = r.request_id;
  if (ec) co_return refusal(ec, r, *facts.config);
  co_return whole_answer(std::move(r));
}

HttpAnswer Gateway::whole_answer(Response r) {
  HttpAnswer a;
  a.status = r.status;
  if (r.status >= 400 && !is_raw_body(r.body) && is_error_envelope(r.body))
    a.error = std::move(r.body);  // serialised with the request id added
  else
    a.body = response_body_text(r.body);  // raw upstream bytes are sent as they came
  if (r.status == 429 || r.status == 503) add_retry_after(a, r.retry_after);
  return a;
}

boost::asio::awaitable<HttpAnswer> Gateway::handle_streamed(const std::string& req_type,
                                                            nlohmann::json body, std::string user,
                                                            ModelPreferences prefs,
                                                            RequestOptions options, Facts& facts) {
  auto [ec, stream] = co_await queue_.async_execute_streaming_request(
      req_type, std::move(body), std::move(user), std::move(prefs), std::move(options),
      boost::asio::as_tuple(boost::asio::use_awaitable));
  const Response& r = stream.response();
  if (facts.request_id.empty()) facts.request_id = stream.request_id();
  if (ec) co_return refusal(ec, r, *facts.config);
  if (!stream.streaming()) co_return whole_answer(r);  // ended before its first chunk
  HttpAnswer a;
  a.content_type = "text/event-stream";
  a.headers.emplace_back("cache-control", "no-cache");
  a.stream = std::make_shared<ResponseStream>(std::move(stream));
  co_return a;
}

boost::asio::awaitable<HttpAnswer> Gateway::handle_reload(const HttpExchange& request,
                                                          const GatewayConfig& config) {
  if (!presents_operator_key(request, config, true))
    co_return reject(401,
                     "POST /admin/reload needs an admin key (gateway.admin_keys; send api-key or "
                     "Authorization: Bearer)",
                     "invalid_request_error", "invalid_api_key", "unauthorized");
  const ReloadOutcome o = co_await reload_();
  if (o.busy)
    co_return reject(409, o.error, "invalid_request_error", "reload_in_progress", "conflict");
  if (!o.ok)
    co_return reject(
        400, "the configuration file was not used (the running configuration stays): " + o.error,
        "invalid_request_error", "invalid_config", "invalid_config");
  co_return reload_answer(o, queue_.deployments().size());
}

HttpAnswer Gateway::refusal(const boost::system::error_code& ec, const Response& r,
                            const GatewayConfig& config) {
  if (ec == boost::asio::error::operation_aborted)  // the client disconnected
    return reject(499, "the client closed the connection", "invalid_request_error",
                  "client_closed_request", "client_disconnected");
  if (ec.category() != error_category()) {
    logger()->error("gateway: unexpected error: {}", ec.message());
    return reject(500, "internal error", "server_error", "internal_error", "error");
  }
  const auto e = static_cast<errc>(ec.value());
  std::string message = "the request could not be served";
  if (is_error_envelope(r.body)) {
    const auto m = r.body["error"].find("message");
    if (m != r.body["error"].end() && m->is_string()) message = m->get<std::string>();
  }
  // The gateway's codes and metric reasons (a client-visible contract), by refusal.
  std::string_view code = to_string(e);
  std::string_view reason = "bad_request";
  std::string_view param;
  switch (e) {
    case errc::user_id_missing:
      code = "missing_user_id";
      reason = "missing_user";
      param = config.user_header;
      break;
    case errc::invalid_user_id:
      param = config.user_header;
      break;
    case errc::user_rate_limited:
      code = "user_rate_limit_exceeded";
      reason = "user_limit";
      break;
    case errc::queue_full:
      reason = "queue_full";
      break;
    case errc::queue_timeout:
      reason = "queue_timeout";
      break;
    case errc::queue_closed:
    case errc::queue_failed:
      code = "shutting_down";
      reason = "shutting_down";
      break;
    case errc::execution_timeout:
      reason = "execution_timeout";
      break;
    case errc::user_limit_store_unavailable:
    case errc::budget_store_unavailable:
      // The store's message may name internal hosts: it goes to the log only.
      if (auto held = store_refusal_throttle().admit())
        logger()->warn("gateway: request refused ({}): {}{}", to_string(e), message,
                       held_back_note(*held));
      message = "a service llmq-gateway depends on is unavailable";
      reason = "store_unavailable";
      break;
    default:
      break;
  }
  HttpAnswer a = reject(r.status, message, error_type_of(e), code, reason, param);
  if (e == errc::user_rate_limited)
    a.headers.emplace_back("retry-after",
                           retry_after_seconds(r.retry_after.value_or(std::chrono::seconds(1))));
  else if (r.status == 503)
    add_retry_after(a, r.retry_after);
  return a;
}

}  // namespace llmq::gateway
