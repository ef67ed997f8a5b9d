// End to end: LLMQueue -> register_default_executors -> HttpClient -> the mock Azure
// server (tools/mock_azure), all in process over loopback. The mock runs on its own
// io_context thread; the queue and its HTTP client run on the test thread.
//
// Covered: chat, embeddings, streamed chat and a RAG executor (call_embeddings + call_chat)
// with classic and v1 Azure URLs and an OpenAI-compatible custom model; Retry-After
// honoured per deployment; retries on the peer deployment and bounded retries when all
// fail; 4xx not retried; timeouts, resets, malformed and truncated bodies; pacing to the
// mock's Azure-style 1 s window; the API key kept out of logs and telemetry.

#include <llmq/llmq.hpp>
#include <llmq/mock/server.hpp>
#include <llmq/providers.hpp>

#include <gtest/gtest.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>
#include "../support/log_capture.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
using asio::awaitable;
using llmq::mock::DeploymentType;
using llmq::mock::FaultConfig;
using llmq::mock::MockAzureServer;
using nlohmann::json;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

const std::string kApiKey = "sk-E2E-SECRET-5d8c1f0a9b7e4e2c";
const std::string kWrongKey = "sk-E2E-WRONG-KEY-0c4e9a17f2b3";

// ---- the mock, on its own thread ---------------------------------------------------------

llmq::mock::DeploymentConfig mock_deployment(std::string name, std::string model,
                                             DeploymentType type = DeploymentType::chat,
                                             std::int64_t rpm = 0, std::int64_t tpm = 0) {
  llmq::mock::DeploymentConfig d;
  d.name = std::move(name);
  d.model = std::move(model);
  d.type = type;
  d.req_per_min = rpm;
  d.tokens_per_min = tpm;
  return d;
}

llmq::mock::MockConfig mock_config(std::vector<llmq::mock::DeploymentConfig> deployments,
                                   double latency_ms = 2) {
  llmq::mock::MockConfig cfg;
  cfg.api_key = kApiKey;
  cfg.latency.distribution = llmq::mock::LatencyConfig::Distribution::fixed;
  cfg.latency.ms = latency_ms;
  cfg.embedding_dimensions = 8;
  cfg.deployments = std::move(deployments);
  return cfg;
}

/// MockAzureServer on 127.0.0.1:0, served by one thread of its own io_context.
class MockRunner {
 public:
  explicit MockRunner(llmq::mock::MockConfig cfg) : server_(io_.get_executor(), std::move(cfg)) {
    server_.listen("127.0.0.1", 0);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~MockRunner() {
    server_.stop();
    thread_.join();
  }
  MockRunner(const MockRunner&) = delete;
  MockRunner& operator=(const MockRunner&) = delete;

  MockAzureServer& operator*() { return server_; }
  MockAzureServer* operator->() { return &server_; }

 private:
  asio::io_context io_;
  MockAzureServer server_;  // destroyed before io_
  std::thread thread_;
};

FaultConfig no_faults() { return FaultConfig{}; }

FaultConfig error_fault(unsigned status) {
  FaultConfig f;
  f.error_rate[status] = 1.0;
  return f;
}

FaultConfig reset_fault() {
  FaultConfig f;
  f.reset_rate = 1.0;
  return f;
}

FaultConfig stall_fault() {
  FaultConfig f;
  f.stall_rate = 1.0;
  return f;
}

FaultConfig malformed_fault() {
  FaultConfig f;
  f.malformed_rate = 1.0;
  return f;
}

FaultConfig truncated_fault() {
  FaultConfig f;
  f.truncated_rate = 1.0;
  return f;
}

FaultConfig throttle_fault(std::chrono::milliseconds retry_after) {
  FaultConfig f;
  f.force_429 = true;
  f.force_429_retry_after = retry_after;
  return f;
}

// ---- llmq configuration ------------------------------------------------------------------

llmq::AzureModelConfig azure_model(std::string id, std::string deployment_name,
                                   llmq::ModelType type = llmq::ModelType::chat,
                                   std::int64_t rpm = 1'000'000, std::int64_t tpm = 1'000'000'000,
                                   std::chrono::milliseconds error_backoff = 60s) {
  llmq::AzureModelConfig m;
  m.unique_model_id = std::move(id);
  m.model_name_in_azure = type == llmq::ModelType::embeddings ? "text-embedding-3-small" : "gpt-4o";
  m.deployment_name_in_azure = std::move(deployment_name);
  m.model_type = type;
  m.req_per_min = rpm;
  m.tokens_per_min = tpm;
  m.error_backoff = error_backoff;
  return m;
}

llmq::AzureOpenAIConfig azure_group(const std::string& endpoint,
                                    std::vector<llmq::AzureModelConfig> models,
                                    std::string api_key = kApiKey) {
  llmq::AzureOpenAIConfig g;
  g.api_key = std::move(api_key);
  g.api_version = "2024-10-21";
  g.azure_endpoint = endpoint;
  g.azure_oai_models = std::move(models);
  return g;
}

llmq::LLMConfig llmq_config(std::vector<llmq::AzureOpenAIConfig> groups,
                            std::vector<llmq::CustomModelConfig> custom = {}) {
  llmq::LLMConfig c;
  c.azure_open_ai = std::move(groups);
  c.custom_models = std::move(custom);
  c.user_limits.max_num_requests_in_time_window = 1'000'000;
  c.user_limits.time_window = 60s;
  c.scheduler_limits.max_queue_size = 10'000;
  c.scheduler_limits.request_timeout = 30s;
  return c;
}

llmq::HttpClientOptions client_options(std::chrono::milliseconds request_timeout = 5s) {
  llmq::HttpClientOptions o;
  o.connect_timeout = 2s;
  o.request_timeout = request_timeout;
  return o;
}

/// The stack under test: LLMQueue with the default executors on an HttpClient, both on
/// `io` (run by the test thread), telemetry in memory.
struct Stack {
  asio::io_context io;
  std::shared_ptr<llmq::InMemoryTelemetryStore> telemetry =
      std::make_shared<llmq::InMemoryTelemetryStore>();
  std::shared_ptr<llmq::HttpClient> client;
  std::unique_ptr<llmq::LLMQueue> queue;

