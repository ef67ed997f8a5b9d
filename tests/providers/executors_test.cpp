// The ready-made executors against an in-test loopback server: URLs, auth headers and
// bodies per provider, telemetry (usage, outcomes), error pass-through, malformed bodies,
// transport failures, streaming assembly, cancellation, and no API key in any log line.

#include "loopback_http_server.hpp"

#include <llmq/llmq.hpp>
#include <llmq/providers.hpp>

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <nlohmann/json.hpp>
#include "../support/log_capture.hpp"

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
using asio::awaitable;
using llmq::testing::LogCapture;
using llmq::testing::LoopbackServer;
using llmq::testing::ReceivedRequest;
using llmq::testing::Reply;
using llmq::testing::run_bounded;
using nlohmann::json;
using namespace std::chrono_literals;

const std::string kAzureKey = "sk-AZURE-SECRET-0123456789";
const std::string kOpenAIKey = "sk-OPENAI-SECRET-9876543210";

llmq::Deployment azure(const LoopbackServer& server, llmq::ModelType type = llmq::ModelType::chat) {
  llmq::Deployment d;
  d.unique_model_id = type == llmq::ModelType::embeddings ? "emb-east" : "gpt-4o-east";
  d.model_name_in_azure = type == llmq::ModelType::embeddings ? "text-embedding-3-small" : "gpt-4o";
  d.deployment_name_in_azure = type == llmq::ModelType::embeddings ? "emb-prod" : "gpt-4o-prod";
  d.model_type = type;
  d.endpoint = server.url("/");  // trailing slash on purpose
  d.api_key = kAzureKey;
  d.api_version = "2024-10-21";
  d.provider = llmq::Provider::azure;
  d.req_per_min = 1000;
  d.tokens_per_min = 100000;
  return d;
}

llmq::Deployment compatible(const LoopbackServer& server, std::string path, std::string key) {
  llmq::Deployment d;
  d.unique_model_id = "llama";
  d.model_name_in_azure = "meta-llama/Llama-3.1-8B-Instruct";
  d.deployment_name_in_azure = d.model_name_in_azure;
  d.endpoint = server.url(path);
  d.api_key = std::move(key);
  d.provider = llmq::Provider::openai_compatible;
  return d;
}

json chat_body() {
  return json::parse(R"({"messages":[{"role":"user","content":"Hello"}],"max_tokens":50})");
}

const char* kChatAnswer =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",
  "choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],
  "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}})";

const char* kEmbeddingAnswer =
    R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],
  "model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}})";

/// Runs one executor call to completion.
struct Call {
  llmq::Response response;
  llmq::TelemetryData telemetry;
};

/// The request the executor tests run (as the queue would hand it over).
llmq::Request test_request(json body) {
  llmq::Request req;
  req.id = "r1";
  req.req_type = "test";
  req.user_id = "u1";
  req.body = std::move(body);
  return req;
}

Call run_executor(asio::io_context& io, llmq::RequestExecutor& executor, json body,
                  const llmq::Deployment* llm, const llmq::Deployment* embedding = nullptr) {
  const llmq::Request req = test_request(std::move(body));
  llmq::ChosenDeployments chosen;
  chosen.llm = llm;
  chosen.embedding = embedding;
  Call call;
  call.telemetry.request_id = req.id;  // as the queue sets it
  call.response = run_bounded(io, executor.process_request(req, chosen, call.telemetry));
  return call;
}

std::shared_ptr<llmq::HttpClient> make_client(asio::io_context& io,
                                              llmq::HttpClientOptions o = {}) {
  return std::make_shared<llmq::HttpClient>(io.get_executor(), o);
}

Reply chat_reply(std::vector<std::pair<std::string, std::string>> extra = {}) {
  Reply r = llmq::testing::json_reply(200, kChatAnswer);
  for (auto& h : extra) r.headers.push_back(std::move(h));
  return r;
}

// ---- URLs, auth, bodies ------------------------------------------------------------------

TEST(AzureExecutors, ClassicChatUrlApiKeyBodyAndTelemetry) {
  LogCapture logs;
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    return chat_reply({{"x-ratelimit-remaining-requests", "99"},
                       {"x-ratelimit-remaining-tokens", "4500"},
                       {"x-ratelimit-reset-tokens", "6m0s"}});
  });
  const llmq::Deployment d = azure(server);
  llmq::AzureChatExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);

  ASSERT_EQ(server.requests().size(), 1u);
  const ReceivedRequest& got = server.requests()[0];
  EXPECT_EQ(got.method, "POST");
  EXPECT_EQ(got.target, "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(got.header("api-key"), kAzureKey);
  EXPECT_EQ(got.header("authorization"), std::nullopt);
  EXPECT_EQ(got.header("content-type"), "application/json");
  EXPECT_EQ(got.header("user-agent"), "llmq/0.1");
  EXPECT_EQ(got.header("x-request-id"), "r1");  // the request's id, for joining logs
  EXPECT_EQ(got.header("x-ms-client-request-id"), "r1");
  EXPECT_EQ(json::parse(got.body), chat_body());  // classic: the body as given

  EXPECT_EQ(call.response.status, 200);
  EXPECT_EQ(call.response.body, json::parse(kChatAnswer));
  EXPECT_EQ(call.telemetry.prompt_tokens, 12);
  EXPECT_EQ(call.telemetry.completion_tokens, 3);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 200);
  EXPECT_EQ(call.telemetry.llm_outcome.remaining_requests, 99);
  EXPECT_EQ(call.telemetry.llm_outcome.remaining_tokens, 4500);
  EXPECT_EQ(call.telemetry.llm_outcome.reset_tokens, 360s);
  EXPECT_FALSE(call.telemetry.llm_outcome.connection_error);
  EXPECT_EQ(call.telemetry.embedding_outcome.status, 0);
  EXPECT_GT(logs.expect_no_secret({kAzureKey}), 0u);  // something was logged, without the key
}

