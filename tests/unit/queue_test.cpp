// Runtime tests: LLMQueue with fake executors on an io_context, in virtual time (a
// ManualClock the harness moves to the next pending wait whenever nothing else can run),
// so timeouts, retries, pacing and shutdown deadlines are exact and nothing sleeps. One
// test runs on real threads (and under TSan) without depending on time.
#include <llmq/llmq.hpp>

#include <gtest/gtest.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace {
namespace asio = boost::asio;
using asio::awaitable;
using nlohmann::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

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

/// Waits `d` on `clock` (virtual time in these tests).
awaitable<void> sleep_for(std::shared_ptr<llmq::Clock> clock, steady::duration d) {
  llmq::ClockTimer t(co_await asio::this_coro::executor, std::move(clock));
  t.expires_after(d);
  co_await t.async_wait(asio::use_awaitable);
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

/// Waits `delay` on the clock (honouring cancellation), then echoes. Records when each
/// call started.
class SleepExecutor : public llmq::RequestExecutor {
 public:
  SleepExecutor(std::shared_ptr<llmq::Clock> clock, std::chrono::milliseconds delay)
      : clock_(std::move(clock)), delay_(delay) {}
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData&) override {
    ++started;
    started_at.push_back(clock_ ? clock_->now() : steady::now());
    try {
      co_await sleep_for(clock_, delay_);
    } catch (const boost::system::system_error&) {
      ++cancelled;
      throw;
    }
    ++finished;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::atomic<int> started{0}, finished{0}, cancelled{0};
  std::vector<steady::time_point> started_at;  // single-threaded tests only

 private:
  std::shared_ptr<llmq::Clock> clock_;
  std::chrono::milliseconds delay_;
};

class ThrowingExecutor : public llmq::RequestExecutor {
 public:
  awaitable<llmq::Response> process_request(const llmq::Request&, const llmq::ChosenDeployments&,
                                            llmq::TelemetryData&) override {
    ++calls;
    throw std::runtime_error("upstream exploded");
    co_return llmq::Response{};
  }
  int calls = 0;
};

/// Returns `status` without reporting an upstream outcome (the executor's own failure).
class StatusExecutor : public llmq::RequestExecutor {
 public:
  explicit StatusExecutor(int status) : status_(status) {}
  awaitable<llmq::Response> process_request(const llmq::Request&, const llmq::ChosenDeployments&,
                                            llmq::TelemetryData&) override {
    ++calls;
    co_return llmq::Response{llmq::make_error_body("executor bug", "server_error", "x"), status_};
  }
  int calls = 0;

 private:
  int status_;
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

/// Fails with a transient (or, if `permanent`, a non-retryable) upstream error on the
/// deployments listed in `failing`.
class FlakyExecutor : public llmq::RequestExecutor {
 public:
  FlakyExecutor(std::set<std::string> failing, int status, bool permanent = false,
                std::chrono::milliseconds retry_after = 5min)
      : failing_(std::move(failing)),
        status_(status),
        permanent_(permanent),
        retry_after_(retry_after) {}
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData& t) override {
    const std::string& id = chosen.llm->unique_model_id;
    tried.push_back(id);
    if (failing_.count(id) && (fail_times_ < 0 || failed_ < fail_times_)) {
      ++failed_;
      t.llm_outcome.status = status_;
      t.llm_outcome.retryable = !permanent_;
      t.llm_outcome.retry_after = retry_after_;
      co_return llmq::Response{llmq::make_error_body("upstream says no", "server_error", id),
                               status_};
    }
    t.llm_outcome.status = 200;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  /// Fail only the first `n` calls (negative: always).
  void fail_first(int n) { fail_times_ = n; }
  std::vector<std::string> tried;

 private:
  std::set<std::string> failing_;
  int status_;
  bool permanent_;
  std::chrono::milliseconds retry_after_;
  int fail_times_ = -1;
  int failed_ = 0;
};

/// A budget shared by several queues: at most `cap` calls per deployment in total.
/// Answers after `delay` on the clock, as a network store would; `hang` never answers.
class CappedSharedBudget : public llmq::DeploymentBudgetStore {
 public:
  CappedSharedBudget(std::shared_ptr<llmq::Clock> clock, std::int64_t cap, bool fail = false,
                     bool hang = false)
      : clock_(std::move(clock)), cap_(cap), fail_(fail), hang_(hang) {}
  awaitable<llmq::BudgetDecision> try_charge(const llmq::Deployment& d,
                                             const llmq::DeploymentLimits&,
                                             llmq::DeploymentNeed need) override {
    co_await sleep_for(clock_, hang_ ? std::chrono::milliseconds(24h) : 1ms);
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
  std::shared_ptr<llmq::Clock> clock_;
  std::mutex mutex_;
  std::int64_t cap_;
  bool fail_;
  bool hang_;
  std::map<std::string, std::int64_t> used_;
  std::map<std::string, int> backoffs_;
};

/// Counts down; `wait()` completes when the count reaches zero (no clock involved).
class Latch {
 public:
  Latch(asio::any_io_executor ex, int count) : timer_(ex, steady::time_point::max()), n_(count) {}
  void count_down() {
    if (--n_ <= 0) timer_.cancel();
  }
  awaitable<void> wait() {
    while (n_ > 0) co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  [[nodiscard]] int remaining() const { return n_; }

 private:
  asio::steady_timer timer_;
  int n_;
};

template <class E, class F>
awaitable<std::optional<E>> catch_error(F f) {
  try {
    co_await f();
  } catch (const E& e) {
    co_return e;
  }
  co_return std::nullopt;
}

/// A queue on a ManualClock, and the loop that runs it in virtual time.
struct Harness {
  asio::io_context io;
  std::shared_ptr<llmq::ManualClock> clock = std::make_shared<llmq::ManualClock>();
  const steady::time_point start = clock->now();
  std::shared_ptr<llmq::InMemoryTelemetryStore> telemetry =
      std::make_shared<llmq::InMemoryTelemetryStore>();
  std::unique_ptr<llmq::LLMQueue> queue;

  explicit Harness(llmq::LLMConfig config,
                   std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> execs,
                   llmq::QueueOptions options = {}) {
    if (!options.telemetry_store) options.telemetry_store = telemetry;
    options.clock = clock;
    queue = std::make_unique<llmq::LLMQueue>(io.get_executor(), std::move(config), std::move(execs),
                                             std::move(options));
  }

  ~Harness() {
    // Waits still pending (an executor or store that never finishes) hold their coroutine
    // frames, and those hold the clock: end them, and let their coroutines unwind.
    queue.reset();
    clock->cancel_all();
    io.restart();
    io.poll();
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  /// Virtual time since the harness was made.
  [[nodiscard]] steady::duration elapsed() const { return clock->now() - start; }

  /// Runs `body` to completion in virtual time: runs whatever is ready; when nothing is,
  /// moves the clock to the earliest pending wait. Fails (instead of hanging) when nothing
  /// is ready and nothing waits, or past `limit` of virtual time.
  void run(std::function<awaitable<void>()> body, steady::duration limit = 24h) {
    std::exception_ptr error;
    bool done = false;
    asio::co_spawn(io, std::move(body), [&](std::exception_ptr ep) {
      error = ep;
      done = true;
    });
    for (;;) {
      io.restart();
      io.poll();
      if (done) break;
      const auto next = clock->next_wait();
      if (!next) {
        ADD_FAILURE() << "nothing is ready and no timer is pending: the test would hang";
        return;
      }
      if (*next - start > limit) {
        ADD_FAILURE() << "virtual time passed the test's limit";
        return;
      }
      clock->set(*next);
    }
    if (error) std::rethrow_exception(error);
  }

  /// Starts the queue, runs one request, shuts the queue down; returns the answer.
  llmq::Response run_one(std::string req_type, json body, std::string user,
                         llmq::ModelPreferences prefs = {}) {
    llmq::Response r;
    run([&]() -> awaitable<void> {
      co_await queue->initiate();
      r = co_await queue->execute_request(req_type, body, user, prefs);
      co_await queue->graceful_shutdown();
    });
    return r;
  }

  /// Starts `n` calls of `call(i)` at once; waits for all of them.
  template <class F>
  awaitable<void> run_all(int n, F call) {
    auto ex = co_await asio::this_coro::executor;
    Latch done(ex, n);
    for (int i = 0; i < n; ++i)
      asio::co_spawn(ex, call(i), [&](std::exception_ptr) { done.count_down(); });
    co_await done.wait();
  }
};

// ---- answers -----------------------------------------------------------------------------

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
  EXPECT_EQ(h.elapsed(), 0s);  // nothing waited
}

TEST(LLMQueueRuntime, ExactlyOneAnswerForEachOfTenThousandConcurrentRequests) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}});
  constexpr int n = 10'000;
  std::vector<int> answers(n, 0);
  std::vector<std::string> ids(n);
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(n, [&](int i) -> awaitable<void> {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(std::to_string(i)),
                                                 "user-" + std::to_string(i % 97));
      ++answers[static_cast<std::size_t>(i)];
      ids[static_cast<std::size_t>(i)] = r.body["id"].get<std::string>();
      if (r.body["input"]["messages"][0]["content"] != std::to_string(i))
        answers[static_cast<std::size_t>(i)] += 100;  // wrong answer delivered
    });
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
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    Latch all(ex, n + 1);
    auto call = [&]() -> awaitable<void> {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      answered += r.status == 200;
      all.count_down();
    };
    asio::co_spawn(ex, call(), asio::detached);
    while (exec->calls < 1) co_await asio::post(ex, asio::use_awaitable);  // throttled
    for (int i = 0; i < n; ++i) asio::co_spawn(ex, call(), asio::detached);
    for (;;) {  // the retry and the n new requests all wait for the backoff
      const llmq::QueueStats st = co_await h.queue->stats();
      if (st.queue_depth == n + 1) break;
      co_await asio::post(ex, asio::use_awaitable);
    }
    EXPECT_EQ(exec->calls, 1) << "dispatched during the backoff";
    co_await sleep_for(h.clock, 199ms);
    EXPECT_EQ(exec->calls, 1) << "dispatched during the backoff";
    co_await sleep_for(h.clock, 1ms);  // the backoff ends; the probe runs from here on
    while (exec->calls < n + 2) {      // the probe: one turn per post
      seen.push_back(exec->calls);
      co_await asio::post(ex, asio::use_awaitable);
    }
    co_await all.wait();
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
  h.run([&]() -> awaitable<void> {
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

TEST(LLMQueueRuntime, ExecutorFailuresWithoutAnUpstreamOutcomeDoNotBackTheDeploymentOff) {
  // With a single deployment, an executor that throws, or returns a 5xx/429 without
  // reporting what the upstream said, must not stop the queue for error_backoff (60 s).
  auto thrower = std::make_shared<ThrowingExecutor>();
  auto status500 = std::make_shared<StatusExecutor>(500);
  auto status429 = std::make_shared<StatusExecutor>(429);
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(make_config({model("only", llmq::ModelType::chat)}),
            {{"throws", thrower}, {"s500", status500}, {"s429", status429}, {"ok", echo}});
  std::vector<int> statuses;
  std::uint64_t failures = 1;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (const char* type : {"throws", "ok", "s500", "ok", "s429", "ok"})
      statuses.push_back((co_await h.queue->execute_request(type, chat_body(), "u")).status);
    failures = (co_await h.queue->stats()).deployments[0].failures;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(statuses, (std::vector<int>{500, 200, 500, 200, 429, 200}));
  EXPECT_EQ(failures, 0u);
  EXPECT_EQ(h.elapsed(), 0s) << "a request waited for a backoff";
  EXPECT_EQ(status500->calls, 1);  // not retried either: nothing says it was transient
}

// ---- refusals -----------------------------------------------------------------------------

TEST(LLMQueueRuntime, RefusalsAreErrorsWithCodesAndEachHasATelemetryRow) {
  auto config = make_config({model("chat-a", llmq::ModelType::chat, 1'000'000, 10'000)});
  config.user_limits.max_num_requests_in_time_window = 1;
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(std::move(config), {{"chat_completion", echo}});
  std::vector<std::pair<boost::system::error_code, llmq::Response>> got;
  llmq::Response good;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto call = [&](std::string type, json body, std::string user,
                    llmq::ModelPreferences p) -> awaitable<void> {
      auto [ec, r] = co_await h.queue->async_execute_request(std::move(type), std::move(body),
                                                             std::move(user), std::move(p),
                                                             asio::as_tuple(asio::use_awaitable));
      got.emplace_back(ec, std::move(r));
    };
    co_await call("nope", chat_body(), "u", {});                           // unknown type
    co_await call("chat_completion", chat_body(), "u", pinned("gpt-99"));  // unknown model
    llmq::ModelPreferences emb;
    emb.require_llm_model = false;
    emb.require_embedding_model = true;
    co_await call("chat_completion", chat_body(), "u", emb);  // no embeddings deployment
    co_await call("chat_completion", chat_body(), "", {});    // no user
    co_await call("chat_completion", chat_body(), std::string(1000, 'x'), {});  // user too long
    co_await call("chat_completion", chat_body(), "bad\nuser", {});             // control character
    json huge = chat_body();
    huge["max_tokens"] = 1'000'000'000'000'000LL;
    co_await call("chat_completion", huge, "u", {});  // could never fit 10 000 TPM
    json many = chat_body();
    many["n"] = std::numeric_limits<std::int64_t>::max();
    co_await call("chat_completion", many, "u", {});  // saturates, then too large
    json deep = chat_body();
    json* at = &deep["messages"][0]["content"];
    *at = json::array();
    for (int i = 0; i < 200'000; ++i) {  // built iteratively; destroyed iteratively too
      at->push_back(json::array());
      at = &(*at)[0];
    }
    co_await call("chat_completion", std::move(deep), "u", {});  // nested too deep
    // The one request the user may make is still available.
    good = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  using llmq::errc;
  const std::vector<errc> expected = {
      errc::unknown_request_type, errc::unsatisfiable_preferences, errc::unsatisfiable_preferences,
      errc::user_id_missing,      errc::invalid_user_id,           errc::invalid_user_id,
      errc::request_too_large,    errc::request_too_large,         errc::invalid_request};
  ASSERT_EQ(got.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto& [ec, r] = got[i];
    EXPECT_EQ(ec, expected[i]) << "call " << i << ": " << ec.message();
    EXPECT_EQ(ec.category().name(), std::string("llmq"));
    EXPECT_EQ(r.status, llmq::http_status_of(expected[i])) << "call " << i;
    EXPECT_EQ(r.body["error"]["code"], std::string(llmq::to_string(expected[i]))) << "call " << i;
    EXPECT_FALSE(r.request_id.empty());
  }
  EXPECT_EQ(got[0].second.status, 404);
  EXPECT_NE(got[0].second.body["error"]["message"].get<std::string>().find("'nope'"),
            std::string::npos);
  EXPECT_NE(got[1].second.body["error"]["message"].get<std::string>().find("gpt-99"),
            std::string::npos);
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(echo->calls.load(), 1);  // nothing refused reached the executor
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), expected.size() + 1);  // every refusal is recorded
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(records[i].status, llmq::http_status_of(expected[i])) << "record " << i;
  EXPECT_EQ(records[4].user_id.size(), 256u) << "a refused user id is recorded truncated";
  EXPECT_EQ(records[5].user_id, "bad?user");
}

TEST(LLMQueueRuntime, TheThrowingCallRaisesTheSeedsErrorTypes) {
  auto config = default_config();
  config.user_limits.max_num_requests_in_time_window = 1;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  bool missing = false, unknown = false, limited = false;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    try {
      co_await h.queue->execute_request("chat_completion", chat_body(), "");
    } catch (const llmq::UserIdHeaderMissingError& e) {
      missing = e.http_status() == 400 && e.code() == llmq::errc::user_id_missing;
    }
    try {
      co_await h.queue->execute_request("nope", chat_body(), "u");
    } catch (const llmq::InvalidRequestError& e) {
      unknown = e.http_status() == 404 && e.code() == llmq::errc::unknown_request_type;
    }
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    try {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    } catch (const llmq::UserRateLimitExceededError& e) {
      limited = e.http_status() == 429 && e.retry_after() == 60s;
    }
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(missing);
  EXPECT_TRUE(unknown);
  EXPECT_TRUE(limited);
}

TEST(LLMQueueRuntime, UserLimitGivesTheExactRetryAfterWithoutExceptions) {
  auto config = default_config();
  config.user_limits.max_num_requests_in_time_window = 2;
  config.user_limits.time_window = 60s;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  boost::system::error_code ec;
  llmq::Response refused, other_user;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "alice");
    co_await sleep_for(h.clock, 12'345ms);
    co_await h.queue->execute_request("chat_completion", chat_body(), "alice");
    std::tie(ec, refused) = co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "alice", {}, asio::as_tuple(asio::use_awaitable));
    other_user = co_await h.queue->execute_request("chat_completion", chat_body(), "bob");
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.rejected_user_limit, 1u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(ec, llmq::errc::user_rate_limited);
  EXPECT_EQ(refused.status, 429);
  ASSERT_TRUE(refused.retry_after.has_value());
  EXPECT_EQ(*refused.retry_after, 60s - 12'345ms);  // exact: the first entry leaves then
  EXPECT_EQ(other_user.status, 200);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[2].status, 429);
}

/// A user limit store that fails (as Redis does when unreachable and fail_closed).
class FailingLimitStore : public llmq::UserRateLimitStore {
 public:
  awaitable<llmq::RateLimitDecision> acquire(std::string_view, const llmq::UserLimits&) override {
    throw llmq::StoreUnavailableError("user rate limit store unavailable: connection refused",
                                      llmq::errc::user_limit_store_unavailable, 2s);
    co_return llmq::RateLimitDecision{};
  }
};

TEST(LLMQueueRuntime, AFailingUserLimitStoreRefusesWithARecordAndItsHint) {
  llmq::QueueOptions o;
  o.user_rate_limit_store = std::make_shared<FailingLimitStore>();
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}}, o);
  boost::system::error_code ec;
  llmq::Response r;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    std::tie(ec, r) = co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "u", {}, asio::as_tuple(asio::use_awaitable));
    EXPECT_EQ((co_await h.queue->stats()).rejected_store, 1u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(ec, llmq::errc::user_limit_store_unavailable);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.retry_after, std::optional<std::chrono::milliseconds>(2s));
  EXPECT_EQ(echo->calls.load(), 0);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 503);
  EXPECT_NE(records[0].error.find("connection refused"), std::string::npos);
}

