// Pure parsers of llmq::providers: Retry-After and x-ratelimit-* headers, durations,
// HTTP dates, outcomes, the SSE parser (split at every byte), the URL split, the upstream
// request builder and the chat stream assembler. No sockets, no sleeps.

#include <llmq/providers.hpp>
#include <llmq/rate_limit_headers.hpp>
#include <llmq/sse.hpp>
#include "http_url.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;
using SysTime = std::chrono::system_clock::time_point;

llmq::HttpResponse response_with(std::vector<std::pair<std::string, std::string>> headers,
                                 int status = 429, std::string body = "") {
  llmq::HttpResponse r;
  r.status = status;
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

// 1994-11-06 08:49:37 UTC
const SysTime kDate = SysTime(
    std::chrono::sys_days(std::chrono::year(1994) / 11 / 6).time_since_epoch() + 8h + 49min + 37s);

// ---- Retry-After ------------------------------------------------------------------------

TEST(RetryAfter, PrefersRetryAfterMsThenXmsThenSeconds) {
  EXPECT_EQ(
      llmq::parse_retry_after(response_with(
          {{"retry-after", "7"}, {"x-ms-retry-after-ms", "300"}, {"retry-after-ms", "1500"}})),
      milliseconds(1500));
  EXPECT_EQ(llmq::parse_retry_after(
                response_with({{"retry-after", "7"}, {"x-ms-retry-after-ms", "300"}})),
            milliseconds(300));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "7"}})), milliseconds(7000));
  EXPECT_EQ(llmq::parse_retry_after(response_with({})), std::nullopt);
}

TEST(RetryAfter, DecimalValuesRoundUpToMilliseconds) {
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "1.5"}})), milliseconds(1500));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "0.0001"}})), milliseconds(1));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after-ms", "12.2"}})), milliseconds(13));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", " 2 "}})), milliseconds(2000));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "0"}})), milliseconds(0));
}

TEST(RetryAfter, OddValuesAreIgnoredAndTheNextHeaderIsTried) {
  for (const char* odd :
       {"-1", "-0.5", "abc", "", "1e3", "+5", "5s", "NaN", "inf", "1.2.3", "0x10"}) {
    SCOPED_TRACE(odd);
    EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after-ms", odd}})), std::nullopt);
    EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", odd}})), std::nullopt);
    EXPECT_EQ(
        llmq::parse_retry_after(response_with({{"retry-after-ms", odd}, {"retry-after", "3"}})),
        milliseconds(3000));
  }
  // Absurd: above an hour.
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "3601"}})), std::nullopt);
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", "3600"}})),
            milliseconds(3'600'000));
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after-ms", "99999999999999999999"}})),
            std::nullopt);
  EXPECT_EQ(llmq::parse_retry_after(
                response_with({{"x-ms-retry-after-ms", "-20"}, {"retry-after", "1"}})),
            milliseconds(1000));
}

TEST(RetryAfter, HeaderNamesAreCaseInsensitive) {
  EXPECT_EQ(llmq::parse_retry_after(response_with({{"Retry-After-Ms", "250"}})), milliseconds(250));
}

TEST(RetryAfter, HttpDateIsRelativeToNow) {
  const auto r = response_with({{"retry-after", "Sun, 06 Nov 1994 08:49:37 GMT"}});
  EXPECT_EQ(llmq::parse_retry_after(r, kDate - 30s), milliseconds(30'000));
  EXPECT_EQ(llmq::parse_retry_after(r, kDate - 1500ms), milliseconds(1500));
  EXPECT_EQ(llmq::parse_retry_after(r, kDate + 10s), milliseconds(0));  // in the past
  EXPECT_EQ(llmq::parse_retry_after(r, kDate - 2h), std::nullopt);      // absurdly far
}

TEST(HttpDate, AllThreeForms) {
  EXPECT_EQ(llmq::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), kDate);
  EXPECT_EQ(llmq::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), kDate);
  EXPECT_EQ(llmq::parse_http_date("Sun Nov  6 08:49:37 1994"), kDate);
  EXPECT_EQ(llmq::parse_http_date("Wed, 29 Feb 2024 23:59:59 GMT"),
            SysTime(std::chrono::sys_days(std::chrono::year(2024) / 2 / 29).time_since_epoch() +
                    23h + 59min + 59s));
}