  explicit Stack(llmq::LLMConfig config, llmq::QueueOptions options = {},
                 llmq::ProviderOptions providers = {},
                 llmq::HttpClientOptions http = client_options()) {
    options.telemetry_store = telemetry;
    options.telemetry_flush_interval = 10ms;
    client = std::make_shared<llmq::HttpClient>(io.get_executor(), http);
    queue = std::make_unique<llmq::LLMQueue>(
        io.get_executor(), std::move(config),
        std::map<std::string, std::shared_ptr<llmq::RequestExecutor>>{}, std::move(options));
    llmq::register_default_executors(*queue, client, std::move(providers));
  }
  ~Stack() {
    queue.reset();
    client.reset();
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
};

/// Runs `body` on `io` until it completes (at most `limit`), rethrowing its exception.
void run(asio::io_context& io, std::function<awaitable<void>()> body,
         std::chrono::milliseconds limit = 20s) {
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  const auto deadline = Steady::now() + limit;
  io.restart();
  while (!done && Steady::now() < deadline) io.run_one_until(deadline);
  ASSERT_TRUE(done) << "test coroutine did not finish within " << limit.count() << " ms";
  if (error) std::rethrow_exception(error);
}

awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

awaitable<void> sleep_until(Steady::time_point t) {
  asio::steady_timer timer(co_await asio::this_coro::executor, t);
  co_await timer.async_wait(asio::use_awaitable);
}

// ---- request bodies and preferences --------------------------------------------------------

json chat_body(const std::string& text = "Hello, world!", int max_tokens = 100) {
  json msg = json::object();
  msg["role"] = "user";
  msg["content"] = text;
  json b = json::object();
  b["messages"] = json::array({msg});
  b["max_tokens"] = max_tokens;
  return b;
}

json stream_chat_body(const std::string& text) {
  json b = chat_body(text);
  b["stream"] = true;
  return b;
}

json embeddings_body() {
  json b = json::object();
  b["input"] = json::array({"alpha", "beta gamma"});
  return b;
}

json rag_body(const std::string& question) {
  json b = json::object();
  b["question"] = question;
  return b;
}

llmq::ModelPreferences llm_pin(const std::string& id) {
  llmq::ModelPreferences p;
  p.specific_llm_model = id;
  return p;
}

llmq::ModelPreferences embeddings_only(const std::string& id) {
  llmq::ModelPreferences p;
  p.require_llm_model = false;
  p.require_embedding_model = true;
  p.specific_embedding_model = id;
  return p;
}

llmq::ModelPreferences rag_prefs(const std::string& llm, const std::string& emb) {
  llmq::ModelPreferences p;
  p.require_llm_model = true;
  p.require_embedding_model = true;
  p.specific_llm_model = llm;
  p.specific_embedding_model = emb;
  return p;
}

std::string content_of(const json& chat) {
  return chat.at("choices").at(0).at("message").at("content").get<std::string>();
}

std::string error_code(const llmq::Response& r) {
  if (!r.body.is_object() || !r.body.contains("error")) return "<no error object>";
  const json& e = r.body["error"];
  if (!e.contains("code")) return "<no code>";
  return e["code"].is_string() ? e["code"].get<std::string>() : e["code"].dump();
}

/// Sums the 429s and requests the mock saw over the named deployments.
std::uint64_t rate_limited(MockAzureServer& server, const std::vector<std::string>& names) {
  std::uint64_t n = 0;
  for (const auto& name : names) n += server.counters(name).rate_limited;
  return n;
}

// ---- a RAG executor composed from call_embeddings and call_chat -----------------------------

json rag_embedding_request(const json& request) {
  json b = json::object();
  b["input"] = request.value("question", std::string());
  return b;
}

json rag_chat_request(const json& request, const json& embeddings) {
  const std::size_t dims = embeddings.at("data").at(0).at("embedding").size();
  json system = json::object();
  system["role"] = "system";
  system["content"] = "Context: a vector of " + std::to_string(dims) + " dimensions.";
  json user = json::object();
  user["role"] = "user";
  user["content"] = request.value("question", std::string());
  json b = json::object();
  b["messages"] = json::array({system, user});
  b["max_tokens"] = 64;
  return b;
}

llmq::Response rag_misconfigured() {
  return llmq::Response{llmq::make_error_body("rag needs an LLM and an embeddings deployment",
                                              "invalid_request_error", "missing_deployment"),
                        400};
}

class RagExecutor : public llmq::RequestExecutor {
 public:
  RagExecutor(std::shared_ptr<llmq::HttpClient> client, llmq::ProviderOptions options)
      : client_(std::move(client)), options_(std::move(options)) {}

  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& telemetry) override {
    if (chosen.llm == nullptr || chosen.embedding == nullptr) co_return rag_misconfigured();
    llmq::Response emb = co_await llmq::call_embeddings(
        *client_, *chosen.embedding, rag_embedding_request(req.body), telemetry, options_);
    if (emb.status != 200) co_return emb;
    json chat = rag_chat_request(req.body, emb.body);
    llmq::Response answer =
        co_await llmq::call_chat(*client_, *chosen.llm, std::move(chat), telemetry, options_);
    co_return answer;
  }