TEST(LLMQueueRuntime, QueueFullIsRefused) {
  // One deployment at 1 request per minute: the first runs, the next two wait, the
  // fourth finds the queue (max 2) full.
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.max_queue_size = 2;
  config.scheduler_limits.request_timeout = 200ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  int full = 0, timeouts = 0, ok = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(4, [&](int) -> awaitable<void> {
      try {
        auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
        ok += r.status == 200;
      } catch (const llmq::SchedulerQueueFullError& e) {
        full += e.http_status() == 503 && e.code() == llmq::errc::queue_full;
      } catch (const llmq::QueueTimeoutError& e) {
        timeouts += e.http_status() == 504;
      }
    });
    co_await h.queue->graceful_shutdown();
  });
  // Admission runs before the first dispatch, so the queue holds two and refuses two.
  EXPECT_EQ(full, 2);
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(timeouts, 1);
}

TEST(LLMQueueRuntime, AQueuedRequestTimesOutAtExactlyItsDeadline) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.request_timeout = 50ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::optional<llmq::QueueTimeoutError> err;
  steady::duration answered_after{};
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");  // uses the 1 RPM
    err = co_await catch_error<llmq::QueueTimeoutError>([&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    answered_after = h.elapsed();
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.timed_out, 1u);
    EXPECT_EQ(s.queue_depth, 0u);
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->http_status(), 504);
  EXPECT_EQ(err->code(), llmq::errc::queue_timeout);
  EXPECT_EQ(answered_after, 50ms);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].status, 504);
  EXPECT_EQ(records[1].queue_wait, 50ms);
}

TEST(LLMQueueRuntime, ARequestBehindARetriedOneTimesOutAtItsOwnDeadline) {
  // A fails once (503, retry in 30 s) and goes back to the front of the line with the
  // retry budget (120 s) as its deadline. B, queued behind it with the 10 s request
  // timeout, must time out at 10 s, not when A finally leaves the head of the class.
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"only"}, 503, false, 30s);
  flaky->fail_first(1);
  auto config = make_config({model("only", llmq::ModelType::chat)});
  config.scheduler_limits.request_timeout = 10s;
  llmq::QueueOptions options;
  options.retry_budget = 120s;
  Harness h(std::move(config), {{"chat_completion", flaky}}, std::move(options));
  std::optional<llmq::QueueTimeoutError> b_error;
  steady::duration a_answered{}, b_answered{};
  int a_status = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(2, [&](int i) -> awaitable<void> {
      if (i == 0) {
        auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "a");
        a_status = r.status;
        a_answered = h.elapsed();
      } else {
        b_error = co_await catch_error<llmq::QueueTimeoutError>([&]() -> awaitable<void> {
          co_await h.queue->execute_request("chat_completion", chat_body(), "b");
        });
        b_answered = h.elapsed();
      }
    });
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(b_error.has_value());
  EXPECT_EQ(b_answered, 10s);
  EXPECT_EQ(a_status, 200);
  EXPECT_GE(a_answered, 30s);
  EXPECT_EQ(flaky->tried.size(), 2u);  // A twice; B never ran
}

