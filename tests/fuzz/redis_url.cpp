// Fuzz target `redis_url`: parse_redis_url (the gateway's redis_url and the stores'
// configuration). Only ConfigError may come out, and its message must not repeat what
// the URL's user info holds (a password).

#include "fuzz_support.hpp"

#include <llmq/errors.hpp>
#include <llmq/redis.hpp>

#include <string>
#include <utility>

namespace {

/// Where `url` may hold a password: [first, last) from after "scheme://" to the last '@'
/// (a password may hold '/', '?' or '@' that its writer forgot to percent-encode).
/// Empty when there is no '@'.
std::pair<std::size_t, std::size_t> password_span(std::string_view url) {
  const std::size_t scheme = url.find("://");
  const std::size_t at = url.rfind('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme + 3)
    return {0, 0};
  return {scheme + 3, at};
}

/// True when `quoted` occurs in `url` and only inside [span.first, span.second).
bool only_inside(std::string_view url, std::string_view quoted,
                 std::pair<std::size_t, std::size_t> span) {
  bool found = false;
  for (std::size_t at = url.find(quoted); at != std::string_view::npos;
       at = url.find(quoted, at + 1)) {
    if (at < span.first || at + quoted.size() > span.second) return false;
    found = true;
  }
  return found;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url = llmq::fuzz::as_text(data, size);
  llmq::RedisConfig base;
  base.command_timeout = std::chrono::milliseconds(1234);
  try {
    const llmq::RedisConfig cfg = llmq::parse_redis_url(url, base);
    LLMQ_FUZZ_CHECK(!cfg.host.empty());
    LLMQ_FUZZ_CHECK(cfg.port != 0);
    LLMQ_FUZZ_CHECK(cfg.database >= 0);
    LLMQ_FUZZ_CHECK(cfg.use_tls == url.starts_with("rediss://"));
    LLMQ_FUZZ_CHECK(cfg.command_timeout == base.command_timeout);
  } catch (const llmq::ConfigError& e) {
    const std::string_view message = e.what();
    LLMQ_FUZZ_CHECK(message.starts_with("redis url: "));
    // A quoted part of the message ('...') must not be text found only in the password.
    const std::size_t open = message.find('\'');
    const std::size_t close = open == std::string_view::npos ? open : message.find('\'', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      const std::string_view quoted = message.substr(open + 1, close - open - 1);
      LLMQ_FUZZ_CHECK(!only_inside(url, quoted, password_span(url)));
    }
  }
  return 0;
}
