// Providers benchmark against the in-process mock Azure server (tools/mock_azure):
//
//   (a) direct: HttpClient -> mock (build_upstream_request, request, JSON parse);
//   (b) queue:  LLMQueue + default executors (register_default_executors) + the same
//       HttpClient -> the same mock;
//
// both closed loop with C callers and N requests, mock latency fixed at 0 ms and no limits
// on either side; K rounds of (a) then (b). Prints throughput and p50/p99 latency of each
// round and their medians over the rounds, and the ratio b/a of the medians.
//
// With --pacing-seconds S it then offers LOAD x the combined limit of two deployments of
// RPM R (and TPM T) for S seconds, open loop (requests submitted at a constant rate, all
// answered), with llmq configured with exactly the mock's limits, and prints the 429s the
// mock sent and what the callers got.
//
//   llmq_bench_providers [--requests N] [--concurrency C] [--warmup W] [--rounds K]
//                        [--pacing-seconds S] [--pacing-load LOAD]
//                        [--pacing-rpm R] [--pacing-tpm T] [--pacing-max-tokens M]
//                        [--pace-short-windows 0|1] [--reconcile-tokens-down 0|1]
//
// The mock runs on its own thread (one io_context thread); the client and queue on the
// main thread.

#include <llmq/llmq.hpp>
#include <llmq/mock/server.hpp>
#include <llmq/providers.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using asio::awaitable;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

const std::string kKey = "bench-key";

struct Args {
  std::size_t requests = 20'000;
  std::size_t concurrency = 32;
  std::size_t warmup = 1'000;
  std::size_t rounds = 3;     // direct and queue runs alternate; medians are reported
  double pacing_seconds = 0;  // 0: no pacing run
  double pacing_load = 2.0;
  std::int64_t pacing_rpm = 600;
  std::int64_t pacing_tpm = 0;  // 0: no token limit at the mock (llmq: effectively none)
  int pacing_max_tokens = 100;
  bool pace_short_windows = true;      // QueueOptions::pace_short_windows of the pacing run
  bool reconcile_tokens_down = false;  // QueueOptions::reconcile_tokens_down of the pacing run
};

[[noreturn]] void usage(int code) {
  std::fprintf(
      code == 0 ? stdout : stderr,
      "usage: llmq_bench_providers [--requests N] [--concurrency C] [--warmup W] [--rounds K]\n"
      "         [--pacing-seconds S] [--pacing-load LOAD] [--pacing-rpm R]\n"
      "         [--pacing-tpm T] [--pacing-max-tokens M] [--pace-short-windows 0|1]\n"
      "         [--reconcile-tokens-down 0|1]\n");
  std::exit(code);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") usage(0);
    if (i + 1 >= argc) usage(2);
    const std::string v = argv[++i];
    try {
      if (k == "--requests")
        a.requests = std::stoul(v);
      else if (k == "--concurrency")
        a.concurrency = std::stoul(v);
      else if (k == "--warmup")
        a.warmup = std::stoul(v);
      else if (k == "--rounds")
        a.rounds = std::stoul(v);
      else if (k == "--pacing-seconds")
        a.pacing_seconds = std::stod(v);
      else if (k == "--pacing-load")
        a.pacing_load = std::stod(v);
      else if (k == "--pacing-rpm")
        a.pacing_rpm = std::stoll(v);
      else if (k == "--pacing-tpm")
        a.pacing_tpm = std::stoll(v);
      else if (k == "--pacing-max-tokens")
        a.pacing_max_tokens = std::stoi(v);
      else if (k == "--pace-short-windows")
        a.pace_short_windows = std::stoi(v) != 0;
      else if (k == "--reconcile-tokens-down")
        a.reconcile_tokens_down = std::stoi(v) != 0;
      else
        usage(2);
    } catch (const std::exception&) {
      std::fprintf(stderr, "bad value for %s: %s\n", k.c_str(), v.c_str());
      std::exit(2);
    }
  }
  if (a.requests == 0 || a.concurrency == 0 || a.rounds == 0 || a.pacing_load <= 0 ||
      a.pacing_rpm <= 0 || a.pacing_tpm < 0 || a.pacing_max_tokens <= 0)
    usage(2);
  return a;
}

