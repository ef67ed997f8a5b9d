#pragma once
/// @file config.hpp
/// Configuration: the seed's YAML format (`azure_open_ai`, `user_limits`,
/// `scheduler_limits`) plus `custom_models` for OpenAI-compatible servers and
/// `user_tiers`. Full reference: docs/configuration.md.

#include <llmq/scheduler.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmq {

/// What a deployment serves. `completion` and `chat` both serve LLM calls.
enum class ModelType { completion, chat, embeddings };

/// True for `completion` and `chat`.
[[nodiscard]] constexpr bool is_llm(ModelType t) noexcept { return t != ModelType::embeddings; }

/// The config spelling of a model type ("completion", "chat", "embeddings").
[[nodiscard]] std::string_view to_string(ModelType t) noexcept;

/// Which wire protocol a deployment speaks.
enum class Provider {
  azure,              ///< Azure OpenAI (`azure_open_ai[]` in the config)
  openai_compatible,  ///< OpenAI or an OpenAI-compatible server (`custom_models[]`)
};

/// One deployment with everything needed to call it: the flattened view of an
/// `azure_oai_models[]` entry together with its `azure_open_ai[]` group, or of a
/// `custom_models[]` entry.
struct Deployment {
  std::string unique_model_id;           ///< unique across the whole config
  std::string model_name_in_azure;       ///< the model (e.g. "gpt-4o"); `model` for custom models
  std::string deployment_name_in_azure;  ///< the deployment; `model` for custom models
  ModelType model_type = ModelType::chat;
  std::string endpoint;     ///< `azure_endpoint`, or a custom model's `base_url`
  std::string api_key;      ///< secret: never logged, never in telemetry
  std::string api_version;  ///< Azure `api-version`; empty for custom models
  std::string api_type;     ///< "azure" for Azure groups; empty for custom models
  Provider provider = Provider::azure;
  std::int64_t req_per_min = 0;     ///< requests per minute this deployment accepts (> 0)
  std::int64_t tokens_per_min = 0;  ///< tokens per minute this deployment accepts (> 0)
  /// How long the deployment is skipped after a failure that carried no Retry-After.
  std::chrono::milliseconds error_backoff{std::chrono::seconds(60)};
  /// Share of traffic relative to its peers of the same priority; defaults to
  /// `req_per_min` (at most kMaxDeploymentWeight).
  std::int64_t weight = 0;
  /// Priority group (>= 0, lower first): requests go to the best group with room and
  /// spill over to the next only when it has none.
  std::int64_t priority = 0;
};

/// Largest deployment weight (explicit, or `req_per_min` when absent).
inline constexpr std::int64_t kMaxDeploymentWeight = std::int64_t{1} << 32;

/// One `azure_oai_models[]` entry.
struct AzureModelConfig {
  std::string unique_model_id;
  std::string model_name_in_azure;
  std::string deployment_name_in_azure;
  ModelType model_type = ModelType::chat;
  std::int64_t req_per_min = 0;
  std::int64_t tokens_per_min = 0;
  std::chrono::milliseconds error_backoff{std::chrono::seconds(60)};
  std::int64_t weight = 0;    ///< 0 in the YAML is rejected; absent means req_per_min
  std::int64_t priority = 0;  ///< priority group, >= 0, lower first
};

/// One `azure_open_ai[]` entry: an Azure OpenAI resource and its deployments.
struct AzureOpenAIConfig {
  std::string api_key;
  std::string api_version;
  std::string api_type = "azure";
  std::string azure_endpoint;
  std::vector<AzureModelConfig> azure_oai_models;
};

/// One `custom_models[]` entry: an OpenAI-compatible deployment (vLLM, llama.cpp
/// server, Ollama, OpenAI itself) reached at `{base_url}/v1/...` with a Bearer key.
struct CustomModelConfig {
  std::string unique_model_id;  ///< defaults to `model`
  std::string base_url;
  std::string api_key;  ///< may be empty for servers without auth
  std::string model;
  ModelType model_type = ModelType::chat;
  std::int64_t req_per_min = 0;
  std::int64_t tokens_per_min = 0;
  std::chrono::milliseconds error_backoff{std::chrono::seconds(60)};
  std::int64_t weight = 0;
  std::int64_t priority = 0;  ///< priority group, >= 0, lower first
};