TEST(AzureExecutors, V1UrlWithEntraToken) {
  LogCapture logs;
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return chat_reply(); });
  const llmq::Deployment d = azure(server);
  llmq::ProviderOptions options;
  options.azure_url_style = llmq::AzureUrlStyle::v1;
  int token_calls = 0;
  options.azure_token_provider = [&token_calls]() -> awaitable<std::string> {
    ++token_calls;
    co_return std::string("entra-token-XYZ");
  };
  llmq::AzureChatExecutor executor(make_client(io), options);
  const Call call = run_executor(io, executor, chat_body(), &d);

  ASSERT_EQ(server.requests().size(), 1u);
  const ReceivedRequest& got = server.requests()[0];
  EXPECT_EQ(got.target, "/openai/v1/chat/completions");
  EXPECT_EQ(got.header("authorization"), "Bearer entra-token-XYZ");
  EXPECT_EQ(got.header("api-key"), std::nullopt);
  const json sent = json::parse(got.body);
  EXPECT_EQ(sent["model"], "gpt-4o-prod");
  EXPECT_EQ(sent["messages"], chat_body()["messages"]);
  EXPECT_EQ(call.response.status, 200);
  EXPECT_EQ(token_calls, 1);
  logs.expect_no_secret({kAzureKey, "entra-token-XYZ"});
}

TEST(AzureExecutors, EmbeddingsClassicUrlAndTokens) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return llmq::testing::json_reply(200, kEmbeddingAnswer); });
  const llmq::Deployment d = azure(server, llmq::ModelType::embeddings);
  llmq::AzureEmbeddingsExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, json::parse(R"({"input":"abc"})"), nullptr, &d);
  ASSERT_EQ(server.requests().size(), 1u);
  EXPECT_EQ(server.requests()[0].target,
            "/openai/deployments/emb-prod/embeddings?api-version=2024-10-21");
  EXPECT_EQ(call.response.status, 200);
  EXPECT_EQ(call.response.body["data"][0]["embedding"][1], 0.2);
  EXPECT_EQ(call.telemetry.embedding_tokens, 4);
  EXPECT_EQ(call.telemetry.prompt_tokens, 0);
  EXPECT_EQ(call.telemetry.embedding_outcome.status, 200);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 0);
}

TEST(OpenAICompatibleExecutors, PathModelAndBearer) {
  LogCapture logs;
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    return req.target == "/v1/embeddings" ? llmq::testing::json_reply(200, kEmbeddingAnswer)
                                          : chat_reply();
  });
  auto client = make_client(io);
  const llmq::Deployment with_v1 = compatible(server, "/v1/", kOpenAIKey);
  llmq::OpenAICompatibleExecutor chat(client);
  const Call call = run_executor(io, chat, chat_body(), &with_v1);
  EXPECT_EQ(call.response.status, 200);
  EXPECT_EQ(call.telemetry.completion_tokens, 3);

  const llmq::Deployment keyless = compatible(server, "", "");
  llmq::OpenAICompatibleExecutor embeddings(client, llmq::UpstreamOperation::embeddings);
  const Call emb =
      run_executor(io, embeddings, json::parse(R"({"input":["a","b"]})"), nullptr, &keyless);
  EXPECT_EQ(emb.response.status, 200);
  EXPECT_EQ(emb.telemetry.embedding_tokens, 4);

  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[0].target, "/v1/chat/completions");
  EXPECT_EQ(server.requests()[0].header("authorization"), "Bearer " + kOpenAIKey);
  EXPECT_EQ(server.requests()[0].header("api-key"), std::nullopt);
  EXPECT_EQ(json::parse(server.requests()[0].body)["model"], "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ(server.requests()[0].header("x-request-id"), "r1");
  EXPECT_EQ(server.requests()[0].header("x-ms-client-request-id"), std::nullopt);  // Azure only
  EXPECT_EQ(server.requests()[1].target, "/v1/embeddings");
  EXPECT_EQ(server.requests()[1].header("authorization"), std::nullopt);
  EXPECT_EQ(json::parse(server.requests()[1].body)["input"], json::parse(R"(["a","b"])"));
  logs.expect_no_secret({kOpenAIKey});
}