json chat_body(int max_tokens = 16) {
  json msg = json::object();
  msg["role"] = "user";
  msg["content"] = "Benchmark prompt: say something short.";
  json b = json::object();
  b["messages"] = json::array({msg});
  b["max_tokens"] = max_tokens;
  return b;
}

llmq::mock::DeploymentConfig mock_deployment(std::string name, std::int64_t rpm, std::int64_t tpm) {
  llmq::mock::DeploymentConfig d;
  d.name = std::move(name);
  d.model = "gpt-4o";
  d.req_per_min = rpm;
  d.tokens_per_min = tpm;
  return d;
}

llmq::AzureModelConfig llmq_model(std::string id, std::string deployment, std::int64_t rpm,
                                  std::int64_t tpm) {
  llmq::AzureModelConfig m;
  m.unique_model_id = std::move(id);
  m.model_name_in_azure = "gpt-4o";
  m.deployment_name_in_azure = std::move(deployment);
  m.req_per_min = rpm;
  m.tokens_per_min = tpm;
  m.error_backoff = 1s;
  return m;
}

llmq::LLMConfig llmq_config(const std::string& endpoint, std::vector<llmq::AzureModelConfig> models,
                            std::chrono::milliseconds queue_timeout) {
  llmq::AzureOpenAIConfig g;
  g.api_key = kKey;
  g.api_version = "2024-10-21";
  g.azure_endpoint = endpoint;
  g.azure_oai_models = std::move(models);
  llmq::LLMConfig c;
  c.azure_open_ai.push_back(std::move(g));
  c.user_limits.max_num_requests_in_time_window = 1'000'000'000;
  c.user_limits.time_window = 60s;
  c.scheduler_limits.max_queue_size = 1'000'000;
  c.scheduler_limits.request_timeout = queue_timeout;
  return c;
}

/// Latencies in microseconds plus error count and wall time.
struct Run {
  std::vector<double> latency_us;
  std::size_t errors = 0;
  double seconds = 0;

  [[nodiscard]] double percentile(double p) const {
    if (latency_us.empty()) return 0;
    std::vector<double> v = latency_us;
    const auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
  }
  [[nodiscard]] double throughput() const {
    return seconds > 0 ? static_cast<double>(latency_us.size()) / seconds : 0;
  }
};

