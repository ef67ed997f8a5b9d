// Retry-After, x-ratelimit-* and retryability of upstream responses.

#include <llmq/rate_limit_headers.hpp>

#include <array>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

namespace llmq {
namespace {

using std::chrono::milliseconds;
using SysTime = std::chrono::system_clock::time_point;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// Parses `digits[.digits]` at the front of `s` (consumed). No sign, no exponent.
std::optional<long double> take_decimal(std::string_view& s) {
  std::size_t i = 0;
  long double value = 0;
  std::size_t int_digits = 0;
  while (i < s.size() && is_digit(s[i])) {
    value = value * 10 + (s[i] - '0');
    ++i;
    ++int_digits;
  }
  std::size_t frac_digits = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    long double scale = 0.1L;
    while (i < s.size() && is_digit(s[i])) {
      value += scale * (s[i] - '0');
      scale /= 10;
      ++i;
      ++frac_digits;
    }
  }
  if (int_digits == 0 && frac_digits == 0) return std::nullopt;
  if (int_digits > 15) return std::nullopt;  // far beyond any sane value
  s.remove_prefix(i);
  return value;
}

/// A whole header value as a non-negative decimal number times `unit_ms`, rounded up.
std::optional<milliseconds> decimal_ms(std::string_view text, long double unit_ms) {
  text = trim(text);
  const std::optional<long double> value = take_decimal(text);
  if (!value || !text.empty()) return std::nullopt;
  const long double ms = std::ceil(*value * unit_ms - 1e-9L);
  if (ms > static_cast<long double>(kMaxRetryAfter.count())) return std::nullopt;
  return milliseconds(static_cast<std::int64_t>(ms < 0 ? 0 : ms));
}

int month_number(std::string_view name) {
  static constexpr std::array<std::string_view, 12> kMonths = {
      "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
  if (name.size() != 3) return 0;
  std::string lowered;
  for (char c : name) lowered += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (std::size_t i = 0; i < kMonths.size(); ++i) {
    if (kMonths[i] == lowered) return static_cast<int>(i) + 1;
  }
  return 0;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_digit(c)) return false;
  }
  return true;
}

bool all_alpha(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!std::isalpha(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

int to_int(std::string_view digits) {
  int v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

std::optional<std::int64_t> header_count(const HttpResponse& r, std::string_view name) {
  const auto value = r.header(name);
  if (!value) return std::nullopt;
  return parse_rate_limit_count(*value);
}

std::optional<milliseconds> header_duration(const HttpResponse& r, std::string_view name) {
  const auto value = r.header(name);
  if (!value) return std::nullopt;
  return parse_duration(*value);
}

bool string_is(const nlohmann::json& obj, const char* key, std::string_view expected) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_string() && it->get_ref<const std::string&>() == expected;
}

}  // namespace

std::optional<milliseconds> parse_duration(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  {
    std::string_view rest = text;
    const std::optional<long double> bare = take_decimal(rest);
    if (bare && rest.empty()) {
      return milliseconds(static_cast<std::int64_t>(std::ceil(*bare * 1000 - 1e-9L)));
    }
  }
  long double total_ns = 0;
  while (!text.empty()) {
    const std::optional<long double> value = take_decimal(text);
    if (!value) return std::nullopt;
    long double unit_ns = 0;
    if (text.substr(0, 2) == "ms") {
      unit_ns = 1e6L;
      text.remove_prefix(2);
    } else if (text.substr(0, 2) == "us") {
      unit_ns = 1e3L;
      text.remove_prefix(2);
    } else if (text.substr(0, 3) == "\xC2\xB5s" || text.substr(0, 3) == "\xCE\xBCs") {
      unit_ns = 1e3L;  // micro sign or Greek mu
      text.remove_prefix(3);
    } else if (text.substr(0, 2) == "ns") {
      unit_ns = 1;
      text.remove_prefix(2);
    } else if (!text.empty() && text.front() == 'h') {
      unit_ns = 3600e9L;
      text.remove_prefix(1);
    } else if (!text.empty() && text.front() == 'm') {
      unit_ns = 60e9L;
      text.remove_prefix(1);
    } else if (!text.empty() && text.front() == 's') {
      unit_ns = 1e9L;
      text.remove_prefix(1);
    } else {
      return std::nullopt;
    }
    total_ns += *value * unit_ns;
  }
  if (total_ns > 1e18L) return std::nullopt;
  return milliseconds(static_cast<std::int64_t>(std::ceil(total_ns / 1e6L - 1e-9L)));
}

std::optional<SysTime> parse_http_date(std::string_view text) {
  std::vector<std::string_view> tokens;
  {
    std::size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && (text[i] == ' ' || text[i] == ',' || text[i] == '-')) ++i;
      std::size_t j = i;
      while (j < text.size() && text[j] != ' ' && text[j] != ',' && text[j] != '-') ++j;
      if (j > i) tokens.push_back(text.substr(i, j - i));
      i = j;
    }
  }
  // weekday, then day/month/year/time in the order of the form, maybe a zone.
  if (tokens.size() < 5 || tokens.size() > 6 || !all_alpha(tokens[0])) return std::nullopt;
  int month = 0;
  std::vector<std::string_view> numbers;
  std::string_view time;
  bool zone_seen = false;
  for (std::size_t k = 1; k < tokens.size(); ++k) {
    const std::string_view t = tokens[k];
    if (t.find(':') != std::string_view::npos) {
      if (!time.empty()) return std::nullopt;
      time = t;
    } else if (all_digits(t)) {
      numbers.push_back(t);
    } else if (month == 0 && month_number(t) != 0) {
      month = month_number(t);
    } else if (!zone_seen && (t == "GMT" || t == "UTC" || t == "UT" || t == "Z")) {
      zone_seen = true;
    } else {
      return std::nullopt;
    }
  }
  if (month == 0 || numbers.size() != 2 || time.size() != 8) return std::nullopt;
  const std::string_view day_text = numbers[0];
  const std::string_view year_text = numbers[1];
  if (day_text.size() > 2 || (year_text.size() != 2 && year_text.size() != 4)) return std::nullopt;
  if (time[2] != ':' || time[5] != ':' || !all_digits(time.substr(0, 2)) ||
      !all_digits(time.substr(3, 2)) || !all_digits(time.substr(6, 2))) {
    return std::nullopt;
  }
  int year = to_int(year_text);
  if (year_text.size() == 2) year += year < 70 ? 2000 : 1900;
  const int day = to_int(day_text);
  const int hour = to_int(time.substr(0, 2));
  const int minute = to_int(time.substr(3, 2));
  const int second = to_int(time.substr(6, 2));
  if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year(year),
                                        std::chrono::month(static_cast<unsigned>(month)),
                                        std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  // In seconds first: years 0-9999 fit; system_clock's nanoseconds hold about 1678-2262.
  const std::chrono::seconds since_epoch = std::chrono::sys_days(ymd).time_since_epoch() +
                                           std::chrono::hours(hour) + std::chrono::minutes(minute) +
                                           std::chrono::seconds(second);
  using std::chrono::ceil;
  using std::chrono::floor;
  if (since_epoch < ceil<std::chrono::seconds>(SysTime::min().time_since_epoch()) ||
      since_epoch > floor<std::chrono::seconds>(SysTime::max().time_since_epoch())) {
    return std::nullopt;
  }
  return SysTime(since_epoch);
}

