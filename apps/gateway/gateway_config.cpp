#include "gateway_config.hpp"

#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace llmq::gateway {
namespace {

[[noreturn]] void fail(const std::string& path, std::string_view problem, const YAML::Node& at) {
  std::string msg = path + ": " + std::string(problem);
  if (at.IsDefined() && at.Mark().line >= 0)
    msg += " (line " + std::to_string(at.Mark().line + 1) + ")";
  throw ConfigError(msg);
}

std::string text(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) fail(path, "must be a string", n);
  return expand_environment(n.Scalar(), path, n.Mark().line + 1);
}

std::int64_t positive(const YAML::Node& n, const std::string& path, std::int64_t max) {
  const std::string s = text(n, path);
  std::int64_t v = 0;
  try {
    std::size_t used = 0;
    v = std::stoll(s, &used);
    if (used != s.size()) v = 0;
  } catch (const std::exception&) {
    v = 0;
  }
  if (v <= 0 || v > max)
    fail(path, "must be a positive integer no larger than " + std::to_string(max), n);
  return v;
}

std::chrono::milliseconds seconds(const YAML::Node& n, const std::string& path) {
  const std::string s = text(n, path);
  double v = 0;
  try {
    std::size_t used = 0;
    v = std::stod(s, &used);
    if (used != s.size()) v = 0;
  } catch (const std::exception&) {
    v = 0;
  }
  if (!(v >= 0.001 && v <= 1e6))
    fail(path, "must be a number of seconds between 0.001 and 1000000", n);
  return std::chrono::milliseconds(static_cast<std::int64_t>(v * 1000.0 + 0.5));
}

bool boolean(const YAML::Node& n, const std::string& path) {
  const std::string b = text(n, path);
  if (b != "true" && b != "false") fail(path, "must be true or false", n);
  return b == "true";
}

GatewayConfig parse_section(const YAML::Node& g) {
  GatewayConfig c;
  if (!g || g.IsNull()) return c;
  if (!g.IsMap()) fail("gateway", "must be a mapping", g);
  // Read first: it decides what an unknown key below means.
  if (const YAML::Node allow = g["allow_unknown_keys"])
    c.allow_unknown_keys = boolean(allow, "gateway.allow_unknown_keys");
  static const std::set<std::string> known = {"listen_address",
                                              "port",
                                              "user_header",
                                              "client_keys",
                                              "max_body_bytes",
                                              "max_header_bytes",
                                              "max_json_depth",
                                              "header_timeout_seconds",
                                              "read_timeout_seconds",
                                              "idle_timeout_seconds",
                                              "upstream_timeout_seconds",
                                              "max_connections",
                                              "upstream_max_connections",
                                              "telemetry_jsonl",
                                              "telemetry_postgres",
                                              "redis_url",
                                              "redis_key_prefix",
                                              "redis_failure_policy",
                                              "share_deployment_budgets",
                                              "allow_unknown_keys"};
  for (const auto& kv : g) {
    if (!kv.first.IsScalar()) fail("gateway", "mapping keys must be plain strings", kv.first);
    const std::string key = kv.first.Scalar();
    const std::string path = "gateway." + key;
    const YAML::Node& v = kv.second;
    if (!known.count(key)) {
      if (!c.allow_unknown_keys)
        fail(path, "unknown key (set gateway.allow_unknown_keys: true to allow it)", kv.first);
      logger()->warn("{}: unknown key (line {})", path, kv.first.Mark().line + 1);
      continue;
    }
    if (key == "listen_address")
      c.listen_address = text(v, path);
    else if (key == "port") {
      // 0 asks the system for a free port (printed at start-up, or see --port-file).
      c.port = text(v, path) == "0" ? 0 : static_cast<unsigned short>(positive(v, path, 65535));
    } else if (key == "user_header") {
      c.user_header = text(v, path);
      if (c.user_header.empty()) fail(path, "must not be empty", v);
    } else if (key == "max_body_bytes")
      c.max_body_bytes = static_cast<std::size_t>(positive(v, path, std::int64_t{1} << 30));
    else if (key == "max_header_bytes")
      c.max_header_bytes = static_cast<std::size_t>(positive(v, path, std::int64_t{1} << 20));
    else if (key == "max_json_depth")
      c.max_json_depth = static_cast<std::size_t>(positive(v, path, 10'000));
    else if (key == "header_timeout_seconds")
      c.header_timeout = seconds(v, path);
    else if (key == "upstream_timeout_seconds")
      c.upstream_timeout = seconds(v, path);
    else if (key == "read_timeout_seconds")
      c.read_timeout = seconds(v, path);
    else if (key == "idle_timeout_seconds")
      c.idle_timeout = seconds(v, path);
    else if (key == "max_connections")
      c.max_connections = static_cast<std::size_t>(positive(v, path, 1'000'000));
    else if (key == "upstream_max_connections")
      c.upstream_max_connections = static_cast<std::size_t>(positive(v, path, 100'000));
    else if (key == "telemetry_jsonl")
      c.telemetry_jsonl = text(v, path);
    else if (key == "telemetry_postgres")
      c.telemetry_postgres = text(v, path);
    else if (key == "redis_url")
      c.redis_url = text(v, path);
    else if (key == "redis_key_prefix")
      c.redis_key_prefix = text(v, path);
    else if (key == "redis_failure_policy") {
      const std::string p = text(v, path);
      if (p != "fail_open" && p != "fail_closed") fail(path, "must be fail_open or fail_closed", v);
      c.redis_fail_open = p == "fail_open";
    } else if (key == "share_deployment_budgets") {
      c.share_deployment_budgets = boolean(v, path);
    } else if (key == "client_keys") {
      if (!v.IsSequence()) fail(path, "must be a list", v);
      for (std::size_t i = 0; i < v.size(); ++i) {
        const std::string item = path + "[" + std::to_string(i) + "]";
        const YAML::Node& e = v[i];
        if (!e.IsMap()) fail(item, "must be a mapping with key and optional user", e);
        if (!e["key"]) fail(item + ".key", "is required", e);
        ClientKey k;
        k.key = text(e["key"], item + ".key");
        if (k.key.empty()) fail(item + ".key", "must not be empty", e["key"]);
        if (e["user"]) k.user = text(e["user"], item + ".user");
        if (e["tier"]) {
          k.tier = text(e["tier"], item + ".tier");
          if (k.tier.empty()) fail(item + ".tier", "must not be empty", e["tier"]);
        }
        if (e["max_priority"]) {
          k.max_priority = parse_priority(text(e["max_priority"], item + ".max_priority"));
          if (!k.max_priority)
            fail(item + ".max_priority", "must be one of: high, normal, low", e["max_priority"]);
        }
        for (const auto& field : e)
          if (!field.first.IsScalar() ||
              !std::set<std::string>{"key", "user", "tier", "max_priority"}.count(
                  field.first.Scalar()))
            fail(item, "unknown key (known: key, user, tier, max_priority)", field.first);
        c.client_keys.push_back(std::move(k));
      }
    }
  }
  return c;
}

}  // namespace

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
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    throw ConfigError(std::string("config: ") + e.what());
  }
  try {
    s.gateway = parse_section(root["gateway"]);
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
