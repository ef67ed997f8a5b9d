#include <llmq/request_validation.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>

namespace {
using llmq::json_within_depth;
using llmq::parse_json_bounded;
using llmq::RequestProblem;
using llmq::validate_chat_body;
using llmq::validate_embeddings_body;
using llmq::validate_user_id;
using nlohmann::json;

std::string nested_arrays(std::size_t depth, const std::string& inner = "") {
  return std::string(depth, '[') + inner + std::string(depth, ']');
}

/// A tree `depth` arrays deep, built without a parser (and without recursion).
json deep_tree(std::size_t depth) {
  json root = json::array();
  json* p = &root;
  for (std::size_t i = 1; i < depth; ++i) {
    p->push_back(json::array());
    p = &p->back();
  }
  return root;
}

json chat_body() {
  return json::parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]})");
}

TEST(ParseJsonBounded, ParsesWhatTheLibraryParserParses) {
  const std::string text =
      R"({"a":[1,-2,3.5,1e300,18446744073709551615,true,false,null],"b":{"c":"d\n\u00e9\ud83d\ude00"},)"
      R"("a2":"x","a2":"last wins","e":[],"f":{}})";
  json out;
  ASSERT_FALSE(parse_json_bounded(text, 64, out).has_value());
  EXPECT_EQ(out, json::parse(text));
  EXPECT_EQ(out["a2"], "last wins");
  ASSERT_FALSE(parse_json_bounded("  42 ", 64, out).has_value());
  EXPECT_EQ(out, 42);
}

TEST(ParseJsonBounded, DepthLimitIsInclusive) {
  json out;
  EXPECT_FALSE(parse_json_bounded(nested_arrays(64), 64, out).has_value());
  EXPECT_TRUE(json_within_depth(out, 64));
  EXPECT_FALSE(json_within_depth(out, 63));
  const auto p = parse_json_bounded(nested_arrays(65), 64, out);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->code, "json_too_deep");
  EXPECT_EQ(p->param, "");
  EXPECT_NE(p->message.find("64"), std::string::npos);
}

TEST(ParseJsonBounded, RefusesHostileNestingAndNamesTheField) {
  // 200 000 levels inside messages[0].content: refused at level 65, nothing recursed.
  const std::string text =
      R"({"model":"m","messages":[{"role":"user","content":)" + nested_arrays(200'000, "1") + "}]}";
  json out;
  const auto p = parse_json_bounded(text, 64, out);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->code, "json_too_deep");
  EXPECT_EQ(p->param, "messages");
  EXPECT_TRUE(out.is_null());  // the partial tree is dropped

  const auto tools = parse_json_bounded(R"({"tools":)" + nested_arrays(100'000) + "}", 64, out);
  ASSERT_TRUE(tools.has_value());
  EXPECT_EQ(tools->param, "tools");
}

TEST(ParseJsonBounded, AMemberNameThatIsNoFieldNameIsNotEchoed) {
  // The member under which the limit was passed is named only when it looks like a
  // field name: any other text is the client's, of any length and bytes.
  const std::string key = std::string(1000, 'k') + "\\r\\n<script>";  // escaped CR LF
  json out;
  const auto p = parse_json_bounded("{\"" + key + "\":" + nested_arrays(100) + "}", 64, out);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->code, "json_too_deep");
  EXPECT_EQ(p->param, "");
  EXPECT_EQ(p->message, "the request body nests JSON deeper than 64 levels");
  const auto named =
      parse_json_bounded(R"({"response_format":)" + nested_arrays(100) + "}", 64, out);
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ(named->param, "response_format");
}

TEST(ParseJsonBounded, InvalidJsonIsNamedWithoutEchoingTheInput) {
  json out;
  for (const char* text : {"", "{", R"({"k": secret-value})", R"({"k":"secret-value)", "[1,]",
                           "{} trailing", "\"\xff\""}) {
    const auto p = parse_json_bounded(text, 64, out);
    ASSERT_TRUE(p.has_value()) << text;
    EXPECT_EQ(p->code, "invalid_json") << text;
    EXPECT_EQ(p->message.find("secret"), std::string::npos) << p->message;
    EXPECT_EQ(p->message.find("json.exception"), std::string::npos) << p->message;
  }
  // A number too large to hold: nlohmann's message would quote all of it (found by the
  // body_validation fuzz target).
  const std::string huge = "{\"k\":[1" + std::string(5000, '7') + "e396021]}";
  const auto p = parse_json_bounded(huge, 64, out);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->code, "invalid_json");
  EXPECT_EQ(p->message, "the request body is not valid JSON: number overflow");
  EXPECT_EQ(p->message.find("777"), std::string::npos);
}