TEST(DispatchingExecutors, OneRegistrationServesBothProviders) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return chat_reply(); });
  llmq::ChatCompletionExecutor executor(make_client(io));
  const llmq::Deployment a = azure(server);
  const llmq::Deployment c = compatible(server, "", kOpenAIKey);
  EXPECT_EQ(run_executor(io, executor, chat_body(), &a).response.status, 200);
  EXPECT_EQ(run_executor(io, executor, chat_body(), &c).response.status, 200);
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[0].header("api-key"), kAzureKey);
  EXPECT_EQ(server.requests()[1].target, "/v1/chat/completions");
  EXPECT_EQ(server.requests()[1].header("authorization"), "Bearer " + kOpenAIKey);
}

// ---- upstream errors -------------------------------------------------------------------------

TEST(ExecutorErrors, RateLimitedPassesThroughWithRetryAfter) {
  asio::io_context io;
  const std::string body = R"({"error":{"code":"429","message":"Please retry after 2 seconds."}})";
  LoopbackServer server(io, [&body](const ReceivedRequest&) {
    Reply r = llmq::testing::json_reply(429, body);
    r.headers.emplace_back("retry-after-ms", "1500");
    r.headers.emplace_back("retry-after", "2");
    return r;
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 429);
  EXPECT_EQ(call.response.body, json::parse(body));
  EXPECT_EQ(call.telemetry.llm_outcome.status, 429);
  EXPECT_EQ(call.telemetry.llm_outcome.retry_after, 1500ms);
  EXPECT_TRUE(call.telemetry.llm_outcome.retryable);
  EXPECT_EQ(call.telemetry.prompt_tokens, 0);
  EXPECT_EQ(server.requests().size(), 1u);  // one attempt: the queue owns retries
}

TEST(ExecutorErrors, InsufficientQuotaIsNotRetryable) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    return llmq::testing::json_reply(
        429,
        R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}})");
  });
  const llmq::Deployment d = compatible(server, "", kOpenAIKey);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 429);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 429);
  EXPECT_FALSE(call.telemetry.llm_outcome.retryable);
}

TEST(ExecutorErrors, ClientErrorsPassThroughAndAreNotRetryable) {
  asio::io_context io;
  const std::string body =
      R"({"error":{"code":"content_filter","message":"filtered","param":"prompt","status":400}})";
  LoopbackServer server(
      io, [&body](const ReceivedRequest&) { return llmq::testing::json_reply(400, body); });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 400);
  EXPECT_EQ(call.response.body, json::parse(body));
  EXPECT_FALSE(call.telemetry.llm_outcome.retryable);
}

TEST(ExecutorErrors, MalformedJsonIs502WithAnEnvelope) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    return llmq::testing::json_reply(200, req.target.find("embeddings") != std::string::npos
                                              ? std::string("")
                                              : std::string("{\"choices\":[{\"index\":0,"));
  });
  const llmq::Deployment d = azure(server);
  const llmq::Deployment e = azure(server, llmq::ModelType::embeddings);
  auto client = make_client(io);
  llmq::ChatCompletionExecutor chat(client);
  llmq::EmbeddingsExecutor embeddings(client);
  for (const Call& call :
       {run_executor(io, chat, chat_body(), &d),
        run_executor(io, embeddings, json::parse(R"({"input":"x"})"), nullptr, &e)}) {
    EXPECT_EQ(call.response.status, 502);
    const json& error = call.response.body["error"];
    EXPECT_EQ(error["type"], "upstream_error");
    EXPECT_EQ(error["code"], "bad_upstream_response");
    EXPECT_EQ(error["message"].get<std::string>().rfind("upstream returned malformed JSON: ", 0),
              0u)
        << error["message"];
  }
}

std::string deep_json_object(std::size_t depth) {
  return "{\"choices\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

TEST(ExecutorErrors, DeeplyNestedAnswersAre502WithoutRecursion) {
  // 100 000 levels: refused while parsing (a tree that deep would be copied and dumped
  // recursively further on), whether the body is kept raw or parsed, 2xx or not.
  asio::io_context io;
  const std::string deep = deep_json_object(100'000);
  int status = 200;
  LoopbackServer server(
      io, [&](const ReceivedRequest&) { return llmq::testing::json_reply(status, deep); });
  const llmq::Deployment d = azure(server);
  for (const bool raw : {false, true}) {
    for (const int upstream_status : {200, 500}) {
      status = upstream_status;
      llmq::ProviderOptions options;
      options.raw_success_body = raw;
      llmq::ChatCompletionExecutor executor(make_client(io), options);
      const Call call = run_executor(io, executor, chat_body(), &d);
      EXPECT_EQ(call.response.status, 502) << raw << " " << upstream_status;
      EXPECT_EQ(call.response.body["error"]["code"], "bad_upstream_response");
      EXPECT_NE(call.response.body["error"]["message"].get<std::string>().find("deeper than 64"),
                std::string::npos);
      EXPECT_EQ(call.telemetry.llm_outcome.status, 502);
    }
  }
  // Within the limit (set lower here) an answer is fine.
  status = 200;
  llmq::ProviderOptions shallow;
  shallow.max_json_depth = 3;
  llmq::ChatCompletionExecutor executor(make_client(io), shallow);
  const std::string ok = deep_json_object(2);
  LoopbackServer ok_server(
      io, [&](const ReceivedRequest&) { return llmq::testing::json_reply(200, ok); });
  const llmq::Deployment ok_d = azure(ok_server);
  EXPECT_EQ(run_executor(io, executor, chat_body(), &ok_d).response.status, 200);
}

TEST(ExecutorErrors, NonJsonErrorBodyKeepsTheStatus) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.status = 503;
    r.body = "<html>Service Unavailable</html>";
    r.headers.emplace_back("Retry-After", "3");
    return r;
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 503);
  EXPECT_EQ(call.response.body["error"]["code"], "bad_upstream_response");
  EXPECT_NE(call.response.body["error"]["message"].get<std::string>().find("Service Unavailable"),
            std::string::npos);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 503);
  EXPECT_EQ(call.telemetry.llm_outcome.retry_after, 3s);
  EXPECT_TRUE(call.telemetry.llm_outcome.retryable);
}

