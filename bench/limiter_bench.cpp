// Decisions per second of the per-user limiter, three ways, on one thread:
//   (i)   SlidingWindowLimiter::acquire, called directly with steady_clock::now();
//   (ii)  InMemoryUserRateLimitStore::acquire, co_awaited in one coroutine;
//   (iii) RedisUserRateLimitStore::acquire from C coroutines at once, all pipelined on
//         the store's one connection (C = 1, 16, 256 by default).
// The in-memory modes report the median of three runs (each with a fresh limiter or
// store). Every mode makes the same sequence of decisions: users drawn pseudo-randomly from
// 10 000, each limited to 40 requests per 60 s, so early decisions admit and later ones
// refuse, as a busy gateway would. Each Redis run uses a fresh key prefix (so it starts
// from empty windows, like the in-memory runs) and deletes its keys afterwards.
//
//   llmq_bench_limiter [--redis redis://127.0.0.1:6390/0 | --redis none] [--decisions N]
//                      [--users U] [--limit L] [--callers 1,16,256]
//
// Without a reachable Redis the Redis rows are skipped with a note (exit status 0); a
// Redis error during a run makes the exit status 1.

#include <llmq/llmq.hpp>
#include <llmq/redis.hpp>
#include <llmq/redis_rate_limit_store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string redis = "redis://127.0.0.1:6390/0";
  long decisions = 200'000;
  long users = 10'000;
  long limit = 40;
  std::vector<long> callers = {1, 16, 256};
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "%s\nusage: llmq_bench_limiter [--redis URL|none] [--decisions N] [--users U] "
               "[--limit L] [--callers 1,16,256]\n",
               why);
  std::exit(2);
}

long positive(const std::string& s) {
  try {
    std::size_t used = 0;
    const long v = std::stol(s, &used);
    if (used == s.size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  usage(("not a positive number: " + s).c_str());
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + k).c_str());
    const std::string v = argv[i + 1];
    if (k == "--redis") {
      a.redis = v;
    } else if (k == "--decisions") {
      a.decisions = positive(v);
    } else if (k == "--users") {
      a.users = positive(v);
    } else if (k == "--limit") {
      a.limit = positive(v);
    } else if (k == "--callers") {
      a.callers.clear();
      std::size_t start = 0;
      while (start <= v.size()) {
        const std::size_t comma = std::min(v.find(',', start), v.size());
        a.callers.push_back(positive(v.substr(start, comma - start)));
        start = comma + 1;
      }
    } else {
      usage(("unknown option " + k).c_str());
    }
  }
  return a;
}

/// The decisions every mode makes, in order.
struct Workload {
  std::vector<std::string> names;    // "user-<i>"
  std::vector<std::uint32_t> order;  // index into names, one per decision
  llmq::UserLimits limits;
};

Workload make_workload(const Args& a) {
  Workload w;
  w.names.reserve(static_cast<std::size_t>(a.users));
  for (long i = 0; i < a.users; ++i) w.names.push_back("user-" + std::to_string(i));
  std::mt19937_64 gen(20241129);  // fixed: every mode and every run sees the same sequence
  std::uniform_int_distribution<std::uint32_t> pick(0, static_cast<std::uint32_t>(a.users - 1));
  w.order.resize(static_cast<std::size_t>(a.decisions));
  for (auto& u : w.order) u = pick(gen);
  w.limits.max_num_requests_in_time_window = a.limit;
  w.limits.time_window = std::chrono::seconds(60);
  return w;
}

struct Row {
  std::string mode;
  long callers = 1;
  std::size_t decisions = 0;
  double seconds = 0;
  std::int64_t admitted = 0;
  std::int64_t errors = 0;
  std::optional<double> p50_us;
  std::optional<double> p99_us;
};

