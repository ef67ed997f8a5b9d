/// @file config.cpp
/// Loading and validation of the mock server's configuration.
///
/// The YAML document is first converted to JSON while the line of every key path
/// ("deployments[1].req_per_min") is recorded; one JSON reader then checks each value
/// as it reads it, so the same code parses the YAML file and the JSON body of
/// PUT /mock/deployments/{name}/faults. Errors name the key path and, for YAML, the line.
/// No message quotes a value read from the input (keys may be secrets).

#include <llmq/mock/config.hpp>

#include <llmq/detail/yaml_reader.hpp>
#include <llmq/errors.hpp>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

namespace llmq::mock {

double FaultConfig::total_rate() const noexcept {
  double sum = reset_rate + stall_rate + malformed_rate + truncated_rate + slow_body_rate +
               stream_break_rate + stream_stall_rate + stream_malformed_rate;
  for (const auto& [status, rate] : error_rate) sum += rate;
  return sum;
}

std::string_view to_string(DeploymentType t) noexcept {
  return t == DeploymentType::chat ? "chat" : "embeddings";
}

namespace {

using nlohmann::json;

/// Longest delay accepted anywhere: ten minutes.
constexpr double kMaxDelayMs = 600000;
/// Fastest stream pace accepted (events per second).
constexpr double kMaxStreamRate = 1e6;
/// Longest 429 burst window or period: one hour.
constexpr std::int64_t kMaxBurstMs = 3600000;

/// A problem at a key path; turned into MockConfigError by the public entry points.
struct KeyError {
  std::string path;
  std::string problem;
};

/// Where each key path came from (YAML only) and the raw text of plain scalars.
struct SourceInfo {
  detail::yaml::LineTable lines;
  std::map<std::string, std::string> raw_scalars;
};

// Key paths and their lines: the shared settings reader's (detail/yaml_reader.hpp).
std::string child(const std::string& parent, std::string_view key) {
  return detail::yaml::child_path(parent, key);
}

std::string element(const std::string& parent, std::size_t i) {
  return detail::yaml::item_path(parent, i);
}

[[noreturn]] void fail(const std::string& path, std::string problem) {
  throw KeyError{path.empty() ? std::string("config") : path, std::move(problem)};
}

MockConfigError to_error(const KeyError& e, const SourceInfo* src) {
  std::string msg = "mock config: " + e.path + ": " + e.problem;
  if (src != nullptr) {
    // The line of the key itself, or of the closest enclosing key that has one.
    if (const int line = detail::yaml::line_of_path(src->lines, e.path); line > 0)
      msg += " (line " + std::to_string(line) + ")";
  }
  return MockConfigError(msg);
}

// ---- YAML -> JSON ----------------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

json scalar_to_json(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  if (iequals(s, "true")) return true;
  if (iequals(s, "false")) return false;
  if (s.empty() || s == "~" || iequals(s, "null")) return nullptr;
  // Integers, then decimals; anything else stays text.
  {
    std::size_t pos = 0;
    try {
      const long long v = std::stoll(s, &pos, 10);
      if (pos == s.size()) return v;
    } catch (const std::exception&) {
    }
  }
  {
    std::size_t pos = 0;
    try {
      const double v = std::stod(s, &pos);
      if (pos == s.size() && std::isfinite(v)) return v;
    } catch (const std::exception&) {
    }
  }
  return s;
}

json yaml_to_json(const YAML::Node& n, const std::string& path, SourceInfo& src) {
  const YAML::Mark mark = n.Mark();
  if (mark.line >= 0) src.lines.emplace(path, mark.line + 1);
  switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Scalar:
      src.raw_scalars.emplace(path, n.Scalar());
      return scalar_to_json(n);
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      std::size_t i = 0;
      for (const auto& item : n) {
        arr.push_back(yaml_to_json(item, element(path, i), src));
        ++i;
      }
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) fail(path, "keys must be plain names");
        const std::string key = kv.first.Scalar();
        const std::string key_path = child(path, key);
        if (obj.contains(key)) fail(key_path, "duplicate key");
        const YAML::Mark key_mark = kv.first.Mark();
        if (key_mark.line >= 0) src.lines[key_path] = key_mark.line + 1;
        obj[key] = yaml_to_json(kv.second, key_path, src);
      }
      return obj;
    }
  }
  return nullptr;
}

