// Decision cores on their own: what one decision costs, with no I/O.
#include <llmq/fair_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/load_balancer.hpp>
#include <llmq/sliding_window_limiter.hpp>
#include <llmq/token_estimator.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;

// Deployments 0..n-1 at `rpm`, weights 1..n.
std::vector<llmq::DeploymentLimits> weighted(std::size_t n, std::int64_t rpm) {
  std::vector<llmq::DeploymentLimits> limits(
      n, llmq::DeploymentLimits{rpm, 100'000'000, std::chrono::seconds(60), 1, true});
  for (std::size_t i = 0; i < n; ++i) limits[i].weight = static_cast<std::int64_t>(i + 1);
  return limits;
}

std::vector<std::size_t> indexes(std::size_t n) {
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  return all;
}

// One acquire per 100 us of simulated time; `count(grant)` feeds the reported counter.
template <class Candidates, class Count>
void acquire_loop(benchmark::State& state, llmq::WeightedRoundRobinBalancer& b,
                  const Candidates& candidates, const char* counter, Count count) {
  auto now = Clock::now();
  std::int64_t counted = 0;
  for (auto _ : state) {
    now += std::chrono::microseconds(100);
    auto g = b.acquire(candidates, {1, 100}, now);
    counted += count(g);
    benchmark::DoNotOptimize(g);
  }
  state.counters[counter] =
      benchmark::Counter(static_cast<double>(counted) / static_cast<double>(state.iterations()));
}

const auto granted = [](const std::optional<llmq::DeploymentGrant>& g) { return g.has_value(); };