TEST(ExecutorErrors, ConnectionRefusedIs503WithConnectionError) {
  LogCapture logs;
  asio::io_context io;
  unsigned short port = 0;
  {
    asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = probe.local_endpoint().port();
  }
  llmq::Deployment d;
  d.unique_model_id = "down";
  d.deployment_name_in_azure = "down";
  d.endpoint = "http://127.0.0.1:" + std::to_string(port);
  d.api_key = kAzureKey;
  d.api_version = "2024-10-21";
  llmq::ChatCompletionExecutor executor(make_client(io));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 503);
  EXPECT_EQ(call.response.body["error"]["code"], "connect_failed");
  EXPECT_EQ(call.response.body["error"]["type"], "upstream_error");
  EXPECT_EQ(call.response.body.dump().find(kAzureKey), std::string::npos);
  // The answer may reach clients: the internal address goes to the log only.
  const std::string address = "127.0.0.1:" + std::to_string(port);
  EXPECT_EQ(call.response.body.dump().find(address), std::string::npos) << call.response.body;
  EXPECT_NE(call.response.body.dump().find("'down'"), std::string::npos);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 503);
  EXPECT_TRUE(call.telemetry.llm_outcome.connection_error);
  EXPECT_TRUE(call.telemetry.llm_outcome.retryable);
  bool warned = false;
  for (const auto& line : logs.lines())
    warned |= line.find("down") != std::string::npos && line.find(address) != std::string::npos;
  EXPECT_TRUE(warned);
  logs.expect_no_secret({kAzureKey});
}

TEST(ExecutorErrors, TimeoutIs504) {
  LogCapture logs;
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  llmq::HttpClientOptions options;
  options.request_timeout = 150ms;
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io, options));
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 504);
  EXPECT_EQ(call.response.body["error"]["code"], "request_timeout");
  EXPECT_EQ(call.telemetry.llm_outcome.status, 504);
  EXPECT_TRUE(call.telemetry.llm_outcome.connection_error);
  logs.expect_no_secret({kAzureKey});
}

TEST(ExecutorErrors, RequestsTheExecutorCannotServeGetNoUpstreamCall) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return chat_reply(); });
  auto client = make_client(io);
  const llmq::Deployment c = compatible(server, "", "");
  llmq::AzureChatExecutor azure_only(client);
  const Call wrong = run_executor(io, azure_only, chat_body(), &c);
  EXPECT_EQ(wrong.response.status, 500);
  EXPECT_EQ(wrong.response.body["error"]["code"], "wrong_provider");

  llmq::ChatCompletionExecutor chat(client);
  const Call missing = run_executor(io, chat, chat_body(), nullptr);
  EXPECT_EQ(missing.response.status, 400);
  EXPECT_EQ(missing.response.body["error"]["code"], "missing_deployment");

  const llmq::Deployment d = azure(server);
  const Call not_object = run_executor(io, chat, json::array({1, 2}), &d);
  EXPECT_EQ(not_object.response.status, 400);
  EXPECT_EQ(not_object.telemetry.llm_outcome.status, 0);
  EXPECT_TRUE(server.requests().empty());
}

// ---- raw success bodies (ProviderOptions::raw_success_body) ---------------------------

TEST(RawSuccessBody, ChatAnswerComesBackAsReceivedWithUsageRecorded) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return chat_reply(); });
  const llmq::Deployment d = azure(server);
  llmq::ProviderOptions options;
  options.raw_success_body = true;
  llmq::ChatCompletionExecutor executor(make_client(io), options);
  const Call call = run_executor(io, executor, chat_body(), &d);
  EXPECT_EQ(call.response.status, 200);
  ASSERT_TRUE(llmq::is_raw_body(call.response.body));
  EXPECT_EQ(llmq::response_body_text(call.response.body), kChatAnswer);  // byte for byte
  EXPECT_EQ(call.telemetry.prompt_tokens, 12);
  EXPECT_EQ(call.telemetry.completion_tokens, 3);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 200);
  EXPECT_TRUE(call.telemetry.llm_outcome.retryable);
  // Off (the default), the same answer is parsed, and its text is the compact dump.
  llmq::ChatCompletionExecutor parsed(make_client(io));
  const Call p = run_executor(io, parsed, chat_body(), &d);
  EXPECT_FALSE(llmq::is_raw_body(p.response.body));
  EXPECT_EQ(llmq::response_body_text(p.response.body), json::parse(kChatAnswer).dump());
}

