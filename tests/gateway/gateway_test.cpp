// llmq-gateway over loopback: a real Beast server in front of an LLMQueue with fake
// executors, driven by a plain blocking HTTP client on the test thread.
#include "gateway.hpp"
#include "reload.hpp"

#include <llmq/llmq.hpp>

#include <gtest/gtest.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
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

llmq::gateway::ClientKey client_key(std::string key, std::string user, std::string tier = "",
                                    std::optional<llmq::Priority> max_priority = std::nullopt) {
  llmq::gateway::ClientKey k;
  k.key = std::move(key);
  k.user = std::move(user);
  k.tier = std::move(tier);
  k.max_priority = max_priority;
  return k;
}

class FakeUpstream : public llmq::RequestExecutor {
 public:
  explicit FakeUpstream(std::chrono::milliseconds delay = 0ms) : delay_(delay) {}
  boost::asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                         const llmq::ChosenDeployments& chosen,
                                                         llmq::TelemetryData& t) override {
    ++calls;
    {
      std::lock_guard lock(mutex_);
      users_.push_back(req.user_id);
      ids_.push_back(req.id);
    }
    if (delay_.count() > 0) {
      asio::steady_timer timer(co_await asio::this_coro::executor, delay_);
      try {
        co_await timer.async_wait(asio::use_awaitable);
      } catch (const boost::system::system_error&) {
        ++cancelled;  // the caller went away: the upstream call is abandoned
        throw;
      }
    }
    t.prompt_tokens = 3;
    // A raw upstream answer, as the executors' raw_success_body hands it over.
    if (auto raw = req.body.find("raw_reply"); raw != req.body.end() && raw->is_string())
      co_return llmq::Response{raw_body(raw->get<std::string>()), 200};
    // An error answer (e.g. an upstream 429 with its Retry-After, as the providers report
    // it, or the queue's own refusals).
    if (auto status = req.body.find("reply_status"); status != req.body.end()) {
      llmq::Response r{llmq::make_error_body("refused", "invalid_request_error",
                                             req.body.value("reply_code", std::string("x"))),
                       status->get<int>()};
      if (auto ms = req.body.find("reply_retry_after_ms"); ms != req.body.end())
        r.retry_after = std::chrono::milliseconds(ms->get<std::int64_t>());
      co_return r;
    }
    co_return llmq::Response{answer(req, chosen), 200};
  }
  /// `"stream_chunks": N` in the body: N chunks `{"i":k}`, `stream_gap_ms` apart; with
  /// `"stream_break_after": k`, a 502 after k of them. Otherwise answered whole.
  boost::asio::awaitable<llmq::Response> process_streaming_request(
      const llmq::Request& req, const llmq::ChosenDeployments& chosen, llmq::TelemetryData& t,
      llmq::StreamWriter& out) override {
    const auto chunks = req.body.find("stream_chunks");
    if (chunks == req.body.end()) {
      llmq::Response whole = co_await process_request(req, chosen, t);
      co_return whole;
    }
    ++calls;
    const int n = chunks->get<int>();
    const int break_after = req.body.value("stream_break_after", -1);
    const auto gap = std::chrono::milliseconds(req.body.value("stream_gap_ms", 0));
    try {
      for (int i = 0; i < n; ++i) {
        if (i == break_after) {
          t.llm_outcome.status = 502;
          co_return llmq::Response{llmq::make_error_body("upstream broke off", "upstream_error",
                                                         "bad_upstream_response"),
                                   502};
        }
        if (gap.count() > 0) {
          asio::steady_timer timer(co_await asio::this_coro::executor, gap);
          co_await timer.async_wait(asio::use_awaitable);
        }
        json c = json::object();
        c["i"] = i;
        co_await out.write(c.dump());
      }
    } catch (const boost::system::system_error&) {
      ++cancelled;
      throw;
    }
    t.llm_outcome.status = 200;
    co_return llmq::Response{json::object(), 200};
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

  /// The users of the calls so far, in the order they reached the upstream.
  std::vector<std::string> users() const {
    std::lock_guard lock(mutex_);
    return users_;
  }
  /// The request ids the calls so far carried (what goes upstream as x-request-id).
  std::vector<std::string> ids() const {
    std::lock_guard lock(mutex_);
    return ids_;
  }

  std::atomic<int> calls{0};
  std::atomic<int> cancelled{0};

 private:
  std::chrono::milliseconds delay_;
  mutable std::mutex mutex_;
  std::vector<std::string> users_;
  std::vector<std::string> ids_;
};

struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string body;
  json j() const { return json::parse(body, nullptr, false); }
  /// A header's value as sent (names as the gateway writes them), else empty.
  std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class GatewayTest : public ::testing::Test {
 protected:
  void start(llmq::gateway::GatewayConfig gc = {}, std::chrono::milliseconds delay = 0ms,
             const char* config = kConfig) {
    gc.port = 0;
    gc.read_timeout = 2s;
    gc.threads = io_threads_;
    gc.admin_keys.push_back(kAdminKey);  // get() presents it: /metrics is open to operators
    auto settings = llmq::gateway::parse_gateway_settings(config);
    metrics_ = std::make_shared<llmq::gateway::Metrics>();
    if (!gc.access_log.empty()) {
      llmq::gateway::AccessLogOptions ao;
      ao.path = gc.access_log;
      access_log_ = std::make_shared<llmq::gateway::AccessLog>(ao);
    }
    llmq::QueueOptions o;
    o.telemetry_store = std::make_shared<llmq::gateway::MetricsTelemetryStore>(
        metrics_, std::make_shared<llmq::InMemoryTelemetryStore>(), access_log_);
    o.telemetry_flush_interval = 10ms;
    upstream_ = std::make_shared<FakeUpstream>(delay);
    queue_ = std::make_unique<llmq::LLMQueue>(
        io_.get_executor(), settings.llm,
        std::map<std::string, std::shared_ptr<llmq::RequestExecutor>>{
            {"chat_completion", upstream_}, {"embeddings", upstream_}},
        o);
    gateway_ = std::make_unique<llmq::gateway::Gateway>(*queue_, gc, metrics_);
    gateway_->set_access_log(access_log_);
    if (reload_) gateway_->set_reload(reload_);
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
    for (std::size_t i = 0; i < io_threads_; ++i)
      threads_.emplace_back([this] { io_.run_for(60s); });
    up_promise.get_future().wait();
  }

  void TearDown() override {
    if (threads_.empty()) return;
    if (!stopped_) stop_all();
    for (std::thread& t : threads_) t.join();
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

  /// A blocking client socket whose reads give up after `read_limit` (never a hang).
  tcp::socket connect(std::chrono::milliseconds read_limit = 5s) {
    tcp::socket s(client_io_);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_));
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(read_limit.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((read_limit.count() % 1000) * 1000);
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
  }

  /// Reads until `end` has arrived (or the peer closed / the read limit passed).
  static std::string read_until(tcp::socket& s, std::string_view end) {
    std::string got;
    char buf[512];
    while (got.find(end) == std::string::npos) {
      beast::error_code ec;
      const std::size_t n = s.read_some(asio::buffer(buf), ec);
      if (ec) break;
      got.append(buf, n);
    }
    return got;
  }

  /// True when the server closed `s` (EOF or reset) within the socket's read limit.
  static bool closed_by_server(tcp::socket& s) {
    char byte = 0;
    beast::error_code ec;
    s.read_some(asio::buffer(&byte, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  /// The value of one sample line of /metrics, or -1.
  double metric(const std::string& name) {
    const std::string text = get("/metrics").body;
    const auto at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + name.size() + 2));
  }

  /// Polls `metric(name)` until it equals `value`, at most `limit`.
  bool wait_metric(const std::string& name, double value, std::chrono::milliseconds limit = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (metric(name) == value) return true;
      std::this_thread::sleep_for(10ms);
    }
    return metric(name) == value;
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

  /// A GET presenting the operators' admin key (or `headers`).
  Reply get(const std::string& target,
            std::map<std::string, std::string> headers = {{"api-key", kAdminKey}}) {
    auto s = connect();
    return send(s, http::verb::get, target, "", std::move(headers));
  }

  static constexpr const char* kAdminKey = "test-admin-key";

  /// Sends a gpt-4o chat request of `user` (at `priority`, if given) on `s` without
  /// reading the answer.
  static void write_chat(tcp::socket& s, const std::string& user,
                         const std::string& priority = {}) {
    write_chat_body(s, chat("gpt-4o"), user, priority);
  }

  /// Sends `body` to /v1/chat/completions as `user` on `s` without reading the answer.
  static void write_chat_body(tcp::socket& s, const json& body, const std::string& user,
                              const std::string& priority = {}) {
    http::request<http::string_body> req{http::verb::post, "/v1/chat/completions", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.set("x-user-id", user);
    if (!priority.empty()) req.set("x-llmq-priority", priority);
    req.body() = body.dump();
    req.prepare_payload();
    http::write(s, req);
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
  std::shared_ptr<llmq::gateway::AccessLog> access_log_;
  std::shared_ptr<FakeUpstream> upstream_;
  std::unique_ptr<llmq::LLMQueue> queue_;
  std::unique_ptr<llmq::gateway::Gateway> gateway_;
  std::unique_ptr<llmq::gateway::GatewayServer> server_;
  /// What POST /admin/reload runs (set before start()); unset: no such route.
  std::function<asio::awaitable<llmq::gateway::ReloadOutcome>()> reload_;
  /// Threads running io_ (and gateway.threads); set before start().
  std::size_t io_threads_ = 1;
  std::vector<std::thread> threads_;
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
  streaming["stream"] = "yes";  // `true` streams; a non-boolean is refused
  const Reply bad_stream = post("/v1/chat/completions", streaming);
  EXPECT_EQ(bad_stream.status, 400);
  EXPECT_EQ(bad_stream.j()["error"]["param"], "stream");
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

TEST(GatewayConfig, KeysThatAreNotStringsAreConfigErrors) {
  // yaml-cpp's conversion of a list or mapping key to a string threw its own exception
  // past parse_gateway_settings (llmq-gateway died with std::terminate).
  for (const char* section :
       {"gateway:\n  [a, b]: 1\n", "gateway:\n  {a: b}: 1\n", "gateway:\n  ? - x\n  : 1\n"}) {
    SCOPED_TRACE(section);
    try {
      (void)llmq::gateway::parse_gateway_settings(std::string(kConfig) + section);
      ADD_FAILURE() << "accepted";
    } catch (const llmq::ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), "gateway: mapping keys must be plain strings (line 14)");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a ConfigError: " << e.what();
    }
  }
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
  gc.client_keys.push_back(client_key("key-free", ""));
  gc.client_keys.push_back(client_key("key-dave", "dave"));
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

// ---- hostile input -----------------------------------------------------------------------

std::string deep_arrays(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

TEST_F(GatewayTest, DeepNestingIsRefusedBeforeQueueingAndTheServerKeepsServing) {
  start();
  const std::string content = std::string(R"({"model":"gpt-4o","messages":[{"role":"user",)") +
                              R"("content":)" + deep_arrays(200'000) + "}]}";
  auto s = connect();
  const Reply deep = send(s, http::verb::post, "/v1/chat/completions", content);
  EXPECT_EQ(deep.status, 400);
  EXPECT_EQ(deep.j()["error"]["code"], "json_too_deep");
  EXPECT_EQ(deep.j()["error"]["param"], "messages");
  EXPECT_EQ(deep.j()["error"]["type"], "invalid_request_error");
  const std::string tools = std::string(R"({"model":"gpt-4o","messages":[{"role":"user",)") +
                            R"("content":"hi"}],"tools":)" + deep_arrays(200'000) + "}";
  const Reply deep_tools = send(s, http::verb::post, "/v1/chat/completions", tools);
  EXPECT_EQ(deep_tools.status, 400);
  EXPECT_EQ(deep_tools.j()["error"]["param"], "tools");
  EXPECT_EQ(upstream_->calls.load(), 0);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 200);
}

TEST_F(GatewayTest, BadFieldShapesAreRefusedBeforeQueueing) {
  start();
  struct Case {
    const char* patch;
    const char* param;
  };
  for (const Case& c :
       {Case{R"({"n":9223372036854775807})", "n"}, Case{R"({"max_tokens":-1})", "max_tokens"},
        Case{R"({"max_tokens":"eight"})", "max_tokens"},
        Case{R"({"max_completion_tokens":4294967296})", "max_completion_tokens"},
        Case{R"({"messages":"hello"})", "messages"}, Case{R"({"messages":[]})", "messages"},
        Case{R"({"stream":"yes"})", "stream"}, Case{R"({"model":7})", "model"}}) {
    json body = chat("gpt-4o");
    body.merge_patch(json::parse(c.patch));
    const Reply r = post("/v1/chat/completions", body);
    EXPECT_EQ(r.status, 400) << c.patch;
    EXPECT_EQ(r.j()["error"]["param"], c.param) << c.patch << " " << r.body;
    EXPECT_EQ(r.j()["error"]["type"], "invalid_request_error");
  }
  json e = json::object();
  e["model"] = "text-embedding-ada-002";
  e["input"] = json::array();
  const Reply empty_input = post("/v1/embeddings", e);
  EXPECT_EQ(empty_input.status, 400);
  EXPECT_EQ(empty_input.j()["error"]["param"], "input");
  EXPECT_EQ(upstream_->calls.load(), 0);
  EXPECT_EQ(metric("llmq_admitted_total"), 0);
}

TEST_F(GatewayTest, UserIdsAreBounded) {
  start();
  const Reply long_id =
      post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", std::string(1000, 'u')}});
  EXPECT_EQ(long_id.status, 400);
  EXPECT_EQ(long_id.j()["error"]["code"], "invalid_user_id");
  EXPECT_EQ(long_id.j()["error"]["param"], "x-user-id");
  // Beast refuses control bytes in header values itself (400 bad_http); the rest reach
  // validate_user_id (400 invalid_user_id). Either way nothing is queued.
  const std::vector<std::pair<std::string, std::string>> bad_ids = {
      {std::string("a\x01") + "b", "bad_http"},
      {"c1\xc2\x85", "invalid_user_id"},
      {"bad\xff", "invalid_user_id"}};
  for (const auto& [bad, code] : bad_ids) {
    auto s = connect();
    const std::string body = chat("gpt-4o").dump();
    asio::write(
        s, asio::buffer("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-user-id: " + bad +
                        "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
    const Reply r = read_reply(s);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.j()["error"]["code"], code) << r.body;
  }
  EXPECT_EQ(upstream_->calls.load(), 0);
  EXPECT_EQ(
      post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", std::string(256, 'u')}}).status,
      200);
}

TEST_F(GatewayTest, ExpectContinueIsAnsweredBeforeTheBody) {
  llmq::gateway::GatewayConfig gc;
  gc.max_body_bytes = 64 * 1024;
  start(gc);
  const std::string body = chat("gpt-4o").dump();
  auto head = [](std::size_t length) {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-user-id: alice\r\n"
           "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
           std::to_string(length) + "\r\n\r\n";
  };
  {
    auto s = connect(1500ms);  // curl waits 1 s for the 100 before sending anyway
    asio::write(s, asio::buffer(head(body.size())));
    EXPECT_EQ(read_until(s, "\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
    asio::write(s, asio::buffer(body));
    EXPECT_EQ(read_reply(s).status, 200);
  }
  {  // a body over max_body_bytes: 413 at once, no 100, nothing read
    auto s = connect(1500ms);
    asio::write(s, asio::buffer(head(10 * 1024 * 1024)));
    const std::string got = read_until(s, "\r\n\r\n");
    EXPECT_EQ(got.rfind("HTTP/1.1 413 ", 0), 0u) << got;
  }
}

TEST_F(GatewayTest, HalfHeaderConnectionsDoNotLockOthersOut) {
  llmq::gateway::GatewayConfig gc;
  gc.max_connections = 4;
  gc.header_timeout = 300ms;  // idle_timeout stays 60 s
  start(gc);
  std::vector<tcp::socket> slow;
  for (int i = 0; i < 4; ++i) {
    slow.push_back(connect(3s));
    asio::write(slow.back(), asio::buffer(std::string("POST /v1/chat/completions HTTP/1.1\r\nHo")));
  }
  // Bounded: the half headers are cut off after header_timeout, then a client gets in.
  const auto began = std::chrono::steady_clock::now();
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() - began < 3s) {
    try {
      status = post("/v1/chat/completions", chat("gpt-4o")).status;
    } catch (const boost::system::system_error&) {
      status = 0;
    }
    if (status != 200) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - began, 2s);
  for (auto& s : slow) EXPECT_TRUE(closed_by_server(s));
}

TEST_F(GatewayTest, IdleConnectionsAreEvictedForNewOnesBusyOnesAreNot) {
  llmq::gateway::GatewayConfig gc;
  gc.max_connections = 2;
  start(gc, 300ms);
  const std::string body = chat("gpt-4o").dump();
  auto a = connect();
  auto b = connect();
  ASSERT_EQ(send(a, http::verb::post, "/v1/chat/completions", body).status, 200);
  ASSERT_EQ(send(b, http::verb::post, "/v1/chat/completions", body, {{"x-user-id", "bob"}}).status,
            200);
  // Both are idle keep-alive connections now: a third client is admitted, the older goes.
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "carol"}}).status, 200);
  EXPECT_TRUE(closed_by_server(a));
  for (int i = 0; i < 300 && server_->connections() != 1; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server_->connections(), 1u);  // b

  // Two busy connections: nothing to evict, so a third is refused.
  auto busy_b = std::async(std::launch::async, [&] {
    return send(b, http::verb::post, "/v1/chat/completions", body, {{"x-user-id", "bob"}}).status;
  });
  auto d = connect();
  asio::write(d, asio::buffer("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-user-id: dave\r\n"
                              "Content-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body));
  for (int i = 0; i < 200 && upstream_->calls.load() < 5; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(upstream_->calls.load(), 5);  // b and d are being answered (300 ms each)
  auto e = connect();
  EXPECT_TRUE(closed_by_server(e));
  EXPECT_EQ(busy_b.get(), 200);
  EXPECT_EQ(read_reply(d).status, 200);
  b.close();
  d.close();
  for (int i = 0; i < 300 && server_->connections() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metric("llmq_gateway_connections_evicted_total"), 1);
  EXPECT_EQ(metric("llmq_gateway_connections_refused_total"), 1);
}

TEST_F(GatewayTest, ClientThatDisconnectsWhileQueuedCausesNoUpstreamCall) {
  // One request per minute: the second waits in the queue.
  static constexpr const char* kSlowConfig = R"(
azure_open_ai:
  - api_key: "k"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "slow", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "slow", model_type: "chat", req_per_min: 1, tokens_per_min: 100000000}
)";
  start({}, 0ms, kSlowConfig);
  ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 200);
  {
    auto s = connect();
    const std::string body = chat("gpt-4o").dump();
    asio::write(s, asio::buffer("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-user-id: "
                                "alice\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body));
    ASSERT_TRUE(wait_metric("llmq_queue_depth", 1));
  }  // the client gives up
  EXPECT_TRUE(wait_metric("llmq_queue_depth", 0));
  EXPECT_TRUE(wait_metric("llmq_gateway_client_disconnects_total", 1));
  EXPECT_EQ(metric("llmq_rejected_total{reason=\"cancelled\"}"), 1);
  EXPECT_EQ(upstream_->calls.load(), 1);
}

TEST_F(GatewayTest, ClientThatDisconnectsWhileRunningCancelsTheUpstreamCall) {
  start({}, 30s);
  {
    auto s = connect();
    const std::string body = chat("gpt-4o").dump();
    asio::write(s, asio::buffer("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-user-id: "
                                "alice\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body));
    ASSERT_TRUE(wait_metric("llmq_in_flight", 1));
  }
  EXPECT_TRUE(wait_metric("llmq_in_flight", 0));
  EXPECT_EQ(upstream_->cancelled.load(), 1);
  EXPECT_EQ(metric("llmq_gateway_client_disconnects_total"), 1);
}

json streamed_chat(int chunks) {
  json b = json::object();
  b["model"] = "gpt-4o";
  json m = json::object();
  m["role"] = "user";
  m["content"] = "hi";
  b["messages"] = json::array({m});
  b["stream"] = true;
  b["stream_chunks"] = chunks;
  return b;
}

TEST_F(GatewayTest, StreamedAnswersAreServerSentEventsEndingWithDone) {
  start();
  auto s = connect();
  for (int round = 0; round < 2; ++round) {  // keep-alive: the connection serves again
    const Reply r = send(s, http::verb::post, "/v1/chat/completions", streamed_chat(3).dump());
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("Content-Type"), "text/event-stream");
    EXPECT_EQ(r.header("Transfer-Encoding"), "chunked");
    EXPECT_EQ(r.header("cache-control"), "no-cache");
    EXPECT_FALSE(r.header("x-request-id").empty());
    EXPECT_EQ(r.body, "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: {\"i\":2}\n\ndata: [DONE]\n\n");
  }
  EXPECT_TRUE(wait_metric("llmq_streamed_requests_total", 2));
  EXPECT_EQ(metric("llmq_gateway_streams_open"), 0);
  EXPECT_EQ(metric("llmq_time_to_first_token_seconds_count"), 2);
}

TEST_F(GatewayTest, AStreamCutShortEndsWithAnErrorEventNotASilentEnd) {
  start();
  json body = streamed_chat(5);
  body["stream_break_after"] = 2;
  const Reply r = post("/v1/chat/completions", body);
  EXPECT_EQ(r.status, 200);  // the head went out with the first chunk
  const std::string head = "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: ";
  ASSERT_EQ(r.body.substr(0, head.size()), head);
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  ASSERT_GE(r.body.size(), head.size() + 2);
  const json event = json::parse(r.body.substr(head.size(), r.body.size() - head.size() - 2));
  EXPECT_EQ(event["error"]["code"], "bad_upstream_response");
  EXPECT_EQ(event["error"]["request_id"], r.header("x-request-id"));
  EXPECT_EQ(r.body.substr(r.body.size() - 2), "\n\n");
}

TEST_F(GatewayTest, AFailureBeforeTheStreamIsAPlainJsonAnswer) {
  start();
  json body = chat("gpt-4o");
  body["stream"] = true;
  body["reply_status"] = 429;
  body["reply_retry_after_ms"] = 2500;
  const Reply r = post("/v1/chat/completions", body);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.j()["error"]["message"], "refused");
  EXPECT_EQ(r.header("retry-after"), "3");
}

TEST_F(GatewayTest, AClientThatLeavesMidStreamCancelsTheUpstreamCall) {
  start();
  json body = streamed_chat(1000);
  body["stream_gap_ms"] = 20;
  {
    auto s = connect();
    write_chat_body(s, body, "alice");
    const std::string got = read_until(s, "data: {\"i\":1}");
    EXPECT_NE(got.find("data: {\"i\":0}"), std::string::npos);
  }  // the client closes the connection mid-stream
  EXPECT_TRUE(wait_metric("llmq_in_flight", 0));
  EXPECT_TRUE(wait_metric("llmq_gateway_streams_open", 0));
  EXPECT_EQ(upstream_->cancelled.load(), 1);
  EXPECT_GE(metric("llmq_gateway_client_disconnects_total"), 1);
}

TEST_F(GatewayTest, UpstreamRetryAfterReachesTheClient) {
  start();
  json body = chat("gpt-4o");
  body["reply_status"] = 429;
  body["reply_retry_after_ms"] = 7250;
  const Reply r = post("/v1/chat/completions", body);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("retry-after"), "8");
  EXPECT_EQ(r.header("retry-after-ms"), "7250");
  body.erase("reply_retry_after_ms");
  EXPECT_EQ(post("/v1/chat/completions", body).header("retry-after"), "1");  // none sent
}

TEST_F(GatewayTest, QueueRefusalsPassThroughWithTheRequestId) {
  start();
  json body = chat("gpt-4o");
  body["reply_status"] = 400;
  body["reply_code"] = "request_too_large";
  const Reply r = post("/v1/chat/completions", body);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.j()["error"]["code"], "request_too_large");
  EXPECT_EQ(r.j()["error"]["message"], "refused");
  EXPECT_EQ(r.j()["error"]["request_id"], r.header("x-request-id"));
}

TEST_F(GatewayTest, EveryAnswerCarriesARequestId) {
  start();
  const Reply ok = post("/v1/chat/completions", chat("gpt-4o"));
  ASSERT_EQ(ok.status, 200);
  EXPECT_FALSE(ok.header("x-request-id").empty());
  EXPECT_EQ(ok.header("x-request-id").rfind("gw-", 0), std::string::npos);  // the queue's id
  const Reply mine =
      post("/v1/chat/completions", chat("gpt-99"), {{"x-user-id", "a"}, {"x-request-id", "abc-1"}});
  EXPECT_EQ(mine.status, 404);
  EXPECT_EQ(mine.header("x-request-id"), "abc-1");
  EXPECT_EQ(mine.j()["error"]["request_id"], "abc-1");
  const Reply insane = post("/v1/chat/completions", chat("gpt-99"),
                            {{"x-user-id", "a"}, {"x-request-id", std::string(200, 'r')}});
  EXPECT_EQ(insane.header("x-request-id").rfind("gw-", 0), 0u);
  EXPECT_EQ(insane.j()["error"]["request_id"], insane.header("x-request-id"));
  EXPECT_FALSE(get("/healthz").header("x-request-id").empty());
  auto s = connect();
  asio::write(s, asio::buffer(std::string("NOT HTTP\r\n\r\n")));
  const Reply refused = read_reply(s);
  EXPECT_EQ(refused.status, 400);
  EXPECT_EQ(refused.j()["error"]["request_id"], refused.header("x-request-id"));
}

TEST_F(GatewayTest, RequestIdsGoEndToEndAndEveryRequestGetsOneAccessLogLine) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("llmq-gateway-access-" + std::to_string(::getpid()) + ".log");
  std::filesystem::remove(path);
  llmq::gateway::GatewayConfig gc;
  gc.access_log = path.string();
  gc.client_keys.push_back(client_key("secret-client-key-xyz", ""));
  start(gc);
  const std::map<std::string, std::string> headers = {{"api-key", "secret-client-key-xyz"},
                                                      {"x-user-id", "carol"},
                                                      {"x-request-id", "client-chosen-7"}};
  json body = chat("gpt-4o");
  body["messages"][0]["content"] = "the-prompt-text-qwerty";
  const Reply ok = post("/v1/chat/completions", body, headers);
  ASSERT_EQ(ok.status, 200);
  EXPECT_EQ(ok.header("x-request-id"), "client-chosen-7");
  EXPECT_EQ(upstream_->ids(), std::vector<std::string>{"client-chosen-7"});  // and upstream
  const Reply unauthorized = post("/v1/chat/completions", chat("gpt-4o"),
                                  {{"api-key", "wrong-key-abc"}, {"x-user-id", "carol"}});
  EXPECT_EQ(unauthorized.status, 401);
  const Reply unknown_model = post("/v1/embeddings", json::object({{"model", "nope"}}),
                                   {{"api-key", "secret-client-key-xyz"}, {"x-user-id", "d"}});
  EXPECT_EQ(unknown_model.status, 404);
  auto s = connect();
  asio::write(s, asio::buffer(std::string("NOT HTTP\r\n\r\n")));
  EXPECT_EQ(read_reply(s).status, 400);

  // Four lines once the queue's record of the first request has joined its answer.
  std::vector<json> lines;
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    access_log_->flush(std::chrono::steady_clock::now());
    std::ifstream in(path);
    std::ostringstream all;
    all << in.rdbuf();
    text = all.str();
    lines.clear();
    std::istringstream split(text);
    for (std::string line; std::getline(split, line);) lines.push_back(json::parse(line));
    if (lines.size() >= 4) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(lines.size(), 4u) << text;
  auto by_status = [&](int status) {
    for (const json& j : lines)
      if (j["status"] == status) return j;
    return json();
  };
  const json served = by_status(200);
  ASSERT_TRUE(served.is_object()) << text;
  EXPECT_EQ(served["request_id"], "client-chosen-7");
  EXPECT_EQ(served["route"], "/v1/chat/completions");
  EXPECT_EQ(served["user"], "carol");
  EXPECT_EQ(served["model"], "gpt-4o");
  EXPECT_TRUE(served["deployment"] == "gpt-4o-east" || served["deployment"] == "gpt-4o-west")
      << served;
  EXPECT_EQ(served["attempts"], 1);
  EXPECT_EQ(served["prompt_tokens"], 3);  // what the executor reported
  EXPECT_EQ(served["bytes_in"], body.dump().size());
  EXPECT_EQ(served["bytes_out"], ok.body.size());
  EXPECT_GE(served["queue_wait_ms"].get<double>(), 0.0);
  const json refused = by_status(401);
  EXPECT_TRUE(refused["deployment"].is_null());
  EXPECT_TRUE(refused["user"].is_null());  // no user is established without a key
  EXPECT_EQ(by_status(404)["model"], "nope");
  EXPECT_TRUE(by_status(400)["route"].is_null());  // not even a request line
  // Never a key, a body or a prompt.
  EXPECT_EQ(text.find("secret-client-key-xyz"), std::string::npos);
  EXPECT_EQ(text.find("wrong-key-abc"), std::string::npos);
  EXPECT_EQ(text.find("the-prompt-text-qwerty"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(GatewayConfig, UnknownKeysFailUnlessAllowed) {
  try {
    (void)llmq::gateway::parse_gateway_settings(std::string(kConfig) +
                                                "gateway:\n  port: 0\n  read_timeout: 5\n");
    FAIL() << "an unknown key was accepted";
  } catch (const llmq::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.read_timeout: unknown key"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("(line "), std::string::npos) << e.what();
  }
  const auto allowed = llmq::gateway::parse_gateway_settings(
      std::string(kConfig) + "gateway:\n  read_timeout: 5\n  allow_unknown_keys: true\n");
  EXPECT_TRUE(allowed.gateway.allow_unknown_keys);
}

TEST(GatewayConfig, HardeningKeysAndTheRetryBudget) {
  const auto s = llmq::gateway::parse_gateway_settings(
      std::string(kConfig) +
      "gateway:\n  max_json_depth: 16\n  header_timeout_seconds: 2.5\n"
      "  upstream_timeout_seconds: 90\n");
  EXPECT_EQ(s.gateway.max_json_depth, 16u);
  EXPECT_EQ(s.gateway.header_timeout, 2500ms);
  EXPECT_EQ(s.gateway.upstream_timeout, 90s);
  const llmq::gateway::GatewayConfig defaults;
  EXPECT_EQ(defaults.max_json_depth, 64u);
  EXPECT_EQ(defaults.header_timeout, 10s);
  EXPECT_EQ(defaults.upstream_timeout, 120s);
  // An attempt that timed out can still be retried; the HTTP client times out first.
  for (const auto& g : {s.gateway, defaults}) {
    const llmq::QueueOptions o = llmq::gateway::queue_options(g);
    EXPECT_GT(o.retry_budget, g.upstream_timeout);
    EXPECT_GT(o.execution_timeout, g.upstream_timeout);
    EXPECT_GE(o.max_attempts, 2);
  }
  EXPECT_THROW((void)llmq::gateway::parse_gateway_settings(std::string(kConfig) +
                                                           "gateway:\n  max_json_depth: 0\n"),
               llmq::ConfigError);
}

}  // namespace

// ---- multi-tenant keys: tiers through client keys, x-llmq-priority ----------------------

constexpr const char* kTieredConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: 100000, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 2
  time_window_in_seconds: 60
user_tiers:
  partner:
    max_num_requests_in_time_window: 4
)";

TEST_F(GatewayTest, ClientKeysPutRequestsInTheirTier) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-default", ""));
  gc.client_keys.push_back(client_key("key-partner", "", "partner"));
  start(gc, 0ms, kTieredConfig);
  auto count_ok = [&](const std::string& key, const std::string& user) {
    int ok = 0;
    for (int i = 0; i < 6; ++i)
      ok += post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", user}, {"api-key", key}})
                .status == 200;
    return ok;
  };
  EXPECT_EQ(count_ok("key-default", "u1"), 2);  // user_limits
  EXPECT_EQ(count_ok("key-partner", "u2"), 4);  // the partner tier's limit
  const std::string text = get("/metrics").body;
  EXPECT_NE(text.find("llmq_admitted_by_tier_total{tier=\"partner\"} 4\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("llmq_queue_depth_by_tier{tier=\"\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("llmq_queue_depth_by_priority{priority=\"high\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE llmq_queue_depth_by_user gauge\n"), std::string::npos);
  EXPECT_NE(text.find("llmq_deployment_spilled_total{deployment=\"gpt-4o-east\"} 0\n"),
            std::string::npos);
}

TEST_F(GatewayTest, PriorityHeaderIsCheckedAndBoundedByTheKey) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-any", ""));
  gc.client_keys.push_back(client_key("key-batch", "", "", llmq::Priority::normal));
  start(gc);
  auto status = [&](const std::string& key, const std::string& priority) {
    return post("/v1/chat/completions", chat("gpt-4o"),
                {{"x-user-id", "p-" + key + priority},
                 {"api-key", key},
                 {"x-llmq-priority", priority}})
        .status;
  };
  EXPECT_EQ(status("key-any", "high"), 200);
  EXPECT_EQ(status("key-any", "low"), 200);
  EXPECT_EQ(status("key-batch", "normal"), 200);
  EXPECT_EQ(status("key-batch", "low"), 200);
  auto raised = post("/v1/chat/completions", chat("gpt-4o"),
                     {{"x-user-id", "b"}, {"api-key", "key-batch"}, {"x-llmq-priority", "high"}});
  EXPECT_EQ(raised.status, 403);
  EXPECT_EQ(raised.j()["error"]["code"], "priority_not_allowed");
  auto bad = post("/v1/chat/completions", chat("gpt-4o"),
                  {{"x-user-id", "b"}, {"api-key", "key-any"}, {"x-llmq-priority", "urgent"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.j()["error"]["code"], "invalid_priority");
  EXPECT_EQ(bad.j()["error"]["param"], "x-llmq-priority");
}

TEST(GatewayConfig, ClientKeyTiersAndPriorities) {
  const std::string base(kTieredConfig);
  auto s = llmq::gateway::parse_gateway_settings(
      base + "gateway:\n  client_keys:\n    - {key: k1, tier: partner, max_priority: low}\n");
  ASSERT_EQ(s.gateway.client_keys.size(), 1u);
  EXPECT_EQ(s.gateway.client_keys[0].tier, "partner");
  EXPECT_EQ(s.gateway.client_keys[0].max_priority, llmq::Priority::low);
  auto error_of = [&](const std::string& keys) {
    try {
      (void)llmq::gateway::parse_gateway_settings(base + "gateway:\n  client_keys:\n" + keys);
    } catch (const llmq::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("    - {key: k1, tier: gold}\n")
                .find("client_keys[0].tier: no user tier named 'gold'"),
            std::string::npos);
  EXPECT_NE(error_of("    - {key: k1, max_priority: urgent}\n").find("client_keys[0].max_priority"),
            std::string::npos);
  EXPECT_NE(error_of("    - {key: k1, teir: partner}\n").find("unknown key"), std::string::npos);
}

constexpr const char* kCappedConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: 1, tokens_per_min: 100000000}
scheduler_limits:
  request_timeout_seconds: 1
  max_queued_per_user: 1
)";

TEST_F(GatewayTest, MaxQueuedPerUserRefusesThatUsersNextRequestWith503) {
  start({}, 0ms, kCappedConfig);
  // The deployment takes one request a minute: the first runs, the second waits.
  ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "u"}}).status, 200);
  auto waiting = connect();
  write_chat(waiting, "u");
  ASSERT_TRUE(wait_metric("llmq_queue_depth", 1));
  // The same user's next one is over its cap: refused at once; another user still queues.
  auto over = post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "u"}});
  EXPECT_EQ(over.status, 503);
  EXPECT_EQ(over.j()["error"]["code"], "queue_full");
  EXPECT_NE(over.j()["error"]["message"].get<std::string>().find("max_queued_per_user"),
            std::string::npos);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "v"}}).status, 504);
  EXPECT_EQ(read_reply(waiting).status, 504);  // its request timeout (1 s) passed
  EXPECT_EQ(metric("llmq_rejected_total{reason=\"user_queue_full\"}"), 1);
}

