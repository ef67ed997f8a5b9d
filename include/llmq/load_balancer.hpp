#pragma once
/// @file load_balancer.hpp
/// Smooth weighted round-robin over deployments that respects each deployment's
/// sliding RPM and TPM windows, paces requests to Azure's 1 s / 10 s enforcement, and
/// backs off after failures. A decision core: no I/O, time passed in.

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

namespace llmq {

/// Limits of one deployment as the balancer sees them.
struct DeploymentLimits {
  std::int64_t req_per_min = 0;     ///< > 0
  std::int64_t tokens_per_min = 0;  ///< > 0
  std::chrono::nanoseconds error_backoff{std::chrono::seconds(60)};
  std::int64_t weight = 1;  ///< > 0
  /// Also cap requests per 1 s (req_per_min/60) and per 10 s (req_per_min/6), each at
  /// least 1, as Azure enforces RPM over those short windows.
  bool pace_short_windows = true;
  /// Each charge stays in its windows this much longer than the window's length, so that
  /// network jitter between dispatch here and arrival upstream cannot squeeze one more
  /// request into the upstream's window. Zero keeps windows exact.
  std::chrono::nanoseconds window_margin{0};
};

/// What one request costs a deployment.
struct DeploymentNeed {
  std::int64_t calls = 1;   ///< upstream calls (num_*_calls_per_req)
  std::int64_t tokens = 0;  ///< estimated tokens for all those calls
};

/// A charge made against one deployment; pass it back to `reconcile`.
struct DeploymentGrant {
  std::size_t deployment = 0;
  std::uint64_t seq = 0;
  DeploymentNeed need;
};

/// Point-in-time view of one deployment.
struct DeploymentState {
  std::int64_t requests_in_window = 0;  ///< calls charged in the last 60 s
  std::int64_t tokens_in_window = 0;    ///< tokens charged in the last 60 s
  std::optional<std::chrono::steady_clock::time_point> backoff_until;  ///< set while in backoff
  std::uint64_t granted = 0;    ///< requests granted since start
  std::uint64_t failures = 0;   ///< failures reported since start
  std::uint64_t throttled = 0;  ///< of which 429s
};

class WeightedRoundRobinBalancer {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// Outcome of `pick`: the chosen deployment, valid for one `commit` at the same `now`.
  struct Selection {
    std::size_t deployment = 0;
    std::uint64_t epoch = 0;
    std::int64_t eligible_weight = 0;
  };

  explicit WeightedRoundRobinBalancer(std::vector<DeploymentLimits> limits);

  [[nodiscard]] std::size_t size() const noexcept { return states_.size(); }

  /// Chooses among `candidates` (indexes into the limits vector) the deployment smooth
  /// weighted round-robin gives next among those eligible for `need` at `now`; nothing
  /// is charged until `commit`. Nullopt when no candidate is eligible.
  std::optional<Selection> pick(std::span<const std::size_t> candidates, DeploymentNeed need,
                                time_point now);

  /// Charges `need` to the selected deployment and advances the round-robin state.
  DeploymentGrant commit(std::span<const std::size_t> candidates, const Selection& s,
                         DeploymentNeed need, time_point now);

  /// pick + commit.
  std::optional<DeploymentGrant> acquire(std::span<const std::size_t> candidates,
                                         DeploymentNeed need, time_point now);

  /// Replaces a grant's estimated tokens by the tokens actually used (if the grant is
  /// still inside the 60 s window). Ignored when `actual_tokens` <= 0.
  void reconcile(const DeploymentGrant& g, std::int64_t actual_tokens);

  /// Takes a grant back (its calls and tokens leave every window), e.g. when a shared
  /// budget refused what this balancer granted. The round-robin position is kept.
  void refund(const DeploymentGrant& g);

  /// The deployment failed (5xx, 429, connection error): skip it until
  /// `now + retry_after` when given (an upstream Retry-After), else `now + error_backoff`.
  void report_failure(std::size_t deployment, time_point now,
                      std::optional<clock::duration> retry_after, bool throttled);

  /// Keeps the deployment out of rotation until `until` without counting a failure
  /// (e.g. the upstream said it has no requests or tokens left until a reset).
  void hold(std::size_t deployment, time_point until);

  /// Earliest time at which some candidate could be eligible for `need`
  /// (== now if one is eligible now; time_point::max() if none ever can be).
  [[nodiscard]] time_point next_eligible(std::span<const std::size_t> candidates,
                                         DeploymentNeed need, time_point now);

  [[nodiscard]] DeploymentState state(std::size_t deployment, time_point now);

 private:
  struct Charge {
    time_point at;
    std::int64_t calls;
    std::int64_t tokens;
  };
  // A sliding window over the deployment's charge log.
  struct Window {
    clock::duration length;
    std::int64_t call_limit;
    std::uint64_t cursor = 0;  // seq of the oldest charge inside
    std::int64_t calls = 0;
    std::int64_t tokens = 0;
  };
  struct State {
    DeploymentLimits limits;
    std::deque<Charge> log;  // log.front() has seq == base_seq
    std::uint64_t base_seq = 0;
    std::vector<Window> windows;  // windows[0] is the 60 s window (also holds tokens)
    std::int64_t current = 0;     // smooth WRR
    std::uint64_t eligible_epoch = 0;
    time_point backoff_until{};
    time_point advanced_to{};  // windows are current as of this time
    DeploymentState counters;
  };

  void advance(State& s, time_point now);
  bool eligible(State& s, DeploymentNeed need, time_point now);
  time_point next_fit(State& s, DeploymentNeed need, time_point now);

  std::vector<State> states_;
  std::uint64_t epoch_ = 0;
};

}  // namespace llmq
