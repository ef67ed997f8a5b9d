#pragma once
/// @file providers.hpp
/// Ready-made request executors for Azure OpenAI and OpenAI-compatible servers, the
/// upstream calls they are made of (for composing your own, e.g. RAG), and their
/// registration on an LLMQueue. Part of `llmq::providers` (link `llmq::providers`).
///
/// Every executor makes exactly ONE upstream attempt per process_request: the queue owns
/// retries and fallback. It reports what the upstream answered in the TelemetryData
/// (`llm_outcome` / `embedding_outcome`, token usage), so the queue can back the
/// deployment off (Retry-After honoured) and re-dispatch elsewhere.
///
/// Responses (what `execute_request` returns):
/// - the upstream's status and JSON body, unchanged, for 2xx and for JSON error bodies;
/// - 502 `{"error":{"message":"upstream returned malformed JSON: ...","type":
///   "upstream_error","code":"bad_upstream_response"}}` for a 2xx body that is not JSON
///   (or a stream that breaks off, or JSON nested deeper than `max_json_depth`); a
///   non-2xx non-JSON body keeps the upstream status with the same envelope;
/// - for a transport failure (HttpError) the error's status (503 connect/TLS failure,
///   504 timeout, 502 broken response) with `type` "upstream_error" and `code` the
///   http_errc name (e.g. "connect_failed"); the outcome has `connection_error` set. The
///   message names the deployment and the failure, never the host, port or path (those
///   are in the warning logged).
///
/// Cancellation: terminal cancellation of process_request (the queue's execution timeout
/// or a caller that gave up) cancels the HTTP request; the awaitable then throws
/// `boost::system::system_error(operation_aborted)` and reports no outcome.
///
/// Composing a RAG executor from the calls (examples/rag_pipeline.cpp is a complete one,
/// run as a test against llmq-mock-azure):
/// @code
/// class RagExecutor : public llmq::RequestExecutor {
///  public:
///   explicit RagExecutor(std::shared_ptr<llmq::HttpClient> c) : client_(std::move(c)) {}
///   boost::asio::awaitable<llmq::Response> process_request(
///       const llmq::Request& req, const llmq::ChosenDeployments& chosen,
///       llmq::TelemetryData& telemetry) override {
///     llmq::Response emb = co_await llmq::call_embeddings(
///         *client_, *chosen.embedding, embedding_body(req.body), telemetry);
///     if (emb.status != 200) co_return emb;
///     co_return co_await llmq::call_chat(*client_, *chosen.llm,
///                                        chat_body(req.body, emb.body), telemetry);
///   }
///  private:
///   std::shared_ptr<llmq::HttpClient> client_;
/// };
/// @endcode
/// where embedding_body and chat_body are the application's own (the example's pick the
/// passage closest to the question).

#include <llmq/config.hpp>
#include <llmq/executor.hpp>
#include <llmq/http_client.hpp>
#include <llmq/request.hpp>
#include <llmq/request_validation.hpp>
#include <llmq/telemetry.hpp>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llmq {

class LLMQueue;

/// How Azure deployments are addressed.
enum class AzureUrlStyle {
  /// `{endpoint}/openai/deployments/{deployment_name_in_azure}/{operation}?api-version=
  /// {api_version}`; the body is sent as given.
  classic,
  /// `{endpoint}/openai/v1/{operation}` with `"model": deployment_name_in_azure` in the body.
  v1,
};

/// The upstream operation of a call.
enum class UpstreamOperation {
  chat_completions,  ///< `/chat/completions`
  embeddings,        ///< `/embeddings`
};

/// Source of Entra ID access tokens for Azure: returns the bare token (no "Bearer ").
/// Called once per upstream call, on the executor's strand; cache tokens inside.
using TokenProvider = std::function<boost::asio::awaitable<std::string>()>;