TEST(LLMQueueRuntime, BusyPinnedModelDoesNotBlockOthers) {
  auto config = make_config(
      {model("pinned", llmq::ModelType::chat, 1), model("free", llmq::ModelType::chat)});
  config.scheduler_limits.request_timeout = 300ms;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::vector<std::string> order;
  std::vector<steady::duration> at;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u", pinned("pinned"));
    co_await h.run_all(2, [&](int i) -> awaitable<void> {
      if (i == 0) {
        try {
          co_await h.queue->execute_request("chat_completion", chat_body(), "u", pinned("pinned"));
        } catch (const llmq::QueueTimeoutError&) {
          order.push_back("pinned-timeout");
        }
      } else {
        auto r =
            co_await h.queue->execute_request("chat_completion", chat_body(), "u", pinned("free"));
        order.push_back(r.body["llm"].get<std::string>());
      }
      at.push_back(h.elapsed());
    });
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(order, (std::vector<std::string>{"free", "pinned-timeout"}));
  EXPECT_EQ(at, (std::vector<steady::duration>{0ms, 300ms}));
}

// ---- cancellation ------------------------------------------------------------------------

/// Runs one request with a cancellation slot; returns its error code once done.
struct CancellableCall {
  asio::cancellation_signal signal;
  boost::system::error_code ec;
  llmq::Response response;
  bool done = false;

  void start(llmq::LLMQueue& q, asio::any_io_executor ex, std::string type = "chat_completion") {
    q.async_execute_request(
        std::move(type), chat_body(), "u", {},
        asio::bind_cancellation_slot(signal.slot(), asio::bind_executor(ex, [this](auto e, auto r) {
                                       ec = e;
                                       response = std::move(r);
                                       done = true;
                                     })));
  }
};

TEST(LLMQueueRuntime, CancellingAQueuedRequestRemovesItWhateverTheType) {
  for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                    asio::cancellation_type::total}) {
    auto echo = std::make_shared<EchoExecutor>();
    Harness h(make_config({model("slow", llmq::ModelType::chat, 1)}), {{"chat_completion", echo}});
    CancellableCall call;
    h.run([&]() -> awaitable<void> {
      co_await h.queue->initiate();
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      call.start(*h.queue, co_await asio::this_coro::executor);
      co_await sleep_for(h.clock, 20ms);
      EXPECT_EQ((co_await h.queue->stats()).queue_depth, 1u);
      call.signal.emit(type);
      while (!call.done)
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      auto after = co_await h.queue->stats();
      EXPECT_EQ(after.queue_depth, 0u);
      EXPECT_EQ(after.cancelled, 1u);
      co_await h.queue->graceful_shutdown();
    });
    EXPECT_EQ(call.ec, asio::error::operation_aborted);
    EXPECT_EQ(call.response.status, 499);
    EXPECT_EQ(echo->calls.load(), 1);  // the cancelled one never ran
    auto records = h.telemetry->records();
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[1].status, 499);
    EXPECT_EQ(records[1].queue_wait, 20ms);
  }
}

TEST(LLMQueueRuntime, ARunningRequestHonoursOnlyTerminalCancellation) {
  Harness h(default_config(), {});
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 10s);
  h.queue->register_request_executor("chat_completion", sleeper);
  CancellableCall ignored, cancelled;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    ignored.start(*h.queue, ex);
    cancelled.start(*h.queue, ex);
    while (sleeper->started.load() < 2) co_await asio::post(ex, asio::use_awaitable);
    // Total and partial cancellation promise no (or known) side effects: a running
    // executor cannot promise that, so the request goes on.
    ignored.signal.emit(asio::cancellation_type::total);
    ignored.signal.emit(asio::cancellation_type::partial);
    cancelled.signal.emit(asio::cancellation_type::terminal);
    while (!cancelled.done) co_await asio::post(ex, asio::use_awaitable);
    EXPECT_FALSE(ignored.done);
    co_await h.queue->graceful_shutdown();  // waits for the one still running (10 s)
  });
  EXPECT_EQ(cancelled.ec, asio::error::operation_aborted);
  EXPECT_FALSE(ignored.ec);
  EXPECT_EQ(ignored.response.status, 200);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  EXPECT_EQ(sleeper->finished.load(), 1);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].status + records[1].status, 499 + 200);
}

TEST(LLMQueueRuntime, ExecutionTimeoutIsAnErrorAtExactlyTheTimeoutAndCancelsTheExecutor) {
  llmq::QueueOptions o;
  o.execution_timeout = 50ms;
  Harness h(default_config(), {}, o);
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 1h);
  h.queue->register_request_executor("chat_completion", sleeper);
  std::optional<llmq::ExecutionTimeoutError> err;
  steady::duration answered_after{};
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    err = co_await catch_error<llmq::ExecutionTimeoutError>([&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    answered_after = h.elapsed();
    EXPECT_EQ((co_await h.queue->stats()).execution_timeouts, 1u);
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->http_status(), 504);
  EXPECT_EQ(err->code(), llmq::errc::execution_timeout);
  EXPECT_EQ(answered_after, 50ms);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 504);
}

// ---- balancing, backoff, retries -----------------------------------------------------------

TEST(LLMQueueRuntime, ThrottledDeploymentBacksOffAndOthersServe) {
  auto throttled = std::make_shared<ThrottledExecutor>("chat-a");
  Harness h(default_config(), {{"chat_completion", throttled}});
  int ok = 0, throttled_answers = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 20; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      ok += r.status == 200;
      throttled_answers += r.status == 429;
    }
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[0].throttled, 1u);
    EXPECT_EQ(s.deployments[0].backoff_remaining, 10min);  // no time passed
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

TEST(LLMQueueRuntime, ARetryWaitsExactlyForTheRetryAfterOfTheOnlyDeployment) {
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"only"}, 503, false, 2'500ms);
  flaky->fail_first(1);
  Harness h(make_config({model("only", llmq::ModelType::chat)}), {{"chat_completion", flaky}});
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(flaky->tried.size(), 2u);
  EXPECT_EQ(h.elapsed(), 2'500ms);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempts, 2);
  EXPECT_EQ(records[0].execution_time, 2'500ms);
}

TEST(LLMQueueRuntime, DeploymentPriorityFillsTheBestGroupThenSpillsOver) {
  // A provisioned deployment that takes one request per 30 s (2 a minute, paced) at
  // priority 0, pay-as-you-go at priority 1.
  auto ptu = model("ptu", llmq::ModelType::chat, 2);
  auto paygo = model("paygo", llmq::ModelType::chat);
  paygo.priority = 1;
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(make_config({paygo, ptu}), {{"chat_completion", echo}});
  std::vector<std::string> served;
  std::uint64_t spilled_to_paygo = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 3; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      served.push_back(r.body["llm"].get<std::string>());
    }
    auto s = co_await h.queue->stats();
    for (const auto& d : s.deployments)
      if (d.unique_model_id == "paygo") spilled_to_paygo = d.spilled;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(served, (std::vector<std::string>{"ptu", "paygo", "paygo"}));
  EXPECT_EQ(h.elapsed(), 0ms);  // spilling over never waits for the best group's pacing
  EXPECT_EQ(spilled_to_paygo, 2u);
  // Telemetry: the record of each spilled request says so, per attempt and in total.
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 3u);
  std::vector<bool> spilled;
  std::vector<int> spillovers;
  for (const auto& rec : records) {
    ASSERT_EQ(rec.attempt_log.size(), 1u);
    spilled.push_back(rec.attempt_log[0].spilled);
    spillovers.push_back(llmq::spillover_count(rec));
  }
  EXPECT_EQ(spilled, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(spillovers, (std::vector<int>{0, 1, 1}));
}

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
  EXPECT_EQ(h.elapsed(), 0s);
}

TEST(LLMQueueRuntime, AllAttemptsFailingReturnsTheUpstreamErrorWhenTheRetryBudgetEnds) {
  auto flaky = std::make_shared<FlakyExecutor>(std::set<std::string>{"chat-a", "chat-b"}, 500);
  llmq::QueueOptions o;
  o.retry_budget = 100ms;  // both deployments back off for 5 min: the retry waits, then gives up
  Harness h(default_config(), {{"chat_completion", flaky}}, o);
  llmq::Response r = h.run_one("chat_completion", chat_body(), "u");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body["error"]["message"], "upstream says no");
  EXPECT_EQ(flaky->tried.size(), 2u);  // one attempt each, then no eligible deployment
  EXPECT_EQ(h.elapsed(), 100ms);       // answered when the retry budget ran out
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
  h.run([&]() -> awaitable<void> {
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
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 6; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments[0].failures, 0u);
    EXPECT_EQ(s.deployments[0].backoff_remaining, 10min);
    co_await sleep_for(h.clock, 10min);
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(exhausted->tried, (std::vector<std::string>{"chat-a", "chat-b", "chat-b", "chat-b",
                                                        "chat-b", "chat-b", "chat-b", "chat-a"}));
}

TEST(LLMQueueRuntime, PacingSpreadsCallsOverAzuresOneSecondWindow) {
  // 120 RPM: at most 2 calls per second (plus the 50 ms pacing margin per window).
  Harness h(make_config({model("paced", llmq::ModelType::chat, 120)}), {});
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 0ms);
  h.queue->register_request_executor("chat_completion", sleeper);
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(6, [&](int) -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    co_await h.queue->graceful_shutdown();
  });
  std::vector<steady::duration> at;
  for (auto t : sleeper->started_at) at.push_back(t - h.start);
  EXPECT_EQ(at, (std::vector<steady::duration>{0ms, 0ms, 1050ms, 1050ms, 2100ms, 2100ms}));
}