constexpr const char* kFairConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: 600, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 1000
scheduler_limits:
  policy: fair
)";

TEST_F(GatewayTest, FairPolicyServesALightUserBeforeAHeavyUsersBacklog) {
  start({}, 0ms, kFairConfig);
  // 40 requests of one user on a deployment that takes 10 a second: 30 wait.
  std::vector<tcp::socket> heavy;
  for (int i = 0; i < 40; ++i) {
    heavy.push_back(connect(10s));
    write_chat(heavy.back(), "heavy");
  }
  ASSERT_TRUE(wait_metric("llmq_queue_depth", 30));
  // The light user's request is served in the next round, not after the backlog (under
  // fifo it would be the 41st).
  ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "light"}}).status, 200);
  EXPECT_LT(upstream_->calls.load(), 25) << "the light request waited for the heavy backlog";
  for (auto& s : heavy) EXPECT_EQ(read_reply(s).status, 200);
}

namespace {

/// One deployment of `rpm` requests a minute (paced: one every 60/rpm s), user limits out
/// of the way, and `scheduling` appended to scheduler_limits.
std::string paced_config(int rpm, const std::string& scheduling) {
  return std::string(R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-east", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "east", model_type: "chat", req_per_min: )") +
         std::to_string(rpm) + R"(, tokens_per_min: 100000000}
user_limits:
  max_num_requests_in_time_window: 1000
scheduler_limits:
)" + scheduling;
}

