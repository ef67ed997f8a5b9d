#include "reload.hpp"

#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <exception>
#include <functional>
#include <utility>

namespace llmq::gateway {
namespace {

/// One restart-only key: its name and how to compare and keep its value.
struct RestartOnly {
  std::string_view key;
  std::function<bool(const GatewayConfig&, const GatewayConfig&)> same;
  std::function<void(const GatewayConfig&, GatewayConfig&)> keep;
};

template <class T>
RestartOnly field(std::string_view key, T GatewayConfig::*member) {
  return {
      key,
      [member](const GatewayConfig& a, const GatewayConfig& b) { return a.*member == b.*member; },
      [member](const GatewayConfig& from, GatewayConfig& to) { to.*member = from.*member; }};
}

const std::vector<RestartOnly>& restart_only_keys() {
  static const std::vector<RestartOnly> keys = {
      field("listen_address", &GatewayConfig::listen_address),
      field("port", &GatewayConfig::port),
      field("max_body_bytes", &GatewayConfig::max_body_bytes),
      field("max_header_bytes", &GatewayConfig::max_header_bytes),
      field("header_timeout_seconds", &GatewayConfig::header_timeout),
      field("read_timeout_seconds", &GatewayConfig::read_timeout),
      field("idle_timeout_seconds", &GatewayConfig::idle_timeout),
      field("max_connections", &GatewayConfig::max_connections),
      field("upstream_timeout_seconds", &GatewayConfig::upstream_timeout),
      field("upstream_max_connections", &GatewayConfig::upstream_max_connections),
      field("threads", &GatewayConfig::threads),
      field("telemetry_jsonl", &GatewayConfig::telemetry_jsonl),
      field("telemetry_postgres", &GatewayConfig::telemetry_postgres),
      field("redis_url", &GatewayConfig::redis_url),
      field("redis_key_prefix", &GatewayConfig::redis_key_prefix),
      field("redis_failure_policy", &GatewayConfig::redis_fail_open),
      field("share_deployment_budgets", &GatewayConfig::share_deployment_budgets),
      field("access_log", &GatewayConfig::access_log),
      // TLS on or off: the certificate files themselves are read again on every reload.
      {"tls_cert_file",
       [](const GatewayConfig& a, const GatewayConfig& b) { return a.tls() == b.tls(); },
       [](const GatewayConfig& from, GatewayConfig& to) {
         to.tls_cert_file = from.tls_cert_file;
         to.tls_key_file = from.tls_key_file;
         to.tls_client_ca_file = from.tls_client_ca_file;
       }},
  };
  return keys;
}

ReloadOutcome refused(std::string error) {
  ReloadOutcome o;
  o.error = std::move(error);
  return o;
}

}  // namespace

std::vector<std::string> keep_restart_only(const GatewayConfig& running, GatewayConfig& next) {
  std::vector<std::string> warnings;
  for (const RestartOnly& k : restart_only_keys()) {
    if (k.same(running, next)) continue;
    std::string what = "gateway." + std::string(k.key) + " changed: it takes effect at a restart";
    if (k.key == "tls_cert_file")
      what =
          "gateway.tls_cert_file: TLS is turned on or off at a restart (on reload, the "
          "certificate files of a TLS listener are read again)";
    warnings.push_back(std::move(what));
    k.keep(running, next);
  }
  return warnings;
}

ConfigReloader::ConfigReloader(std::filesystem::path path, GatewaySettings running,
                               std::optional<unsigned short> port_override, LLMQueue& queue,
                               Gateway& gateway, GatewayServer* server)
    : path_(std::move(path)),
      running_(std::move(running)),
      port_override_(port_override),
      queue_(queue),
      gateway_(gateway),
      server_(server) {}

boost::asio::awaitable<ReloadOutcome> ConfigReloader::reload() {
  ReloadOutcome o;
  for (;;) {
    if (stopped_.load()) co_return refused("llmq-gateway is shutting down");
    if (busy_.exchange(true)) {
      o = refused("a configuration reload is already in progress");
      o.busy = true;
      co_return o;
    }
    again_.store(false);  // asked before this read: this read serves it
    o = co_await reload_once();
    gateway_.metrics()->config_reloaded(o.ok, unix_seconds_now());
    if (o.ok) {
      logger()->info("llmq-gateway: configuration reloaded from {} ({} deployments)",
                     path_.string(), queue_.deployments().size());
      for (const std::string& w : o.warnings) logger()->warn("llmq-gateway: {}", w);
    } else {
      logger()->error("llmq-gateway: configuration not reloaded, the running one stays: {}",
                      o.error);
    }
    busy_.store(false);
    // A signal while this one ran was refused as busy: read the file once more for it.
    if (!again_.load()) co_return o;
  }
}

boost::asio::awaitable<void> ConfigReloader::reload_on_signal() {
  again_.store(true);
  (void)co_await reload();
}

boost::asio::awaitable<ReloadOutcome> ConfigReloader::reload_once() {
  ReloadOutcome o;
  try {
    GatewaySettings next = load_gateway_settings(path_);
    if (port_override_) next.gateway.port = *port_override_;
    o.warnings = keep_restart_only(running_.gateway, next.gateway);
    for (std::string& w : startup_warnings(next.gateway)) o.warnings.push_back(std::move(w));
    // Everything that can fail is checked before anything changes.
    std::function<void()> use_tls;
    if (server_ != nullptr && next.gateway.tls()) use_tls = server_->load_tls(next.gateway);
    co_await queue_.reconfigure(next.llm);
    if (use_tls) use_tls();
    gateway_.reconfigure(next.gateway);
    if (const auto& log = gateway_.access_log()) log->reopen();
    running_ = std::move(next);
    o.ok = true;
  } catch (const std::exception& e) {
    o = refused(e.what());
  }
  co_return o;
}

}  // namespace llmq::gateway
