// Quick start: the seed's "Basic Usage" in C++. A custom executor stands in for the
// upstream call so the example runs anywhere; see the provider executors for real calls.
//
//   quickstart [path/to/llm_config.yaml]

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <iostream>

namespace asio = boost::asio;
using nlohmann::json;

// A custom request executor: receives the request, the deployments the balancer chose
// and the telemetry record to fill.
class ChatRequestExecutor : public llmq::RequestExecutor {
 public:
  asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                  const llmq::ChosenDeployments& chosen,
                                                  llmq::TelemetryData& telemetry) override {
    // Here a real executor would POST req.body to chosen.llm->endpoint with its api_key.
    const std::string& question =
        req.body["messages"].back()["content"].get_ref<const std::string&>();
    telemetry.prompt_tokens = llmq::estimate_text_tokens(question);
    telemetry.completion_tokens = 5;
    co_return llmq::Response{make_reply(chosen.llm->deployment_name_in_azure, question), 200};
  }

 private:
  static json make_reply(const std::string& deployment, const std::string& question) {
    json message = {{"role", "assistant"}, {"content", "You said: " + question}};
    return json{{"object", "chat.completion"},
                {"model", deployment},
                {"choices",
                 json::array({{{"index", 0}, {"message", message}, {"finish_reason", "stop"}}})}};
  }
};

static json make_request() {
  return json{{"messages", json::array({{{"role", "user"}, {"content", "Hello, world!"}}})},
              {"max_tokens", 100}};
}

asio::awaitable<int> run(asio::io_context& io, const std::string& config_path) {
  // Load configuration
  llmq::LLMConfig llm_config = llmq::load_config(config_path);

  // Initialize LLM Queue
  std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> request_executors{
      {"chat_completion", std::make_shared<ChatRequestExecutor>()}};
  llmq::LLMQueue llm_queue(io.get_executor(), llm_config, request_executors);
  co_await llm_queue.initiate();

  llmq::ModelPreferences model_preferences;
  model_preferences.require_llm_model = true;
  model_preferences.require_embedding_model = false;

  int exit_code = 0;
  try {
    auto [response, status_code] = co_await llm_queue.execute_request(
        "chat_completion", make_request(), "user123", model_preferences);
    if (status_code == 200) {
      std::cout << "Success: " << response.dump() << "\n";
    } else {
      std::cout << "Error: " << response.dump() << "\n";
      exit_code = 1;
    }
  } catch (const llmq::UserRateLimitExceededError& e) {
    std::cout << "Rate limit exceeded: " << e.what() << "\n";
    exit_code = 1;
  } catch (const llmq::Error& e) {  // queue full, timeout, missing user id, closed
    std::cout << "Request failed (" << e.http_status() << "): " << e.what() << "\n";
    exit_code = 1;
  }

  auto stats = co_await llm_queue.stats();
  std::cout << "Deployment " << stats.deployments[0].unique_model_id << ": "
            << stats.deployments[0].requests_in_window << " request(s), "
            << stats.deployments[0].tokens_in_window << " token(s) in the last minute\n";

  // Graceful shutdown
  co_await llm_queue.graceful_shutdown();
  co_return exit_code;
}

int main(int argc, char** argv) {
  const std::string config_path = argc > 1 ? argv[1] : "llm_config.yaml";
  if (std::getenv("LLMQ_EXAMPLE_API_KEY") == nullptr) setenv("LLMQ_EXAMPLE_API_KEY", "not-used", 0);
  asio::io_context io;
  int exit_code = 1;
  asio::co_spawn(io, run(io, config_path), [&](std::exception_ptr ep, int code) {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        std::cerr << "quickstart failed: " << e.what() << "\n";
      }
      return;
    }
    exit_code = code;
  });
  io.run();
  return exit_code;
}
