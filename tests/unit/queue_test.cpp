// Runtime tests: LLMQueue with fake executors on a real io_context (no network).
#include <llmq/llmq.hpp>

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace {
namespace asio = boost::asio;
using asio::awaitable;
using nlohmann::json;
using namespace std::chrono_literals;

// ---- fixtures --------------------------------------------------------------------------

llmq::AzureModelConfig model(std::string id, llmq::ModelType type, std::int64_t rpm = 1'000'000,
                             std::int64_t tpm = 1'000'000'000, std::string name = "gpt-4o") {
  llmq::AzureModelConfig m;
  m.unique_model_id = id;
  m.model_name_in_azure = std::move(name);
  m.deployment_name_in_azure = std::move(id);
  m.model_type = type;
  m.req_per_min = rpm;
  m.tokens_per_min = tpm;
  m.error_backoff = 60s;
  return m;
}

llmq::LLMConfig make_config(std::vector<llmq::AzureModelConfig> models) {
  llmq::LLMConfig c;
  llmq::AzureOpenAIConfig g;
  g.api_key = "sk-TEST-SECRET-KEY";
  g.api_version = "2024-10-21";
  g.azure_endpoint = "http://127.0.0.1:1/";
  g.azure_oai_models = std::move(models);
  c.azure_open_ai.push_back(std::move(g));
  c.user_limits.max_num_requests_in_time_window = 1'000'000;
  c.user_limits.time_window = 60s;
  c.scheduler_limits.max_queue_size = 100'000;
  c.scheduler_limits.request_timeout = 30s;
  return c;
}

llmq::LLMConfig default_config() {
  return make_config({model("chat-a", llmq::ModelType::chat),
                      model("chat-b", llmq::ModelType::chat),
                      model("emb", llmq::ModelType::embeddings, 1'000'000, 1'000'000'000,
                            "text-embedding-3-small")});
}

json echo_body(const llmq::Request& req, const llmq::ChosenDeployments& chosen) {
  json j = json::object();
  j["id"] = req.id;
  j["user"] = req.user_id;
  j["input"] = req.body;
  j["llm"] = chosen.llm ? chosen.llm->unique_model_id : std::string();
  j["embedding"] = chosen.embedding ? chosen.embedding->unique_model_id : std::string();
  return j;
}

/// Answers at once with what it was given.
class EchoExecutor : public llmq::RequestExecutor {
 public:
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& t) override {
    ++calls;
    t.prompt_tokens = 7;
    t.completion_tokens = 3;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::atomic<int> calls{0};
};

/// Waits `delay` (honouring cancellation), then echoes.
class SleepExecutor : public llmq::RequestExecutor {
 public:
  explicit SleepExecutor(std::chrono::milliseconds delay) : delay_(delay) {}
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData&) override {
    ++started;
    asio::steady_timer timer(co_await asio::this_coro::executor, delay_);
    try {
      co_await timer.async_wait(asio::use_awaitable);
    } catch (const boost::system::system_error&) {
      ++cancelled;
      throw;
    }
    ++finished;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::atomic<int> started{0}, finished{0}, cancelled{0};

 private:
  std::chrono::milliseconds delay_;
};

class ThrowingExecutor : public llmq::RequestExecutor {
 public:
  awaitable<llmq::Response> process_request(const llmq::Request&, const llmq::ChosenDeployments&,
                                            llmq::TelemetryData&) override {
    throw std::runtime_error("upstream exploded");
    co_return llmq::Response{};
  }
};

/// Answers 429 with a Retry-After for one deployment, 200 for the others.
class ThrottledExecutor : public llmq::RequestExecutor {
 public:
  explicit ThrottledExecutor(std::string throttled) : throttled_(std::move(throttled)) {}
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& t) override {
    ++per_deployment[chosen.llm->unique_model_id];
    if (chosen.llm->unique_model_id == throttled_) {
      t.llm_outcome.status = 429;
      t.llm_outcome.retry_after = 10min;
      co_return llmq::Response{llmq::make_error_body("throttled", "rate_limit", "429"), 429};
    }
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::map<std::string, int> per_deployment;

 private:
  std::string throttled_;
};

/// Runs `body` on `io` to completion (bounded), rethrowing its exception.
void run_test(asio::io_context& io, std::function<awaitable<void>()> body,
              std::chrono::seconds limit = 60s) {
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(io, std::move(body), [&](std::exception_ptr ep) {
    error = ep;
    done = true;
  });
  io.run_for(limit);
  ASSERT_TRUE(done) << "test coroutine did not finish within " << limit.count() << " s";
  if (error) std::rethrow_exception(error);
}

json chat_body(std::string text = "Hello, world!") {
  json b = json::object();
  json msg = json::object();
  msg["role"] = "user";
  msg["content"] = std::move(text);
  b["messages"] = json::array({msg});
  b["max_tokens"] = 100;
  return b;
}

llmq::ModelPreferences pinned(std::string id) {
  llmq::ModelPreferences p;
  p.specific_llm_model = std::move(id);
  return p;
}

llmq::ModelPreferences pinned_name(std::string model_name) {
  llmq::ModelPreferences p;
  p.llm_model_name = std::move(model_name);
  return p;
}

/// Polls `done()` every millisecond until it holds; run_test bounds the total time.
template <class Pred>
awaitable<void> wait_until(Pred done) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (!done()) {
    t.expires_after(1ms);
    co_await t.async_wait(asio::use_awaitable);
  }
}