/// How the executors talk to upstreams, each with its default.
struct ProviderOptions {
  /// URL style of Azure deployments. Default classic.
  AzureUrlStyle azure_url_style = AzureUrlStyle::classic;
  /// `api-version` of classic Azure URLs for deployments whose config has none.
  std::string default_api_version = "2024-10-21";
  /// When set, Azure calls send `Authorization: Bearer <token>` from it instead of the
  /// `api-key` header. Empty: the deployment's api_key in `api-key`.
  TokenProvider azure_token_provider;
  /// For a streamed chat body (`"stream": true`) without `stream_options`, add
  /// `"stream_options": {"include_usage": true}` so the assembled answer and telemetry
  /// carry token usage. Azure accepts it from api-version 2024-09-01-preview / 2024-10-21
  /// on: turn this off for deployments on older api versions. Default on.
  bool request_stream_usage = true;
  /// `User-Agent` of upstream calls; empty sends none.
  std::string user_agent = "llmq/0.1";
  /// More headers on every upstream call (values never logged).
  std::vector<std::pair<std::string, std::string>> extra_headers;
  /// Hand a successful (2xx) non-streamed JSON object answer back unparsed: the Response
  /// body is then a JSON binary value (is_raw_body) holding the upstream's bytes as
  /// received. The bytes are still checked to be one well-formed JSON object (else the
  /// usual 502) and their `usage` still goes into the telemetry; only building the JSON
  /// tree (and serialising it again) is saved. For callers that forward the body as it
  /// is, such as llmq-gateway: read it with response_body_text(). Other answers (errors,
  /// assembled streams) stay parsed JSON. Default off.
  bool raw_success_body = false;
  /// Deepest JSON nesting accepted in an upstream answer or stream event (checked while
  /// parsing, never by recursion); a deeper one is a 502 `bad_upstream_response`, and the
  /// deployment counts as failing. Default kDefaultMaxJsonDepth (64).
  std::size_t max_json_depth = kDefaultMaxJsonDepth;
};

// is_raw_body() and response_body_text() are in <llmq/request.hpp>.

/// The URL of a call to `deployment`: Azure per `options.azure_url_style`, OpenAI-compatible
/// `{base_url}/v1/{operation}` (no second `/v1` when base_url ends with it). Trailing
/// slashes of endpoints are ignored, and so is a trailing `/openai` of an Azure endpoint.
[[nodiscard]] std::string upstream_url(const Deployment& deployment, UpstreamOperation op,
                                       const ProviderOptions& options = {});

/// The body sent upstream: `body` with `"model"` set for Azure v1
/// (deployment_name_in_azure) and OpenAI-compatible (model_name_in_azure) deployments,
/// and `stream_options` per `request_stream_usage` for streamed chat.
[[nodiscard]] nlohmann::json upstream_body(const Deployment& deployment, UpstreamOperation op,
                                           nlohmann::json body,
                                           const ProviderOptions& options = {});

/// The complete HTTP request of a call (pure): POST, upstream_url, upstream_body and
/// headers `content-type`, `accept`, auth (`api-key`, or `authorization: Bearer` with
/// `azure_token` for Azure or with the api_key for OpenAI-compatible deployments; none
/// for an empty key), `user-agent` and the extra headers.
[[nodiscard]] HttpRequest build_upstream_request(
    const Deployment& deployment, UpstreamOperation op, const nlohmann::json& body,
    const ProviderOptions& options = {}, const std::optional<std::string>& azure_token = {});

/// Builds one `chat.completion` body from the `chat.completion.chunk`s of a streamed
/// answer: per choice (by `index`) the role, `content` and `refusal` concatenated from
/// the deltas, tool calls merged by their `index` (arguments concatenated),
/// finish_reason, logprobs and content filter results; `usage` from the chunk that
/// carries it (`stream_options.include_usage`); Azure's `prompt_filter_results` kept.
/// Chunks with empty `choices` are fine.
class ChatStreamAssembler {
 public:
  /// Merges one chunk (the JSON of one `data:` event). Non-object chunks are ignored.
  void add(const nlohmann::json& chunk);
  /// True when at least one choice arrived and every choice has a finish_reason.
  [[nodiscard]] bool complete() const;
  /// The `usage` object, or null when no chunk carried one.
  [[nodiscard]] const nlohmann::json& usage() const noexcept { return usage_; }
  /// The assembled body (`"object": "chat.completion"`).
  [[nodiscard]] nlohmann::json result() const;

