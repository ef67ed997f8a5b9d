#pragma once
/// @file server.hpp
/// The mock Azure OpenAI HTTP/1.1 server (Boost.Beast, coroutines), for tests that run
/// it in-process and for the `llmq-mock-azure` program. The behaviour lives in
/// MockService; this class carries its plans out on sockets.
///
/// Usage:
/// @code
///   boost::asio::io_context ioc;
///   llmq::mock::MockAzureServer server(ioc.get_executor(), cfg);
///   unsigned short port = server.listen();          // 127.0.0.1, ephemeral port
///   std::thread t([&] { ioc.run(); });
///   ... requests to server.base_url() ...
///   server.stop();                                   // closes the acceptor and connections
///   t.join();                                        // run() returns once all is closed
/// @endcode

#include <llmq/mock/config.hpp>
#include <llmq/mock/service.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string>

namespace llmq::mock {

namespace detail {
struct MockServerState;
}  // namespace detail

/// Thread safety: every member may be called from any thread, also while the executor's
/// io_context runs on several threads (each connection runs on its own strand; shared
/// state is in MockService, which locks). listen() must be called at most once.
/// Lifetime: destroy the server before the execution context of its executor.
class MockAzureServer {
 public:
  /// @param ex executor of the io_context that runs the server (any thread count)
  /// @param cfg validated here; throws MockConfigError
  MockAzureServer(boost::asio::any_io_executor ex, MockConfig cfg);
  /// Calls stop().
  ~MockAzureServer();
  MockAzureServer(const MockAzureServer&) = delete;
  MockAzureServer& operator=(const MockAzureServer&) = delete;

  /// Binds, listens and starts accepting. Returns the bound port (useful with port 0).
  /// "localhost" means 127.0.0.1. Throws std::invalid_argument for a non-loopback address
  /// unless cfg.allow_any_host, std::logic_error when called twice, and
  /// boost::system::system_error when the address cannot be bound.
  unsigned short listen(const std::string& address = "127.0.0.1", unsigned short port = 0);

  /// Stops accepting and closes every connection (pending latency timers and stalled
  /// requests end at once). Non-blocking and idempotent; the io_context's run() returns
  /// once the closing handlers have run (unless other work keeps it busy).
  void stop();

  /// The bound port (0 before listen()).
  [[nodiscard]] unsigned short port() const noexcept;

  /// "http://HOST:PORT" (an unspecified listen address is reported as 127.0.0.1).
  [[nodiscard]] std::string base_url() const;

  /// Counters of one deployment. Throws std::out_of_range for an unknown name.
  [[nodiscard]] DeploymentCounters counters(const std::string& deployment) const;

  /// Replaces a deployment's faults at runtime. Throws std::out_of_range / MockConfigError.
  void set_faults(const std::string& deployment, FaultConfig faults);

  /// Zeroes counters, empties the rate windows and re-seeds the RNGs (as POST /mock/reset).
  void reset();

  /// The body of GET /mock/stats.
  [[nodiscard]] nlohmann::json stats() const;

  /// The behaviour core (e.g. to drive it directly in a test).
  [[nodiscard]] MockService& service() noexcept;

 private:
  std::shared_ptr<detail::MockServerState> state_;
};

}  // namespace llmq::mock