template <class E, class F>
awaitable<std::optional<E>> catch_error(F f) {
  try {
    co_await f();
  } catch (const E& e) {
    co_return e;
  }
  co_return std::nullopt;
}

struct Harness {
  /// Starts the queue, runs one request, shuts the queue down; returns the answer.
  llmq::Response run_one(std::string req_type, json body, std::string user,
                         llmq::ModelPreferences prefs = {}) {
    llmq::Response r;
    run_test(io, [&]() -> awaitable<void> {
      co_await queue->initiate();
      r = co_await queue->execute_request(req_type, body, user, prefs);
      co_await queue->graceful_shutdown();
    });
    return r;
  }

  asio::io_context io;
  std::shared_ptr<llmq::InMemoryTelemetryStore> telemetry =
      std::make_shared<llmq::InMemoryTelemetryStore>();
  std::unique_ptr<llmq::LLMQueue> queue;

  explicit Harness(llmq::LLMConfig config,
                   std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> execs,
                   llmq::QueueOptions options = {}) {
    options.telemetry_store = telemetry;
    if (options.telemetry_flush_interval == llmq::QueueOptions{}.telemetry_flush_interval)
      options.telemetry_flush_interval = 10ms;  // unless the test chose its own
    queue = std::make_unique<llmq::LLMQueue>(io.get_executor(), std::move(config), std::move(execs),
                                             std::move(options));
  }
};

// ---- tests -----------------------------------------------------------------------------

TEST(LLMQueueRuntime, ExecutesAndReturnsExecutorResponse) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}});
  llmq::Response got = h.run_one("chat_completion", chat_body(), "user123");
  auto [body, status] = got;
  EXPECT_EQ(status, 200);
  EXPECT_EQ(body["user"], "user123");
  EXPECT_EQ(body["input"], chat_body());
  EXPECT_TRUE(body["llm"] == "chat-a" || body["llm"] == "chat-b");
  EXPECT_EQ(body["embedding"], "");
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  const auto& t = records[0];
  EXPECT_EQ(t.status, 200);
  EXPECT_EQ(t.user_id, "user123");
  EXPECT_EQ(t.req_type, "chat_completion");
  EXPECT_EQ(t.llm_deployment, body["llm"].get<std::string>());
  EXPECT_EQ(got.request_id, t.request_id);
  EXPECT_EQ(got.request_id, body["id"]);
  EXPECT_EQ(t.prompt_tokens, 7);
  EXPECT_GT(t.estimated_tokens, 100);
  EXPECT_LE(t.received_at, t.queued_at);
  EXPECT_LE(t.queued_at, t.dispatched_at);
  EXPECT_LE(t.dispatched_at, t.completed_at);
  EXPECT_FALSE(t.payload.has_value());
  EXPECT_TRUE(h.telemetry->closed());
}

TEST(LLMQueueRuntime, ExactlyOneAnswerForEachOfTenThousandConcurrentRequests) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}});
  constexpr int n = 10'000;
  std::vector<int> answers(n, 0);
  std::vector<std::string> ids(n);
  int finished = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < n; ++i) {
      asio::co_spawn(
          ex,
          [&, i]() -> awaitable<void> {
            auto r = co_await h.queue->execute_request(
                "chat_completion", chat_body(std::to_string(i)), "user-" + std::to_string(i % 97));
            ++answers[static_cast<std::size_t>(i)];
            ids[static_cast<std::size_t>(i)] = r.body["id"].get<std::string>();
            if (r.body["input"]["messages"][0]["content"] != std::to_string(i))
              answers[static_cast<std::size_t>(i)] += 100;  // wrong answer delivered
          },
          [&](std::exception_ptr) { ++finished; });
    }
    co_await wait_until([&] { return finished >= n; });
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.admitted, static_cast<std::uint64_t>(n));
    EXPECT_EQ(s.completed, static_cast<std::uint64_t>(n));
    EXPECT_EQ(s.queue_depth, 0u);
    EXPECT_EQ(s.in_flight, 0u);
    co_await h.queue->graceful_shutdown();
  });
  for (int i = 0; i < n; ++i) ASSERT_EQ(answers[static_cast<std::size_t>(i)], 1) << "request " << i;
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end()) << "request ids must be unique";
  EXPECT_EQ(echo->calls.load(), n);
  EXPECT_EQ(h.telemetry->total_inserted(), static_cast<std::uint64_t>(n));
}

