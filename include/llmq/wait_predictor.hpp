#pragma once
/// @file wait_predictor.hpp
/// Deadline-aware admission: a per-class dispatch-rate estimator and a wait predictor
/// from a request's place in line. A decision core: no I/O, time passed in.
///
/// The estimator measures how fast a resource class's requests leave the scheduler
/// while the class has a backlog (an exponentially weighted average of dispatches per
/// second of busy time: idle time is not service time, so a quiet spell does not make
/// the class look slow). The predicted wait of a request with `ahead` requests before
/// it is (ahead + 1) / rate. With `scheduler_limits.predictive_admission`, a request
/// whose predicted wait exceeds its timeout can be refused at once instead of timing
/// out in the queue.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>

namespace llmq {

class DispatchRateEstimator {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  /// `time_constant`: how much busy time the average spans (older dispatches weigh
  /// e^(-age / time_constant)). `min_intervals`: busy intervals needed before `rate`
  /// answers.
  explicit DispatchRateEstimator(std::chrono::nanoseconds time_constant = std::chrono::seconds(10),
                                 std::uint32_t min_intervals = 8)
      : tau_ns_(static_cast<double>(std::max<std::int64_t>(1, time_constant.count()))),
        min_intervals_(min_intervals) {}

  /// `n` requests of the class were dispatched at `at` (non-decreasing); `still_queued`
  /// of the class wait after them. The time since the previous dispatch counts as
  /// service time only if requests were waiting throughout it. The dispatches that open
  /// a busy spell (those within kBurst of its first) took no service time of the spell,
  /// so they are left out: a deployment that releases its budget in bursts (ten at each
  /// 1 s window) is measured at ten a second, not at twice that after its first burst.
  void record(time_point at, std::uint64_t n, std::uint64_t still_queued) {
    const bool in_spell = have_last_ && backlogged_ && at >= last_;
    if (!in_spell) {
      spell_start_ = at;
    } else if (at - spell_start_ >= kBurst) {
      const auto dt = static_cast<double>((at - last_).count());
      const double keep = std::exp(-dt / tau_ns_);
      dispatched_ = dispatched_ * keep + static_cast<double>(n);
      busy_ns_ = busy_ns_ * keep + dt;
      // A busy interval is a stretch of at least kBurst of service time, so that the
      // dispatches of one burst count once.
      pending_ns_ += dt;
      if (pending_ns_ >= static_cast<double>(kBurst.count())) {
        ++intervals_;
        pending_ns_ = 0;
      }
    }
    if (!have_last_ || at >= last_) last_ = at;
    have_last_ = true;
    backlogged_ = still_queued > 0;
  }

  /// Dispatches per second of busy time, once `min_intervals` busy intervals were seen.
  [[nodiscard]] std::optional<double> rate() const {
    if (intervals_ < min_intervals_ || busy_ns_ <= 0 || dispatched_ <= 0) return std::nullopt;
    return dispatched_ / busy_ns_ * 1e9;
  }

  /// Busy intervals seen.
  [[nodiscard]] std::uint64_t intervals() const noexcept { return intervals_; }

 private:
  static constexpr std::chrono::nanoseconds kBurst = std::chrono::milliseconds(1);

  double tau_ns_;
  std::uint32_t min_intervals_;
  double pending_ns_ = 0;
  time_point spell_start_{};
  double dispatched_ = 0;
  double busy_ns_ = 0;
  std::uint64_t intervals_ = 0;
  time_point last_{};
  bool have_last_ = false;
  bool backlogged_ = false;
};

/// Predicted queue wait of a request with `ahead` requests of its class dispatched
/// before it (Scheduler::ahead_of); nullopt while the class's rate is unknown.
[[nodiscard]] inline std::optional<std::chrono::nanoseconds> predict_wait(
    const DispatchRateEstimator& estimator, std::uint64_t ahead) {
  const std::optional<double> r = estimator.rate();
  if (!r) return std::nullopt;
  const double ns = (static_cast<double>(ahead) + 1.0) / *r * 1e9;
  // Beyond ~292 years the answer is "longer than any deadline".
  if (ns >= 9.0e18) return std::chrono::nanoseconds::max();
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

/// Admission under predictive_admission: false when the predicted wait exceeds
/// `budget` (what is left of the request's queue timeout). Unknown rate: admit.
[[nodiscard]] inline bool admit_by_prediction(const DispatchRateEstimator& estimator,
                                              std::uint64_t ahead,
                                              std::chrono::nanoseconds budget) {
  const auto wait = predict_wait(estimator, ahead);
  return !wait || *wait <= budget;
}

}  // namespace llmq