TEST(LLMQueueRuntime, RequestsHeldForAWindowAreCountedAsPaced) {
  // 120 RPM: 2 calls per second; of 6 sent at once, 4 wait for the 1 s window.
  Harness h(make_config({model("paced", llmq::ModelType::chat, 120)}), {});
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 0ms);
  h.queue->register_request_executor("chat_completion", sleeper);
  llmq::QueueStats before;
  llmq::QueueStats after;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(2, [&](int) -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    before = co_await h.queue->stats();
    co_await sleep_for(h.clock, 2s);  // the 1 s windows empty: the first two go at once
    co_await h.run_all(6, [&](int) -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    });
    after = co_await h.queue->stats();
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_EQ(before.deployments.size(), 1u);
  EXPECT_EQ(before.deployments[0].paced, 0u);
  EXPECT_EQ(after.deployments[0].granted, 8u);
  EXPECT_EQ(after.deployments[0].paced, 4u);
}

// ---- shared deployment budgets ---------------------------------------------------------------

TEST(LLMQueueRuntime, TwoQueuesSharingABudgetStayWithinIt) {
  asio::io_context io;
  auto clock = std::make_shared<llmq::ManualClock>();
  auto shared = std::make_shared<CappedSharedBudget>(clock, 5);
  auto echo = std::make_shared<EchoExecutor>();
  llmq::QueueOptions o;
  o.deployment_budget_store = shared;
  o.clock = clock;
  auto config = make_config({model("chat-a", llmq::ModelType::chat)});
  config.scheduler_limits.request_timeout = 200ms;
  llmq::LLMQueue q1(io.get_executor(), config, {{"chat_completion", echo}}, o);
  llmq::LLMQueue q2(io.get_executor(), config, {{"chat_completion", echo}}, o);
  int ok = 0, timed_out = 0;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await q1.initiate();
        co_await q2.initiate();
        auto ex = co_await asio::this_coro::executor;
        Latch done(ex, 8);
        for (int i = 0; i < 8; ++i)
          asio::co_spawn(
              ex,
              [&, i]() -> awaitable<void> {
                try {
                  auto r = co_await (i % 2 ? q1 : q2)
                               .execute_request("chat_completion", chat_body(), "u");
                  ok += r.status == 200;
                } catch (const llmq::QueueTimeoutError&) {
                  ++timed_out;
                }
                done.count_down();
              },
              asio::detached);
        co_await done.wait();
        auto s1 = co_await q1.stats();
        auto s2 = co_await q2.stats();
        EXPECT_GT(s1.budget_refusals + s2.budget_refusals, 0u);
        co_await q1.graceful_shutdown();
        co_await q2.graceful_shutdown();
      },
      [&](std::exception_ptr) { finished = true; });
  while (!finished) {
    io.restart();
    io.poll();
    if (finished) break;
    auto next = clock->next_wait();
    ASSERT_TRUE(next.has_value()) << "would hang";
    clock->set(*next);
  }
  // Each queue alone would have run all 8 at once; together they stay at the shared 5.
  EXPECT_EQ(ok, 5);
  EXPECT_EQ(timed_out, 3);
  EXPECT_EQ(echo->calls.load(), 5);
  EXPECT_EQ(shared->used()["chat-a"], 5);
}

/// A harness whose queue shares deployment budgets through `store`.
struct SharedBudgetHarness : Harness {
  template <class Store>
  SharedBudgetHarness(llmq::QueueOptions o, std::shared_ptr<llmq::RequestExecutor> exec,
                      std::function<std::shared_ptr<Store>(std::shared_ptr<llmq::Clock>)> make)
      : Harness(default_config(), {}) {
    store = make(clock);
    o.deployment_budget_store = store;
    o.clock = clock;
    o.telemetry_store = telemetry;
    queue = std::make_unique<llmq::LLMQueue>(
        io.get_executor(), default_config(),
        std::map<std::string, std::shared_ptr<llmq::RequestExecutor>>{{"chat_completion", exec}},
        o);
  }
  std::shared_ptr<llmq::DeploymentBudgetStore> store;
};

TEST(LLMQueueRuntime, SharedBudgetRefusalMovesWorkToAnotherDeployment) {
  auto throttled = std::make_shared<ThrottledExecutor>("none");
  SharedBudgetHarness h(
      {}, throttled,
      std::function<std::shared_ptr<CappedSharedBudget>(std::shared_ptr<llmq::Clock>)>(
          [](auto clock) { return std::make_shared<CappedSharedBudget>(clock, 2); }));
  h.run([&]() -> awaitable<void> {
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
    o.budget_store_fail_open = fail_open;
    SharedBudgetHarness h(
        o, std::make_shared<EchoExecutor>(),
        std::function<std::shared_ptr<CappedSharedBudget>(std::shared_ptr<llmq::Clock>)>(
            [](auto clock) { return std::make_shared<CappedSharedBudget>(clock, 100, true); }));
    boost::system::error_code ec;
    llmq::Response r;
    std::uint64_t errors = 0;
    h.run([&]() -> awaitable<void> {
      co_await h.queue->initiate();
      std::tie(ec, r) = co_await h.queue->async_execute_request(
          "chat_completion", chat_body(), "u", {}, asio::as_tuple(asio::use_awaitable));
      errors = (co_await h.queue->stats()).budget_store_errors;
      co_await h.queue->graceful_shutdown();
    });
    EXPECT_EQ(r.status, fail_open ? 200 : 503) << "fail_open=" << fail_open;
    if (!fail_open) {
      EXPECT_EQ(ec, llmq::errc::budget_store_unavailable);
    }
    EXPECT_EQ(errors, 1u);
    EXPECT_EQ(h.telemetry->records().size(), 1u);
  }
}

TEST(LLMQueueRuntime, RequestsWaitingForTheSharedStoreAreAnsweredAtShutdown) {
  // The store never answers (a Redis server that was paused): shutdown still answers the
  // request and ends within its deadlines.
  llmq::QueueOptions o;
  o.shutdown_timeout = 2s;
  o.shutdown_flush_timeout = 1s;
  SharedBudgetHarness h(
      o, std::make_shared<EchoExecutor>(),
      std::function<std::shared_ptr<CappedSharedBudget>(std::shared_ptr<llmq::Clock>)>(
          [](auto clock) {
            return std::make_shared<CappedSharedBudget>(clock, 100, false, true);
          }));
  boost::system::error_code ec;
  steady::duration shut_after{};
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    Latch answered(ex, 1);
    h.queue->async_execute_request("chat_completion", chat_body(), "u", {},
                                   [&](boost::system::error_code e, llmq::Response) {
                                     ec = e;
                                     answered.count_down();
                                   });
    co_await sleep_for(h.clock, 10ms);
    co_await h.queue->graceful_shutdown();
    shut_after = h.elapsed();
    co_await answered.wait();
  });
  EXPECT_EQ(ec, llmq::errc::queue_closed);
  // 2 s to drain, 1 s for cancelled work to unwind, the flush deadline (1 s) at most.
  EXPECT_LE(shut_after, 10ms + 2s + 1s + 1s);
}

TEST(LLMQueueRuntime, FailuresAreSharedAsBackoff) {
  SharedBudgetHarness h(
      {}, std::make_shared<ThrottledExecutor>("chat-a"),
      std::function<std::shared_ptr<CappedSharedBudget>(std::shared_ptr<llmq::Clock>)>(
          [](auto clock) { return std::make_shared<CappedSharedBudget>(clock, 100); }));
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 3; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
  });
  auto* shared = static_cast<CappedSharedBudget*>(h.store.get());
  EXPECT_EQ(shared->backoffs()["chat-a"], 1);
  EXPECT_EQ(shared->backoffs().count("chat-b"), 0u);
}

TEST(LLMQueueRuntime, RagRequestGetsBothDeployments) {
  Harness h(default_config(), {{"rag", std::make_shared<EchoExecutor>()}});
  llmq::Response r, none;
  h.run([&]() -> awaitable<void> {
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
  h.run([&]() -> awaitable<void> {
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

TEST(LLMQueueRuntime, CallersRequestIdIsUsedAndABadOneRefused) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  llmq::Response mine;
  boost::system::error_code bad_ec;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::RequestOptions o;
    o.request_id = "client-7f3a";
    mine = co_await h.queue->execute_request("chat_completion", chat_body(), "u", {}, o);
    o.request_id = "bad\x01id";
    auto [ec, r] = co_await h.queue->async_execute_request("chat_completion", chat_body(), "u", {},
                                                           o, asio::as_tuple(asio::use_awaitable));
    bad_ec = ec;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(mine.request_id, "client-7f3a");
  EXPECT_EQ(mine.body["id"], "client-7f3a");
  EXPECT_EQ(bad_ec, llmq::errc::invalid_request);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].request_id, "client-7f3a");
}

TEST(LLMQueueRuntime, PlainCallbacksAndFuturesWork) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  boost::system::error_code cb_ec = asio::error::would_block;
  int cb_status = 0;
  std::thread::id cb_thread;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    Latch done(ex, 1);
    h.queue->async_execute_request("chat_completion", chat_body(), "u", {},
                                   [&](boost::system::error_code ec, llmq::Response r) {
                                     cb_ec = ec;
                                     cb_status = r.status;
                                     cb_thread = std::this_thread::get_id();
                                     done.count_down();
                                   });
    EXPECT_EQ(cb_status, 0) << "completed inside the call";
    co_await done.wait();
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_FALSE(cb_ec);
  EXPECT_EQ(cb_status, 200);
  EXPECT_EQ(cb_thread, std::this_thread::get_id());  // on the queue's executor (this thread)

  // use_future, with the io_context on another thread.
  asio::io_context io;
  llmq::LLMQueue q(io.get_executor(), default_config(),
                   {{"chat_completion", std::make_shared<EchoExecutor>()}});
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  asio::co_spawn(io, q.initiate(), asio::use_future).get();
  auto fut = q.async_execute_request("chat_completion", chat_body(), "u", {}, asio::use_future);
  const llmq::Response r = fut.get();
  EXPECT_EQ(r.status, 200);
  auto refused = q.async_execute_request("chat_completion", chat_body(), "", {}, asio::use_future);
  try {
    refused.get();
    ADD_FAILURE() << "an empty user id must fail the future";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), llmq::errc::user_id_missing);
  }
  asio::co_spawn(io, q.graceful_shutdown(), asio::use_future).get();
  work.reset();
  runner.join();
}

// ---- lifecycle ---------------------------------------------------------------------------

TEST(LLMQueueRuntime, RefusesBeforeInitiateAndAfterShutdown) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  int closed = 0;
  h.run([&]() -> awaitable<void> {
    auto call = [&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    };
    if (co_await catch_error<llmq::QueueClosedError>(call)) ++closed;
    co_await h.queue->initiate();
    co_await h.queue->graceful_shutdown();
    if (auto e = co_await catch_error<llmq::QueueClosedError>(call))
      closed += e->http_status() == 503 && e->code() == llmq::errc::queue_closed;
  });
  EXPECT_EQ(closed, 2);
}

