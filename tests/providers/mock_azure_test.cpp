// Tests of the mock Azure OpenAI server (tools/mock_azure): the rate-limit core with a
// fake clock, the config loader, the service's determinism, and the server over loopback
// with a small Beast client (in-process, port 0), plus the llmq-mock-azure program.

#include <llmq/mock/config.hpp>
#include <llmq/mock/rate_window.hpp>
#include <llmq/mock/server.hpp>
#include <llmq/mock/service.hpp>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if defined(LLMQ_MOCK_AZURE_EXE)
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
extern char** environ;
#endif

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using json = nlohmann::json;
using llmq::mock::DeploymentConfig;
using llmq::mock::DeploymentRateLimiter;
using llmq::mock::DeploymentType;
using llmq::mock::FaultConfig;
using llmq::mock::MockAzureServer;
using llmq::mock::MockConfig;
using llmq::mock::MockConfigError;
using llmq::mock::MockHttpRequest;
using llmq::mock::MockService;
using llmq::mock::RateLimitReason;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------
// DeploymentRateLimiter with a fake clock
// ---------------------------------------------------------------------------------

const Clock::time_point kT0 = Clock::time_point{} + std::chrono::hours(1);

TEST(MockRateWindow, PerSecondWindowCapsBursts) {
  DeploymentRateLimiter limiter(600, 0);  // 10 per second
  EXPECT_EQ(limiter.per_second_cap(), 10);
  for (int i = 0; i < 10; ++i) {
    const auto d = limiter.try_acquire(kT0 + milliseconds(10 * i), 1);
    ASSERT_TRUE(d.allowed) << i;
  }
  const auto refused = limiter.try_acquire(kT0 + milliseconds(100), 1);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.reason, RateLimitReason::requests);
  // The oldest entry (t0) leaves the 1 s window at t0 + 1 s.
  EXPECT_EQ(refused.retry_after, milliseconds(900));
  EXPECT_EQ(refused.remaining_requests, 590);
  EXPECT_FALSE(limiter.try_acquire(kT0 + milliseconds(999), 1).allowed);
  EXPECT_TRUE(limiter.try_acquire(kT0 + seconds(1), 1).allowed);
}

TEST(MockRateWindow, TenSecondWindowBindsBelowSixtyRpm) {
  DeploymentRateLimiter limiter(30, 0);  // 1 per second (at least 1), 5 per 10 s
  EXPECT_EQ(limiter.per_second_cap(), 1);
  EXPECT_EQ(limiter.per_10_seconds_cap(), 5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.try_acquire(kT0 + seconds(i), 1).allowed) << i;
  const auto refused = limiter.try_acquire(kT0 + seconds(5), 1);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, seconds(5));
  EXPECT_FALSE(limiter.try_acquire(kT0 + milliseconds(9999), 1).allowed);
  EXPECT_TRUE(limiter.try_acquire(kT0 + seconds(10), 1).allowed);
}

TEST(MockRateWindow, RejectedRequestsAreNotCharged) {
  DeploymentRateLimiter limiter(60, 0);  // 1 per second
  EXPECT_TRUE(limiter.try_acquire(kT0, 1).allowed);
  for (int i = 1; i < 10; ++i)
    EXPECT_FALSE(limiter.try_acquire(kT0 + milliseconds(100 * i), 1).allowed);
  EXPECT_EQ(limiter.requests_in(kT0 + milliseconds(999), seconds(60)), 1);
  const auto next = limiter.try_acquire(kT0 + seconds(1), 1);
  EXPECT_TRUE(next.allowed);
  EXPECT_EQ(next.remaining_requests, 58);
}

TEST(MockRateWindow, TokensPerMinuteChargesEstimatesOnArrival) {
  DeploymentRateLimiter limiter(0, 1000);
  auto d = limiter.try_acquire(kT0, 600);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining_tokens, 400);
  EXPECT_EQ(d.remaining_requests, -1);
  d = limiter.try_acquire(kT0 + seconds(1), 600);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, RateLimitReason::tokens);
  EXPECT_EQ(d.retry_after, seconds(59));
  EXPECT_EQ(d.remaining_tokens, 400);  // the refused 600 were not charged
  d = limiter.try_acquire(kT0 + seconds(2), 400);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining_tokens, 0);
  // The first charge leaves the window a minute after it was made.
  EXPECT_FALSE(limiter.try_acquire(kT0 + milliseconds(59999), 600).allowed);
  EXPECT_TRUE(limiter.try_acquire(kT0 + seconds(60), 600).allowed);
  EXPECT_EQ(limiter.tokens_in_minute(kT0 + seconds(60)), 1000);
}

TEST(MockRateWindow, EstimateAboveTheLimitNeverFits) {
  DeploymentRateLimiter limiter(0, 100);
  const auto d = limiter.try_acquire(kT0, 101);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, RateLimitReason::tokens);
  EXPECT_EQ(d.retry_after, seconds(60));
}

TEST(MockRateWindow, UnlimitedAndReset) {
  DeploymentRateLimiter open(0, 0);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(open.try_acquire(kT0, 1'000'000).allowed);
  DeploymentRateLimiter limiter(60, 0);
  EXPECT_TRUE(limiter.try_acquire(kT0, 1).allowed);
  EXPECT_FALSE(limiter.try_acquire(kT0, 1).allowed);
  limiter.reset();
  EXPECT_TRUE(limiter.try_acquire(kT0, 1).allowed);
}

TEST(MockRateWindow, PeakTrackerCountsAnySlidingSecond) {
  llmq::mock::PeakRateTracker peak;
  for (int i = 0; i < 5; ++i) peak.record(kT0 + milliseconds(300 * i));  // 0 .. 1.2 s
  EXPECT_EQ(peak.peak(), 4U);  // 0, 0.3, 0.6, 0.9 lie within one second
  peak.reset();
  EXPECT_EQ(peak.peak(), 0U);
}

// ---------------------------------------------------------------------------------
// Config loading
// ---------------------------------------------------------------------------------

