// Fuzz target `gateway_http`: the bytes of a client connection through llmq-gateway's
// request handling, without sockets. Beast's request_parser (with the gateway's header
// and body limits) reads up to four pipelined requests from the input; each one goes
// through llmq::gateway::Gateway::handle() in front of a real LLMQueue whose executor
// answers at once, with and without client keys. Everything runs on an io_context that
// is run to completion per input (the queue is shut down gracefully at the end). Waits
// stay short: a request that cannot be dispatched times out after 0.1 s (504), and a
// failed deployment backs off for 1 ms.

#include "fuzz_support.hpp"

#include "gateway.hpp"
#include "gateway_config.hpp"

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/buffers_prefix.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <map>
#include <string>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using nlohmann::json;

constexpr std::string_view kUpstreamKey = "sk-UPSTREAM-SECRET";
constexpr std::string_view kClientKey = "fuzz-client-key";

constexpr const char* kConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: 1000, tokens_per_min: 100000, error_backoff_in_seconds: 0.001}
      - {unique_model_id: "gpt-4o-west", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "west", model_type: "chat", req_per_min: 1000, tokens_per_min: 100000, error_backoff_in_seconds: 0.001}
      - {unique_model_id: "ada", model_name_in_azure: "text-embedding-ada-002", deployment_name_in_azure: "ada", model_type: "embeddings", req_per_min: 1000, tokens_per_min: 100000, error_backoff_in_seconds: 0.001}
user_limits:
  max_num_requests_in_time_window: 3
  time_window_in_seconds: 60
scheduler_limits:
  request_timeout_seconds: 0.1
gateway:
  client_keys:
    - {key: "fuzz-client-key", user: "bound-user"}
    - {key: "fuzz-open-key"}
)";

/// Answers at once: `{"from_executor": true}` with the status the body asks for in
/// `fuzz_status` (100..599, else 200), or the body's `raw_reply` string as raw bytes.
class InstantExecutor : public llmq::RequestExecutor {
 public:
  asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                  const llmq::ChosenDeployments&,
                                                  llmq::TelemetryData& t) override {
    t.prompt_tokens = 1;
    co_return answer(req.body);
  }

  static llmq::Response answer(const json& body) {
    if (const auto raw = body.find("raw_reply"); raw != body.end() && raw->is_string()) {
      const std::string& text = raw->get_ref<const std::string&>();
      return llmq::Response{json::binary(json::binary_t::container_type(text.begin(), text.end())),
                            200};
    }
    int status = 200;
    if (const auto s = body.find("fuzz_status"); s != body.end() && s->is_number_integer()) {
      const auto v = s->get<std::int64_t>();
      if (v >= 100 && v <= 599) status = static_cast<int>(v);
    }
    json out = json::object();
    out["from_executor"] = true;
    return llmq::Response{std::move(out), status};
  }
};

const llmq::gateway::GatewaySettings& settings() {
  static const llmq::gateway::GatewaySettings s = llmq::gateway::parse_gateway_settings(kConfig);
  return s;
}

/// A parsed request as the gateway's server hands it over (names lower-cased).
llmq::gateway::HttpExchange to_exchange(http::request<http::string_body>&& req) {
  llmq::gateway::HttpExchange x;
  x.method = std::string(req.method_string());
  x.target = std::string(req.target());
  for (const auto& field : req) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    x.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  x.body = std::move(req.body());
  return x;
}

/// Up to four requests read from `bytes` as one connection would deliver them.
std::vector<llmq::gateway::HttpExchange> read_requests(std::string_view bytes,
                                                       const llmq::gateway::GatewayConfig& g) {
  std::vector<llmq::gateway::HttpExchange> out;
  while (!bytes.empty() && out.size() < 4) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(g.max_header_bytes));
    parser.body_limit(g.max_body_bytes);
    parser.eager(true);
    boost::beast::error_code ec;
    const std::size_t used = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
    LLMQ_FUZZ_CHECK(used <= bytes.size());
    bytes.remove_prefix(used);
    if (ec == http::error::need_more) parser.put_eof(ec);
    if (ec || !parser.is_done()) break;
    out.push_back(to_exchange(parser.release()));
  }
  return out;
}