/// Answers its first call with a 429 and a Retry-After of `backoff`, then 200s.
class ThrottledOnceExecutor : public llmq::RequestExecutor {
 public:
  explicit ThrottledOnceExecutor(std::chrono::milliseconds backoff) : backoff_(backoff) {}
  awaitable<llmq::Response> process_request(const llmq::Request&, const llmq::ChosenDeployments&,
                                            llmq::TelemetryData& t) override {
    if (calls++ == 0) {
      t.llm_outcome.status = 429;
      t.llm_outcome.retry_after = backoff_;
      co_return llmq::Response{llmq::make_error_body("throttled", "rate_limit", "429"), 429};
    }
    co_return llmq::Response{json::object(), 200};
  }
  int calls = 0;  // one thread runs the io_context

 private:
  std::chrono::milliseconds backoff_;
};

TEST(LLMQueueRuntime, ADeepQueueIsDispatchedInSlicesLettingOtherWorkRun) {
  // One deployment, in backoff while 1000 requests queue up behind it. When the backoff
  // ends they all become dispatchable at once; a probe handler on the same thread must
  // get turns while they are being started, not only after all of them.
  auto exec = std::make_shared<ThrottledOnceExecutor>(200ms);
  Harness h(make_config({model("only", llmq::ModelType::chat)}), {{"chat_completion", exec}});
  constexpr int n = 1000;
  int answered = 0;
  std::vector<int> seen;  // executor calls started, at each probe turn
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    auto call = [&]() -> awaitable<void> {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      answered += r.status == 200;
    };
    asio::co_spawn(ex, call(), asio::detached);
    co_await wait_until([&] { return exec->calls == 1; });  // throttled: backoff began
    for (int i = 0; i < n; ++i) asio::co_spawn(ex, call(), asio::detached);
    asio::steady_timer tick(ex);
    for (;;) {  // the retry and the n new requests all wait for the backoff
      const llmq::QueueStats st = co_await h.queue->stats();
      if (st.queue_depth == n + 1) break;
      EXPECT_EQ(exec->calls, 1) << "dispatched during the backoff";
      tick.expires_after(1ms);
      co_await tick.async_wait(asio::use_awaitable);
    }
    while (exec->calls < n + 2) {  // the probe: one turn per post
      seen.push_back(exec->calls);
      co_await asio::post(ex, asio::use_awaitable);
    }
    co_await wait_until([&] { return answered == n + 1; });
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(answered, n + 1);
  std::set<int> between;
  for (int c : seen)
    if (c > 1 && c < n + 2) between.insert(c);
  EXPECT_GE(between.size(), 5u) << "the dispatch of " << n + 1
                                << " ready requests was not interleaved with other work";
}

TEST(LLMQueueRuntime, ExecutorExceptionBecomes500AndQueueKeepsServing) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(),
            {{"bad", std::make_shared<ThrowingExecutor>()}, {"chat_completion", echo}});
  llmq::Response bad, good;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    bad = co_await h.queue->execute_request("bad", chat_body(), "u");
    good = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(bad.status, 500);
  EXPECT_NE(bad.body["error"]["message"].get<std::string>().find("upstream exploded"),
            std::string::npos);
  EXPECT_EQ(good.status, 200);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].status, 500);
  EXPECT_NE(records[0].error.find("upstream exploded"), std::string::npos);
}

TEST(LLMQueueRuntime, RefusesBadRequestsAtOnceWithoutSpendingBudget) {
  auto config = make_config({model("chat-a", llmq::ModelType::chat)});
  config.user_limits.max_num_requests_in_time_window = 1;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  llmq::Response unknown_type, unknown_model, no_embeddings, wrong_kind, good;
  bool missing_user = false;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    unknown_type = co_await h.queue->execute_request("nope", chat_body(), "u");
    unknown_model =
        co_await h.queue->execute_request("chat_completion", chat_body(), "u", pinned("gpt-99"));
    llmq::ModelPreferences emb;
    emb.require_llm_model = false;
    emb.require_embedding_model = true;
    no_embeddings = co_await h.queue->execute_request("chat_completion", chat_body(), "u", emb);
    llmq::ModelPreferences wrong;
    wrong.specific_embedding_model = "chat-a";
    wrong.require_embedding_model = true;
    wrong_kind = co_await h.queue->execute_request("chat_completion", chat_body(), "u", wrong);
    try {
      co_await h.queue->execute_request("chat_completion", chat_body(), "");
    } catch (const llmq::UserIdHeaderMissingError& e) {
      missing_user = e.http_status() == 400;
    }
    // The one request the user may make is still available.
    good = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(unknown_type.status, 404);
  EXPECT_NE(unknown_type.body["error"]["message"].get<std::string>().find("'nope'"),
            std::string::npos);
  EXPECT_EQ(unknown_model.status, 400);
  EXPECT_NE(unknown_model.body["error"]["message"].get<std::string>().find("gpt-99"),
            std::string::npos);
  EXPECT_EQ(no_embeddings.status, 400);
  EXPECT_EQ(wrong_kind.status, 400);
  EXPECT_TRUE(missing_user);
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(h.telemetry->records().size(), 6u);  // rejections are recorded too
}

