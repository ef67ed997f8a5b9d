// Accuracy of the wait predictor (wait_predictor.hpp): a simulated queue served at a fixed
// rate, with bursts of arrivals over a steady background. Each request's wait is predicted
// at arrival from its place in line (Scheduler::ahead_of) and the class's measured dispatch
// rate, then compared with the wait it actually had. Simulated time: runs in milliseconds.
//
//   llmq_bench_predictor [--seconds S] [--rate R] [--users U]
#include <llmq/fair_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/wait_predictor.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::duration;
using std::chrono::nanoseconds;

struct Options {
  double seconds = 1800;  // simulated
  double rate = 50;       // dispatches per second while backlogged
  int users = 20;         // fair: users with weights 1..4
};

struct Outcome {
  Clock::time_point arrived;
  double predicted = -1;  // seconds; < 0: no prediction (rate not known yet)
  double actual = -1;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

// xorshift: reproducible arrivals.
struct Random {
  std::uint64_t x = 0x9e3779b97f4a7c15ULL;
  double uniform() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return static_cast<double>(x >> 11) / 9007199254740992.0;
  }
  double exponential(double mean) { return -mean * std::log(1.0 - uniform()); }
};

void run(const char* name, llmq::Scheduler<int>& s, const Options& o) {
  Random rnd;
  llmq::DispatchRateEstimator estimator;
  std::vector<Outcome> outcomes;
  std::vector<std::string> users;
  for (int u = 0; u < o.users; ++u) users.push_back("user-" + std::to_string(u));
  const Clock::time_point t0 = Clock::time_point{} + std::chrono::hours(1);
  const Clock::time_point end =
      t0 + std::chrono::duration_cast<nanoseconds>(duration<double>(o.seconds));
  const auto service = std::chrono::duration_cast<nanoseconds>(duration<double>(1.0 / o.rate));
  // Background arrivals at 60 % of capacity; every 20 s on average a burst of 50..600.
  const double background_gap = 1.0 / (0.6 * o.rate);
  Clock::time_point next_arrival = t0;
  Clock::time_point next_burst = t0 + std::chrono::seconds(5);
  Clock::time_point next_service = t0;
  auto arrive = [&](Clock::time_point now) {
    llmq::QueuedRequest r;
    r.deadline = now + std::chrono::hours(24);
    r.enqueued = now;
    const std::size_t u =
        static_cast<std::size_t>(rnd.uniform() * static_cast<double>(users.size()));
    r.user = users[u];
    r.weight = static_cast<std::uint32_t>(1 + u % 4);
    Outcome out;
    out.arrived = now;
    if (auto w = llmq::predict_wait(estimator, s.ahead_of(r)))
      out.predicted = duration<double>(*w).count();
    outcomes.push_back(out);
    (void)s.push(r, static_cast<int>(outcomes.size() - 1));
  };
  while (true) {
    const Clock::time_point now = std::min({next_arrival, next_burst, next_service});
    if (now >= end) break;
    if (now == next_service) {
      next_service += service;
      const std::size_t n = s.dispatch(
          [&](std::uint32_t, int& id) {
            outcomes[static_cast<std::size_t>(id)].actual =
                duration<double>(now - outcomes[static_cast<std::size_t>(id)].arrived).count();
            return true;
          },
          1);
      if (n > 0) estimator.record(now, n, s.size());
    } else if (now == next_burst) {
      const int burst = 50 + static_cast<int>(rnd.uniform() * 550);
      for (int i = 0; i < burst; ++i) arrive(now);
      next_burst += std::chrono::duration_cast<nanoseconds>(duration<double>(rnd.exponential(20)));
    } else {
      arrive(now);
      next_arrival += std::chrono::duration_cast<nanoseconds>(
          duration<double>(rnd.exponential(background_gap)));
    }
  }
  std::vector<double> abs_err;
  std::vector<double> rel_err;  // for waits of at least 1 s
  double signed_sum = 0;
  double actual_sum = 0;
  std::size_t not_over = 0;  // predicted no later than one service interval after actual
  for (const Outcome& out : outcomes) {
    if (out.predicted < 0 || out.actual < 0) continue;
    const double e = out.predicted - out.actual;
    if (e <= 1.0 / o.rate + 1e-9) ++not_over;
    abs_err.push_back(std::abs(e));
    signed_sum += e;
    actual_sum += out.actual;
    if (out.actual >= 1.0) rel_err.push_back(std::abs(e) / out.actual);
  }
  const double n = static_cast<double>(abs_err.size());
  std::printf(
      "%-5s predicted %zu of %zu requests; mean wait %.2f s; |error| median %.3f s p90 %.3f s "
      "p99 %.3f s; bias %+.3f s; relative error (waits >= 1 s, %zu) median %.1f%% p90 %.1f%%; "
      "not above actual + 1/rate: %.1f%%\n",
      name, abs_err.size(), outcomes.size(), n > 0 ? actual_sum / n : 0.0, percentile(abs_err, 0.5),
      percentile(abs_err, 0.9), percentile(abs_err, 0.99), n > 0 ? signed_sum / n : 0.0,
      rel_err.size(), 100 * percentile(rel_err, 0.5), 100 * percentile(rel_err, 0.9),
      n > 0 ? 100.0 * static_cast<double>(not_over) / n : 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) {
      o.seconds = std::atof(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--rate") == 0) {
      o.rate = std::atof(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--users") == 0) {
      o.users = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--rate R] [--users U]\n", argv[0]);
      return 2;
    }
  }
  if (!(o.seconds > 0) || !(o.rate > 0)) {
    std::fprintf(stderr, "--seconds and --rate must be positive\n");
    return 2;
  }
  std::printf("simulated %.0f s, served at %.0f/s, background at 60%% of that, bursts of 50..600\n",
              o.seconds, o.rate);
  llmq::FifoScheduler<int> fifo(llmq::SchedulerOptions{1'000'000});
  run("fifo", fifo, o);
  llmq::FairScheduler<int> fair(llmq::SchedulerOptions{1'000'000});
  run("fair", fair, o);
  return 0;
}