std::string error_of(const std::string& yaml) {
  try {
    (void)llmq::mock::parse_mock_config(yaml);
  } catch (const MockConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(MockConfig, ParsesAFullDeployment) {
  const MockConfig cfg = llmq::mock::parse_mock_config(R"(
api_key: "0123"
seed: 7
latency: {distribution: uniform, min_ms: 1, max_ms: 3}
deployments:
  - name: gpt
    model: gpt-4o
    req_per_min: 120
    tokens_per_min: 5000
    faults:
      error_rate: {500: 0.25, 503: 0.25}
      reset_rate: 0.1
  - name: emb
    type: embeddings
    embedding_dimensions: 4
    api_key: 00042
)");
  EXPECT_EQ(cfg.api_key, "0123");
  EXPECT_EQ(cfg.seed, 7U);
  EXPECT_EQ(cfg.latency.distribution, llmq::mock::LatencyConfig::Distribution::uniform);
  ASSERT_EQ(cfg.deployments.size(), 2U);
  EXPECT_EQ(cfg.deployments[0].model, "gpt-4o");
  EXPECT_EQ(cfg.deployments[0].req_per_min, 120);
  EXPECT_EQ(cfg.deployments[0].tokens_per_min, 5000);
  EXPECT_DOUBLE_EQ(cfg.deployments[0].faults.error_rate.at(503), 0.25);
  EXPECT_DOUBLE_EQ(cfg.deployments[0].faults.reset_rate, 0.1);
  EXPECT_EQ(cfg.deployments[1].type, DeploymentType::embeddings);
  EXPECT_EQ(cfg.deployments[1].model, "emb");
  EXPECT_EQ(cfg.deployments[1].embedding_dimensions, 4);
  EXPECT_EQ(cfg.deployments[1].api_key, "00042");  // plain scalar kept verbatim
}

TEST(MockConfig, ErrorsNameTheKeyAndLine) {
  EXPECT_EQ(error_of("deployments:\n  - name: a\n    req_per_min: -1\n"),
            "mock config: deployments[0].req_per_min: must be an integer in [0, "
            "1000000000000] (line 3)");
  EXPECT_NE(error_of("deployments:\n  - name: a\n    rpm: 5\n").find("deployments[0].rpm: unknown"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    type: completion\n")
                .find("deployments[0].type: must be one of: chat, embeddings"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - {name: a}\n  - {name: a}\n")
                .find("deployments[1].name: duplicates"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    faults: {reset_rate: 0.6, stall_rate: 0.6}\n")
                .find("deployments[0].faults: the fault rates add up to more than 1"),
            std::string::npos);
  EXPECT_NE(error_of("seed: 1\n").find("deployments: is required"), std::string::npos);
  // Syntax errors as the library's and the gateway's settings report them.
  EXPECT_NE(error_of("deployments: [\n").find("mock config: YAML syntax error at column"),
            std::string::npos);
  EXPECT_NE(error_of("deployments: [\n").find("(line "), std::string::npos);
  EXPECT_NE(error_of("deployments: []\n---\ndeployments: []\n")
                .find("mock config: expected one YAML document, found 2 (line 3)"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    faults: {error_rate: {200: 0.5}}\n")
                .find("deployments[0].faults.error_rate.200: status must be in 400..599"),
            std::string::npos);
}

TEST(MockConfig, ErrorsNeverQuoteKeys) {
  const std::string msg = error_of("api_key: [\"super-secret\"]\ndeployments:\n  - name: a\n");
  EXPECT_NE(msg.find("api_key: must be a string"), std::string::npos);
  EXPECT_EQ(msg.find("super-secret"), std::string::npos);
}

#if defined(LLMQ_MOCK_EXAMPLE_YAML)
TEST(MockConfig, ExampleFileLoads) {
  const MockConfig cfg = llmq::mock::load_mock_config(LLMQ_MOCK_EXAMPLE_YAML);
  EXPECT_GE(cfg.deployments.size(), 3U);
  EXPECT_FALSE(cfg.api_key.empty());
}
#endif

TEST(MockConfig, FaultsFromJson) {
  const FaultConfig f =
      llmq::mock::parse_fault_config(json::parse(R"({"error_rate":{"500":0.5},"force_429":true})"));
  EXPECT_DOUBLE_EQ(f.error_rate.at(500), 0.5);
  EXPECT_TRUE(f.force_429);
  EXPECT_THROW((void)llmq::mock::parse_fault_config(json::parse(R"({"reset_rate":2})")),
               MockConfigError);
  EXPECT_THROW((void)llmq::mock::parse_fault_config(json::parse(R"({"nope":1})")), MockConfigError);
  const FaultConfig round = llmq::mock::parse_fault_config(llmq::mock::to_json(f));
  EXPECT_EQ(round.error_rate, f.error_rate);
  EXPECT_EQ(round.force_429, f.force_429);
}

TEST(MockConfig, StreamRateAndMidStreamFaults) {
  const MockConfig cfg = llmq::mock::parse_mock_config(R"(
stream_tokens_per_second: 40
deployments:
  - name: a
    stream_tokens_per_second: 2.5
    faults:
      stream_break_rate: 0.1
      stream_stall_rate: 0.2
      stream_malformed_rate: 0.3
      stream_fault_after: 7
      burst_429_duration_ms: 1500
      burst_429_period_ms: 10000
  - name: b
)");
  EXPECT_DOUBLE_EQ(cfg.stream_tokens_per_second, 40);
  EXPECT_DOUBLE_EQ(cfg.deployments[0].stream_tokens_per_second.value_or(0), 2.5);
  EXPECT_FALSE(cfg.deployments[1].stream_tokens_per_second.has_value());
  const FaultConfig& f = cfg.deployments[0].faults;
  EXPECT_DOUBLE_EQ(f.stream_break_rate, 0.1);
  EXPECT_DOUBLE_EQ(f.stream_stall_rate, 0.2);
  EXPECT_DOUBLE_EQ(f.stream_malformed_rate, 0.3);
  EXPECT_EQ(f.stream_fault_after, 7U);
  EXPECT_EQ(f.burst_429_duration, milliseconds(1500));
  EXPECT_EQ(f.burst_429_period, milliseconds(10000));
  EXPECT_EQ(cfg.deployments[1].faults.stream_fault_after, 3U);  // the default

  // The runtime (JSON) form reads and writes the same keys.
  const FaultConfig round = llmq::mock::parse_fault_config(llmq::mock::to_json(f));
  EXPECT_DOUBLE_EQ(round.stream_break_rate, 0.1);
  EXPECT_DOUBLE_EQ(round.stream_stall_rate, 0.2);
  EXPECT_DOUBLE_EQ(round.stream_malformed_rate, 0.3);
  EXPECT_EQ(round.stream_fault_after, 7U);
  EXPECT_EQ(round.burst_429_duration, milliseconds(1500));
  EXPECT_EQ(round.burst_429_period, milliseconds(10000));

  EXPECT_NE(error_of("stream_tokens_per_second: -1\ndeployments:\n  - name: a\n")
                .find("stream_tokens_per_second: must be a number of events per second"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    stream_tokens_per_second: fast\n")
                .find("deployments[0].stream_tokens_per_second: must be a number"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    faults: {stream_break_rate: 0.6, "
                     "stream_stall_rate: 0.6}\n")
                .find("the fault rates add up to more than 1"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    faults: {burst_429_duration_ms: 2000, "
                     "burst_429_period_ms: 1000}\n")
                .find("deployments[0].faults.burst_429_period_ms: must be at least"),
            std::string::npos);
  EXPECT_NE(error_of("deployments:\n  - name: a\n    faults: {stream_fault_after: -1}\n")
                .find("deployments[0].faults.stream_fault_after: must be an integer"),
            std::string::npos);
  EXPECT_THROW((void)llmq::mock::parse_fault_config(json::parse(R"({"burst_429_duration_ms":-5})")),
               MockConfigError);
}

// ---------------------------------------------------------------------------------
// Test configuration shared by the service and server tests
// ---------------------------------------------------------------------------------

constexpr const char* kKey = "test-key";

DeploymentConfig deployment(const std::string& name, DeploymentType type = DeploymentType::chat,
                            std::int64_t rpm = 0, std::int64_t tpm = 0) {
  DeploymentConfig d;
  d.name = name;
  d.model = name + "-model";
  d.type = type;
  d.req_per_min = rpm;
  d.tokens_per_min = tpm;
  return d;
}

MockConfig test_config() {
  MockConfig cfg;
  cfg.api_key = kKey;
  cfg.seed = 1234;
  cfg.deployments.push_back(deployment("chat"));
  DeploymentConfig keyed = deployment("keyed");
  keyed.api_key = "own-key";
  cfg.deployments.push_back(keyed);
  cfg.deployments.push_back(deployment("emb", DeploymentType::embeddings));
  cfg.deployments.push_back(deployment("burst", DeploymentType::chat, 60, 0));  // 1 per second
  cfg.deployments.push_back(deployment("tpm", DeploymentType::chat, 0, 5000));
  cfg.deployments.push_back(deployment("faulty"));
  return cfg;
}

json chat_body(const std::string& text, std::optional<int> max_tokens = 100) {
  json body;
  body["messages"] = json::array();
  body["messages"].push_back({{"role", "system"}, {"content", "You are terse."}});
  body["messages"].push_back({{"role", "user"}, {"content", text}});
  if (max_tokens) body["max_tokens"] = *max_tokens;
  return body;
}

std::string classic(const std::string& deployment, const std::string& op = "chat/completions") {
  return "/openai/deployments/" + deployment + "/" + op + "?api-version=2024-10-21";
}

// ---------------------------------------------------------------------------------
// MockService without sockets
// ---------------------------------------------------------------------------------

MockHttpRequest post_request(const std::string& target, const json& body) {
  MockHttpRequest r;
  r.method = "POST";
  r.target = target;
  r.headers.emplace_back("api-key", kKey);
  r.body = body.dump();
  return r;
}

std::vector<unsigned> status_sequence(std::uint64_t seed) {
  MockConfig cfg = test_config();
  cfg.seed = seed;
  cfg.deployments[0].faults.error_rate[500] = 0.5;
  MockService service(cfg);
  std::vector<unsigned> out;
  for (int i = 0; i < 64; ++i)
    out.push_back(
        service.handle(post_request(classic("chat"), chat_body("x")), kT0).response.status);
  return out;
}

TEST(MockService, FaultsAreReproducibleForASeed) {
  const auto a = status_sequence(99);
  const auto b = status_sequence(99);
  EXPECT_EQ(a, b);
  EXPECT_NE(std::count(a.begin(), a.end(), 500U), 0);
  EXPECT_NE(std::count(a.begin(), a.end(), 200U), 0);
  EXPECT_NE(a, status_sequence(100));
}

TEST(MockService, ResetReseedsAndZeroes) {
  MockConfig cfg = test_config();
  cfg.deployments[0].faults.error_rate[503] = 0.5;
  MockService service(cfg);
  std::vector<unsigned> first;
  std::vector<unsigned> second;
  for (int i = 0; i < 32; ++i)
    first.push_back(
        service.handle(post_request(classic("chat"), chat_body("x")), kT0).response.status);
  EXPECT_EQ(service.counters("chat").requests, 32U);
  service.reset();
  EXPECT_EQ(service.counters("chat").requests, 0U);
  for (int i = 0; i < 32; ++i)
    second.push_back(
        service.handle(post_request(classic("chat"), chat_body("x")), kT0).response.status);
  EXPECT_EQ(first, second);
}

TEST(MockService, LatencyIsSampledFromTheSeededDistribution) {
  MockConfig cfg = test_config();
  llmq::mock::LatencyConfig l;
  l.distribution = llmq::mock::LatencyConfig::Distribution::uniform;
  l.min_ms = 10;
  l.max_ms = 20;
  cfg.deployments[0].latency = l;
  cfg.deployments[1].latency = llmq::mock::LatencyConfig{};
  cfg.deployments[1].latency->ms = 7;
  MockService a(cfg);
  MockService b(cfg);
  std::set<long long> distinct;
  for (int i = 0; i < 20; ++i) {
    const auto pa = a.handle(post_request(classic("chat"), chat_body("x")), kT0);
    const auto pb = b.handle(post_request(classic("chat"), chat_body("x")), kT0);
    EXPECT_EQ(pa.delay, pb.delay);
    EXPECT_GE(pa.delay.count(), 10);
    EXPECT_LE(pa.delay.count(), 20);
    distinct.insert(pa.delay.count());
  }
  EXPECT_GT(distinct.size(), 1U);
  MockHttpRequest keyed = post_request(classic("keyed"), chat_body("x"));
  EXPECT_EQ(a.handle(keyed, kT0).delay, milliseconds(7));
}

TEST(MockService, ChatUsageIsBelowTheClientEstimate) {
  MockService service(test_config());
  const std::string text(400, 'a');
  const auto plan = service.handle(post_request(classic("chat"), chat_body(text, 1000)), kT0);
  ASSERT_EQ(plan.response.status, 200U);
  const json body = json::parse(plan.response.body);
  const auto prompt = body["usage"]["prompt_tokens"].get<std::int64_t>();
  EXPECT_EQ(prompt, 3 + (3 + 4) + (3 + 100));  // primer + two messages
  EXPECT_EQ(service.counters("chat").charged_tokens,
            static_cast<std::uint64_t>(prompt) + 1000 + 3);  // + max_tokens + roles (2 + 1)
  const auto budget = service.handle(post_request(classic("chat"), chat_body(text, 3)), kT0);
  const json cut = json::parse(budget.response.body);
  EXPECT_EQ(cut["usage"]["completion_tokens"], 3);
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "length");
}

/// The content of a streamed chat answer (the deltas of choice 0 joined), and whether
/// the events end with [DONE]; every event before [DONE] must be valid JSON.
struct StreamText {
  std::string text;
  bool done = false;
  std::size_t invalid = 0;  // events that are not valid JSON
};

StreamText stream_text(const std::vector<std::string>& events) {
  StreamText out;
  for (const std::string& e : events) {
    std::string_view v(e);
    while (!v.empty() && v.back() == '\n') v.remove_suffix(1);
    if (v == "data: [DONE]") {
      out.done = true;
      continue;
    }
    const json chunk = json::parse(v.substr(v.rfind("data: ", 0) == 0 ? 6 : 0), nullptr, false);
    if (chunk.is_discarded()) {
      ++out.invalid;
      continue;
    }
    if (!chunk.contains("choices") || chunk["choices"].empty()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) out.text += delta["content"].get<std::string>();
  }
  return out;
}

std::string filler(std::size_t words) {
  std::string out;
  for (std::size_t i = 0; i < words; ++i) out += " tok";
  return out;
}

TEST(MockService, LongAnswerHasTheAskedForTokens) {
  MockService service(test_config());
  json body = chat_body("hi", std::nullopt);
  body["mock_completion_tokens"] = 50;
  const auto plain = service.handle(post_request(classic("chat"), body), kT0);
  ASSERT_EQ(plain.response.status, 200U) << plain.response.body;
  const json j = json::parse(plain.response.body);
  EXPECT_EQ(j["usage"]["completion_tokens"], 50);
  // "Echo: hi" is 8 bytes, 2 tokens; 48 filler words of 4 bytes make up the rest.
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Echo: hi" + filler(48));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  body["stream"] = true;
  const auto streamed = service.handle(post_request(classic("chat"), body), kT0);
  ASSERT_EQ(streamed.action, llmq::mock::ResponsePlan::Action::stream);
  ASSERT_TRUE(streamed.events);
  // prelude, role, "Echo: ", "hi", 48 filler words, finish, [DONE]
  EXPECT_EQ(streamed.events->size(), 1U + 1U + 2U + 48U + 1U + 1U);
  const StreamText t = stream_text(streamed.events->all());
  EXPECT_EQ(t.text, "Echo: hi" + filler(48));
  EXPECT_TRUE(t.done);
  EXPECT_EQ(t.invalid, 0U);

  // max_tokens still cuts a long answer, at its budget.
  body["max_tokens"] = 10;
  body.erase("stream");
  const json cut =
      json::parse(service.handle(post_request(classic("chat"), body), kT0).response.body);
  EXPECT_EQ(cut["usage"]["completion_tokens"], 10);
  EXPECT_EQ(cut["choices"][0]["message"]["content"], "Echo: hi" + filler(8));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "length");

  for (const json& bad : {json(0), json(100001), json("many"), json(2.5)}) {
    body["mock_completion_tokens"] = bad;
    const auto r = service.handle(post_request(classic("chat"), body), kT0);
    EXPECT_EQ(r.response.status, 400U) << bad;
    EXPECT_EQ(json::parse(r.response.body)["error"]["param"], "mock_completion_tokens");
  }
}

TEST(MockService, StreamTokenRateSetsTheEventGap) {
  MockConfig cfg = test_config();
  cfg.stream_tokens_per_second = 50;
  cfg.deployments[1].stream_tokens_per_second = 4;  // "keyed"
  cfg.deployments[2].stream_tokens_per_second = 0;  // "emb" (never streams)
  MockService service(cfg);
  json body = chat_body("x");
  body["stream"] = true;
  EXPECT_EQ(service.handle(post_request(classic("chat"), body), kT0).event_gap,
            std::chrono::microseconds(20000));
  MockHttpRequest keyed = post_request(classic("keyed"), body);
  EXPECT_EQ(service.handle(keyed, kT0).event_gap, std::chrono::microseconds(250000));
  body.erase("stream");  // plain answers are not paced
  EXPECT_EQ(service.handle(post_request(classic("chat"), body), kT0).event_gap,
            std::chrono::microseconds(0));
}

TEST(MockService, MidStreamFaultsCutAfterTheConfiguredEvents) {
  using Plan = llmq::mock::ResponsePlan;
  MockService service(test_config());
  json body = chat_body("one two three");
  body["stream"] = true;
  FaultConfig f;
  f.stream_break_rate = 1.0;
  f.stream_fault_after = 4;
  service.set_faults("faulty", f);
  const Plan broken = service.handle(post_request(classic("faulty"), body), kT0);
  EXPECT_EQ(broken.cut, Plan::StreamCut::close);
  EXPECT_EQ(broken.cut_after, 4U);
  EXPECT_TRUE(broken.close);

  f = FaultConfig{};
  f.stream_stall_rate = 1.0;
  f.stream_fault_after = 1000;  // past the end: clamped before [DONE]
  service.set_faults("faulty", f);
  const Plan stalled = service.handle(post_request(classic("faulty"), body), kT0);
  EXPECT_EQ(stalled.cut, Plan::StreamCut::stall);
  ASSERT_TRUE(stalled.events);
  EXPECT_EQ(stalled.cut_after, stalled.events->size() - 1);
  EXPECT_EQ(stalled.events->at(stalled.cut_after), "data: [DONE]\n\n");  // never sent

  f = FaultConfig{};
  f.stream_malformed_rate = 1.0;
  f.stream_fault_after = 2;
  service.set_faults("faulty", f);
  const Plan malformed = service.handle(post_request(classic("faulty"), body), kT0);
  EXPECT_EQ(malformed.cut, Plan::StreamCut::none);
  const auto events = malformed.events->all();
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    const bool valid = !json::parse(events[i].substr(6), nullptr, false).is_discarded();
    EXPECT_EQ(valid, i != 2) << i << ": " << events[i];
  }
  EXPECT_EQ(events.back(), "data: [DONE]\n\n");

  // A plain answer is spared the mid-stream faults.
  body.erase("stream");
  const Plan plain = service.handle(post_request(classic("faulty"), body), kT0);
  EXPECT_EQ(plain.response.status, 200U);
  EXPECT_FALSE(json::parse(plain.response.body, nullptr, false).is_discarded());
  const auto c = service.counters("faulty");
  EXPECT_EQ(c.stream_breaks, 1U);
  EXPECT_EQ(c.stream_stalls, 1U);
  EXPECT_EQ(c.stream_malformed, 1U);
  EXPECT_EQ(c.ok, 1U);  // only the plain answer is complete
}

TEST(MockService, BurstWindowsAnswer429WithTheTimeLeft) {
  MockConfig cfg = test_config();
  cfg.deployments[4].faults.burst_429_duration = milliseconds(1000);  // "tpm": 5000 TPM
  cfg.deployments[4].faults.burst_429_period = milliseconds(5000);
  MockService service(cfg);
  auto at = [&](milliseconds offset) {
    return service.handle(post_request(classic("tpm"), chat_body("x", 10)), kT0 + offset).response;
  };
  const auto first = at(milliseconds(0));  // opens the first window
  EXPECT_EQ(first.status, 429U);
  EXPECT_EQ(first.header("retry-after-ms"), "1000");
  EXPECT_EQ(first.header("retry-after"), "1");
  EXPECT_EQ(at(milliseconds(600)).header("retry-after-ms"), "400");
  EXPECT_EQ(service.counters("tpm").charged_tokens, 0U);  // refused requests are not charged
  EXPECT_EQ(at(milliseconds(1000)).status, 200U);
  EXPECT_EQ(at(milliseconds(4999)).status, 200U);
  const auto second = at(milliseconds(5250));
  EXPECT_EQ(second.status, 429U);
  EXPECT_EQ(second.header("retry-after-ms"), "750");
  EXPECT_EQ(at(milliseconds(6000)).status, 200U);
  const auto c = service.counters("tpm");
  EXPECT_EQ(c.bursts_429, 3U);
  EXPECT_EQ(c.rate_limited, 3U);
  EXPECT_EQ(c.ok, 3U);

  // Set again without a period: one window, from the next request on.
  FaultConfig once;
  once.burst_429_duration = milliseconds(300);
  service.set_faults("tpm", once);
  EXPECT_EQ(at(milliseconds(20000)).status, 429U);
  EXPECT_EQ(at(milliseconds(20299)).header("retry-after-ms"), "1");
  EXPECT_EQ(at(milliseconds(20300)).status, 200U);
  EXPECT_EQ(at(milliseconds(40000)).status, 200U);
}

// ---------------------------------------------------------------------------------
// A small Beast client (callbacks on its own io_context, bounded by timeouts)
// ---------------------------------------------------------------------------------

struct HttpResult {
  beast::error_code ec;
  unsigned status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool keep_alive = false;

  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  [[nodiscard]] bool has_header(const std::string& name) const { return headers.count(name) > 0; }
  [[nodiscard]] json json_body() const { return json::parse(body, nullptr, false); }
};

class TestClient {
 public:
  explicit TestClient(unsigned short port) : stream_(ioc_) {
    stream_.expires_after(seconds(5));
    beast::error_code ec;
    stream_.socket().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    connect_error_ = ec;
  }

  HttpResult request(const std::string& method, const std::string& target, const std::string& body,
                     const std::vector<std::pair<std::string, std::string>>& headers,
                     milliseconds timeout = milliseconds(10000)) {
    http::request<http::string_body> req;
    req.method_string(method);
    req.target(target);
    req.version(11);
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() && req[http::field::content_type].empty())
      req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    HttpResult r;
    if (connect_error_) {
      r.ec = connect_error_;
      return r;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    stream_.expires_after(timeout);
    http::async_write(stream_, req, [&](beast::error_code ec, std::size_t) {
      if (ec) {
        r.ec = ec;
        return;
      }
      http::async_read(stream_, buffer_, parser,
                       [&](beast::error_code ec2, std::size_t) { r.ec = ec2; });
    });
    run();
    collect(parser, r);
    return r;
  }

  /// Sends raw bytes and reads one response.
  HttpResult raw(const std::string& bytes, milliseconds timeout = milliseconds(10000)) {
    HttpResult r;
    http::response_parser<http::string_body> parser;
    stream_.expires_after(timeout);
    asio::async_write(stream_, asio::buffer(bytes), [&](beast::error_code ec, std::size_t) {
      if (ec) {
        r.ec = ec;
        return;
      }
      http::async_read(stream_, buffer_, parser,
                       [&](beast::error_code ec2, std::size_t) { r.ec = ec2; });
    });
    run();
    collect(parser, r);
    return r;
  }

  /// Reads the next response on the connection.
  HttpResult read(milliseconds timeout = milliseconds(10000)) {
    HttpResult r;
    http::response_parser<http::string_body> parser;
    stream_.expires_after(timeout);
    http::async_read(stream_, buffer_, parser,
                     [&](beast::error_code ec, std::size_t) { r.ec = ec; });
    run();
    collect(parser, r);
    return r;
  }

 private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }

  static void collect(http::response_parser<http::string_body>& parser, HttpResult& r) {
    if (!parser.is_header_done()) return;
    const auto& msg = parser.get();
    r.status = msg.result_int();
    for (const auto& f : msg) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      r.headers[name] = std::string(f.value());
    }
    r.body = msg.body();
    r.keep_alive = msg.keep_alive();
  }

  asio::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  beast::error_code connect_error_;
};

// ---------------------------------------------------------------------------------
// The server in-process
// ---------------------------------------------------------------------------------

class MockServerTest : public ::testing::Test {
 protected:
  void start(MockConfig cfg, int threads = 1) {
    server_ = std::make_unique<MockAzureServer>(ioc_.get_executor(), std::move(cfg));
    port_ = server_->listen();
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] {
        ioc_.run();
        std::lock_guard lock(mu_);
        ++finished_;
        cv_.notify_all();
      });
    }
  }

  void SetUp() override { start(test_config()); }

  void TearDown() override {
    if (!server_) return;
    server_->stop();
    {
      // stop() must end every connection (also stalled ones) so run() returns.
      std::unique_lock lock(mu_);
      const bool ended = cv_.wait_for(
          lock, seconds(10), [&] { return finished_ == static_cast<int>(threads_.size()); });
      EXPECT_TRUE(ended) << "io_context still busy after stop()";
    }
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    server_.reset();
  }

  void restart(MockConfig cfg, int threads = 1) {
    TearDown();
    ioc_.restart();
    finished_ = 0;
    start(std::move(cfg), threads);
  }

  HttpResult post(const std::string& target, const json& body, const std::string& key = kKey,
                  milliseconds timeout = milliseconds(10000)) {
    TestClient client(port_);
    return client.request("POST", target, body.dump(), {{"api-key", key}}, timeout);
  }

  HttpResult get(const std::string& target) {
    TestClient client(port_);
    return client.request("GET", target, "", {});
  }

  /// A streamed chat answer of deployment "faulty" with these faults.
  HttpResult faulty_stream(const FaultConfig& f, milliseconds timeout = milliseconds(10000)) {
    server_->set_faults("faulty", f);
    json body = chat_body("one two three four");
    body["stream"] = true;
    return post(classic("faulty"), body, kKey, timeout);
  }

  asio::io_context ioc_;
  std::unique_ptr<MockAzureServer> server_;
  unsigned short port_ = 0;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  int finished_ = 0;
};

void expect_chat_completion(const HttpResult& r, const std::string& model,
                            const std::string& content) {
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  const json j = r.json_body();
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0U);
  EXPECT_EQ(j["model"], model);
  ASSERT_EQ(j["choices"].size(), 1U);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], content);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(j["choices"][0]["content_filter_results"].is_object());
  EXPECT_EQ(j["prompt_filter_results"][0]["prompt_index"], 0);
  const auto& usage = j["usage"];
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(usage["completion_tokens"].get<int>(), 0);
  EXPECT_EQ(usage["total_tokens"].get<int>(),
            usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
}

