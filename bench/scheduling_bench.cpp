// Scheduling quality under a flood, through the whole LLMQueue, in virtual time
// (llmq::ManualClock): the figures are exact and the same on every machine.
//
// Scenario "fair": one deployment serves 10 requests/s; a heavy user queues `--flood`
// requests at t = 0; at t = 1 s five light users send one request each. Reported: the
// light users' queue wait under policy fifo and fair.
// Scenario "priority": the same deployment; a batch user queues `--flood` low-priority
// requests at t = 0; at t = 1 s five requests arrive at high priority. Reported: their
// wait, and the wait of a normal request arriving at t = 1 s too.
//
//   llmq_bench_scheduling [--flood N]

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

class InstantExecutor : public llmq::RequestExecutor {
 public:
  asio::awaitable<llmq::Response> process_request(const llmq::Request&,
                                                  const llmq::ChosenDeployments&,
                                                  llmq::TelemetryData& t) override {
    t.llm_outcome.status = 200;
    co_return llmq::Response{nlohmann::json::object(), 200};
  }
};

llmq::LLMConfig config(llmq::SchedulingPolicy policy, std::size_t flood) {
  llmq::AzureModelConfig m;
  m.unique_model_id = "only";
  m.model_name_in_azure = "gpt-4o";
  m.deployment_name_in_azure = "only";
  m.model_type = llmq::ModelType::chat;
  m.req_per_min = 600;  // 10 a second, paced
  m.tokens_per_min = 1'000'000'000;
  llmq::AzureOpenAIConfig a;
  a.api_key = "not-used";
  a.api_version = "2024-10-21";
  a.azure_endpoint = "https://example.openai.azure.com/";
  a.azure_oai_models.push_back(m);
  llmq::LLMConfig c;
  c.azure_open_ai.push_back(a);
  c.user_limits.max_num_requests_in_time_window = static_cast<std::int64_t>(flood) + 10;
  c.scheduler_limits.max_queue_size = flood + 100;
  c.scheduler_limits.request_timeout = 3600s;
  c.scheduler_limits.policy = policy;
  return c;
}

nlohmann::json body() {
  nlohmann::json m = nlohmann::json::object();
  m["role"] = "user";
  m["content"] = "hi";
  nlohmann::json b = nlohmann::json::object();
  b["messages"] = nlohmann::json::array({m});
  b["max_tokens"] = 1;
  return b;
}

struct Arrival {
  std::string user;
  llmq::Priority priority = llmq::Priority::normal;
  steady::duration at{};  // after the start
  std::string group;      // what it is reported under
};

/// Sends one arrival at its time; records its wait (virtual seconds) in `waits`.
asio::awaitable<void> send(llmq::LLMQueue& queue, std::shared_ptr<llmq::ManualClock> clock,
                           Arrival a, std::vector<double>& waits, std::size_t& left) {
  if (a.at.count() > 0) {
    llmq::ClockTimer t(co_await asio::this_coro::executor, clock);
    t.expires_after(a.at);
    co_await t.async_wait(asio::use_awaitable);
  }
  llmq::RequestOptions ro;
  ro.priority = a.priority;
  const steady::time_point sent = clock->now();
  co_await queue.execute_request("chat_completion", body(), a.user, {}, ro);
  waits.push_back(std::chrono::duration<double>(clock->now() - sent).count());
  --left;
}

/// Runs the arrivals through one queue in virtual time; returns each group's waits (s).
std::map<std::string, std::vector<double>> simulate(llmq::SchedulingPolicy policy,
                                                    const std::vector<Arrival>& arrivals,
                                                    std::size_t flood) {
  asio::io_context io;
  auto clock = std::make_shared<llmq::ManualClock>();
  llmq::QueueOptions o;
  o.clock = clock;
  std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> execs;
  execs["chat_completion"] = std::make_shared<InstantExecutor>();
  llmq::LLMQueue queue(io.get_executor(), config(policy, flood), execs, o);
  std::map<std::string, std::vector<double>> waits;
  std::size_t left = arrivals.size();
  asio::co_spawn(io, queue.initiate(), asio::detached);
  for (const Arrival& a : arrivals)
    asio::co_spawn(io, send(queue, clock, a, waits[a.group], left), asio::detached);
  // Virtual time: run what is ready, else jump to the next pending wait.
  while (left > 0) {
    io.restart();
    io.poll();
    if (left == 0) break;
    const auto next = clock->next_wait();
    if (!next) {
      std::cerr << "scheduling bench: nothing ready and nothing waits\n";
      std::exit(1);
    }
    clock->set(*next);
  }
  bool down = false;
  asio::co_spawn(io, queue.graceful_shutdown(), [&](std::exception_ptr) { down = true; });
  while (!down) {
    io.restart();
    io.poll();
    if (down) break;
    const auto next = clock->next_wait();
    if (!next) break;
    clock->set(*next);
  }
  return waits;
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

double worst(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t flood = 300;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--flood") == 0) flood = std::strtoul(argv[i + 1], nullptr, 10);

  std::vector<Arrival> heavy_and_light;
  for (std::size_t i = 0; i < flood; ++i) heavy_and_light.push_back({"heavy", {}, 0s, "heavy"});
  for (int i = 0; i < 5; ++i)
    heavy_and_light.push_back({"light-" + std::to_string(i), {}, 1s, "light"});
  std::cout << std::fixed << std::setprecision(2);
  std::cout << "fair share: " << flood << " requests of one user at t=0, 5 light users at t=1 s,"
            << " 10 requests/s served\n";
  double fifo_light = 0;
  for (const auto policy : {llmq::SchedulingPolicy::fifo, llmq::SchedulingPolicy::fair}) {
    auto w = simulate(policy, heavy_and_light, flood);
    const char* name = policy == llmq::SchedulingPolicy::fifo ? "fifo" : "fair";
    if (policy == llmq::SchedulingPolicy::fifo) fifo_light = mean(w["light"]);
    std::cout << "  " << name << ": light users wait mean " << mean(w["light"]) << " s, max "
              << worst(w["light"]) << " s (fifo's mean / this: " << fifo_light / mean(w["light"])
              << "); heavy user's last answer after " << worst(w["heavy"]) << " s\n";
  }

  std::vector<Arrival> prio;
  for (std::size_t i = 0; i < flood; ++i)
    prio.push_back({"batch", llmq::Priority::low, 0s, "low flood"});
  for (int i = 0; i < 5; ++i)
    prio.push_back({"ui-" + std::to_string(i), llmq::Priority::high, 1s, "high"});
  prio.push_back({"normal-user", llmq::Priority::normal, 1s, "normal"});
  std::cout << "priority: " << flood << " low requests at t=0, 5 high and 1 normal at t=1 s\n";
  for (const auto policy : {llmq::SchedulingPolicy::fifo, llmq::SchedulingPolicy::fair}) {
    auto w = simulate(policy, prio, flood);
    const char* name = policy == llmq::SchedulingPolicy::fifo ? "fifo" : "fair";
    std::cout << "  " << name << ": high wait mean " << mean(w["high"]) << " s, max "
              << worst(w["high"]) << " s; normal " << mean(w["normal"]) << " s; low flood's last "
              << worst(w["low flood"]) << " s\n";
  }
  return 0;
}
