#pragma once
/// @file token_estimator.hpp
/// Client-side token estimates, erring high as Azure's own estimate does.
///
/// Text counts ceil(bytes / 4) tokens (UTF-8 bytes, so non-English text, which needs
/// more tokens per character, is not under-counted). A chat body costs, per message,
/// 3 tokens + its role, content (string or the `text` of each part; other parts by their
/// JSON size) and name (+1), plus 3 for the reply primer, plus the JSON size of `tools`
/// / `functions`, plus the completion budget `max_completion_tokens` or `max_tokens`
/// (else `default_max_tokens`) times `n`. A legacy completion body counts its `prompt`.
/// An embeddings body counts its `input`: strings as text, token arrays by length.
///
/// Client-controlled bodies are safe to estimate: the arithmetic saturates at
/// kMaxTokenEstimate (whatever `n`, `max_tokens`, `best_of` or the sizes), and JSON sizes
/// are computed by an iterative walk (no recursion, no serialisation) however deep the
/// body nests.

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <string_view>

namespace llmq {

/// Azure's documented default completion budget when a chat body sets none.
inline constexpr std::int64_t kAzureDefaultMaxTokens = 4096;

/// Every estimate is at most this (2^40 tokens, far above any deployment's tokens per
/// minute), leaving room to add and multiply estimates in int64 without overflow.
inline constexpr std::int64_t kMaxTokenEstimate = std::int64_t{1} << 40;

/// ceil(bytes / 4).
[[nodiscard]] std::int64_t estimate_text_tokens(std::string_view text) noexcept;

/// Estimated prompt + completion tokens of one chat/completion call with this body.
[[nodiscard]] std::int64_t estimate_chat_tokens(
    const nlohmann::json& body, std::int64_t default_max_tokens = kAzureDefaultMaxTokens);

/// Estimated tokens of one embeddings call with this body. A body without `input`
/// (e.g. a RAG request whose embedding text is derived by the executor) is estimated
/// from its chat messages' text, or, failing that, from its whole JSON size.
[[nodiscard]] std::int64_t estimate_embedding_tokens(const nlohmann::json& body);

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/token_estimator-inl.hpp>
#endif
