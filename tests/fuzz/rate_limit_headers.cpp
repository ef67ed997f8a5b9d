// Fuzz target `rate_limit_headers`: what an upstream answer says about retries and rate
// limits (retry-after, retry-after-ms, x-ms-retry-after-ms, x-ratelimit-*). Input: an
// answer head and body as text: a status line ("429"), `name: value` header lines, a
// blank line, the body. Every header value also goes through each parser on its own.

#include "fuzz_support.hpp"

#include <llmq/rate_limit_headers.hpp>

#include <chrono>
#include <cstdio>
#include <string>

namespace {

using namespace std::chrono;
using SysTime = system_clock::time_point;

// A fixed "now" (2024-06-01 12:00:00 UTC): results must not depend on the machine's clock.
const SysTime kNow = sys_days(year(2024) / June / 1) + hours(12);

std::string_view take_line(std::string_view& text) {
  const std::size_t end = text.find('\n');
  std::string_view line = text.substr(0, end);
  text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

/// `t` as an IMF-fixdate ("Sat, 01 Jun 2024 12:00:00 GMT").
std::string imf_fixdate(SysTime t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const sys_days day = floor<days>(t);
  const year_month_day ymd(day);
  const hh_mm_ss<seconds> time(floor<seconds>(t - day));
  char out[64];
  std::snprintf(out, sizeof out, "%s, %02u %s %04d %02d:%02d:%02d GMT",
                kDays[weekday(day).c_encoding()], static_cast<unsigned>(ymd.day()),
                kMonths[static_cast<unsigned>(ymd.month()) - 1], static_cast<int>(ymd.year()),
                static_cast<int>(time.hours().count()), static_cast<int>(time.minutes().count()),
                static_cast<int>(time.seconds().count()));
  return out;
}

void check_value(std::string_view value) {
  if (const auto d = llmq::parse_duration(value)) LLMQ_FUZZ_CHECK(d->count() >= 0);
  if (const auto n = llmq::parse_rate_limit_count(value)) LLMQ_FUZZ_CHECK(*n >= 0);
  if (const auto date = llmq::parse_http_date(value)) {
    // Formatting the date and parsing it again gives the same instant.
    const auto again = llmq::parse_http_date(imf_fixdate(*date));
    LLMQ_FUZZ_CHECK(again && *again == *date);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = llmq::fuzz::as_text(data, size);
  llmq::HttpResponse response;
  const std::string_view status = take_line(text);
  response.status = 429;
  if (!status.empty() && status.size() <= 3) {
    int value = 0;
    for (char c : status) value = value * 10 + (c >= '0' && c <= '9' ? c - '0' : 0);
    response.status = value;
  }
  while (!text.empty()) {
    const std::string_view line = take_line(text);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    std::string name(line.substr(0, colon));
    for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    std::string_view value =
        colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    check_value(value);
    response.headers.emplace_back(std::move(name), std::string(value));
  }
  response.body = std::string(text);

  const llmq::UpstreamOutcome outcome = llmq::outcome_from_response(response, kNow);
  LLMQ_FUZZ_CHECK(outcome.status == response.status);
  if (outcome.retry_after) {
    LLMQ_FUZZ_CHECK(outcome.retry_after->count() >= 0);
    LLMQ_FUZZ_CHECK(*outcome.retry_after <= llmq::kMaxRetryAfter);
  }
  for (const auto& reset : {outcome.reset_requests, outcome.reset_tokens}) {
    if (reset) LLMQ_FUZZ_CHECK(reset->count() >= 0);
  }
  for (const auto& remaining : {outcome.remaining_requests, outcome.remaining_tokens}) {
    if (remaining) LLMQ_FUZZ_CHECK(*remaining >= 0);
  }
  if (const auto body = llmq::fuzz::parse_json(response.body)) {
    const bool quota = llmq::is_insufficient_quota(*body);
    LLMQ_FUZZ_CHECK(!quota || !llmq::is_retryable_failure(response.status, *body));
  }
  return 0;
}
