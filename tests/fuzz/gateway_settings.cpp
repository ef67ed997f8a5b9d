// Fuzz target `gateway_settings`: llmq::gateway::parse_gateway_settings (the library's
// keys and the `gateway:` section of llmq-gateway's config file). Either settings that
// respect their documented bounds, or ConfigError; any other exception is a crash.

#include "fuzz_support.hpp"

#include "gateway_config.hpp"

#include <llmq/errors.hpp>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  llmq::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const llmq::gateway::GatewaySettings s =
        llmq::gateway::parse_gateway_settings(llmq::fuzz::as_text(data, size));
    const llmq::gateway::GatewayConfig& g = s.gateway;
    s.llm.validate();
    LLMQ_FUZZ_CHECK(!g.user_header.empty());
    LLMQ_FUZZ_CHECK(g.max_body_bytes > 0 && g.max_header_bytes > 0);
    LLMQ_FUZZ_CHECK(g.max_connections > 0 && g.upstream_max_connections > 0);
    LLMQ_FUZZ_CHECK(g.read_timeout.count() > 0 && g.idle_timeout.count() > 0);
    for (const llmq::gateway::ClientKey& k : g.client_keys) LLMQ_FUZZ_CHECK(!k.key.empty());
  } catch (const llmq::ConfigError& e) {
    LLMQ_FUZZ_CHECK(*e.what() != '\0');
  }
  return 0;
}