class GatewaySchedulingTest : public GatewayTest {
 protected:
  /// The order in which the upstream sees: one request that runs at once, then a low
  /// request, then two high ones, queued behind a deployment that takes one a second.
  std::vector<std::string> low_then_high_order(const std::string& scheduling) {
    const std::string cfg = paced_config(60, "  request_timeout_seconds: 20\n" + scheduling);
    start({}, 0ms, cfg.c_str());
    EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "first"}}).status, 200);
    auto low = connect(10s);
    write_chat(low, "low", "low");
    EXPECT_TRUE(wait_metric("llmq_queue_depth", 1));
    std::vector<tcp::socket> high;
    for (const char* user : {"high-1", "high-2"}) {
      high.push_back(connect(10s));
      write_chat(high.back(), user, "high");
    }
    EXPECT_TRUE(wait_metric("llmq_queue_depth", 3));
    EXPECT_EQ(read_reply(low).status, 200);
    for (auto& s : high) EXPECT_EQ(read_reply(s).status, 200);
    return upstream_->users();
  }
};

}  // namespace

TEST_F(GatewaySchedulingTest, WithoutAgingHighRequestsGoBeforeAnOlderLowOne) {
  EXPECT_EQ(low_then_high_order(""),
            (std::vector<std::string>{"first", "high-1", "high-2", "low"}));
}