TEST_F(MockServerTest, ClassicChatCompletion) {
  const auto r = post(classic("chat"), chat_body("hello mock"));
  expect_chat_completion(r, "chat-model", "Echo: hello mock");
  EXPECT_FALSE(r.header("x-request-id").empty());
  EXPECT_FALSE(r.has_header("x-ratelimit-remaining-requests"));  // unlimited deployment
  EXPECT_TRUE(r.keep_alive);
}

TEST_F(MockServerTest, EchoIsTheFirstFortyCharactersOfTheLastUserMessage) {
  json body = chat_body("first question");
  body["messages"].push_back({{"role", "assistant"}, {"content", "an answer"}});
  json parts = json::array();
  parts.push_back({{"type", "text"}, {"text", "0123456789012345678901234567890123456789"}});
  parts.push_back({{"type", "text"}, {"text", "-cut"}});
  body["messages"].push_back({{"role", "user"}, {"content", parts}});
  const auto r = post(classic("chat"), body);
  expect_chat_completion(r, "chat-model", "Echo: 0123456789012345678901234567890123456789");
}

TEST_F(MockServerTest, V1AndOpenAiRoutesTakeTheModelFromTheBody) {
  json body = chat_body("via v1");
  body["model"] = "chat";
  expect_chat_completion(post("/openai/v1/chat/completions", body), "chat-model", "Echo: via v1");
  TestClient client(port_);
  const auto bearer = client.request("POST", "/v1/chat/completions", body.dump(),
                                     {{"authorization", std::string("Bearer ") + kKey}});
  expect_chat_completion(bearer, "chat-model", "Echo: via v1");
  EXPECT_EQ(server_->counters("chat").ok, 2U);
}

