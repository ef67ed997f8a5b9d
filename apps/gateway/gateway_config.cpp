#include "gateway_config.hpp"

#include <llmq/detail/yaml_reader.hpp>
#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

namespace llmq::gateway {
namespace {

using detail::yaml::line_of;
using detail::yaml::MappingView;
using detail::yaml::Reader;

constexpr std::string_view kSeconds = "must be a number of seconds between 0.001 and 1000000";

/// A positive integer no larger than `max`.
std::int64_t positive(Reader& r, const MappingView& map, std::string_view key,
                      const MappingView::Entry& e, std::int64_t max) {
  return r.read_integer_in(map, key, e, 1, max,
                           "must be a positive integer no larger than " + std::to_string(max));
}

ClientKey read_client_key(Reader& r, const YAML::Node& node, const std::string& path) {
  MappingView k = r.view_mapping(node, path, line_of(node));
  ClientKey key;
  key.key = r.read_string(k, "key", r.require(k, "key"));
  if (key.key.empty()) Reader::fail(path + ".key", "must not be empty", line_of(node));
  if (auto* e = k.find("user")) key.user = r.read_string(k, "user", *e);
  if (auto* e = k.find("tier")) {
    key.tier = r.read_string(k, "tier", *e);
    if (key.tier.empty()) Reader::fail(path + ".tier", "must not be empty", line_of(e->key));
  }
  if (auto* e = k.find("max_priority"))
    key.max_priority = static_cast<Priority>(
        r.read_choice(k, "max_priority", *e, {"high", "normal", "low"}, "high, normal, low"));
  r.reject_unknown(k, "known: key, user, tier, max_priority");
  return key;
}

/// The `gateway:` section of the settings file (absent or null: the defaults).
GatewayConfig parse_section(Reader& r, MappingView& root) {
  GatewayConfig c;
  MappingView::Entry* section = root.find("gateway");
  if (section == nullptr) return c;
  MappingView g =
      r.view_mapping(section->value, r.key_path(root, "gateway", *section), line_of(section->key));
  // Read first: it decides what an unknown key below means.
  if (auto* e = g.find("allow_unknown_keys"))
    c.allow_unknown_keys = r.read_bool(g, "allow_unknown_keys", *e);
  auto text = [&](std::string_view key, std::string& out) {
    if (auto* e = g.find(key)) out = r.read_string(g, key, *e);
  };
  auto count = [&](std::string_view key, std::size_t& out, std::int64_t max) {
    if (auto* e = g.find(key)) out = static_cast<std::size_t>(positive(r, g, key, *e, max));
  };
  auto seconds = [&](std::string_view key, std::chrono::milliseconds& out) {
    if (auto* e = g.find(key)) out = r.read_seconds_in(g, key, *e, 0.001, 1e6, kSeconds);
  };
  text("listen_address", c.listen_address);
  // 0 asks the system for a free port (printed at start-up, or see --port-file).
  if (auto* e = g.find("port"))
    c.port = static_cast<unsigned short>(
        r.read_integer_in(g, "port", *e, 0, 65535, "must be a port number from 0 to 65535"));
  if (auto* e = g.find("user_header")) {
    c.user_header = r.read_string(g, "user_header", *e);
    if (c.user_header.empty())
      Reader::fail("gateway.user_header", "must not be empty", line_of(e->key));
  }
  count("max_body_bytes", c.max_body_bytes, std::int64_t{1} << 30);
  count("max_header_bytes", c.max_header_bytes, std::int64_t{1} << 20);
  count("max_json_depth", c.max_json_depth, 10'000);
  seconds("header_timeout_seconds", c.header_timeout);
  seconds("upstream_timeout_seconds", c.upstream_timeout);
  seconds("read_timeout_seconds", c.read_timeout);
  seconds("idle_timeout_seconds", c.idle_timeout);
  count("max_connections", c.max_connections, 1'000'000);
  count("upstream_max_connections", c.upstream_max_connections, 100'000);
  count("threads", c.threads, 1024);
  text("telemetry_jsonl", c.telemetry_jsonl);
  text("telemetry_postgres", c.telemetry_postgres);
  text("access_log", c.access_log);
  text("tls_cert_file", c.tls_cert_file);
  text("tls_key_file", c.tls_key_file);
  text("tls_client_ca_file", c.tls_client_ca_file);
  if (c.tls_cert_file.empty() != c.tls_key_file.empty())
    Reader::fail(c.tls_cert_file.empty() ? "gateway.tls_cert_file" : "gateway.tls_key_file",
                 "is required with gateway." +
                     std::string(c.tls_cert_file.empty() ? "tls_key_file" : "tls_cert_file") +
                     " (TLS needs both the certificate chain and its private key)",
                 line_of(g.find(c.tls_cert_file.empty() ? "tls_key_file" : "tls_cert_file")->key));
  if (!c.tls_client_ca_file.empty() && c.tls_cert_file.empty())
    Reader::fail("gateway.tls_client_ca_file",
                 "needs gateway.tls_cert_file and tls_key_file (client certificates are checked "
                 "on a TLS listener)",
                 line_of(g.find("tls_client_ca_file")->key));
  text("redis_url", c.redis_url);
  text("redis_key_prefix", c.redis_key_prefix);
  if (auto* e = g.find("redis_failure_policy"))
    c.redis_fail_open = r.read_choice(g, "redis_failure_policy", *e, {"fail_open", "fail_closed"},
                                      "fail_open, fail_closed") == 0;
  if (auto* e = g.find("share_deployment_budgets"))
    c.share_deployment_budgets = r.read_bool(g, "share_deployment_budgets", *e);
  if (auto* e = g.find("require_client_keys"))
    c.require_client_keys = r.read_bool(g, "require_client_keys", *e);
  if (auto* e = g.find("metrics_public")) c.metrics_public = r.read_bool(g, "metrics_public", *e);
  c.admin_keys = r.read_string_list(g, "admin_keys", "must be a list", true);
  for (auto& [node, path] : r.read_list(g, "client_keys"))
    c.client_keys.push_back(read_client_key(r, node, path));
  if (!c.allow_unknown_keys) {
    r.reject_unknown(g, "set gateway.allow_unknown_keys: true to allow it");
  } else {
    r.warn_unknown(g);
    for (const std::string& w : r.take_warnings()) logger()->warn("{}", w);
  }
  return c;
}

/// True for an address that only this machine can reach.
bool is_loopback(const std::string& address) {
  return address == "localhost" || address == "::1" || address.starts_with("127.");
}

}  // namespace

std::vector<std::string> startup_warnings(const GatewayConfig& config) {
  if (config.require_client_keys && config.client_keys.empty())
    throw ConfigError(
        "gateway.require_client_keys: true, but gateway.client_keys is empty: add client keys "
        "or set require_client_keys: false");
  std::vector<std::string> warnings;
  if (config.client_keys.empty())
    warnings.push_back("no gateway.client_keys: anyone who can reach " + config.listen_address +
                       ":" + std::to_string(config.port) +
                       " may use every deployment (add client_keys; "
                       "gateway.require_client_keys: true refuses to start without them)");
  if (!is_loopback(config.listen_address) && !config.tls())
    warnings.push_back("listening on " + config.listen_address +
                       " without TLS: API keys and prompts cross the network in clear text "
                       "(set gateway.tls_cert_file and tls_key_file, or put a TLS-terminating "
                       "proxy in front)");
  if (config.metrics_are_public() && !config.client_keys.empty())
    warnings.push_back(
        "gateway.metrics_public: true: /metrics (deployments, users, "
        "tiers) is served to anyone without a key");
  return warnings;
}

std::size_t GatewayConfig::io_threads() const {
  if (threads != 0) return threads;
  return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

std::optional<Priority> parse_priority(std::string_view text) {
  for (const Priority p : {Priority::high, Priority::normal, Priority::low})
    if (text == to_string(p)) return p;
  return std::nullopt;
}

QueueOptions queue_options(const GatewayConfig& config) {
  using std::chrono::milliseconds;
  QueueOptions o;
  o.max_attempts = kGatewayMaxAttempts;
  o.retry_budget =
      std::max<milliseconds>(o.retry_budget, config.upstream_timeout + std::chrono::seconds(30));
  o.execution_timeout = config.upstream_timeout + std::chrono::seconds(10);
  o.max_json_depth = 0;                  // bodies are parsed with gateway.max_json_depth already
  o.stats_top_users = kMetricsTopUsers;  // llmq_queue_depth_by_user
  return o;
}

GatewaySettings parse_gateway_settings(std::string_view yaml) {
  GatewaySettings s;
  s.llm = parse_config(yaml);  // validates the library's keys, reports their errors
  Reader reader("config");
  try {
    MappingView root = reader.view_mapping(reader.load(yaml), "", 1);
    s.gateway = parse_section(reader, root);
  } catch (const YAML::Exception& e) {
    // Not expected: every access is type-checked. Never let yaml-cpp's exceptions leak.
    throw ConfigError(std::string("gateway: cannot read YAML: ") + e.what());
  }
  for (std::size_t i = 0; i < s.gateway.client_keys.size(); ++i) {
    const std::string& tier = s.gateway.client_keys[i].tier;
    if (tier.empty()) continue;
    bool found = false;
    for (const UserTier& t : s.llm.user_tiers) found = found || t.name == tier;
    if (!found)
      throw ConfigError("gateway.client_keys[" + std::to_string(i) +
                        "].tier: no user tier named '" + tier + "' in user_tiers");
  }
  return s;
}

GatewaySettings load_gateway_settings(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path.string() + ": cannot read file");
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return parse_gateway_settings(ss.str());
  } catch (const ConfigError& e) {
    throw ConfigError(path.string() + ": " + e.what());
  }
}

}  // namespace llmq::gateway