TEST(RawSuccessBody, EmbeddingsUsageAndErrorsStayParsed) {
  asio::io_context io;
  int status = 200;
  LoopbackServer server(io, [&status](const ReceivedRequest&) {
    return status == 200 ? llmq::testing::json_reply(200, kEmbeddingAnswer)
                         : llmq::testing::json_reply(status, R"({"error":{"code":"429"}})");
  });
  const llmq::Deployment e = azure(server, llmq::ModelType::embeddings);
  llmq::ProviderOptions options;
  options.raw_success_body = true;
  llmq::EmbeddingsExecutor executor(make_client(io), options);
  const Call ok = run_executor(io, executor, json::parse(R"({"input":"x"})"), nullptr, &e);
  ASSERT_TRUE(llmq::is_raw_body(ok.response.body));
  EXPECT_EQ(llmq::response_body_text(ok.response.body), kEmbeddingAnswer);
  EXPECT_EQ(ok.telemetry.embedding_tokens, 4);
  status = 429;
  const Call limited = run_executor(io, executor, json::parse(R"({"input":"x"})"), nullptr, &e);
  EXPECT_EQ(limited.response.status, 429);
  EXPECT_FALSE(llmq::is_raw_body(limited.response.body));
  EXPECT_EQ(limited.response.body["error"]["code"], "429");
}

/// Every body answered with 200 gives the same status, usage and (parsed) content with and
/// without raw_success_body: the scan that replaces the parse agrees with it.
TEST(RawSuccessBody, AgreesWithTheParserOnEdgeCases) {
  const std::vector<std::string> bodies = {
      R"({"usage":{"prompt_tokens":7,"completion_tokens":2}})",
      " \t\r\n{ \"usage\" : { \"prompt_tokens\" : 7 , \"completion_tokens\" : 2 } } \n",
      R"({"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":9,"completion_tokens":4}})",
      R"({"usage":{"prompt_tokens":9},"usage":null})",
      R"({"usage":{"prompt_tokens":9,"prompt_tokens":"x","completion_tokens":2.0}})",
      R"({"usage":{"prompt_tokens":-3,"completion_tokens":1e2,"total_tokens":0}})",
      R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775808}})",
      R"({"usage":{"prompt_tokens":99999999999999999999999}})",
      R"({"us\u0061ge":{"prompt_tokens":5,"completion_tokens":6}})",
      R"({"usage":{"prompt_tok\u0065ns":5}})",
      R"({"x":{"usage":{"prompt_tokens":5}},"usage":{"completion_tokens":8}})",
      R"({"a":[1,-0,0.5,-1.25e-3,2E+8,true,false,null,"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]})",
      "{\"text\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f\"}",
      "\xef\xbb\xbf{\"usage\":{\"prompt_tokens\":3}}",  // byte order mark
      std::string(100, '[') + std::string(100, ']'),
      "{\"deep\":" + std::string(80, '[') + std::string(80, ']') + "}",
      R"([{"usage":{"prompt_tokens":5}}])",
      R"("just a string")",
      "{}",
      // Malformed: each must be a 502 either way.
      "",
      "{",
      R"({"a":1,})",
      R"({"a":01})",
      R"({"a":1.})",
      R"({"a":.5})",
      R"({"a":1e})",
      R"({"a":+1})",
      R"({"a":tru})",
      R"({"a":NaN})",
      R"({"a":"\x"})",
      R"({"a":"\u12"})",
      R"({"a":"\ud800"})",
      R"({"a":"\udc00"})",
      R"({"a":"\ud800\u0041"})",
      "{\"a\":\"tab\there\"}",
      "{\"a\":\"\xc0\xaf\"}",          // overlong
      "{\"a\":\"\xed\xa0\x80\"}",      // an encoded surrogate
      "{\"a\":\"\xf4\x90\x80\x80\"}",  // above U+10FFFF
      "{\"a\":\"\xe2\x82\"}",          // cut short
      "{\"a\":\"\x80\"}",
      R"({"a":1} {"b":2})",
      R"({"a":1}x)",
      R"({"a" 1})",
      R"({a:1})",
  };
  asio::io_context io;
  std::size_t next = 0;
  LoopbackServer server(
      io, [&](const ReceivedRequest&) { return llmq::testing::json_reply(200, bodies[next / 2]); });
  const llmq::Deployment d = azure(server);
  llmq::ProviderOptions options;
  options.raw_success_body = true;
  auto client = make_client(io);
  llmq::ChatCompletionExecutor raw(client, options);
  llmq::ChatCompletionExecutor parsed(client);
  std::size_t raw_bodies = 0;
  for (const std::string& body : bodies) {
    SCOPED_TRACE(body);
    const Call r = run_executor(io, raw, chat_body(), &d);
    ++next;
    const Call p = run_executor(io, parsed, chat_body(), &d);
    ++next;
    EXPECT_EQ(r.response.status, p.response.status);
    EXPECT_EQ(r.telemetry.llm_outcome.status, p.telemetry.llm_outcome.status);
    EXPECT_EQ(r.telemetry.prompt_tokens, p.telemetry.prompt_tokens);
    EXPECT_EQ(r.telemetry.completion_tokens, p.telemetry.completion_tokens);
    if (llmq::is_raw_body(r.response.body)) {
      ++raw_bodies;
      EXPECT_EQ(llmq::response_body_text(r.response.body), body);
      EXPECT_EQ(json::parse(body), p.response.body);
    } else {
      EXPECT_EQ(r.response.body, p.response.body);
    }
  }
  EXPECT_EQ(next, bodies.size() * 2);
  // The well-formed objects without escaped names, a byte order mark or deep nesting.
  EXPECT_EQ(raw_bodies, 12u);
}