TEST_F(GatewaySchedulingTest, PriorityAgingSecondsLetsAWaitingLowRequestOvertakeNewerHighOnes) {
  // The low request reaches high after 2 x 0.2 s and, older than the high ones, leaves
  // first at the next dispatch (about 1 s after the first request).
  EXPECT_EQ(low_then_high_order("  priority_aging_seconds: 0.2\n"),
            (std::vector<std::string>{"first", "low", "high-1", "high-2"}));
}

TEST_F(GatewayTest, PredictiveAdmissionRefusesAtOnceWithTheWaitAsRetryAfter) {
  const std::string cfg =
      paced_config(600, "  request_timeout_seconds: 10\n  predictive_admission: true\n");
  start({}, 0ms, cfg.c_str());
  // 220 requests on a deployment that takes 10 at each second: admitted (no rate is
  // measured yet); about 100 of them are served before the rest time out at 10 s.
  std::vector<tcp::socket> backlog;
  for (int i = 0; i < 220; ++i) {
    backlog.push_back(connect(15s));
    write_chat(backlog.back(), "u" + std::to_string(i));
  }
  // The rate is known after 8 busy seconds. A newcomer then has more than 120 ahead of
  // it: its predicted wait (over 12 s) is past the 10 s timeout, so it is refused at once.
  const auto deadline = std::chrono::steady_clock::now() + 12s;
  while (upstream_->calls.load() < 90 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  const auto sent = std::chrono::steady_clock::now();
  auto r = post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "late"}});
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 500ms) << "it was queued, not refused";
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.j()["error"]["code"], "queue_full");
  const int retry_after = std::atoi(r.header("retry-after").c_str());
  EXPECT_GE(retry_after, 11);
  EXPECT_LE(retry_after, 15);
  EXPECT_EQ(metric("llmq_rejected_total{reason=\"predicted_timeout\"}"), 1);
  // Ten a second for ten seconds (the eleventh burst may catch the last arrivals before
  // their deadlines), the rest time out.
  std::map<int, int> statuses;
  for (auto& s : backlog) ++statuses[read_reply(s).status];
  EXPECT_GE(statuses[200], 100);
  EXPECT_LE(statuses[200], 110);
  EXPECT_EQ(statuses[200] + statuses[504], 220);
}

constexpr const char* kSpilloverConfig = R"(
azure_open_ai:
  - api_key: "sk-UPSTREAM-SECRET"
    api_version: "2024-10-21"
    azure_endpoint: "http://127.0.0.1:1/"
    azure_oai_models:
      - {unique_model_id: "gpt-4o-ptu", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "ptu", model_type: "chat", req_per_min: 60, tokens_per_min: 100000000}
      - {unique_model_id: "gpt-4o-paygo", model_name_in_azure: "gpt-4o", deployment_name_in_azure: "paygo", model_type: "chat", req_per_min: 6000, tokens_per_min: 100000000, priority: 1}
user_limits:
  max_num_requests_in_time_window: 1000
)";

TEST_F(GatewayTest, DeploymentPriorityServesTheProvisionedOneFirstAndSpillsOver) {
  start({}, 0ms, kSpilloverConfig);
  // The provisioned deployment (priority 0) takes one request a second; the rest of a
  // burst spills over to pay-as-you-go at once, though its weight (6000 RPM) is larger.
  std::vector<std::string> served;
  for (int i = 0; i < 3; ++i) {
    auto r = post("/v1/chat/completions", chat("gpt-4o"));
    ASSERT_EQ(r.status, 200) << r.body;
    served.push_back(r.j()["deployment"].get<std::string>());
  }
  EXPECT_EQ(served, (std::vector<std::string>{"gpt-4o-ptu", "gpt-4o-paygo", "gpt-4o-paygo"}));
  EXPECT_EQ(metric("llmq_deployment_spilled_total{deployment=\"gpt-4o-paygo\"}"), 2);
  EXPECT_EQ(metric("llmq_deployment_spilled_total{deployment=\"gpt-4o-ptu\"}"), 0);
}

TEST_F(GatewayTest, MetricsNeedAKeyOnceClientKeysExist) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  start(gc);
  EXPECT_EQ(get("/metrics", {}).status, 401);
  EXPECT_EQ(get("/metrics", {{"api-key", "wrong"}}).status, 401);
  EXPECT_EQ(get("/metrics", {{"api-key", "key-a"}}).status, 200);
  EXPECT_EQ(get("/metrics", {{"authorization", std::string("Bearer ") + kAdminKey}}).status, 200);
  EXPECT_EQ(get("/healthz", {}).status, 200);  // probes stay open
  EXPECT_EQ(get("/readyz", {}).status, 200);
  // An admin key is not a client key: it may read /metrics, not make requests.
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", kAdminKey}}).status, 401);
}

TEST_F(GatewayTest, MetricsArePublicWithoutClientKeysOrWhenConfigured) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  gc.metrics_public = true;
  start(gc);
  EXPECT_EQ(get("/metrics", {}).status, 200);
}

TEST_F(GatewayTest, MetricsArePublicWhenThereAreNoClientKeys) {
  start();
  EXPECT_EQ(get("/metrics", {}).status, 200);
}

TEST(GatewayConfig, StartUpWarningsAndRequireClientKeys) {
  const auto settings = [](const std::string& section) {
    return llmq::gateway::parse_gateway_settings(std::string(kConfig) + section);
  };
  // Defaults: loopback, no keys -> one warning, naming the address and the way out.
  auto open = llmq::gateway::startup_warnings(settings("gateway:\n  port: 8080\n").gateway);
  ASSERT_EQ(open.size(), 1u);
  EXPECT_NE(open[0].find("no gateway.client_keys: anyone who can reach 127.0.0.1:8080"),
            std::string::npos)
      << open[0];
  // Beyond loopback: the clear-text warning too.
  auto wide = llmq::gateway::startup_warnings(
      settings("gateway:\n  listen_address: 0.0.0.0\n  client_keys:\n    - {key: k1}\n").gateway);
  ASSERT_EQ(wide.size(), 1u);
  EXPECT_NE(wide[0].find("listening on 0.0.0.0 without TLS"), std::string::npos) << wide[0];
  // Keys on loopback: silent.
  EXPECT_TRUE(llmq::gateway::startup_warnings(
                  settings("gateway:\n  client_keys:\n    - {key: k1}\n").gateway)
                  .empty());
  // metrics_public with keys is said out loud.
  auto metrics = llmq::gateway::startup_warnings(
      settings("gateway:\n  metrics_public: true\n  client_keys:\n    - {key: k1}\n").gateway);
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_NE(metrics[0].find("metrics_public"), std::string::npos);
  // require_client_keys without keys refuses to start.
  const auto strict = settings("gateway:\n  require_client_keys: true\n").gateway;
  EXPECT_THROW((void)llmq::gateway::startup_warnings(strict), llmq::ConfigError);
  // admin_keys: a list of non-empty strings.
  EXPECT_EQ(settings("gateway:\n  admin_keys: [ops-1, ops-2]\n").gateway.admin_keys,
            (std::vector<std::string>{"ops-1", "ops-2"}));
  EXPECT_THROW((void)settings("gateway:\n  admin_keys: [\"\"]\n"), llmq::ConfigError);
  EXPECT_THROW((void)settings("gateway:\n  admin_keys: ops\n"), llmq::ConfigError);
}