// Candidates passed as a span (looked up in the balancer's cache of lists).
void BM_BalancerAcquire(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  llmq::WeightedRoundRobinBalancer b(weighted(n, 600'000));
  const std::vector<std::size_t> all = indexes(n);
  acquire_loop(state, b, std::span<const std::size_t>(all), "granted", granted);
}
BENCHMARK(BM_BalancerAcquire)->Arg(2)->Arg(16)->Arg(64);

// The same through a registered candidate set (no lookup of the list): pick + commit.
// Arg 1: deployment RPM. At 600 000 nothing fills up; at 12 000 (200 per 1 s window) the
// heaviest deployments fill their 1 s window, leave rotation and come back.
void BM_BalancerAcquireSet(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  llmq::WeightedRoundRobinBalancer b(weighted(n, state.range(1)));
  acquire_loop(state, b, b.candidate_set(indexes(n)), "granted", granted);
}
BENCHMARK(BM_BalancerAcquireSet)
    ->Args({2, 600'000})
    ->Args({16, 600'000})
    ->Args({64, 600'000})
    ->Args({64, 12'000});

// Two priority groups of 32: the first fills its token windows (10 requests a minute
// each), so most requests spill over to the second.
void BM_BalancerAcquireSpill(benchmark::State& state) {
  std::vector<llmq::DeploymentLimits> limits = weighted(64, 600'000);
  for (std::size_t i = 0; i < 64; ++i) {
    limits[i].weight = 1;
    limits[i].tokens_per_min = i < 32 ? 1'000 : 100'000'000;
    limits[i].priority = i < 32 ? 0 : 1;
  }
  llmq::WeightedRoundRobinBalancer b(limits);
  acquire_loop(state, b, b.candidate_set(indexes(64)), "spilled",
               [](const std::optional<llmq::DeploymentGrant>& g) { return g && g->spilled; });
}
BENCHMARK(BM_BalancerAcquireSpill);

void BM_LimiterAcquire(benchmark::State& state) {
  const auto users = state.range(0);
  std::vector<std::string> ids;
  for (long i = 0; i < users; ++i) ids.push_back("user-" + std::to_string(i));
  llmq::SlidingWindowLimiter l;
  auto now = Clock::now();
  std::size_t i = 0;
  for (auto _ : state) {
    now += std::chrono::microseconds(10);
    benchmark::DoNotOptimize(l.acquire(ids[i++ % ids.size()], now, 40, std::chrono::seconds(60)));
  }
}
BENCHMARK(BM_LimiterAcquire)->Arg(100)->Arg(100'000);

void BM_SchedulerPushDispatch(benchmark::State& state) {
  const auto depth = static_cast<int>(state.range(0));
  llmq::FifoScheduler<int> s(static_cast<std::size_t>(depth) + 1);
  const auto deadline = Clock::now() + std::chrono::hours(1);
  for (int i = 0; i < depth; ++i) s.push(static_cast<std::uint32_t>(i % 4), i, deadline);
  for (auto _ : state) {
    s.push(1, 1, deadline);
    bool first = true;
    s.dispatch([&](std::uint32_t, int&) { return std::exchange(first, false); });
  }
}
BENCHMARK(BM_SchedulerPushDispatch)->Arg(10)->Arg(100'000);

// Push + dispatch through the Scheduler interface with users and priorities: args are
// (requests queued, distinct users among them). Each iteration pushes one request for
// the next user in turn and dispatches one.
template <class S>
void BM_PushDispatchUsers(benchmark::State& state) {
  const auto depth = static_cast<std::size_t>(state.range(0));
  const auto users = static_cast<std::size_t>(state.range(1));
  S s(llmq::SchedulerOptions{depth + 1});
  std::vector<std::string> ids;
  for (std::size_t i = 0; i < users; ++i) ids.push_back("user-" + std::to_string(i));
  const auto now = Clock::now();
  llmq::QueuedRequest r;
  r.deadline = now + std::chrono::hours(1);
  r.enqueued = now;
  std::size_t next = 0;
  auto push = [&](std::uint32_t cls) {
    r.resource_class = cls;
    r.user = ids[next % users];
    r.priority = static_cast<llmq::Priority>(next % 3);
    ++next;
    return s.push(r, 1);
  };
  for (std::size_t i = 0; i < depth; ++i) push(static_cast<std::uint32_t>(i % 4));
  for (auto _ : state) {
    benchmark::DoNotOptimize(push(1));
    s.dispatch([](std::uint32_t, int&) { return true; }, 1);
  }
}
void user_args(benchmark::internal::Benchmark* b) {
  for (auto [depth, users] : {std::pair{1, 1},
                              {1'000, 1},
                              {1'000, 1'000},
                              {100'000, 1},
                              {100'000, 1'000},
                              {100'000, 100'000}})
    b->Args({depth, users});
}
BENCHMARK_TEMPLATE(BM_PushDispatchUsers, llmq::FifoScheduler<int>)->Apply(user_args);
BENCHMARK_TEMPLATE(BM_PushDispatchUsers, llmq::FairScheduler<int>)->Apply(user_args);

// The limiter with users coming and going: every decision is for a user not seen in the
// last window (the previous one left it), so each is a new entry.
void BM_LimiterNewUsers(benchmark::State& state) {
  std::vector<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.push_back("user-" + std::to_string(i) + "@tenant.example");
  llmq::SlidingWindowLimiter l;
  auto now = Clock::now();
  std::size_t i = 0;
  for (auto _ : state) {
    now += std::chrono::milliseconds(2);  // 1000 users x 2 ms > the 1 s window
    benchmark::DoNotOptimize(l.acquire(ids[i++ % ids.size()], now, 40, std::chrono::seconds(1)));
  }
}
BENCHMARK(BM_LimiterNewUsers);

void BM_EstimateChatTokens(benchmark::State& state) {
  const auto body =
      nlohmann::json::parse(R"({"messages":[{"role":"system","content":"You are helpful."},
      {"role":"user","content":"Summarise the following paragraph in one sentence please."}],"max_tokens":200})");
  for (auto _ : state) benchmark::DoNotOptimize(llmq::estimate_chat_tokens(body));
}
BENCHMARK(BM_EstimateChatTokens);

}  // namespace

BENCHMARK_MAIN();
