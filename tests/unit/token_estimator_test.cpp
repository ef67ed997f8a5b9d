#include <llmq/token_estimator.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <limits>
#include <string>

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

TEST(TokenEstimator, SaturatesInsteadOfOverflowing) {
  const auto chat = [](const std::string& extra) {
    return estimate_chat_tokens(
        json::parse(R"({"messages":[{"role":"user","content":"hi"}],)" + extra + "}"));
  };
  for (const std::string& extra :
       {std::string(R"("n":9223372036854775807)"), std::string(R"("best_of":9223372036854775807)"),
        std::string(R"("max_tokens":9223372036854775807,"n":128)"),
        std::string(R"("max_completion_tokens":18446744073709551615,"n":2)"),
        std::string(R"("max_tokens":4611686018427387904,"n":3)")}) {
    EXPECT_EQ(chat(extra), llmq::kMaxTokenEstimate) << extra;
  }
  // An unsigned n above INT64_MAX is huge, not negative.
  EXPECT_EQ(chat(R"("max_tokens":1,"n":18446744073709551615)"), llmq::kMaxTokenEstimate);
  EXPECT_EQ(estimate_chat_tokens(json::parse(R"({"messages":[]})"),
                                 std::numeric_limits<std::int64_t>::max()),
            llmq::kMaxTokenEstimate);
  EXPECT_EQ(estimate_chat_tokens(json::parse(R"({"messages":[]})"), -5), 3);
  // Many large token arrays still add up without overflow.
  json input = json::array();
  for (int i = 0; i < 4; ++i) input.push_back(json::array({1, 2, 3}));
  EXPECT_EQ(estimate_embedding_tokens(json{{"input", input}}), 12);
}

TEST(TokenEstimator, JsonSizesMatchTheSerialisedText) {
  // `tools` counts ceil(dump().size() / 4): the iterative size must equal dump()'s.
  const json tools = json::parse(R"([{"type":"function","function":{"name":"f\"q\\","description":)"
                                 R"("tab\t nl\n ctl\u0001 \u00e9\ud83d\ude00","parameters":)"
                                 R"({"x":[1,-22,3.25,1e300,-0.0,18446744073709551615,true,false,)"
                                 R"(null,{},[],[[]]]}}}])");
  for (std::size_t cut = 0; cut < 3; ++cut) {
    json body = json::object();
    body["messages"] = json::array();
    body["max_tokens"] = 1;
    body["tools"] = cut == 0   ? tools
                    : cut == 1 ? tools[0]["function"]
                               : tools[0]["function"]["parameters"]["x"];
    const auto size = static_cast<std::int64_t>(body["tools"].dump().size());
    EXPECT_EQ(estimate_chat_tokens(body), 3 + (size + 3) / 4 + 1) << body["tools"].dump();
  }
}

/// `depth` nested arrays, built without recursion (and never copied: copies recurse).
json deep_arrays(int depth) {
  json deep = json::array();
  json* p = &deep;
  for (int i = 1; i < depth; ++i) {
    p->push_back(json::array());
    p = &p->back();
  }
  return deep;
}

TEST(TokenEstimator, DeepBodiesDoNotRecurse) {
  // 300 000 nested arrays: dump() or a recursive walk would overflow the stack.
  json message = json::object();
  message["role"] = "user";
  message["content"] = deep_arrays(300'000);
  json body = json::object();
  body["messages"] = json::array();
  body["messages"].push_back(std::move(message));
  body["tools"] = deep_arrays(300'000);
  body["max_tokens"] = 1;
  // Each level is "[" + "]": 600 000 bytes (150 000 tokens) of tools, 599 998 of the
  // content's one part; + primer, message, role and max_tokens.
  EXPECT_EQ(estimate_chat_tokens(body), 3 + 3 + 1 + 150'000 + 150'000 + 1);
  json embeddings = json::object();
  embeddings["input"] = deep_arrays(300'000);
  EXPECT_EQ(estimate_embedding_tokens(embeddings), 1);
}

}  // namespace