TEST(LLMQueueRuntime, UserLimitRaisesWithExactRetryAfter) {
  auto config = default_config();
  config.user_limits.max_num_requests_in_time_window = 2;
  config.user_limits.time_window = 60s;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::optional<llmq::UserRateLimitExceededError> err;
  llmq::Response other_user;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "alice");
    co_await h.queue->execute_request("chat_completion", chat_body(), "alice");
    err = co_await catch_error<llmq::UserRateLimitExceededError>([&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "alice");
    });
    other_user = co_await h.queue->execute_request("chat_completion", chat_body(), "bob");
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.rejected_user_limit, 1u);
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->http_status(), 429);
  EXPECT_GT(err->retry_after(), 59s);
  EXPECT_LE(err->retry_after(), 60s);
  EXPECT_EQ(other_user.status, 200);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[2].status, 429);
}

TEST(LLMQueueRuntime, QueueFullIsRefused) {
  // One deployment at 1 request per minute: the first runs, the next two wait, the
  // fourth finds the queue (max 2) full.
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.max_queue_size = 2;
  config.scheduler_limits.request_timeout = 200ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  int full = 0, timeouts = 0, ok = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    int done = 0;
    for (int i = 0; i < 4; ++i) {
      asio::co_spawn(
          ex,
          [&]() -> awaitable<void> {
            try {
              auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
              ok += r.status == 200;
            } catch (const llmq::SchedulerQueueFullError& e) {
              full += e.http_status() == 503;
            } catch (const llmq::QueueTimeoutError& e) {
              timeouts += e.http_status() == 504;
            }
            ++done;
          },
          asio::detached);
    }
    co_await wait_until([&] { return done >= 4; });
    co_await h.queue->graceful_shutdown();
  });
  // Admission runs before the first dispatch, so the queue holds two and refuses two.
  EXPECT_EQ(full + ok + timeouts, 4);
  EXPECT_GE(full, 1);
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(timeouts, 4 - ok - full);
}

TEST(LLMQueueRuntime, QueuedRequestTimesOut) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.request_timeout = 50ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::optional<llmq::QueueTimeoutError> err;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");  // uses the 1 RPM
    err = co_await catch_error<llmq::QueueTimeoutError>([&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.timed_out, 1u);
    EXPECT_EQ(s.queue_depth, 0u);
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->http_status(), 504);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].status, 504);
  EXPECT_GE(records[1].queue_wait, 50ms);
}

TEST(LLMQueueRuntime, BusyPinnedModelDoesNotBlockOthers) {
  auto config = make_config(
      {model("pinned", llmq::ModelType::chat, 1), model("free", llmq::ModelType::chat)});
  config.scheduler_limits.request_timeout = 300ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::vector<std::string> order;
  bool pinned_timed_out = false;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u", pinned("pinned"));
    auto ex = co_await asio::this_coro::executor;
    int done = 0;
    asio::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          try {
            co_await h.queue->execute_request("chat_completion", chat_body(), "u",
                                              pinned("pinned"));
          } catch (const llmq::QueueTimeoutError&) {
            pinned_timed_out = true;
            order.push_back("pinned-timeout");
          }
          ++done;
        },
        asio::detached);
    asio::co_spawn(
        ex,
        [&]() -> awaitable<void> {
          auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u",
                                                     pinned("free"));
          order.push_back(r.body["llm"].get<std::string>());
          ++done;
        },
        asio::detached);
    co_await wait_until([&] { return done >= 2; });
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(order, (std::vector<std::string>{"free", "pinned-timeout"}));
  EXPECT_TRUE(pinned_timed_out);
}

TEST(LLMQueueRuntime, CancellingAQueuedRequestRemovesIt) {
  auto echo = std::make_shared<EchoExecutor>();
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  Harness h(std::move(config), {{"chat_completion", echo}});
  bool aborted = false;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    auto ex = co_await asio::this_coro::executor;
    asio::cancellation_signal cancel;
    bool done = false;
    asio::co_spawn(
        ex, h.queue->execute_request("chat_completion", chat_body(), "u"),
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr ep, llmq::Response) {
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const boost::system::system_error& e) {
            aborted = e.code() == asio::error::operation_aborted;
          }
          done = true;
        }));
    asio::steady_timer t(ex, 20ms);
    co_await t.async_wait(asio::use_awaitable);
    auto before = co_await h.queue->stats();
    EXPECT_EQ(before.queue_depth, 1u);
    cancel.emit(asio::cancellation_type::terminal);
    co_await wait_until([&] { return done; });
    auto after = co_await h.queue->stats();
    EXPECT_EQ(after.queue_depth, 0u);
    EXPECT_EQ(after.cancelled, 1u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(aborted);
  EXPECT_EQ(echo->calls.load(), 1);  // the cancelled one never ran
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].status, 499);
}

TEST(LLMQueueRuntime, CancellingARunningRequestCancelsItsExecutor) {
  auto sleeper = std::make_shared<SleepExecutor>(1h);
  Harness h(default_config(), {{"chat_completion", sleeper}});
  bool aborted = false;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    asio::cancellation_signal cancel;
    bool done = false;
    asio::co_spawn(
        ex, h.queue->execute_request("chat_completion", chat_body(), "u"),
        asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr ep, llmq::Response) {
          try {
            if (ep) std::rethrow_exception(ep);
          } catch (const boost::system::system_error& e) {
            aborted = e.code() == asio::error::operation_aborted;
          }
          done = true;
        }));
    co_await wait_until([&] { return sleeper->started.load() > 0; });
    cancel.emit(asio::cancellation_type::terminal);
    co_await wait_until([&] { return done && sleeper->cancelled.load() > 0; });
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(aborted);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  EXPECT_EQ(sleeper->finished.load(), 0);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 499);
}