// ---- streaming ----------------------------------------------------------------------------

Reply sse_reply(std::vector<std::string> events) {
  Reply r;
  r.headers.emplace_back("Content-Type", "text/event-stream");
  r.chunks = std::move(events);
  r.chunk_delay = 5ms;
  return r;
}

/// A 429 with its Retry-After, as Azure answers before any event.
Reply slow_down_reply() {
  Reply r = llmq::testing::json_reply(429, R"({"error":{"code":"429","message":"slow down"}})");
  r.headers.emplace_back("retry-after-ms", "800");
  return r;
}

TEST(StreamingChat, DeltasAreAssembledIntoOneCompletion) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    return sse_reply({
        // Azure: a first chunk with no choices, only prompt filter results.
        "data: "
        "{\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],"
        "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{"
        "}}]}\n\n",
        "data: "
        "{\"id\":\"c9\",\"object\":\"chat.completion.chunk\",\"created\":7,"
        "\"model\":\"gpt-4o\","
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
        "\"\"},\"finish_reason\":null}]}\n\n",
        "data: "
        "{\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
        "\"finish_reason\":null}]}\n",
        "\ndata: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" "
        "wor",  // split mid-event
        "ld\"},\"finish_reason\":null}]}\r\n\r\n: keep-alive comment\n\n",
        "data: "
        "{\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
        "\"stop\"}]}\n\n",
        "data: "
        "{\"id\":\"c9\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_"
        "tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    });
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  json body = chat_body();
  body["stream"] = true;
  const Call call = run_executor(io, executor, body, &d);

  ASSERT_EQ(server.requests().size(), 1u);
  const json sent = json::parse(server.requests()[0].body);
  EXPECT_EQ(sent["stream"], true);
  EXPECT_EQ(sent["stream_options"]["include_usage"], true);
  EXPECT_EQ(server.requests()[0].header("accept"), "text/event-stream");

  ASSERT_EQ(call.response.status, 200) << call.response.body.dump();
  const json& r = call.response.body;
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"], "c9");
  EXPECT_EQ(r["model"], "gpt-4o");
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["message"]["content"], "Hello world");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"]["total_tokens"], 11);
  EXPECT_EQ(call.telemetry.prompt_tokens, 9);
  EXPECT_EQ(call.telemetry.completion_tokens, 2);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 200);
}

/// One streamed chat call to a server that answers with these events.
Call streamed_chat_call(std::vector<std::string> events) {
  asio::io_context io;
  LoopbackServer server(io, [&](const ReceivedRequest&) { return sse_reply(events); });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  json body = chat_body();
  body["stream"] = true;
  return run_executor(io, executor, body, &d);
}

TEST(StreamingChat, StreamEndingEarlyIs502) {
  const Call call = streamed_chat_call(
      {"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hal\"}}]}\n\n"});
  EXPECT_EQ(call.response.status, 502);
  EXPECT_EQ(call.response.body["error"]["code"], "bad_upstream_response");
  EXPECT_EQ(call.telemetry.llm_outcome.status, 502);
}

TEST(StreamingChat, DeeplyNestedEventIs502) {
  const Call call =
      streamed_chat_call({"data: " + deep_json_object(100'000) + "\n\n", "data: [DONE]\n\n"});
  EXPECT_EQ(call.response.status, 502);
  EXPECT_EQ(call.response.body["error"]["code"], "bad_upstream_response");
  EXPECT_NE(call.response.body["error"]["message"].get<std::string>().find("event stream"),
            std::string::npos);
  EXPECT_EQ(call.telemetry.llm_outcome.status, 502);
}

TEST(StreamingChat, ErrorAnswerToAStreamedRequestPassesThrough) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return slow_down_reply(); });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  json body = chat_body();
  body["stream"] = true;
  const Call call = run_executor(io, executor, body, &d);
  EXPECT_EQ(call.response.status, 429);
  EXPECT_EQ(call.response.body["error"]["message"], "slow down");
  EXPECT_EQ(call.telemetry.llm_outcome.retry_after, 800ms);
}

// ---- streamed answers (process_streaming_request) -----------------------------------------