/// Per-user sliding-window limit (`user_limits`).
struct UserLimits {
  /// Requests a user may have admitted within any window. Default 40.
  std::int64_t max_num_requests_in_time_window = 40;
  /// Window length (`time_window_in_seconds`, also read as
  /// `time_window_length_in_seconds`). Default 60 s.
  std::chrono::milliseconds time_window{std::chrono::seconds(60)};
};

/// Queue bounds and scheduling (`scheduler_limits`), all applied by LLMQueue (through
/// make_scheduler, SchedulerOptions and DispatchRateEstimator).
struct SchedulerLimits {
  /// Requests that may wait at once; one more gets SchedulerQueueFullError. Default 1000.
  std::size_t max_queue_size = 1000;
  /// How long a request may wait before QueueTimeoutError (`request_timeout_seconds`,
  /// also read as `ttl_in_seconds`; fractions allowed). Default 300 s.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(300)};
  /// `policy`: `fifo` (arrival order) or `fair` (deficit round-robin across users by
  /// their tier's weight, FIFO per user). Default fifo.
  SchedulingPolicy policy = SchedulingPolicy::fifo;
  /// Requests one user may have waiting at once; one more is refused for that user
  /// alone. 0 (the default): no cap.
  std::size_t max_queued_per_user = 0;
  /// A waiting request moves up one priority level per this much waiting
  /// (`priority_aging_seconds`; a low request reaches high after twice this). > 0.
  /// Default 30 s.
  std::chrono::milliseconds priority_aging{std::chrono::seconds(30)};
  /// Refuse at admission a request whose predicted wait (its place in line over its
  /// class's measured dispatch rate) exceeds request_timeout. Default false.
  bool predictive_admission = false;
};

/// Largest fair-share weight of a tier.
inline constexpr std::uint32_t kMaxTierWeight = 1'000'000;

/// One `user_tiers` entry: the users it holds and what applies to them. Absent values
/// are those of the default tier (`user_limits`, `scheduler_limits`).
struct UserTier {
  std::string name;                ///< the key in `user_tiers`
  std::vector<std::string> users;  ///< user ids (each in one tier at most)
  /// `max_num_requests_in_time_window`; absent: user_limits'.
  std::optional<std::int64_t> max_num_requests_in_time_window;
  /// `time_window_in_seconds`; absent: user_limits'.
  std::optional<std::chrono::milliseconds> time_window;
  /// Fair-share `weight` under the fair policy, 1..kMaxTierWeight. Default 1.
  std::uint32_t weight = 1;
  /// Default `priority` of the tier's requests. Default normal.
  Priority priority = Priority::normal;
  /// `max_queued_per_user`; absent: scheduler_limits'; 0: no cap.
  std::optional<std::size_t> max_queued_per_user;
};

/// The whole configuration.
struct LLMConfig {
  std::vector<AzureOpenAIConfig> azure_open_ai;
  std::vector<CustomModelConfig> custom_models;
  UserLimits user_limits;
  SchedulerLimits scheduler_limits;
  /// Tenant tiers, in config order (see user_tiers.hpp for the lookup by user id).
  std::vector<UserTier> user_tiers;
  /// Warnings found while parsing (unknown keys); each was also logged.
  std::vector<std::string> warnings;

  /// Every deployment, Azure ones first in config order, then custom models.
  [[nodiscard]] std::vector<Deployment> deployments() const;

  /// Checks the invariants parse_config enforces (at least one deployment, positive
  /// limits, unique ids, ...) on a config built in code. Throws ConfigError.
  void validate() const;
};

/// Parses YAML text. `${VAR}` in string values is replaced by the environment variable
/// VAR (`$$` stands for a literal `$`). Throws ConfigError naming key path, problem
/// and line.
[[nodiscard]] LLMConfig parse_config(std::string_view yaml);

/// Replaces `${VAR}` in `text` by the environment variable VAR and `$$` by `$`, as
/// parse_config does for every string value. Throws ConfigError naming `key_path` (and
/// `line` when > 0) for an unset variable or a malformed reference.
[[nodiscard]] std::string expand_environment(std::string_view text, std::string_view key_path,
                                             int line = 0);

/// Reads and parses a YAML file. Throws ConfigError (also when the file is unreadable).
[[nodiscard]] LLMConfig load_config(const std::filesystem::path& path);

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/config-inl.hpp>
#endif