TEST(LLMQueueRuntime, ExecutionTimeoutGives504AndCancelsExecutor) {
  auto sleeper = std::make_shared<SleepExecutor>(1h);
  llmq::QueueOptions o;
  o.execution_timeout = 50ms;
  Harness h(default_config(), {{"chat_completion", sleeper}}, o);
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 504);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 504);
}

TEST(LLMQueueRuntime, ThrottledDeploymentBacksOffAndOthersServe) {
  auto throttled = std::make_shared<ThrottledExecutor>("chat-a");
  Harness h(default_config(), {{"chat_completion", throttled}});
  int ok = 0, throttled_answers = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 20; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      ok += r.status == 200;
      throttled_answers += r.status == 429;
    }
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[0].throttled, 1u);
    EXPECT_GT(s.deployments[0].backoff_remaining, 9min);
    EXPECT_EQ(s.deployments[1].backoff_remaining, 0ms);
    co_await h.queue->graceful_shutdown();
  });
  // chat-a answered 429 once and then received nothing for its Retry-After; the
  // throttled request was retried on chat-b, so every caller got a 200.
  EXPECT_EQ(throttled->per_deployment["chat-a"], 1);
  EXPECT_EQ(throttled->per_deployment["chat-b"], 20);
  EXPECT_EQ(throttled_answers, 0);
  EXPECT_EQ(ok, 20);
}

/// Fails with a transient (or, if `permanent`, a non-retryable) upstream error on the
/// deployments listed in `failing`.
class FlakyExecutor : public llmq::RequestExecutor {
 public:
  FlakyExecutor(std::set<std::string> failing, int status, bool permanent = false)
      : failing_(std::move(failing)), status_(status), permanent_(permanent) {}
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& t) override {
    const std::string& id = chosen.llm->unique_model_id;
    tried.push_back(id);
    if (failing_.count(id)) {
      t.llm_outcome.status = status_;
      t.llm_outcome.retryable = !permanent_;
      t.llm_outcome.retry_after = 5min;
      co_return llmq::Response{llmq::make_error_body("upstream says no", "server_error", id),
                               status_};
    }
    t.llm_outcome.status = 200;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::vector<std::string> tried;

 private:
  std::set<std::string> failing_;
  int status_;
  bool permanent_;
};

TEST(LLMQueueRuntime, TransientFailureIsRetriedOnAnotherDeployment) {
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"chat-a"}, 503);
  Harness h(default_config(), {{"chat_completion", flaky}});
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u", pinned_name("gpt-4o"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["llm"], "chat-b");
  EXPECT_EQ(flaky->tried, (std::vector<std::string>{"chat-a", "chat-b"}));
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempts, 2);
  ASSERT_EQ(records[0].attempt_log.size(), 2u);
  EXPECT_EQ(records[0].attempt_log[0].llm_deployment, "chat-a");
  EXPECT_EQ(records[0].attempt_log[0].status, 503);
  EXPECT_EQ(records[0].attempt_log[1].status, 200);
  EXPECT_EQ(records[0].status, 200);
}

TEST(LLMQueueRuntime, AllAttemptsFailingReturnsTheUpstreamError) {
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"chat-a", "chat-b"}, 500);
  llmq::QueueOptions o;
  o.retry_budget = 100ms;  // both deployments back off for 5 min: the retry waits, then gives up
  Harness h(default_config(), {{"chat_completion", flaky}}, o);
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body["error"]["message"], "upstream says no");
  EXPECT_EQ(flaky->tried.size(), 2u);  // one attempt each, then no eligible deployment
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempts, 2);
  EXPECT_EQ(records[0].status, 500);
}

TEST(LLMQueueRuntime, AttemptsAreBounded) {
  auto config = make_config({model("a", llmq::ModelType::chat), model("b", llmq::ModelType::chat),
                             model("c", llmq::ModelType::chat), model("d", llmq::ModelType::chat)});
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"a", "b", "c", "d"}, 429);
  llmq::QueueOptions o;
  o.max_attempts = 3;
  Harness h(std::move(config), {{"chat_completion", flaky}}, o);
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(flaky->tried.size(), 3u);
}

TEST(LLMQueueRuntime, UpstreamRetryAfterReachesTheCaller) {
  auto throttled = std::make_shared<ThrottledExecutor>("chat-a");
  llmq::QueueOptions o;
  o.max_attempts = 1;
  Harness h(default_config(), {{"chat_completion", throttled}}, o);
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u", pinned("chat-a"));
  EXPECT_EQ(r.status, 429);
  ASSERT_TRUE(r.retry_after.has_value());
  EXPECT_EQ(*r.retry_after, std::chrono::milliseconds(10min));
  EXPECT_FALSE(r.request_id.empty());
}