TEST(GatewayConfig, TlsAndAccessLogKeys) {
  const auto settings = [](const std::string& section) {
    return llmq::gateway::parse_gateway_settings(std::string(kConfig) + section);
  };
  const auto g = settings(
                     "gateway:\n  listen_address: 0.0.0.0\n  client_keys:\n    - {key: k1}\n"
                     "  tls_cert_file: /etc/llmq/cert.pem\n  tls_key_file: /etc/llmq/key.pem\n"
                     "  tls_client_ca_file: /etc/llmq/clients.pem\n  access_log: \"-\"\n")
                     .gateway;
  EXPECT_TRUE(g.tls());
  EXPECT_EQ(g.tls_cert_file, "/etc/llmq/cert.pem");
  EXPECT_EQ(g.tls_key_file, "/etc/llmq/key.pem");
  EXPECT_EQ(g.tls_client_ca_file, "/etc/llmq/clients.pem");
  EXPECT_EQ(g.access_log, "-");
  // Beyond loopback with TLS: no clear-text warning.
  EXPECT_TRUE(llmq::gateway::startup_warnings(g).empty());
  const auto fails_with = [&](const std::string& section, const std::string& text) {
    try {
      (void)settings(section);
      ADD_FAILURE() << "accepted: " << section;
    } catch (const llmq::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  // Half a pair, named with the line of the half that is there.
  fails_with("gateway:\n  tls_cert_file: /c.pem\n", "gateway.tls_key_file: is required");
  fails_with("gateway:\n  tls_cert_file: /c.pem\n", "(line ");
  fails_with("gateway:\n  tls_key_file: /k.pem\n", "gateway.tls_cert_file: is required");
  fails_with("gateway:\n  tls_client_ca_file: /ca.pem\n",
             "gateway.tls_client_ca_file: needs gateway.tls_cert_file");
  fails_with("gateway:\n  access_log: [a]\n", "gateway.access_log");
}

namespace {

TEST_F(GatewayTest, ReconfigureSwapsKeysAndPerRequestSettingsForTheNextRequest) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  start(gc);
  ASSERT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-a"}}).status, 200);
  EXPECT_EQ(get("/metrics", {}).status, 401);

  llmq::gateway::GatewayConfig next;
  next.client_keys.push_back(client_key("key-b", ""));
  next.user_header = "X-Team";
  next.max_json_depth = 3;
  next.metrics_public = true;
  gateway_->reconfigure(next);
  EXPECT_EQ(gateway_->config()->user_header, "x-team");
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-a"}}).status, 401);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-b"}}).status, 400)
      << "no user: key-b is bound to none and x-user-id is no longer the user header";
  EXPECT_EQ(
      post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-b"}, {"x-team", "t1"}}).status,
      200);
  json deep = chat("gpt-4o");
  deep["metadata"] = json::parse(R"({"a":{"b":{"c":1}}})");  // depth 4 with the body
  const Reply too_deep =
      post("/v1/chat/completions", deep, {{"api-key", "key-b"}, {"x-team", "t1"}});
  EXPECT_EQ(too_deep.status, 400);
  EXPECT_EQ(too_deep.j()["error"]["code"], "json_too_deep");
  EXPECT_EQ(get("/metrics", {}).status, 200);  // metrics_public: true
}

TEST_F(GatewayTest, AdminReloadNeedsAnAdminKeyAndAnswersWithTheOutcome) {
  std::atomic<int> calls{0};
  reload_ = [&calls]() -> asio::awaitable<llmq::gateway::ReloadOutcome> {
    llmq::gateway::ReloadOutcome o;
    switch (calls.fetch_add(1)) {
      case 0:
        o.ok = true;
        o.warnings.push_back("gateway.port changed: it takes effect at a restart");
        break;
      case 1:
        o.error = "gateway.yaml: gateway.admin_kyes: unknown key (line 3)";
        break;
      default:
        o.busy = true;
        o.error = "a configuration reload is already in progress";
    }
    co_return o;
  };
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  start(gc);
  auto admin_post = [&](std::map<std::string, std::string> headers) {
    auto s = connect();
    return send(s, http::verb::post, "/admin/reload", "", std::move(headers));
  };
  EXPECT_EQ(admin_post({}).status, 401);
  EXPECT_EQ(admin_post({{"api-key", "key-a"}}).status, 401) << "a client key is no admin key";
  EXPECT_EQ(get("/admin/reload").status, 405);
  EXPECT_EQ(calls.load(), 0);

  const Reply ok = admin_post({{"authorization", std::string("Bearer ") + kAdminKey}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.j()["reloaded"], true);
  EXPECT_EQ(ok.j()["deployments"], 3);
  EXPECT_EQ(ok.j()["warnings"][0], "gateway.port changed: it takes effect at a restart");

  const Reply bad = admin_post({{"api-key", kAdminKey}});
  ASSERT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.j()["error"]["code"], "invalid_config");
  EXPECT_NE(bad.j()["error"]["message"].get<std::string>().find("admin_kyes: unknown key (line 3)"),
            std::string::npos);
  EXPECT_NE(bad.j()["error"]["message"].get<std::string>().find("running configuration stays"),
            std::string::npos);

  const Reply busy = admin_post({{"api-key", kAdminKey}});
  EXPECT_EQ(busy.status, 409);
  EXPECT_EQ(busy.j()["error"]["code"], "reload_in_progress");
  EXPECT_EQ(calls.load(), 3);
}

TEST_F(GatewayTest, WithoutAReloaderThereIsNoAdminReloadRoute) {
  start();
  auto s = connect();
  EXPECT_EQ(send(s, http::verb::post, "/admin/reload", "", {{"api-key", kAdminKey}}).status, 404);
}

TEST(GatewayReload, RestartOnlyKeysKeepTheirRunningValuesAndAreNamed) {
  llmq::gateway::GatewayConfig running;
  running.tls_cert_file = "/etc/llmq/a.pem";
  running.tls_key_file = "/etc/llmq/a.key";
  llmq::gateway::GatewayConfig next = running;
  EXPECT_TRUE(llmq::gateway::keep_restart_only(running, next).empty());

  next.port = 9999;
  next.max_connections = 7;
  next.redis_url = "redis://10.0.0.1:6379/0";
  next.access_log = "/var/log/llmq/other.log";
  next.upstream_timeout = std::chrono::seconds(5);
  next.client_keys.push_back(client_key("key-new", ""));  // reloadable: kept as in the file
  next.admin_keys = {"admin-new"};
  next.max_json_depth = 9;
  next.tls_cert_file = "/etc/llmq/b.pem";  // TLS stays on: the new files are used
  next.tls_key_file = "/etc/llmq/b.key";
  const std::vector<std::string> w = llmq::gateway::keep_restart_only(running, next);
  std::string all;
  for (const std::string& x : w) all += x + "\n";
  EXPECT_EQ(w.size(), 5u) << all;
  for (const char* key : {"gateway.port", "gateway.max_connections", "gateway.redis_url",
                          "gateway.access_log", "gateway.upstream_timeout_seconds"})
    EXPECT_NE(all.find(std::string(key) + " changed: it takes effect at a restart"),
              std::string::npos)
        << key;
  EXPECT_EQ(all.find("10.0.0.1"), std::string::npos) << "values are not shown";
  EXPECT_EQ(next.port, running.port);
  EXPECT_EQ(next.max_connections, running.max_connections);
  EXPECT_EQ(next.redis_url, running.redis_url);
  EXPECT_EQ(next.access_log, running.access_log);
  EXPECT_EQ(next.upstream_timeout, running.upstream_timeout);
  ASSERT_EQ(next.client_keys.size(), 1u);
  EXPECT_EQ(next.client_keys[0].key, "key-new");
  EXPECT_EQ(next.admin_keys, std::vector<std::string>{"admin-new"});
  EXPECT_EQ(next.max_json_depth, 9u);
  EXPECT_EQ(next.tls_cert_file, "/etc/llmq/b.pem");

  llmq::gateway::GatewayConfig clear = running;  // TLS turned off: only at a restart
  clear.tls_cert_file.clear();
  clear.tls_key_file.clear();
  const std::vector<std::string> off = llmq::gateway::keep_restart_only(running, clear);
  ASSERT_EQ(off.size(), 1u);
  EXPECT_NE(off[0].find("gateway.tls_cert_file"), std::string::npos);
  EXPECT_TRUE(clear.tls());
}

/// The fixture's configuration (kConfig) with `extra` deployment lines appended to the
/// azure_oai_models list, and `gateway` as the gateway section.
std::string reload_file(const std::string& extra, const std::string& gateway) {
  std::string yaml = kConfig;
  yaml.insert(yaml.find("      - {unique_model_id: \"ada\""), extra);
  return yaml + "gateway:\n" + gateway;
}

