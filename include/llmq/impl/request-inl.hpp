#pragma once
/// @file request-inl.hpp
/// Compiled once into llmq::llmq by src/request.cpp, or included by <llmq/request.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/request.hpp>

namespace llmq {

LLMQ_INLINE bool is_raw_body(const nlohmann::json& body) noexcept { return body.is_binary(); }

LLMQ_INLINE std::string response_body_text(const nlohmann::json& body) {
  if (body.is_binary()) {
    const nlohmann::json::binary_t& bytes = body.get_binary();
    return std::string(bytes.begin(), bytes.end());
  }
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

LLMQ_INLINE nlohmann::json make_error_body(std::string_view message, std::string_view type,
                                           std::string_view code) {
  nlohmann::json inner = nlohmann::json::object();
  inner["message"] = message;
  inner["type"] = type;
  inner["code"] = code;
  nlohmann::json body = nlohmann::json::object();
  body["error"] = std::move(inner);
  return body;
}

}  // namespace llmq