 private:
  nlohmann::json meta_ = nlohmann::json::object();
  nlohmann::json prompt_filter_results_ = nlohmann::json::array();
  std::map<std::int64_t, nlohmann::json> choices_;
  std::map<std::pair<std::int64_t, std::int64_t>, nlohmann::json> tool_calls_;
  nlohmann::json usage_;
};

/// Makes one chat completion call to `deployment` (Azure or OpenAI-compatible by its
/// provider). Records `telemetry.llm_outcome` and adds the reported usage to
/// `telemetry.prompt_tokens` / `completion_tokens`. A body with `"stream": true` is read
/// as a stream and assembled (ChatStreamAssembler) into a non-streamed `chat.completion`
/// body; the caller gets it when the stream has ended (a stream that ends without
/// `[DONE]` and without a finish_reason for every choice is a 502).
///
/// Returns the Response described in this file's comment; throws only on cancellation
/// (`operation_aborted`) or when the token provider throws. `client`, `deployment` and
/// `telemetry` must outlive the awaitable.
[[nodiscard]] boost::asio::awaitable<Response> call_chat(HttpClient& client,
                                                         const Deployment& deployment,
                                                         nlohmann::json body,
                                                         TelemetryData& telemetry,
                                                         ProviderOptions options);

/// call_chat with the default ProviderOptions. (An overload, not a default argument:
/// g++ 12 copies a defaulted class-type argument of a coroutine bytewise, which frees
/// its strings twice.)
[[nodiscard]] inline boost::asio::awaitable<Response> call_chat(HttpClient& client,
                                                                const Deployment& deployment,
                                                                nlohmann::json body,
                                                                TelemetryData& telemetry) {
  return call_chat(client, deployment, std::move(body), telemetry, ProviderOptions{});
}

/// The streamed form of call_chat: sends `body` with `"stream": true` (and, per
/// ProviderOptions::request_stream_usage, `stream_options.include_usage`) and writes each
/// `chat.completion.chunk` to `out` as the upstream sends it: the event's `data:` text
/// unchanged, `[DONE]` not included (the end of the stream says it). A usage-only chunk
/// that llmq asked for is dropped unless `body` asked for it itself; its usage goes into
/// the telemetry either way. Azure's content-filter fields pass through untouched.
///
/// Returns 200 `{"object":"chat.completion.stream","usage":...}` when the stream
/// completed (`[DONE]`, or a finish_reason for every choice); an upstream that answered
/// with an error before any event gives that answer, as call_chat does (nothing written,
/// so the queue may retry elsewhere); a stream that breaks off, sends a malformed or
/// too-deep event or an error event, gives a 502 with the outcome recorded (the reader
/// has seen the chunks before it). A write that throws (the reader is gone) aborts the
/// upstream call, whose connection is then closed, and propagates.
[[nodiscard]] boost::asio::awaitable<Response> call_chat_streaming(
    HttpClient& client, const Deployment& deployment, nlohmann::json body, TelemetryData& telemetry,
    ProviderOptions options, StreamWriter& out);

/// Makes one embeddings call to `deployment`. Records `telemetry.embedding_outcome` and
/// adds `usage.prompt_tokens` (else `usage.total_tokens`) to `telemetry.embedding_tokens`.
/// Otherwise as call_chat.
[[nodiscard]] boost::asio::awaitable<Response> call_embeddings(HttpClient& client,
                                                               const Deployment& deployment,
                                                               nlohmann::json body,
                                                               TelemetryData& telemetry,
                                                               ProviderOptions options);

/// call_embeddings with the default ProviderOptions (an overload: see call_chat).
[[nodiscard]] inline boost::asio::awaitable<Response> call_embeddings(HttpClient& client,
                                                                      const Deployment& deployment,
                                                                      nlohmann::json body,
                                                                      TelemetryData& telemetry) {
  return call_embeddings(client, deployment, std::move(body), telemetry, ProviderOptions{});
}

/// The shared implementation of the executors below: sends the request body to the
/// deployment chosen for `op` (`chosen.llm` for chat, `chosen.embedding` for embeddings)
/// with call_chat / call_embeddings. When `only` is set, a deployment of another provider
/// gets a 500 Response (a configuration error) without an upstream call. A request
/// without the needed deployment gets 400; a body that is not a JSON object gets 400.
///
/// Thread safety: process_request may run concurrently (the client is thread-safe).
class UpstreamExecutor : public RequestExecutor {
 public:
  /// Throws ConfigError when `client` is null.
  UpstreamExecutor(std::shared_ptr<HttpClient> client, UpstreamOperation op,
                   std::optional<Provider> only, ProviderOptions options);

