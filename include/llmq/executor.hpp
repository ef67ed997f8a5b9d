#pragma once
/// @file executor.hpp
/// The user-supplied code that performs a request once the queue grants deployments.

#include <llmq/request.hpp>
#include <llmq/telemetry.hpp>

#include <boost/asio/awaitable.hpp>

namespace llmq {

/// Runs requests of one `req_type`. LLMQueue calls `process_request` on its strand once
/// per dispatched request, possibly many times concurrently.
///
/// - `req` and `chosen` stay valid until the returned awaitable completes.
/// - Fill `telemetry.prompt_tokens` / `completion_tokens` / `embedding_tokens` with the
///   usage the upstream reported (it reconciles the balancer's estimate), and
///   `telemetry.llm_outcome` / `embedding_outcome` with what each upstream answered:
///   a 429 or 5xx puts only that deployment in backoff, for its Retry-After if given.
///   Without a reported outcome, the Response status is attributed to the single chosen
///   deployment (none when two were chosen).
/// - Exceptions become a 500 Response naming the error; the queue keeps serving.
/// - Cancellation: the coroutine receives terminal cancellation when its caller gives up
///   or the queue's execution_timeout passes; asio operations then complete with
///   `operation_aborted`. An executor that ignores cancellation still holds its slot.
class RequestExecutor {
 public:
  virtual ~RequestExecutor() = default;

  virtual boost::asio::awaitable<Response> process_request(const Request& req,
                                                           const ChosenDeployments& chosen,
                                                           TelemetryData& telemetry) = 0;
};

}  // namespace llmq
