// Decision cores on their own: what one decision costs, with no I/O.
#include <llmq/fifo_scheduler.hpp>
#include <llmq/load_balancer.hpp>
#include <llmq/sliding_window_limiter.hpp>
#include <llmq/token_estimator.hpp>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;

void BM_BalancerAcquire(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<llmq::DeploymentLimits> limits(
      n, llmq::DeploymentLimits{600'000, 100'000'000, std::chrono::seconds(60), 1, true});
  for (std::size_t i = 0; i < n; ++i) limits[i].weight = static_cast<std::int64_t>(i + 1);
  llmq::WeightedRoundRobinBalancer b(limits);
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  auto now = Clock::now();
  for (auto _ : state) {
    now += std::chrono::microseconds(100);
    benchmark::DoNotOptimize(b.acquire(all, {1, 100}, now));
  }
}
BENCHMARK(BM_BalancerAcquire)->Arg(2)->Arg(16)->Arg(64);

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

void BM_EstimateChatTokens(benchmark::State& state) {
  const auto body =
      nlohmann::json::parse(R"({"messages":[{"role":"system","content":"You are helpful."},
      {"role":"user","content":"Summarise the following paragraph in one sentence please."}],"max_tokens":200})");
  for (auto _ : state) benchmark::DoNotOptimize(llmq::estimate_chat_tokens(body));
}
BENCHMARK(BM_EstimateChatTokens);

}  // namespace

BENCHMARK_MAIN();
