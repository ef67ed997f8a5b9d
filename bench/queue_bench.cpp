// End-to-end in-process benchmark of LLMQueue: closed-loop callers drive requests from
// many users over many deployments through admission, the limiter, the scheduler, the
// balancer, a no-op or fixed-latency executor and telemetry, on one thread.
//
//   llmq_bench_queue [--requests N] [--concurrency C] [--users U] [--deployments D]
//                    [--latency-ms L] [--parked P]
//
// Prints throughput, the queue's overhead per request (caller-observed latency minus the
// executor's own time) at p50/p99/p99.9, CPU time per request, and peak RSS.
//
// --floor first runs the same callers against the floor: a bare coroutine queue of the
// same shape (each request posted to a strand, kept in a deque, taken by one poller
// coroutine, run by one co_spawn per request through the same executor, the answer posted
// back to the caller), then llmq, in the same process, and prints llmq's ratio to it.
//
// --parked P first fills the queue with P requests pinned to one extra deployment whose
// budget is spent (1 request per minute), so they stay queued for the whole run, then
// measures the C closed-loop callers as above: the cost of a request with P others
// waiting in the queue.

#include <llmq/llmq.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  long requests = 300'000;
  long concurrency = 1000;
  long users = 1000;
  long deployments = 16;
  long latency_ms = 0;
  long measure_users = 0;  // instead of the queue run: bytes per active user in the limiter
  long parked = 0;         // requests kept queued (blocked) during the measurement
  bool floor = false;      // also run the floor (a bare coroutine queue) and compare
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--floor") {
      a.floor = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", k.c_str());
      std::exit(2);
    }
    const long v = std::stol(argv[i + 1]);
    if (k == "--requests")
      a.requests = v;
    else if (k == "--concurrency")
      a.concurrency = v;
    else if (k == "--users")
      a.users = v;
    else if (k == "--deployments")
      a.deployments = v;
    else if (k == "--latency-ms")
      a.latency_ms = v;
    else if (k == "--measure-users")
      a.measure_users = v;
    else if (k == "--parked")
      a.parked = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

class NoopExecutor : public llmq::RequestExecutor {
 public:
  asio::awaitable<llmq::Response> process_request(const llmq::Request&,
                                                  const llmq::ChosenDeployments&,
                                                  llmq::TelemetryData&) override {
    co_return llmq::Response{nlohmann::json(), 200};
  }
};

class LatencyExecutor : public llmq::RequestExecutor {
 public:
  explicit LatencyExecutor(std::chrono::milliseconds d) : d_(d) {}
  asio::awaitable<llmq::Response> process_request(const llmq::Request&,
                                                  const llmq::ChosenDeployments&,
                                                  llmq::TelemetryData&) override {
    asio::steady_timer t(co_await asio::this_coro::executor, d_);
    co_await t.async_wait(asio::use_awaitable);
    co_return llmq::Response{nlohmann::json(), 200};
  }

 private:
  std::chrono::milliseconds d_;
};

double cpu_seconds();

/// The floor: the least a coroutine queue of llmq's shape does per request. Requests are
/// posted to a strand and kept in a deque; one poller coroutine takes them in order and
/// co_spawns each through the executor; the answer is posted back to the caller's
/// executor. No limits, balancing, telemetry or timeouts.
class FloorQueue {
 public:
  FloorQueue(asio::any_io_executor ex, std::shared_ptr<llmq::RequestExecutor> exec)
      : strand_(asio::make_strand(ex)), wake_(strand_), exec_(std::move(exec)) {}

  template <class Token>
  auto submit(llmq::Request req, Token&& token) {
    return asio::async_initiate<Token, void(llmq::Response)>(
        [this](auto handler, llmq::Request r) {
          asio::any_io_executor caller = asio::get_associated_executor(handler, strand_);
          asio::post(strand_, [this, r = std::move(r), h = std::move(handler),
                               caller = std::move(caller)]() mutable {
            queue_.push_back(Pending{std::move(r), std::move(h), std::move(caller)});
            wake_.cancel();
          });
        },
        token, std::move(req));
  }