TEST_F(MockServerTest, EmbeddingsOnEveryRoute) {
  json body;
  body["input"] = json::array({"alpha", "beta", "gamma"});
  body["model"] = "emb";
  for (const std::string& target :
       {classic("emb", "embeddings"), std::string("/openai/v1/embeddings"),
        std::string("/v1/embeddings")}) {
    const auto r = post(target, body);
    ASSERT_EQ(r.status, 200U) << target << " " << r.body;
    const json j = r.json_body();
    EXPECT_EQ(j["object"], "list");
    EXPECT_EQ(j["model"], "emb-model");
    ASSERT_EQ(j["data"].size(), 3U);
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(j["data"][i]["object"], "embedding");
      EXPECT_EQ(j["data"][i]["index"], i);
      ASSERT_EQ(j["data"][i]["embedding"].size(), 8U);  // default dimensions
    }
    EXPECT_NE(j["data"][0]["embedding"], j["data"][1]["embedding"]);
    EXPECT_EQ(j["usage"]["prompt_tokens"], 5);  // 2 + 1 + 2 tokens (ceil(bytes / 4))
    EXPECT_EQ(j["usage"]["total_tokens"], 5);
  }
}

TEST_F(MockServerTest, EmbeddingsAreDeterministicAndHonourDimensions) {
  json one;
  one["input"] = "beta";
  one["dimensions"] = 4;
  json many;
  many["input"] = json::array({"alpha", "beta"});
  many["dimensions"] = 4;
  const json a = post(classic("emb", "embeddings"), one).json_body();
  const json b = post(classic("emb", "embeddings"), many).json_body();
  ASSERT_EQ(a["data"][0]["embedding"].size(), 4U);
  EXPECT_EQ(a["data"][0]["embedding"], b["data"][1]["embedding"]);
  double norm = 0;
  for (const auto& x : a["data"][0]["embedding"]) norm += x.get<double>() * x.get<double>();
  EXPECT_NEAR(norm, 1.0, 1e-4);

  json tokens;
  tokens["input"] = json::array({json::array({1, 2, 3}), json::array({4, 5})});
  tokens["encoding_format"] = "base64";
  const auto r = post(classic("emb", "embeddings"), tokens);
  ASSERT_EQ(r.status, 200U) << r.body;
  const json t = r.json_body();
  ASSERT_EQ(t["data"].size(), 2U);
  EXPECT_EQ(t["data"][1]["index"], 1);
  EXPECT_EQ(t["data"][0]["embedding"].get<std::string>().size(), 44U);  // 8 floats, base64
  EXPECT_EQ(t["usage"]["prompt_tokens"], 5);

  json bad;
  bad["input"] = json::array();
  EXPECT_EQ(post(classic("emb", "embeddings"), bad).status, 400U);
  bad["input"] = "x";
  bad["dimensions"] = 0;
  EXPECT_EQ(post(classic("emb", "embeddings"), bad).status, 400U);
}

