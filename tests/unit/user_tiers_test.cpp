#include <llmq/config.hpp>
#include <llmq/user_tiers.hpp>

#include <gtest/gtest.h>

#include <string>

namespace {
using namespace std::chrono_literals;

constexpr std::string_view kBase = R"(custom_models:
  - model: m
    base_url: http://localhost:1
    model_type: chat
    req_per_min: 10
    tokens_per_min: 1000
user_limits:
  max_num_requests_in_time_window: 40
  time_window_in_seconds: 60
scheduler_limits:
  max_queued_per_user: 7
)";

TEST(UserTierTable, UsersGetTheirTierAndOthersTheDefault) {
  const llmq::LLMConfig cfg = llmq::parse_config(std::string(kBase) + R"(user_tiers:
  premium:
    users: [alice, bob]
    max_num_requests_in_time_window: 400
    weight: 4
    priority: high
    max_queued_per_user: 0
  batch:
    users: [etl]
    time_window_in_seconds: 3600
    priority: low
)");
  const llmq::UserTierTable table(cfg);
  const llmq::TierSettings& alice = table.lookup("alice");
  EXPECT_EQ(alice.name, "premium");
  EXPECT_EQ(alice.limits.max_num_requests_in_time_window, 400);
  EXPECT_EQ(alice.limits.time_window, 60s);  // from user_limits
  EXPECT_EQ(alice.weight, 4u);
  EXPECT_EQ(alice.priority, llmq::Priority::high);
  EXPECT_EQ(alice.max_queued_per_user, 0u);  // explicitly uncapped
  EXPECT_EQ(&table.lookup("bob"), &alice);
  const llmq::TierSettings& etl = table.lookup("etl");
  EXPECT_EQ(etl.limits.max_num_requests_in_time_window, 40);
  EXPECT_EQ(etl.limits.time_window, 3600s);
  EXPECT_EQ(etl.weight, 1u);
  EXPECT_EQ(etl.priority, llmq::Priority::low);
  EXPECT_EQ(etl.max_queued_per_user, 7u);  // from scheduler_limits
  const llmq::TierSettings& other = table.lookup("carol");
  EXPECT_EQ(&other, &table.default_tier());
  EXPECT_EQ(other.name, "");
  EXPECT_EQ(other.limits.max_num_requests_in_time_window, 40);
  EXPECT_EQ(other.priority, llmq::Priority::normal);
  EXPECT_EQ(table.find_tier("batch"), &etl);
  EXPECT_EQ(table.find_tier("nope"), nullptr);
  EXPECT_EQ(table.tiers().size(), 3u);
}

}  // namespace