  /// The poller, on the strand, until stop().
  asio::awaitable<void> poll() {
    while (!stopped_) {
      if (queue_.empty()) {
        wake_.expires_at(asio::steady_timer::time_point::max());
        co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      Pending p = std::move(queue_.front());
      queue_.pop_front();
      asio::co_spawn(strand_, run(std::move(p)), asio::detached);
    }
  }

  void stop() {
    asio::post(strand_, [this] {
      stopped_ = true;
      wake_.cancel();
    });
  }
  [[nodiscard]] const asio::strand<asio::any_io_executor>& strand() const { return strand_; }

 private:
  struct Pending {
    llmq::Request req;
    asio::any_completion_handler<void(llmq::Response)> handler;
    asio::any_io_executor caller;  // where the answer is posted
  };

  asio::awaitable<void> run(Pending p) {
    llmq::TelemetryData telemetry;
    llmq::Response r = co_await exec_->process_request(p.req, chosen_, telemetry);
    asio::post(p.caller, [h = std::move(p.handler), r = std::move(r)]() mutable {
      std::move(h)(std::move(r));
    });
  }

  asio::strand<asio::any_io_executor> strand_;
  asio::steady_timer wake_;
  std::shared_ptr<llmq::RequestExecutor> exec_;
  std::deque<Pending> queue_;
  llmq::ChosenDeployments chosen_;
  bool stopped_ = false;
};

/// When a closed-loop run started and ended, in wall-clock and CPU time.
struct Measured {
  Clock::time_point start;
  Clock::time_point end;
  double cpu_start = 0;
  double cpu_end = 0;
};

/// Spawns `n` callers (`caller(i)`, each an awaitable) at once on `io` and waits until all
/// have finished, measuring around them.
template <class Caller>
asio::awaitable<void> run_callers(asio::io_context& io, long n, Caller caller, Measured& m) {
  m.cpu_start = cpu_seconds();
  m.start = Clock::now();
  long done = 0;
  for (long i = 0; i < n; ++i) asio::co_spawn(io, caller(i), [&](std::exception_ptr) { ++done; });
  asio::steady_timer t(io);
  while (done < n) {
    t.expires_after(std::chrono::milliseconds(1));
    co_await t.async_wait(asio::use_awaitable);
  }
  m.end = Clock::now();
  m.cpu_end = cpu_seconds();
}

/// Throughput and CPU per request of one closed-loop run.
struct RunResult {
  double throughput = 0;
  double cpu_ns = 0;
};

/// The callers of the main run, against the floor instead of llmq.
RunResult run_floor(const Args& a, const std::shared_ptr<llmq::RequestExecutor>& exec,
                    const nlohmann::json& request) {
  asio::io_context io(1);
  FloorQueue floor(io.get_executor(), exec);
  long issued = 0;
  long answered = 0;
  auto caller = [&](long id) -> asio::awaitable<void> {
    const std::string user = "user-" + std::to_string(id % a.users);
    while (issued < a.requests) {
      ++issued;
      llmq::Request req;
      req.req_type = "chat_completion";
      req.user_id = user;
      req.body = request;
      const llmq::Response r = co_await floor.submit(std::move(req), asio::use_awaitable);
      if (r.status == 200) ++answered;
    }
  };
  Measured m;
  asio::co_spawn(floor.strand(), floor.poll(), asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await run_callers(io, a.concurrency, caller, m);
        floor.stop();
      },
      asio::detached);
  io.run();
  RunResult r;
  r.throughput =
      static_cast<double>(answered) / std::chrono::duration<double>(m.end - m.start).count();
  r.cpu_ns = (m.cpu_end - m.cpu_start) * 1e9 / static_cast<double>(std::max(answered, 1L));
  return r;
}

