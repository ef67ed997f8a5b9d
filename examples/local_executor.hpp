#pragma once
// A stand-in for the upstream call, shared by the examples so that they run anywhere:
// it answers a chat request with the last message's content, after `latency`, and fills
// the telemetry record as a real executor would. A real service registers the ready-made
// executors instead (llmq/providers.hpp: register_default_executors).

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace examples {

class LocalChatExecutor : public llmq::RequestExecutor {
 public:
  explicit LocalChatExecutor(std::chrono::milliseconds latency = std::chrono::milliseconds(1))
      : latency_(latency) {}

  boost::asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                         const llmq::ChosenDeployments& chosen,
                                                         llmq::TelemetryData& telemetry) override {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, latency_);
    co_await timer.async_wait(boost::asio::use_awaitable);
    const std::string text = last_message(req.body);
    telemetry.prompt_tokens = llmq::estimate_text_tokens(text);
    telemetry.completion_tokens = 3;
    telemetry.llm_outcome.status = 200;
    co_return llmq::Response{reply(chosen.llm->unique_model_id, text), 200};
  }

 private:
  static std::string last_message(const nlohmann::json& body) {
    const auto& messages = body.at("messages");
    return messages.empty() ? std::string() : messages.back().value("content", std::string());
  }

  static nlohmann::json reply(const std::string& deployment, const std::string& text) {
    nlohmann::json message = {{"role", "assistant"}, {"content", "echo: " + text}};
    return nlohmann::json{
        {"object", "chat.completion"},
        {"model", deployment},
        {"choices",
         nlohmann::json::array({{{"index", 0}, {"message", message}, {"finish_reason", "stop"}}})}};
  }

  std::chrono::milliseconds latency_;
};

/// Runs `program` (its result: the number of failed checks) on a fresh io_context; the
/// process exit code: 0 when none failed, 1 otherwise or when it threw.
inline int run_example(const char* name, boost::asio::awaitable<int> (*program)()) {
  boost::asio::io_context io;
  int failures = 1;
  boost::asio::co_spawn(io, program(), [&](std::exception_ptr ep, int n) {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        std::cerr << name << " failed: " << e.what() << "\n";
      }
      return;
    }
    failures = n;
  });
  io.run();
  return failures == 0 ? 0 : 1;
}

/// A chat request body with one user message.
inline nlohmann::json chat_request(const std::string& content) {
  nlohmann::json message = {{"role", "user"}, {"content", content}};
  return nlohmann::json{{"messages", nlohmann::json::array({message})}, {"max_tokens", 16}};
}

/// The executors of a queue whose chat requests the LocalChatExecutor answers (built
/// outside coroutines: g++ 12 rejects some braced lists of string literals inside them).
inline std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> local_executors(
    std::chrono::milliseconds latency = std::chrono::milliseconds(1)) {
  return {{"chat_completion", std::make_shared<LocalChatExecutor>(latency)}};
}

}  // namespace examples