 private:
  std::shared_ptr<llmq::HttpClient> client_;
  llmq::ProviderOptions options_;
};

// ---- running many requests at once ---------------------------------------------------------

struct Call {
  std::string req_type = "chat_completion";
  json body;
  llmq::ModelPreferences prefs;
};

struct Answer {
  llmq::Response response;
  std::string exception;  ///< what() of an exception execute_request threw
};

/// Submits all calls at once and waits for every answer.
awaitable<std::vector<Answer>> submit_all(llmq::LLMQueue& queue, std::vector<Call> calls) {
  auto ex = co_await asio::this_coro::executor;
  auto answers = std::make_shared<std::vector<Answer>>(calls.size());
  auto finished = std::make_shared<std::size_t>(0);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    asio::co_spawn(
        ex,
        [&queue, answers, i, call = calls[i]]() -> awaitable<void> {
          try {
            llmq::Response r =
                co_await queue.execute_request(call.req_type, call.body, "e2e-user", call.prefs);
            (*answers)[i].response = std::move(r);
          } catch (const std::exception& e) {
            (*answers)[i].exception = e.what();
          }
        },
        [finished](std::exception_ptr) { ++*finished; });
  }
  while (*finished < calls.size()) co_await sleep_for(2ms);
  co_return *answers;
}

std::vector<Call> chat_calls(std::size_t n, const std::string& prefix) {
  std::vector<Call> calls(n);
  for (std::size_t i = 0; i < n; ++i) calls[i].body = chat_body(prefix + std::to_string(i));
  return calls;
}

using llmq::testing::LogCapture;

// =============================================================================================
// 1. The whole path
// =============================================================================================

void check_whole_path(llmq::AzureUrlStyle style) {
  MockRunner mock(mock_config(
      {mock_deployment("gpt-4o-east", "gpt-4o-2024-08-06"),
       mock_deployment("emb-east", "text-embedding-3-small", DeploymentType::embeddings),
       mock_deployment("llama", "llama-3.1-8b-instruct")}));
  llmq::CustomModelConfig custom;
  custom.unique_model_id = "llama-local";
  custom.base_url = mock->base_url();
  custom.api_key = kApiKey;
  custom.model = "llama";
  custom.req_per_min = 1'000'000;
  custom.tokens_per_min = 1'000'000'000;
  auto config =
      llmq_config({azure_group(mock->base_url(),
                               {azure_model("chat-a", "gpt-4o-east"),
                                azure_model("emb", "emb-east", llmq::ModelType::embeddings)})},
                  {custom});
  llmq::ProviderOptions providers;
  providers.azure_url_style = style;
  Stack s(std::move(config), {}, providers);
  s.queue->register_request_executor("rag", std::make_shared<RagExecutor>(s.client, providers));

  llmq::Response chat, streamed, emb, rag, compat;
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    chat = co_await s.queue->execute_request("chat_completion", chat_body("Hello, world!"), "u1",
                                             llm_pin("chat-a"));
    streamed = co_await s.queue->execute_request(
        "chat_completion", stream_chat_body("Stream me three words"), "u1", llm_pin("chat-a"));
    emb = co_await s.queue->execute_request("embeddings", embeddings_body(), "u1",
                                            embeddings_only("emb"));
    rag = co_await s.queue->execute_request("rag", rag_body("What is llmq?"), "u1",
                                            rag_prefs("chat-a", "emb"));
    compat = co_await s.queue->execute_request("chat_completion", chat_body("Hi compat"), "u1",
                                               llm_pin("llama-local"));
    co_await s.queue->graceful_shutdown();
  });

  // Chat: the mock's body, unchanged. prompt = 3 + (3 + ceil(13/4)); completion = ceil(19/4).
  ASSERT_EQ(chat.status, 200) << chat.body.dump();
  EXPECT_EQ(chat.body["object"], "chat.completion");
  EXPECT_EQ(chat.body["model"], "gpt-4o-2024-08-06");
  EXPECT_EQ(content_of(chat.body), "Echo: Hello, world!");
  EXPECT_EQ(chat.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat.body["usage"]["prompt_tokens"], 10);
  EXPECT_EQ(chat.body["usage"]["completion_tokens"], 5);

  // Streamed chat, assembled into one chat.completion with usage.
  ASSERT_EQ(streamed.status, 200) << streamed.body.dump();
  EXPECT_EQ(streamed.body["object"], "chat.completion");
  EXPECT_EQ(content_of(streamed.body), "Echo: Stream me three words");
  EXPECT_TRUE(streamed.body["usage"].is_object()) << streamed.body.dump();

  // Embeddings: one unit vector of 8 values per input, tokens ceil(5/4) + ceil(10/4).
  ASSERT_EQ(emb.status, 200) << emb.body.dump();
  EXPECT_EQ(emb.body["object"], "list");
  ASSERT_EQ(emb.body["data"].size(), 2u);
  EXPECT_EQ(emb.body["data"][1]["index"], 1);
  EXPECT_EQ(emb.body["data"][0]["embedding"].size(), 8u);
  EXPECT_EQ(emb.body["model"], "text-embedding-3-small");
  EXPECT_EQ(emb.body["usage"]["prompt_tokens"], 5);

  // RAG: the chat saw the context built from the embedding.
  ASSERT_EQ(rag.status, 200) << rag.body.dump();
  EXPECT_EQ(content_of(rag.body), "Echo: What is llmq?");
  EXPECT_EQ(rag.body["model"], "gpt-4o-2024-08-06");

  // OpenAI-compatible custom model on the mock's /v1 routes.
  ASSERT_EQ(compat.status, 200) << compat.body.dump();
  EXPECT_EQ(compat.body["model"], "llama-3.1-8b-instruct");
  EXPECT_EQ(content_of(compat.body), "Echo: Hi compat");

  // What the upstream actually received, per deployment.
  const auto gpt = mock->counters("gpt-4o-east");
  const auto embc = mock->counters("emb-east");
  const auto llama = mock->counters("llama");
  EXPECT_EQ(gpt.requests, 3u);  // chat, stream, rag's chat
  EXPECT_EQ(gpt.ok, 3u);
  EXPECT_EQ(gpt.streams, 1u);
  EXPECT_EQ(gpt.rate_limited, 0u);
  EXPECT_EQ(embc.requests, 2u);  // embeddings, rag's embeddings
  EXPECT_EQ(embc.ok, 2u);
  EXPECT_EQ(llama.requests, 1u);
  EXPECT_EQ(llama.ok, 1u);
  EXPECT_EQ(mock->stats()["unrouted"], 0);

  // Telemetry: one record per request, tokens as the mock reported them.
  const auto records = s.telemetry->records();
  ASSERT_EQ(records.size(), 5u);
  std::uint64_t prompt_sum = 0, completion_sum = 0, embedding_sum = 0;
  for (const auto& t : records) {
    EXPECT_EQ(t.status, 200) << t.req_type;
    EXPECT_EQ(t.attempts, 1) << t.req_type;
    EXPECT_TRUE(t.error.empty()) << t.error;
    prompt_sum += static_cast<std::uint64_t>(t.prompt_tokens);
    completion_sum += static_cast<std::uint64_t>(t.completion_tokens);
    embedding_sum += static_cast<std::uint64_t>(t.embedding_tokens);
  }
  EXPECT_EQ(prompt_sum, gpt.prompt_tokens + llama.prompt_tokens);
  EXPECT_EQ(completion_sum, gpt.completion_tokens + llama.completion_tokens);
  EXPECT_EQ(embedding_sum, embc.prompt_tokens);

  const auto& chat_t = records[0];
  EXPECT_EQ(chat_t.llm_deployment, "chat-a");
  EXPECT_EQ(chat_t.prompt_tokens, 10);
  EXPECT_EQ(chat_t.completion_tokens, 5);
  EXPECT_EQ(chat_t.llm_outcome.status, 200);
  const auto& emb_t = records[2];
  EXPECT_EQ(emb_t.embedding_deployment, "emb");
  EXPECT_EQ(emb_t.embedding_tokens, 5);
  EXPECT_EQ(emb_t.embedding_outcome.status, 200);
  const auto& rag_t = records[3];
  EXPECT_EQ(rag_t.req_type, "rag");
  EXPECT_EQ(rag_t.llm_deployment, "chat-a");
  EXPECT_EQ(rag_t.embedding_deployment, "emb");
  EXPECT_EQ(rag_t.embedding_tokens, 4);  // ceil(13 / 4)
  EXPECT_GT(rag_t.prompt_tokens, 0);
  EXPECT_EQ(rag_t.completion_tokens, 5);  // "Echo: What is llmq?"
  EXPECT_EQ(rag_t.llm_outcome.status, 200);
  EXPECT_EQ(rag_t.embedding_outcome.status, 200);
  ASSERT_EQ(rag_t.attempt_log.size(), 1u);
  EXPECT_EQ(rag_t.attempt_log[0].llm_deployment, "chat-a");
  EXPECT_EQ(rag_t.attempt_log[0].embedding_deployment, "emb");
  EXPECT_EQ(records[4].llm_deployment, "llama-local");
}