TEST(JsonWithinDepth, IsIterativeAndStopsAtTheLimit) {
  EXPECT_TRUE(json_within_depth(json(5), 0));
  EXPECT_FALSE(json_within_depth(json::array(), 0));
  EXPECT_TRUE(json_within_depth(json::parse(R"({"a":{"b":[1]},"c":[]})"), 3));
  EXPECT_FALSE(json_within_depth(json::parse(R"({"a":{"b":[1]},"c":[]})"), 2));
  const json deep = deep_tree(300'000);
  EXPECT_FALSE(json_within_depth(deep, 64));
  EXPECT_TRUE(json_within_depth(deep, 300'000));
}

RequestProblem chat_problem(const std::string& patch) {
  json body = chat_body();
  body.merge_patch(json::parse(patch));
  const auto p = validate_chat_body(body);
  return p ? *p : RequestProblem{};
}

TEST(ValidateChatBody, AcceptsOrdinaryBodies) {
  EXPECT_FALSE(validate_chat_body(chat_body()).has_value());
  json b = chat_body();
  b["max_tokens"] = 2147483647;
  b["n"] = 128;
  b["stream"] = false;
  b["max_completion_tokens"] = nullptr;  // null is absent
  b["tools"] = json::array({json::object({{"type", "function"}})});
  EXPECT_FALSE(validate_chat_body(b).has_value());
}

TEST(ValidateChatBody, NamesTheOffendingField) {
  EXPECT_EQ(validate_chat_body(json::array())->code, "invalid_body");
  EXPECT_EQ(validate_chat_body(json::object())->param, "messages");
  EXPECT_EQ(chat_problem(R"({"messages":"hello"})").param, "messages");
  EXPECT_EQ(chat_problem(R"({"messages":[]})").param, "messages");
  EXPECT_EQ(chat_problem(R"({"messages":["hi"]})").param, "messages");
  EXPECT_EQ(chat_problem(R"({"messages":[{"content":"no role"}]})").param, "messages");
  EXPECT_EQ(chat_problem(R"({"max_tokens":"eight"})").param, "max_tokens");
  EXPECT_EQ(chat_problem(R"({"max_tokens":"eight"})").code, "invalid_type");
  EXPECT_EQ(chat_problem(R"({"max_tokens":-1})").param, "max_tokens");
  EXPECT_EQ(chat_problem(R"({"max_tokens":0})").code, "invalid_value");
  EXPECT_EQ(chat_problem(R"({"max_tokens":2147483648})").param, "max_tokens");
  EXPECT_EQ(chat_problem(R"({"max_tokens":8.5})").param, "max_tokens");
  EXPECT_EQ(chat_problem(R"({"max_completion_tokens":18446744073709551615})").param,
            "max_completion_tokens");
  EXPECT_EQ(chat_problem(R"({"n":9223372036854775807})").param, "n");
  EXPECT_EQ(chat_problem(R"({"n":129})").param, "n");
  EXPECT_EQ(chat_problem(R"({"n":0})").param, "n");
  EXPECT_EQ(chat_problem(R"({"best_of":1000})").param, "best_of");
  EXPECT_EQ(chat_problem(R"({"stream":"yes"})").param, "stream");
  EXPECT_EQ(chat_problem(R"({"model":5})").param, "model");
  EXPECT_EQ(chat_problem(R"({"model":")" + std::string(300, 'm') + "\"}").param, "model");
}

TEST(ValidateEmbeddingsBody, InputShapes) {
  const auto check = [](const std::string& input) {
    const auto p = validate_embeddings_body(json::parse(R"({"model":"e","input":)" + input + "}"));
    return p ? p->param + ":" + p->code : std::string("ok");
  };
  EXPECT_EQ(check(R"("text")"), "ok");
  EXPECT_EQ(check(R"(["a","b"])"), "ok");
  EXPECT_EQ(check("[1,2,3]"), "ok");
  EXPECT_EQ(check("[[1,2],[3]]"), "ok");
  EXPECT_EQ(check(R"("")"), "input:invalid_type");
  EXPECT_EQ(check("[]"), "input:invalid_type");
  EXPECT_EQ(check("5"), "input:invalid_type");
  EXPECT_EQ(check(R"(["a",1])"), "input:invalid_type");
  EXPECT_EQ(check("[[1],[]]"), "input:invalid_type");
  EXPECT_EQ(check("[-1]"), "input:invalid_type");
  EXPECT_EQ(check(R"([{"text":"a"}])"), "input:invalid_type");
  json many = json::array();
  for (int i = 0; i < 2049; ++i) many.push_back("x");
  EXPECT_EQ(check(many.dump()), "input:invalid_value");
  many.erase(many.begin());
  EXPECT_EQ(check(many.dump()), "ok");
  EXPECT_EQ(validate_embeddings_body(json::parse(R"({"model":"e"})"))->code, "missing_field");
  EXPECT_EQ(validate_embeddings_body(json::parse(R"({"input":"a","dimensions":0})"))->param,
            "dimensions");
  EXPECT_EQ(validate_embeddings_body(json("text"))->code, "invalid_body");
}

TEST(ValidateUserId, BoundsLengthAndCharacters) {
  EXPECT_FALSE(validate_user_id("alice").has_value());
  EXPECT_FALSE(validate_user_id("j\xc3\xbcrgen@example.com").has_value());  // UTF-8
  EXPECT_FALSE(validate_user_id(std::string(256, 'u')).has_value());
  for (const std::string& bad :
       {std::string(), std::string(257, 'u'), std::string(1000, 'u'), std::string("a\nb"),
        std::string("a\rb"), std::string("tab\t"), std::string("nul\0x", 5), std::string("del\x7f"),
        std::string("c1\xc2\x85"), std::string("bad\xff"), std::string("cut\xc3"),
        std::string("overlong\xc0\xaf"), std::string("surrogate\xed\xa0\x80")}) {
    const auto p = validate_user_id(bad);
    ASSERT_TRUE(p.has_value()) << bad;
    EXPECT_EQ(p->code, "invalid_user_id");
  }
}

}  // namespace
