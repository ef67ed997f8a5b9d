/// @file redis_rate_limit_store.cpp
/// RedisUserRateLimitStore: the sliding-window script and the failure policy.

#include <llmq/log.hpp>
#include <llmq/redis_rate_limit_store.hpp>
#include "redis_protocol.hpp"
#include "redis_script.hpp"

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <optional>

namespace llmq {

namespace asio = boost::asio;

namespace {

// KEYS[1]: the user's sorted set. ARGV[1]: max requests; ARGV[2]: window in microseconds;
// ARGV[3]: a member suffix unique to this call. Returns {allowed, remaining, retry_us}.
// Time is the server's (TIME), so every process shares one clock. Scores are integer
// microseconds (exact in a double until 2^53 us, i.e. the year 2255).
constexpr const char* sliding_window_lua = R"lua(
local key = KEYS[1]
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < max then
  redis.call('ZADD', key, now, t[1] .. string.format('%06d', tonumber(t[2])) .. ':' .. ARGV[3])
  redis.call('PEXPIRE', key, math.max(1, math.ceil(window / 1000)))
  return {1, max - count - 1, 0}
end
local retry = window
if max > 0 and count > 0 then
  local leaving = redis.call('ZRANGE', key, count - max, count - max, 'WITHSCORES')
  if leaving[2] then retry = tonumber(leaving[2]) + window - now end
end
if retry < 0 then retry = 0 end
return {0, 0, retry}
)lua";

/// ARGV of the script: max requests, window in microseconds, the member suffix.
std::vector<std::string> script_args(const UserLimits& limits, std::string member) {
  std::vector<std::string> args;
  args.reserve(3);
  args.push_back(std::to_string(limits.max_num_requests_in_time_window));
  args.push_back(std::to_string(
      std::chrono::duration_cast<std::chrono::microseconds>(limits.time_window).count()));
  args.push_back(std::move(member));
  return args;
}

/// {allowed, remaining, retry_us} -> decision; nullopt if the reply has another shape.
std::optional<RateLimitDecision> to_decision(const RedisReply& r) {
  if (r.type != RedisReply::Type::array || r.elements.size() != 3) return std::nullopt;
  for (const RedisReply& e : r.elements) {
    if (e.type != RedisReply::Type::integer) return std::nullopt;
  }
  RateLimitDecision d;
  d.allowed = r.elements[0].integer == 1;
  d.remaining = r.elements[1].integer;
  d.retry_after = std::chrono::microseconds(r.elements[2].integer);
  return d;
}

}  // namespace

const std::string& RedisUserRateLimitStore::script() {
  static const std::string text = sliding_window_lua;
  return text;
}

const std::string& RedisUserRateLimitStore::script_sha1() {
  static const std::string sha = detail::sha1_hex(script());
  return sha;
}

RedisUserRateLimitStore::RedisUserRateLimitStore(asio::any_io_executor ex,
                                                 RedisRateLimitStoreOptions options)
    : options_(std::move(options)), member_prefix_(detail::random_member_prefix()) {
  detail::check_key_prefix(options_.key_prefix, "redis rate limit store");
  client_ = std::make_unique<RedisClient>(std::move(ex), detail::redis_config_from(options_));
}

RedisUserRateLimitStore::~RedisUserRateLimitStore() = default;

std::string RedisUserRateLimitStore::key_for(std::string_view user_id) const {
  return detail::hash_tagged_key(options_.key_prefix, user_id);
}

RedisRateLimitStoreCounters RedisUserRateLimitStore::counters() const noexcept {
  RedisRateLimitStoreCounters c;
  c.redis_decisions = redis_decisions_.load();
  c.errors = errors_.load();
  c.fail_open_decisions = fail_open_decisions_.load();
  return c;
}

RateLimitDecision RedisUserRateLimitStore::on_failure(std::string_view user_id,
                                                      const UserLimits& limits,
                                                      const std::string& why) {
  ++errors_;
  const bool first = !degraded_.exchange(true);
  if (options_.failure_policy == RateLimitFailurePolicy::fail_closed) {
    if (first) logger()->warn("redis user rate limit store failing closed: {}", why);
    throw RateLimitStoreUnavailableError(why, options_.unavailable_retry_after);
  }
  if (first) {
    logger()->warn("redis user rate limit store failing open (local per-process limits): {}", why);
  }
  ++fail_open_decisions_;
  return local_.acquire_now(user_id, limits);
}

asio::awaitable<RateLimitDecision> RedisUserRateLimitStore::acquire(std::string_view user_id,
                                                                    const UserLimits& limits) {
  const std::string user(user_id);
  const UserLimits lim = limits;
  const std::string key = key_for(user);
  const std::string member = member_prefix_ + ":" + std::to_string(++sequence_);

  std::optional<RedisReply> reply;
  std::string failure;
  try {
    reply =
        co_await detail::eval_script(*client_, key, script(), script_sha1(),
                                     std::vector<std::string>(1, key), script_args(lim, member));
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;
    failure = e.what();
    reply.reset();
  }
  std::optional<RateLimitDecision> decision;
  if (reply) {
    if (reply->is_error()) {
      failure = "redis answered: " + reply->str;
    } else {
      decision = to_decision(*reply);
      if (!decision) failure = "unexpected reply shape from the rate limit script";
    }
  }
  if (!decision) co_return on_failure(user, lim, failure);
  ++redis_decisions_;
  if (degraded_.exchange(false)) logger()->info("redis user rate limit store: redis is back");
  co_return *decision;
}

asio::awaitable<void> RedisUserRateLimitStore::close() { co_await client_->close(); }

}  // namespace llmq
