#pragma once
/// @file user_tiers-inl.hpp
/// Compiled once into llmq::llmq by src/user_tiers.cpp, or included by <llmq/user_tiers.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/user_tiers.hpp>

namespace llmq {

LLMQ_INLINE UserTierTable::UserTierTable(const LLMConfig& config) {
  TierSettings base;
  base.limits = config.user_limits;
  base.max_queued_per_user = config.scheduler_limits.max_queued_per_user;
  tiers_.push_back(base);
  for (const UserTier& t : config.user_tiers) {
    TierSettings s = base;
    s.name = t.name;
    if (t.max_num_requests_in_time_window)
      s.limits.max_num_requests_in_time_window = *t.max_num_requests_in_time_window;
    if (t.time_window) s.limits.time_window = *t.time_window;
    s.weight = t.weight;
    s.priority = t.priority;
    if (t.max_queued_per_user) s.max_queued_per_user = *t.max_queued_per_user;
    tiers_.push_back(std::move(s));
    for (const std::string& user : t.users) by_user_.emplace(user, tiers_.size() - 1);
  }
}

LLMQ_INLINE const TierSettings& UserTierTable::lookup(std::string_view user_id) const {
  if (by_user_.empty()) return tiers_.front();  // no tier lists users: skip the hash
  auto it = by_user_.find(user_id);
  return it == by_user_.end() ? tiers_.front() : tiers_[it->second];
}

LLMQ_INLINE const TierSettings* UserTierTable::find_tier(std::string_view name) const {
  for (std::size_t i = 1; i < tiers_.size(); ++i)
    if (tiers_[i].name == name) return &tiers_[i];
  return nullptr;
}

}  // namespace llmq
