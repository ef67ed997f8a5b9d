#pragma once
/// @file executor.hpp
/// The user-supplied code that performs a request once the queue grants deployments.

#include <llmq/request.hpp>
#include <llmq/stream.hpp>
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

  /// The streamed form, for LLMQueue::execute_streaming_request: writes the answer's
  /// chunks to `out` as they arrive and returns how the stream ended (status 200 when it
  /// completed; an error Response when it was cut short). Before the first write the
  /// request may still be retried elsewhere like any other (return the upstream's 429/5xx
  /// with its outcome); after it, never: report a mid-stream failure in the Response and
  /// the outcome. A write throws `operation_aborted` once the reader is gone: let it
  /// propagate (or stop), and release the upstream call. Fill the telemetry's token usage
  /// from the upstream's final usage, as process_request does.
  ///
  /// Default: process_request, its answer handed over whole (the reader sees a stream
  /// that is not streaming(): ResponseStream::response() holds the Response).
  virtual boost::asio::awaitable<Response> process_streaming_request(
      const Request& req, const ChosenDeployments& chosen, TelemetryData& telemetry,
      StreamWriter& out) {
    (void)out;
    co_return co_await process_request(req, chosen, telemetry);
  }
};

}  // namespace llmq
