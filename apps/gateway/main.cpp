// llmq-gateway: a rate-limited, load-balanced OpenAI/Azure-compatible LLM API proxy.
//
//   llmq-gateway --config gateway.yaml [--port N] [--port-file PATH]
//
// Reads the library's YAML plus its `gateway:` section (docs/configuration.md), serves
// until SIGINT/SIGTERM, then stops accepting, drains, flushes telemetry and exits 0.
// SIGHUP (or POST /admin/reload with an admin key) reads the file again (reload.hpp).

#include "gateway.hpp"
#include "reload.hpp"

#include <llmq/errors.hpp>
#include <llmq/http_client.hpp>
#include <llmq/jsonl_telemetry_store.hpp>
#include <llmq/log.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/providers.hpp>
#include <llmq/redis_deployment_budget_store.hpp>
#include <llmq/redis_rate_limit_store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace llmq;
using namespace llmq::gateway;

namespace {
struct Args {
  std::string config;
  std::optional<unsigned short> port;
  std::string port_file;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      return argv[++i];
    };
    if (k == "--config")
      a.config = value();
    else if (k == "--port")
      a.port = static_cast<unsigned short>(std::stoi(value()));
    else if (k == "--port-file")
      a.port_file = value();
    else
      throw std::invalid_argument("unknown option " + k);
  }
  if (a.config.empty()) throw std::invalid_argument("--config is required");
  return a;
}

/// The queue's options as the gateway section asks: retries and timeouts
/// (queue_options()), telemetry (always through Metrics), and user limits and deployment
/// budgets in Redis when several replicas share them.
QueueOptions make_queue_options(asio::any_io_executor ex, const GatewayConfig& g,
                                std::shared_ptr<Metrics> metrics,
                                std::shared_ptr<AccessLog> access_log) {
  QueueOptions options = queue_options(g);
  std::shared_ptr<TelemetryStore> sink = std::make_shared<InMemoryTelemetryStore>(10'000);
  if (!g.telemetry_postgres.empty()) {
    PostgresTelemetryOptions pg;
    pg.conninfo = g.telemetry_postgres;
    sink = std::make_shared<PostgresTelemetryStore>(ex, pg);
  } else if (!g.telemetry_jsonl.empty()) {
    JsonlTelemetryOptions jl;
    jl.path = g.telemetry_jsonl;
    sink = std::make_shared<JsonlTelemetryStore>(ex, jl);
  }
  options.telemetry_store =
      std::make_shared<MetricsTelemetryStore>(std::move(metrics), sink, std::move(access_log));
  options.telemetry_flush_interval = std::chrono::milliseconds(200);
  if (!g.redis_url.empty()) {
    RedisRateLimitStoreOptions ul;
    ul.url = g.redis_url;
    ul.key_prefix = g.redis_key_prefix + "ul:";
    ul.failure_policy =
        g.redis_fail_open ? RateLimitFailurePolicy::fail_open : RateLimitFailurePolicy::fail_closed;
    options.user_rate_limit_store = std::make_shared<RedisUserRateLimitStore>(ex, ul);
    if (g.share_deployment_budgets) {
      RedisDeploymentBudgetOptions db;
      db.url = g.redis_url;
      db.key_prefix = g.redis_key_prefix + "db:";
      options.deployment_budget_store = std::make_shared<RedisDeploymentBudgetStore>(ex, db);
      options.budget_store_fail_open = g.redis_fail_open;
    }
  }
  return options;
}

/// A periodic task's timer (on its own strand) and its stop flag, shared with the task's
/// coroutine, which runs on that strand.
struct Ticker : std::enable_shared_from_this<Ticker> {
  explicit Ticker(asio::any_io_executor ex) : timer(asio::make_strand(std::move(ex))) {}
  asio::steady_timer timer;
  bool stop = false;
  std::atomic<bool> finished{false};  ///< the task's coroutine has returned
  /// From any thread.
  void cancel() {
    asio::post(timer.get_executor(), [self = shared_from_this()] {
      self->stop = true;
      self->timer.cancel();
    });
  }
};

/// Writes the access log out every 200 ms until the ticker stops.
asio::awaitable<void> flush_access_log(std::shared_ptr<AccessLog> log,
                                       std::shared_ptr<Ticker> ticker) {
  while (!ticker->stop) {
    ticker->timer.expires_after(std::chrono::milliseconds(200));
    co_await ticker->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    log->flush(std::chrono::steady_clock::now());
  }
}

/// Samples the queue for /stats once a second until the ticker stops.
asio::awaitable<void> sample_stats(Gateway& gateway, std::shared_ptr<Ticker> ticker) {
  while (!ticker->stop) {
    try {
      co_await gateway.record_sample();
    } catch (const std::exception& e) {
      logger()->warn("llmq-gateway: sampling the queue for /stats failed: {}", e.what());
    }
    ticker->timer.expires_after(std::chrono::seconds(1));
    co_await ticker->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  ticker->finished = true;
}

/// Waits until `done()` holds, looking every 10 ms, at most 10 s.
template <class Done>
asio::awaitable<void> wait_until(asio::any_io_executor ex, Done done) {
  asio::steady_timer t(std::move(ex));
  for (int i = 0; i < 1000 && !done(); ++i) {
    t.expires_after(std::chrono::milliseconds(10));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

/// Runs on a strand of `io` (so its signal handlers and its own steps never overlap);
/// the queue, the server's connections and the upstream client run on `io`'s threads.
asio::awaitable<void> serve(asio::io_context& io, GatewaySettings settings, Args args,
                            std::shared_ptr<AccessLog> access_log, int& exit_code) {
  const asio::any_io_executor control = co_await asio::this_coro::executor;
  // Registered first: a SIGHUP during start-up waits for the reloader (instead of ending
  // the process, the signal's default).
  asio::signal_set hangups(control, SIGHUP);
  auto metrics = std::make_shared<Metrics>();
  QueueOptions options =
      make_queue_options(io.get_executor(), settings.gateway, metrics, access_log);
  LLMQueue queue(io.get_executor(), settings.llm, {}, options);
  const GatewaySettings started_with = settings;
  HttpClientOptions client_options;
  client_options.max_connections_per_host = settings.gateway.upstream_max_connections;
  client_options.request_timeout = settings.gateway.upstream_timeout;
  auto client = std::make_shared<HttpClient>(io.get_executor(), client_options);
  // The gateway forwards upstream answers as they are: no JSON tree for a 2xx body.
  ProviderOptions provider_options;
  provider_options.raw_success_body = true;
  register_default_executors(queue, client, std::move(provider_options));
  co_await queue.initiate();

  Gateway gateway(queue, settings.gateway, metrics);
  gateway.set_access_log(access_log);
  auto access_ticker = std::make_shared<Ticker>(io.get_executor());
  if (access_log)
    asio::co_spawn(access_ticker->timer.get_executor(), flush_access_log(access_log, access_ticker),
                   asio::detached);
  GatewayServer server(io.get_executor(), gateway, settings.gateway);
  ConfigReloader reloader(args.config, started_with, args.port, queue, gateway, &server);
  gateway.set_reload([&reloader] { return reloader.reload(); });
  const unsigned short port = server.listen();
  auto stats_ticker = std::make_shared<Ticker>(io.get_executor());
  asio::co_spawn(stats_ticker->timer.get_executor(), sample_stats(gateway, stats_ticker),
                 asio::detached);
  if (!args.port_file.empty()) std::ofstream(args.port_file) << port << "\n";
  // Standard output may be the access log: then the line goes to standard error.
  std::ostream& say = settings.gateway.access_log == "-" ? std::cerr : std::cout;
  say << "llmq-gateway listening on " << (settings.gateway.tls() ? "https://" : "http://")
      << settings.gateway.listen_address << ":" << port << " (dashboard: /dashboard)" << std::endl;
  gateway.set_ready(true);

  asio::signal_set signals(control, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    logger()->info("llmq-gateway: shutting down");
    gateway.set_ready(false);
    reloader.stop();
    server.stop();
  });
  std::function<void()> on_hangup = [&] {
    hangups.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      logger()->info("llmq-gateway: SIGHUP: reading {} again", args.config);
      asio::co_spawn(control, reloader.reload_on_signal(), asio::detached);
      on_hangup();
    });
  };
  on_hangup();
  co_await server.run();
  hangups.cancel();
  stats_ticker->cancel();
  co_await queue.graceful_shutdown();
  // The sampler uses the gateway and the queue: it ends before they do.
  co_await wait_until(control, [&] { return stats_ticker->finished.load(); });
  co_await server.drain(std::chrono::seconds(5));
  // A reload still running refers to the queue, the gateway and the server.
  co_await wait_until(control, [&] { return !reloader.busy(); });
  client->close();
  signals.cancel();
  access_ticker->cancel();
  exit_code = 0;
}
}  // namespace

