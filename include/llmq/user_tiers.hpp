#pragma once
/// @file user_tiers.hpp
/// Tenant tiers: which tier a user id belongs to and what applies to its requests
/// (user limit, fair-share weight, default priority, cap on queued requests). Users in
/// no tier get the default tier, built from `user_limits` and `scheduler_limits`.

#include <llmq/config.hpp>
#include <llmq/detail/string_hash.hpp>
#include <llmq/scheduler.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmq {

/// Everything a tier decides, with the defaults filled in.
struct TierSettings {
  std::string name;          ///< empty for the default tier
  UserLimits limits;         ///< sliding-window limit per user of the tier
  std::uint32_t weight = 1;  ///< fair-share weight (FairScheduler)
  Priority priority = Priority::normal;
  std::size_t max_queued_per_user = 0;  ///< 0: no cap
};

/// Lookup of a user's tier: O(1) per lookup (one hash of the id). Immutable after
/// construction, so it may be read from any thread.
class UserTierTable {
 public:
  /// Builds the table from `config.user_tiers` (absent values from the default tier).
  /// The config must be valid (parse_config or LLMConfig::validate).
  explicit UserTierTable(const LLMConfig& config);

  /// The tier of `user_id` (the default tier when it is in none).
  [[nodiscard]] const TierSettings& lookup(std::string_view user_id) const;

  /// The tier named `name`, or nullptr.
  [[nodiscard]] const TierSettings* find_tier(std::string_view name) const;

  [[nodiscard]] const TierSettings& default_tier() const noexcept { return tiers_.front(); }

  /// Tiers, the default first, then in config order.
  [[nodiscard]] const std::vector<TierSettings>& tiers() const noexcept { return tiers_; }

 private:
  std::vector<TierSettings> tiers_;
  std::unordered_map<std::string, std::size_t, detail::StringHash, std::equal_to<>> by_user_;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/user_tiers-inl.hpp>
#endif