struct StreamCall {
  std::vector<std::string> chunks;
  llmq::Response response;
  llmq::TelemetryData telemetry;
  bool threw_aborted = false;
};

/// Runs `executor`'s streamed form against its reader; the reader stops after
/// `read_limit` chunks (negative: reads to the end) and closes the stream.
StreamCall run_streaming(asio::io_context& io, llmq::RequestExecutor& executor, json body,
                         const llmq::Deployment* llm, int read_limit = -1) {
  auto state = std::make_shared<llmq::detail::StreamState>(io.get_executor(), 4);
  const llmq::Request req = test_request(std::move(body));
  llmq::ChosenDeployments chosen;
  chosen.llm = llm;
  StreamCall call;
  call.telemetry.request_id = req.id;
  llmq::StreamWriter writer(state);
  auto produce = [&]() -> awaitable<void> {
    try {
      call.response =
          co_await executor.process_streaming_request(req, chosen, call.telemetry, writer);
    } catch (const boost::system::system_error& e) {
      call.threw_aborted = e.code() == asio::error::operation_aborted;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "the streamed call threw: " << e.what();
    }
    state->finish(boost::system::error_code(), call.response);
  };
  auto consume = [&]() -> awaitable<void> {
    llmq::ResponseStream s(state);
    while (read_limit < 0 || static_cast<int>(call.chunks.size()) < read_limit) {
      std::optional<std::string> c = co_await s.next();
      if (!c) break;
      call.chunks.push_back(std::move(*c));
    }
  };
  int done = 0;
  auto one_done = [&](std::exception_ptr) {
    if (++done == 2) io.stop();
  };
  asio::co_spawn(io, produce(), one_done);
  asio::co_spawn(io, consume(), one_done);
  io.restart();
  io.run_for(10s);
  EXPECT_EQ(done, 2) << "the streamed call did not finish";
  return call;
}

const std::vector<std::string> kStreamEvents = {
    "data: {\"id\":\"\",\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0,"
    "\"content_filter_results\":{\"hate\":{\"filtered\":false}}}]}\n\n",
    "data: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c9\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
    "\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
    "data: [DONE]\n\n",
};

/// The `data:` text of an event of kStreamEvents.
std::string data_of(const std::string& event) { return event.substr(6, event.size() - 8); }

TEST(StreamedChat, ChunksPassUnchangedAndTheUsageChunkOnlyWhenAsked) {
  for (const bool asked : {false, true}) {
    SCOPED_TRACE(asked);
    asio::io_context io;
    LoopbackServer server(io, [](const ReceivedRequest&) { return sse_reply(kStreamEvents); });
    const llmq::Deployment d = azure(server);
    llmq::ChatCompletionExecutor executor(make_client(io));
    json body = chat_body();  // no "stream": the streamed form sets it
    if (asked) body["stream_options"]["include_usage"] = true;
    const StreamCall call = run_streaming(io, executor, body, &d);
    ASSERT_EQ(server.requests().size(), 1u);
    const json sent = json::parse(server.requests()[0].body);
    EXPECT_EQ(sent["stream"], true);
    EXPECT_EQ(sent["stream_options"]["include_usage"], true);
    std::vector<std::string> expected = {data_of(kStreamEvents[0]), data_of(kStreamEvents[1]),
                                         data_of(kStreamEvents[2])};
    if (asked) expected.push_back(data_of(kStreamEvents[3]));
    EXPECT_EQ(call.chunks, expected);  // byte for byte, content filter fields included
    EXPECT_EQ(call.response.status, 200) << call.response.body.dump();
    EXPECT_EQ(call.response.body["usage"]["total_tokens"], 11);
    EXPECT_EQ(call.telemetry.prompt_tokens, 9);
    EXPECT_EQ(call.telemetry.completion_tokens, 2);
    EXPECT_EQ(call.telemetry.llm_outcome.status, 200);
  }
}

TEST(StreamedChat, AStreamThatBreaksOffEndsWithA502AfterTheChunksSent) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    return sse_reply({kStreamEvents[1], "data: {\"id\":\"c9\",\"cho"});
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const StreamCall call = run_streaming(io, executor, chat_body(), &d);
  EXPECT_EQ(call.chunks, std::vector<std::string>{data_of(kStreamEvents[1])});
  EXPECT_EQ(call.response.status, 502);
  EXPECT_EQ(call.response.body["error"]["code"], "bad_upstream_response");
  EXPECT_EQ(call.telemetry.llm_outcome.status, 502);
}

TEST(StreamedChat, AnErrorEventEndsTheStreamWithIt) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    return sse_reply({kStreamEvents[1],
                      "data: {\"error\":{\"message\":\"overloaded\",\"code\":\"x\"}}\n\n",
                      kStreamEvents[2]});
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const StreamCall call = run_streaming(io, executor, chat_body(), &d);
  EXPECT_EQ(call.chunks.size(), 1u);
  EXPECT_EQ(call.response.status, 502);
  EXPECT_EQ(call.response.body["error"]["message"], "overloaded");
}

