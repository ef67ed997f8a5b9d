/// @file redis_url.cpp
/// parse_redis_url: `redis://` / `rediss://` URLs into a RedisConfig (no I/O).

#include <llmq/errors.hpp>
#include <llmq/redis.hpp>

#include <algorithm>
#include <charconv>
#include <string>
#include <string_view>
#include <vector>

namespace llmq {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) throw ConfigError("redis url: truncated percent escape");
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) throw ConfigError("redis url: invalid percent escape");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

template <class Int>
bool parse_decimal(std::string_view s, Int& out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

bool parse_bool(std::string_view s, bool& out) {
  if (s == "true" || s == "1" || s == "yes") {
    out = true;
    return true;
  }
  if (s == "false" || s == "0" || s == "no") {
    out = false;
    return true;
  }
  return false;
}

/// `name=value&...` of a rediss:// url into `tls`. Each name at most once.
void apply_tls_parameters(std::string_view query, RedisTlsOptions& tls) {
  std::vector<std::string> seen;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    const std::string name = percent_decode(pair.substr(0, eq));
    if (eq == std::string_view::npos)
      throw ConfigError("redis url: query parameter '" + name + "' has no value");
    std::string value = percent_decode(pair.substr(eq + 1));
    if (std::find(seen.begin(), seen.end(), name) != seen.end())
      throw ConfigError("redis url: query parameter '" + name + "' given twice");
    seen.push_back(name);
    if (name == "ca_file") {
      tls.ca_file = std::move(value);
    } else if (name == "cert_file") {
      tls.cert_file = std::move(value);
    } else if (name == "key_file") {
      tls.key_file = std::move(value);
    } else if (name == "server_name") {
      tls.server_name = std::move(value);
    } else if (name == "verify") {
      if (!parse_bool(value, tls.verify))
        throw ConfigError("redis url: verify must be true or false (got '" + value + "')");
    } else {
      throw ConfigError("redis url: unknown query parameter '" + name +
                        "' (known: ca_file, cert_file, key_file, server_name, verify)");
    }
  }
}

}  // namespace

RedisConfig parse_redis_url(std::string_view url, RedisConfig base) {
  constexpr std::string_view plain = "redis://";
  constexpr std::string_view tls = "rediss://";
  bool use_tls = false;
  std::string_view rest;
  if (url.substr(0, tls.size()) == tls) {
    use_tls = true;
    rest = url.substr(tls.size());
  } else if (url.substr(0, plain.size()) == plain) {
    rest = url.substr(plain.size());
  } else {
    // The url is not echoed: it may hold a password.
    throw ConfigError("redis url: must start with redis:// or rediss://");
  }
  // The user info ends at the last '@' before the first '/' (a password may contain '?');
  // then the authority ends at '/' (the database) or '?' (the TLS parameters).
  const std::size_t first_slash = rest.find('/');
  const std::size_t userinfo_at = rest.substr(0, first_slash).rfind('@');
  const std::size_t host_start = userinfo_at == std::string_view::npos ? 0 : userinfo_at + 1;
  // An '@' further on means a '/' in a password was not percent-encoded (or an '@' in a
  // parameter): the rest of the password would be read as port, database or parameters,
  // and quoted in the errors below.
  if (rest.find('@', host_start) != std::string_view::npos)
    throw ConfigError(
        "redis url: '@' after the host (percent-encode '@', '/' and '?' in a user name, "
        "password or parameter as %40, %2F and %3F)");
  const std::size_t question = rest.find('?', host_start);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view() : rest.substr(question + 1);
  rest = rest.substr(0, question);
  const std::size_t slash = rest.find('/', host_start);
  std::string_view authority = rest.substr(0, slash);
  std::string_view path =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);

  RedisConfig cfg = std::move(base);
  cfg.username.clear();
  cfg.password.clear();
  cfg.port = 6379;
  cfg.database = 0;
  cfg.use_tls = use_tls;

  const std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    const std::size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      cfg.password = percent_decode(userinfo);  // redis://password@host
    } else {
      cfg.username = percent_decode(userinfo.substr(0, colon));
      cfg.password = percent_decode(userinfo.substr(colon + 1));
    }
  }
  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) throw ConfigError("redis url: unterminated [ in host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw ConfigError("redis url: unexpected text after ]");
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) throw ConfigError("redis url: host is missing");
  cfg.host = std::string(host);
  if (!port.empty() || authority.find(':') != std::string_view::npos) {
    if (!parse_decimal(port, cfg.port) || cfg.port == 0)
      throw ConfigError("redis url: invalid port '" + std::string(port) + "'");
  }
  if (!path.empty()) {
    if (!parse_decimal(path, cfg.database) || cfg.database < 0)
      throw ConfigError("redis url: the path must be a database number (got '" + std::string(path) +
                        "')");
  }
  if (!query.empty()) {
    if (!use_tls) throw ConfigError("redis url: query parameters (TLS options) need rediss://");
    apply_tls_parameters(query, cfg.tls);
  }
  return cfg;
}

}  // namespace llmq
