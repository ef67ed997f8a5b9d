#pragma once
// What the examples that call llmq-mock-azure over HTTP share (rag_pipeline,
// streaming_chat): their command line, the configuration of the mock's deployments, and
// running their coroutine to an exit code.

#include <llmq/llmq.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstring>
#include <exception>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

namespace examples {

/// `--endpoint URL [--api-key KEY]`.
struct MockArgs {
  std::string endpoint;
  std::string key = "rag-example-key";
};

/// The arguments, or nullopt (after a usage line naming `program`) without an endpoint.
inline std::optional<MockArgs> mock_args(int argc, char** argv, const char* program) {
  MockArgs a;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--endpoint") == 0) a.endpoint = argv[i + 1];
    if (std::strcmp(argv[i], "--api-key") == 0) a.key = argv[i + 1];
  }
  if (a.endpoint.empty()) {
    std::cerr << "usage: " << program << " --endpoint URL [--api-key KEY]\n";
    return std::nullopt;
  }
  return a;
}

/// The mock's deployments (examples/rag_mock.yaml) as an llmq configuration: `chat`
/// (gpt-4o) and, with `embeddings`, `embed` (text-embedding-3-small).
inline llmq::LLMConfig mock_config(const MockArgs& a, bool embeddings) {
  std::string yaml =
      "azure_open_ai:\n"
      "  - api_key: \"" +
      a.key +
      "\"\n"
      "    api_version: \"2024-10-21\"\n"
      "    azure_endpoint: \"" +
      a.endpoint +
      "\"\n"
      "    azure_oai_models:\n"
      "      - {unique_model_id: chat, model_name_in_azure: gpt-4o,\n"
      "         deployment_name_in_azure: chat, model_type: chat,\n"
      "         req_per_min: 6000, tokens_per_min: 1000000}\n";
  if (embeddings)
    yaml +=
        "      - {unique_model_id: embed, model_name_in_azure: text-embedding-3-small,\n"
        "         deployment_name_in_azure: embed, model_type: embeddings,\n"
        "         req_per_min: 6000, tokens_per_min: 1000000}\n";
  return llmq::parse_config(yaml);
}

/// Runs `body` on an io_context until it is done; its result is the exit code (1 when it
/// threw, after saying why).
inline int run_example(const char* program, std::function<boost::asio::awaitable<int>()> body) {
  boost::asio::io_context io;
  int code = 1;
  boost::asio::co_spawn(io, std::move(body), [&](std::exception_ptr ep, int n) {
    if (!ep) {
      code = n;
      return;
    }
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      std::cerr << program << " failed: " << e.what() << "\n";
    }
  });
  io.run();
  return code;
}

}  // namespace examples
