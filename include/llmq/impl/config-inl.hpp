#pragma once
/// @file config-inl.hpp
/// YAML loading and validation of LLMConfig (see docs/configuration.md).
///
/// Parsing happens in two passes. The first walks the YAML tree, checks each value's
/// type and range as it reads it (so the error can name the exact key and line) and
/// records the line of every key it read. The second pass is the same invariant check
/// LLMConfig::validate() runs on a config built in code; when it runs after parsing it
/// looks the offending key's line up in the recorded table.
///
/// Secrets: no message ever quotes a value read from the file except unique_model_id
/// (in the duplicate-id error) and the names of environment variables.
/// Compiled once into llmq::llmq by src/config.cpp, or included by <llmq/config.hpp> under
/// LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/config.hpp>
#include <llmq/detail/inline.hpp>
#include <llmq/detail/yaml_reader.hpp>

#include <yaml-cpp/yaml.h>
#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llmq {

LLMQ_INLINE std::string_view to_string(ModelType t) noexcept {
  switch (t) {
    case ModelType::completion:
      return "completion";
    case ModelType::chat:
      return "chat";
    case ModelType::embeddings:
      return "embeddings";
  }
  return "unknown";
}

namespace detail::config_reading {
using namespace detail::yaml;  // the shared reader: key paths, lines, typed values

inline constexpr std::chrono::milliseconds kMaxDuration{static_cast<std::int64_t>(kMaxSeconds) *
                                                        1000};

inline constexpr std::string_view kRootPath = "config";
inline constexpr std::string_view kModelTypeChoices = "completion, chat, embeddings";

// Problem texts shared by the parser and the validator.
inline constexpr std::string_view kNotEmpty = "must not be empty";
inline constexpr std::string_view kHttpUrl = "must start with http:// or https://";
inline constexpr std::string_view kMaxWeightText = "must be at most 4294967296";
inline constexpr std::string_view kTierWeightText = "must be an integer from 1 to 1000000";
inline constexpr std::string_view kPolicyChoices = "fifo, fair";
inline constexpr std::string_view kPriorityChoices = "high, normal, low";

inline bool has_http_scheme(std::string_view url) {
  return url.starts_with("http://") || url.starts_with("https://");
}

inline bool is_var_start(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
inline bool is_var_char(char c) { return is_var_start(c) || (c >= '0' && c <= '9'); }

// ---------------------------------------------------------------------------------------
// Pass 2: invariants, shared by parse_config and LLMConfig::validate.

class InvariantChecker {
 public:
  explicit InvariantChecker(const LineTable* lines) : lines_(lines) {}

  void check(const LLMConfig& cfg) const {
    // Where each unique_model_id was first seen, for the duplicate error.
    std::map<std::string, std::string, std::less<>> seen_ids;
    auto check_unique = [&](const std::string& id, const std::string& entry_path) {
      const std::string id_path = child_path(entry_path, "unique_model_id");
      auto [it, inserted] = seen_ids.emplace(id, entry_path);
      if (inserted) return;
      std::string problem = "duplicate unique_model_id '" + id + "', already used by " + it->second;
      if (const int first_line = line_of(it->second); first_line > 0) {
        problem += " at line " + std::to_string(first_line);
      }
      fail(id_path, problem);
    };

    for (std::size_t g = 0; g < cfg.azure_open_ai.size(); ++g) {
      const AzureOpenAIConfig& group = cfg.azure_open_ai[g];
      const std::string gp = item_path("azure_open_ai", g);
      require_non_empty(group.api_key, child_path(gp, "api_key"));
      require_non_empty(group.api_version, child_path(gp, "api_version"));
      require_non_empty(group.api_type, child_path(gp, "api_type"));
      require_non_empty(group.azure_endpoint, child_path(gp, "azure_endpoint"));
      if (!has_http_scheme(group.azure_endpoint)) fail(child_path(gp, "azure_endpoint"), kHttpUrl);
      const std::string models_path = child_path(gp, "azure_oai_models");
      if (group.azure_oai_models.empty()) fail(models_path, "must be a non-empty list");
      for (std::size_t m = 0; m < group.azure_oai_models.size(); ++m) {
        const AzureModelConfig& model = group.azure_oai_models[m];
        const std::string mp = item_path(models_path, m);
        require_non_empty(model.unique_model_id, child_path(mp, "unique_model_id"));
        require_non_empty(model.model_name_in_azure, child_path(mp, "model_name_in_azure"));
        require_non_empty(model.deployment_name_in_azure,
                          child_path(mp, "deployment_name_in_azure"));
        check_model_type(model.model_type, child_path(mp, "model_type"));
        check_limits(model.req_per_min, model.tokens_per_min, model.error_backoff, model.weight,
                     model.priority, mp);
        check_unique(model.unique_model_id, mp);
      }
    }

    for (std::size_t c = 0; c < cfg.custom_models.size(); ++c) {
      const CustomModelConfig& model = cfg.custom_models[c];
      const std::string cp = item_path("custom_models", c);
      require_non_empty(model.model, child_path(cp, "model"));
      require_non_empty(model.base_url, child_path(cp, "base_url"));
      if (!has_http_scheme(model.base_url)) fail(child_path(cp, "base_url"), kHttpUrl);
      check_model_type(model.model_type, child_path(cp, "model_type"));
      check_limits(model.req_per_min, model.tokens_per_min, model.error_backoff, model.weight,
                   model.priority, cp);
      check_unique(model.unique_model_id.empty() ? model.model : model.unique_model_id, cp);
    }

    if (cfg.azure_open_ai.empty() && cfg.custom_models.empty()) {
      fail(std::string(kRootPath),
           "at least one deployment is required (in azure_open_ai or custom_models)");
    }

    if (cfg.user_limits.max_num_requests_in_time_window <= 0) {
      fail("user_limits.max_num_requests_in_time_window", kPositiveInt);
    }
    check_positive_duration(cfg.user_limits.time_window, "user_limits.time_window_in_seconds");
    if (cfg.scheduler_limits.max_queue_size == 0) {
      fail("scheduler_limits.max_queue_size", kPositiveInt);
    }
    check_positive_duration(cfg.scheduler_limits.request_timeout,
                            "scheduler_limits.request_timeout_seconds");
    if (cfg.scheduler_limits.policy != SchedulingPolicy::fifo &&
        cfg.scheduler_limits.policy != SchedulingPolicy::fair) {
      fail("scheduler_limits.policy", std::string("must be one of ").append(kPolicyChoices));
    }
    check_positive_duration(cfg.scheduler_limits.priority_aging,
                            "scheduler_limits.priority_aging_seconds");
    check_tiers(cfg.user_tiers);
  }

 private:
  /// The recorded line of `path`, else of its closest recorded ancestor; 0 if none.
  [[nodiscard]] int line_of(const std::string& path) const {
    return lines_ == nullptr ? 0 : line_of_path(*lines_, path);
  }

  [[noreturn]] void fail(const std::string& path, std::string_view problem) const {
    throw ConfigError(format_problem(path, problem, line_of(path)));
  }

  void require_non_empty(const std::string& value, const std::string& path) const {
    if (value.empty()) fail(path, kNotEmpty);
  }

  void check_model_type(ModelType t, const std::string& path) const {
    if (t != ModelType::completion && t != ModelType::chat && t != ModelType::embeddings) {
      fail(path, std::string("must be one of ").append(kModelTypeChoices));
    }
  }

  void check_limits(std::int64_t rpm, std::int64_t tpm, std::chrono::milliseconds backoff,
                    std::int64_t weight, std::int64_t priority, const std::string& entry) const {
    if (rpm <= 0) fail(child_path(entry, "req_per_min"), kPositiveInt);
    if (tpm <= 0) fail(child_path(entry, "tokens_per_min"), kPositiveInt);
    const std::string bp = child_path(entry, "error_backoff_in_seconds");
    if (backoff.count() < 0) fail(bp, kNonNegativeSeconds);
    if (backoff > kMaxDuration) fail(bp, kMaxSecondsText);
    // 0 means "not set" (use req_per_min); the parser rejects an explicit 0.
    if (weight < 0) fail(child_path(entry, "weight"), kPositiveInt);
    if (weight > kMaxDeploymentWeight) fail(child_path(entry, "weight"), kMaxWeightText);
    if (priority < 0) fail(child_path(entry, "priority"), kNonNegativeInt);
  }

  void check_tiers(const std::vector<UserTier>& tiers) const {
    // Where each user id was first listed, for the duplicate error.
    std::map<std::string, std::string, std::less<>> seen_users;
    std::map<std::string, bool, std::less<>> seen_names;
    for (const UserTier& tier : tiers) {
      const std::string tp = child_path("user_tiers", tier.name);
      if (tier.name.empty()) fail("user_tiers", "tier names must not be empty");
      if (!seen_names.emplace(tier.name, true).second) fail(tp, "duplicate tier name");
      if (tier.max_num_requests_in_time_window && *tier.max_num_requests_in_time_window <= 0) {
        fail(child_path(tp, "max_num_requests_in_time_window"), kPositiveInt);
      }
      if (tier.time_window)
        check_positive_duration(*tier.time_window, child_path(tp, "time_window_in_seconds"));
      if (tier.weight == 0 || tier.weight > kMaxTierWeight) {
        fail(child_path(tp, "weight"), kTierWeightText);
      }
      if (static_cast<std::size_t>(tier.priority) >= kPriorityLevels) {
        fail(child_path(tp, "priority"), std::string("must be one of ").append(kPriorityChoices));
      }
      for (std::size_t i = 0; i < tier.users.size(); ++i) {
        const std::string up = item_path(child_path(tp, "users"), i);
        require_non_empty(tier.users[i], up);
        auto [it, inserted] = seen_users.emplace(tier.users[i], up);
        if (!inserted) {
          std::string problem = "user '" + tier.users[i] + "' is already in " + it->second;
          if (const int first_line = line_of(it->second); first_line > 0) {
            problem += " at line " + std::to_string(first_line);
          }
          fail(up, problem);
        }
      }
    }
  }

  void check_positive_duration(std::chrono::milliseconds d, const std::string& path) const {
    if (d.count() <= 0) fail(path, kPositiveSeconds);
    if (d > kMaxDuration) fail(path, kMaxSecondsText);
  }

  const LineTable* lines_;
};

// ---------------------------------------------------------------------------------------
// Pass 1: the YAML walk.

class YamlConfigParser : public yaml::Reader {
 public:
  YamlConfigParser() : Reader("config") {}

  LLMConfig parse(std::string_view text) {
    const YAML::Node root = load(text);

    LLMConfig cfg;
    try {
      read_root(root, cfg);
    } catch (const YAML::Exception& e) {
      // Not expected: every access above is type-checked. Never let yaml-cpp leak.
      throw ConfigError(format_problem(kRootPath, std::string("cannot read YAML: ") + e.msg,
                                       e.mark.is_null() ? 0 : e.mark.line + 1));
    }
    InvariantChecker(&lines()).check(cfg);
    cfg.warnings = take_warnings();
    for (const std::string& w : cfg.warnings) logger()->warn("config: {}", w);
    return cfg;
  }

 private:
  Priority read_priority(const MappingView& map, std::string_view key,
                         const MappingView::Entry& entry) {
    return static_cast<Priority>(
        read_choice(map, key, entry, {"high", "normal", "low"}, kPriorityChoices));
  }

  ModelType read_model_type(const MappingView& map, std::string_view key,
                            const MappingView::Entry& entry) {
    const std::string problem = std::string("must be one of ").append(kModelTypeChoices);
    const std::string text = scalar_text(map, key, entry, problem);
    if (text == "completion") return ModelType::completion;
    if (text == "chat") return ModelType::chat;
    if (text == "embeddings") return ModelType::embeddings;
    fail(child_path(map.path, key), problem, line_of(entry.key));
  }

  void read_root(const YAML::Node& root, LLMConfig& cfg) {
    MappingView map = view_mapping(root, "", line_of(root));

    for (auto& [node, path] : read_list(map, "azure_open_ai")) {
      cfg.azure_open_ai.push_back(read_azure_group(node, path));
    }
    for (auto& [node, path] : read_list(map, "custom_models")) {
      cfg.custom_models.push_back(read_custom_model(node, path));
    }
    if (MappingView::Entry* e = map.find("user_limits")) {
      const std::string path = key_path(map, "user_limits", *e);
      read_user_limits(e->value, path, line_of(e->key), cfg.user_limits);
    }
    if (MappingView::Entry* e = map.find("scheduler_limits")) {
      const std::string path = key_path(map, "scheduler_limits", *e);
      read_scheduler_limits(e->value, path, line_of(e->key), cfg.scheduler_limits);
    }
    if (MappingView::Entry* e = map.find("user_tiers")) {
      const std::string path = key_path(map, "user_tiers", *e);
      read_user_tiers(e->value, path, line_of(e->key), cfg.user_tiers);
    }
    map.find("gateway");  // reserved for llmq-gateway: accepted, not read here
    warn_unknown(map);
  }

  AzureOpenAIConfig read_azure_group(const YAML::Node& node, const std::string& path) {
    MappingView map = view_mapping(node, path, line_of(node));
    AzureOpenAIConfig group;
    group.api_key = read_string(map, "api_key", require(map, "api_key"));
    group.api_version = read_string(map, "api_version", require(map, "api_version"));
    if (MappingView::Entry* e = map.find("api_type"))
      group.api_type = read_string(map, "api_type", *e);
    group.azure_endpoint = read_string(map, "azure_endpoint", require(map, "azure_endpoint"));
    require(map, "azure_oai_models");
    for (auto& [item, item_path] : read_list(map, "azure_oai_models")) {
      group.azure_oai_models.push_back(read_azure_model(item, item_path));
    }
    warn_unknown(map);
    return group;
  }

  /// The keys azure_oai_models[] and custom_models[] entries share.
  template <typename ModelConfig>
  void read_common_model_keys(MappingView& map, ModelConfig& out) {
    out.model_type = read_model_type(map, "model_type", require(map, "model_type"));
    out.req_per_min = read_positive_int(map, "req_per_min", require(map, "req_per_min"));
    out.tokens_per_min = read_positive_int(map, "tokens_per_min", require(map, "tokens_per_min"));
    if (MappingView::Entry* e = map.find("error_backoff_in_seconds")) {
      out.error_backoff = read_seconds(map, "error_backoff_in_seconds", *e, /*allow_zero=*/true);
    }
    if (MappingView::Entry* e = map.find("weight"))
      out.weight = read_positive_int(map, "weight", *e);
    if (MappingView::Entry* e = map.find("priority"))
      out.priority = read_non_negative_int(map, "priority", *e);
  }

  AzureModelConfig read_azure_model(const YAML::Node& node, const std::string& path) {
    MappingView map = view_mapping(node, path, line_of(node));
    AzureModelConfig model;
    model.unique_model_id = read_string(map, "unique_model_id", require(map, "unique_model_id"));
    model.model_name_in_azure =
        read_string(map, "model_name_in_azure", require(map, "model_name_in_azure"));
    model.deployment_name_in_azure =
        read_string(map, "deployment_name_in_azure", require(map, "deployment_name_in_azure"));
    read_common_model_keys(map, model);
    warn_unknown(map);
    return model;
  }

  CustomModelConfig read_custom_model(const YAML::Node& node, const std::string& path) {
    MappingView map = view_mapping(node, path, line_of(node));
    CustomModelConfig model;
    model.model = read_string(map, "model", require(map, "model"));
    if (MappingView::Entry* e = map.find("unique_model_id")) {
      model.unique_model_id = read_string(map, "unique_model_id", *e);
    } else {
      model.unique_model_id = model.model;
    }
    model.base_url = read_string(map, "base_url", require(map, "base_url"));
    if (MappingView::Entry* e = map.find("api_key"))
      model.api_key = read_string(map, "api_key", *e);
    read_common_model_keys(map, model);
    warn_unknown(map);
    return model;
  }

  void read_user_limits(const YAML::Node& node, const std::string& path, int line,
                        UserLimits& out) {
    MappingView map = view_mapping(node, path, line);
    if (MappingView::Entry* e = map.find("max_num_requests_in_time_window")) {
      out.max_num_requests_in_time_window =
          read_positive_int(map, "max_num_requests_in_time_window", *e);
    }
    std::string_view key;
    if (MappingView::Entry* e =
            find_with_alias(map, "time_window_in_seconds", "time_window_length_in_seconds", &key)) {
      out.time_window = read_seconds(map, key, *e, /*allow_zero=*/false);
    }
    warn_unknown(map);
  }

  void read_scheduler_limits(const YAML::Node& node, const std::string& path, int line,
                             SchedulerLimits& out) {
    MappingView map = view_mapping(node, path, line);
    if (MappingView::Entry* e = map.find("max_queue_size")) {
      out.max_queue_size = static_cast<std::size_t>(read_positive_int(map, "max_queue_size", *e));
    }
    std::string_view key;
    if (MappingView::Entry* e =
            find_with_alias(map, "request_timeout_seconds", "ttl_in_seconds", &key)) {
      out.request_timeout = read_seconds(map, key, *e, /*allow_zero=*/false);
    }
    if (MappingView::Entry* e = map.find("policy")) {
      out.policy = static_cast<SchedulingPolicy>(
          read_choice(map, "policy", *e, {"fifo", "fair"}, kPolicyChoices));
    }
    if (MappingView::Entry* e = map.find("max_queued_per_user")) {
      out.max_queued_per_user =
          static_cast<std::size_t>(read_non_negative_int(map, "max_queued_per_user", *e));
    }
    if (MappingView::Entry* e = map.find("priority_aging_seconds")) {
      out.priority_aging = read_seconds(map, "priority_aging_seconds", *e, /*allow_zero=*/false);
    }
    if (MappingView::Entry* e = map.find("predictive_admission")) {
      out.predictive_admission = read_bool(map, "predictive_admission", *e);
    }
    warn_unknown(map);
  }

  /// `user_tiers`: a mapping of tier name -> settings.
  void read_user_tiers(const YAML::Node& node, const std::string& path, int line,
                       std::vector<UserTier>& out) {
    MappingView tiers = view_mapping(node, path, line);
    for (auto& [name, entry] : tiers.entries) {
      entry.used = true;
      const std::string tp = key_path(tiers, name, entry);
      if (name.empty()) fail(path, "tier names must not be empty", line_of(entry.key));
      MappingView map = view_mapping(entry.value, tp, line_of(entry.key));
      UserTier tier;
      tier.name = name;
      // Empty ids are refused by the invariant checks (with the others' duplicates).
      tier.users = read_string_list(map, "users", "must be a list of user ids", false);
      if (MappingView::Entry* e = map.find("max_num_requests_in_time_window")) {
        tier.max_num_requests_in_time_window =
            read_positive_int(map, "max_num_requests_in_time_window", *e);
      }
      std::string_view key;
      if (MappingView::Entry* e = find_with_alias(map, "time_window_in_seconds",
                                                  "time_window_length_in_seconds", &key)) {
        tier.time_window = read_seconds(map, key, *e, /*allow_zero=*/false);
      }
      if (MappingView::Entry* e = map.find("weight")) {
        const std::int64_t w = read_positive_int(map, "weight", *e);
        if (w > kMaxTierWeight) fail(child_path(tp, "weight"), kTierWeightText, line_of(e->key));
        tier.weight = static_cast<std::uint32_t>(w);
      }
      if (MappingView::Entry* e = map.find("priority")) {
        tier.priority = read_priority(map, "priority", *e);
      }
      if (MappingView::Entry* e = map.find("max_queued_per_user")) {
        tier.max_queued_per_user =
            static_cast<std::size_t>(read_non_negative_int(map, "max_queued_per_user", *e));
      }
      warn_unknown(map);
      out.push_back(std::move(tier));
    }
  }
};

/// The keys azure_oai_models[] and custom_models[] entries share, into their Deployment
/// (weight: the configured one, else req_per_min).
template <typename ModelConfig>
void copy_common_model_keys(const ModelConfig& model, Deployment& d) {
  d.req_per_min = model.req_per_min;
  d.tokens_per_min = model.tokens_per_min;
  d.error_backoff = model.error_backoff;
  d.weight = model.weight > 0 ? model.weight : std::min(model.req_per_min, kMaxDeploymentWeight);
  d.priority = model.priority;
}

}  // namespace detail::config_reading

// ---------------------------------------------------------------------------------------

LLMQ_INLINE std::vector<Deployment> LLMConfig::deployments() const {
  using namespace detail::config_reading;
  std::vector<Deployment> out;
  std::size_t count = custom_models.size();
  for (const AzureOpenAIConfig& group : azure_open_ai) count += group.azure_oai_models.size();
  out.reserve(count);

  for (const AzureOpenAIConfig& group : azure_open_ai) {
    for (const AzureModelConfig& model : group.azure_oai_models) {
      Deployment d;
      d.unique_model_id = model.unique_model_id;
      d.model_name_in_azure = model.model_name_in_azure;
      d.deployment_name_in_azure = model.deployment_name_in_azure;
      d.model_type = model.model_type;
      d.endpoint = group.azure_endpoint;
      d.api_key = group.api_key;
      d.api_version = group.api_version;
      d.api_type = group.api_type;
      d.provider = Provider::azure;
      copy_common_model_keys(model, d);
      out.push_back(std::move(d));
    }
  }
  for (const CustomModelConfig& model : custom_models) {
    Deployment d;
    d.unique_model_id = model.unique_model_id.empty() ? model.model : model.unique_model_id;
    d.model_name_in_azure = model.model;
    d.deployment_name_in_azure = model.model;
    d.model_type = model.model_type;
    d.endpoint = model.base_url;
    d.api_key = model.api_key;
    d.provider = Provider::openai_compatible;
    copy_common_model_keys(model, d);
    out.push_back(std::move(d));
  }
  return out;
}

LLMQ_INLINE void LLMConfig::validate() const {
  detail::config_reading::InvariantChecker(nullptr).check(*this);
}

LLMQ_INLINE std::string expand_environment(std::string_view in, std::string_view path, int line) {
  using namespace detail::config_reading;
  auto fail = [&](std::string_view where, std::string_view problem, int at) {
    throw ConfigError(format_problem(where, problem, at));
  };
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c != '$' || i + 1 >= in.size()) {
      out.push_back(c);
      continue;
    }
    if (in[i + 1] == '$') {
      out.push_back('$');
      ++i;
      continue;
    }
    if (in[i + 1] != '{') {
      out.push_back(c);
      continue;
    }
    const std::size_t close = in.find('}', i + 2);
    if (close == std::string_view::npos) fail(path, "unterminated '${' (missing '}')", line);
    const std::string name(in.substr(i + 2, close - i - 2));
    if (name.empty()) fail(path, "empty environment variable name in '${}'", line);
    bool valid = is_var_start(name.front());
    for (char n : name) valid = valid && is_var_char(n);
    if (!valid) {
      // The text between the braces is not echoed: it may be part of a secret.
      fail(path, "invalid environment variable name in '${...}' (use letters, digits and _)", line);
    }
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) fail(path, "environment variable '" + name + "' is not set", line);
    out.append(value);
    i = close;
  }
  return out;
}

LLMQ_INLINE LLMConfig parse_config(std::string_view yaml) {
  return detail::config_reading::YamlConfigParser().parse(yaml);
}

LLMQ_INLINE LLMConfig load_config(const std::filesystem::path& path) {
  using namespace detail::config_reading;
  const std::string name = path.string();
  auto cannot_read = [&name](int err) {
    return ConfigError(name + ": cannot read file: " + std::generic_category().message(err));
  };

  errno = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(name.c_str(), "rb"),
                                                       &std::fclose);
  if (!file) throw cannot_read(errno != 0 ? errno : EIO);
  std::string text;
  char buffer[16384];
  while (true) {
    const std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get());
    text.append(buffer, n);
    if (n < sizeof buffer) break;
  }
  if (std::ferror(file.get()) != 0) throw cannot_read(errno != 0 ? errno : EIO);

  try {
    return parse_config(text);
  } catch (const ConfigError& e) {
    throw ConfigError(name + ": " + e.what());
  }
}

}  // namespace llmq