TEST(LLMQueueRuntime, NonRetryableFailureIsNotRetried) {
  auto flaky =
      std::make_shared<FlakyExecutor>(std::set<std::string>{"chat-a", "chat-b"}, 429, true);
  Harness h(default_config(), {{"chat_completion", flaky}});
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(flaky->tried.size(), 1u);
}

TEST(LLMQueueRuntime, ClientErrorsAreNotRetried) {
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"chat-a", "chat-b"}, 400);
  Harness h(default_config(), {{"chat_completion", flaky}});
  llmq::Response r;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[0].failures + s.deployments[1].failures, 0u);  // no backoff for a 400
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(flaky->tried.size(), 1u);
}

class ExhaustedExecutor : public llmq::RequestExecutor {
 public:
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& t) override {
    tried.push_back(chosen.llm->unique_model_id);
    t.llm_outcome.status = 200;
    if (chosen.llm->unique_model_id == "chat-a") {
      t.llm_outcome.remaining_requests = 0;
      t.llm_outcome.reset_requests = 10min;
    }
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::vector<std::string> tried;
};

TEST(LLMQueueRuntime, UpstreamRemainingZeroHoldsTheDeploymentUntilReset) {
  auto exhausted = std::make_shared<ExhaustedExecutor>();
  Harness h(default_config(), {{"chat_completion", exhausted}});
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 6; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[0].failures, 0u);
    EXPECT_GT(s.deployments[0].backoff_remaining, 9min);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(exhausted->tried,
            (std::vector<std::string>{"chat-a", "chat-b", "chat-b", "chat-b", "chat-b", "chat-b"}));
}

/// A budget shared by several queues: at most `cap` calls per deployment in total.
class CappedSharedBudget : public llmq::DeploymentBudgetStore {
 public:
  explicit CappedSharedBudget(std::int64_t cap, bool fail = false) : cap_(cap), fail_(fail) {}
  awaitable<llmq::BudgetDecision> try_charge(const llmq::Deployment& d,
                                             const llmq::DeploymentLimits&,
                                             llmq::DeploymentNeed need) override {
    // Answer asynchronously, as a network store would.
    asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
    co_await t.async_wait(asio::use_awaitable);
    if (fail_) throw std::runtime_error("store down");
    std::lock_guard lock(mutex_);
    llmq::BudgetDecision decision;
    if (used_[d.unique_model_id] + need.calls > cap_) {
      decision.allowed = false;
      decision.retry_after = 10min;
    } else {
      used_[d.unique_model_id] += need.calls;
    }
    co_return decision;
  }
  awaitable<void> report_backoff(const llmq::Deployment& d, std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    ++backoffs_[d.unique_model_id];
    co_return;
  }
  std::map<std::string, std::int64_t> used() {
    std::lock_guard lock(mutex_);
    return used_;
  }
  std::map<std::string, int> backoffs() {
    std::lock_guard lock(mutex_);
    return backoffs_;
  }

 private:
  std::mutex mutex_;
  std::int64_t cap_;
  bool fail_;
  std::map<std::string, std::int64_t> used_;
  std::map<std::string, int> backoffs_;
};

TEST(LLMQueueRuntime, TwoQueuesSharingABudgetStayWithinIt) {
  auto shared = std::make_shared<CappedSharedBudget>(5);
  asio::io_context io;
  auto echo = std::make_shared<EchoExecutor>();
  llmq::QueueOptions o;
  o.deployment_budget_store = shared;
  auto config = make_config({model("chat-a", llmq::ModelType::chat)});
  config.scheduler_limits.request_timeout = 200ms;
  llmq::LLMQueue q1(io.get_executor(), config, {{"chat_completion", echo}}, o);
  llmq::LLMQueue q2(io.get_executor(), config, {{"chat_completion", echo}}, o);
  int ok = 0, timed_out = 0;
  run_test(io, [&]() -> awaitable<void> {
    co_await q1.initiate();
    co_await q2.initiate();
    auto ex = co_await asio::this_coro::executor;
    int done = 0;
    for (int i = 0; i < 8; ++i)
      asio::co_spawn(
          ex,
          [&, i]() -> awaitable<void> {
            try {
              auto r =
                  co_await (i % 2 ? q1 : q2).execute_request("chat_completion", chat_body(), "u");
              ok += r.status == 200;
            } catch (const llmq::QueueTimeoutError&) {
              ++timed_out;
            }
            ++done;
          },
          asio::detached);
    co_await wait_until([&] { return done >= 8; });
    auto s1 = co_await q1.stats();
    auto s2 = co_await q2.stats();
    EXPECT_GT(s1.budget_refusals + s2.budget_refusals, 0u);
    co_await q1.graceful_shutdown();
    co_await q2.graceful_shutdown();
  });
  // Each queue alone would have run all 8 at once; together they stay at the shared 5.
  EXPECT_EQ(ok, 5);
  EXPECT_EQ(timed_out, 3);
  EXPECT_EQ(echo->calls.load(), 5);
  EXPECT_EQ(shared->used()["chat-a"], 5);
}