llmq::LLMConfig make_config(const Args& a) {
  llmq::LLMConfig c;
  llmq::AzureOpenAIConfig g;
  g.api_key = "bench";
  g.api_version = "2024-10-21";
  g.azure_endpoint = "http://127.0.0.1:1/";
  for (long i = 0; i < a.deployments; ++i) {
    llmq::AzureModelConfig m;
    m.unique_model_id = "d" + std::to_string(i);
    m.model_name_in_azure = "gpt-4o";
    m.deployment_name_in_azure = m.unique_model_id;
    m.model_type = llmq::ModelType::chat;
    m.req_per_min = 1'000'000'000;
    m.tokens_per_min = 1'000'000'000'000;
    g.azure_oai_models.push_back(std::move(m));
  }
  if (a.parked > 0) {  // one request per minute: the parked requests wait behind it
    llmq::AzureModelConfig m;
    m.unique_model_id = "parked";
    m.model_name_in_azure = "parked-model";
    m.deployment_name_in_azure = "parked";
    m.model_type = llmq::ModelType::embeddings;  // outside the measured requests' choice
    m.req_per_min = 1;
    m.tokens_per_min = 1'000'000'000'000;
    m.weight = 1;
    g.azure_oai_models.push_back(std::move(m));
  }
  c.azure_open_ai.push_back(std::move(g));
  c.user_limits.max_num_requests_in_time_window = 1'000'000'000;
  c.scheduler_limits.max_queue_size = static_cast<std::size_t>(a.concurrency + a.parked) + 1;
  c.scheduler_limits.request_timeout = std::chrono::minutes(10);
  return c;
}

nlohmann::json body() {
  return nlohmann::json{
      {"messages", nlohmann::json::array({{{"role", "user"}, {"content", "Hello, world!"}}})},
      {"max_tokens", 16}};
}

/// Heap bytes per active user in the in-memory limiter: every user at the seed's limit of
/// 40 requests in the window, measured with mallinfo2 around the fill.
int measure_users(long users) {
  const auto before = mallinfo2().uordblks;
  {
    llmq::SlidingWindowLimiter limiter;
    auto now = Clock::now();
    for (long u = 0; u < users; ++u) {
      const std::string id = "user-" + std::to_string(u) + "@tenant.example";
      for (int k = 0; k < 40; ++k) limiter.acquire(id, now, 40, std::chrono::seconds(60));
      now += std::chrono::microseconds(1);
    }
    const auto after = mallinfo2().uordblks;
    std::printf("users %ld limiter heap %.1f MiB bytes/user %.0f (estimate %.0f)\n", users,
                static_cast<double>(after - before) / (1024.0 * 1024.0),
                static_cast<double>(after - before) / static_cast<double>(users),
                static_cast<double>(limiter.memory_bytes()) / static_cast<double>(users));
  }
  return 0;
}

