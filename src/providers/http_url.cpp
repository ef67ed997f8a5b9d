// URL split for HttpClient (no Boost.URL: the client needs scheme, host, port, target).

#include "http_url.hpp"

#include <cctype>
#include <charconv>

namespace llmq::detail {
namespace {

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

bool iequals_prefix(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (lower(text[i]) != prefix[i]) return false;
  }
  return true;
}

bool is_ipv4(std::string_view host) {
  int parts = 0;
  std::size_t i = 0;
  while (i <= host.size()) {
    std::size_t j = i;
    while (j < host.size() && host[j] != '.') ++j;
    const std::string_view part = host.substr(i, j - i);
    if (part.empty() || part.size() > 3) return false;
    int value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || ptr != part.data() + part.size() || value > 255) return false;
    ++parts;
    i = j + 1;
  }
  return parts == 4;
}

bool valid_reg_name(std::string_view host) {
  for (char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~' || c == '%') continue;
    return false;
  }
  return true;
}

bool valid_ipv6(std::string_view host) {
  if (host.empty()) return false;
  for (char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isxdigit(u) || c == ':' || c == '.') continue;
    return false;
  }
  return host.find(':') != std::string_view::npos;
}

}  // namespace

std::string UrlParts::origin() const {
  std::string out = tls ? "https://" : "http://";
  if (host.find(':') != std::string::npos) {
    out += '[';
    out += host;
    out += ']';
  } else {
    out += host;
  }
  out += ':';
  out += std::to_string(port);
  return out;
}

std::optional<UrlParts> parse_http_url(std::string_view url) {
  for (char c : url) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return std::nullopt;  // spaces and control characters
  }
  UrlParts parts;
  if (iequals_prefix(url, "https://")) {
    parts.tls = true;
    url.remove_prefix(8);
  } else if (iequals_prefix(url, "http://")) {
    url.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  const std::size_t authority_end = url.find_first_of("/?#");
  std::string_view authority = url.substr(0, authority_end);
  std::string_view rest =
      authority_end == std::string_view::npos ? std::string_view{} : url.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) return std::nullopt;

  std::string_view host;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    if (!valid_ipv6(host)) return std::nullopt;
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port_text = after.substr(1);
      if (port_text.empty()) return std::nullopt;
    }
    parts.host_is_ip = true;
  } else {
    const std::size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return std::nullopt;
    }
    if (!valid_reg_name(host)) return std::nullopt;
    parts.host_is_ip = is_ipv4(host);
  }
  if (host.empty()) return std::nullopt;
  parts.host.reserve(host.size());
  for (char c : host) parts.host += lower(c);

  if (port_text.empty()) {
    parts.port = parts.tls ? 443 : 80;
  } else {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return std::nullopt;
    }
    parts.port = static_cast<std::uint16_t>(value);
  }

  const std::size_t hash = rest.find('#');
  if (hash != std::string_view::npos) rest = rest.substr(0, hash);
  if (rest.empty()) {
    parts.target = "/";
  } else if (rest.front() == '?') {
    parts.target = "/";
    parts.target += rest;
  } else {
    parts.target = std::string(rest);
  }

  const bool default_port = parts.port == (parts.tls ? 443 : 80);
  parts.host_header =
      parts.host.find(':') != std::string::npos ? "[" + parts.host + "]" : parts.host;
  if (!default_port) parts.host_header += ":" + std::to_string(parts.port);
  return parts;
}

std::string url_for_log(std::string_view url) {
  const std::size_t cut = url.find_first_of("?#");
  return std::string(url.substr(0, cut));
}

}  // namespace llmq::detail