TEST(LLMQueueRuntime, SharedBudgetRefusalMovesWorkToAnotherDeployment) {
  auto shared = std::make_shared<CappedSharedBudget>(2);
  llmq::QueueOptions o;
  o.deployment_budget_store = shared;
  auto throttled = std::make_shared<ThrottledExecutor>("none");
  Harness h(default_config(), {{"chat_completion", throttled}}, o);
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 4; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      EXPECT_EQ(r.status, 200);
    }
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(throttled->per_deployment["chat-a"], 2);
  EXPECT_EQ(throttled->per_deployment["chat-b"], 2);
}

TEST(LLMQueueRuntime, SharedBudgetStoreFailurePolicy) {
  for (bool fail_open : {true, false}) {
    llmq::QueueOptions o;
    o.deployment_budget_store = std::make_shared<CappedSharedBudget>(100, /*fail=*/true);
    o.budget_store_fail_open = fail_open;
    Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
    llmq::Response r;
    std::uint64_t errors = 0;
    run_test(h.io, [&]() -> awaitable<void> {
      co_await h.queue->initiate();
      r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      errors = (co_await h.queue->stats()).budget_store_errors;
      co_await h.queue->graceful_shutdown();
    });
    EXPECT_EQ(r.status, fail_open ? 200 : 503) << "fail_open=" << fail_open;
    EXPECT_EQ(errors, 1u);
  }
}

TEST(LLMQueueRuntime, FailuresAreSharedAsBackoff) {
  auto shared = std::make_shared<CappedSharedBudget>(100);
  llmq::QueueOptions o;
  o.deployment_budget_store = shared;
  Harness h(default_config(), {{"chat_completion", std::make_shared<ThrottledExecutor>("chat-a")}},
            o);
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 3; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(shared->backoffs()["chat-a"], 1);
  EXPECT_EQ(shared->backoffs().count("chat-b"), 0u);
}

TEST(LLMQueueRuntime, RagRequestGetsBothDeployments) {
  Harness h(default_config(), {{"rag", std::make_shared<EchoExecutor>()}});
  llmq::Response r, none;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ModelPreferences rag;
    rag.require_embedding_model = true;
    rag.num_emb_calls_per_req = 3;
    r = co_await h.queue->execute_request("rag", chat_body(), "u", rag);
    llmq::ModelPreferences nothing;
    nothing.require_llm_model = false;
    none = co_await h.queue->execute_request("rag", chat_body(), "u", nothing);
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[2].requests_in_window, 3);  // three embedding calls charged
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body["llm"] == "chat-a" || r.body["llm"] == "chat-b");
  EXPECT_EQ(r.body["embedding"], "emb");
  // A request needing no model runs at once rather than blocking the queue.
  EXPECT_EQ(none.status, 200);
  EXPECT_EQ(none.body["llm"], "");
}

TEST(LLMQueueRuntime, ModelNameBalancesAmongItsDeployments) {
  auto config =
      make_config({model("a1", llmq::ModelType::chat, 1'000'000, 1'000'000'000, "gpt-4o"),
                   model("a2", llmq::ModelType::chat, 1'000'000, 1'000'000'000, "gpt-4o"),
                   model("m1", llmq::ModelType::chat, 1'000'000, 1'000'000'000, "gpt-4o-mini")});
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::map<std::string, int> seen;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ModelPreferences p;
    p.llm_model_name = "gpt-4o";
    for (int i = 0; i < 10; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u", p);
      ++seen[r.body["llm"].get<std::string>()];
    }
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(seen["a1"], 5);
  EXPECT_EQ(seen["a2"], 5);
  EXPECT_EQ(seen.count("m1"), 0u);
}

TEST(LLMQueueRuntime, RefusesBeforeInitiateAndAfterShutdown) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  int closed = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    auto call = [&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    };
    if (co_await catch_error<llmq::QueueClosedError>(call)) ++closed;
    co_await h.queue->initiate();
    co_await h.queue->graceful_shutdown();
    if (auto e = co_await catch_error<llmq::QueueClosedError>(call))
      closed += e->http_status() == 503;
  });
  EXPECT_EQ(closed, 2);
}

TEST(LLMQueueRuntime, ShutdownWhenIdleReturnsAtOnce) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::chrono::steady_clock::duration took{};
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    const auto start = std::chrono::steady_clock::now();
    co_await h.queue->graceful_shutdown();
    took = std::chrono::steady_clock::now() - start;
    co_await h.queue->graceful_shutdown();  // a second call is harmless
  });
  EXPECT_LT(took, 1s);  // nothing to drain: not the 30 s shutdown_timeout
  EXPECT_TRUE(h.telemetry->closed());
}