TEST(EndToEndWholePath, ClassicUrlsChatEmbeddingsRagAndCustomModel) {
  check_whole_path(llmq::AzureUrlStyle::classic);
}

TEST(EndToEndWholePath, V1UrlsChatEmbeddingsRagAndCustomModel) {
  check_whole_path(llmq::AzureUrlStyle::v1);
}

TEST(EndToEndWholePath, UrlStyleDecidesTheRouteTheUpstreamSees) {
  // The mock's 429 body names the API version of the route it came in on: the
  // api-version query of a classic URL, "v1" on /openai/v1 and /v1 routes.
  MockRunner mock(mock_config({mock_deployment("gpt-4o-east", "gpt-4o-2024-08-06")}));
  mock->set_faults("gpt-4o-east", throttle_fault(50ms));
  llmq::QueueOptions no_retry;
  no_retry.max_attempts = 1;
  auto make = [&] {
    return llmq_config({azure_group(mock->base_url(), {azure_model("chat-a", "gpt-4o-east")})});
  };
  llmq::ProviderOptions v1;
  v1.azure_url_style = llmq::AzureUrlStyle::v1;
  Stack a(make(), no_retry, llmq::ProviderOptions{});
  Stack b(make(), no_retry, v1);
  llmq::Response via_classic, via_v1;
  run(a.io, [&]() -> awaitable<void> {
    co_await a.queue->initiate();
    via_classic = co_await a.queue->execute_request("chat_completion", chat_body(), "u");
    co_await a.queue->graceful_shutdown();
  });
  run(b.io, [&]() -> awaitable<void> {
    co_await b.queue->initiate();
    via_v1 = co_await b.queue->execute_request("chat_completion", chat_body(), "u");
    co_await b.queue->graceful_shutdown();
  });
  ASSERT_EQ(via_classic.status, 429) << via_classic.body.dump();
  ASSERT_EQ(via_v1.status, 429) << via_v1.body.dump();
  const std::string classic_message = via_classic.body["error"]["message"].get<std::string>();
  const std::string v1_message = via_v1.body["error"]["message"].get<std::string>();
  EXPECT_NE(classic_message.find("API version 2024-10-21 "), std::string::npos) << classic_message;
  EXPECT_NE(v1_message.find("API version v1 "), std::string::npos) << v1_message;
  EXPECT_EQ(mock->counters("gpt-4o-east").rate_limited, 2u);
}

// =============================================================================================
// 2. 429 with Retry-After: the deployment rests, the peer takes the work
// =============================================================================================

