// Uses the installed library: parse a config, run one request through LLMQueue.
#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

namespace {
constexpr const char* kConfig = R"(
azure_open_ai:
  - api_key: "k"
    api_version: "2024-10-21"
    azure_endpoint: "https://example.openai.azure.com/"
    azure_oai_models:
      - unique_model_id: "gpt-4o"
        model_name_in_azure: "gpt-4o"
        deployment_name_in_azure: "gpt-4o"
        model_type: "chat"
        req_per_min: 60
        tokens_per_min: 100000
)";

class Answer42 : public llmq::RequestExecutor {
 public:
  boost::asio::awaitable<llmq::Response> process_request(const llmq::Request&,
                                                         const llmq::ChosenDeployments& chosen,
                                                         llmq::TelemetryData&) override {
    co_return llmq::Response{nlohmann::json(chosen.llm->unique_model_id), 200};
  }
};

boost::asio::awaitable<int> run(boost::asio::io_context& io) {
  llmq::LLMQueue queue(io.get_executor(), llmq::parse_config(kConfig),
                       {{"chat_completion", std::make_shared<Answer42>()}});
  co_await queue.initiate();
  auto [body, status] =
      co_await queue.execute_request("chat_completion", nlohmann::json::object(), "u");
  co_await queue.graceful_shutdown();
  std::cout << "consumer: " << status << " " << body.dump() << "\n";
  co_return status == 200 && body == "gpt-4o" ? 0 : 1;
}
}  // namespace

int main() {
  boost::asio::io_context io;
  int rc = 1;
  boost::asio::co_spawn(io, run(io), [&](std::exception_ptr ep, int r) { rc = ep ? 2 : r; });
  io.run();
  return rc;
}
