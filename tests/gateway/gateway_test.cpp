// llmq-gateway over loopback: a real Beast server in front of an LLMQueue with fake
// executors, driven by a plain blocking HTTP client on the test thread.
#include "gateway.hpp"

#include <llmq/llmq.hpp>

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <future>
#include <set>
#include <thread>

namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: 100000, tokens_per_min: 100000000}
      - {unique_model_id: "gpt-4o-west", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "west", model_type: "chat", req_per_min: 100000, tokens_per_min: 100000000}
      - {unique_model_id: "ada", model_name_in_azure: "text-embedding-ada-002", deployment_name_in_azure: "ada", model_type: "embeddings", req_per_min: 100000, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 5
  time_window_in_seconds: 60
)";

class FakeUpstream : public llmq::RequestExecutor {
 public:
  explicit FakeUpstream(std::chrono::milliseconds delay = 0ms) : delay_(delay) {}
  boost::asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                         const llmq::ChosenDeployments& chosen,
                                                         llmq::TelemetryData& t) override {
    if (delay_.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, delay_);
      co_await timer.async_wait(asio::use_awaitable);
    }
    t.prompt_tokens = 3;
    // A raw upstream answer, as the executors' raw_success_body hands it over.
    if (auto raw = req.body.find("raw_reply"); raw != req.body.end() && raw->is_string())
      co_return llmq::Response{raw_body(raw->get<std::string>()), 200};
    co_return llmq::Response{answer(req, chosen), 200};
  }
  static json raw_body(const std::string& text) {
    return json::binary(json::binary_t::container_type(text.begin(), text.end()));
  }
  static json answer(const llmq::Request& req, const llmq::ChosenDeployments& chosen) {
    json j = json::object();
    j["deployment"] = chosen.llm ? chosen.llm->unique_model_id : chosen.embedding->unique_model_id;
    j["user"] = req.user_id;
    j["echo"] = req.body;
    return j;
  }

 private:
  std::chrono::milliseconds delay_;
};

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  json j() const { return json::parse(body, nullptr, false); }
};