  boost::asio::awaitable<Response> process_request(const Request& req,
                                                   const ChosenDeployments& chosen,
                                                   TelemetryData& telemetry) override;

  /// Chat: call_chat_streaming on the chosen LLM deployment. Embeddings: answered whole.
  boost::asio::awaitable<Response> process_streaming_request(const Request& req,
                                                             const ChosenDeployments& chosen,
                                                             TelemetryData& telemetry,
                                                             StreamWriter& out) override;

  [[nodiscard]] const ProviderOptions& options() const noexcept { return options_; }

 private:
  std::shared_ptr<HttpClient> client_;
  UpstreamOperation op_;
  std::optional<Provider> only_;
  ProviderOptions options_;
};

/// Chat completions on the chosen LLM deployment, Azure or OpenAI-compatible alike (the
/// URL and auth follow the deployment's provider). Registered as "chat_completion" by
/// register_default_executors.
class ChatCompletionExecutor final : public UpstreamExecutor {
 public:
  explicit ChatCompletionExecutor(std::shared_ptr<HttpClient> client, ProviderOptions options = {})
      : UpstreamExecutor(std::move(client), UpstreamOperation::chat_completions, std::nullopt,
                         std::move(options)) {}
};

/// Embeddings on the chosen embeddings deployment, any provider. Registered as
/// "embeddings" by register_default_executors.
class EmbeddingsExecutor final : public UpstreamExecutor {
 public:
  explicit EmbeddingsExecutor(std::shared_ptr<HttpClient> client, ProviderOptions options = {})
      : UpstreamExecutor(std::move(client), UpstreamOperation::embeddings, std::nullopt,
                         std::move(options)) {}
};

/// Chat completions on Azure deployments only (classic or v1 URLs, api-key or Entra ID).
class AzureChatExecutor final : public UpstreamExecutor {
 public:
  explicit AzureChatExecutor(std::shared_ptr<HttpClient> client, ProviderOptions options = {})
      : UpstreamExecutor(std::move(client), UpstreamOperation::chat_completions, Provider::azure,
                         std::move(options)) {}
};

/// Embeddings on Azure deployments only.
class AzureEmbeddingsExecutor final : public UpstreamExecutor {
 public:
  explicit AzureEmbeddingsExecutor(std::shared_ptr<HttpClient> client, ProviderOptions options = {})
      : UpstreamExecutor(std::move(client), UpstreamOperation::embeddings, Provider::azure,
                         std::move(options)) {}
};

/// Chat completions (or embeddings) on OpenAI-compatible deployments only (`custom_models`:
/// `{base_url}/v1/...`, `"model"` in the body, `Authorization: Bearer <api_key>` when the
/// key is not empty).
class OpenAICompatibleExecutor final : public UpstreamExecutor {
 public:
  explicit OpenAICompatibleExecutor(std::shared_ptr<HttpClient> client,
                                    UpstreamOperation op = UpstreamOperation::chat_completions,
                                    ProviderOptions options = {})
      : UpstreamExecutor(std::move(client), op, Provider::openai_compatible, std::move(options)) {}
};

/// The executors of register_default_executors, for LLMQueue's constructor:
/// "chat_completion" -> ChatCompletionExecutor, "embeddings" -> EmbeddingsExecutor.
[[nodiscard]] std::map<std::string, std::shared_ptr<RequestExecutor>> default_executors(
    std::shared_ptr<HttpClient> client, ProviderOptions options = {});

/// Registers "chat_completion" (ChatCompletionExecutor, uses chosen.llm) and "embeddings"
/// (EmbeddingsExecutor, uses chosen.embedding) on `queue`, replacing executors of those
/// names. Throws ConfigError when `client` is null.
void register_default_executors(LLMQueue& queue, std::shared_ptr<HttpClient> client,
                                ProviderOptions options = {});

}  // namespace llmq