int main(int argc, char** argv) {
  Args args;
  GatewaySettings settings;
  std::shared_ptr<AccessLog> access_log;
  try {
    args = parse_args(argc, argv);
    settings = load_gateway_settings(args.config);
    if (args.port) settings.gateway.port = *args.port;
    // Throws for a configuration it must not start with; else what to say once.
    for (const std::string& warning : startup_warnings(settings.gateway))
      logger()->warn("llmq-gateway: {}", warning);
    if (!settings.gateway.access_log.empty()) {
      AccessLogOptions o;
      o.path = settings.gateway.access_log;
      access_log = std::make_shared<AccessLog>(std::move(o));
    }
  } catch (const std::exception& e) {
    std::cerr << "llmq-gateway: " << e.what() << "\n";
    return 2;
  }
  const std::size_t threads = settings.gateway.io_threads();
  asio::io_context io(static_cast<int>(threads));
  int exit_code = 1;
  asio::co_spawn(asio::make_strand(io), serve(io, std::move(settings), args, access_log, exit_code),
                 [&](std::exception_ptr ep) {
                   if (!ep) return;
                   try {
                     std::rethrow_exception(ep);
                   } catch (const std::exception& e) {
                     std::cerr << "llmq-gateway: " << e.what() << "\n";
                     // A configuration it cannot start with (e.g. an unusable TLS file): 2.
                     exit_code = dynamic_cast<const ConfigError*>(&e) != nullptr ? 2 : 1;
                   }
                   io.stop();
                 });
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (std::thread& t : pool) t.join();
  return exit_code;
}
