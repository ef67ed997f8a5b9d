#include <llmq/token_estimator.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace {
using llmq::estimate_chat_tokens;
using llmq::estimate_embedding_tokens;
using llmq::estimate_text_tokens;
using nlohmann::json;

TEST(TokenEstimator, TextRoundsUp) {
  EXPECT_EQ(estimate_text_tokens(""), 0);
  EXPECT_EQ(estimate_text_tokens("a"), 1);
  EXPECT_EQ(estimate_text_tokens("abcd"), 1);
  EXPECT_EQ(estimate_text_tokens("abcde"), 2);
  EXPECT_EQ(estimate_text_tokens("\xe0\xa4\xa8\xe0\xa4\xae"), 2);  // 6 UTF-8 bytes
}

TEST(TokenEstimator, ChatCountsMessagesAndMaxTokens) {
  const json body = json::parse(R"({"messages":[{"role":"user","content":"Hello, world!"}],
                                    "max_tokens":100})");
  // 3 (primer) + 3 (message) + role "user" (1) + content 13 bytes (4) + 100
  EXPECT_EQ(estimate_chat_tokens(body), 3 + 3 + 1 + 4 + 100);
}

TEST(TokenEstimator, ChatPrefersMaxCompletionTokensAndMultipliesByN) {
  const json body = json::parse(R"({"messages":[{"role":"user","content":"abcd"}],
                                    "max_tokens":10,"max_completion_tokens":50,"n":2})");
  EXPECT_EQ(estimate_chat_tokens(body), 3 + 3 + 1 + 1 + 100);
}

TEST(TokenEstimator, ChatDefaultsToAzureBudget) {
  const json body = json::parse(R"({"messages":[]})");
  EXPECT_EQ(estimate_chat_tokens(body), 3 + llmq::kAzureDefaultMaxTokens);
  EXPECT_EQ(estimate_chat_tokens(body, 7), 3 + 7);
}

TEST(TokenEstimator, ChatContentPartsAndNames) {
  const json body = json::parse(R"({"messages":[{"role":"user","name":"bob",
      "content":[{"type":"text","text":"abcdefgh"},{"type":"text","text":"ab"}]}],"max_tokens":1})");
  // primer 3 + msg 3 + role 1 + name (1 + 1) + parts 2 + 1 + max 1
  EXPECT_EQ(estimate_chat_tokens(body), 3 + 3 + 1 + 2 + 3 + 1);
}

TEST(TokenEstimator, IgnoresNonsenseBudgets) {
  const json body = json::parse(R"({"messages":[],"max_tokens":-5})");
  EXPECT_EQ(estimate_chat_tokens(body, 10), 3 + 10);
  EXPECT_GT(estimate_chat_tokens(json("just a string"), 10), 10);
}

TEST(TokenEstimator, LegacyPrompt) {
  EXPECT_EQ(estimate_chat_tokens(json::parse(R"({"prompt":"abcdefgh","max_tokens":2})")), 2 + 2);
}

TEST(TokenEstimator, EmbeddingsInputForms) {
  EXPECT_EQ(estimate_embedding_tokens(json::parse(R"({"input":"abcdefgh"})")), 2);
  EXPECT_EQ(estimate_embedding_tokens(json::parse(R"({"input":["abcd","abcde"]})")), 1 + 2);
  EXPECT_EQ(estimate_embedding_tokens(json::parse(R"({"input":[1,2,3]})")), 3);
  EXPECT_EQ(estimate_embedding_tokens(json::parse(R"({"input":[[1,2],[3,4,5]]})")), 5);
}

TEST(TokenEstimator, EmbeddingsWithoutInputUseMessages) {
  const json body = json::parse(R"({"messages":[{"role":"user","content":"abcdefgh"}]})");
  EXPECT_EQ(estimate_embedding_tokens(body), 3 + 3 + 1 + 2);
}

}  // namespace