void print_header(const Args& a) {
  std::printf("users %ld, limit %ld per 60 s, %ld decisions per run\n\n", a.users, a.limit,
              a.decisions);
  std::printf("| limiter | callers | decisions/s | admitted | errors | p50 | p99 |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  std::fflush(stdout);
}

std::string micros(const std::optional<double>& us) {
  if (!us) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f us", *us);
  return buf;
}

void print_row(const Row& r) {
  const double rate = static_cast<double>(r.decisions) / r.seconds;
  std::printf("| %s | %ld | %.0f | %lld | %lld | %s | %s |\n", r.mode.c_str(), r.callers, rate,
              static_cast<long long>(r.admitted), static_cast<long long>(r.errors),
              micros(r.p50_us).c_str(), micros(r.p99_us).c_str());
  std::fflush(stdout);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// --- (i) the decision core -------------------------------------------------------------

Row bench_core(const Workload& w) {
  llmq::SlidingWindowLimiter limiter;
  const auto window =
      std::chrono::duration_cast<llmq::SlidingWindowLimiter::clock::duration>(w.limits.time_window);
  Row r;
  r.mode = "SlidingWindowLimiter (direct call)";
  r.decisions = w.order.size();
  const auto t0 = Clock::now();
  for (const std::uint32_t u : w.order) {
    const llmq::RateLimitDecision d =
        limiter.acquire(w.names[u], llmq::SlidingWindowLimiter::clock::now(),
                        w.limits.max_num_requests_in_time_window, window);
    r.admitted += d.allowed ? 1 : 0;
  }
  r.seconds = seconds_since(t0);
  return r;
}

// --- (ii) the in-memory store in a coroutine -------------------------------------------

asio::awaitable<void> in_memory_loop(llmq::InMemoryUserRateLimitStore& store, const Workload& w,
                                     Row& r) {
  for (const std::uint32_t u : w.order) {
    const llmq::RateLimitDecision d = co_await store.acquire(w.names[u], w.limits);
    r.admitted += d.allowed ? 1 : 0;
  }
}

Row bench_in_memory(const Workload& w) {
  asio::io_context io;
  llmq::InMemoryUserRateLimitStore store;
  Row r;
  r.mode = "InMemoryUserRateLimitStore (co_await)";
  r.decisions = w.order.size();
  asio::co_spawn(io, in_memory_loop(store, w, r), asio::detached);
  const auto t0 = Clock::now();
  io.run();
  r.seconds = seconds_since(t0);
  return r;
}

// --- (iii) Redis, C callers pipelined on one connection --------------------------------

struct RedisRun {
  std::size_t next = 0;  // next decision to take; one thread, no atomics needed
  std::vector<std::int64_t> latency_ns;
  std::int64_t admitted = 0;
  std::int64_t errors = 0;
  std::string first_error;
  std::string unreachable;  // the warm-up's error: Redis rows are skipped
  Clock::time_point started;
  Clock::time_point finished;
};

asio::awaitable<void> redis_caller(llmq::RedisUserRateLimitStore& store, const Workload& w,
                                   RedisRun& run) {
  for (;;) {
    const std::size_t i = run.next++;
    if (i >= w.order.size()) co_return;
    const auto t0 = Clock::now();
    try {
      const llmq::RateLimitDecision d = co_await store.acquire(w.names[w.order[i]], w.limits);
      run.admitted += d.allowed ? 1 : 0;
    } catch (const std::exception& e) {
      if (run.errors++ == 0) run.first_error = e.what();
    }
    run.latency_ns[i] = (Clock::now() - t0).count();
  }
}

std::vector<std::string> del_command(const std::string& key) {
  std::vector<std::string> c;
  c.emplace_back("DEL");
  c.push_back(key);
  return c;
}

/// Deletes the run's keys (one per user), `next` shared by the workers.
asio::awaitable<void> delete_keys(llmq::RedisUserRateLimitStore& store, const Workload& w,
                                  std::size_t& next) {
  for (;;) {
    const std::size_t i = next++;
    if (i >= w.names.size()) co_return;
    const std::string key = store.key_for(w.names[i]);
    try {
      (void)co_await store.client().exec_for_key(key, del_command(key));
    } catch (const std::exception&) {
      // best effort: the keys expire with the window anyway
    }
  }
}

double percentile_us(std::vector<std::int64_t>& v, double p) {
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

std::string random_prefix() {
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "llmqbench:%08x:", rd());
  return buf;
}

/// The in-memory runs are short: each is repeated (fresh limiter or store each time) and
/// the median reported.
Row median_of_three(Row (*bench)(const Workload&), const Workload& w) {
  std::vector<Row> rows;
  for (int i = 0; i < 3; ++i) rows.push_back(bench(w));
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.seconds < b.seconds; });
  return rows[1];
}