TEST(LLMQueueRuntime, ShutdownUnderLoadDrainsQueuedAndInFlight) {
  auto sleeper = std::make_shared<SleepExecutor>(20ms);
  Harness h(default_config(), {{"chat_completion", sleeper}});
  int ok = 0, refused = 0;
  constexpr int n = 200;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    for (int i = 0; i < n; ++i)
      asio::co_spawn(
          ex,
          [&]() -> awaitable<void> {
            auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
            ok += r.status == 200;
          },
          asio::detached);
    asio::steady_timer t(ex, 5ms);
    co_await t.async_wait(asio::use_awaitable);
    co_await h.queue->graceful_shutdown();
    try {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    } catch (const llmq::QueueClosedError&) {
      ++refused;
    }
  });
  EXPECT_EQ(ok, n);
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(sleeper->finished.load(), n);
  // The refusal after shutdown is not stored: the store was closed by then.
  EXPECT_EQ(h.telemetry->total_inserted(), static_cast<std::uint64_t>(n));
  EXPECT_TRUE(h.telemetry->closed());
}

TEST(LLMQueueRuntime, ShutdownDeadlineFailsWhatIsLeft) {
  auto sleeper = std::make_shared<SleepExecutor>(1h);
  auto config = make_config({model("one", llmq::ModelType::chat, 1)});
  llmq::QueueOptions o;
  o.shutdown_timeout = 100ms;
  Harness h(std::move(config), {{"chat_completion", sleeper}}, o);
  int closed = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    int done = 0;
    for (int i = 0; i < 3; ++i)  // one runs forever, two wait for the 1 RPM deployment
      asio::co_spawn(
          ex,
          [&]() -> awaitable<void> {
            try {
              co_await h.queue->execute_request("chat_completion", chat_body(), "u");
            } catch (const llmq::QueueClosedError&) {
              ++closed;
            }
            ++done;
          },
          asio::detached);
    asio::steady_timer t(ex, 20ms);
    co_await t.async_wait(asio::use_awaitable);
    co_await h.queue->graceful_shutdown();
    co_await wait_until([&] { return done >= 3; });
  });
  EXPECT_EQ(closed, 3);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  EXPECT_EQ(h.telemetry->total_inserted(), 3u);
}

TEST(LLMQueueRuntime, TelemetryNeverHoldsTheApiKeyAndPayloadIsOptIn) {
  llmq::QueueOptions o;
  o.record_payload = true;
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body("payload text"), "u");
    co_await h.queue->graceful_shutdown();
  });
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  const std::string dumped = llmq::to_json(records[0]).dump();
  EXPECT_EQ(dumped.find("sk-TEST-SECRET-KEY"), std::string::npos);
  EXPECT_NE(dumped.find("payload text"), std::string::npos);
}

TEST(LLMQueueRuntime, MultiThreadedIoContextCallersOnManyThreads) {
  auto echo = std::make_shared<EchoExecutor>();
  auto sleeper = std::make_shared<SleepExecutor>(1ms);
  asio::io_context io(4);
  auto telemetry = std::make_shared<llmq::InMemoryTelemetryStore>();
  llmq::QueueOptions o;
  o.telemetry_store = telemetry;
  llmq::LLMQueue queue(io.get_executor(), default_config(),
                       {{"chat_completion", echo}, {"sleep", sleeper}}, o);
  constexpr int n = 2000;
  std::atomic<int> ok{0}, finished{0};
  std::atomic<bool> shut{false};
  bool initiated = false;
  asio::co_spawn(io, queue.initiate(), [&](std::exception_ptr) { initiated = true; });
  while (!initiated) io.run_one();  // the callers below start once the queue runs
  for (int i = 0; i < n; ++i)
    asio::co_spawn(
        io,
        [&, i]() -> awaitable<void> {
          auto r = co_await queue.execute_request(i % 2 ? "chat_completion" : "sleep", chat_body(),
                                                  "user-" + std::to_string(i % 13));
          ok += r.status == 200;
        },
        [&](std::exception_ptr) {
          if (++finished == n)
            asio::co_spawn(io, queue.graceful_shutdown(), [&](std::exception_ptr) { shut = true; });
        });
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { io.run_for(60s); });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(shut.load());
  EXPECT_EQ(ok.load(), n);
  EXPECT_EQ(telemetry->total_inserted(), static_cast<std::uint64_t>(n));
}

TEST(LLMQueueRuntime, TelemetryBufferOverflowIsCountedNotBlocking) {
  llmq::QueueOptions o;
  o.telemetry_buffer_capacity = 10;
  o.telemetry_flush_interval = 1h;
  o.telemetry_batch_size = 1000;
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
  int ok = 0;
  std::uint64_t dropped = 0;
  run_test(h.io, [&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 30; ++i)
      ok += (co_await h.queue->execute_request("chat_completion", chat_body(), "u")).status == 200;
    dropped = (co_await h.queue->stats()).telemetry_dropped;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(ok, 30);
  EXPECT_EQ(dropped, 20u);
  EXPECT_EQ(h.telemetry->total_inserted(), 10u);
}

TEST(LLMQueueRuntime, RejectsNullExecutor) {
  asio::io_context io;
  EXPECT_THROW(llmq::LLMQueue(io.get_executor(), default_config(), {{"x", nullptr}}),
               llmq::ConfigError);
  llmq::LLMQueue q(io.get_executor(), default_config(), {});
  EXPECT_THROW(q.register_request_executor("x", nullptr), llmq::ConfigError);
}

}  // namespace
