/// @file rate_window.cpp
/// Sliding-window logs of DeploymentRateLimiter and PeakRateTracker.

#include <llmq/mock/rate_window.hpp>

#include <algorithm>
#include <array>
#include <iterator>

namespace llmq::mock {
namespace {

using std::chrono::seconds;

constexpr DeploymentRateLimiter::duration kMinute = seconds(60);

std::int64_t at_least_one(std::int64_t v) noexcept { return v < 1 ? 1 : v; }

}  // namespace

DeploymentRateLimiter::DeploymentRateLimiter(std::int64_t requests_per_minute,
                                             std::int64_t tokens_per_minute) noexcept
    : rpm_(requests_per_minute > 0 ? requests_per_minute : 0),
      tpm_(tokens_per_minute > 0 ? tokens_per_minute : 0),
      cap_1s_(rpm_ > 0 ? at_least_one(rpm_ / 60) : 0),
      cap_10s_(rpm_ > 0 ? at_least_one(rpm_ / 6) : 0) {}

void DeploymentRateLimiter::expire(time_point now) {
  while (!requests_.empty() && now - requests_.front() >= kMinute) requests_.pop_front();
  while (!tokens_.empty() && now - tokens_.front().first >= kMinute) {
    token_sum_ -= tokens_.front().second;
    tokens_.pop_front();
  }
}

DeploymentRateLimiter::duration DeploymentRateLimiter::request_wait(time_point now, duration window,
                                                                    std::int64_t cap) const {
  // Entries inside the window are those with t > now - window.
  const auto first = std::upper_bound(requests_.begin(), requests_.end(), now - window);
  const auto count = static_cast<std::int64_t>(std::distance(first, requests_.end()));
  if (count < cap) return duration::zero();
  // The (count - cap + 1) oldest entries of the window must leave before one more fits.
  const time_point leaving = *std::next(first, static_cast<std::ptrdiff_t>(count - cap));
  return leaving + window - now;
}

RateDecision DeploymentRateLimiter::try_acquire(time_point now, std::int64_t tokens) {
  if (now < latest_) now = latest_;
  latest_ = now;
  expire(now);
  if (tokens < 0) tokens = 0;

  duration request_block = duration::zero();
  if (rpm_ > 0) {
    const std::array<std::pair<duration, std::int64_t>, 3> windows{
        {{seconds(1), cap_1s_}, {seconds(10), cap_10s_}, {kMinute, rpm_}}};
    for (const auto& [window, cap] : windows)
      request_block = std::max(request_block, request_wait(now, window, cap));
  }

  duration token_block = duration::zero();
  if (tpm_ > 0) {
    if (tokens > tpm_) {
      token_block = kMinute;  // never fits; a full window is the honest upper bound
    } else if (token_sum_ + tokens > tpm_) {
      std::int64_t sum = token_sum_;
      for (const auto& [t, charged] : tokens_) {
        sum -= charged;
        if (sum + tokens <= tpm_) {
          token_block = t + kMinute - now;
          break;
        }
      }
    }
  }

  RateDecision d;
  if (request_block > duration::zero() || token_block > duration::zero()) {
    d.allowed = false;
    d.reason = token_block >= request_block ? RateLimitReason::tokens : RateLimitReason::requests;
    d.retry_after = std::max(request_block, token_block);
  } else {
    d.allowed = true;
    if (rpm_ > 0) requests_.push_back(now);
    if (tpm_ > 0) {
      tokens_.emplace_back(now, tokens);
      token_sum_ += tokens;
    }
  }
  d.remaining_requests =
      rpm_ > 0 ? std::max<std::int64_t>(0, rpm_ - static_cast<std::int64_t>(requests_.size())) : -1;
  d.remaining_tokens = tpm_ > 0 ? std::max<std::int64_t>(0, tpm_ - token_sum_) : -1;
  return d;
}

std::int64_t DeploymentRateLimiter::remaining_requests(time_point now) {
  if (rpm_ == 0) return -1;
  if (now > latest_) latest_ = now;
  expire(latest_);
  return std::max<std::int64_t>(0, rpm_ - static_cast<std::int64_t>(requests_.size()));
}

std::int64_t DeploymentRateLimiter::remaining_tokens(time_point now) {
  if (tpm_ == 0) return -1;
  if (now > latest_) latest_ = now;
  expire(latest_);
  return std::max<std::int64_t>(0, tpm_ - token_sum_);
}

std::int64_t DeploymentRateLimiter::requests_in(time_point now, duration window) const {
  const auto first = std::upper_bound(requests_.begin(), requests_.end(), now - window);
  const auto last = std::upper_bound(first, requests_.end(), now);
  return static_cast<std::int64_t>(std::distance(first, last));
}

std::int64_t DeploymentRateLimiter::tokens_in_minute(time_point now) {
  if (now > latest_) latest_ = now;
  expire(latest_);
  return token_sum_;
}

void DeploymentRateLimiter::reset() noexcept {
  requests_.clear();
  tokens_.clear();
  token_sum_ = 0;
  latest_ = time_point{};
}

std::uint64_t PeakRateTracker::record(time_point now) {
  if (!events_.empty() && now < events_.back()) now = events_.back();
  while (!events_.empty() && now - events_.front() >= std::chrono::seconds(1)) events_.pop_front();
  events_.push_back(now);
  const auto in_window = static_cast<std::uint64_t>(events_.size());
  peak_ = std::max(peak_, in_window);
  return in_window;
}

void PeakRateTracker::reset() noexcept {
  events_.clear();
  peak_ = 0;
}

}  // namespace llmq::mock