/// Runs `workers` copies of `make()` at once and waits for all of them.
template <class MakeWorker>
asio::awaitable<void> run_all(long workers, MakeWorker make) {
  auto ex = co_await asio::this_coro::executor;
  long remaining = workers;
  asio::steady_timer all_done(ex);
  for (long i = 0; i < workers; ++i) {
    asio::co_spawn(ex, make(), [&remaining, &all_done](std::exception_ptr) {
      if (--remaining == 0) all_done.cancel();
    });
  }
  while (remaining > 0) {  // one thread: nothing completes between the check and the wait
    all_done.expires_at(Clock::time_point::max());
    (void)co_await all_done.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

/// Warm-up (connects, loads the script), the timed run, then deleting every key the
/// run made and closing the store.
asio::awaitable<void> redis_session(llmq::RedisUserRateLimitStore& store, const Workload& w,
                                    long callers, RedisRun& run) {
  try {
    (void)co_await store.acquire("warm-up", w.limits);
  } catch (const std::exception& e) {
    run.unreachable = e.what();
  }
  if (run.unreachable.empty()) {
    run.started = Clock::now();
    co_await run_all(callers, [&] { return redis_caller(store, w, run); });
    run.finished = Clock::now();

    std::size_t next = 0;
    co_await run_all(64, [&] { return delete_keys(store, w, next); });
    const std::string warm_key = store.key_for("warm-up");
    try {
      (void)co_await store.client().exec_for_key(warm_key, del_command(warm_key));
    } catch (const std::exception&) {
    }
  }
  co_await store.close();
}

/// Runs one Redis row, or returns nullopt (with `skip_reason`) if Redis cannot be reached.
std::optional<Row> bench_redis(const Workload& w, const std::string& url, long callers,
                               std::string& skip_reason) {
  asio::io_context io;
  llmq::RedisRateLimitStoreOptions o;
  o.url = url;
  o.key_prefix = random_prefix();
  o.failure_policy = llmq::RateLimitFailurePolicy::fail_closed;  // errors must show
  o.command_timeout = std::chrono::seconds(5);
  llmq::RedisUserRateLimitStore store(io.get_executor(), o);
  RedisRun run;
  run.latency_ns.resize(w.order.size());
  std::exception_ptr failure;
  asio::co_spawn(io, redis_session(store, w, callers, run), [&](std::exception_ptr e) {
    failure = e;
    io.stop();  // an idle connection may still hold work
  });
  io.run();
  if (failure) std::rethrow_exception(failure);
  if (!run.unreachable.empty()) {
    skip_reason = run.unreachable;
    return std::nullopt;
  }

  Row r;
  r.mode = "RedisUserRateLimitStore (one connection)";
  r.callers = callers;
  r.decisions = w.order.size();
  r.seconds = std::chrono::duration<double>(run.finished - run.started).count();
  r.admitted = run.admitted;
  r.errors = run.errors;
  r.p50_us = percentile_us(run.latency_ns, 0.50);
  r.p99_us = percentile_us(run.latency_ns, 0.99);
  if (run.errors > 0)
    std::fprintf(stderr, "%lld Redis errors with %ld callers; first: %s\n",
                 static_cast<long long>(run.errors), callers, run.first_error.c_str());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  const Workload w = make_workload(args);
  print_header(args);
  print_row(median_of_three(bench_core, w));
  print_row(median_of_three(bench_in_memory, w));

  if (args.redis == "none") return 0;
  bool failed = false;
  try {
    for (const long callers : args.callers) {
      std::string skip_reason;
      const std::optional<Row> r = bench_redis(w, args.redis, callers, skip_reason);
      if (!r) {
        std::printf("\nRedis rows skipped: %s unreachable (%s)\n", args.redis.c_str(),
                    skip_reason.c_str());
        return 0;
      }
      print_row(*r);
      failed = failed || r->errors > 0;
    }
  } catch (const llmq::ConfigError& e) {
    usage(e.what());
  }
  return failed ? 1 : 0;
}
