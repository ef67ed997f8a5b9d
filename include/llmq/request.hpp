#pragma once
/// @file request.hpp
/// What a caller asks for (Request, ModelPreferences), what it gets back (Response),
/// and which deployments the balancer granted (ChosenDeployments).

#include <llmq/config.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <tuple>

namespace llmq {

/// Which deployments a request needs. Without `specific_*` or `*_model_name`, any
/// deployment of the needed kind may serve it.
struct ModelPreferences {
  /// Pin the LLM call to this `unique_model_id`.
  std::optional<std::string> specific_llm_model;
  /// Pin the embedding call to this `unique_model_id`.
  std::optional<std::string> specific_embedding_model;
  /// The request needs an LLM (chat/completion) deployment.
  bool require_llm_model = true;
  /// The request needs an embeddings deployment.
  bool require_embedding_model = false;
  /// Upstream LLM calls one request makes; charged to the chosen LLM deployment.
  int num_llm_calls_per_req = 1;
  /// Upstream embedding calls one request makes; charged to the chosen embeddings deployment.
  int num_emb_calls_per_req = 1;
  /// Restrict the LLM choice to deployments of this model (`model_name_in_azure`),
  /// balanced among them.
  std::optional<std::string> llm_model_name;
  /// Restrict the embeddings choice to deployments of this model (`model_name_in_azure`).
  std::optional<std::string> embedding_model_name;
};

/// One queued request, as the executor sees it.
struct Request {
  std::string id;        ///< unique within the process
  std::string req_type;  ///< selects the RequestExecutor
  std::string user_id;
  nlohmann::json body;  ///< the caller's request_data
  ModelPreferences preferences;
};

/// What `execute_request` returns: the executor's body and HTTP-like status, plus what
/// the queue knows about the answer. Binds as a pair, as the seed's tuple did:
/// `auto [body, status] = co_await queue.execute_request(...)`.
struct Response {
  Response() = default;
  /// `Response{body, 200}`, as executors write it.
  explicit Response(nlohmann::json b, int s = 200) : body(std::move(b)), status(s) {}

  nlohmann::json body;
  int status = 200;
  /// When to try again, for a 429 or 503: the upstream's Retry-After (retry-after-ms,
  /// x-ms-retry-after-ms or retry-after) of the attempt that produced this answer.
  std::optional<std::chrono::milliseconds> retry_after;
  /// The request's id (Request::id), set by the queue on every answer it delivers.
  std::string request_id;

  /// Structured bindings see `body` and `status` only.
  template <std::size_t I>
  [[nodiscard]] auto& get() & noexcept {
    if constexpr (I == 0)
      return body;
    else
      return status;
  }
  template <std::size_t I>
  [[nodiscard]] const auto& get() const& noexcept {
    if constexpr (I == 0)
      return body;
    else
      return status;
  }
  template <std::size_t I>
  [[nodiscard]] auto&& get() && noexcept {
    if constexpr (I == 0)
      return std::move(body);
    else
      return std::move(status);
  }
};

/// The deployments granted to one request. A pointer is null when the request did not
/// need that kind. Pointees are owned by the LLMQueue and live at least until the
/// executor's call returns (a reconfigure meanwhile does not change them).
struct ChosenDeployments {
  const Deployment* llm = nullptr;
  const Deployment* embedding = nullptr;
};

/// True when a Response body holds an upstream answer's bytes as received (a JSON binary
/// value; see ProviderOptions::raw_success_body in <llmq/providers.hpp>).
[[nodiscard]] bool is_raw_body(const nlohmann::json& body) noexcept;

/// The text of a Response body: the upstream's bytes for a raw body, else the JSON
/// serialised (compact; invalid UTF-8 replaced).
[[nodiscard]] std::string response_body_text(const nlohmann::json& body);

/// Builds the JSON error body llmq uses for its own answers:
/// `{"error":{"message":..., "type":..., "code":...}}`.
[[nodiscard]] nlohmann::json make_error_body(std::string_view message, std::string_view type,
                                             std::string_view code);

}  // namespace llmq

/// `auto [body, status] = response;`
template <>
struct std::tuple_size<llmq::Response> : std::integral_constant<std::size_t, 2> {};
template <>
struct std::tuple_element<0, llmq::Response> {
  using type = nlohmann::json;
};
template <>
struct std::tuple_element<1, llmq::Response> {
  using type = int;
};

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/request-inl.hpp>
#endif