TEST_F(GatewayTest, ConfigReloaderSwitchesToAUsableFileAndKeepsTheRunningOneOtherwise) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("llmq-gateway-reload-" + std::to_string(::getpid()) + ".yaml");
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  start(gc);
  llmq::gateway::GatewaySettings running;
  running.llm = llmq::gateway::parse_gateway_settings(kConfig).llm;
  running.gateway = *gateway_->config();
  llmq::gateway::ConfigReloader reloader(path, running, std::nullopt, *queue_, *gateway_, nullptr);
  auto reload = [&] {
    std::promise<llmq::gateway::ReloadOutcome> p;
    asio::co_spawn(io_, reloader.reload(),
                   [&p](std::exception_ptr, llmq::gateway::ReloadOutcome o) { p.set_value(o); });
    return p.get_future().get();
  };
  const std::string north =
      "      - {unique_model_id: \"gpt-4o-north\", model_name_in_azure: \"gpt-4o\", "
      "deployment_name_in_azure: \"north\", model_type: \"chat\", req_per_min: 100000, "
      "tokens_per_min: 100000000}\n";
  std::ofstream(path) << reload_file(north,
                                     "  port: 0\n  threads: 1\n  read_timeout_seconds: 2\n  "
                                     "admin_keys: [test-admin-key]\n  client_keys:\n"
                                     "    - {key: key-z, user: zed}\n  max_connections: 5\n");
  const llmq::gateway::ReloadOutcome ok = reload();
  ASSERT_TRUE(ok.ok) << ok.error;
  ASSERT_EQ(ok.warnings.size(), 1u);
  EXPECT_NE(ok.warnings[0].find("gateway.max_connections"), std::string::npos);
  EXPECT_EQ(queue_->deployments().size(), 4u);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o-north"), {{"api-key", "key-z"}}).status, 200);
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o"), {{"api-key", "key-a"}}).status, 401);
  EXPECT_EQ(metric("llmq_gateway_config_reloads_total{result=\"success\"}"), 1);
  EXPECT_EQ(metric("llmq_gateway_config_last_reload_successful"), 1);
  const double first_success = metric("llmq_gateway_config_last_reload_success_timestamp_seconds");
  EXPECT_GT(first_success, 1.7e9);

  std::ofstream(path) << reload_file("", "  admin_keys: [test-admin-key]\n  client_kyes: []\n");
  const llmq::gateway::ReloadOutcome bad = reload();
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.error.find("gateway.client_kyes: unknown key"), std::string::npos) << bad.error;
  EXPECT_EQ(queue_->deployments().size(), 4u) << "the running configuration stays";
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o-north"), {{"api-key", "key-z"}}).status, 200);
  EXPECT_EQ(metric("llmq_gateway_config_reloads_total{result=\"failure\"}"), 1);
  EXPECT_EQ(metric("llmq_gateway_config_last_reload_successful"), 0);
  EXPECT_EQ(metric("llmq_gateway_config_last_reload_success_timestamp_seconds"), first_success);

  std::filesystem::remove(path);
  const llmq::gateway::ReloadOutcome gone = reload();
  EXPECT_FALSE(gone.ok);
  EXPECT_NE(gone.error.find("cannot read file"), std::string::npos) << gone.error;

  std::ofstream(path) << reload_file(
      "", "  admin_keys: [test-admin-key]\n  require_client_keys: true\n");
  const llmq::gateway::ReloadOutcome unkeyed = reload();
  EXPECT_FALSE(unkeyed.ok) << "require_client_keys without client keys is not taken";
  EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o-north"), {{"api-key", "key-z"}}).status, 200);
  std::filesystem::remove(path);
}

}  // namespace

namespace {

TEST_F(GatewayTest, StreamsFromSeveralThreadsArriveWhole) {
  io_threads_ = 2;  // each connection on its own strand, the queue on its own
  start();
  constexpr int kClients = 6;
  constexpr int kEach = 5;
  std::string expected;
  for (int i = 0; i < 20; ++i) expected += "data: {\"i\":" + std::to_string(i) + "}\n\n";
  expected += "data: [DONE]\n\n";
  std::atomic<int> whole{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      auto s = connect();
      for (int i = 0; i < kEach; ++i) {
        json body = streamed_chat(20);
        body["stream_gap_ms"] = 1;
        const std::string user = "s" + std::to_string(c) + "-" + std::to_string(i);
        const Reply r =
            send(s, http::verb::post, "/v1/chat/completions", body.dump(), {{"x-user-id", user}});
        if (r.status == 200 && r.body == expected) whole.fetch_add(1);
      }
    });
  // Meanwhile one client leaves in the middle of its stream, again and again.
  std::thread leaver([&] {
    for (int i = 0; i < 5; ++i) {
      auto s = connect();
      json body = streamed_chat(1000);
      body["stream_gap_ms"] = 2;
      write_chat_body(s, body, "leaver-" + std::to_string(i));
      (void)read_until(s, "data: {\"i\":3}");
    }
  });
  for (std::thread& t : clients) t.join();
  leaver.join();
  EXPECT_EQ(whole.load(), kClients * kEach);
  EXPECT_TRUE(wait_metric("llmq_gateway_streams_open", 0));
  EXPECT_TRUE(wait_metric("llmq_in_flight", 0));
  EXPECT_EQ(upstream_->cancelled.load(), 5);
}

TEST_F(GatewayTest, ServesManyConnectionsFromSeveralThreads) {
  io_threads_ = 2;  // gateway.threads: 2, each connection on its own strand
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", ""));
  start(gc, 1ms);
  constexpr int kClients = 8;
  constexpr int kEach = 25;
  std::atomic<int> ok{0};
  std::atomic<int> other{0};
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      auto s = connect();
      for (int i = 0; i < kEach; ++i) {
        const std::string user = "u" + std::to_string(c) + "-" + std::to_string(i);
        const Reply r = send(s, http::verb::post, "/v1/chat/completions", chat("gpt-4o").dump(),
                             {{"api-key", "key-a"}, {"x-user-id", user}});
        (r.status == 200 ? ok : other).fetch_add(1);
      }
    });
  // Meanwhile: the per-request settings swapped again and again, /metrics and /stats read.
  std::thread operators([&] {
    llmq::gateway::GatewayConfig next = *gateway_->config();
    while (!done.load()) {
      next.max_json_depth = next.max_json_depth == 64 ? 65 : 64;
      gateway_->reconfigure(next);
      EXPECT_EQ(get("/metrics").status, 200);
      EXPECT_EQ(get("/stats").status, 200);
      reads.fetch_add(2);
      std::promise<void> sampled;  // what the /stats ticker does once a second
      asio::co_spawn(io_, gateway_->record_sample(),
                     [&sampled](std::exception_ptr) { sampled.set_value(); });
      sampled.get_future().wait();
    }
  });
  for (std::thread& t : clients) t.join();
  done.store(true);
  operators.join();
  EXPECT_EQ(ok.load(), kClients * kEach);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(upstream_->calls.load(), kClients * kEach);
  EXPECT_EQ(metric("llmq_gateway_http_responses_total{status=\"200\"}"),
            kClients * kEach + reads.load());
  // Every client read its answer before closing: none of them left early.
  EXPECT_EQ(metric("llmq_gateway_client_disconnects_total"), 0);
}

}  // namespace

// ---- the dashboard and GET /stats (docs/dashboard.md) ----------------------------------------

namespace {
/// Polls /stats (with the admin key) until `ready(document)`, at most 3 s.
template <class F>
json wait_stats(F get_stats, std::function<bool(const json&)> ready) {
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  json doc = get_stats();
  while (!ready(doc) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    doc = get_stats();
  }
  return doc;
}

const json* find_user(const json& list, const std::string& user) {
  for (const json& u : list)
    if (u.value("user", "") == user) return &u;
  return nullptr;
}
}  // namespace

TEST_F(GatewayTest, StatsDocumentHasEveryDocumentedField) {
  start();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(post("/v1/chat/completions", chat("gpt-4o")).status, 200);
  // bob's limit is 5 a minute: 5 admitted, 2 refused.
  for (int i = 0; i < 7; ++i) post("/v1/chat/completions", chat("gpt-4o"), {{"x-user-id", "bob"}});
  std::promise<void> sampled;
  asio::co_spawn(io_, gateway_->record_sample(), [&](std::exception_ptr) { sampled.set_value(); });
  sampled.get_future().wait();

  const json doc = wait_stats([&] { return get("/stats").j(); },
                              [](const json& d) {
                                const json* bob = find_user(d["users"]["top_refused"], "bob");
                                return bob != nullptr && (*bob)["refused"] == 2 &&
                                       d["latency"]["total"]["count"] == 10;
                              });
  const Reply r = get("/stats");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.header("cache-control"), "no-store");

  EXPECT_EQ(doc["version"], 1);
  EXPECT_GT(doc["time"].get<double>(), 1.7e9);
  const json& q = doc["queue"];
  for (const char* k : {"depth", "in_flight", "admitted", "completed"})
    EXPECT_TRUE(q[k].is_number_unsigned()) << k;
  EXPECT_EQ(q["admitted"], 8);
  EXPECT_EQ(q["completed"], 8);
  EXPECT_EQ(q["refused"]["user_limit"], 2);
  for (const char* k : {"user_queue_full", "predicted_timeout", "queue_full", "invalid",
                        "queue_timeout", "cancelled", "closed", "store_unavailable"})
    EXPECT_EQ(q["refused"][k], 0) << k;
  for (const char* k : {"high", "normal", "low"}) EXPECT_EQ(q["depth_by_priority"][k], 0) << k;

  ASSERT_TRUE(doc["samples"].is_array());
  ASSERT_GE(doc["samples"].size(), 1u);
  const json& s = doc["samples"].back();
  EXPECT_GT(s["t"].get<double>(), 1.7e9);
  EXPECT_TRUE(s["depth"].is_number_unsigned());
  EXPECT_TRUE(s["in_flight"].is_number_unsigned());

  ASSERT_EQ(doc["deployments"].size(), 3u);
  std::uint64_t requests = 0;
  for (const json& d : doc["deployments"]) {
    for (const char* k : {"name", "model", "type"}) EXPECT_TRUE(d[k].is_string()) << k;
    for (const char* k : {"priority", "weight", "rpm_limit", "rpm_used", "tpm_limit", "tpm_used",
                          "requests", "failures", "throttled_429", "paced", "spilled", "tokens"})
      EXPECT_TRUE(d[k].is_number_integer()) << d["name"] << " " << k;
    EXPECT_EQ(d["backoff"]["active"], false);
    EXPECT_EQ(d["backoff"]["remaining_seconds"], 0.0);
    EXPECT_EQ(d["rpm_limit"], 100000);
    EXPECT_EQ(d["weight"], 100000);  // req_per_min, none configured
    EXPECT_EQ(d["paced"], 0);
    requests += d["requests"].get<std::uint64_t>();
  }
  EXPECT_EQ(doc["deployments"][0]["name"], "gpt-4o-east");
  EXPECT_EQ(doc["deployments"][0]["model"], "gpt-4o");
  EXPECT_EQ(doc["deployments"][0]["type"], "chat");
  EXPECT_EQ(doc["deployments"][2]["type"], "embeddings");
  EXPECT_EQ(requests, 8u);
  EXPECT_EQ(
      doc["deployments"][0]["rpm_used"].get<int>() + doc["deployments"][1]["rpm_used"].get<int>(),
      8);

  const json* alice = find_user(doc["users"]["top_admitted"], "alice");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ((*alice)["admitted"], 3);
  EXPECT_EQ((*alice)["refused"], 0);
  EXPECT_EQ(doc["users"]["top_admitted"][0]["user"], "bob");  // 5 admitted, most first
  EXPECT_EQ(doc["users"]["top_refused"].size(), 1u);          // alice was never refused
  EXPECT_EQ(doc["users"]["tracked"], 2);
  EXPECT_EQ(doc["users"]["forgotten"], 0);

  for (const char* k : {"queue_wait", "upstream", "total"}) {
    const json& l = doc["latency"][k];
    EXPECT_LE(l["p50"].get<double>(), l["p90"].get<double>()) << k;
    EXPECT_LE(l["p90"].get<double>(), l["p99"].get<double>()) << k;
    EXPECT_GE(l["p50"].get<double>(), 0.0) << k;
  }
  EXPECT_EQ(doc["latency"]["queue_wait"]["count"], 8);
  EXPECT_EQ(doc["latency"]["total"]["count"], 10);  // the refused ones too
}