TEST(EndToEndThrottling, RetryAfterKeepsDeploymentIdleAndPeerTakesTheWork) {
  MockRunner mock(
      mock_config({mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o")}));
  mock->set_faults("gpt-a", throttle_fault(1500ms));
  Stack s(llmq_config({azure_group(
      mock->base_url(), {azure_model("chat-a", "gpt-a"), azure_model("chat-b", "gpt-b")})}));
  std::vector<Answer> answers;
  std::uint64_t a_requests_in_window = 0, b_requests_in_window = 0;
  std::uint64_t a_requests_after = 0, a_ok_after = 0;
  std::int64_t window_ms = 0;
  llmq::QueueStats stats;
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    const auto t0 = Steady::now();
    // One at a time until chat-a has answered its 429 (round robin reaches it by the 2nd).
    Steady::time_point seen_429{};
    for (int i = 0; i < 4 && seen_429 == Steady::time_point{}; ++i) {
      std::vector<Call> one = chat_calls(1, "seq-");
      std::vector<Answer> got = co_await submit_all(*s.queue, std::move(one));
      answers.insert(answers.end(), got.begin(), got.end());
      if (mock->counters("gpt-a").rate_limited == 1) seen_429 = Steady::now();
    }
    EXPECT_NE(seen_429, Steady::time_point{}) << "chat-a never received a request";
    // Bursts of concurrent requests while chat-a's Retry-After (>= t0 + 1.5 s) runs.
    while (Steady::now() - t0 < 1300ms) {
      std::vector<Answer> got = co_await submit_all(*s.queue, chat_calls(3, "burst-"));
      answers.insert(answers.end(), got.begin(), got.end());
      co_await sleep_for(80ms);
    }
    window_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - t0).count();
    a_requests_in_window = mock->counters("gpt-a").requests;
    b_requests_in_window = mock->counters("gpt-b").requests;
    // After the Retry-After (1.5 s from the 429, plus a margin) chat-a is back in rotation.
    mock->set_faults("gpt-a", no_faults());
    co_await sleep_until(seen_429 + 1650ms);
    for (int i = 0; i < 4; ++i) {
      std::vector<Answer> got = co_await submit_all(*s.queue, chat_calls(1, "after-"));
      answers.insert(answers.end(), got.begin(), got.end());
    }
    a_requests_after = mock->counters("gpt-a").requests;
    a_ok_after = mock->counters("gpt-a").ok;
    stats = co_await s.queue->stats();
    co_await s.queue->graceful_shutdown();
  });

  for (const auto& a : answers) {
    EXPECT_TRUE(a.exception.empty()) << a.exception;
    EXPECT_EQ(a.response.status, 200) << a.response.body.dump();
  }
  const std::size_t in_window = answers.size() - 4;
  EXPECT_GE(in_window, 20u) << "too few requests during the Retry-After window";
  EXPECT_LT(window_ms, 1500);
  EXPECT_EQ(a_requests_in_window, 1u) << "chat-a got requests during its Retry-After";
  EXPECT_EQ(b_requests_in_window, in_window) << "every caller must be served by chat-b";
  EXPECT_GE(a_requests_after, 2u) << "chat-a should be used again after its Retry-After";
  EXPECT_GE(a_ok_after, 1u);
  EXPECT_EQ(mock->counters("gpt-a").rate_limited, 1u);

  for (const auto& d : stats.deployments) {
    if (d.unique_model_id == "chat-a") {
      EXPECT_EQ(d.throttled, 1u);
    }
    if (d.unique_model_id == "chat-b") {
      EXPECT_EQ(d.failures, 0u);
    }
  }
  // Exactly one request needed a second attempt: 429 on chat-a, 200 on chat-b.
  int retried = 0;
  for (const auto& t : s.telemetry->records()) {
    if (t.attempts == 1) continue;
    ++retried;
    ASSERT_EQ(t.attempt_log.size(), 2u);
    EXPECT_EQ(t.attempt_log[0].llm_deployment, "chat-a");
    EXPECT_EQ(t.attempt_log[0].status, 429);
    EXPECT_EQ(t.attempt_log[1].llm_deployment, "chat-b");
    EXPECT_EQ(t.attempt_log[1].status, 200);
    EXPECT_EQ(t.status, 200);
  }
  EXPECT_EQ(retried, 1);
}

// =============================================================================================
// 3. Retries and fallback
// =============================================================================================

