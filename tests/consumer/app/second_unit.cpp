// A second translation unit of the header-only consumer: it includes every core header
// and uses a function of each implementation file, so that a core function left without
// `inline` (LLMQ_INLINE) would be defined twice and fail the link.
#include <llmq/llmq.hpp>

#include <chrono>
#include <string>

bool second_unit_works() {
  const llmq::LLMConfig cfg = llmq::parse_config(R"(
custom_models:
  - {model: "m", base_url: "http://127.0.0.1:1/v1", model_type: "chat", req_per_min: 1, tokens_per_min: 1000}
)");
  llmq::SlidingWindowLimiter limiter;
  const auto decision =
      limiter.acquire("u", std::chrono::steady_clock::now(), 1, std::chrono::seconds(60));
  llmq::UserTierTable tiers(cfg);
  llmq::TelemetryData record;
  record.user_id = "u";
  return cfg.deployments().size() == 1 && decision.allowed &&
         llmq::to_string(llmq::errc::queue_full) == "queue_full" &&
         llmq::estimate_text_tokens("four") > 0 && !llmq::validate_user_id("u") &&
         llmq::to_json(record)["user_id"] == "u" && tiers.lookup("u").name.empty() &&
         llmq::make_error_body("m", "t", "c")["error"]["code"] == "c" &&
         llmq::QueueTimeoutError(std::chrono::seconds(1)).http_status() == 504 &&
         llmq::logger() != nullptr;
}