// ---- typed readers ---------------------------------------------------------------

/// Reads a JSON object, remembering which keys were consumed so unknown keys (typos)
/// are reported.
class ObjectReader {
 public:
  ObjectReader(const json& obj, std::string path, const SourceInfo* src)
      : obj_(obj), path_(std::move(path)), src_(src) {
    if (!obj_.is_object()) fail(path_, "must be a mapping");
  }

  [[nodiscard]] const json* find(std::string_view key) {
    known_.emplace(key);
    auto it = obj_.find(std::string(key));
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[nodiscard]] std::string path(std::string_view key) const { return child(path_, key); }

  std::optional<std::string> string(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    if (src_ != nullptr && (v->is_number() || v->is_boolean())) {
      if (auto it = src_->raw_scalars.find(path(key)); it != src_->raw_scalars.end())
        return it->second;
    }
    fail(path(key), "must be a string");
  }

  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    const std::string range =
        "must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
    if (v->is_number_unsigned()) {
      const auto u = v->get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(max)) fail(path(key), range);
      return static_cast<std::int64_t>(u);
    }
    if (!v->is_number_integer()) fail(path(key), range);
    const auto i = v->get<std::int64_t>();
    if (i < min || i > max) fail(path(key), range);
    return i;
  }

  std::optional<double> number(std::string_view key, double min, double max,
                               std::string_view problem) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) fail(path(key), std::string(problem));
    const double d = v->get<double>();
    if (!std::isfinite(d) || d < min || d > max) fail(path(key), std::string(problem));
    return d;
  }

  std::optional<bool> boolean(std::string_view key) {
    const json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) fail(path(key), "must be true or false");
    return v->get<bool>();
  }

  /// Fails on the first key that no reader asked for.
  void finish() const {
    for (const auto& [key, value] : obj_.items()) {
      if (known_.count(key) == 0) {
        std::string expected;
        for (const auto& k : known_) expected += (expected.empty() ? "" : ", ") + k;
        fail(child(path_, key), "unknown key (expected one of: " + expected + ")");
      }
    }
  }

 private:
  const json& obj_;
  std::string path_;
  const SourceInfo* src_;
  std::set<std::string, std::less<>> known_;
};

constexpr std::string_view kRate = "must be a probability in [0, 1]";
constexpr std::int64_t kMaxStreamFaultAfter = 1'000'000;
constexpr std::string_view kDelay = "must be a number of milliseconds in [0, 600000]";
constexpr std::string_view kStreamRate = "must be a number of events per second in [0, 1000000]";

LatencyConfig read_latency(const json& j, const std::string& path, const SourceInfo* src) {
  ObjectReader r(j, path, src);
  LatencyConfig l;
  if (auto d = r.string("distribution")) {
    if (*d == "fixed")
      l.distribution = LatencyConfig::Distribution::fixed;
    else if (*d == "uniform")
      l.distribution = LatencyConfig::Distribution::uniform;
    else if (*d == "lognormal")
      l.distribution = LatencyConfig::Distribution::lognormal;
    else
      fail(r.path("distribution"), "must be one of: fixed, uniform, lognormal");
  }
  if (auto v = r.number("ms", 0, kMaxDelayMs, kDelay)) l.ms = *v;
  if (auto v = r.number("min_ms", 0, kMaxDelayMs, kDelay)) l.min_ms = *v;
  if (auto v = r.number("max_ms", 0, kMaxDelayMs, kDelay)) l.max_ms = *v;
  if (auto v = r.number("median_ms", 0, kMaxDelayMs, kDelay)) l.median_ms = *v;
  if (auto v = r.number("sigma", 0, 10, "must be a number in [0, 10]")) l.sigma = *v;
  r.finish();
  return l;
}

