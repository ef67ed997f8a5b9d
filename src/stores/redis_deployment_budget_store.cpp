/// @file redis_deployment_budget_store.cpp
/// RedisDeploymentBudgetStore: the shared sliding windows of a deployment as one Lua
/// script over a sorted set, plus a shared backoff key.

#include <llmq/redis_deployment_budget_store.hpp>
#include "redis_protocol.hpp"
#include "redis_script.hpp"

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <stdexcept>

namespace llmq {

namespace asio = boost::asio;

namespace {

// KEYS[1]: the deployment's charges (sorted set, score = server time in microseconds,
//          member = "<time><unique id>:<calls>:<tokens>").
// KEYS[2]: the deployment's shared backoff (any value, PX = remaining backoff).
// ARGV[1]: tokens per minute; ARGV[2]: calls per 60 s; ARGV[3]: calls per 10 s (0: not
// paced); ARGV[4]: calls per 1 s (0: not paced); ARGV[5]: calls needed; ARGV[6]: tokens
// needed; ARGV[7]: a member id unique to this call.
// Returns 0 when the charge was recorded, else the milliseconds (>= 1) until it could fit.
//
// A window admits `need` when used + need <= limit, or when it is empty (as the local
// balancer does: a request larger than a whole window is sent alone rather than never).
// When refused, each blocking window is walked from its oldest charge until enough have
// left; the charge's score + the window's length is when that happens. Time is the
// server's (TIME), so every process shares one clock; scores stay exact in a double until
// 2^53 us (the year 2255).
constexpr const char* charge_lua = R"lua(
local key = KEYS[1]
local backoff = redis.call('PTTL', KEYS[2])
if backoff > 0 then return backoff end
local tpm = tonumber(ARGV[1])
local calls = tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60000000)
local log = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local n = #log / 2
local at, c, k = {}, {}, {}
for i = 1, n do
  at[i] = tonumber(log[2 * i])
  local mc, mk = string.match(log[2 * i - 1], ':(%d+):(%d+)$')
  c[i] = tonumber(mc) or 0
  k[i] = tonumber(mk) or 0
end
local ready = now
local function window(length, limit, need, amount)
  if limit <= 0 then return end
  local first = n + 1
  local used = 0
  for i = n, 1, -1 do
    if at[i] <= now - length then break end
    first = i
    used = used + amount[i]
  end
  local i = first
  while i <= n and used ~= 0 and used + need > limit do
    used = used - amount[i]
    if at[i] + length > ready then ready = at[i] + length end
    i = i + 1
  end
end
window(60000000, tonumber(ARGV[2]), calls, c)
window(60000000, tpm, tokens, k)
window(10000000, tonumber(ARGV[3]), calls, c)
window(1000000, tonumber(ARGV[4]), calls, c)
if ready > now then
  return math.max(1, math.ceil((ready - now) / 1000))
end
redis.call('ZADD', key, now,
  t[1] .. string.format('%06d', tonumber(t[2])) .. '-' .. ARGV[7] .. ':' .. ARGV[5] .. ':' .. ARGV[6])
redis.call('PEXPIRE', key, 61000)
return 0
)lua";

// KEYS[1]: the backoff key. ARGV[1]: milliseconds (> 0). Sets it with PX unless the
// backoff already there lasts at least as long. Returns 1 when set, 0 when kept.
constexpr const char* backoff_lua = R"lua(
local ms = tonumber(ARGV[1])
local current = redis.call('PTTL', KEYS[1])
if current >= ms then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
)lua";

/// ARGV of the charge script (see charge_lua), computed once per call.
std::vector<std::string> charge_args(const DeploymentLimits& limits, DeploymentNeed need,
                                     std::string id) {
  if (limits.req_per_min <= 0 || limits.tokens_per_min <= 0)
    throw std::invalid_argument("deployment budget: req_per_min and tokens_per_min must be > 0");
  const std::int64_t rpm = limits.req_per_min;
  std::vector<std::string> args;
  args.reserve(7);
  args.push_back(std::to_string(limits.tokens_per_min));
  args.push_back(std::to_string(rpm));
  args.push_back(limits.pace_short_windows ? std::to_string(std::max<std::int64_t>(1, rpm / 6))
                                           : "0");
  args.push_back(limits.pace_short_windows ? std::to_string(std::max<std::int64_t>(1, rpm / 60))
                                           : "0");
  args.push_back(std::to_string(std::max<std::int64_t>(0, need.calls)));
  args.push_back(std::to_string(std::max<std::int64_t>(0, need.tokens)));
  args.push_back(std::move(id));
  return args;
}