TEST(StreamedChat, AnErrorBeforeTheStreamIsTheUpstreamsAnswerWithNothingWritten) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return slow_down_reply(); });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  const StreamCall call = run_streaming(io, executor, chat_body(), &d);
  EXPECT_TRUE(call.chunks.empty());
  EXPECT_EQ(call.response.status, 429);
  EXPECT_EQ(call.telemetry.llm_outcome.retry_after, 800ms);
}

TEST(StreamedChat, AReaderThatLeavesAbortsTheUpstreamCallAndItsConnection) {
  asio::io_context io;
  std::vector<std::string> many;
  for (int i = 0; i < 200; ++i) many.push_back(kStreamEvents[1]);
  LoopbackServer server(io, [&](const ReceivedRequest&) { return sse_reply(many); });
  const llmq::Deployment d = azure(server);
  auto client = make_client(io);
  llmq::ChatCompletionExecutor executor(client);
  const StreamCall call = run_streaming(io, executor, chat_body(), &d, 3);
  EXPECT_EQ(call.chunks.size(), 3u);
  EXPECT_TRUE(call.threw_aborted);
  // The half-read connection was closed, not pooled: the next call opens a new one.
  const Call next = run_executor(io, executor, chat_body(), &d);
  (void)next;
  EXPECT_EQ(server.accepted(), 2u);
}

// ---- cancellation -------------------------------------------------------------------------

TEST(ExecutorCancellation, TerminalCancellationReachesTheHttpRequest) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  const llmq::Deployment d = azure(server);
  llmq::ChatCompletionExecutor executor(make_client(io));
  llmq::Request req;
  req.body = chat_body();
  llmq::ChosenDeployments chosen;
  chosen.llm = &d;
  llmq::TelemetryData telemetry;
  asio::cancellation_signal signal;
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(
      io, executor.process_request(req, chosen, telemetry),
      asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr e, llmq::Response) {
        done = true;
        error = e;
      }));
  run_bounded(io, [&]() -> awaitable<int> {
    while (server.requests().empty()) {
      asio::steady_timer t(co_await asio::this_coro::executor, 2ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    signal.emit(asio::cancellation_type::terminal);
    const auto start = std::chrono::steady_clock::now();
    while (!done && std::chrono::steady_clock::now() - start < 2s) {
      asio::steady_timer t(co_await asio::this_coro::executor, 2ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    co_return 0;
  }());
  ASSERT_TRUE(done);
  ASSERT_TRUE(error);
  try {
    std::rethrow_exception(error);
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), asio::error::operation_aborted);
  }
  EXPECT_EQ(telemetry.llm_outcome.status, 0);  // no outcome: the deployment did nothing wrong
}

// ---- through an LLMQueue --------------------------------------------------------------------

TEST(DefaultExecutors, BasicUsageThroughTheQueue) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    return req.target.find("/embeddings") != std::string::npos
               ? llmq::testing::json_reply(200, kEmbeddingAnswer)
               : chat_reply();
  });
  llmq::LLMConfig config;
  llmq::AzureOpenAIConfig group;
  group.api_key = kAzureKey;
  group.api_version = "2024-10-21";
  group.azure_endpoint = server.url("/");
  llmq::AzureModelConfig chat_model;
  chat_model.unique_model_id = "gpt-4o";
  chat_model.model_name_in_azure = "gpt-4o";
  chat_model.deployment_name_in_azure = "gpt-4o-prod";
  chat_model.model_type = llmq::ModelType::chat;
  chat_model.req_per_min = 600;
  chat_model.tokens_per_min = 100000;
  llmq::AzureModelConfig emb_model = chat_model;
  emb_model.unique_model_id = "emb";
  emb_model.model_name_in_azure = "text-embedding-3-small";
  emb_model.deployment_name_in_azure = "emb-prod";
  emb_model.model_type = llmq::ModelType::embeddings;
  group.azure_oai_models = {chat_model, emb_model};
  config.azure_open_ai.push_back(group);

  auto client = make_client(io);
  llmq::LLMQueue queue(io.get_executor(), config, {});
  llmq::register_default_executors(queue, client);
  const auto [chat,
              emb] = run_bounded(io, [&]() -> awaitable<std::pair<llmq::Response, llmq::Response>> {
    co_await queue.initiate();
    llmq::Response c = co_await queue.execute_request("chat_completion", chat_body(), "user123");
    llmq::ModelPreferences prefs;
    prefs.require_llm_model = false;
    prefs.require_embedding_model = true;
    llmq::Response e = co_await queue.execute_request("embeddings", json::parse(R"({"input":"x"})"),
                                                      "user123", prefs);
    co_await queue.graceful_shutdown();
    co_return std::make_pair(std::move(c), std::move(e));
  }());
  EXPECT_EQ(chat.status, 200);
  EXPECT_EQ(chat.body["choices"][0]["message"]["content"], "Hi there");
  EXPECT_EQ(emb.status, 200);
  EXPECT_EQ(emb.body["object"], "list");
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[0].target,
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(server.requests()[1].target,
            "/openai/deployments/emb-prod/embeddings?api-version=2024-10-21");
  EXPECT_THROW(llmq::register_default_executors(queue, nullptr), llmq::ConfigError);
}

}  // namespace