FaultConfig read_faults(const json& j, const std::string& path, const SourceInfo* src) {
  ObjectReader r(j, path, src);
  FaultConfig f;
  if (const json* errors = r.find("error_rate")) {
    const std::string epath = r.path("error_rate");
    if (!errors->is_object()) fail(epath, "must be a mapping of HTTP status to probability");
    for (const auto& [key, value] : errors->items()) {
      const std::string kpath = child(epath, key);
      unsigned status = 0;
      bool digits = !key.empty() && key.size() <= 3;
      for (char c : key) digits = digits && c >= '0' && c <= '9';
      if (digits) status = static_cast<unsigned>(std::stoul(key));
      if (!digits || status < 400 || status > 599) fail(kpath, "status must be in 400..599");
      if (!value.is_number()) fail(kpath, std::string(kRate));
      const double p = value.get<double>();
      if (!(p >= 0 && p <= 1)) fail(kpath, std::string(kRate));
      f.error_rate[status] = p;
    }
  }
  if (auto v = r.number("reset_rate", 0, 1, kRate)) f.reset_rate = *v;
  if (auto v = r.number("stall_rate", 0, 1, kRate)) f.stall_rate = *v;
  if (auto v = r.number("malformed_rate", 0, 1, kRate)) f.malformed_rate = *v;
  if (auto v = r.number("truncated_rate", 0, 1, kRate)) f.truncated_rate = *v;
  if (auto v = r.number("slow_body_rate", 0, 1, kRate)) f.slow_body_rate = *v;
  if (auto v = r.integer("slow_body_ms", 0, 600000)) f.slow_body_ms = std::chrono::milliseconds(*v);
  if (auto v = r.boolean("force_429")) f.force_429 = *v;
  if (auto v = r.integer("force_429_retry_after_ms", 1, 3600000))
    f.force_429_retry_after = std::chrono::milliseconds(*v);
  if (auto v = r.number("stream_break_rate", 0, 1, kRate)) f.stream_break_rate = *v;
  if (auto v = r.number("stream_stall_rate", 0, 1, kRate)) f.stream_stall_rate = *v;
  if (auto v = r.number("stream_malformed_rate", 0, 1, kRate)) f.stream_malformed_rate = *v;
  if (auto v = r.integer("stream_fault_after", 0, kMaxStreamFaultAfter))
    f.stream_fault_after = static_cast<std::size_t>(*v);
  if (auto v = r.integer("burst_429_duration_ms", 0, kMaxBurstMs))
    f.burst_429_duration = std::chrono::milliseconds(*v);
  if (auto v = r.integer("burst_429_period_ms", 0, kMaxBurstMs))
    f.burst_429_period = std::chrono::milliseconds(*v);
  r.finish();
  if (f.total_rate() > 1.0 + 1e-9) fail(path, "the fault rates add up to more than 1");
  return f;
}

DeploymentConfig read_deployment(const json& j, const std::string& path, const SourceInfo* src) {
  ObjectReader r(j, path, src);
  DeploymentConfig d;
  auto name = r.string("name");
  if (!name) fail(r.path("name"), "is required");
  d.name = *name;
  d.model = r.string("model").value_or(d.name);
  if (auto t = r.string("type")) {
    if (*t == "chat")
      d.type = DeploymentType::chat;
    else if (*t == "embeddings")
      d.type = DeploymentType::embeddings;
    else
      fail(r.path("type"), "must be one of: chat, embeddings");
  }
  constexpr std::int64_t kMaxLimit = 1'000'000'000'000;
  d.req_per_min = r.integer("req_per_min", 0, kMaxLimit).value_or(0);
  d.tokens_per_min = r.integer("tokens_per_min", 0, kMaxLimit).value_or(0);
  d.api_key = r.string("api_key").value_or("");
  if (const json* l = r.find("latency")) d.latency = read_latency(*l, r.path("latency"), src);
  if (auto v = r.integer("embedding_dimensions", 1, 4096))
    d.embedding_dimensions = static_cast<int>(*v);
  d.stream_tokens_per_second = r.number("stream_tokens_per_second", 0, kMaxStreamRate, kStreamRate);
  if (const json* f = r.find("faults")) d.faults = read_faults(*f, r.path("faults"), src);
  r.finish();
  return d;
}