/// Sends `n` chat requests one after the other to chat-a/chat-b where gpt-a has `fault`;
/// checks that all succeed and that the one that met gpt-a was retried on chat-b.
void check_fallback(FaultConfig fault, int first_status) {
  MockRunner mock(
      mock_config({mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o")}));
  mock->set_faults("gpt-a", std::move(fault));
  Stack s(llmq_config({azure_group(
      mock->base_url(), {azure_model("chat-a", "gpt-a"), azure_model("chat-b", "gpt-b")})}));
  std::vector<llmq::Response> got;
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    for (int i = 0; i < 4; ++i) {
      llmq::Response r = co_await s.queue->execute_request(
          "chat_completion", chat_body("fallback " + std::to_string(i)), "u");
      got.push_back(std::move(r));
    }
    co_await s.queue->graceful_shutdown();
  });
  for (const auto& r : got) EXPECT_EQ(r.status, 200) << r.body.dump();
  const auto a = mock->counters("gpt-a");
  const auto b = mock->counters("gpt-b");
  EXPECT_GE(a.requests, 1u);
  EXPECT_EQ(a.ok, 0u);
  EXPECT_EQ(b.requests, 4u);
  EXPECT_EQ(b.ok, 4u);

  int retried = 0;
  for (const auto& t : s.telemetry->records()) {
    EXPECT_EQ(t.status, 200);
    if (t.attempts == 1) {
      EXPECT_EQ(t.llm_deployment, "chat-b");
      continue;
    }
    ++retried;
    ASSERT_EQ(t.attempt_log.size(), 2u);
    EXPECT_EQ(t.attempt_log[0].llm_deployment, "chat-a");
    EXPECT_EQ(t.attempt_log[0].status, first_status);
    EXPECT_EQ(t.attempt_log[1].llm_deployment, "chat-b");
    EXPECT_EQ(t.attempt_log[1].status, 200);
    EXPECT_EQ(t.llm_deployment, "chat-b");
  }
  EXPECT_EQ(retried, 1) << "chat-a (in backoff after its failure) must be tried exactly once";
}

/// Two chat deployments (chat-a -> gpt-a, chat-b -> gpt-b) with generous limits and the
/// given error backoff.
llmq::LLMConfig two_failing_chat_deployments(const std::string& url,
                                             std::chrono::milliseconds backoff) {
  return llmq_config({azure_group(
      url,
      {azure_model("chat-a", "gpt-a", llmq::ModelType::chat, 1'000'000, 1'000'000'000, backoff),
       azure_model("chat-b", "gpt-b", llmq::ModelType::chat, 1'000'000, 1'000'000'000, backoff)})});
}

/// Starts the stack's queue, times one chat request, shuts the queue down.
std::pair<llmq::Response, std::chrono::milliseconds> run_one_timed(Stack& s) {
  llmq::Response r;
  std::chrono::milliseconds took{};
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    const auto start = Steady::now();
    r = co_await s.queue->execute_request("chat_completion", chat_body(), "u");
    took = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start);
    co_await s.queue->graceful_shutdown();
  });
  return {r, took};
}

TEST(EndToEndRetries, ServerErrorOnOneDeploymentFallsBackToThePeer) {
  FaultConfig f = error_fault(500);
  check_fallback(f, 500);
}

TEST(EndToEndRetries, ConnectionResetOnOneDeploymentFallsBackToThePeer) {
  check_fallback(reset_fault(), 502);
}

TEST(EndToEndRetries, AllDeploymentsFailingGivesTheUpstreamErrorAfterMaxAttempts) {
  MockRunner mock(
      mock_config({mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o")}));
  mock->set_faults("gpt-a", error_fault(503));
  mock->set_faults("gpt-b", error_fault(503));
  llmq::QueueOptions options;
  options.max_attempts = 3;
  options.retry_budget = 10s;
  Stack s(two_failing_chat_deployments(mock->base_url(), 50ms), options);
  const auto [r, took] = run_one_timed(s);
  // The upstream's own JSON error body and status.
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(error_code(r), "ServiceUnavailable") << r.body.dump();
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("injected by llmq-mock-azure"),
            std::string::npos);
  EXPECT_EQ(mock->counters("gpt-a").requests + mock->counters("gpt-b").requests, 3u);
  EXPECT_EQ(mock->counters("gpt-a").errors[503] + mock->counters("gpt-b").errors[503], 3u);
  EXPECT_LT(took, 3s);
  const auto records = s.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempts, 3);
  ASSERT_EQ(records[0].attempt_log.size(), 3u);
  for (const auto& a : records[0].attempt_log) EXPECT_EQ(a.status, 503);
  EXPECT_NE(records[0].attempt_log[0].llm_deployment, records[0].attempt_log[1].llm_deployment);
  EXPECT_EQ(records[0].status, 503);
}

TEST(EndToEndRetries, RetryBudgetBoundsAttemptsWhenAllDeploymentsFail) {
  MockRunner mock(
      mock_config({mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o")}));
  mock->set_faults("gpt-a", error_fault(500));
  mock->set_faults("gpt-b", error_fault(500));
  llmq::QueueOptions options;
  options.max_attempts = 50;
  options.retry_budget = 400ms;
  Stack s(two_failing_chat_deployments(mock->base_url(), 150ms), options);
  const auto [r, took] = run_one_timed(s);
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(error_code(r), "InternalServerError") << r.body.dump();
  const auto sent = mock->counters("gpt-a").requests + mock->counters("gpt-b").requests;
  EXPECT_GE(sent, 2u);
  EXPECT_LE(sent, 8u) << "the 400 ms retry budget must stop the retries";
  EXPECT_LT(took, 2s);
  const auto records = s.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(static_cast<std::uint64_t>(records[0].attempts), sent);
}

TEST(EndToEndRetries, ClientErrorsAreNotRetried) {
  MockRunner mock(
      mock_config({mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o")}));
  // chat-x names a deployment the upstream does not have.
  Stack s(llmq_config({azure_group(mock->base_url(), {azure_model("chat-x", "no-such-deployment"),
                                                      azure_model("chat-b", "gpt-b")})}));
  llmq::Response missing, invalid;
  llmq::QueueStats stats;
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    missing =
        co_await s.queue->execute_request("chat_completion", chat_body(), "u", llm_pin("chat-x"));
    // The mock validates bodies like Azure: an empty messages array is a 400.
    json empty = json::object();
    empty["messages"] = json::array();
    invalid = co_await s.queue->execute_request("chat_completion", empty, "u", llm_pin("chat-b"));
    stats = co_await s.queue->stats();
    co_await s.queue->graceful_shutdown();
  });
  EXPECT_EQ(missing.status, 404) << missing.body.dump();
  EXPECT_EQ(error_code(missing), "DeploymentNotFound");
  EXPECT_EQ(invalid.status, 400) << invalid.body.dump();
  EXPECT_EQ(mock->stats()["unrouted"], 1) << "the 404 must be sent exactly once";
  EXPECT_EQ(mock->counters("gpt-b").requests, 1u) << "the 400 must be sent exactly once";
  EXPECT_EQ(mock->counters("gpt-b").errors[400], 1u);
  for (const auto& t : s.telemetry->records()) {
    EXPECT_EQ(t.attempts, 1);
    EXPECT_EQ(t.attempt_log.size(), 1u);
  }
  for (const auto& d : stats.deployments) {
    EXPECT_EQ(d.failures, 0u) << d.unique_model_id << ": a 4xx must not start a backoff";
    EXPECT_EQ(d.backoff_remaining, 0ms) << d.unique_model_id;
  }
}

// =============================================================================================
// 4. Timeouts, resets, malformed and truncated answers
// =============================================================================================

/// The answer to one request, also when llmq itself ended it (e.g. execution_timeout): the
/// error's Response carries its status and error body.
awaitable<llmq::Response> answer_of(llmq::LLMQueue& q, std::string type, json body,
                                    llmq::ModelPreferences prefs = {}) {
  auto [ec, r] = co_await q.async_execute_request(
      std::move(type), std::move(body), "u", std::move(prefs), asio::as_tuple(asio::use_awaitable));
  (void)ec;
  co_return std::move(r);
}

TEST(EndToEndFaults, TimeoutsResetsMalformedAndTruncatedGiveClearErrorsAndQueueKeepsServing) {
  MockRunner mock(mock_config({mock_deployment("gpt-a", "gpt-4o")}));
  llmq::QueueOptions options;
  options.max_attempts = 1;
  options.execution_timeout = 500ms;
  Stack s(llmq_config(
              {azure_group(mock->base_url(), {azure_model("chat-a", "gpt-a", llmq::ModelType::chat,
                                                          1'000'000, 1'000'000'000, 20ms)})}),
          options);
  // A second request type whose client gives up on its own after 300 ms.
  auto short_client =
      std::make_shared<llmq::HttpClient>(s.io.get_executor(), client_options(300ms));
  s.queue->register_request_executor("chat_short",
                                     std::make_shared<llmq::ChatCompletionExecutor>(short_client));

  struct Step {
    std::string name;
    FaultConfig fault;
    std::string req_type;
    int status = 0;
    std::vector<std::string> codes;  // acceptable error.code values
  };
  std::vector<Step> steps;
  steps.push_back({"stall, queue execution_timeout",
                   stall_fault(),
                   "chat_completion",
                   504,
                   {"execution_timeout"}});
  steps.push_back(
      {"stall, client request_timeout", stall_fault(), "chat_short", 504, {"request_timeout"}});
  steps.push_back({"reset", reset_fault(), "chat_completion", 502, {"connection_reset"}});
  steps.push_back(
      {"malformed JSON", malformed_fault(), "chat_completion", 502, {"bad_upstream_response"}});
  steps.push_back({"truncated body",
                   truncated_fault(),
                   "chat_completion",
                   502,
                   {"connection_reset", "bad_response"}});

  std::vector<llmq::Response> failed, healthy;
  std::vector<std::chrono::milliseconds> took;
  llmq::QueueStats stats;
  run(
      s.io,
      [&]() -> awaitable<void> {
        co_await s.queue->initiate();
        for (const Step& step : steps) {
          mock->set_faults("gpt-a", step.fault);
          const auto start = Steady::now();
          llmq::Response bad = co_await answer_of(*s.queue, step.req_type, chat_body(step.name));
          took.push_back(
              std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start));
          failed.push_back(std::move(bad));
          mock->set_faults("gpt-a", no_faults());
          llmq::Response good =
              co_await s.queue->execute_request(step.req_type, chat_body("healthy again"), "u");
          healthy.push_back(std::move(good));
        }
        stats = co_await s.queue->stats();
        co_await s.queue->graceful_shutdown();
      },
      30s);
  short_client->close();

  ASSERT_EQ(failed.size(), steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE(steps[i].name);
    EXPECT_EQ(failed[i].status, steps[i].status) << failed[i].body.dump();
    const std::string code = error_code(failed[i]);
    EXPECT_NE(std::find(steps[i].codes.begin(), steps[i].codes.end(), code), steps[i].codes.end())
        << "error.code " << code << " in " << failed[i].body.dump();
    EXPECT_LT(took[i], 3s);
    EXPECT_EQ(healthy[i].status, 200) << healthy[i].body.dump();
    EXPECT_EQ(content_of(healthy[i].body), "Echo: healthy again");
  }
  const auto c = mock->counters("gpt-a");
  EXPECT_EQ(c.stalls, 2u);
  EXPECT_GE(c.resets, 1u);
  EXPECT_EQ(c.malformed, 1u);
  EXPECT_EQ(c.truncated, 1u);
  EXPECT_EQ(c.ok, steps.size());
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.queue_depth, 0u);
  const auto records = s.telemetry->records();
  ASSERT_EQ(records.size(), 2 * steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(records[2 * i].status, steps[i].status) << steps[i].name;
    EXPECT_FALSE(records[2 * i].error.empty()) << steps[i].name;
    EXPECT_EQ(records[2 * i + 1].status, 200) << steps[i].name;
  }
}

// =============================================================================================
// 5. Pacing to Azure's limits
// =============================================================================================

TEST(EndToEndPacing, SixtyRequestsAtOnceAgainstTwo600RpmDeploymentsGetNo429) {
  constexpr std::int64_t kRpm = 600;      // 10 per 1 s window, 100 per 10 s window
  constexpr std::int64_t kTpm = 120'000;  // as configured on both sides
  constexpr std::size_t kRequests = 60;
  MockRunner mock(
      mock_config({mock_deployment("pace-a", "gpt-4o", DeploymentType::chat, kRpm, kTpm),
                   mock_deployment("pace-b", "gpt-4o", DeploymentType::chat, kRpm, kTpm)},
                  5));
  // Default retries: a stray 429 would be retried; the mock's counters tell.
  llmq::QueueOptions options;
  Stack s(
      llmq_config({azure_group(
          mock->base_url(), {azure_model("chat-a", "pace-a", llmq::ModelType::chat, kRpm, kTpm),
                             azure_model("chat-b", "pace-b", llmq::ModelType::chat, kRpm, kTpm)})}),
      options);
  std::vector<Answer> answers;
  std::chrono::milliseconds took{};
  run(
      s.io,
      [&]() -> awaitable<void> {
        co_await s.queue->initiate();
        const auto start = Steady::now();
        answers = co_await submit_all(*s.queue, chat_calls(kRequests, "paced "));
        took = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start);
        co_await s.queue->graceful_shutdown();
      },
      15s);

  std::size_t ok = 0;
  for (const auto& a : answers) {
    EXPECT_TRUE(a.exception.empty()) << a.exception;
    if (a.response.status == 200) ++ok;
  }
  const auto a = mock->counters("pace-a");
  const auto b = mock->counters("pace-b");
  const std::uint64_t throttled = rate_limited(*mock, {"pace-a", "pace-b"});
  const std::uint64_t sent = a.requests + b.requests;
  std::cout << "[pacing] " << kRequests << " requests at once, 2 x " << kRpm << " RPM: " << ok
            << " x 200, upstream requests " << sent << ", 429s " << throttled << " ("
            << (sent ? 100.0 * static_cast<double>(throttled) / static_cast<double>(sent) : 0.0)
            << " %), peak arrivals per 1 s window " << a.max_requests_in_1s << " / "
            << b.max_requests_in_1s << ", took " << took.count() << " ms\n";
  RecordProperty("upstream_429", static_cast<int>(throttled));
  RecordProperty("took_ms", static_cast<int>(took.count()));

  EXPECT_EQ(ok, kRequests);
  EXPECT_LE(throttled, 1u);
  EXPECT_EQ(a.ok + b.ok, kRequests);
  EXPECT_LE(a.max_requests_in_1s, 11u);
  EXPECT_LE(b.max_requests_in_1s, 11u);
  // 20 per second in total: the last 20 cannot start before the 2 s mark.
  EXPECT_GE(took, 1900ms);
  EXPECT_LT(took, 6s);
}

// =============================================================================================
// 6. The API key stays out of logs and telemetry
// =============================================================================================

TEST(EndToEndSecrets, ApiKeyNeverInLogsOrTelemetry) {
  LogCapture logs;
  MockRunner mock(mock_config(
      {mock_deployment("gpt-a", "gpt-4o"), mock_deployment("gpt-b", "gpt-4o"),
       mock_deployment("emb-a", "text-embedding-3-small", DeploymentType::embeddings)}));
  llmq::QueueOptions options;
  options.record_payload = true;
  options.execution_timeout = 400ms;
  auto good = azure_group(
      mock->base_url(),
      {azure_model("chat-a", "gpt-a", llmq::ModelType::chat, 1'000'000, 1'000'000'000, 20ms),
       azure_model("emb", "emb-a", llmq::ModelType::embeddings)});
  // A second resource whose key the mock does not accept: 401.
  auto wrong = azure_group(mock->base_url(), {azure_model("chat-w", "gpt-b")}, kWrongKey);
  Stack s(llmq_config({good, wrong}), options);
  std::vector<int> statuses;
  run(s.io, [&]() -> awaitable<void> {
    co_await s.queue->initiate();
    auto ask = [&](const std::string& id) -> awaitable<void> {
      llmq::Response r =
          co_await answer_of(*s.queue, "chat_completion", chat_body("secret test"), llm_pin(id));
      statuses.push_back(r.status);
    };
    co_await ask("chat-a");  // 200
    co_await ask("chat-w");  // 401
    const std::vector<FaultConfig> faults = {error_fault(500),  reset_fault(),
                                             malformed_fault(), truncated_fault(),
                                             stall_fault(),     throttle_fault(50ms)};
    for (const FaultConfig& f : faults) {
      mock->set_faults("gpt-a", f);
      co_await ask("chat-a");
      co_await sleep_for(60ms);  // past the 20 ms backoff / 50 ms Retry-After
    }
    mock->set_faults("gpt-a", no_faults());
    llmq::Response e = co_await s.queue->execute_request("embeddings", embeddings_body(), "u",
                                                         embeddings_only("emb"));
    statuses.push_back(e.status);
    co_await s.queue->graceful_shutdown();
  });
  ASSERT_EQ(statuses.size(), 9u);
  EXPECT_EQ(statuses[0], 200);
  EXPECT_EQ(statuses[1], 401);
  EXPECT_EQ(statuses[2], 500);
  EXPECT_EQ(statuses[6], 504);
  EXPECT_EQ(statuses[7], 429);
  EXPECT_EQ(statuses[8], 200);

  const auto lines = logs.lines();
  EXPECT_GT(lines.size(), 5u) << "expected trace/debug/warn lines from the run";
  bool logged_failure = false;
  for (const auto& line : lines) {
    EXPECT_EQ(line.find(kApiKey), std::string::npos) << "API key in log line: " << line;
    EXPECT_EQ(line.find(kWrongKey), std::string::npos) << "API key in log line: " << line;
    if (line.find("chat-a") != std::string::npos) logged_failure = true;
  }
  EXPECT_TRUE(logged_failure) << "the failures should have been logged";

  const auto records = s.telemetry->records();
  EXPECT_EQ(records.size(), 9u);
  for (const auto& t : records) {
    const std::string dumped = llmq::to_json(t).dump();
    EXPECT_EQ(dumped.find(kApiKey), std::string::npos) << dumped;
    EXPECT_EQ(dumped.find(kWrongKey), std::string::npos) << dumped;
  }
}

}  // namespace