TEST(LLMQueueRuntime, ShutdownWhenIdleReturnsAtOnce) {
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->graceful_shutdown();
    co_await h.queue->graceful_shutdown();  // a second call is harmless
  });
  EXPECT_EQ(h.elapsed(), 0s);  // nothing to drain: not the 30 s shutdown_timeout
  EXPECT_TRUE(h.telemetry->closed());
}

TEST(LLMQueueRuntime, ShutdownUnderLoadDrainsQueuedAndInFlight) {
  Harness h(default_config(), {});
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 20ms);
  h.queue->register_request_executor("chat_completion", sleeper);
  int ok = 0, refused = 0;
  constexpr int n = 200;
  h.run([&]() -> awaitable<void> {
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
    co_await sleep_for(h.clock, 5ms);
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
  EXPECT_EQ(h.elapsed(), 20ms);  // all ran at once and finished together
  // The refusal after shutdown is not stored: the store was closed by then (counted).
  EXPECT_EQ(h.telemetry->total_inserted(), static_cast<std::uint64_t>(n));
  EXPECT_TRUE(h.telemetry->closed());
}

TEST(LLMQueueRuntime, ShutdownDeadlineAnswersWhatIsLeftInEveryState) {
  auto config = make_config({model("one", llmq::ModelType::chat, 1)});
  llmq::QueueOptions o;
  o.shutdown_timeout = 100ms;
  Harness h(std::move(config), {}, o);
  auto sleeper = std::make_shared<SleepExecutor>(h.clock, 1h);
  h.queue->register_request_executor("chat_completion", sleeper);
  int closed = 0;
  steady::duration shut_after{};
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    Latch done(ex, 3);
    for (int i = 0; i < 3; ++i)  // one runs for an hour, two wait for the 1 RPM deployment
      asio::co_spawn(
          ex,
          [&]() -> awaitable<void> {
            try {
              co_await h.queue->execute_request("chat_completion", chat_body(), "u");
            } catch (const llmq::QueueClosedError&) {
              ++closed;
            }
            done.count_down();
          },
          asio::detached);
    co_await sleep_for(h.clock, 20ms);
    co_await h.queue->graceful_shutdown();
    shut_after = h.elapsed();
    co_await done.wait();
  });
  EXPECT_EQ(closed, 3);
  EXPECT_EQ(sleeper->cancelled.load(), 1);
  EXPECT_EQ(h.telemetry->total_inserted(), 3u);
  EXPECT_EQ(shut_after, 20ms + 100ms);  // the cancelled executor unwound at once
}

/// A telemetry store whose writes never finish (a database that stopped answering).
class HangingTelemetryStore : public llmq::TelemetryStore {
 public:
  explicit HangingTelemetryStore(std::shared_ptr<llmq::Clock> clock) : clock_(std::move(clock)) {}
  awaitable<void> connect() override { co_return; }
  awaitable<void> insert_batch(std::span<llmq::TelemetryData> batch) override {
    attempted += batch.size();
    co_await sleep_for(clock_, std::chrono::hours(24 * 365));
  }
  awaitable<void> close() override { co_return; }
  std::size_t attempted = 0;

 private:
  std::shared_ptr<llmq::Clock> clock_;
};

TEST(LLMQueueRuntime, ShutdownIsBoundedWhenTheTelemetryStoreHangs) {
  llmq::QueueOptions o;
  o.shutdown_flush_timeout = 3s;
  o.telemetry_batch_size = 2;
  o.telemetry_flush_interval = 100ms;
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  auto store = std::make_shared<HangingTelemetryStore>(h.clock);
  o.telemetry_store = store;
  o.clock = h.clock;
  h.queue = std::make_unique<llmq::LLMQueue>(
      h.io.get_executor(), default_config(),
      std::map<std::string, std::shared_ptr<llmq::RequestExecutor>>{
          {"chat_completion", std::make_shared<EchoExecutor>()}},
      o);
  std::uint64_t dropped = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 5; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->graceful_shutdown();
    dropped = (co_await h.queue->stats()).telemetry_dropped;
  });
  EXPECT_EQ(h.elapsed(), 3s);       // the flush deadline, not a year
  EXPECT_EQ(store->attempted, 2u);  // the first batch hangs; the rest never got written
  EXPECT_EQ(dropped, 3u);
}

/// A clock that throws from now() once armed: a fault inside the dispatcher.
class FaultyClock : public llmq::Clock {
 public:
  time_point now() const override {
    if (armed_.exchange(false)) throw std::runtime_error("clock fault");
    return inner_.now();
  }
  std::uint64_t async_wait_until(time_point at, asio::any_io_executor ex,
                                 wait_handler handler) override {
    return inner_.async_wait_until(at, std::move(ex), std::move(handler));
  }
  void cancel_wait(std::uint64_t id) override { inner_.cancel_wait(id); }
  void arm() { armed_ = true; }
  llmq::ManualClock& inner() { return inner_; }

 private:
  mutable std::atomic<bool> armed_{false};
  llmq::ManualClock inner_;
};

TEST(LLMQueueRuntime, ADispatcherFailureIsLoudAnswersEveryoneAndRefusesNewCalls) {
  asio::io_context io;
  auto clock = std::make_shared<FaultyClock>();
  auto telemetry = std::make_shared<llmq::InMemoryTelemetryStore>();
  llmq::QueueOptions o;
  o.clock = clock;
  o.telemetry_store = telemetry;
  o.telemetry_flush_interval = 1h;  // so that the dispatcher is the first to read the time
  llmq::LLMQueue q(io.get_executor(), make_config({model("slow", llmq::ModelType::chat, 1)}),
                   {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
  std::vector<boost::system::error_code> codes;
  boost::system::error_code later;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await q.initiate();
        co_await q.execute_request("chat_completion", chat_body(), "u");  // uses the 1 RPM
        auto ex = co_await asio::this_coro::executor;
        Latch done(ex, 3);
        for (int i = 0; i < 3; ++i)
          q.async_execute_request("chat_completion", chat_body(), "u", {},
                                  [&](boost::system::error_code ec, llmq::Response) {
                                    codes.push_back(ec);
                                    done.count_down();
                                  });
        while ((co_await q.stats()).queue_depth < 3) co_await asio::post(ex, asio::use_awaitable);
        clock->arm();  // the dispatcher's next look at the time (at the 30 s deadline) throws
        co_await done.wait();
        auto [ec, r] = co_await q.async_execute_request("chat_completion", chat_body(), "u", {},
                                                        asio::as_tuple(asio::use_awaitable));
        later = ec;
        co_await q.graceful_shutdown();
      },
      [&](std::exception_ptr ep) {
        finished = true;
        if (ep) std::rethrow_exception(ep);
      });
  for (int i = 0; i < 1000 && !finished; ++i) {
    io.restart();
    io.poll();
    if (finished) break;
    if (auto next = clock->inner().next_wait()) clock->inner().set(*next);
  }
  clock->inner().cancel_all();
  io.restart();
  io.poll();
  ASSERT_TRUE(finished);
  EXPECT_EQ(codes, (std::vector<boost::system::error_code>(3, llmq::errc::queue_failed)));
  EXPECT_EQ(later, llmq::errc::queue_failed);
  EXPECT_EQ(telemetry->total_inserted(), 5u);
}

TEST(LLMQueueRuntime, TelemetryNeverHoldsTheApiKeyAndPayloadIsOptIn) {
  llmq::QueueOptions o;
  o.record_payload = true;
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
  h.run([&]() -> awaitable<void> {
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

/// Real threads, real time (nothing in it depends on time): `n` callers, half of them to
/// an executor that yields for 1 ms, on an io_context run by four threads; `beside(queue,
/// finished)` is spawned once the queue runs. Shuts the queue down when all have answered.
struct ThreadedRun {
  int ok = 0;                        // answers with status 200
  std::uint64_t telemetry_rows = 0;  // records the store got
  bool shut = false;                 // graceful_shutdown completed
};

ThreadedRun run_on_four_threads(
    const llmq::LLMConfig& config, int n,
    std::function<awaitable<void>(llmq::LLMQueue&, const std::atomic<int>&)> beside = {}) {
  auto echo = std::make_shared<EchoExecutor>();
  auto yielder = std::make_shared<SleepExecutor>(nullptr, 1ms);
  asio::io_context io(4);
  auto telemetry = std::make_shared<llmq::InMemoryTelemetryStore>();
  llmq::QueueOptions o;
  o.telemetry_store = telemetry;
  llmq::LLMQueue queue(io.get_executor(), config, {{"chat_completion", echo}, {"sleep", yielder}},
                       o);
  std::atomic<int> ok{0}, finished{0};
  std::atomic<bool> shut{false};
  bool initiated = false;
  asio::co_spawn(io, queue.initiate(), [&](std::exception_ptr) { initiated = true; });
  while (!initiated) io.run_one();  // the callers below start once the queue runs
  if (beside) asio::co_spawn(io, beside(queue, finished), asio::detached);
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
  return ThreadedRun{ok.load(), telemetry->total_inserted(), shut.load()};
}

TEST(LLMQueueRuntime, MultiThreadedIoContextCallersOnManyThreads) {
  // The strand serialises queue state for callers and executors on four threads.
  constexpr int n = 2000;
  const ThreadedRun run = run_on_four_threads(default_config(), n);
  EXPECT_TRUE(run.shut);
  EXPECT_EQ(run.ok, n);
  EXPECT_EQ(run.telemetry_rows, static_cast<std::uint64_t>(n));
}

TEST(LLMQueueRuntime, TelemetryBufferOverflowIsCountedNotBlocking) {
  llmq::QueueOptions o;
  o.telemetry_buffer_capacity = 10;
  o.telemetry_flush_interval = 1h;
  o.telemetry_batch_size = 1000;
  Harness h(default_config(), {{"chat_completion", std::make_shared<EchoExecutor>()}}, o);
  int ok = 0;
  std::uint64_t dropped = 0;
  h.run([&]() -> awaitable<void> {
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

// ---- multi-tenant scheduling: policies, priorities, tiers, predictive admission --------

/// Records which user each call served, in order.
class UserOrderExecutor : public llmq::RequestExecutor {
 public:
  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData&) override {
    served.push_back(req.user_id);
    co_return llmq::Response{echo_body(req, chosen), 200};
  }
  std::vector<std::string> served;  // single-threaded tests only
};

/// `first` for i < split, else `second` (outside the coroutines: see STYLE on g++ 12).
std::string pick_user(int i, int split, const char* first, const char* second) {
  return std::string(i < split ? first : second);
}

/// "a" for 0..2, "b" for 3..4, "c" after.
std::string abc_user(int i) { return std::string(i < 3 ? "a" : i < 5 ? "b" : "c"); }

std::vector<std::string> tier_test_users() { return {"alice", "bob", "carol"}; }

llmq::RequestOptions with_priority(llmq::Priority p) {
  llmq::RequestOptions o;
  o.priority = p;
  return o;
}

llmq::RequestOptions in_tier(std::string tier) {
  llmq::RequestOptions o;
  o.tier = std::move(tier);
  return o;
}

/// Where `user`'s requests were served, 0-based.
std::vector<std::size_t> places_of(const std::vector<std::string>& served,
                                   const std::string& user) {
  std::vector<std::size_t> at;
  for (std::size_t i = 0; i < served.size(); ++i)
    if (served[i] == user) at.push_back(i);
  return at;
}

/// A heavy user queues 20 requests, then a light user 2, on a deployment that takes one
/// request a second. Returns the order in which users were served.
std::vector<std::string> heavy_then_light(llmq::SchedulingPolicy policy) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 60)});
  config.scheduler_limits.policy = policy;
  auto exec = std::make_shared<UserOrderExecutor>();
  Harness h(std::move(config), {{"chat_completion", exec}});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(22, [&](int i) -> awaitable<void> {
      const std::string user = pick_user(i, 20, "heavy", "light");
      co_await h.queue->execute_request("chat_completion", chat_body(), user);
    });
    co_await h.queue->graceful_shutdown();
  });
  return exec->served;
}