MockConfig read_config(const json& j, const SourceInfo* src) {
  ObjectReader r(j, "", src);
  MockConfig cfg;
  cfg.api_key = r.string("api_key").value_or("");
  if (auto v = r.integer("seed", 0, std::numeric_limits<std::int64_t>::max()))
    cfg.seed = static_cast<std::uint64_t>(*v);
  if (const json* l = r.find("latency")) cfg.latency = read_latency(*l, "latency", src);
  if (auto v = r.integer("embedding_dimensions", 1, 4096))
    cfg.embedding_dimensions = static_cast<int>(*v);
  if (auto v = r.number("stream_tokens_per_second", 0, kMaxStreamRate, kStreamRate))
    cfg.stream_tokens_per_second = *v;
  if (auto v = r.integer("max_body_bytes", 1024, std::int64_t{1} << 30))
    cfg.max_body_bytes = static_cast<std::size_t>(*v);
  if (auto v = r.integer("max_header_bytes", 1024, std::int64_t{1} << 20))
    cfg.max_header_bytes = static_cast<std::size_t>(*v);
  if (auto v = r.integer("idle_timeout_ms", 1, 3600000))
    cfg.idle_timeout = std::chrono::milliseconds(*v);
  if (auto v = r.boolean("allow_any_host")) cfg.allow_any_host = *v;
  const json* deployments = r.find("deployments");
  if (deployments == nullptr) fail("deployments", "is required (a list of deployments)");
  if (!deployments->is_array()) fail("deployments", "must be a list");
  for (std::size_t i = 0; i < deployments->size(); ++i)
    cfg.deployments.push_back(read_deployment((*deployments)[i], element("deployments", i), src));
  r.finish();
  return cfg;
}

// ---- invariants ------------------------------------------------------------------

void check_latency(const LatencyConfig& l, const std::string& path) {
  for (double v : {l.ms, l.min_ms, l.max_ms, l.median_ms})
    if (!(v >= 0 && v <= kMaxDelayMs)) fail(path, std::string(kDelay));
  if (!(l.sigma >= 0 && l.sigma <= 10)) fail(child(path, "sigma"), "must be in [0, 10]");
  if (l.distribution == LatencyConfig::Distribution::uniform && l.min_ms > l.max_ms)
    fail(child(path, "max_ms"), "must be at least min_ms");
  if (l.distribution == LatencyConfig::Distribution::lognormal) {
    if (!(l.median_ms > 0)) fail(child(path, "median_ms"), "must be positive for lognormal");
    if (l.max_ms > 0 && l.min_ms > l.max_ms)
      fail(child(path, "max_ms"), "must be at least min_ms (or 0 for no cap)");
  }
}

void check_faults(const FaultConfig& f, const std::string& path) {
  for (const auto& [status, p] : f.error_rate) {
    if (status < 400 || status > 599) fail(child(path, "error_rate"), "status must be in 400..599");
    if (!(p >= 0 && p <= 1)) fail(child(path, "error_rate"), std::string(kRate));
  }
  for (double p : {f.reset_rate, f.stall_rate, f.malformed_rate, f.truncated_rate, f.slow_body_rate,
                   f.stream_break_rate, f.stream_stall_rate, f.stream_malformed_rate})
    if (!(p >= 0 && p <= 1)) fail(path, "every rate " + std::string(kRate));
  if (f.total_rate() > 1.0 + 1e-9) fail(path, "the fault rates add up to more than 1");
  if (f.slow_body_ms.count() < 0 || f.slow_body_ms.count() > 600000)
    fail(child(path, "slow_body_ms"), "must be in [0, 600000]");
  if (f.force_429_retry_after.count() < 1)
    fail(child(path, "force_429_retry_after_ms"), "must be positive");
  if (f.stream_fault_after > static_cast<std::size_t>(kMaxStreamFaultAfter))
    fail(child(path, "stream_fault_after"),
         "must be at most " + std::to_string(kMaxStreamFaultAfter));
  if (f.burst_429_duration.count() < 0 || f.burst_429_duration.count() > kMaxBurstMs)
    fail(child(path, "burst_429_duration_ms"), "must be in [0, 3600000]");
  if (f.burst_429_period.count() < 0 || f.burst_429_period.count() > kMaxBurstMs)
    fail(child(path, "burst_429_period_ms"), "must be in [0, 3600000]");
  if (f.burst_429_period.count() > 0 && f.burst_429_period < f.burst_429_duration)
    fail(child(path, "burst_429_period_ms"), "must be at least burst_429_duration_ms (or 0)");
}

void check_stream_rate(double rate, const std::string& path) {
  if (!(rate >= 0 && rate <= kMaxStreamRate)) fail(path, std::string(kStreamRate));
}

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != '/' && c != '?' && c != '#' && c != '%';
  });
}

