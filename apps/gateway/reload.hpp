#pragma once
// Reloading a running llmq-gateway's configuration file (SIGHUP, POST /admin/reload).
//
// The file is read and checked as a whole first; an unusable one changes nothing. A usable
// one is put in use in this order: the TLS certificates are loaded (and checked), the
// queue switches to the library's part (LLMQueue::reconfigure: deployments, user limits
// and tiers, scheduler limits), the new certificates serve new connections, the gateway's
// per-request settings (client keys, admin keys, metrics_public, user_header,
// max_json_depth) apply to requests from then on, and the access log is reopened (so
// that a rotated file is let go). Keys that only take effect at a restart keep their
// running values and are named in the outcome's warnings.

#include "gateway.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace llmq::gateway {

/// Keeps, in `next`, the running value of every gateway key that takes effect only at a
/// restart (listen address and port, the HTTP server's limits and timeouts, the upstream
/// client's, telemetry, Redis, the access log's path, TLS turned on or off), and returns a
/// warning for each such key whose value the file changed.
[[nodiscard]] std::vector<std::string> keep_restart_only(const GatewayConfig& running,
                                                         GatewayConfig& next);

class ConfigReloader {
 public:
  /// `running`: the settings in use (as read at start, with `port_override`, the
  /// command line's --port, applied). `server` (may be null) gets the new certificates.
  ConfigReloader(std::filesystem::path path, GatewaySettings running,
                 std::optional<unsigned short> port_override, LLMQueue& queue, Gateway& gateway,
                 GatewayServer* server);

  /// Reads the file again and switches to it (see above); never throws. Logs and counts
  /// the outcome (Metrics::config_reloaded). One runs at a time: while one runs, another
  /// is refused (ReloadOutcome::busy).
  boost::asio::awaitable<ReloadOutcome> reload();

  /// For SIGHUP: reload(); while one runs, that one reads the file once more when it
  /// ends (so the file as it was at the last signal is the one in use).
  boost::asio::awaitable<void> reload_on_signal();

  /// Refuses reloads from now on (for shutdown); busy() says when one still runs.
  void stop() noexcept { stopped_.store(true); }
  [[nodiscard]] bool busy() const noexcept { return busy_.load(); }

 private:
  boost::asio::awaitable<ReloadOutcome> reload_once();

  std::filesystem::path path_;
  GatewaySettings running_;  // changed only while busy_
  std::optional<unsigned short> port_override_;
  LLMQueue& queue_;
  Gateway& gateway_;
  GatewayServer* server_;
  std::atomic<bool> busy_{false};
  std::atomic<bool> again_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace llmq::gateway