/// Completes when `remaining` reaches zero (the last finisher cancels the timer).
struct Countdown {
  explicit Countdown(asio::any_io_executor ex, std::size_t n) : timer(ex), remaining(n) {
    timer.expires_at(Clock::time_point::max());
  }
  void done() {
    if (--remaining == 0) timer.cancel();
  }
  awaitable<void> wait() {
    if (remaining == 0) co_return;
    boost::system::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  asio::steady_timer timer;
  std::size_t remaining;
};

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

// ---- (a) direct ---------------------------------------------------------------------------

awaitable<void> direct_worker(llmq::HttpClient& client, const llmq::Deployment& d, const json& body,
                              std::size_t& next, std::size_t total, Run& run) {
  while (next < total) {
    ++next;
    const auto t0 = Clock::now();
    llmq::HttpRequest req =
        llmq::build_upstream_request(d, llmq::UpstreamOperation::chat_completions, body);
    try {
      llmq::HttpResponse resp = co_await client.request(std::move(req));
      const json parsed = json::parse(resp.body, nullptr, false);
      if (resp.status != 200 || parsed.is_discarded()) ++run.errors;
    } catch (const std::exception&) {
      ++run.errors;
    }
    run.latency_us.push_back(micros(Clock::now() - t0));
  }
}

awaitable<Run> run_direct(llmq::HttpClient& client, const llmq::Deployment& d, std::size_t n,
                          std::size_t c) {
  auto ex = co_await asio::this_coro::executor;
  const json body = chat_body();
  Run run;
  run.latency_us.reserve(n);
  std::size_t next = 0;
  Countdown countdown(ex, c);
  const auto start = Clock::now();
  for (std::size_t w = 0; w < c; ++w) {
    asio::co_spawn(ex, direct_worker(client, d, body, next, n, run),
                   [&countdown](std::exception_ptr) { countdown.done(); });
  }
  co_await countdown.wait();
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  co_return run;
}

// ---- (b) through the queue ------------------------------------------------------------------

awaitable<void> queue_worker(llmq::LLMQueue& queue, const json& body, std::string user,
                             std::size_t& next, std::size_t total, Run& run) {
  while (next < total) {
    ++next;
    const auto t0 = Clock::now();
    try {
      llmq::Response r = co_await queue.execute_request("chat_completion", body, user);
      if (r.status != 200) ++run.errors;
    } catch (const std::exception&) {
      ++run.errors;
    }
    run.latency_us.push_back(micros(Clock::now() - t0));
  }
}

awaitable<Run> run_queue(llmq::LLMQueue& queue, std::size_t n, std::size_t c) {
  auto ex = co_await asio::this_coro::executor;
  const json body = chat_body();
  Run run;
  run.latency_us.reserve(n);
  std::size_t next = 0;
  Countdown countdown(ex, c);
  const auto start = Clock::now();
  for (std::size_t w = 0; w < c; ++w) {
    asio::co_spawn(ex,
                   queue_worker(queue, body, "bench-user-" + std::to_string(w % 64), next, n, run),
                   [&countdown](std::exception_ptr) { countdown.done(); });
  }
  co_await countdown.wait();
  run.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  co_return run;
}

void print_row(const char* name, const Run& r, std::size_t c) {
  std::printf("%-8s %9zu %6zu %9.2f %10.0f %10.1f %10.1f %7zu\n", name, r.latency_us.size(), c,
              r.seconds, r.throughput(), r.percentile(50), r.percentile(99), r.errors);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Per-round results of one mode; medians over the rounds.
struct Summary {
  std::vector<double> throughputs, p50s, p99s;
  std::size_t errors = 0;
  void add(const Run& r) {
    throughputs.push_back(r.throughput());
    p50s.push_back(r.percentile(50));
    p99s.push_back(r.percentile(99));
    errors += r.errors;
  }
  [[nodiscard]] double throughput() const { return median(throughputs); }
  [[nodiscard]] double p50() const { return median(p50s); }
  [[nodiscard]] double p99() const { return median(p99s); }
};

awaitable<void> overhead(const Args& args, llmq::mock::MockAzureServer& mock,
                         std::shared_ptr<llmq::HttpClient> client) {
  auto ex = co_await asio::this_coro::executor;
  // The deployment of the direct run, as the executors would address it.
  llmq::Deployment d;
  d.unique_model_id = "bench";
  d.model_name_in_azure = "gpt-4o";
  d.deployment_name_in_azure = "bench-chat";
  d.endpoint = mock.base_url();
  d.api_key = kKey;
  d.api_version = "2024-10-21";
  d.req_per_min = 1'000'000'000;
  d.tokens_per_min = 1'000'000'000'000;

  llmq::QueueOptions options;  // defaults: in-memory telemetry, pacing on (limits too high to bind)
  llmq::LLMQueue queue(
      ex,
      llmq_config(mock.base_url(),
                  {llmq_model("bench", "bench-chat", 1'000'000'000, 1'000'000'000'000)}, 300s),
      {}, options);
  llmq::register_default_executors(queue, client);
  co_await queue.initiate();

  if (args.warmup > 0) {
    (void)co_await run_direct(*client, d, args.warmup, args.concurrency);
    (void)co_await run_queue(queue, args.warmup, args.concurrency);
  }
  mock.reset();
  std::printf("%-8s %9s %6s %9s %10s %10s %10s %7s\n", "mode", "requests", "C", "seconds", "req/s",
              "p50_us", "p99_us", "errors");
  Summary direct, queued;
  for (std::size_t round = 0; round < args.rounds; ++round) {
    const Run a = co_await run_direct(*client, d, args.requests, args.concurrency);
    print_row("direct", a, args.concurrency);
    direct.add(a);
    const Run b = co_await run_queue(queue, args.requests, args.concurrency);
    print_row("queue", b, args.concurrency);
    queued.add(b);
  }
  co_await queue.graceful_shutdown();

  std::printf("median of %zu rounds:\n", args.rounds);
  std::printf("%-8s %9zu %6zu %9s %10.0f %10.1f %10.1f %7zu\n", "direct", args.requests,
              args.concurrency, "", direct.throughput(), direct.p50(), direct.p99(), direct.errors);
  std::printf("%-8s %9zu %6zu %9s %10.0f %10.1f %10.1f %7zu\n", "queue", args.requests,
              args.concurrency, "", queued.throughput(), queued.p50(), queued.p99(), queued.errors);
  std::printf("queue/direct: p50 x%.2f (+%.1f us), p99 x%.2f (+%.1f us), throughput x%.2f\n",
              queued.p50() / direct.p50(), queued.p50() - direct.p50(), queued.p99() / direct.p99(),
              queued.p99() - direct.p99(), queued.throughput() / direct.throughput());
  const auto c = mock.counters("bench-chat");
  std::printf("mock saw %llu requests, %llu ok (expected %zu)\n",
              static_cast<unsigned long long>(c.requests), static_cast<unsigned long long>(c.ok),
              2 * args.requests * args.rounds);
}

// ---- pacing against Azure's limits ----------------------------------------------------------

awaitable<void> pacing(const Args& args, llmq::mock::MockAzureServer& mock,
                       std::shared_ptr<llmq::HttpClient> client) {
  auto ex = co_await asio::this_coro::executor;
  const std::int64_t rpm = args.pacing_rpm;
  // llmq needs a positive TPM: without a mock limit use one that never binds.
  const std::int64_t llmq_tpm = args.pacing_tpm > 0 ? args.pacing_tpm : 1'000'000'000'000;
  const double rate = args.pacing_load * 2.0 * static_cast<double>(rpm) / 60.0;  // per second
  const auto total = static_cast<std::size_t>(rate * args.pacing_seconds + 0.5);
  // Everything submitted must still be answered: the queue may hold the backlog that long.
  const auto drain = std::chrono::milliseconds(static_cast<std::int64_t>(
      1000.0 * (static_cast<double>(total) / (rate / args.pacing_load)) + 120'000.0));
  llmq::QueueOptions options;
  options.pace_short_windows = args.pace_short_windows;
  options.reconcile_tokens_down = args.reconcile_tokens_down;
  llmq::LLMQueue queue(ex,
                       llmq_config(mock.base_url(),
                                   {llmq_model("chat-a", "pace-a", rpm, llmq_tpm),
                                    llmq_model("chat-b", "pace-b", rpm, llmq_tpm)},
                                   drain),
                       {}, options);
  llmq::register_default_executors(queue, client);
  co_await queue.initiate();
  mock.reset();

  const json body = chat_body(args.pacing_max_tokens);
  std::map<int, std::size_t> statuses;
  std::size_t exceptions = 0;
  std::vector<double> latency_us;
  latency_us.reserve(total);
  Countdown countdown(ex, total);
  const auto start = Clock::now();
  const auto interval = std::chrono::duration<double>(1.0 / rate);
  asio::steady_timer tick(ex);
  for (std::size_t i = 0; i < total; ++i) {
    tick.expires_at(start +
                    std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i)));
    co_await tick.async_wait(asio::use_awaitable);
    asio::co_spawn(
        ex,
        [&queue, &body, &statuses, &exceptions, &latency_us]() -> awaitable<void> {
          const auto t0 = Clock::now();
          try {
            llmq::Response r = co_await queue.execute_request("chat_completion", body, "pacer");
            ++statuses[r.status];
          } catch (const std::exception&) {
            ++exceptions;
          }
          latency_us.push_back(micros(Clock::now() - t0));
        },
        [&countdown](std::exception_ptr) { countdown.done(); });
  }
  const double submit_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  co_await countdown.wait();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const llmq::QueueStats stats = co_await queue.stats();
  co_await queue.graceful_shutdown();

  const auto a = mock.counters("pace-a");
  const auto b = mock.counters("pace-b");
  const std::uint64_t sent = a.requests + b.requests;
  const std::uint64_t throttled = a.rate_limited + b.rate_limited;
  const std::uint64_t ok = a.ok + b.ok;
  std::printf(
      "pacing: 2 deployments x %lld RPM / %lld TPM (mock and llmq), max_tokens %d, "
      "pace_short_windows %s, reconcile_tokens_down %s, offered %.1f req/s (%.1fx the limit) for "
      "%.1f s: %zu requests\n",
      static_cast<long long>(rpm), static_cast<long long>(args.pacing_tpm), args.pacing_max_tokens,
      args.pace_short_windows ? "on" : "off", args.reconcile_tokens_down ? "on" : "off", rate,
      args.pacing_load, submit_seconds, total);
  std::printf(
      "  upstream: %llu requests, %llu ok, %llu x 429 (429 rate %.3f %%), peak per 1 s "
      "window %llu / %llu\n",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(ok),
      static_cast<unsigned long long>(throttled),
      sent ? 100.0 * static_cast<double>(throttled) / static_cast<double>(sent) : 0.0,
      static_cast<unsigned long long>(a.max_requests_in_1s),
      static_cast<unsigned long long>(b.max_requests_in_1s));
  const std::int64_t estimate = llmq::estimate_chat_tokens(body);
  std::printf("  served %.2f req/s over %.1f s (limits: %.2f req/s by RPM",
              static_cast<double>(ok) / seconds, seconds, 2.0 * static_cast<double>(rpm) / 60.0);
  if (args.pacing_tpm > 0)
    std::printf(", %.2f req/s by TPM at %lld estimated tokens per request",
                2.0 * static_cast<double>(args.pacing_tpm) / 60.0 / static_cast<double>(estimate),
                static_cast<long long>(estimate));
  std::printf(")\n");
  std::printf("  callers:");
  for (const auto& [status, n] : statuses) std::printf(" %zu x %d", n, status);
  if (exceptions) std::printf(" %zu x exception", exceptions);
  std::printf("; llmq saw %llu + %llu throttled\n",
              static_cast<unsigned long long>(stats.deployments.at(0).throttled),
              static_cast<unsigned long long>(stats.deployments.at(1).throttled));
  Run r;
  r.latency_us = std::move(latency_us);
  std::printf("  caller latency (queueing included): p50 %.0f ms, p99 %.0f ms\n",
              r.percentile(50) / 1000.0, r.percentile(99) / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  llmq::logger()->set_level(spdlog::level::warn);

  llmq::mock::MockConfig cfg;
  cfg.api_key = kKey;
  cfg.latency.ms = 0;
  cfg.deployments.push_back(mock_deployment("bench-chat", 0, 0));
  cfg.deployments.push_back(mock_deployment("pace-a", args.pacing_rpm, args.pacing_tpm));
  cfg.deployments.push_back(mock_deployment("pace-b", args.pacing_rpm, args.pacing_tpm));

  asio::io_context mock_io(1);
  auto server = std::make_unique<llmq::mock::MockAzureServer>(mock_io.get_executor(), cfg);
  server->listen("127.0.0.1", 0);
  std::thread mock_thread([&mock_io] { mock_io.run(); });

  asio::io_context io(1);
  llmq::HttpClientOptions http;
  http.max_connections_per_host = std::max<std::size_t>(args.concurrency, 32);
  http.request_timeout = 60s;
  auto client = std::make_shared<llmq::HttpClient>(io.get_executor(), http);

  int rc = 0;
  std::printf("llmq_bench_providers: %zu requests, concurrency %zu, mock latency 0 ms\n",
              args.requests, args.concurrency);
  asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await overhead(args, *server, client);
        if (args.pacing_seconds > 0) co_await pacing(args, *server, client);
        client->close();
      },
      [&rc, &client](std::exception_ptr e) {
        if (!e) return;
        client->close();
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          std::fprintf(stderr, "benchmark failed: %s\n", ex.what());
          rc = 1;
        }
      });
  io.run();
  server->stop();
  mock_thread.join();
  server.reset();
  return rc;
}