long peak_rss_kib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/// User + system CPU time of this process, in seconds.
double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto secs = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return secs(ru.ru_utime) + secs(ru.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.measure_users > 0) return measure_users(a.measure_users);
  // With parked requests, the shutdown at the end refuses them (and warns): expected.
  llmq::logger()->set_level(a.parked > 0 ? spdlog::level::err : spdlog::level::warn);
  asio::io_context io(1);
  std::shared_ptr<llmq::RequestExecutor> exec;
  if (a.latency_ms > 0)
    exec = std::make_shared<LatencyExecutor>(std::chrono::milliseconds(a.latency_ms));
  else
    exec = std::make_shared<NoopExecutor>();
  llmq::QueueOptions o;
  o.telemetry_store = std::make_shared<llmq::InMemoryTelemetryStore>(10'000);
  o.telemetry_buffer_capacity = 1'000'000;
  o.shutdown_timeout = std::chrono::milliseconds(100);  // parked requests are then refused
  const nlohmann::json request = body();
  RunResult floor;
  if (a.floor) floor = run_floor(a, exec, request);
  llmq::LLMQueue queue(io.get_executor(), make_config(a), {{"chat_completion", exec}}, o);

  std::vector<std::int64_t> overhead_ns;
  overhead_ns.reserve(static_cast<std::size_t>(a.requests));
  long issued = 0, answered = 0, failed = 0;
  Measured m;
  const auto executor_time = std::chrono::milliseconds(a.latency_ms);

  auto caller = [&](long id) -> asio::awaitable<void> {
    const std::string user = "user-" + std::to_string(id % a.users);
    while (issued < a.requests) {
      ++issued;
      const auto t0 = Clock::now();
      try {
        auto r = co_await queue.execute_request("chat_completion", request, user);
        if (r.status == 200)
          ++answered;
        else
          ++failed;
      } catch (const std::exception&) {
        ++failed;
      }
      overhead_ns.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0 - executor_time)
              .count());
    }
  };
  auto parked_caller = [&](long id) -> asio::awaitable<void> {
    llmq::ModelPreferences pin;
    pin.require_llm_model = false;
    pin.require_embedding_model = true;
    pin.specific_embedding_model = "parked";
    try {
      co_await queue.execute_request("chat_completion", request,
                                     "parked-" + std::to_string(id % a.users), pin);
    } catch (const std::exception&) {  // refused by the shutdown at the end
    }
  };
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await queue.initiate();
        asio::steady_timer wait(io);
        if (a.parked > 0) {
          for (long i = 0; i < a.parked + 1; ++i)  // the first one spends the budget
            asio::co_spawn(io, parked_caller(i), asio::detached);
          for (;;) {
            wait.expires_after(std::chrono::milliseconds(1));
            co_await wait.async_wait(asio::use_awaitable);
            const llmq::QueueStats st = co_await queue.stats();
            if (st.queue_depth >= static_cast<std::size_t>(a.parked)) break;
          }
        }
        co_await run_callers(io, a.concurrency, caller, m);
        const llmq::QueueStats st = co_await queue.stats();
        if (st.queue_depth < static_cast<std::size_t>(a.parked))
          std::fprintf(stderr, "parked requests left the queue early (%zu queued)\n",
                       st.queue_depth);
        co_await queue.graceful_shutdown();
      },
      asio::detached);
  io.run();

  const double secs = std::chrono::duration<double>(m.end - m.start).count();
  std::sort(overhead_ns.begin(), overhead_ns.end());
  auto pct = [&](double p) {
    if (overhead_ns.empty()) return 0.0;
    const auto i = static_cast<std::size_t>(p * static_cast<double>(overhead_ns.size() - 1));
    return static_cast<double>(overhead_ns[i]) / 1000.0;
  };
  std::printf(
      "requests %ld concurrency %ld users %ld deployments %ld executor_latency_ms %ld parked %ld\n",
      a.requests, a.concurrency, a.users, a.deployments, a.latency_ms, a.parked);
  std::printf("answered %ld/%ld failed %ld\n", answered, a.requests, failed);
  std::printf("throughput %.0f requests/s\n", static_cast<double>(answered) / secs);
  std::printf("queue overhead us: p50 %.1f p99 %.1f p99.9 %.1f\n", pct(0.5), pct(0.99), pct(0.999));
  std::printf("cpu per request ns %.0f\n",
              (m.cpu_end - m.cpu_start) * 1e9 / static_cast<double>(std::max(answered, 1L)));
  if (a.floor) {
    const double llmq_throughput = static_cast<double>(answered) / secs;
    const double llmq_cpu =
        (m.cpu_end - m.cpu_start) * 1e9 / static_cast<double>(std::max(answered, 1L));
    std::printf("floor throughput %.0f requests/s cpu per request ns %.0f\n", floor.throughput,
                floor.cpu_ns);
    std::printf("ratio to floor: throughput %.2f cpu per request %.2f\n",
                llmq_throughput / floor.throughput, llmq_cpu / floor.cpu_ns);
  }
  std::printf("peak rss %ld KiB\n", peak_rss_kib());
  return answered == a.requests ? 0 : 1;
}