class GatewayTest : public ::testing::Test {
 protected:
  void start(llmq::gateway::GatewayConfig gc = {}, std::chrono::milliseconds delay = 0ms) {
    gc.port = 0;
    gc.read_timeout = 2s;
    auto settings = llmq::gateway::parse_gateway_settings(kConfig);
    metrics_ = std::make_shared<llmq::gateway::Metrics>();
    llmq::QueueOptions o;
    o.telemetry_store = std::make_shared<llmq::gateway::MetricsTelemetryStore>(
        metrics_, std::make_shared<llmq::InMemoryTelemetryStore>());
    o.telemetry_flush_interval = 10ms;
    auto up = std::make_shared<FakeUpstream>(delay);
    queue_ = std::make_unique<llmq::LLMQueue>(
        io_.get_executor(), settings.llm,
        std::map<std::string, std::shared_ptr<llmq::RequestExecutor>>{{"chat_completion", up},
                                                                      {"embeddings", up}},
        o);
    gateway_ = std::make_unique<llmq::gateway::Gateway>(*queue_, gc, metrics_);
    server_ = std::make_unique<llmq::gateway::GatewayServer>(io_.get_executor(), *gateway_, gc);
    port_ = server_->listen();
    std::promise<void> up_promise;
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          co_await queue_->initiate();
          gateway_->set_ready(true);
          up_promise.set_value();
          co_await server_->run();
        },
        [](std::exception_ptr) {});
    thread_ = std::thread([this] { io_.run_for(60s); });
    up_promise.get_future().wait();
  }

  void TearDown() override {
    if (!thread_.joinable()) return;
    if (!stopped_) stop_all();
    thread_.join();
  }

  void stop_all() {
    stopped_ = true;
    std::promise<void> done;
    asio::co_spawn(
        io_,
        [&]() -> asio::awaitable<void> {
          gateway_->set_ready(false);
          server_->stop();
          co_await queue_->graceful_shutdown();
          co_await server_->drain(2s);
          done.set_value();
        },
        [](std::exception_ptr) {});
    done.get_future().wait();
  }

  tcp::socket connect() {
    tcp::socket s(client_io_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    return s;
  }

  static Reply read_reply(tcp::socket& s) {
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    beast::error_code ec;
    http::read(s, buf, res, ec);
    Reply r;
    if (ec) return r;
    r.status = res.result_int();
    for (const auto& f : res) r.headers[std::string(f.name_string())] = std::string(f.value());
    r.body = res.body();
    return r;
  }

  Reply send(tcp::socket& s, http::verb verb, const std::string& target, const std::string& body,
             std::map<std::string, std::string> headers = {{"x-user-id", "alice"}}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    for (auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    http::write(s, req);
    return read_reply(s);
  }

  Reply post(const std::string& target, const json& body,
             std::map<std::string, std::string> headers = {{"x-user-id", "alice"}}) {
    auto s = connect();
    return send(s, http::verb::post, target, body.dump(), std::move(headers));
  }

  Reply get(const std::string& target) {
    auto s = connect();
    return send(s, http::verb::get, target, "", {});
  }

  static json chat(std::string model) {
    json b = json::object();
    b["model"] = std::move(model);
    json m = json::object();
    m["role"] = "user";
    m["content"] = "hi";
    b["messages"] = json::array({m});
    b["max_tokens"] = 5;
    return b;
  }

  asio::io_context io_;
  asio::io_context client_io_;
  std::shared_ptr<llmq::gateway::Metrics> metrics_;
  std::unique_ptr<llmq::LLMQueue> queue_;
  std::unique_ptr<llmq::gateway::Gateway> gateway_;
  std::unique_ptr<llmq::gateway::GatewayServer> server_;
  std::thread thread_;
  unsigned short port_ = 0;
  bool stopped_ = false;
};

TEST_F(GatewayTest, ChatByModelNameIsBalancedAndByIdIsPinned) {
  start();
  std::set<std::string> seen;
  for (int i = 0; i < 4; ++i) {
    auto r = post("/v1/chat/completions", chat("gpt-4o"));
    ASSERT_EQ(r.status, 200) << r.body;
    seen.insert(r.j()["deployment"].get<std::string>());
    EXPECT_EQ(r.j()["user"], "alice");
  }
  EXPECT_EQ(seen, (std::set<std::string>{"gpt-4o-east", "gpt-4o-west"}));
  auto pinned = post("/v1/chat/completions", chat("gpt-4o-west"));
  EXPECT_EQ(pinned.j()["deployment"], "gpt-4o-west");
}

TEST_F(GatewayTest, EmbeddingsAndAzureRoutes) {
  start();
  json e = json::object();
  e["model"] = "text-embedding-ada-002";
  e["input"] = "hello";
  auto r = post("/v1/embeddings", e);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.j()["deployment"], "ada");
  auto az = post("/openai/deployments/east/chat/completions?api-version=2024-10-21", chat(""));
  ASSERT_EQ(az.status, 200) << az.body;
  EXPECT_EQ(az.j()["deployment"], "gpt-4o-east");
  auto azm = post("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", chat(""));
  EXPECT_EQ(azm.status, 200);
  auto aze = post("/openai/deployments/ada/embeddings?api-version=2024-10-21", e);
  EXPECT_EQ(aze.j()["deployment"], "ada");
}

TEST_F(GatewayTest, ErrorsMapToStatusesWithOpenAiEnvelope) {
  start();
  auto missing_user = post("/v1/chat/completions", chat("gpt-4o"), {});
  EXPECT_EQ(missing_user.status, 400);
  EXPECT_NE(missing_user.j()["error"]["message"].get<std::string>().find("user id is missing"),
            std::string::npos);
  EXPECT_EQ(missing_user.j()["error"]["code"], "missing_user_id");

  auto unknown_model = post("/v1/chat/completions", chat("gpt-99"));
  EXPECT_EQ(unknown_model.status, 404);
  EXPECT_EQ(unknown_model.j()["error"]["code"], "model_not_found");
  auto wrong_kind = post("/v1/embeddings", chat("gpt-4o"));
  EXPECT_EQ(wrong_kind.status, 404);
  EXPECT_EQ(post("/v2/nothing", chat("gpt-4o")).status, 404);
  EXPECT_EQ(get("/v1/chat/completions").status, 405);

  auto s = connect();
  auto bad_json = send(s, http::verb::post, "/v1/chat/completions", "{not json");
  EXPECT_EQ(bad_json.status, 400);
  EXPECT_EQ(bad_json.j()["error"]["code"], "invalid_json");
  json streaming = chat("gpt-4o");
  streaming["stream"] = true;
  EXPECT_EQ(post("/v1/chat/completions", streaming).status, 400);
  json no_model = chat("gpt-4o");
  no_model.erase("model");
  EXPECT_EQ(post("/v1/chat/completions", no_model).status, 400);
}

