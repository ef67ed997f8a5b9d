#pragma once
/// @file rate_limit_headers.hpp
/// What an upstream's response says about rate limits and retries: Retry-After in its
/// three spellings, `x-ratelimit-*` headers, and whether a failure may be retried.
/// Pure functions (time passed in); part of `llmq::providers`.

#include <llmq/http_client.hpp>
#include <llmq/telemetry.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace llmq {

/// Retry-After values above this are ignored as absurd.
inline constexpr std::chrono::milliseconds kMaxRetryAfter{std::chrono::hours(1)};

/// Parses a Go-style duration as OpenAI sends in `x-ratelimit-reset-*`: a sequence of
/// decimal numbers with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns` ("6m0s", "1s",
/// "12ms", "23h47m36.648s", "0.5s"); a bare non-negative number counts as seconds.
/// Rounded up to whole milliseconds. Empty, negative or malformed text: nullopt.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Parses an HTTP-date in any of the three RFC 9110 forms: IMF-fixdate
/// ("Sun, 06 Nov 1994 08:49:37 GMT"), RFC 850 ("Sunday, 06-Nov-94 08:49:37 GMT") and
/// asctime ("Sun Nov  6 08:49:37 1994"). Malformed text, and a date system_clock cannot
/// hold (with nanosecond ticks: before 1678 or after 2262), give nullopt.
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> parse_http_date(
    std::string_view text);

/// The delay the upstream asks for, from the first usable header of, in this order:
/// `retry-after-ms` (milliseconds), `x-ms-retry-after-ms` (milliseconds), `retry-after`
/// (seconds, or an HTTP-date taken relative to `now`; a date in the past gives 0).
/// Decimal values are allowed and rounded up to whole milliseconds. A header that is
/// negative, non-numeric or above kMaxRetryAfter is ignored (the next one is tried).
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_retry_after(
    const HttpResponse& response,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

/// A non-negative integer count (`x-ratelimit-remaining-*`); anything else: nullopt.
[[nodiscard]] std::optional<std::int64_t> parse_rate_limit_count(std::string_view text);

/// True when an error body says `insufficient_quota` (OpenAI's billing 429) in
/// `error.code` or `error.type` (or a top-level `code` / `type`).
[[nodiscard]] bool is_insufficient_quota(const nlohmann::json& body) noexcept;

/// False for failures that another attempt cannot fix: 400, 401, 403, 404, and any
/// `insufficient_quota` error. True otherwise (whether the status is worth a retry at
/// all is the queue's decision).
[[nodiscard]] bool is_retryable_failure(int status, const nlohmann::json& body) noexcept;

/// The UpstreamOutcome of a response: status, retry_after, remaining_requests/tokens
/// (`x-ratelimit-remaining-requests` / `-tokens`), reset_requests/tokens
/// (`x-ratelimit-reset-requests` / `-tokens`) and retryable. The body is parsed
/// leniently (a non-JSON body has no error code).
[[nodiscard]] UpstreamOutcome outcome_from_response(const HttpResponse& response,
                                                    std::chrono::system_clock::time_point now);

/// The same, with the body already parsed (`body` may be `discarded` or any JSON).
[[nodiscard]] UpstreamOutcome outcome_from_response(const HttpResponse& response,
                                                    const nlohmann::json& body,
                                                    std::chrono::system_clock::time_point now);

/// The UpstreamOutcome of a transport failure: `status` = error.http_status() (503 for
/// connect/TLS failures, 504 for timeouts, 502 for broken responses),
/// `connection_error` set unless a complete response head arrived (bad_response,
/// response_too_large), retryable except for bad_url / bad_request.
[[nodiscard]] UpstreamOutcome outcome_from_error(const HttpError& error);

}  // namespace llmq
