#pragma once
/// @file detail/redis_script.hpp
/// What the Redis-backed stores share: hash-tagged keys, the key prefix check, the
/// RedisConfig built from a store's options, unique member prefixes, and running a Lua
/// script (EVALSHA, then EVAL when the server answers NOSCRIPT).

#include <llmq/redis.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace llmq::detail {

/// 16 random lowercase hex digits: a prefix that keeps sorted-set members unique across
/// processes and stores.
[[nodiscard]] std::string random_member_prefix();

/// `<prefix>{<id>}`: the braces make `id` the cluster hash tag.
[[nodiscard]] std::string hash_tagged_key(std::string_view prefix, std::string_view id);

/// Throws ConfigError("<who>: key_prefix must not contain '{' or '}'") when `prefix`
/// holds a brace (it would break the hash tag of hash_tagged_key()).
void check_key_prefix(std::string_view prefix, std::string_view who);

/// parse_redis_url(url) over a RedisConfig holding the given timeouts, backoff and TLS
/// options. Throws ConfigError for a malformed URL.
[[nodiscard]] RedisConfig redis_config_from(std::string_view url,
                                            std::chrono::milliseconds connect_timeout,
                                            std::chrono::milliseconds command_timeout,
                                            std::chrono::milliseconds backoff_initial,
                                            std::chrono::milliseconds backoff_max,
                                            const RedisTlsOptions& tls);

/// The same from a store's options (any struct with url, connect_timeout,
/// command_timeout, reconnect_backoff_initial, reconnect_backoff_max and tls).
template <class Options>
[[nodiscard]] RedisConfig redis_config_from(const Options& o) {
  return redis_config_from(o.url, o.connect_timeout, o.command_timeout, o.reconnect_backoff_initial,
                           o.reconnect_backoff_max, o.tls);
}

/// `EVALSHA sha1 <keys.size()> keys... args...` sent for `key`; when the reply is a
/// NOSCRIPT error, the same with `EVAL script` instead. Returns the last reply (error
/// replies included); exceptions of RedisClient::exec_for_key propagate. `script` and
/// `sha1` must outlive the call.
boost::asio::awaitable<RedisReply> eval_script(RedisClient& client, std::string key,
                                               const std::string& script, const std::string& sha1,
                                               std::vector<std::string> keys,
                                               std::vector<std::string> args);

}  // namespace llmq::detail