TEST_F(GatewayTest, StatsNeedAClientOrAdminKeyOnceKeysExist) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-a", "alice"));
  start(gc);
  EXPECT_EQ(get("/stats", {}).status, 401);
  EXPECT_EQ(get("/stats", {{"api-key", "wrong"}}).status, 401);
  EXPECT_EQ(get("/stats", {{"authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(get("/stats", {{"api-key", "key-a"}}).status, 200);
  EXPECT_EQ(get("/stats", {{"authorization", "Bearer key-a"}}).status, 200);
  EXPECT_EQ(get("/stats", {{"authorization", std::string("Bearer ") + kAdminKey}}).status, 200);
  EXPECT_EQ(get("/stats", {{"api-key", kAdminKey}}).status, 200);
}

TEST(GatewayConfig, StatsAreOpenOnlyWithoutAnyKey) {
  llmq::gateway::GatewayConfig gc;
  EXPECT_FALSE(gc.stats_need_key());
  gc.admin_keys.push_back("admin");
  EXPECT_TRUE(gc.stats_need_key());
  gc.admin_keys.clear();
  gc.client_keys.push_back(client_key("k", "u"));
  EXPECT_TRUE(gc.stats_need_key());
}

TEST_F(GatewayTest, DashboardIsAStaticPageWithStrictHeadersAndNoKey) {
  llmq::gateway::GatewayConfig gc;
  gc.client_keys.push_back(client_key("key-secret-a", "alice"));
  start(gc);
  const Reply page = get("/dashboard", {});
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.header("Content-Type"), "text/html; charset=utf-8");
  const std::string csp = page.header("content-security-policy");
  EXPECT_EQ(
      csp.rfind("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'", 0),
      0u)
      << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos);
  EXPECT_EQ(page.header("x-content-type-options"), "nosniff");
  EXPECT_EQ(page.header("cache-control"), "no-store");
  EXPECT_NE(page.body.find("<script src=\"/dashboard/app.js\""), std::string::npos);
  EXPECT_EQ(page.body.find("<script>"), std::string::npos);  // nothing inline
  EXPECT_EQ(page.body.find("key-secret-a"), std::string::npos);
  EXPECT_EQ(page.body.find(kAdminKey), std::string::npos);

  const Reply js = get("/dashboard/app.js", {});
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.header("Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_NE(js.body.find("fetch(\"/stats\""), std::string::npos);
  EXPECT_EQ(js.body.find("innerHTML"), std::string::npos);  // server values go in as text
  const Reply css = get("/dashboard/app.css", {});
  EXPECT_EQ(css.status, 200);
  EXPECT_EQ(css.header("Content-Type"), "text/css; charset=utf-8");
  EXPECT_EQ(get("/dashboard/other.js", {}).status, 404);
  EXPECT_EQ(post("/dashboard", json::object(), {}).status, 404);
}

TEST(UserCounts, TopListsAndMemoryStayBoundedWithManyUsers) {
  llmq::gateway::UserCounts counts;
  for (int i = 0; i < 20'000; ++i) {
    counts.count("user-" + std::to_string(i), i % 3 != 0);
    if (i % 10 == 0) counts.count("heavy-admitted", true);
    if (i % 20 == 0) counts.count("heavy-refused", false);
  }
  EXPECT_EQ(counts.tracked(), llmq::gateway::UserCounts::kMaxUsers);
  EXPECT_GT(counts.forgotten(), 0u);
  const auto admitted = counts.top_admitted(10);
  ASSERT_EQ(admitted.size(), 10u);
  EXPECT_EQ(admitted[0].user, "heavy-admitted");
  EXPECT_EQ(admitted[0].admitted, 2000u);
  for (std::size_t i = 1; i < admitted.size(); ++i)
    EXPECT_GE(admitted[i - 1].admitted, admitted[i].admitted);
  const auto refused = counts.top_refused(10);
  ASSERT_EQ(refused.size(), 10u);
  EXPECT_EQ(refused[0].user, "heavy-refused");
  EXPECT_EQ(refused[0].refused, 1000u);
  EXPECT_TRUE(counts.top_admitted(0).empty());
}

TEST(GatewayMetrics, DashboardViewBoundsItsUsersAndReadsPercentiles) {
  llmq::gateway::Metrics m;
  const auto t0 = llmq::WallTime(std::chrono::seconds(1'700'000'000));
  for (int i = 0; i < 3000; ++i) {
    llmq::TelemetryData t;
    t.user_id = "u" + std::to_string(i);
    t.received_at = t0;
    t.queued_at = t0;
    t.dispatched_at = t0 + std::chrono::milliseconds(i < 1500 ? 1 : 200);
    t.completed_at = t.dispatched_at + 2ms;
    t.queue_wait = std::chrono::duration_cast<std::chrono::microseconds>(t.dispatched_at - t0);
    t.execution_time = 2ms;
    m.observe(t);
  }
  const llmq::gateway::DashboardView v = m.dashboard_view(10);
  EXPECT_EQ(v.top_admitted.size(), 10u);
  EXPECT_TRUE(v.top_refused.empty());
  EXPECT_EQ(v.users_tracked, llmq::gateway::UserCounts::kMaxUsers);
  EXPECT_EQ(v.users_forgotten, 2000u);
  EXPECT_EQ(v.queue_wait.count, 3000u);
  // Half waited 1 ms (bucket 0.0005..0.001), half 200 ms (bucket 0.1..0.25).
  EXPECT_GT(v.queue_wait.p50, 0.0005);
  EXPECT_LE(v.queue_wait.p50, 0.001);
  EXPECT_GT(v.queue_wait.p90, 0.1);
  EXPECT_LE(v.queue_wait.p90, 0.25);
  EXPECT_LE(v.queue_wait.p99, 0.25);
}

TEST(GatewayMetrics, HistogramQuantiles) {
  llmq::gateway::Histogram h({1, 2, 4});
  EXPECT_EQ(h.quantile(0.5), 0);                // empty
  for (int i = 0; i < 10; ++i) h.observe(1.5);  // all in (1, 2]
  EXPECT_DOUBLE_EQ(h.quantile(0.5), 1.5);
  EXPECT_DOUBLE_EQ(h.quantile(1.0), 2);
  h.observe(100);  // past the last bound: reported as the last bound
  EXPECT_DOUBLE_EQ(h.quantile(1.0), 4);
}

TEST(StatsHistory, KeepsTheLastSamplesOldestFirst) {
  llmq::gateway::StatsHistory history(3);
  for (std::size_t i = 0; i < 5; ++i)
    history.record(llmq::gateway::QueueSample{static_cast<double>(i), i, i * 2});
  const auto s = history.samples();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].time, 2.0);
  EXPECT_EQ(s[2].depth, 4u);
  EXPECT_EQ(s[2].in_flight, 8u);
}

TEST(StatsDocument, DeploymentsInBackoffAndPaced) {
  llmq::QueueStats stats;
  llmq::DeploymentStats d;
  d.unique_model_id = "x";
  d.req_per_min = 60;
  d.requests_in_window = 61;
  d.backoff_remaining = std::chrono::milliseconds(2500);
  d.throttled = 3;
  d.failures = 4;
  d.paced = 7;
  stats.deployments.push_back(d);
  llmq::gateway::DashboardView view;
  view.tokens["x"] = 99;
  const json doc = llmq::gateway::stats_document(stats, {}, view, {}, 1.5);
  EXPECT_EQ(doc["time"], 1.5);
  EXPECT_TRUE(doc["samples"].empty());
  const json& x = doc["deployments"][0];
  EXPECT_EQ(x["backoff"]["active"], true);
  EXPECT_EQ(x["backoff"]["remaining_seconds"], 2.5);
  EXPECT_EQ(x["throttled_429"], 3);
  EXPECT_EQ(x["failures"], 4);
  EXPECT_EQ(x["paced"], 7);
  EXPECT_EQ(x["tokens"], 99);
  EXPECT_EQ(x["rpm_used"], 61);
  EXPECT_EQ(x["model"], "");  // not in the (empty) configuration
}
