// llmq in a service that is not written with coroutines: the io_context runs on a thread
// of its own, and plain threads submit requests with async_execute_request and a callback
// or a std::future, reading outcomes as error codes instead of exceptions.
//
//   callback_service [path/to/llm_config.yaml]
//
// Exits 0 when every outcome is the documented one.

#include "local_executor.hpp"

#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <cstdlib>
#include <future>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

namespace asio = boost::asio;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "ok: " : "FAILED: ") << what << "\n";
  if (!ok) ++failures;
}

struct Outcome {
  boost::system::error_code ec;
  llmq::Response response;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string config_path = argc > 1 ? argv[1] : "llm_config.yaml";
  if (std::getenv("LLMQ_EXAMPLE_API_KEY") == nullptr) setenv("LLMQ_EXAMPLE_API_KEY", "not-used", 0);
  llmq::LLMConfig config = llmq::load_config(config_path);
  config.user_limits.max_num_requests_in_time_window = 3;  // so the 4th request is refused

  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread runner([&io] { io.run(); });

  llmq::LLMQueue queue(io.get_executor(), config,
                       {{"chat_completion", std::make_shared<examples::LocalChatExecutor>()}});
  asio::co_spawn(io, queue.initiate(), asio::use_future).get();

  // 1. Callbacks: three requests of one user, answered on the io_context's thread.
  std::mutex mu;
  std::vector<Outcome> answers;
  std::promise<void> all_answered;
  for (int i = 0; i < 3; ++i) {
    queue.async_execute_request("chat_completion",
                                examples::chat_request("question " + std::to_string(i)), "alice",
                                {}, [&](boost::system::error_code ec, llmq::Response r) {
                                  std::lock_guard lock(mu);
                                  answers.push_back({ec, std::move(r)});
                                  if (answers.size() == 3) all_answered.set_value();
                                });
  }
  all_answered.get_future().wait();
  int ok = 0;
  for (const Outcome& o : answers) ok += !o.ec && o.response.status == 200;
  check(ok == 3, "three callbacks answered 200");

  // 2. The user's limit, as an error code with the exact time to come back.
  std::promise<Outcome> refused;
  queue.async_execute_request("chat_completion", examples::chat_request("one more"), "alice", {},
                              [&](boost::system::error_code ec, llmq::Response r) {
                                refused.set_value({ec, std::move(r)});
                              });
  Outcome limit = refused.get_future().get();
  check(limit.ec == llmq::errc::user_rate_limited, "the 4th request: " + limit.ec.message());
  check(limit.response.status == 429 && limit.response.retry_after.has_value(),
        "429 with a retry-after of " +
            std::to_string(
                limit.response.retry_after.value_or(std::chrono::milliseconds(0)).count()) +
            " ms");

  // 3. A future: errors arrive as boost::system::system_error from get().
  std::future<llmq::Response> answer = queue.async_execute_request(
      "chat_completion", examples::chat_request("from a future"), "bob", {}, asio::use_future);
  llmq::Response bob = answer.get();
  check(bob.status == 200 && bob.body["choices"][0]["message"]["content"] == "echo: from a future",
        "the future's answer");
  std::future<llmq::Response> unknown = queue.async_execute_request(
      "image_generation", examples::chat_request("a cat"), "bob", {}, asio::use_future);
  try {
    unknown.get();
    check(false, "an unknown request type is refused");
  } catch (const boost::system::system_error& e) {
    check(e.code() == llmq::errc::unknown_request_type,
          "an unknown request type is refused: " + e.code().message());
  }

  asio::co_spawn(io, queue.graceful_shutdown(), asio::use_future).get();
  work.reset();
  runner.join();
  std::cout << "callback_service: " << failures << " failed\n";
  return failures == 0 ? 0 : 1;
}
