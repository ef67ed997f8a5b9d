#pragma once
/// @file request_validation.hpp
/// Checks of what a client sends, before anything is queued: a JSON parse that refuses
/// deep nesting while it parses, an iterative depth check of an existing tree, the
/// shapes of chat and embeddings bodies, and user ids.
///
/// Nothing here recurses: a body nested 200 000 levels deep costs one pass over its bytes
/// and is refused at the first container past the limit.

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmq {

/// The nesting depth accepted by default: `{}` and `[]` are depth 1, `{"a":[1]}` depth 2.
/// Real chat bodies (tools with JSON schemas included) stay far below it.
inline constexpr std::size_t kDefaultMaxJsonDepth = 64;

/// Longest user id accepted by validate_user_id, in bytes.
inline constexpr std::size_t kMaxUserIdBytes = 256;

/// Longest `model` accepted by validate_chat_body / validate_embeddings_body, in bytes.
inline constexpr std::size_t kMaxModelNameBytes = 256;

/// Most items of an embeddings `input` array (as Azure and OpenAI allow).
inline constexpr std::size_t kMaxEmbeddingInputs = 2048;

/// What is wrong with a request, for a 400 that names the field.
struct RequestProblem {
  /// The offending field (`messages`, `max_tokens`, ...); empty when the problem is the
  /// body as a whole (not JSON, not an object).
  std::string param;
  /// What is wrong, for the client (never echoes the offending value).
  std::string message;
  /// A stable machine-readable code: `invalid_json`, `json_too_deep`, `invalid_body`,
  /// `missing_field`, `invalid_type`, `invalid_value`, `invalid_user_id`.
  std::string code;
};

/// Parses `text` as one JSON value into `out`, refusing nesting deeper than `max_depth`
/// while parsing (the parse stops at the first container past the limit; no tree of that
/// depth is ever built). Returns the problem (code `invalid_json` or `json_too_deep`;
/// `param` names the top-level member under which the limit was passed, if any and if
/// its name is a plain field name: 1..64 letters, digits, '_', '-', '.'), or nullopt on
/// success. `out` is unspecified after a failure.
///
/// Throws only std::bad_alloc.
[[nodiscard]] std::optional<RequestProblem> parse_json_bounded(std::string_view text,
                                                               std::size_t max_depth,
                                                               nlohmann::json& out);

/// True when no container in `value` is nested deeper than `max_depth` (a scalar has
/// depth 0). Iterative, with memory proportional to the depth it looks at (at most
/// `max_depth + 1` levels); it stops at the first container past the limit.
[[nodiscard]] bool json_within_depth(const nlohmann::json& value, std::size_t max_depth);

/// Checks the fields of a chat completions body that decide what it costs and where it
/// goes: an object whose `messages` is a non-empty array of objects each with a string
/// `role`; `max_tokens` / `max_completion_tokens` integers in 1..2^31-1; `n` and
/// `best_of` integers in 1..128; `stream` a boolean; `model` a string of at most
/// kMaxModelNameBytes (when present: an Azure path names the deployment instead). `null` counts as
/// absent for the optional fields, as OpenAI treats it. Returns the first problem, or nullopt.
[[nodiscard]] std::optional<RequestProblem> validate_chat_body(const nlohmann::json& body);

/// Checks an embeddings body: an object whose `input` is a non-empty string, a non-empty
/// array (at most kMaxEmbeddingInputs items) of strings, a token array (non-negative
/// integers) or an array of non-empty token arrays; `model` as for chat;
/// `dimensions` an integer in 1..2^31-1 when present. Returns the first problem, or
/// nullopt.
[[nodiscard]] std::optional<RequestProblem> validate_embeddings_body(const nlohmann::json& body);

/// Checks a user id: 1..kMaxUserIdBytes bytes of UTF-8 without control characters
/// (C0, DEL, C1). Such an id is safe as a limiter key, a Redis key and a telemetry field.
/// Returns the problem (code `invalid_user_id`, `param` empty: the caller knows where the
/// id came from), or nullopt.
[[nodiscard]] std::optional<RequestProblem> validate_user_id(std::string_view user_id);

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/request_validation-inl.hpp>
#endif