TEST_F(GatewayTest, UserLimitGives429WithRetryAfter) {
  start();
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "bob"}}).status, 200);
  auto r = post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "bob"}});
  EXPECT_EQ(r.status, 429);
  ASSERT_TRUE(r.headers.count("Retry-After") || r.headers.count("retry-after"));
  const std::string ra =
      r.headers.count("Retry-After") ? r.headers["Retry-After"] : r.headers["retry-after"];
  EXPECT_GE(std::stoi(ra), 59);
  EXPECT_LE(std::stoi(ra), 60);
  EXPECT_EQ(r.j()["error"]["code"], "user_rate_limit_exceeded");
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "carol"}}).status, 200);
}

TEST_F(GatewayTest, KeepAliveServesManyRequestsOnOneConnection) {
  start();
  auto s = connect();
  for (int i = 0; i < 3; ++i) {
    auto r = send(s, http::verb::post, "/v1/chat/completions", chat("gpt-4o").dump());
    EXPECT_EQ(r.status, 200);
  }
}

TEST_F(GatewayTest, RawUpstreamAnswersGoOutByteForByte) {
  start();
  json body = chat("gpt-4o");
  const std::string raw = "{ \"z\": 1,\n  \"a\": \"caf\u00e9\" }";  // unsorted, spaced
  body["raw_reply"] = raw;
  auto r = post("/v1/chat/completions", body);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, raw);
  EXPECT_EQ(r.headers["Content-Length"], std::to_string(raw.size()));
  EXPECT_EQ(r.headers["Content-Type"], "application/json");
}

TEST_F(GatewayTest, ConnectionHeadersFollowTheRequestVersion) {
  start();
  const std::string body = chat("gpt-4o").dump();
  auto raw_exchange = [&](const std::string& request) {
    auto s = connect();
    asio::write(s, asio::buffer(request));
    Reply r = read_reply(s);
    return std::make_pair(r, std::move(s));
  };
  auto framed = [&](const std::string& version, const std::string& connection) {
    std::string req = "POST /v1/chat/completions HTTP/" + version +
                      "\r\nHost: x\r\nx-user-id: alice\r\nContent-Type: application/json\r\n";
    if (!connection.empty()) req += "Connection: " + connection + "\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return req;
  };
  {  // HTTP/1.1 default: kept open, no Connection header
    auto [r, s] = raw_exchange(framed("1.1", ""));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers.count("Connection"), 0u);
    EXPECT_EQ(send(s, http::verb::post, "/v1/chat/completions", body).status, 200);
  }
  {  // HTTP/1.1 asking to close: answered with Connection: close, then closed
    auto [r, s] = raw_exchange(framed("1.1", "close"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["Connection"], "close");
    char byte = 0;
    beast::error_code ec;
    s.read_some(asio::buffer(&byte, 1), ec);
    EXPECT_EQ(ec, asio::error::eof);
  }
  {  // HTTP/1.0 keep-alive: answered as HTTP/1.0 with Connection: keep-alive
    auto [r, s] = raw_exchange(framed("1.0", "keep-alive"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["Connection"], "keep-alive");
    EXPECT_EQ(r.j()["deployment"].get<std::string>().rfind("gpt-4o-", 0), 0u);
  }
  {  // HTTP/1.0 default: closed after the answer
    auto [r, s] = raw_exchange(framed("1.0", ""));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers.count("Connection"), 0u);
    char byte = 0;
    beast::error_code ec;
    s.read_some(asio::buffer(&byte, 1), ec);
    EXPECT_EQ(ec, asio::error::eof);
  }
}

