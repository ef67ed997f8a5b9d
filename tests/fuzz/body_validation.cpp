// Fuzz target `body_validation`: the checks llmq-gateway (and the queue) apply to what a
// client sends, before anything is queued: parse_json_bounded, json_within_depth,
// validate_chat_body, validate_embeddings_body and validate_user_id. The bounded parse
// must agree with nlohmann's unbounded one (same tree, refused exactly when too deep or
// invalid); a body that passes validation must be estimable; problems name their field
// with a known code. Input: the body text (also taken whole as a user id).

#include "fuzz_support.hpp"

#include <llmq/request_validation.hpp>
#include <llmq/token_estimator.hpp>

#include <set>
#include <string>

namespace {

constexpr std::size_t kDepth = llmq::kDefaultMaxJsonDepth;

void check_problem(const llmq::RequestProblem& p) {
  static const std::set<std::string> codes = {"invalid_json",   "json_too_deep", "invalid_body",
                                              "missing_field",  "invalid_type",  "invalid_value",
                                              "invalid_user_id"};
  LLMQ_FUZZ_CHECK(codes.count(p.code) == 1);
  LLMQ_FUZZ_CHECK(!p.message.empty());
  // Messages name fields and limits; they never quote the client's values.
  LLMQ_FUZZ_CHECK(p.message.size() <= 256);
}

void check_body(const nlohmann::json& body) {
  if (const auto p = llmq::validate_chat_body(body)) {
    check_problem(*p);
    LLMQ_FUZZ_CHECK(!p->param.empty() || p->code == "invalid_body");
  } else {
    LLMQ_FUZZ_CHECK(body.is_object() && body.at("messages").is_array());
    const std::int64_t tokens = llmq::estimate_chat_tokens(body);
    LLMQ_FUZZ_CHECK(tokens > 0);
  }
  if (const auto p = llmq::validate_embeddings_body(body)) {
    check_problem(*p);
    LLMQ_FUZZ_CHECK(!p->param.empty() || p->code == "invalid_body");
  } else {
    LLMQ_FUZZ_CHECK(body.is_object() && body.contains("input"));
    LLMQ_FUZZ_CHECK(llmq::estimate_embedding_tokens(body) > 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = llmq::fuzz::as_text(data, size);

  if (const auto p = llmq::validate_user_id(text)) {
    check_problem(*p);
    LLMQ_FUZZ_CHECK(p->code == "invalid_user_id" && p->param.empty());
  } else {
    LLMQ_FUZZ_CHECK(!text.empty() && text.size() <= llmq::kMaxUserIdBytes);
    for (char c : text) {
      const auto u = static_cast<unsigned char>(c);
      LLMQ_FUZZ_CHECK(u >= 0x20 && u != 0x7f);
    }
  }

  nlohmann::json bounded;
  const auto problem = llmq::parse_json_bounded(text, kDepth, bounded);
  // nlohmann's parser is iterative and so is its destructor: a deep tree is safe to build
  // and drop here, as long as nothing recurses over it (json_within_depth does not).
  const nlohmann::json full = nlohmann::json::parse(text, nullptr, false);
  if (full.is_discarded()) {
    LLMQ_FUZZ_CHECK(problem.has_value());
    LLMQ_FUZZ_CHECK(problem->code == "invalid_json" || problem->code == "json_too_deep");
  } else if (!llmq::json_within_depth(full, kDepth)) {
    LLMQ_FUZZ_CHECK(problem && problem->code == "json_too_deep");
    LLMQ_FUZZ_CHECK(llmq::json_within_depth(full, 100000));
  } else {
    LLMQ_FUZZ_CHECK(!problem.has_value());
    LLMQ_FUZZ_CHECK(bounded == full);  // both at most kDepth deep: the comparison is bounded
  }
  if (problem) {
    check_problem(*problem);
    return 0;
  }
  check_body(bounded);
  return 0;
}
