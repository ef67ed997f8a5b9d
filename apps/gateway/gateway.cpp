#include "gateway.hpp"

#include <llmq/errors.hpp>
#include <llmq/log.hpp>
#include <llmq/request.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>

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

}  // namespace

const std::string* HttpExchange::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

HttpAnswer error_answer(int status, std::string_view message, std::string_view type,
                        std::string_view code) {
  return json_answer(status, make_error_body(message, type, code));
}

/// What a route asks of the queue.
struct Gateway::Route {
  enum class Kind { chat, embeddings } kind = Kind::chat;
  std::string model;  ///< `model` from the body, or `{deployment}` from an Azure path
};

Gateway::Gateway(LLMQueue& queue, GatewayConfig config, std::shared_ptr<Metrics> metrics)
    : queue_(queue), config_(std::move(config)), metrics_(std::move(metrics)) {
  config_.user_header = lower(config_.user_header);
}

HttpAnswer Gateway::count(HttpAnswer a) {
  metrics_->answered(a.status);
  return a;
}

HttpAnswer Gateway::reject(int status, std::string_view message, std::string_view type,
                           std::string_view code, std::string_view reason) {
  metrics_->rejected(std::string(reason));
  return count(error_answer(status, message, type, code));
}

boost::asio::awaitable<HttpAnswer> Gateway::handle(HttpExchange request) {
  const auto [path, query] = split_target(request.target);
  if (request.method == "GET") {
    if (path == "/healthz") co_return count(json_answer(200, nlohmann::json::object()));
    if (path == "/readyz") {
      if (ready_.load()) co_return count(json_answer(200, nlohmann::json::object()));
      co_return reject(503, "not ready", "unavailable", "not_ready", "not_ready");
    }
    if (path == "/metrics") {
      QueueStats stats = co_await queue_.stats();
      HttpAnswer a;
      a.content_type = "text/plain; version=0.0.4";
      a.body = metrics_->render(stats);
      co_return count(std::move(a));
    }
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
  } else {
    co_return reject(404, "unknown route", "invalid_request_error", "not_found", "not_found");
  }
  if (request.method != "POST") {
    HttpAnswer a = reject(405, "method not allowed; use POST", "invalid_request_error",
                          "method_not_allowed", "bad_request");
    a.headers.emplace_back("allow", "POST");
    co_return a;
  }

  // Client authentication, then the user.
  std::string user;
  if (!config_.client_keys.empty()) {
    std::string presented;
    if (const std::string* k = request.header("api-key")) {
      presented = *k;
    } else if (const std::string* auth = request.header("authorization")) {
      if (lower(auth->substr(0, 7)) == "bearer ") presented = auth->substr(7);
    }
    const ClientKey* match = nullptr;
    for (const ClientKey& k : config_.client_keys)
      if (same_key(k.key, presented)) match = &k;
    if (match == nullptr)
      co_return reject(401, "invalid or missing API key (send api-key or Authorization: Bearer)",
                       "invalid_request_error", "invalid_api_key", "unauthorized");
    user = match->user;
  }
  if (user.empty()) {
    if (const std::string* u = request.header(config_.user_header)) user = *u;
  }
  co_return co_await handle_inference(request, route, std::move(user));
}

boost::asio::awaitable<HttpAnswer> Gateway::handle_inference(const HttpExchange& request,
                                                             const Route& route, std::string user) {
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    co_return reject(400, "request body must be a JSON object", "invalid_request_error",
                     "invalid_json", "bad_request");
  auto stream = body.find("stream");
  if (stream != body.end() && stream->is_boolean() && stream->get<bool>())
    co_return reject(400, "streaming (\"stream\": true) is not supported by llmq-gateway",
                     "invalid_request_error", "stream_unsupported", "bad_request");

  std::string model = route.model;
  if (model.empty()) {
    auto m = body.find("model");
    if (m == body.end() || !m->is_string() || m->get_ref<const std::string&>().empty())
      co_return reject(400, "\"model\" is required: a model name or a unique_model_id",
                       "invalid_request_error", "missing_model", "bad_request");
    model = m->get<std::string>();
  }

  // `model` names a deployment (pinned) or a model (balanced over its deployments).
  const bool chat = route.kind == Route::Kind::chat;
  ModelPreferences prefs;
  prefs.require_llm_model = chat;
  prefs.require_embedding_model = !chat;
  bool known = false;
  for (const Deployment& d : queue_.deployments()) {
    if (is_llm(d.model_type) != chat) continue;
    if (d.unique_model_id == model || d.deployment_name_in_azure == model) {
      (chat ? prefs.specific_llm_model : prefs.specific_embedding_model) = d.unique_model_id;
      known = true;
      break;
    }
  }
  if (!known) {
    for (const Deployment& d : queue_.deployments()) {
      if (is_llm(d.model_type) == chat && d.model_name_in_azure == model) {
        (chat ? prefs.llm_model_name : prefs.embedding_model_name) = model;
        known = true;
        break;
      }
    }
  }
  if (!known)
    co_return reject(404,
                     std::string("the model '") + model + "' does not exist or serves no " +
                         (chat ? "chat completions" : "embeddings"),
                     "invalid_request_error", "model_not_found", "not_found");

  const std::string req_type = chat ? "chat_completion" : "embeddings";
  try {
    Response r = co_await queue_.execute_request(req_type, std::move(body), std::move(user), prefs);
    HttpAnswer a;
    a.status = r.status;
    a.body = response_body_text(r.body);  // raw upstream bytes are sent as they came
    if (r.status == 429 || r.status == 503) a.headers.emplace_back("retry-after", "1");
    co_return count(std::move(a));
  } catch (const UserIdHeaderMissingError& e) {
    co_return reject(400, e.what(), "invalid_request_error", "missing_user_id", "missing_user");
  } catch (const UserRateLimitExceededError& e) {
    HttpAnswer a =
        reject(429, e.what(), "rate_limit_error", "user_rate_limit_exceeded", "user_limit");
    a.headers.emplace_back("retry-after", retry_after_seconds(e.retry_after()));
    co_return a;
  } catch (const SchedulerQueueFullError& e) {
    HttpAnswer a = reject(503, e.what(), "server_overloaded", "queue_full", "queue_full");
    a.headers.emplace_back("retry-after", "1");
    co_return a;
  } catch (const QueueTimeoutError& e) {
    co_return reject(504, e.what(), "timeout", "queue_timeout", "queue_timeout");
  } catch (const QueueClosedError& e) {
    HttpAnswer a = reject(503, e.what(), "unavailable", "shutting_down", "shutting_down");
    a.headers.emplace_back("retry-after", "1");
    co_return a;
  } catch (const Error& e) {  // e.g. the shared limit store is unavailable (503)
    HttpAnswer a = reject(e.http_status(), e.what(), "server_error", "llmq_error", "error");
    if (e.http_status() == 503) a.headers.emplace_back("retry-after", "1");
    co_return a;
  } catch (const std::exception& e) {
    logger()->error("gateway: unexpected error: {}", e.what());
    co_return reject(500, "internal error", "server_error", "internal_error", "error");
  }
}

}  // namespace llmq::gateway
