/// @file redis_script.cpp
/// Helpers shared by the Redis-backed stores (see detail/redis_script.hpp).

#include "redis_script.hpp"
#include <llmq/errors.hpp>

#include <cstdint>
#include <random>

namespace llmq::detail {

namespace {

std::vector<std::string> script_command(const char* verb, const std::string& script_or_sha,
                                        const std::vector<std::string>& keys,
                                        const std::vector<std::string>& args) {
  std::vector<std::string> command;
  command.reserve(3 + keys.size() + args.size());
  command.emplace_back(verb);
  command.push_back(script_or_sha);
  command.push_back(std::to_string(keys.size()));
  command.insert(command.end(), keys.begin(), keys.end());
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

}  // namespace

std::string random_member_prefix() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  std::uint64_t v = gen();
  for (int i = 0; i < 16; ++i) {
    out.push_back(digits[v & 0xFU]);
    v >>= 4;
  }
  return out;
}

std::string hash_tagged_key(std::string_view prefix, std::string_view id) {
  std::string key;
  key.reserve(prefix.size() + id.size() + 2);
  key += prefix;
  key += '{';
  key += id;
  key += '}';
  return key;
}

void check_key_prefix(std::string_view prefix, std::string_view who) {
  if (prefix.find_first_of("{}") != std::string_view::npos)
    throw ConfigError(std::string(who) + ": key_prefix must not contain '{' or '}'");
}

RedisConfig redis_config_from(std::string_view url, std::chrono::milliseconds connect_timeout,
                              std::chrono::milliseconds command_timeout,
                              std::chrono::milliseconds backoff_initial,
                              std::chrono::milliseconds backoff_max, const RedisTlsOptions& tls) {
  RedisConfig base;
  base.tls = tls;
  base.connect_timeout = connect_timeout;
  base.command_timeout = command_timeout;
  base.reconnect_backoff_initial = backoff_initial;
  base.reconnect_backoff_max = backoff_max;
  return parse_redis_url(url, base);
}

boost::asio::awaitable<RedisReply> eval_script(RedisClient& client, std::string key,
                                               const std::string& script, const std::string& sha1,
                                               std::vector<std::string> keys,
                                               std::vector<std::string> args) {
  RedisReply reply = co_await client.exec_for_key(key, script_command("EVALSHA", sha1, keys, args));
  if (reply.is_error("NOSCRIPT")) {
    reply = co_await client.exec_for_key(key, script_command("EVAL", script, keys, args));
  }
  co_return reply;
}

}  // namespace llmq::detail