std::vector<std::string> charge_keys(const std::string& key, const std::string& backoff_key) {
  std::vector<std::string> keys;
  keys.reserve(2);
  keys.push_back(key);
  keys.push_back(backoff_key);
  return keys;
}

bool is_abort(const boost::system::system_error& e) {
  return e.code() == asio::error::operation_aborted;
}

}  // namespace

const std::string& RedisDeploymentBudgetStore::charge_script() {
  static const std::string text = charge_lua;
  return text;
}

const std::string& RedisDeploymentBudgetStore::charge_script_sha1() {
  static const std::string sha = detail::sha1_hex(charge_script());
  return sha;
}

const std::string& RedisDeploymentBudgetStore::backoff_script() {
  static const std::string text = backoff_lua;
  return text;
}

const std::string& RedisDeploymentBudgetStore::backoff_script_sha1() {
  static const std::string sha = detail::sha1_hex(backoff_script());
  return sha;
}

RedisDeploymentBudgetStore::RedisDeploymentBudgetStore(asio::any_io_executor ex,
                                                       RedisDeploymentBudgetOptions options)
    : options_(std::move(options)), member_prefix_(detail::random_member_prefix()) {
  detail::check_key_prefix(options_.key_prefix, "redis deployment budget store");
  client_ = std::make_unique<RedisClient>(std::move(ex), detail::redis_config_from(options_));
}

RedisDeploymentBudgetStore::~RedisDeploymentBudgetStore() = default;

std::string RedisDeploymentBudgetStore::key_for(std::string_view unique_model_id) const {
  return detail::hash_tagged_key(options_.key_prefix, unique_model_id);
}

std::string RedisDeploymentBudgetStore::backoff_key_for(std::string_view unique_model_id) const {
  return key_for(unique_model_id) + ":backoff";
}

RedisDeploymentBudgetCounters RedisDeploymentBudgetStore::counters() const noexcept {
  RedisDeploymentBudgetCounters c;
  c.decisions = decisions_.load();
  c.refusals = refusals_.load();
  c.errors = errors_.load();
  return c;
}

asio::awaitable<BudgetDecision> RedisDeploymentBudgetStore::try_charge(
    const Deployment& deployment, const DeploymentLimits& limits, DeploymentNeed need) {
  // Everything the call needs is copied before the first suspension.
  const std::string key = key_for(deployment.unique_model_id);
  const std::string backoff_key = backoff_key_for(deployment.unique_model_id);
  std::vector<std::string> args =
      charge_args(limits, need, member_prefix_ + "-" + std::to_string(++sequence_));

  RedisReply reply;
  try {
    reply = co_await detail::eval_script(*client_, key, charge_script(), charge_script_sha1(),
                                         charge_keys(key, backoff_key), std::move(args));
  } catch (const boost::system::system_error& e) {
    if (!is_abort(e)) errors_.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  if (reply.is_error()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    throw DeploymentBudgetStoreError("redis answered: " + reply.str);
  }
  if (reply.type != RedisReply::Type::integer || reply.integer < 0) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    throw DeploymentBudgetStoreError("unexpected reply shape from the budget script");
  }
  decisions_.fetch_add(1, std::memory_order_relaxed);
  BudgetDecision decision;
  if (reply.integer > 0) {
    refusals_.fetch_add(1, std::memory_order_relaxed);
    decision.allowed = false;
    decision.retry_after = std::chrono::milliseconds(reply.integer);
  }
  co_return decision;
}

asio::awaitable<void> RedisDeploymentBudgetStore::report_backoff(
    const Deployment& deployment, std::chrono::milliseconds duration) {
  if (duration.count() <= 0) co_return;
  const std::string key = backoff_key_for(deployment.unique_model_id);
  const std::chrono::milliseconds ms = duration;

  RedisReply reply;
  try {
    reply = co_await detail::eval_script(*client_, key, backoff_script(), backoff_script_sha1(),
                                         std::vector<std::string>(1, key),
                                         std::vector<std::string>(1, std::to_string(ms.count())));
  } catch (const boost::system::system_error& e) {
    if (!is_abort(e)) errors_.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
  if (reply.is_error()) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    throw DeploymentBudgetStoreError("redis answered: " + reply.str);
  }
}

asio::awaitable<void> RedisDeploymentBudgetStore::close() { co_await client_->close(); }

}  // namespace llmq