TEST_F(MockServerTest, NotFoundForMissingApiVersionAndUnknownDeployment) {
  const auto no_version = post("/openai/deployments/chat/chat/completions", chat_body("x"));
  EXPECT_EQ(no_version.status, 404U);
  EXPECT_EQ(no_version.json_body()["error"]["code"], "DeploymentNotFound");
  const auto unknown = post(classic("nope"), chat_body("x"));
  EXPECT_EQ(unknown.status, 404U);
  EXPECT_EQ(unknown.json_body()["error"]["code"], "DeploymentNotFound");
  json body = chat_body("x");
  body["model"] = "nope";
  const auto v1 = post("/openai/v1/chat/completions", body);
  EXPECT_EQ(v1.status, 404U);
  EXPECT_EQ(v1.json_body()["error"]["code"], "DeploymentNotFound");
  EXPECT_EQ(get("/no/such/path").status, 404U);
  EXPECT_EQ(server_->stats()["unrouted"], 4);
}

TEST_F(MockServerTest, UnauthorizedOnWrongKey) {
  const auto wrong = post(classic("chat"), chat_body("x"), "wrong-key");
  EXPECT_EQ(wrong.status, 401U);
  const json err = wrong.json_body()["error"];
  ASSERT_TRUE(err["code"].is_string());
  EXPECT_EQ(err["code"], "401");
  EXPECT_NE(err["message"].get<std::string>().find("Access denied"), std::string::npos);
  TestClient client(port_);
  const auto no_key = client.request("POST", classic("chat"), chat_body("x").dump(), {});
  EXPECT_EQ(no_key.status, 401U);
  const auto bad_bearer = client.request("POST", classic("chat"), chat_body("x").dump(),
                                         {{"authorization", "Bearer wrong-key"}});
  EXPECT_EQ(bad_bearer.status, 401U);
  // A deployment's own key and the server-wide key both open it.
  EXPECT_EQ(post(classic("keyed"), chat_body("x"), "own-key").status, 200U);
  EXPECT_EQ(post(classic("keyed"), chat_body("x"), kKey).status, 200U);
  EXPECT_EQ(post(classic("chat"), chat_body("x"), "own-key").status, 401U);
  EXPECT_EQ(server_->counters("chat").errors.at(401), 4U);
}

TEST_F(MockServerTest, BadRequests) {
  TestClient client(port_);
  const auto bad_json =
      client.request("POST", classic("chat"), "{\"messages\": [", {{"api-key", kKey}});
  EXPECT_EQ(bad_json.status, 400U);
  EXPECT_TRUE(bad_json.json_body()["error"].is_object());
  json no_messages;
  no_messages["max_tokens"] = 5;
  const auto missing = post(classic("chat"), no_messages);
  EXPECT_EQ(missing.status, 400U);
  EXPECT_EQ(missing.json_body()["error"]["param"], "messages");
  json no_input;
  no_input["dimensions"] = 4;
  const auto missing_input = post(classic("emb", "embeddings"), no_input);
  EXPECT_EQ(missing_input.status, 400U);
  EXPECT_EQ(missing_input.json_body()["error"]["param"], "input");
  json no_model = chat_body("x");
  EXPECT_EQ(post("/v1/chat/completions", no_model).status, 400U);
  // Chat on an embeddings deployment.
  EXPECT_EQ(post(classic("emb"), chat_body("x")).json_body()["error"]["code"],
            "OperationNotSupported");
  EXPECT_EQ(server_->counters("chat").errors.at(400), 2U);
}

