// Fuzz target `token_estimate`: llmq::estimate_chat_tokens / estimate_embedding_tokens
// over any JSON (the bodies clients send). Estimates are never negative.

#include "fuzz_support.hpp"

#include <llmq/token_estimator.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto body = llmq::fuzz::parse_json(llmq::fuzz::as_text(data, size));
  if (!body) return 0;
  LLMQ_FUZZ_CHECK(llmq::estimate_chat_tokens(*body) >= 0);
  LLMQ_FUZZ_CHECK(llmq::estimate_chat_tokens(*body, 1) >= 0);
  LLMQ_FUZZ_CHECK(llmq::estimate_embedding_tokens(*body) >= 0);
  return 0;
}