TEST(LLMQueueRuntime, FifoServesTheLightUserAfterTheHeavyUsersFlood) {
  const auto served = heavy_then_light(llmq::SchedulingPolicy::fifo);
  ASSERT_EQ(served.size(), 22u);
  EXPECT_EQ(places_of(served, "light"), (std::vector<std::size_t>{20, 21}));
}

TEST(LLMQueueRuntime, FairPolicyServesTheLightUserBetweenTheHeavyUsersRequests) {
  const auto served = heavy_then_light(llmq::SchedulingPolicy::fair);
  ASSERT_EQ(served.size(), 22u);
  const auto light = places_of(served, "light");
  ASSERT_EQ(light.size(), 2u);
  // Deficit round-robin with equal weights: one each per round once both are queued.
  EXPECT_LE(light[1], 4u) << "light served at " << light[0] << " and " << light[1];
}

TEST(LLMQueueRuntime, FairSharesFollowTheTiersWeights) {
  // Two users flood one paced deployment (10 requests a second); gold's weight is 3,
  // the default tier's 1.
  auto config = make_config({model("slow", llmq::ModelType::chat, 600)});
  config.scheduler_limits.policy = llmq::SchedulingPolicy::fair;
  llmq::UserTier gold;
  gold.name = "gold";
  gold.users = {"g"};
  gold.weight = 3;
  config.user_tiers.push_back(gold);
  auto exec = std::make_shared<UserOrderExecutor>();
  Harness h(std::move(config), {{"chat_completion", exec}});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(80, [&](int i) -> awaitable<void> {
      const std::string user = pick_user(i % 2, 1, "g", "b");
      co_await h.queue->execute_request("chat_completion", chat_body(), user);
    });
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_EQ(exec->served.size(), 80u);
  // While both have requests queued (the first 40 dispatches: gold's 40 last longer at
  // 3:1), the dispatches split 30:10, within 5 %.
  const std::vector<std::string> first(exec->served.begin(), exec->served.begin() + 40);
  const auto gold_share = static_cast<double>(places_of(first, "g").size()) / 40.0;
  EXPECT_NEAR(gold_share, 0.75, 0.05);
}

TEST(LLMQueueRuntime, HighPriorityOvertakesALowPriorityFlood) {
  auto exec = std::make_shared<UserOrderExecutor>();
  Harness h(make_config({model("slow", llmq::ModelType::chat, 60)}), {{"chat_completion", exec}});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(11, [&](int i) -> awaitable<void> {
      if (i < 10) {
        co_await h.queue->execute_request("chat_completion", chat_body(), "batch", {},
                                          with_priority(llmq::Priority::low));
      } else {
        co_await h.queue->execute_request("chat_completion", chat_body(), "ui", {},
                                          with_priority(llmq::Priority::high));
      }
    });
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_EQ(exec->served.size(), 11u);
  // The first low one may already run when the high one arrives; none other goes first.
  EXPECT_LE(places_of(exec->served, "ui").at(0), 1u);
}

TEST(LLMQueueRuntime, TiersSetTheUserLimitByUserListOrByName) {
  auto config = make_config({model("chat-a", llmq::ModelType::chat)});
  config.user_limits.max_num_requests_in_time_window = 2;
  llmq::UserTier gold;
  gold.name = "gold";
  gold.users = {"alice"};
  gold.max_num_requests_in_time_window = 5;
  config.user_tiers.push_back(gold);
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::map<std::string, int> admitted;
  std::optional<llmq::InvalidRequestError> unknown;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (const std::string& user : tier_test_users()) {
      for (int i = 0; i < 7; ++i) {
        try {
          if (user == "carol")
            co_await h.queue->execute_request("chat_completion", chat_body(), user, {},
                                              in_tier("gold"));
          else
            co_await h.queue->execute_request("chat_completion", chat_body(), user);
          ++admitted[user];
        } catch (const llmq::UserRateLimitExceededError&) {
        }
      }
    }
    unknown = co_await catch_error<llmq::InvalidRequestError>([&]() -> awaitable<void> {
      co_await h.queue->execute_request("chat_completion", chat_body(), "dave", {},
                                        in_tier("platinum"));
    });
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.tiers.size(), 2u);
    EXPECT_EQ(s.tiers.at(0).admitted, 2u);  // bob, in the default tier
    EXPECT_EQ(s.tiers.at(1).name, "gold");
    EXPECT_EQ(s.tiers.at(1).admitted, 10u);  // alice and carol
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(admitted["alice"], 5);
  EXPECT_EQ(admitted["bob"], 2);
  EXPECT_EQ(admitted["carol"], 5);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->code(), llmq::errc::invalid_request);
  EXPECT_NE(std::string(unknown->what()).find("platinum"), std::string::npos);
}

TEST(LLMQueueRuntime, MaxQueuedPerUserRefusesThatUserAlone) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.max_queued_per_user = 2;
  config.scheduler_limits.request_timeout = 5s;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  int flood_full = 0, other_ok = 0, other_timeouts = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "first");  // uses the 1 RPM
    co_await h.run_all(6, [&](int i) -> awaitable<void> {
      const std::string user = pick_user(i, 5, "flood", "other");
      try {
        co_await h.queue->execute_request("chat_completion", chat_body(), user);
        other_ok += user == "other";
      } catch (const llmq::SchedulerQueueFullError& e) {
        flood_full += user == "flood" && e.code() == llmq::errc::queue_full;
      } catch (const llmq::QueueTimeoutError&) {
        other_timeouts += user == "other";
      }
    });
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.rejected_user_queue_full, 3u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(flood_full, 3);      // 2 of the flood's 5 wait; 3 are refused
  EXPECT_EQ(other_timeouts, 1);  // the other user was admitted (and timed out waiting)
  EXPECT_EQ(other_ok, 0);
}

TEST(LLMQueueRuntime, QueuedByPriorityAndTierAreInStats) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.request_timeout = 10s;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  llmq::QueueStats during;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");  // uses the 1 RPM
    co_await h.run_all(4, [&](int i) -> awaitable<void> {
      if (i == 3) {
        co_await sleep_for(h.clock, 1s);
        during = co_await h.queue->stats();
        co_return;
      }
      const auto p = i == 0 ? llmq::Priority::high : llmq::Priority::low;
      try {
        co_await h.queue->execute_request("chat_completion", chat_body(), "u", {},
                                          with_priority(p));
      } catch (const llmq::QueueTimeoutError&) {
      }
    });
    auto after = co_await h.queue->stats();
    EXPECT_EQ(after.queued_by_priority, (std::array<std::size_t, 3>{0, 0, 0}));
    EXPECT_EQ(after.tiers.at(0).queued, 0u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(during.queued_by_priority, (std::array<std::size_t, 3>{1, 0, 2}));
  ASSERT_EQ(during.tiers.size(), 1u);
  EXPECT_EQ(during.tiers[0].queued, 3u);
}

TEST(LLMQueueRuntime, StatsListTheUsersWithTheMostRequestsWaiting) {
  auto config = make_config({model("slow", llmq::ModelType::chat, 1)});
  config.scheduler_limits.request_timeout = 10s;
  llmq::QueueOptions options;
  options.stats_top_users = 2;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}},
            std::move(options));
  llmq::QueueStats during, after;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "first");  // the 1 RPM
    co_await h.run_all(7, [&](int i) -> awaitable<void> {
      if (i == 6) {
        co_await sleep_for(h.clock, 1s);
        during = co_await h.queue->stats();
        co_return;
      }
      // a: 3 waiting, b: 2, c: 1
      const std::string user = abc_user(i);
      try {
        co_await h.queue->execute_request("chat_completion", chat_body(), user);
      } catch (const llmq::QueueTimeoutError&) {
      }
    });
    after = co_await h.queue->stats();
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_EQ(during.users.size(), 2u);
  EXPECT_EQ(during.users[0].user, "a");
  EXPECT_EQ(during.users[0].queued, 3u);
  EXPECT_EQ(during.users[1].user, "b");
  EXPECT_EQ(during.users[1].queued, 2u);
  EXPECT_TRUE(after.users.empty());
}

TEST(LLMQueueRuntime, PredictiveAdmissionRefusesAtOnceWhatWouldTimeOut) {
  // One request a second; 60 queued at once with a 30 s timeout. Once the dispatch rate is
  // measured, a newcomer with ~50 ahead of it is refused at once, told when to come back.
  auto config = make_config({model("slow", llmq::ModelType::chat, 60)});
  config.scheduler_limits.request_timeout = 30s;
  config.scheduler_limits.predictive_admission = true;
  config.scheduler_limits.max_queue_size = 100;
  Harness h(std::move(config), {{"chat_completion", std::make_shared<EchoExecutor>()}});
  std::optional<llmq::SchedulerQueueFullError> refused;
  steady::duration refused_at{};
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.run_all(61, [&](int i) -> awaitable<void> {
      if (i == 60) {
        co_await sleep_for(h.clock, 10s);
        refused = co_await catch_error<llmq::SchedulerQueueFullError>([&]() -> awaitable<void> {
          co_await h.queue->execute_request("chat_completion", chat_body(), "late");
        });
        refused_at = h.elapsed();
        co_return;
      }
      try {
        co_await h.queue->execute_request("chat_completion", chat_body(), "u" + std::to_string(i));
      } catch (const llmq::QueueTimeoutError&) {
      }
    });
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.rejected_predicted, 1u);
    co_await h.queue->graceful_shutdown();
  });
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused_at, 10s);  // at once, not after waiting 30 s
  ASSERT_TRUE(refused->retry_after_hint().has_value());
  EXPECT_GT(*refused->retry_after_hint(), 30s);
}