TEST_F(MockServerTest, WrongMethodAndUnknownPath) {
  TestClient client(port_);
  const auto r = client.request("GET", classic("chat"), "", {{"api-key", kKey}});
  EXPECT_EQ(r.status, 405U);
  EXPECT_EQ(r.header("allow"), "POST");
  EXPECT_EQ(client.request("POST", "/openai/deployments/chat/completions/x", "{}", {}).status,
            404U);
  EXPECT_EQ(client.request("DELETE", "/mock/stats", "", {}).status, 405U);
}

TEST_F(MockServerTest, RequestBurstGets429WithAzureHeadersAndBody) {
  // "burst" allows 60 RPM: one request per second window.
  const auto first = post(classic("burst"), chat_body("one"));
  ASSERT_EQ(first.status, 200U) << first.body;
  EXPECT_EQ(first.header("x-ratelimit-remaining-requests"), "59");
  const auto second = post(classic("burst"), chat_body("two"));
  ASSERT_EQ(second.status, 429U);
  EXPECT_EQ(second.header("retry-after"), "1");
  const int retry_ms = std::stoi(second.header("retry-after-ms"));
  EXPECT_GT(retry_ms, 0);
  EXPECT_LE(retry_ms, 1000);
  EXPECT_EQ(second.header("x-ratelimit-remaining-requests"), "59");  // not charged
  EXPECT_TRUE(second.has_header("x-ratelimit-remaining-requests"));
  const json err = second.json_body()["error"];
  ASSERT_TRUE(err["code"].is_string());
  EXPECT_EQ(err["code"], "429");
  const std::string msg = err["message"].get<std::string>();
  EXPECT_NE(msg.find("ChatCompletions_Create"), std::string::npos);
  EXPECT_NE(msg.find("2024-10-21"), std::string::npos);
  EXPECT_NE(msg.find("Please retry after 1 seconds"), std::string::npos);
  const auto c = server_->counters("burst");
  EXPECT_EQ(c.requests, 2U);
  EXPECT_EQ(c.ok, 1U);
  EXPECT_EQ(c.rate_limited, 1U);
  EXPECT_EQ(c.max_requests_in_1s, 2U);
  EXPECT_EQ(server_->stats()["deployments"]["burst"]["window"]["requests_last_60s"], 1);
}

TEST_F(MockServerTest, TokensPerMinuteExceededGets429AndIsNotCharged) {
  // "tpm" allows 5000 estimated tokens per minute; max_tokens dominates the estimate.
  const auto big = post(classic("tpm"), chat_body("a", 3000));
  ASSERT_EQ(big.status, 200U) << big.body;
  const int left = std::stoi(big.header("x-ratelimit-remaining-tokens"));
  EXPECT_LT(left, 2000);
  EXPECT_GT(left, 1900);
  const auto refused = post(classic("tpm"), chat_body("b", 3000));
  ASSERT_EQ(refused.status, 429U);
  EXPECT_EQ(refused.json_body()["error"]["code"], "429");
  EXPECT_NE(refused.json_body()["error"]["message"].get<std::string>().find("token rate limit"),
            std::string::npos);
  EXPECT_GE(std::stoi(refused.header("retry-after")), 59);
  EXPECT_EQ(std::stoi(refused.header("x-ratelimit-remaining-tokens")), left);
  // The refused 3000 were not charged, so 1800 more still fit.
  const auto small = post(classic("tpm"), chat_body("c", 1800));
  EXPECT_EQ(small.status, 200U) << small.body;
  EXPECT_EQ(server_->counters("tpm").rate_limited, 1U);
}

TEST_F(MockServerTest, InjectedServerError) {
  FaultConfig f;
  f.error_rate[500] = 1.0;
  server_->set_faults("faulty", f);
  const auto r = post(classic("faulty"), chat_body("x"));
  EXPECT_EQ(r.status, 500U);
  EXPECT_EQ(r.json_body()["error"]["code"], "InternalServerError");
  EXPECT_EQ(server_->counters("faulty").errors.at(500), 1U);
  EXPECT_EQ(server_->counters("faulty").ok, 0U);
}

TEST_F(MockServerTest, ResetFaultClosesWithoutAnswer) {
  FaultConfig f;
  f.reset_rate = 1.0;
  server_->set_faults("faulty", f);
  const auto r = post(classic("faulty"), chat_body("x"));
  EXPECT_TRUE(r.ec);
  EXPECT_EQ(r.status, 0U);
  EXPECT_EQ(server_->counters("faulty").resets, 1U);
}

TEST_F(MockServerTest, MalformedFaultAnswers200WithInvalidJson) {
  FaultConfig f;
  f.malformed_rate = 1.0;
  server_->set_faults("faulty", f);
  const auto r = post(classic("faulty"), chat_body("x"));
  EXPECT_FALSE(r.ec) << r.ec.message();
  EXPECT_EQ(r.status, 200U);
  EXPECT_FALSE(r.body.empty());
  EXPECT_TRUE(r.json_body().is_discarded()) << r.body;
  EXPECT_EQ(server_->counters("faulty").malformed, 1U);
  EXPECT_EQ(server_->counters("faulty").ok, 0U);
}

TEST_F(MockServerTest, TruncatedFaultCutsTheBody) {
  FaultConfig f;
  f.truncated_rate = 1.0;
  server_->set_faults("faulty", f);
  const auto r = post(classic("faulty"), chat_body("x"));
  EXPECT_EQ(r.ec, http::error::partial_message) << r.ec.message();
  EXPECT_EQ(r.status, 200U);
  EXPECT_EQ(server_->counters("faulty").truncated, 1U);
}

TEST_F(MockServerTest, StallFaultNeverAnswersAndStopEndsIt) {
  FaultConfig f;
  f.stall_rate = 1.0;
  server_->set_faults("faulty", f);
  const auto r = post(classic("faulty"), chat_body("x"), kKey, milliseconds(300));
  EXPECT_EQ(r.ec, beast::error::timeout) << r.ec.message();
  EXPECT_EQ(r.status, 0U);
  EXPECT_EQ(server_->counters("faulty").stalls, 1U);
  // A stall with the client still connected: TearDown's stop() must end it.
  std::thread idle([port = port_] {
    TestClient client(port);
    json body = chat_body("x");
    (void)client.request("POST", classic("faulty"), body.dump(), {{"api-key", kKey}},
                         milliseconds(20000));
  });
  for (int i = 0; i < 500 && server_->counters("faulty").stalls < 2; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(server_->counters("faulty").stalls, 2U);
  server_->stop();  // closes the stalled connection: the client sees it at once
  idle.join();
}

TEST_F(MockServerTest, SlowBodyArrivesWholeButLate) {
  FaultConfig f;
  f.slow_body_rate = 1.0;
  f.slow_body_ms = milliseconds(160);
  server_->set_faults("faulty", f);
  const auto start = Clock::now();
  const auto r = post(classic("faulty"), chat_body("slow"));
  const auto elapsed = Clock::now() - start;
  expect_chat_completion(r, "faulty-model", "Echo: slow");
  EXPECT_GE(elapsed, milliseconds(160));  // 8 pieces, one 20 ms pause before each
  EXPECT_EQ(server_->counters("faulty").slow_bodies, 1U);
}

TEST_F(MockServerTest, Force429) {
  FaultConfig f;
  f.force_429 = true;
  f.force_429_retry_after = milliseconds(2500);
  server_->set_faults("faulty", f);
  for (int i = 0; i < 3; ++i) {
    const auto r = post(classic("faulty"), chat_body("x"));
    EXPECT_EQ(r.status, 429U);
    EXPECT_EQ(r.header("retry-after"), "3");
    EXPECT_EQ(r.header("retry-after-ms"), "2500");
  }
  EXPECT_EQ(server_->counters("faulty").rate_limited, 3U);
}

TEST_F(MockServerTest, FixedLatencyDelaysTheAnswer) {
  MockConfig cfg = test_config();
  cfg.latency.ms = 120;
  restart(cfg);
  const auto start = Clock::now();
  const auto r = post(classic("chat"), chat_body("x"));
  EXPECT_EQ(r.status, 200U);
  EXPECT_GE(Clock::now() - start, milliseconds(120));
}

std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto end = body.find("\n\n", start);
    if (end == std::string::npos) break;
    out.push_back(body.substr(start, end - start));
    start = end + 2;
  }
  return out;
}

