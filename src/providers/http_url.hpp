#pragma once
/// @file detail/http_url.hpp
/// The URL split HttpClient uses (private API; tested on its own).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmq::detail {

/// The parts of an absolute `http://` / `https://` URL that a client request needs.
struct UrlParts {
  bool tls = false;         ///< https
  std::string host;         ///< lower-cased; IPv6 without brackets
  std::uint16_t port = 0;   ///< explicit or the scheme's default (80 / 443)
  std::string target;       ///< path + query, "/" when absent; the fragment is dropped
  bool host_is_ip = false;  ///< an IPv4 or IPv6 literal (no SNI, IP verification)
  std::string host_header;  ///< value of the Host header (port only when not default)

  /// "http://host:port" style key of the connection pool.
  [[nodiscard]] std::string origin() const;
};

/// Splits `http[s]://host[:port][/path][?query][#fragment]`. Rejects other schemes,
/// user info (`user@host`), an empty host, a bad port, whitespace and control
/// characters. Scheme and host are case-insensitive.
[[nodiscard]] std::optional<UrlParts> parse_http_url(std::string_view url);

/// The URL without its query and fragment, for log lines (a query may hold secrets).
[[nodiscard]] std::string url_for_log(std::string_view url);

}  // namespace llmq::detail