TEST(GatewayConfig, UpstreamMaxConnections) {
  auto settings = llmq::gateway::parse_gateway_settings(
      std::string(kConfig) + "gateway:\n  upstream_max_connections: 8\n");
  EXPECT_EQ(settings.gateway.upstream_max_connections, 8u);
  EXPECT_EQ(llmq::gateway::parse_gateway_settings(kConfig).gateway.upstream_max_connections, 256u);
  EXPECT_THROW(llmq::gateway::parse_gateway_settings(std::string(kConfig) +
                                                     "gateway:\n  upstream_max_connections: 0\n"),
               llmq::ConfigError);
}

TEST_F(GatewayTest, MalformedAndOversizeRequestsAreRefusedAndClosed) {
  llmq::gateway::GatewayConfig gc;
  gc.max_body_bytes = 1024;
  gc.max_header_bytes = 2048;
  start(gc);
  {
    auto s = connect();
    asio::write(s, asio::buffer(std::string("THIS IS NOT HTTP\r\n\r\n")));
    auto r = read_reply(s);
    EXPECT_EQ(r.status, 400);
  }
  {
    json big = chat("gpt-4o");
    big["messages"][0]["content"] = std::string(5000, 'x');
    auto r = post("/v1/chat/completions", big);
    EXPECT_EQ(r.status, 413);
  }
  {
    auto r = post("/v1/chat/completions", chat("gpt-4o"),
                  {{"x-user-id", "alice"}, {"x-padding", std::string(4000, 'p')}});
    EXPECT_EQ(r.status, 431);
  }
  // The server is still healthy.
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 200);
}

TEST_F(GatewayTest, ClientKeysAuthenticateAndMayBindUsers) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back({"key-free", ""});
  gc.client_keys.push_back({"key-dave", "dave"});
  start(gc);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 401);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "a"}, {"api-key", "nope"}})
                .status,
            401);
  auto ok = post("/v1/chat/completions", chat("gpt-4o"),
                 {{"x-user-id", "erin"}, {"authorization", "Bearer key-free"}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.j()["user"], "erin");
  auto bound = post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-dave"}});
  EXPECT_EQ(bound.status, 200);
  EXPECT_EQ(bound.j()["user"], "dave");
}

TEST_F(GatewayTest, HealthReadinessAndPrometheusMetrics) {
  start();
  EXPECT_EQ(get("/healthz").status, 200);
  EXPECT_EQ(get("/readyz").status, 200);
  ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 200);
  post("/v1/chat/completions", chat("gpt-99"));
  // The histograms are fed by the telemetry flusher (every 10 ms): wait for it, bounded.
  Reply m;
  for (int i = 0; i < 200; ++i) {
    m = get("/metrics");
    if (m.body.find("llmq_request_latency_seconds_count 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("# TYPE llmq_queue_depth gauge\nllmq_queue_depth 0\n"), std::string::npos);
  EXPECT_NE(m.body.find("llmq_admitted_total 1\n"), std::string::npos);
  EXPECT_NE(m.body.find("llmq_deployment_requests_total{deployment=\"gpt-4o-east\"}"),
            std::string::npos);
  EXPECT_NE(m.body.find("llmq_request_latency_seconds_count 1\n"), std::string::npos);
  EXPECT_NE(m.body.find("llmq_request_latency_seconds_bucket{le=\"+Inf\"} 1\n"), std::string::npos);
  EXPECT_NE(m.body.find("llmq_gateway_rejected_total{reason=\"not_found\"} 1\n"),
            std::string::npos);
  EXPECT_EQ(m.body.find("sk-UPSTREAM-SECRET"), std::string::npos);
}

TEST_F(GatewayTest, ShutdownWhileBusyFinishesInFlightRequests) {
  start({}, 200ms);
  std::vector<std::future<int>> inflight;
  for (int i = 0; i < 4; ++i)
    inflight.push_back(std::async(std::launch::async, [this, i] {
      return post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "u" + std::to_string(i)}})
          .status;
    }));
  // Wait (bounded) until all four are executing, then shut down.
  for (int i = 0; i < 200; ++i) {
    if (get("/metrics").body.find("llmq_in_flight 4\n") != std::string::npos) break;
    std::this_thread::sleep_for(5ms);
  }
  stop_all();
  for (auto& f : inflight) EXPECT_EQ(f.get(), 200);
  EXPECT_THROW(connect(), boost::system::system_error);  // no longer accepting
}

}  // namespace
