// A user's program: parses a config and runs one request through LLMQueue. Built with
// LLMQ_CONSUMER_COMPONENTS it also uses every optional component: the request's telemetry
// goes to a JSON-lines file (read back), a record is written to SQLite, and the providers,
// Redis and PostgreSQL parts are exercised without a server; with LLMQ_CONSUMER_SECOND_UNIT
// (the header-only build) a second translation unit uses the core too. Prints
// `consumer: 200 "gpt-4o"` (and `components: ok`, `second unit: ok`) on success; exit code 0.
#include <llmq/llmq.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#if LLMQ_CONSUMER_COMPONENTS
#include <llmq/http_client.hpp>
#include <llmq/jsonl_telemetry_store.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/rate_limit_headers.hpp>
#include <llmq/redis.hpp>
#include <llmq/sqlite_telemetry_store.hpp>

#include <chrono>
#include <fstream>
#include <vector>
#endif

#if LLMQ_CONSUMER_SECOND_UNIT
bool second_unit_works();  // second_unit.cpp
#endif

// The program must be compiled with the Asio configuration it asked for (tests/consumer).
#if (LLMQ_CONSUMER_ASIO_SEPARATE) != defined(BOOST_ASIO_SEPARATE_COMPILATION)
#error "BOOST_ASIO_SEPARATE_COMPILATION is not what this consumer asked for"
#endif

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

llmq::QueueOptions queue_options([[maybe_unused]] boost::asio::io_context& io,
                                 [[maybe_unused]] const std::filesystem::path& dir) {
  llmq::QueueOptions options;
#if LLMQ_CONSUMER_COMPONENTS
  llmq::JsonlTelemetryOptions jsonl;
  jsonl.path = dir / "telemetry.jsonl";
  options.telemetry_store = std::make_shared<llmq::JsonlTelemetryStore>(io.get_executor(), jsonl);
#endif
  return options;
}

#if LLMQ_CONSUMER_COMPONENTS
// One line per request, naming the deployment that answered.
bool jsonl_has_one_record(const std::filesystem::path& dir) {
  std::ifstream in(dir / "telemetry.jsonl");
  std::string line;
  int records = 0;
  bool named = true;
  while (std::getline(in, line)) {
    ++records;
    named = named && line.find("\"gpt-4o\"") != std::string::npos;
  }
  return records == 1 && named;
}

std::shared_ptr<llmq::SqliteTelemetryStore> sqlite_store(boost::asio::io_context& io,
                                                         const std::filesystem::path& dir) {
  llmq::SqliteTelemetryOptions options;
  options.path = dir / "telemetry.sqlite3";
  return std::make_shared<llmq::SqliteTelemetryStore>(io.get_executor(), options);
}

std::vector<llmq::TelemetryData> one_record() {
  std::vector<llmq::TelemetryData> records(1);
  records[0].request_id = "consumer-1";
  records[0].status = 200;
  return records;
}

// The parts that need a server are built and configured, not connected.
bool serverless_parts_work(boost::asio::io_context& io) {
  llmq::HttpClient client(io.get_executor());
  llmq::PostgresTelemetryStore postgres(io.get_executor(), llmq::PostgresTelemetryOptions{});
  const auto redis = llmq::parse_redis_url("redis://localhost:6380/2");
  return llmq::parse_duration("1m30s") == std::chrono::milliseconds(90'000) && redis.port == 6380 &&
         redis.host == "localhost";
}

boost::asio::awaitable<bool> components_work(boost::asio::io_context& io,
                                             std::filesystem::path dir) {
  auto sqlite = sqlite_store(io, dir);
  auto records = one_record();
  co_await sqlite->connect();
  co_await sqlite->insert_batch(records);
  co_await sqlite->close();
  const bool ok = jsonl_has_one_record(dir) && serverless_parts_work(io) &&
                  std::filesystem::file_size(dir / "telemetry.sqlite3") > 0;
  std::cout << "components: " << (ok ? "ok" : "FAILED") << "\n";
  co_return ok;
}
#endif

boost::asio::awaitable<int> run(boost::asio::io_context& io, std::filesystem::path dir) {
  llmq::LLMQueue queue(io.get_executor(), llmq::parse_config(kConfig),
                       {{"chat_completion", std::make_shared<Answer42>()}}, queue_options(io, dir));
  co_await queue.initiate();
  auto [body, status] =
      co_await queue.execute_request("chat_completion", nlohmann::json::object(), "u");
  co_await queue.graceful_shutdown();
  std::cout << "consumer: " << status << " " << body.dump() << "\n";
  bool ok = status == 200 && body == "gpt-4o";
#if LLMQ_CONSUMER_COMPONENTS
  ok = co_await components_work(io, dir) && ok;
#endif
#if LLMQ_CONSUMER_SECOND_UNIT
  const bool second = second_unit_works();
  std::cout << "second unit: " << (second ? "ok" : "FAILED") << "\n";
  ok = second && ok;
#endif
  co_return ok ? 0 : 1;
}
}  // namespace

// Argument: a directory for the files the components write (default: the current one).
int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
  boost::asio::io_context io;
  int rc = 1;
  boost::asio::co_spawn(io, run(io, dir), [&](std::exception_ptr ep, int r) {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        std::cout << "consumer: " << e.what() << "\n";
      }
    }
    rc = ep ? 2 : r;
  });
  io.run();
  return rc;
}