std::optional<milliseconds> parse_retry_after(const HttpResponse& response, SysTime now) {
  if (auto v = response.header("retry-after-ms")) {
    if (auto ms = decimal_ms(*v, 1)) return ms;
  }
  if (auto v = response.header("x-ms-retry-after-ms")) {
    if (auto ms = decimal_ms(*v, 1)) return ms;
  }
  if (auto v = response.header("retry-after")) {
    if (auto ms = decimal_ms(*v, 1000)) return ms;
    if (auto date = parse_http_date(trim(*v))) {
      if (*date <= now) return milliseconds(0);
      const auto delay = std::chrono::ceil<milliseconds>(*date - now);
      if (delay <= kMaxRetryAfter) return delay;
    }
  }
  return std::nullopt;
}

std::optional<std::int64_t> parse_rate_limit_count(std::string_view text) {
  text = trim(text);
  if (!all_digits(text) || text.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : text) v = v * 10 + (c - '0');
  return v;
}

bool is_insufficient_quota(const nlohmann::json& body) noexcept {
  if (!body.is_object()) return false;
  const auto err = body.find("error");
  if (err != body.end() && err->is_object() &&
      (string_is(*err, "code", "insufficient_quota") ||
       string_is(*err, "type", "insufficient_quota"))) {
    return true;
  }
  return string_is(body, "code", "insufficient_quota") ||
         string_is(body, "type", "insufficient_quota");
}

bool is_retryable_failure(int status, const nlohmann::json& body) noexcept {
  if (status == 400 || status == 401 || status == 403 || status == 404) return false;
  return !is_insufficient_quota(body);
}

UpstreamOutcome outcome_from_response(const HttpResponse& response, SysTime now) {
  const nlohmann::json body = nlohmann::json::parse(response.body, nullptr, false);
  return outcome_from_response(response, body, now);
}

UpstreamOutcome outcome_from_response(const HttpResponse& response, const nlohmann::json& body,
                                      SysTime now) {
  UpstreamOutcome o;
  o.status = response.status;
  o.retry_after = parse_retry_after(response, now);
  o.remaining_requests = header_count(response, "x-ratelimit-remaining-requests");
  o.remaining_tokens = header_count(response, "x-ratelimit-remaining-tokens");
  o.reset_requests = header_duration(response, "x-ratelimit-reset-requests");
  o.reset_tokens = header_duration(response, "x-ratelimit-reset-tokens");
  o.connection_error = false;
  o.retryable = response.status < 400 || is_retryable_failure(response.status, body);
  return o;
}

UpstreamOutcome outcome_from_error(const HttpError& error) {
  UpstreamOutcome o;
  o.status = error.http_status();
  const http_errc e = error.errc();
  o.connection_error = e != http_errc::bad_response && e != http_errc::response_too_large &&
                       e != http_errc::bad_url && e != http_errc::bad_request;
  o.retryable = e != http_errc::bad_url && e != http_errc::bad_request;
  return o;
}

}  // namespace llmq