TEST_F(MockServerTest, StreamingAnswersServerSentEvents) {
  json body = chat_body("stream me please");
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const auto r = post(classic("chat"), body);
  ASSERT_EQ(r.status, 200U) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  const auto events = sse_events(r.body);
  ASSERT_GE(events.size(), 5U);
  EXPECT_EQ(events.back(), "data: [DONE]");
  std::string text;
  bool saw_usage = false;
  bool saw_stop = false;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    ASSERT_EQ(events[i].rfind("data: ", 0), 0U) << events[i];
    const json chunk = json::parse(events[i].substr(6), nullptr, false);
    ASSERT_FALSE(chunk.is_discarded()) << events[i];
    if (i == 0) {
      EXPECT_TRUE(chunk["choices"].empty());  // filter results only
      EXPECT_TRUE(chunk["prompt_filter_results"].is_array());
      continue;
    }
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    if (chunk.contains("usage")) {
      saw_usage = true;
      EXPECT_TRUE(chunk["choices"].empty());
      EXPECT_GT(chunk["usage"]["completion_tokens"].get<int>(), 0);
      continue;
    }
    const json& choice = chunk["choices"][0];
    if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (choice["finish_reason"] == "stop") saw_stop = true;
  }
  EXPECT_EQ(text, "Echo: stream me please");
  EXPECT_TRUE(saw_usage);
  EXPECT_TRUE(saw_stop);
  EXPECT_EQ(server_->counters("chat").streams, 1U);
  // Without include_usage there is no usage chunk.
  body.erase("stream_options");
  const auto plain = post(classic("chat"), body);
  EXPECT_EQ(plain.body.find("\"usage\""), std::string::npos);
  EXPECT_NE(plain.body.find("data: [DONE]\n\n"), std::string::npos);
}

TEST_F(MockServerTest, StreamsAtTheTokenRateAndManyAtOnce) {
  MockConfig cfg = test_config();
  cfg.stream_tokens_per_second = 100;  // an event every 10 ms
  restart(cfg, 2);
  json body = chat_body("hi", std::nullopt);
  body["stream"] = true;
  body["mock_completion_tokens"] = 30;  // 2 echo pieces + 28 filler words
  constexpr int kStreams = 16;
  std::vector<std::string> bodies(kStreams);
  std::vector<unsigned> statuses(kStreams);
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      TestClient client(port_);
      const auto r = client.request("POST", classic("chat"), body.dump(), {{"api-key", kKey}});
      statuses[i] = r.status;
      bodies[i] = r.body;
    });
  }
  for (auto& t : clients) t.join();
  const auto elapsed = Clock::now() - start;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_EQ(statuses[i], 200U);
    const StreamText t = stream_text(sse_events(bodies[i]));
    EXPECT_EQ(t.text, "Echo: hi" + filler(28));
    EXPECT_TRUE(t.done);
  }
  // 34 events, 33 gaps of 10 ms: each stream lasts at least 330 ms; all of them were open
  // at once (one after the other they would take 16 x 330 ms).
  EXPECT_GE(elapsed, milliseconds(330));
  EXPECT_LT(elapsed, milliseconds(kStreams * 330));
  EXPECT_EQ(server_->counters("chat").streams, static_cast<std::uint64_t>(kStreams));
}

TEST_F(MockServerTest, StreamBreakClosesWithoutDone) {
  FaultConfig f;
  f.stream_break_rate = 1.0;
  f.stream_fault_after = 3;
  const auto r = faulty_stream(f);
  EXPECT_EQ(r.status, 200U);
  EXPECT_EQ(r.ec, http::error::partial_message) << r.ec.message();  // no terminating chunk
  const auto events = sse_events(r.body);
  ASSERT_EQ(events.size(), 3U) << r.body;
  EXPECT_EQ(stream_text(events).text, "Echo: ");  // prelude, role, first word
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  EXPECT_EQ(server_->counters("faulty").stream_breaks, 1U);
  EXPECT_EQ(server_->counters("faulty").ok, 0U);
}

TEST_F(MockServerTest, StreamStallSendsSomeEventsThenNothing) {
  FaultConfig f;
  f.stream_stall_rate = 1.0;
  f.stream_fault_after = 2;
  const auto start = Clock::now();
  const auto r = faulty_stream(f, milliseconds(400));
  EXPECT_GE(Clock::now() - start, milliseconds(400));
  EXPECT_EQ(r.ec, beast::error::timeout) << r.ec.message();
  EXPECT_EQ(r.status, 200U);
  EXPECT_EQ(sse_events(r.body).size(), 2U) << r.body;
  EXPECT_EQ(server_->counters("faulty").stream_stalls, 1U);
}

TEST_F(MockServerTest, StreamMalformedCutsOneEventAndGoesOn) {
  TestClient control(port_);
  const auto put = control.request("PUT", "/mock/deployments/faulty/faults",
                                   R"({"stream_malformed_rate":1,"stream_fault_after":3})", {});
  ASSERT_EQ(put.status, 200U) << put.body;
  EXPECT_EQ(put.json_body()["stream_fault_after"], 3);
  json body = chat_body("one two three four");
  body["stream"] = true;
  const auto r = post(classic("faulty"), body);
  ASSERT_FALSE(r.ec) << r.ec.message();
  const StreamText t = stream_text(sse_events(r.body));
  EXPECT_EQ(t.invalid, 1U) << r.body;
  EXPECT_TRUE(t.done);
  EXPECT_EQ(t.text, "Echo: two three four");  // "one " was in the cut event
  EXPECT_EQ(get("/mock/stats").json_body()["deployments"]["faulty"]["stream_malformed"], 1);
}

TEST_F(MockServerTest, BurstOf429SetAtRuntime) {
  TestClient control(port_);
  const auto put = control.request("PUT", "/mock/deployments/faulty/faults",
                                   R"({"burst_429_duration_ms":400})", {});
  ASSERT_EQ(put.status, 200U) << put.body;
  const auto limited = post(classic("faulty"), chat_body("x"));
  EXPECT_EQ(limited.status, 429U);
  EXPECT_EQ(limited.json_body()["error"]["code"], "429");
  const int left = std::stoi(limited.header("retry-after-ms"));
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 400);
  EXPECT_EQ(get("/mock/stats").json_body()["deployments"]["faulty"]["bursts_429"], 1);
}

TEST_F(MockServerTest, StatsResetAndRuntimeFaults) {
  EXPECT_EQ(post(classic("chat"), chat_body("a")).status, 200U);
  EXPECT_EQ(post(classic("chat"), chat_body("b"), "bad").status, 401U);
  const auto stats = get("/mock/stats");
  ASSERT_EQ(stats.status, 200U);
  const json chat = stats.json_body()["deployments"]["chat"];
  EXPECT_EQ(chat["requests"], 2);
  EXPECT_EQ(chat["ok"], 1);
  EXPECT_EQ(chat["errors"]["401"], 1);
  EXPECT_GT(chat["prompt_tokens"].get<int>(), 0);
  EXPECT_GT(chat["completion_tokens"].get<int>(), 0);
  EXPECT_EQ(chat["max_requests_in_1s"], 2);

  TestClient client(port_);
  const auto put =
      client.request("PUT", "/mock/deployments/chat/faults", R"({"error_rate":{"503":1.0}})", {});
  ASSERT_EQ(put.status, 200U) << put.body;
  EXPECT_EQ(put.json_body()["error_rate"]["503"], 1.0);
  EXPECT_EQ(post(classic("chat"), chat_body("c")).status, 503U);
  EXPECT_EQ(
      client.request("PUT", "/mock/deployments/chat/faults", R"({"reset_rate":7})", {}).status,
      400U);
  EXPECT_EQ(client.request("PUT", "/mock/deployments/none/faults", "{}", {}).status, 404U);
  EXPECT_EQ(client.request("PUT", "/mock/deployments/chat/faults", "{}", {}).status, 200U);
  EXPECT_EQ(post(classic("chat"), chat_body("d")).status, 200U);

  EXPECT_EQ(client.request("POST", "/mock/reset", "", {}).status, 200U);
  const json after = get("/mock/stats").json_body()["deployments"]["chat"];
  EXPECT_EQ(after["requests"], 0);
  EXPECT_EQ(after["ok"], 0);
  EXPECT_TRUE(after["errors"].empty());
  const auto health = get("/healthz");
  EXPECT_EQ(health.status, 200U);
  EXPECT_EQ(health.json_body()["status"], "ok");
}