void check_config(const MockConfig& cfg) {
  if (cfg.embedding_dimensions < 1 || cfg.embedding_dimensions > 4096)
    fail("embedding_dimensions", "must be an integer in [1, 4096]");
  if (cfg.max_body_bytes < 1024) fail("max_body_bytes", "must be at least 1024");
  if (cfg.max_header_bytes < 1024) fail("max_header_bytes", "must be at least 1024");
  if (cfg.idle_timeout.count() < 1) fail("idle_timeout_ms", "must be positive");
  check_latency(cfg.latency, "latency");
  check_stream_rate(cfg.stream_tokens_per_second, "stream_tokens_per_second");
  if (cfg.deployments.empty()) fail("deployments", "must list at least one deployment");
  std::set<std::string, std::less<>> names;
  for (std::size_t i = 0; i < cfg.deployments.size(); ++i) {
    const DeploymentConfig& d = cfg.deployments[i];
    const std::string path = element("deployments", i);
    if (!valid_name(d.name))
      fail(child(path, "name"), "must be non-empty printable ASCII without / ? # % or spaces");
    if (!names.insert(d.name).second) fail(child(path, "name"), "duplicates an earlier name");
    if (d.req_per_min < 0) fail(child(path, "req_per_min"), "must not be negative");
    if (d.tokens_per_min < 0) fail(child(path, "tokens_per_min"), "must not be negative");
    if (d.embedding_dimensions && (*d.embedding_dimensions < 1 || *d.embedding_dimensions > 4096))
      fail(child(path, "embedding_dimensions"), "must be an integer in [1, 4096]");
    if (d.latency) check_latency(*d.latency, child(path, "latency"));
    if (d.stream_tokens_per_second)
      check_stream_rate(*d.stream_tokens_per_second, child(path, "stream_tokens_per_second"));
    check_faults(d.faults, child(path, "faults"));
  }
}

}  // namespace

MockConfig parse_mock_config(std::string_view yaml_text) {
  SourceInfo src;
  try {
    YAML::Node root;
    try {
      // One document, syntax and nesting checked, as the library's and the gateway's.
      root = detail::yaml::Reader("mock config", /*expand_env=*/false).load(yaml_text);
    } catch (const ConfigError& e) {
      throw MockConfigError(e.what());
    }
    const json j = yaml_to_json(root, "", src);
    MockConfig cfg = read_config(j, &src);
    check_config(cfg);
    return cfg;
  } catch (const KeyError& e) {
    throw to_error(e, &src);
  }
}

MockConfig load_mock_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw MockConfigError("mock config: cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return parse_mock_config(text.str());
}

FaultConfig parse_fault_config(const nlohmann::json& j) {
  try {
    FaultConfig f = read_faults(j, "faults", nullptr);
    check_faults(f, "faults");
    return f;
  } catch (const KeyError& e) {
    throw to_error(e, nullptr);
  }
}

nlohmann::json to_json(const FaultConfig& f) {
  json errors = json::object();
  for (const auto& [status, p] : f.error_rate) errors[std::to_string(status)] = p;
  json j;
  j["error_rate"] = std::move(errors);
  j["reset_rate"] = f.reset_rate;
  j["stall_rate"] = f.stall_rate;
  j["malformed_rate"] = f.malformed_rate;
  j["truncated_rate"] = f.truncated_rate;
  j["slow_body_rate"] = f.slow_body_rate;
  j["slow_body_ms"] = f.slow_body_ms.count();
  j["force_429"] = f.force_429;
  j["force_429_retry_after_ms"] = f.force_429_retry_after.count();
  j["stream_break_rate"] = f.stream_break_rate;
  j["stream_stall_rate"] = f.stream_stall_rate;
  j["stream_malformed_rate"] = f.stream_malformed_rate;
  j["stream_fault_after"] = f.stream_fault_after;
  j["burst_429_duration_ms"] = f.burst_429_duration.count();
  j["burst_429_period_ms"] = f.burst_429_period.count();
  return j;
}

void validate(const MockConfig& cfg) {
  try {
    check_config(cfg);
  } catch (const KeyError& e) {
    throw to_error(e, nullptr);
  }
}

}  // namespace llmq::mock