/// True when the client sent `text` itself somewhere the gateway may repeat it (the body,
/// the target, a header other than the credentials).
bool client_sent(const llmq::gateway::HttpExchange& request, std::string_view text) {
  if (request.body.find(text) != std::string::npos) return true;
  if (request.target.find(text) != std::string::npos) return true;
  for (const auto& [name, value] : request.headers) {
    if (name != "api-key" && name != "authorization" && value.find(text) != std::string::npos)
      return true;
  }
  return false;
}

void check_answer(const llmq::gateway::HttpExchange& request,
                  const llmq::gateway::HttpAnswer& answer) {
  LLMQ_FUZZ_CHECK(answer.status >= 100 && answer.status <= 599);
  for (std::string_view secret : {kUpstreamKey, kClientKey}) {
    if (client_sent(request, secret)) continue;
    LLMQ_FUZZ_CHECK(answer.body.find(secret) == std::string::npos);
    for (const auto& header : answer.headers)
      LLMQ_FUZZ_CHECK(header.second.find(secret) == std::string::npos);
  }
  // Every answer carries a request id.
  std::string request_id;
  for (const auto& [name, value] : answer.headers) {
    if (name == "x-request-id") request_id = value;
  }
  LLMQ_FUZZ_CHECK(!request_id.empty());
  if (answer.content_type != "application/json") return;
  const auto body = llmq::fuzz::parse_json(answer.body);
  if (request.body.find("raw_reply") != std::string::npos) return;  // raw bytes, any text
  LLMQ_FUZZ_CHECK(body.has_value());
  if (answer.status >= 400 && !body->contains("from_executor")) {
    const auto error = body->find("error");
    LLMQ_FUZZ_CHECK(error != body->end() && error->is_object());
    LLMQ_FUZZ_CHECK(error->contains("message") && error->at("message").is_string());
    LLMQ_FUZZ_CHECK(error->contains("type") && error->at("type").is_string());
    LLMQ_FUZZ_CHECK(error->contains("request_id") && error->at("request_id") == request_id);
  }
}

asio::awaitable<void> serve(llmq::LLMQueue& queue,
                            std::vector<llmq::gateway::HttpExchange> requests) {
  auto metrics = std::make_shared<llmq::gateway::Metrics>();
  llmq::gateway::GatewayConfig open = settings().gateway;
  open.client_keys.clear();
  llmq::gateway::Gateway keyless(queue, open, metrics);
  llmq::gateway::Gateway keyed(queue, settings().gateway, metrics);
  co_await queue.initiate();
  keyless.set_ready(true);
  for (llmq::gateway::HttpExchange& request : requests) {
    for (llmq::gateway::Gateway* gateway : {&keyless, &keyed}) {
      const llmq::gateway::HttpAnswer answer = co_await gateway->handle(request);
      check_answer(request, answer);
    }
  }
  co_await queue.graceful_shutdown();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llmq::fuzz::quiet_logs();
  (void)settings();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<llmq::gateway::HttpExchange> requests =
      read_requests(llmq::fuzz::as_text(data, size), settings().gateway);
  if (requests.empty()) return 0;
  asio::io_context io;
  auto executor = std::make_shared<InstantExecutor>();
  llmq::LLMQueue queue(io.get_executor(), settings().llm,
                       {{"chat_completion", executor}, {"embeddings", executor}});
  bool finished = false;
  asio::co_spawn(io, serve(queue, std::move(requests)), [&](std::exception_ptr e) {
    LLMQ_FUZZ_CHECK(!e);
    finished = true;
  });
  io.run();
  LLMQ_FUZZ_CHECK(finished);
  return 0;
}