TEST_F(MockServerTest, KeepAliveServesManyRequestsOnOneConnection) {
  TestClient client(port_);
  for (int i = 0; i < 5; ++i) {
    const auto r =
        client.request("POST", classic("chat"), chat_body("k").dump(), {{"api-key", kKey}});
    ASSERT_FALSE(r.ec) << i << ": " << r.ec.message();
    EXPECT_EQ(r.status, 200U);
    EXPECT_TRUE(r.keep_alive);
  }
  const auto last = client.request("POST", classic("chat"), chat_body("k").dump(),
                                   {{"api-key", kKey}, {"connection", "close"}});
  EXPECT_EQ(last.status, 200U);
  EXPECT_FALSE(last.keep_alive);
}

TEST_F(MockServerTest, ProtocolErrorsAreAnsweredNotFatal) {
  MockConfig cfg = test_config();
  cfg.max_body_bytes = 1024;
  restart(cfg);
  const auto big = post(classic("chat"), chat_body(std::string(4000, 'x')));
  EXPECT_EQ(big.status, 413U);
  TestClient garbage(port_);
  const auto r = garbage.raw("THIS IS NOT HTTP\r\n\r\n");
  EXPECT_EQ(r.status, 400U);
  TestClient continued(port_);
  const std::string body = chat_body("expect").dump();
  const auto cont = continued.raw("POST " + classic("chat") +
                                  " HTTP/1.1\r\nhost: x\r\napi-key: test-key\r\n"
                                  "expect: 100-continue\r\ncontent-length: " +
                                  std::to_string(body.size()) + "\r\n\r\n" + body);
  // The interim 100 Continue comes first, then the answer.
  EXPECT_EQ(cont.status, 100U);
  const auto answer = continued.read();
  EXPECT_EQ(answer.status, 200U);
  EXPECT_EQ(answer.json_body()["choices"][0]["message"]["content"], "Echo: expect");
  EXPECT_EQ(server_->stats()["protocol_errors"]["413"], 1);
  EXPECT_EQ(server_->stats()["protocol_errors"]["400"], 1);
  // And the server still works.
  EXPECT_EQ(post(classic("chat"), chat_body("x")).status, 200U);
}

TEST_F(MockServerTest, ManyThreadsAndClientsAtOnce) {
  restart(test_config(), 2);
  constexpr int kClients = 4;
  constexpr int kEach = 10;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      TestClient client(port_);
      for (int i = 0; i < kEach; ++i) {
        const auto r = client.request("POST", classic(c % 2 == 0 ? "chat" : "keyed"),
                                      chat_body("t").dump(), {{"api-key", kKey}});
        if (r.status == 200) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * kEach);
  EXPECT_EQ(server_->counters("chat").ok + server_->counters("keyed").ok,
            static_cast<std::uint64_t>(kClients * kEach));
}

TEST(MockServerListen, RefusesNonLoopbackAddresses) {
  asio::io_context ioc;
  MockAzureServer server(ioc.get_executor(), test_config());
  EXPECT_THROW((void)server.listen("0.0.0.0", 0), std::invalid_argument);
  EXPECT_EQ(server.port(), 0);
}

TEST(MockServerListen, BaseUrlNamesTheBoundPort) {
  asio::io_context ioc;
  MockAzureServer server(ioc.get_executor(), test_config());
  const unsigned short port = server.listen("localhost", 0);
  EXPECT_NE(port, 0);
  EXPECT_EQ(server.base_url(), "http://127.0.0.1:" + std::to_string(port));
  EXPECT_THROW((void)server.listen(), std::logic_error);
  server.stop();
  ioc.run_for(seconds(5));
}

// ---------------------------------------------------------------------------------
// The program
// ---------------------------------------------------------------------------------

#if defined(LLMQ_MOCK_AZURE_EXE)

struct Child {
  pid_t pid = -1;
  int out = -1;  // read end of stdout
  int err = -1;  // read end of stderr
};

Child spawn(const std::vector<std::string>& args) {
  int out[2];
  int err[2];
  EXPECT_EQ(::pipe(out), 0);
  EXPECT_EQ(::pipe(err), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, err[0]);
  std::vector<char*> argv;
  std::vector<std::string> storage = args;
  storage.insert(storage.begin(), LLMQ_MOCK_AZURE_EXE);
  for (auto& a : storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  Child c;
  const int rc =
      ::posix_spawn(&c.pid, LLMQ_MOCK_AZURE_EXE, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  ::close(err[1]);
  c.out = out[0];
  c.err = err[0];
  EXPECT_EQ(rc, 0);
  return c;
}

/// Reads from `fd` until `stop_at` appears, EOF, or the deadline passes.
std::string read_until(int fd, const std::string& stop_at, milliseconds limit) {
  std::string text;
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline && (stop_at.empty() || text.find(stop_at) == std::string::npos)) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<long long>(left, 1))) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  return text;
}

/// Exit status, or -1 if the child did not exit within the limit (it is then killed).
int wait_exit(pid_t pid, milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  int status = 0;
  while (Clock::now() < deadline) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

std::string temp_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(MockAzureProgram, ServesUntilSigterm) {
  const std::string cfg =
      temp_file("mock_prog.yaml", "api_key: k\ndeployments:\n  - name: gpt\n    type: chat\n");
  const std::string port_file = ::testing::TempDir() + "/mock_prog.port";
  std::remove(port_file.c_str());
  Child c = spawn({"--config", cfg, "--port-file", port_file});
  ASSERT_GT(c.pid, 0);
  const std::string out = read_until(c.out, "\n", seconds(20));
  ASSERT_EQ(out.rfind("listening on http://127.0.0.1:", 0), 0U) << out;
  const auto port = static_cast<unsigned short>(
      std::stoi(out.substr(std::string("listening on http://127.0.0.1:").size())));
  std::ifstream pf(port_file);
  int from_file = 0;
  pf >> from_file;
  EXPECT_EQ(from_file, port);
  {
    TestClient client(port);
    json body = chat_body("proc");
    body["model"] = "gpt";
    const auto r = client.request("POST", "/v1/chat/completions", body.dump(),
                                  {{"authorization", "Bearer k"}});
    expect_chat_completion(r, "gpt", "Echo: proc");
  }
  ::kill(c.pid, SIGTERM);
  EXPECT_EQ(wait_exit(c.pid, seconds(10)), 0);
  const std::string err = read_until(c.err, "", milliseconds(200));
  EXPECT_EQ(err.find("Bearer k"), std::string::npos);
  ::close(c.out);
  ::close(c.err);
}

TEST(MockAzureProgram, BadConfigExitsWithTwoAndNamesTheKey) {
  const std::string cfg =
      temp_file("mock_bad.yaml", "deployments:\n  - name: gpt\n    tokens_per_minute: 5\n");
  Child c = spawn({"--config", cfg});
  ASSERT_GT(c.pid, 0);
  const std::string err = read_until(c.err, "", seconds(20));
  EXPECT_EQ(wait_exit(c.pid, seconds(10)), 2);
  EXPECT_NE(err.find("deployments[0].tokens_per_minute: unknown key"), std::string::npos) << err;
  ::close(c.out);
  ::close(c.err);
  Child nohost = spawn({"--config", LLMQ_MOCK_EXAMPLE_YAML, "--host", "0.0.0.0"});
  EXPECT_EQ(wait_exit(nohost.pid, seconds(20)), 2);
  ::close(nohost.out);
  ::close(nohost.err);
}

#endif

}  // namespace
