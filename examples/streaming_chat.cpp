// Streaming without the gateway: a service streams a chat answer from llmq straight to its
// own output as the tokens arrive, against llmq-mock-azure (Azure's streaming wire format).
//
//   streaming_chat --endpoint URL [--api-key KEY]
//
// execute_streaming_request completes with the first chunk; each `co_await next()` then
// hands over the next `chat.completion.chunk` as the upstream sends it, and the request
// keeps its deployment until the stream ends. Exits 0 when every outcome is as documented.

#include "mock_upstream.hpp"

#include <llmq/llmq.hpp>
#include <llmq/providers.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace asio = boost::asio;
using nlohmann::json;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "ok: " : "FAILED: ") << what << "\n";
  if (!ok) ++failures;
}

json question(const std::string& text) {
  json message = json::object();
  message["role"] = "user";
  message["content"] = text;
  json body = json::object();
  body["messages"] = json::array({message});
  body["max_tokens"] = 64;
  return body;
}

/// The text of a chunk's first choice, if it carries some.
std::string delta_text(const json& chunk) {
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array() || choices->empty()) return {};
  const json& delta = (*choices)[0].value("delta", json::object());
  const auto content = delta.find("content");
  return content != delta.end() && content->is_string() ? content->get<std::string>()
                                                        : std::string();
}

asio::awaitable<int> run(examples::MockArgs args) {
  auto ex = co_await asio::this_coro::executor;
  auto client = std::make_shared<llmq::HttpClient>(ex);
  llmq::LLMQueue queue(ex, examples::mock_config(args, false), llmq::default_executors(client));
  co_await queue.initiate();

  // 1. A stream, printed as it comes.
  const auto started = std::chrono::steady_clock::now();
  llmq::ResponseStream stream = co_await queue.execute_streaming_request(
      "chat_completion", question("stream this answer to me token by token please"), "writer-1");
  const auto first = std::chrono::steady_clock::now();
  check(stream.streaming(), "the answer is a stream");
  std::string text;
  int chunks = 0;
  std::cout << "answer: ";
  while (std::optional<std::string> chunk = co_await stream.next()) {
    ++chunks;
    const std::string piece = delta_text(json::parse(*chunk));
    std::cout << piece << std::flush;
    text += piece;
  }
  std::cout << "\n";
  const auto last = std::chrono::steady_clock::now();
  check(stream.response().status == 200, "the stream completed (status 200)");
  check(text.find("token by token") != std::string::npos, "the text arrived whole");
  check(chunks > 3, "it came in " + std::to_string(chunks) + " chunks");
  check(first < last, "the first chunk came before the end");
  std::cout << "time to first chunk: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(first - started).count()
            << " ms, whole stream: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(last - started).count()
            << " ms\n";
  // The usage llmq asked for on the caller's behalf went into the telemetry, not the stream.
  check(stream.response().body["usage"]["completion_tokens"].get<int>() > 0,
        "usage known at the end");

  // 2. A reader that stops early: the upstream call is cancelled, the deployment freed.
  {
    llmq::ResponseStream early = co_await queue.execute_streaming_request(
        "chat_completion", question("a long answer that nobody reads to its end"), "writer-2");
    (void)co_await early.next();
  }  // closed here
  llmq::QueueStats stats = co_await queue.stats();
  for (int i = 0; i < 100 && stats.in_flight != 0; ++i) {
    asio::steady_timer t(ex, std::chrono::milliseconds(10));
    co_await t.async_wait(asio::use_awaitable);
    stats = co_await queue.stats();
  }
  check(stats.in_flight == 0, "closing a stream early ends its request");

  co_await queue.graceful_shutdown();
  client->close();
  const auto records =
      std::static_pointer_cast<llmq::InMemoryTelemetryStore>(queue.telemetry_store())->records();
  int streamed = 0;
  int cancelled = 0;
  for (const llmq::TelemetryData& t : records) {
    streamed += t.streamed ? 1 : 0;
    cancelled += t.status == 499 ? 1 : 0;
    if (t.time_to_first_token)
      std::cout << "request " << t.request_id << ": status " << t.status << ", time to first token "
                << t.time_to_first_token->count() << " us\n";
  }
  check(streamed == 2, "both requests recorded as streamed");
  check(cancelled == 1, "the early close recorded as 499");
  std::cout << "streaming_chat: " << failures << " failed\n";
  co_return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<examples::MockArgs> args = examples::mock_args(argc, argv, "streaming_chat");
  if (!args) return 2;
  return examples::run_example("streaming_chat", [&] { return run(*args); }) == 0 ? 0 : 1;
}