TEST(HttpDate, MalformedDatesAreRejected) {
  for (const char* bad :
       {"", "Sun, 06 Nov 1994", "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1994 08:49:37 PST", "06 Nov 1994 08:49:37 GMT", "tomorrow"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(llmq::parse_http_date(bad), std::nullopt);
  }
}

TEST(HttpDate, DatesSystemClockCannotHoldAreRejected) {
  // system_clock counts nanoseconds: about 1678 to 2262. Converting a date outside
  // overflowed (undefined behaviour; in practice a date somewhere else).
  for (const char* far : {"Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT",
                          "Sat, 12 Apr 2262 00:00:00 GMT", "Sun Nov  6 08:49:37 1000"}) {
    SCOPED_TRACE(far);
    EXPECT_EQ(llmq::parse_http_date(far), std::nullopt);
    EXPECT_EQ(llmq::parse_retry_after(response_with({{"retry-after", far}}), kDate), std::nullopt);
  }
  EXPECT_EQ(llmq::parse_http_date("Thu, 01 Jan 2262 00:00:00 GMT"),
            SysTime(std::chrono::sys_days(std::chrono::year(2262) / 1 / 1).time_since_epoch()));
  EXPECT_EQ(llmq::parse_http_date("Sun, 01 Jan 1679 00:00:00 GMT"),
            SysTime(std::chrono::sys_days(std::chrono::year(1679) / 1 / 1).time_since_epoch()));
}

// ---- durations ------------------------------------------------------------------------

TEST(Duration, GoStyleDurations) {
  EXPECT_EQ(llmq::parse_duration("6m0s"), milliseconds(360'000));
  EXPECT_EQ(llmq::parse_duration("1s"), milliseconds(1000));
  EXPECT_EQ(llmq::parse_duration("12ms"), milliseconds(12));
  EXPECT_EQ(llmq::parse_duration("23h47m36.648s"),
            milliseconds(((23 * 60 + 47) * 60 + 36) * 1000 + 648));
  EXPECT_EQ(llmq::parse_duration("0.5s"), milliseconds(500));
  EXPECT_EQ(llmq::parse_duration("1m30s"), milliseconds(90'000));
  EXPECT_EQ(llmq::parse_duration("1h"), milliseconds(3'600'000));
  EXPECT_EQ(llmq::parse_duration("1500us"), milliseconds(2));  // rounded up
  EXPECT_EQ(llmq::parse_duration("1\xC2\xB5s"), milliseconds(1));
  EXPECT_EQ(llmq::parse_duration("999999ns"), milliseconds(1));
  EXPECT_EQ(llmq::parse_duration("0s"), milliseconds(0));
  EXPECT_EQ(llmq::parse_duration("2"), milliseconds(2000));  // bare number: seconds
  EXPECT_EQ(llmq::parse_duration(" 3s "), milliseconds(3000));
}

TEST(Duration, MalformedDurationsAreRejected) {
  for (const char* bad :
       {"", "s", "-1s", "1x", "1s-", "1 s", "ms", "1.s5", "1h-2m", "abc", "1e3s"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(llmq::parse_duration(bad), std::nullopt);
  }
}

TEST(RateLimitCount, OnlyNonNegativeIntegers) {
  EXPECT_EQ(llmq::parse_rate_limit_count("42"), 42);
  EXPECT_EQ(llmq::parse_rate_limit_count(" 0 "), 0);
  for (const char* bad : {"-1", "", "1.5", "ten", "99999999999999999999"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(llmq::parse_rate_limit_count(bad), std::nullopt);
  }
}

// ---- outcomes -------------------------------------------------------------------------

TEST(Outcome, FromA429WithEveryHeader) {
  const auto r =
      response_with({{"retry-after-ms", "1200"},
                     {"x-ratelimit-remaining-requests", "0"},
                     {"x-ratelimit-remaining-tokens", "1234"},
                     {"x-ratelimit-reset-requests", "1s"},
                     {"x-ratelimit-reset-tokens", "6m0s"}},
                    429, R"({"error":{"code":"429","message":"Please retry after 2 seconds"}})");
  const llmq::UpstreamOutcome o = llmq::outcome_from_response(r, SysTime{});
  EXPECT_EQ(o.status, 429);
  EXPECT_EQ(o.retry_after, milliseconds(1200));
  EXPECT_EQ(o.remaining_requests, 0);
  EXPECT_EQ(o.remaining_tokens, 1234);
  EXPECT_EQ(o.reset_requests, milliseconds(1000));
  EXPECT_EQ(o.reset_tokens, milliseconds(360'000));
  EXPECT_FALSE(o.connection_error);
  EXPECT_TRUE(o.retryable);
}

TEST(Outcome, OddRateLimitHeadersAreLeftUnset) {
  const auto r = response_with({{"x-ratelimit-remaining-requests", "-5"},
                                {"x-ratelimit-remaining-tokens", "lots"},
                                {"x-ratelimit-reset-tokens", "soon"},
                                {"retry-after", "-3"}},
                               200, "{}");
  const llmq::UpstreamOutcome o = llmq::outcome_from_response(r, SysTime{});
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(o.retry_after, std::nullopt);
  EXPECT_EQ(o.remaining_requests, std::nullopt);
  EXPECT_EQ(o.remaining_tokens, std::nullopt);
  EXPECT_EQ(o.reset_tokens, std::nullopt);
}

TEST(Outcome, ClientErrorsAreNotRetryable) {
  for (int status : {400, 401, 403, 404}) {
    EXPECT_FALSE(llmq::outcome_from_response(response_with({}, status, "{}"), SysTime{}).retryable)
        << status;
  }
  for (int status : {408, 409, 429, 500, 502, 503}) {
    EXPECT_TRUE(
        llmq::outcome_from_response(response_with({}, status, "not json"), SysTime{}).retryable)
        << status;
  }
}

TEST(Outcome, InsufficientQuotaIsNotRetryable) {
  const std::string by_code =
      R"({"error":{"code":"insufficient_quota","message":"You exceeded your current quota"}})";
  const std::string by_type =
      R"({"error":{"type":"insufficient_quota","code":null,"message":"quota"}})";
  EXPECT_FALSE(llmq::outcome_from_response(response_with({}, 429, by_code), SysTime{}).retryable);
  EXPECT_FALSE(llmq::outcome_from_response(response_with({}, 429, by_type), SysTime{}).retryable);
  EXPECT_TRUE(
      llmq::outcome_from_response(
          response_with({}, 429, R"({"error":{"code":"429","type":"rate_limit"}})"), SysTime{})
          .retryable);
  EXPECT_TRUE(llmq::is_insufficient_quota(json::parse(R"({"code":"insufficient_quota"})")));
  EXPECT_FALSE(llmq::is_insufficient_quota(json::parse(R"({"error":"insufficient_quota"})")));
  EXPECT_FALSE(llmq::is_insufficient_quota(json::parse("[1,2]")));
}

TEST(Outcome, FromTransportErrors) {
  const auto refused =
      llmq::outcome_from_error(llmq::HttpError(llmq::http_errc::connect_failed, "x"));
  EXPECT_EQ(refused.status, 503);
  EXPECT_TRUE(refused.connection_error);
  EXPECT_TRUE(refused.retryable);
  const auto timeout =
      llmq::outcome_from_error(llmq::HttpError(llmq::http_errc::request_timeout, "x"));
  EXPECT_EQ(timeout.status, 504);
  EXPECT_TRUE(timeout.connection_error);
  const auto broken = llmq::outcome_from_error(llmq::HttpError(llmq::http_errc::bad_response, "x"));
  EXPECT_EQ(broken.status, 502);
  EXPECT_FALSE(broken.connection_error);
  EXPECT_FALSE(llmq::outcome_from_error(llmq::HttpError(llmq::http_errc::bad_url, "x")).retryable);
}

TEST(HttpErrc, CategoryAndStatuses) {
  const boost::system::error_code ec = llmq::http_errc::request_timeout;
  EXPECT_STREQ(ec.category().name(), "llmq");
  EXPECT_EQ(ec, llmq::http_errc::request_timeout);
  EXPECT_FALSE(ec.message().empty());
  EXPECT_EQ(llmq::to_string(llmq::http_errc::response_too_large), "response_too_large");
  const llmq::HttpError e(llmq::http_errc::tls_failed, "TLS handshake with https://h:443 failed");
  EXPECT_EQ(e.http_status(), 503);
  EXPECT_EQ(e.code(), llmq::http_errc::tls_failed);
  EXPECT_EQ(llmq::HttpError(llmq::http_errc::request_timeout, "t").http_status(), 504);
  EXPECT_EQ(llmq::HttpError(llmq::http_errc::bad_response, "t").http_status(), 502);
}

// ---- SSE ------------------------------------------------------------------------------

std::vector<llmq::SseEvent> feed_in_pieces(std::string_view text, std::vector<std::size_t> cuts) {
  llmq::SseParser parser;
  std::vector<llmq::SseEvent> events;
  std::size_t start = 0;
  cuts.push_back(text.size());
  for (std::size_t cut : cuts) {
    for (auto& e : parser.feed(text.substr(start, cut - start))) events.push_back(std::move(e));
    start = cut;
  }
  for (auto& e : parser.finish()) events.push_back(std::move(e));
  return events;
}

std::string describe(const std::vector<llmq::SseEvent>& events) {
  std::string out;
  for (const auto& e : events) {
    out += "[" + e.type + "|" + e.data + "|" + e.id + "|" +
           (e.retry ? std::to_string(e.retry->count()) : std::string("-")) + "]";
  }
  return out;
}

const std::string kStream =
    "\xEF\xBB\xBF"
    ": comment line\r\n"
    "data: {\"a\":1}\r\n"
    "\r\n"
    "event: update\n"
    "id: 7\n"
    "data:first\n"
    "data:  second\n"
    "\n"
    "retry: 1500\r"
    "data\r"
    "\r"
    "event: ignored-without-data\n"
    "\n"
    "unknown: field\n"
    "data: x:y\r\n"
    "\r\n"
    "data: [DONE]\n"
    "\n";

TEST(SseParser, ParsesFieldsCommentsAndLineEndings) {
  const auto events = feed_in_pieces(kStream, {});
  ASSERT_EQ(events.size(), 5u) << describe(events);
  EXPECT_EQ(events[0].type, "message");
  EXPECT_EQ(events[0].data, "{\"a\":1}");
  EXPECT_EQ(events[0].id, "");
  EXPECT_EQ(events[1].type, "update");
  EXPECT_EQ(events[1].data, "first\n second");  // one space after ':' dropped, no more
  EXPECT_EQ(events[1].id, "7");
  EXPECT_EQ(events[2].data, "");  // "data" without colon: empty data line
  EXPECT_EQ(events[2].retry, milliseconds(1500));
  EXPECT_EQ(events[2].id, "7");  // last event id persists
  EXPECT_EQ(events[3].data, "x:y");
  EXPECT_TRUE(events[4].is_done());
  EXPECT_FALSE(events[3].is_done());
}

TEST(SseParser, SameEventsForEverySplitPosition) {
  const std::string expected = describe(feed_in_pieces(kStream, {}));
  for (std::size_t i = 0; i <= kStream.size(); ++i) {
    ASSERT_EQ(describe(feed_in_pieces(kStream, {i})), expected) << "split at " << i;
    for (std::size_t j = i; j <= kStream.size(); j += 7) {
      ASSERT_EQ(describe(feed_in_pieces(kStream, {i, j})), expected)
          << "splits at " << i << "," << j;
    }
  }
  std::vector<std::size_t> every_byte;
  for (std::size_t i = 1; i < kStream.size(); ++i) every_byte.push_back(i);
  EXPECT_EQ(describe(feed_in_pieces(kStream, every_byte)), expected);
}

TEST(SseParser, EventsAreReturnedAsSoonAsTheyComplete) {
  llmq::SseParser parser;
  EXPECT_TRUE(parser.feed("data: one").empty());
  EXPECT_EQ(parser.buffered_bytes(), 9u);
  EXPECT_TRUE(parser.feed("\n").empty());
  const auto events = parser.feed("\ndata: two\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "one");
  const auto rest = parser.finish();  // lenient: the unterminated event is delivered
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].data, "two");
  EXPECT_TRUE(parser.finish().empty());
}

TEST(SseParser, CrAtTheEndOfAPieceThenLf) {
  llmq::SseParser parser;
  EXPECT_TRUE(parser.feed("data: a\r").empty());
  EXPECT_TRUE(parser.feed("").empty());
  EXPECT_TRUE(parser.feed("\n").empty());  // the LF of CRLF, not a blank line
  const auto events = parser.feed("\r\n");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a");
}

// ---- URL split ------------------------------------------------------------------------

TEST(HttpUrl, SplitsSchemeHostPortTarget) {
  auto u = llmq::detail::parse_http_url(
      "https://My-Resource.openai.azure.com/openai/x?api-version=1#frag");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "my-resource.openai.azure.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/openai/x?api-version=1");
  EXPECT_EQ(u->host_header, "my-resource.openai.azure.com");
  EXPECT_FALSE(u->host_is_ip);
  EXPECT_EQ(u->origin(), "https://my-resource.openai.azure.com:443");

  u = llmq::detail::parse_http_url("HTTP://127.0.0.1:8080");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->target, "/");
  EXPECT_TRUE(u->host_is_ip);
  EXPECT_EQ(u->host_header, "127.0.0.1:8080");

  u = llmq::detail::parse_http_url("http://[::1]:9000?q=1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_TRUE(u->host_is_ip);
  EXPECT_EQ(u->target, "/?q=1");
  EXPECT_EQ(u->host_header, "[::1]:9000");
}

TEST(HttpUrl, RejectsBadUrls) {
  for (const char* bad :
       {"", "ftp://host/", "http://", "http:///path", "http://host:0/", "http://host:65536/",
        "http://host:/", "http://user:pw@host/", "http://ho st/", "http://[::1/", "host:80/path",
        "http://host:8o/", "https://h\r\nx/"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(llmq::detail::parse_http_url(bad));
  }
  EXPECT_EQ(llmq::detail::url_for_log("https://h/p?key=secret#x"), "https://h/p");
}

// ---- upstream requests (pure) ---------------------------------------------------------

llmq::Deployment azure_deployment() {
  llmq::Deployment d;
  d.unique_model_id = "gpt-4o-east";
  d.model_name_in_azure = "gpt-4o";
  d.deployment_name_in_azure = "gpt-4o-prod";
  d.endpoint = "https://res.openai.azure.com//";
  d.api_key = "AZ-KEY-123456";
  d.api_version = "2024-10-21";
  d.provider = llmq::Provider::azure;
  return d;
}

llmq::Deployment compatible_deployment(std::string base_url, std::string key) {
  llmq::Deployment d;
  d.unique_model_id = "llama";
  d.model_name_in_azure = "meta-llama/Llama-3.1-8B-Instruct";
  d.deployment_name_in_azure = d.model_name_in_azure;
  d.endpoint = std::move(base_url);
  d.api_key = std::move(key);
  d.provider = llmq::Provider::openai_compatible;
  return d;
}

TEST(UpstreamRequest, AzureClassicAndV1Urls) {
  const llmq::Deployment d = azure_deployment();
  using Op = llmq::UpstreamOperation;
  EXPECT_EQ(llmq::upstream_url(d, Op::chat_completions),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/"
            "completions?api-version=2024-10-21");
  EXPECT_EQ(llmq::upstream_url(d, Op::embeddings),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/"
            "embeddings?api-version=2024-10-21");
  llmq::ProviderOptions v1;
  v1.azure_url_style = llmq::AzureUrlStyle::v1;
  EXPECT_EQ(llmq::upstream_url(d, Op::chat_completions, v1),
            "https://res.openai.azure.com/openai/v1/chat/completions");
  llmq::Deployment with_openai = d;
  with_openai.endpoint = "https://res.openai.azure.com/openai/";
  with_openai.api_version.clear();
  EXPECT_EQ(llmq::upstream_url(with_openai, Op::embeddings),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/"
            "embeddings?api-version=2024-10-21");
  with_openai.deployment_name_in_azure = "my deployment";
  EXPECT_EQ(llmq::upstream_url(with_openai, Op::chat_completions, v1),
            "https://res.openai.azure.com/openai/v1/chat/completions");
  EXPECT_NE(llmq::upstream_url(with_openai, Op::chat_completions).find("/my%20deployment/"),
            std::string::npos);
}

TEST(UpstreamRequest, OpenAICompatibleUrlsDoNotDoubleV1) {
  using Op = llmq::UpstreamOperation;
  EXPECT_EQ(
      llmq::upstream_url(compatible_deployment("http://localhost:8000", ""), Op::chat_completions),
      "http://localhost:8000/v1/chat/completions");
  EXPECT_EQ(
      llmq::upstream_url(compatible_deployment("http://localhost:8000/v1/", ""), Op::embeddings),
      "http://localhost:8000/v1/embeddings");
  EXPECT_EQ(llmq::upstream_url(compatible_deployment("https://api.openai.com/v1", ""),
                               Op::chat_completions),
            "https://api.openai.com/v1/chat/completions");
}

TEST(UpstreamRequest, HeadersAndBodyPerProvider) {
  using Op = llmq::UpstreamOperation;
  const json body =
      json::parse(R"({"messages":[{"role":"user","content":"hi"}],"model":"caller"})");
  auto header = [](const llmq::HttpRequest& r,
                   const std::string& name) -> std::optional<std::string> {
    for (const auto& [k, v] : r.headers) {
      if (k == name) return v;
    }
    return std::nullopt;
  };

  const llmq::HttpRequest classic =
      llmq::build_upstream_request(azure_deployment(), Op::chat_completions, body);
  EXPECT_EQ(classic.method, "POST");
  EXPECT_EQ(header(classic, "api-key"), "AZ-KEY-123456");
  EXPECT_EQ(header(classic, "authorization"), std::nullopt);
  EXPECT_EQ(header(classic, "content-type"), "application/json");
  EXPECT_EQ(json::parse(classic.body), body);  // classic: sent as given

  llmq::ProviderOptions v1;
  v1.azure_url_style = llmq::AzureUrlStyle::v1;
  const llmq::HttpRequest entra = llmq::build_upstream_request(
      azure_deployment(), Op::chat_completions, body, v1, std::string("TOKEN-abc"));
  EXPECT_EQ(header(entra, "authorization"), "Bearer TOKEN-abc");
  EXPECT_EQ(header(entra, "api-key"), std::nullopt);
  EXPECT_EQ(json::parse(entra.body)["model"], "gpt-4o-prod");

  const llmq::HttpRequest compatible =
      llmq::build_upstream_request(compatible_deployment("http://h:1", "sk-OPENAI-1"),
                                   Op::embeddings, json::parse(R"({"input":"x"})"));
  EXPECT_EQ(header(compatible, "authorization"), "Bearer sk-OPENAI-1");
  EXPECT_EQ(json::parse(compatible.body)["model"], "meta-llama/Llama-3.1-8B-Instruct");
  const llmq::HttpRequest keyless = llmq::build_upstream_request(
      compatible_deployment("http://h:1", ""), Op::embeddings, json::parse(R"({"input":"x"})"));
  EXPECT_EQ(header(keyless, "authorization"), std::nullopt);
}

TEST(UpstreamRequest, StreamUsageIsRequestedUnlessTheCallerChose) {
  using Op = llmq::UpstreamOperation;
  const llmq::Deployment d = azure_deployment();
  const json streamed =
      llmq::upstream_body(d, Op::chat_completions, json::parse(R"({"stream":true})"));
  EXPECT_EQ(streamed["stream_options"]["include_usage"], true);
  const json chosen = llmq::upstream_body(
      d, Op::chat_completions,
      json::parse(R"({"stream":true,"stream_options":{"include_usage":false}})"));
  EXPECT_EQ(chosen["stream_options"]["include_usage"], false);
  llmq::ProviderOptions off;
  off.request_stream_usage = false;
  EXPECT_FALSE(llmq::upstream_body(d, Op::chat_completions, json::parse(R"({"stream":true})"), off)
                   .contains("stream_options"));
  EXPECT_FALSE(llmq::upstream_body(d, Op::chat_completions, json::parse(R"({"stream":false})"))
                   .contains("stream_options"));
}

// ---- chat stream assembly -------------------------------------------------------------

TEST(ChatStreamAssembler, MergesDeltasToolCallsAndUsage) {
  llmq::ChatStreamAssembler a;
  a.add(json::parse(R"({"id":"","object":"","created":0,"model":"","choices":[],
                       "prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]})"));
  a.add(json::parse(
      R"({"id":"c1","created":5,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})"));
  a.add(json::parse(
      R"({"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}},{"index":1,"delta":{"content":"B"}}]})"));
  a.add(json::parse(R"({"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]})"));
  a.add(json::parse(
      R"({"id":"c1","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]}}]})"));
  a.add(json::parse(
      R"({"id":"c1","choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]})"));
  EXPECT_FALSE(a.complete());
  a.add(json::parse(
      R"({"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"},{"index":1,"delta":{},"finish_reason":"tool_calls"}]})"));
  a.add(json::parse(
      R"({"id":"c1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})"));
  a.add(json::parse("[]"));  // ignored
  EXPECT_TRUE(a.complete());
  const json r = a.result();
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["id"], "c1");
  EXPECT_EQ(r["model"], "gpt-4o");
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][1]["message"]["content"], "B");
  EXPECT_EQ(r["choices"][1]["message"]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
  EXPECT_EQ(r["choices"][1]["message"]["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(r["usage"]["completion_tokens"], 7);
  EXPECT_EQ(r["prompt_filter_results"].size(), 1u);
}

TEST(ChatStreamAssembler, EmptyStreamIsIncomplete) {
  llmq::ChatStreamAssembler a;
  EXPECT_FALSE(a.complete());
  a.add(json::parse(R"({"choices":[]})"));
  EXPECT_FALSE(a.complete());
  EXPECT_TRUE(a.result()["choices"].empty());
  EXPECT_TRUE(a.usage().is_null());
}

}  // namespace