// ---- reconfigure -------------------------------------------------------------------------

namespace {

llmq::QueueOptions no_short_windows() {
  llmq::QueueOptions o;
  o.pace_short_windows = false;  // the 60 s windows alone, so that counts are plain
  return o;
}

/// The stats line of `id`, or nullptr.
const llmq::DeploymentStats* find_deployment(const llmq::QueueStats& s, const std::string& id) {
  for (const auto& d : s.deployments)
    if (d.unique_model_id == id) return &d;
  return nullptr;
}

}  // namespace

TEST(LLMQueueReconfigure, KeptDeploymentsKeepTheirWindowsUnderNewLimitsAndNewOnesServe) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(make_config({model("chat-a", llmq::ModelType::chat, 2)}), {{"chat_completion", echo}},
            no_short_windows());
  std::map<std::string, int> served;
  // (Built outside the coroutine: g++ 12 rejects braced lists of string literals in one.)
  const llmq::LLMConfig next = make_config(
      {model("chat-a", llmq::ModelType::chat, 3), model("chat-c", llmq::ModelType::chat, 10)});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 2; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    co_await h.queue->reconfigure(next);
    auto s = co_await h.queue->stats();
    const auto* a = find_deployment(s, "chat-a");
    const auto* c = find_deployment(s, "chat-c");
    EXPECT_TRUE(a && c);
    if (a && c) {
      EXPECT_EQ(a->requests_in_window, 2);  // the window is kept...
      EXPECT_EQ(a->req_per_min, 3);         // ...under the new limit
      EXPECT_EQ(a->granted, 2u);
      EXPECT_EQ(c->requests_in_window, 0);
    }
    EXPECT_EQ(h.queue->deployments().size(), 2u);
    for (int i = 0; i < 6; ++i) {
      auto r = co_await h.queue->execute_request("chat_completion", chat_body(), "u");
      ++served[r.body["llm"].get<std::string>()];
    }
    co_await h.queue->graceful_shutdown();
  });
  // chat-a had room for one more in its minute; nothing waited.
  EXPECT_EQ(served["chat-a"], 1);
  EXPECT_EQ(served["chat-c"], 5);
  EXPECT_EQ(h.elapsed(), 0s);
}

TEST(LLMQueueReconfigure, ARemovedDeploymentsWaitingRequestsAreAnsweredAndItsRunningOneFinishes) {
  auto sleeper = std::make_shared<SleepExecutor>(nullptr, 0ms);
  std::shared_ptr<SleepExecutor> slow;
  Harness h(make_config({model("chat-a", llmq::ModelType::chat),
                         model("chat-b", llmq::ModelType::chat, 1)}),
            {{"chat_completion", sleeper}}, no_short_windows());
  slow = std::make_shared<SleepExecutor>(h.clock, 10'000ms);
  h.queue->register_request_executor("slow", slow);
  llmq::Response running, waiting, later;
  boost::system::error_code running_ec, waiting_ec, later_ec;
  const llmq::LLMConfig without_b = make_config({model("chat-a", llmq::ModelType::chat)});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    auto ex = co_await asio::this_coro::executor;
    Latch done(ex, 2);
    // One runs on chat-b for 10 s; the next waits for chat-b's window (1 per minute).
    h.queue->async_execute_request("slow", chat_body(), "u", pinned("chat-b"),
                                   [&](boost::system::error_code ec, llmq::Response r) {
                                     running_ec = ec;
                                     running = std::move(r);
                                     done.count_down();
                                   });
    h.queue->async_execute_request("slow", chat_body(), "u", pinned("chat-b"),
                                   [&](boost::system::error_code ec, llmq::Response r) {
                                     waiting_ec = ec;
                                     waiting = std::move(r);
                                     done.count_down();
                                   });
    co_await sleep_for(h.clock, 1s);
    EXPECT_EQ(slow->started.load(), 1);
    co_await h.queue->reconfigure(without_b);
    std::tie(later_ec, later) = co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "u", pinned("chat-b"), asio::as_tuple(asio::use_awaitable));
    co_await done.wait();
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.deployments.size(), 1u);
    EXPECT_EQ(s.in_flight, 0u);
    co_await h.queue->graceful_shutdown();
  });
  // The running request finished on the deployment it had, as it was configured.
  EXPECT_FALSE(running_ec) << running_ec.message();
  EXPECT_EQ(running.status, 200);
  EXPECT_EQ(running.body["llm"], "chat-b");
  EXPECT_EQ(h.elapsed(), 10s);
  // The waiting one was answered at the reconfiguration, saying why.
  EXPECT_EQ(waiting_ec, llmq::errc::unsatisfiable_preferences);
  const std::string why = waiting.body["error"]["message"].get<std::string>();
  EXPECT_NE(why.find("chat-b"), std::string::npos) << why;
  EXPECT_NE(why.find("reconfigured"), std::string::npos) << why;
  EXPECT_EQ(slow->started.load(), 1);
  // A new request for it is refused at once.
  EXPECT_EQ(later_ec, llmq::errc::unsatisfiable_preferences);
  EXPECT_EQ(h.telemetry->records().size(), 3u);
}

TEST(LLMQueueReconfigure, WaitingRequestsMoveToTheNewDeploymentsInTheirOrder) {
  auto sleeper = std::make_shared<SleepExecutor>(nullptr, 0ms);
  Harness h(make_config({model("old", llmq::ModelType::chat, 1)}), {{"chat_completion", sleeper}},
            no_short_windows());
  std::vector<std::string> order;
  std::vector<std::string> served_by;
  const llmq::LLMConfig next = make_config({model("new", llmq::ModelType::chat)});
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    co_await h.queue->execute_request("chat_completion", chat_body(), "u");  // fills `old`
    auto ex = co_await asio::this_coro::executor;
    Latch done(ex, 5);
    for (int i = 0; i < 5; ++i)
      h.queue->async_execute_request("chat_completion", chat_body("n" + std::to_string(i)),
                                     "u" + std::to_string(i), {},
                                     [&](boost::system::error_code ec, llmq::Response r) {
                                       EXPECT_FALSE(ec) << ec.message();
                                       order.push_back(r.body["user"].get<std::string>());
                                       served_by.push_back(r.body["llm"].get<std::string>());
                                       done.count_down();
                                     });
    co_await sleep_for(h.clock, 1s);
    EXPECT_TRUE(order.empty());  // all five wait for `old`'s minute
    co_await h.queue->reconfigure(next);
    co_await done.wait();
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(order, (std::vector<std::string>{"u0", "u1", "u2", "u3", "u4"}));
  EXPECT_EQ(served_by, std::vector<std::string>(5, "new"));
  EXPECT_EQ(h.elapsed(), 1s);  // served at the reconfiguration, not after the minute
}

TEST(LLMQueueReconfigure, AnInvalidConfigIsRefusedAndTheRunningOneKeepsServing) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}});
  bool threw = false;
  int ok = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::LLMConfig bad = default_config();
    bad.azure_open_ai[0].azure_oai_models[1].unique_model_id = "chat-a";  // a duplicate
    try {
      co_await h.queue->reconfigure(bad);
    } catch (const llmq::ConfigError&) {
      threw = true;
    }
    for (int i = 0; i < 4; ++i)
      ok += (co_await h.queue->execute_request("chat_completion", chat_body(), "u")).status == 200;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(threw);
  EXPECT_EQ(ok, 4);
  EXPECT_EQ(h.queue->deployments().size(), 3u);
  EXPECT_EQ(h.queue->deployments()[1].unique_model_id, "chat-b");
}

TEST(LLMQueueReconfigure, UserLimitsAndTiersChangeForTheNextRequest) {
  auto echo = std::make_shared<EchoExecutor>();
  llmq::LLMConfig c = default_config();
  c.user_limits.max_num_requests_in_time_window = 2;
  Harness h(c, {{"chat_completion", echo}});
  boost::system::error_code third, fourth, gold_before, gold_after;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    for (int i = 0; i < 2; ++i)
      co_await h.queue->execute_request("chat_completion", chat_body(), "u");
    third = std::get<0>(co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "u", {}, asio::as_tuple(asio::use_awaitable)));
    llmq::RequestOptions gold;
    gold.tier = "gold";
    gold_before = std::get<0>(co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "v", {}, gold, asio::as_tuple(asio::use_awaitable)));
    llmq::LLMConfig next = default_config();
    next.user_limits.max_num_requests_in_time_window = 5;
    llmq::UserTier tier;
    tier.name = "gold";
    next.user_tiers.push_back(tier);
    co_await h.queue->reconfigure(next);
    fourth = std::get<0>(co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "u", {}, asio::as_tuple(asio::use_awaitable)));
    gold_after = std::get<0>(co_await h.queue->async_execute_request(
        "chat_completion", chat_body(), "v", {}, gold, asio::as_tuple(asio::use_awaitable)));
    auto s = co_await h.queue->stats();
    EXPECT_EQ(s.tiers.size(), 2u);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(third, llmq::errc::user_rate_limited);
  EXPECT_FALSE(fourth) << fourth.message();  // the window (2 used) is kept, the limit is 5
  EXPECT_EQ(gold_before, llmq::errc::invalid_request);
  EXPECT_FALSE(gold_after) << gold_after.message();
}

