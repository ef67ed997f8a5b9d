// A RAG pipeline on llmq: one request is granted an embeddings deployment and a chat
// deployment together (ModelPreferences::require_embedding_model and require_llm_model),
// so it runs only when both have room. Its executor embeds the question with the
// passages of a small in-memory corpus in one call, picks the closest passage, and asks
// the chat model with it, through the ready-made upstream calls (llmq::call_embeddings,
// llmq::call_chat) against an Azure OpenAI endpoint.
//
//   rag_pipeline --endpoint http://127.0.0.1:PORT [--api-key KEY]
//
// The tests run it against llmq-mock-azure (examples/rag_mock.yaml). The mock's vectors
// are hashes of the text, so only identical texts are close: the corpus below is keyed
// by the questions its passages answer, and the question asked is one of them.
// Exits 0 when the answer was built from the right passage.

#include "mock_upstream.hpp"

#include <llmq/llmq.hpp>
#include <llmq/providers.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using nlohmann::json;

namespace {

struct Passage {
  std::string key;   // the question it answers (what is embedded)
  std::string text;  // what goes to the chat model
};

std::vector<Passage> corpus() {
  return {{"How long do refunds take?", "Refunds reach the card within 5 business days."},
          {"Which regions host the service?", "The service runs in West Europe and East US."},
          {"How do I rotate an API key?", "Create a second key, switch clients, delete the first."},
          {"What is the rate limit?", "Each user may send 40 requests a minute."}};
}

double cosine(const json& a, const json& b) {
  double dot = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double x = a[i].get<double>();
    const double y = b[i].get<double>();
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0;
}

/// The embeddings request: the question first, then every passage's key.
json embedding_body(const std::string& question, const std::vector<Passage>& passages) {
  json input = json::array({question});
  for (const Passage& p : passages) input.push_back(p.key);
  json body = json::object();
  body["input"] = std::move(input);
  return body;
}

/// The index of the passage closest to the question, from the embeddings answer.
std::size_t closest(const json& answer, std::size_t passages) {
  const json& data = answer.at("data");
  std::size_t best = 0;
  double best_score = -2;
  for (std::size_t i = 0; i < passages; ++i) {
    const double score = cosine(data.at(0).at("embedding"), data.at(i + 1).at("embedding"));
    if (score > best_score) {
      best_score = score;
      best = i;
    }
  }
  return best;
}

/// The chat request: the passage as context, then the question.
json chat_body(const Passage& passage, const std::string& question) {
  json system = json::object();
  system["role"] = "system";
  system["content"] = "Answer from the context only.";
  json user = json::object();
  user["role"] = "user";
  user["content"] = "Context: " + passage.text + "\nQuestion: " + question;
  json body = json::object();
  body["messages"] = json::array({system, user});
  body["max_tokens"] = 64;
  return body;
}

class RagExecutor : public llmq::RequestExecutor {
 public:
  explicit RagExecutor(std::shared_ptr<llmq::HttpClient> client) : client_(std::move(client)) {}

  asio::awaitable<llmq::Response> process_request(const llmq::Request& req,
                                                  const llmq::ChosenDeployments& chosen,
                                                  llmq::TelemetryData& telemetry) override {
    const std::string question = req.body.at("question").get<std::string>();
    const std::vector<Passage> passages = corpus();
    llmq::Response emb = co_await llmq::call_embeddings(
        *client_, *chosen.embedding, embedding_body(question, passages), telemetry);
    if (emb.status != 200) co_return emb;
    const Passage& best = passages[closest(emb.body, passages.size())];
    std::cout << "closest passage: " << best.text << "\n";
    co_return co_await llmq::call_chat(*client_, *chosen.llm, chat_body(best, question), telemetry);
  }

 private:
  std::shared_ptr<llmq::HttpClient> client_;
};

asio::awaitable<int> run(examples::MockArgs args) {
  auto ex = co_await asio::this_coro::executor;
  auto client = std::make_shared<llmq::HttpClient>(ex);
  std::map<std::string, std::shared_ptr<llmq::RequestExecutor>> executors;
  executors["rag"] = std::make_shared<RagExecutor>(client);
  llmq::LLMQueue queue(ex, examples::mock_config(args, true), executors);
  co_await queue.initiate();

  llmq::ModelPreferences both;  // one grant on each kind, or none
  both.require_llm_model = true;
  both.require_embedding_model = true;
  both.num_emb_calls_per_req = 1;
  json request = json::object();
  request["question"] = "How long do refunds take?";
  int failures = 0;
  try {
    auto [body, status] = co_await queue.execute_request("rag", request, "analyst-1", both);
    const std::string answer = body["choices"][0]["message"]["content"].get<std::string>();
    std::cout << "answer (" << status << "): " << answer << "\n";
    // The mock echoes the start of the last user message: the context it was given.
    const bool ok = status == 200 && answer.find("Refunds reach") != std::string::npos;
    std::cout << (ok ? "ok: " : "FAILED: ") << "the answer was built from the refunds passage\n";
    failures += ok ? 0 : 1;
  } catch (const llmq::Error& e) {
    std::cout << "FAILED: " << e.what() << "\n";
    ++failures;
  }
  const llmq::QueueStats stats = co_await queue.stats();
  for (const llmq::DeploymentStats& d : stats.deployments)
    std::cout << d.unique_model_id << ": " << d.granted << " grant(s)\n";
  co_await queue.graceful_shutdown();
  client->close();
  std::cout << "rag_pipeline: " << failures << " failed\n";
  co_return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<examples::MockArgs> args = examples::mock_args(argc, argv, "rag_pipeline");
  if (!args) return 2;
  const int failures = examples::run_example("rag_pipeline", [&] { return run(*args); });
  return failures == 0 ? 0 : 1;
}
