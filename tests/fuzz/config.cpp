// Fuzz target `config`: llmq::parse_config over YAML text. A config either parses into
// one that passes validate(), or fails with ConfigError; anything else escaping (a
// yaml-cpp or standard library exception) is a crash.

#include "fuzz_support.hpp"

#include <llmq/config.hpp>
#include <llmq/errors.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llmq::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const llmq::LLMConfig cfg = llmq::parse_config(llmq::fuzz::as_text(data, size));
    cfg.validate();
    const std::vector<llmq::Deployment> deployments = cfg.deployments();
    LLMQ_FUZZ_CHECK(!deployments.empty());
    for (const llmq::Deployment& d : deployments) {
      LLMQ_FUZZ_CHECK(!d.unique_model_id.empty());
      LLMQ_FUZZ_CHECK(d.req_per_min > 0 && d.tokens_per_min > 0);
    }
  } catch (const llmq::ConfigError& e) {
    LLMQ_FUZZ_CHECK(*e.what() != '\0');
  }
  return 0;
}