TEST(LLMQueueReconfigure, ReconfiguringOverAndOverUnderLoadOnManyThreadsLosesNothing) {
  // Callers on four threads while the deployments change 40 times; every request (none
  // pinned) is served, each answer once, each with its telemetry row.
  const llmq::LLMConfig first =
      make_config({model("chat-a", llmq::ModelType::chat), model("chat-b", llmq::ModelType::chat)});
  const llmq::LLMConfig second = make_config(
      {model("chat-b", llmq::ModelType::chat, 500'000), model("chat-c", llmq::ModelType::chat)});
  constexpr int n = 3000;
  std::atomic<int> reconfigured{0};
  const ThreadedRun run = run_on_four_threads(
      first, n, [&](llmq::LLMQueue& queue, const std::atomic<int>& finished) -> awaitable<void> {
        asio::steady_timer pause(co_await asio::this_coro::executor);
        for (int i = 0; i < 40 && finished.load() < n; ++i) {
          co_await queue.reconfigure(i % 2 ? first : second);
          ++reconfigured;
          pause.expires_after(1ms);
          co_await pause.async_wait(asio::use_awaitable);
        }
      });
  EXPECT_TRUE(run.shut);
  EXPECT_GT(reconfigured.load(), 0);
  EXPECT_EQ(run.ok, n);
  EXPECT_EQ(run.telemetry_rows, static_cast<std::uint64_t>(n));
}

// ---- streamed answers (execute_streaming_request) ---------------------------------------

namespace streaming {

/// Writes `chunks` chunks ("c0", "c1", ...), each `gap` after the previous one on the
/// clock. A deployment in `fail_before` answers 503 (with its outcome) before writing; with
/// `break_after` >= 0 the stream breaks off (502) after that many chunks.
class ChunkExecutor : public llmq::RequestExecutor {
 public:
  ChunkExecutor(std::shared_ptr<llmq::Clock> clock, int chunks, steady::duration gap)
      : clock_(std::move(clock)), chunks_(chunks), gap_(gap) {}

  awaitable<llmq::Response> process_request(const llmq::Request& req,
                                            const llmq::ChosenDeployments& chosen,
                                            llmq::TelemetryData&) override {
    ++whole_calls;
    co_return llmq::Response{echo_body(req, chosen), 200};
  }

  awaitable<llmq::Response> process_streaming_request(const llmq::Request&,
                                                      const llmq::ChosenDeployments& chosen,
                                                      llmq::TelemetryData& t,
                                                      llmq::StreamWriter& out) override {
    const std::string id = chosen.llm->unique_model_id;
    tried.push_back(id);
    if (fail_before.count(id)) {
      t.llm_outcome.status = 503;
      co_return llmq::Response{llmq::make_error_body("overloaded", "server_error", "503"), 503};
    }
    try {
      for (int i = 0; i < chunks_; ++i) {
        if (gap_.count() > 0) co_await sleep_for(clock_, gap_);
        if (i == break_after) {
          t.llm_outcome.status = 502;
          co_return llmq::Response{llmq::make_error_body("upstream broke off", "upstream_error",
                                                         "bad_upstream_response"),
                                   502};
        }
        co_await out.write("c" + std::to_string(i));
        ++written;
      }
    } catch (const boost::system::system_error&) {
      ++aborted;
      throw;
    }
    t.llm_outcome.status = 200;
    t.prompt_tokens = 11;
    t.completion_tokens = chunks_;
    json body = json::object();
    body["done"] = true;
    co_return llmq::Response{body, 200};
  }

  std::set<std::string> fail_before;
  int break_after = -1;
  std::vector<std::string> tried;
  int written = 0, aborted = 0, whole_calls = 0;

 private:
  std::shared_ptr<llmq::Clock> clock_;
  int chunks_;
  steady::duration gap_;
};

/// Reads a stream to its end.
awaitable<std::vector<std::string>> read_all(llmq::ResponseStream& s) {
  std::vector<std::string> got;
  while (std::optional<std::string> c = co_await s.next()) got.push_back(std::move(*c));
  co_return got;
}

std::vector<std::string> chunk_names(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back("c" + std::to_string(i));
  return v;
}

}  // namespace streaming

TEST(LLMQueueStreaming, ChunksArriveInOrderWithTimeToFirstTokenAndDurationRecorded) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 5, 10ms);
  h.queue->register_request_executor("chat_completion", exec);
  std::vector<std::string> got;
  steady::duration first_at{};
  llmq::Response end;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s =
        co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "u");
    first_at = h.elapsed();  // the call completes with the first chunk
    EXPECT_TRUE(s.streaming());
    got = co_await streaming::read_all(s);
    end = s.response();
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(first_at, 10ms);
  EXPECT_EQ(got, streaming::chunk_names(5));
  EXPECT_EQ(end.status, 200);
  EXPECT_EQ(end.body["done"], true);
  EXPECT_FALSE(end.request_id.empty());
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].streamed);
  EXPECT_EQ(records[0].status, 200);
  ASSERT_TRUE(records[0].time_to_first_token);
  EXPECT_EQ(*records[0].time_to_first_token, 10ms);
  ASSERT_TRUE(records[0].stream_duration);
  EXPECT_EQ(*records[0].stream_duration, 40ms);
  EXPECT_EQ(records[0].completion_tokens, 5);
}

TEST(LLMQueueStreaming, ASlowReaderHoldsTheWriterBackAtTheBufferSize) {
  llmq::QueueOptions o;
  o.stream_buffer_chunks = 2;
  Harness h(default_config(), {}, o);
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 50, 0ms);
  h.queue->register_request_executor("chat_completion", exec);
  int written_while_reader_slept = -1;
  std::vector<std::string> got;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s =
        co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "u");
    co_await sleep_for(h.clock, 1s);  // the executor runs meanwhile, as far as it may
    written_while_reader_slept = exec->written;
    got = co_await streaming::read_all(s);
    co_await h.queue->graceful_shutdown();
  });
  // The first chunk went to the waiting reader; two more fill the buffer; the next write
  // waits (it counts once it completed).
  EXPECT_EQ(written_while_reader_slept, 3);
  EXPECT_EQ(got, streaming::chunk_names(50));
}

TEST(LLMQueueStreaming, ClosingTheStreamCancelsTheExecutorAndIsRecordedAs499) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 100, 10ms);
  h.queue->register_request_executor("chat_completion", exec);
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    {
      llmq::ResponseStream s =
          co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "u");
      EXPECT_EQ(co_await s.next(), std::optional<std::string>("c0"));
      EXPECT_EQ(co_await s.next(), std::optional<std::string>("c1"));
    }  // closed here
    co_await sleep_for(h.clock, 1s);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(exec->aborted, 1);
  EXPECT_LT(exec->written, 5);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 499);
  EXPECT_TRUE(records[0].streamed);
  EXPECT_EQ(records[0].attempts, 1);
}

TEST(LLMQueueStreaming, CancellingTheReadCancelsTheRequest) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 100, 10ms);
  h.queue->register_request_executor("chat_completion", exec);
  bool aborted = false;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s =
        co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "u");
    asio::cancellation_signal cancel;
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, sleep_for(h.clock, 25ms),
                   [&](std::exception_ptr) { cancel.emit(asio::cancellation_type::terminal); });
    try {
      for (;;) {
        auto c = co_await asio::co_spawn(
            ex, s.next(), asio::bind_cancellation_slot(cancel.slot(), asio::use_awaitable));
        if (!c) break;
      }
    } catch (const boost::system::system_error& e) {
      aborted = e.code() == asio::error::operation_aborted;
    }
    co_await sleep_for(h.clock, 1s);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(aborted);
  EXPECT_EQ(exec->aborted, 1);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 499);
}

TEST(LLMQueueStreaming, AFailureBeforeTheFirstChunkIsRetriedOnAnotherDeployment) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 3, 1ms);
  exec->fail_before = {"chat-a"};
  h.queue->register_request_executor("chat_completion", exec);
  std::vector<std::string> got;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s = co_await h.queue->execute_streaming_request(
        "chat_completion", chat_body(), "u", pinned_name("gpt-4o"));
    got = co_await streaming::read_all(s);
    EXPECT_EQ(s.response().status, 200);
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(exec->tried, (std::vector<std::string>{"chat-a", "chat-b"}));
  EXPECT_EQ(got, streaming::chunk_names(3));
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].attempts, 2);
  EXPECT_EQ(records[0].llm_deployment, "chat-b");
}

TEST(LLMQueueStreaming, AFailureAfterTheFirstChunkEndsTheStreamWithTheErrorAndIsNotRetried) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 5, 1ms);
  exec->break_after = 2;
  h.queue->register_request_executor("chat_completion", exec);
  std::vector<std::string> got;
  llmq::Response end;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s =
        co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "u");
    got = co_await streaming::read_all(s);
    end = s.response();
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_EQ(got, streaming::chunk_names(2));
  EXPECT_EQ(end.status, 502);
  EXPECT_EQ(end.body["error"]["code"], "bad_upstream_response");
  EXPECT_EQ(exec->tried.size(), 1u);
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].status, 502);
  EXPECT_TRUE(records[0].streamed);
}

TEST(LLMQueueStreaming, RefusalsThrowAndTheTokenFormGivesTheErrc) {
  Harness h(default_config(), {});
  auto exec = std::make_shared<streaming::ChunkExecutor>(h.clock, 1, 0ms);
  h.queue->register_request_executor("chat_completion", exec);
  bool threw = false;
  boost::system::error_code ec;
  bool token_form_streaming = true;
  int token_form_status = 0;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    try {
      llmq::ResponseStream s =
          co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "");
    } catch (const llmq::UserIdHeaderMissingError&) {
      threw = true;
    }
    // Named: g++ 12 destroys class temporaries of a co_await expression twice.
    llmq::ModelPreferences prefs;
    llmq::RequestOptions options;
    auto [e2, s2] = co_await h.queue->async_execute_streaming_request(
        "no_such_type", chat_body(), "u", prefs, options, asio::as_tuple(asio::use_awaitable));
    ec = e2;
    token_form_streaming = s2.streaming();
    token_form_status = s2.response().status;
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_TRUE(threw);
  EXPECT_EQ(ec, llmq::errc::unknown_request_type);
  EXPECT_FALSE(token_form_streaming);
  EXPECT_EQ(token_form_status, 404);
}

TEST(LLMQueueStreaming, AnExecutorThatDoesNotStreamAnswersWhole) {
  auto echo = std::make_shared<EchoExecutor>();
  Harness h(default_config(), {{"chat_completion", echo}});
  bool streaming_flag = true;
  llmq::Response r;
  h.run([&]() -> awaitable<void> {
    co_await h.queue->initiate();
    llmq::ResponseStream s =
        co_await h.queue->execute_streaming_request("chat_completion", chat_body(), "user9");
    streaming_flag = s.streaming();
    EXPECT_EQ(co_await s.next(), std::nullopt);
    r = s.response();
    co_await h.queue->graceful_shutdown();
  });
  EXPECT_FALSE(streaming_flag);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body["user"], "user9");
  auto records = h.telemetry->records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_FALSE(records[0].streamed);
  EXPECT_FALSE(records[0].time_to_first_token);
}
