// Tests of config.hpp (YAML parsing, validation, deployments) and of the messages of
// the errors defined out of line in errors.cpp.

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <llmq/config.hpp>
#include <llmq/errors.hpp>
#include <llmq/log.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using llmq::ConfigError;
using llmq::LLMConfig;
using llmq::ModelType;
using llmq::parse_config;

// The example of the seed README, verbatim (indentation and blank line included).
constexpr std::string_view kSeedExample = R"(azure_open_ai:
  - api_key: "your-api-key"
    api_version: "2023-03-15-preview"
    api_type: "azure"
    azure_endpoint: "https://your-resource.openai.azure.com/"
    azure_oai_models:
      - unique_model_id: "gpt-4o"
        model_name_in_azure: "gpt-4o"
        deployment_name_in_azure: "gpt-4o"
        model_type: "completion"
        req_per_min: 450
        tokens_per_min: 75000
        error_backoff_in_seconds: 60
      
      - unique_model_id: "text-embedding-ada-002"
        model_name_in_azure: "text-embedding-ada-002"
        deployment_name_in_azure: "text-embedding-ada-002"
        model_type: "embeddings"
        req_per_min: 1020
        tokens_per_min: 170000
        error_backoff_in_seconds: 60

user_limits:
  max_num_requests_in_time_window: 40
  time_window_in_seconds: 60

scheduler_limits:
  max_queue_size: 1000
  request_timeout_seconds: 300
)";

// A minimal valid Azure group; tests append or substitute lines.
constexpr std::string_view kMinimalAzure = R"(azure_open_ai:
  - api_key: "sk-SECRET"
    api_version: "2024-06-01"
    azure_endpoint: "https://example.openai.azure.com"
    azure_oai_models:
      - unique_model_id: "m1"
        model_name_in_azure: "gpt-4o"
        deployment_name_in_azure: "dep1"
        model_type: "chat"
        req_per_min: 10
        tokens_per_min: 1000
)";

// A minimal valid custom model section.
constexpr std::string_view kMinimalCustom = R"(custom_models:
  - base_url: "http://localhost:8000"
    model: "llama-3"
    model_type: "chat"
    req_per_min: 5
    tokens_per_min: 500
)";

std::string replace_once(std::string_view text, std::string_view from, std::string_view to) {
  std::string out(text);
  const std::size_t pos = out.find(from);
  EXPECT_NE(pos, std::string::npos) << "test bug: '" << from << "' not in the YAML";
  if (pos != std::string::npos) out.replace(pos, from.size(), to);
  return out;
}

// 1-based line of the first occurrence of `needle` in `text`.
int line_of(std::string_view text, std::string_view needle) {
  const std::size_t pos = text.find(needle);
  EXPECT_NE(pos, std::string_view::npos) << "test bug: '" << needle << "' not in the YAML";
  int line = 1;
  for (std::size_t i = 0; i < pos && i < text.size(); ++i) line += text[i] == '\n' ? 1 : 0;
  return line;
}

// The message of the ConfigError that parsing `yaml` throws ("" plus a failure if none).
std::string parse_error(std::string_view yaml) {
  try {
    (void)parse_config(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return e.what();
  } catch (...) {
    ADD_FAILURE() << "unexpected non-standard exception";
    return {};
  }
  ADD_FAILURE() << "no ConfigError for:\n" << yaml;
  return {};
}

std::string validate_error(const LLMConfig& cfg) {
  try {
    cfg.validate();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "validate() did not throw";
  return {};
}

// Captures what the library logs while it lives (and keeps it off stderr).
class CapturedLog {
 public:
  CapturedLog() : previous_(llmq::logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_);
    sink->set_pattern("%l %v");
    llmq::set_logger(std::make_shared<spdlog::logger>("llmq-config-test", std::move(sink)));
  }
  ~CapturedLog() { llmq::set_logger(previous_); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;

  [[nodiscard]] std::string text() const { return stream_.str(); }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    ::setenv(name, value, 1);  // NOLINT(concurrency-mt-unsafe): tests are single-threaded
  }
  ~ScopedEnv() { ::unsetenv(name_.c_str()); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
};

// ------------------------------------------------------------------------------------
// The seed README's example and defaults

TEST(ConfigParse, SeedReadmeExample) {
  const LLMConfig cfg = parse_config(kSeedExample);
  ASSERT_EQ(cfg.azure_open_ai.size(), 1u);
  EXPECT_TRUE(cfg.custom_models.empty());
  EXPECT_TRUE(cfg.warnings.empty());

  const auto& group = cfg.azure_open_ai[0];
  EXPECT_EQ(group.api_key, "your-api-key");
  EXPECT_EQ(group.api_version, "2023-03-15-preview");
  EXPECT_EQ(group.api_type, "azure");
  EXPECT_EQ(group.azure_endpoint, "https://your-resource.openai.azure.com/");
  ASSERT_EQ(group.azure_oai_models.size(), 2u);

  const auto& gpt = group.azure_oai_models[0];
  EXPECT_EQ(gpt.unique_model_id, "gpt-4o");
  EXPECT_EQ(gpt.model_name_in_azure, "gpt-4o");
  EXPECT_EQ(gpt.deployment_name_in_azure, "gpt-4o");
  EXPECT_EQ(gpt.model_type, ModelType::completion);
  EXPECT_EQ(gpt.req_per_min, 450);
  EXPECT_EQ(gpt.tokens_per_min, 75000);
  EXPECT_EQ(gpt.error_backoff, 60s);
  EXPECT_EQ(gpt.weight, 0);  // not given

  const auto& ada = group.azure_oai_models[1];
  EXPECT_EQ(ada.unique_model_id, "text-embedding-ada-002");
  EXPECT_EQ(ada.model_name_in_azure, "text-embedding-ada-002");
  EXPECT_EQ(ada.deployment_name_in_azure, "text-embedding-ada-002");
  EXPECT_EQ(ada.model_type, ModelType::embeddings);
  EXPECT_EQ(ada.req_per_min, 1020);
  EXPECT_EQ(ada.tokens_per_min, 170000);
  EXPECT_EQ(ada.error_backoff, 60s);

  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 40);
  EXPECT_EQ(cfg.user_limits.time_window, 60s);
  EXPECT_EQ(cfg.scheduler_limits.max_queue_size, 1000u);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 300s);

  EXPECT_NO_THROW(cfg.validate());
}

TEST(ConfigParse, SeedReadmeExampleDeployments) {
  const auto deployments = parse_config(kSeedExample).deployments();
  ASSERT_EQ(deployments.size(), 2u);
  const auto& d = deployments[0];
  EXPECT_EQ(d.unique_model_id, "gpt-4o");
  EXPECT_EQ(d.model_name_in_azure, "gpt-4o");
  EXPECT_EQ(d.deployment_name_in_azure, "gpt-4o");
  EXPECT_EQ(d.model_type, ModelType::completion);
  EXPECT_EQ(d.endpoint, "https://your-resource.openai.azure.com/");
  EXPECT_EQ(d.api_key, "your-api-key");
  EXPECT_EQ(d.api_version, "2023-03-15-preview");
  EXPECT_EQ(d.api_type, "azure");
  EXPECT_EQ(d.provider, llmq::Provider::azure);
  EXPECT_EQ(d.req_per_min, 450);
  EXPECT_EQ(d.tokens_per_min, 75000);
  EXPECT_EQ(d.error_backoff, 60s);
  EXPECT_EQ(d.weight, 450);  // defaults to req_per_min
  EXPECT_EQ(deployments[1].unique_model_id, "text-embedding-ada-002");
  EXPECT_EQ(deployments[1].model_type, ModelType::embeddings);
  EXPECT_EQ(deployments[1].weight, 1020);
}

TEST(ConfigParse, DefaultsWhenOptionalKeysAreAbsent) {
  const LLMConfig cfg = parse_config(kMinimalAzure);
  ASSERT_EQ(cfg.azure_open_ai.size(), 1u);
  EXPECT_EQ(cfg.azure_open_ai[0].api_type, "azure");
  const auto& m = cfg.azure_open_ai[0].azure_oai_models.at(0);
  EXPECT_EQ(m.model_type, ModelType::chat);
  EXPECT_EQ(m.error_backoff, 60s);
  EXPECT_EQ(m.weight, 0);
  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 40);
  EXPECT_EQ(cfg.user_limits.time_window, 60s);
  EXPECT_EQ(cfg.scheduler_limits.max_queue_size, 1000u);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 300s);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(ConfigParse, EmptySectionsMeanDefaults) {
  const LLMConfig cfg =
      parse_config(std::string(kMinimalAzure) + "user_limits:\nscheduler_limits: ~\n");
  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 40);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 300s);
}

TEST(ConfigParse, PartialLimitSectionsKeepOtherDefaults) {
  const LLMConfig cfg = parse_config(std::string(kMinimalAzure) +
                                     "user_limits:\n  max_num_requests_in_time_window: 7\n"
                                     "scheduler_limits:\n  request_timeout_seconds: 2.5\n");
  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 7);
  EXPECT_EQ(cfg.user_limits.time_window, 60s);
  EXPECT_EQ(cfg.scheduler_limits.max_queue_size, 1000u);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 2500ms);
}

TEST(ConfigParse, WeightAndFractionalBackoff) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "        weight: 3\n"
                           "        error_backoff_in_seconds: 1.25\n";
  const LLMConfig cfg = parse_config(yaml);
  const auto& m = cfg.azure_open_ai[0].azure_oai_models[0];
  EXPECT_EQ(m.weight, 3);
  EXPECT_EQ(m.error_backoff, 1250ms);
  EXPECT_EQ(cfg.deployments().at(0).weight, 3);
}

TEST(ConfigParse, ZeroBackoffIsAllowed) {
  const LLMConfig cfg =
      parse_config(std::string(kMinimalAzure) + "        error_backoff_in_seconds: 0\n");
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models[0].error_backoff, 0ms);
}

TEST(ConfigParse, QuotedNumbersAreAccepted) {
  const LLMConfig cfg =
      parse_config(replace_once(kMinimalAzure, "req_per_min: 10", "req_per_min: \"12\""));
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models[0].req_per_min, 12);
}

TEST(ConfigParse, LargestInt64IsAccepted) {
  const LLMConfig cfg = parse_config(
      replace_once(kMinimalAzure, "tokens_per_min: 1000", "tokens_per_min: 9223372036854775807"));
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models[0].tokens_per_min, INT64_MAX);
}

TEST(ConfigParse, AllModelTypes) {
  for (const char* type : {"completion", "chat", "embeddings"}) {
    const LLMConfig cfg = parse_config(
        replace_once(kMinimalAzure, "model_type: \"chat\"", std::string("model_type: ") + type));
    EXPECT_EQ(llmq::to_string(cfg.azure_open_ai[0].azure_oai_models[0].model_type), type);
  }
}

TEST(ConfigParse, ToStringAndIsLlm) {
  EXPECT_EQ(llmq::to_string(ModelType::completion), "completion");
  EXPECT_EQ(llmq::to_string(ModelType::chat), "chat");
  EXPECT_EQ(llmq::to_string(ModelType::embeddings), "embeddings");
  EXPECT_TRUE(llmq::is_llm(ModelType::chat));
  EXPECT_FALSE(llmq::is_llm(ModelType::embeddings));
}

// ------------------------------------------------------------------------------------
// Aliases

TEST(ConfigParse, AliasesOfTheOriginalCode) {
  const LLMConfig cfg = parse_config(std::string(kMinimalAzure) +
                                     "user_limits:\n"
                                     "  max_num_requests_in_time_window: 3\n"
                                     "  time_window_length_in_seconds: 30\n"
                                     "scheduler_limits:\n"
                                     "  max_queue_size: 5\n"
                                     "  ttl_in_seconds: 0.5\n");
  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 3);
  EXPECT_EQ(cfg.user_limits.time_window, 30s);
  EXPECT_EQ(cfg.scheduler_limits.max_queue_size, 5u);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 500ms);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(ConfigErrors, KeyAndItsAliasTogether) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "user_limits:\n"
                           "  time_window_in_seconds: 60\n"
                           "  time_window_length_in_seconds: 30\n";
  EXPECT_EQ(parse_error(yaml),
            "user_limits.time_window_length_in_seconds: is an alias of time_window_in_seconds; "
            "give only one of them (line " +
                std::to_string(line_of(yaml, "time_window_length")) + ")");

  const std::string yaml2 = std::string(kMinimalAzure) +
                            "scheduler_limits:\n"
                            "  ttl_in_seconds: 1\n"
                            "  request_timeout_seconds: 2\n";
  EXPECT_EQ(parse_error(yaml2),
            "scheduler_limits.ttl_in_seconds: is an alias of request_timeout_seconds; give only "
            "one of them (line " +
                std::to_string(line_of(yaml2, "ttl_in")) + ")");
}

TEST(ConfigErrors, AliasErrorNamesTheKeyAsWritten) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "scheduler_limits:\n"
                           "  ttl_in_seconds: -1\n";
  EXPECT_EQ(parse_error(yaml),
            "scheduler_limits.ttl_in_seconds: must be a positive number of seconds (line " +
                std::to_string(line_of(yaml, "ttl_in")) + ")");
}

// ------------------------------------------------------------------------------------
// custom_models

TEST(ConfigParse, CustomModels) {
  const std::string yaml = std::string(kMinimalCustom) +
                           "  - unique_model_id: \"openai-mini\"\n"
                           "    base_url: \"https://api.openai.com\"\n"
                           "    api_key: \"sk-openai\"\n"
                           "    model: \"gpt-4o-mini\"\n"
                           "    model_type: \"embeddings\"\n"
                           "    req_per_min: 100\n"
                           "    tokens_per_min: 20000\n"
                           "    error_backoff_in_seconds: 5\n"
                           "    weight: 2\n";
  const LLMConfig cfg = parse_config(yaml);
  EXPECT_TRUE(cfg.azure_open_ai.empty());
  ASSERT_EQ(cfg.custom_models.size(), 2u);
  EXPECT_EQ(cfg.custom_models[0].unique_model_id, "llama-3");  // defaulted from model
  EXPECT_EQ(cfg.custom_models[0].api_key, "");
  EXPECT_EQ(cfg.custom_models[1].unique_model_id, "openai-mini");

  const auto deployments = cfg.deployments();
  ASSERT_EQ(deployments.size(), 2u);
  const auto& local = deployments[0];
  EXPECT_EQ(local.unique_model_id, "llama-3");
  EXPECT_EQ(local.model_name_in_azure, "llama-3");
  EXPECT_EQ(local.deployment_name_in_azure, "llama-3");
  EXPECT_EQ(local.endpoint, "http://localhost:8000");
  EXPECT_EQ(local.api_key, "");
  EXPECT_EQ(local.api_version, "");
  EXPECT_EQ(local.api_type, "");
  EXPECT_EQ(local.provider, llmq::Provider::openai_compatible);
  EXPECT_EQ(local.model_type, ModelType::chat);
  EXPECT_EQ(local.req_per_min, 5);
  EXPECT_EQ(local.tokens_per_min, 500);
  EXPECT_EQ(local.error_backoff, 60s);
  EXPECT_EQ(local.weight, 5);

  const auto& remote = deployments[1];
  EXPECT_EQ(remote.unique_model_id, "openai-mini");
  EXPECT_EQ(remote.model_name_in_azure, "gpt-4o-mini");
  EXPECT_EQ(remote.endpoint, "https://api.openai.com");
  EXPECT_EQ(remote.api_key, "sk-openai");
  EXPECT_EQ(remote.model_type, ModelType::embeddings);
  EXPECT_EQ(remote.error_backoff, 5s);
  EXPECT_EQ(remote.weight, 2);
}

TEST(ConfigParse, AzureDeploymentsComeBeforeCustomOnes) {
  const std::string yaml = std::string(kMinimalCustom) + std::string(kMinimalAzure);
  const auto deployments = parse_config(yaml).deployments();
  ASSERT_EQ(deployments.size(), 2u);
  EXPECT_EQ(deployments[0].unique_model_id, "m1");
  EXPECT_EQ(deployments[0].provider, llmq::Provider::azure);
  EXPECT_EQ(deployments[1].unique_model_id, "llama-3");
}

TEST(ConfigErrors, CustomBaseUrlMustBeHttp) {
  const std::string yaml = replace_once(kMinimalCustom, "http://localhost", "ftp://localhost");
  EXPECT_EQ(parse_error(yaml),
            "custom_models[0].base_url: must start with http:// or https:// "
            "(line 2)");
}

TEST(ConfigErrors, CustomModelIsRequired) {
  const std::string yaml = replace_once(kMinimalCustom, "    model: \"llama-3\"\n", "");
  EXPECT_EQ(parse_error(yaml), "custom_models[0].model: is required (line 2)");
}

// ------------------------------------------------------------------------------------
// ${VAR} expansion

TEST(ConfigEnv, ExpandsVariablesInStrings) {
  const ScopedEnv key("LLMQ_TEST_KEY", "sk-from-env");
  const ScopedEnv host("LLMQ_TEST_HOST", "example.openai.azure.com");
  const ScopedEnv rpm("LLMQ_TEST_RPM", "77");
  std::string yaml = replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"${LLMQ_TEST_KEY}\"");
  yaml = replace_once(yaml, "https://example.openai.azure.com", "https://${LLMQ_TEST_HOST}/");
  yaml = replace_once(yaml, "req_per_min: 10", "req_per_min: ${LLMQ_TEST_RPM}");
  const LLMConfig cfg = parse_config(yaml);
  EXPECT_EQ(cfg.azure_open_ai[0].api_key, "sk-from-env");
  EXPECT_EQ(cfg.azure_open_ai[0].azure_endpoint, "https://example.openai.azure.com/");
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models[0].req_per_min, 77);
}

TEST(ConfigEnv, DoubleDollarIsALiteralDollar) {
  const ScopedEnv key("LLMQ_TEST_KEY", "abc");
  const std::string yaml =
      replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"p$$w${LLMQ_TEST_KEY}$${LLMQ_TEST_KEY}$x$\"");
  const LLMConfig cfg = parse_config(yaml);
  // "$$" -> "$", "${VAR}" -> value, "$${VAR}" -> "${VAR}" (not expanded), a lone "$" stays.
  EXPECT_EQ(cfg.azure_open_ai[0].api_key, "p$wabc${LLMQ_TEST_KEY}$x$");
}

TEST(ConfigEnv, ValueOfAVariableIsNotExpandedAgain) {
  const ScopedEnv key("LLMQ_TEST_KEY", "${LLMQ_TEST_OTHER}$$");
  const std::string yaml = replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"${LLMQ_TEST_KEY}\"");
  EXPECT_EQ(parse_config(yaml).azure_open_ai[0].api_key, "${LLMQ_TEST_OTHER}$$");
}

TEST(ConfigEnv, UnsetVariableIsAnError) {
  ::unsetenv("LLMQ_TEST_UNSET_VARIABLE");
  const std::string yaml =
      replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"${LLMQ_TEST_UNSET_VARIABLE}\"");
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].api_key: environment variable 'LLMQ_TEST_UNSET_VARIABLE' is not set "
            "(line 2)");
}

TEST(ConfigEnv, EmptyVariableFailsTheNonEmptyCheck) {
  const ScopedEnv key("LLMQ_TEST_KEY", "");
  const std::string yaml = replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"${LLMQ_TEST_KEY}\"");
  EXPECT_EQ(parse_error(yaml), "azure_open_ai[0].api_key: must not be empty (line 2)");
}

TEST(ConfigEnv, MalformedReferences) {
  const std::string unterminated =
      replace_once(kMinimalAzure, "\"2024-06-01\"", "\"${LLMQ_TEST_KEY\"");
  EXPECT_EQ(parse_error(unterminated),
            "azure_open_ai[0].api_version: unterminated '${' (missing '}') (line 3)");

  const std::string empty = replace_once(kMinimalAzure, "\"2024-06-01\"", "\"${}\"");
  EXPECT_EQ(parse_error(empty),
            "azure_open_ai[0].api_version: empty environment variable name in '${}' (line 3)");

  const std::string invalid = replace_once(kMinimalAzure, "\"2024-06-01\"", "\"${A-B}\"");
  EXPECT_EQ(parse_error(invalid),
            "azure_open_ai[0].api_version: invalid environment variable name in '${...}' (use "
            "letters, digits and _) (line 3)");
}

TEST(ConfigEnv, VariablesInUnreadSectionsAreIgnored) {
  ::unsetenv("LLMQ_TEST_UNSET_VARIABLE");
  const std::string yaml = std::string(kMinimalAzure) +
                           "gateway:\n  token: \"${LLMQ_TEST_UNSET_VARIABLE}\"\n"
                           "extra: \"${LLMQ_TEST_UNSET_VARIABLE}\"\n";
  const CapturedLog log;  // "extra" is an unknown key
  EXPECT_NO_THROW((void)parse_config(yaml));
}

// ------------------------------------------------------------------------------------
// Errors: types and ranges

TEST(ConfigErrors, ExampleFromTheHeader) {
  // Line 20 below is `req_per_min: abc` of azure_oai_models[1].
  const std::string yaml = std::string(kMinimalAzure) +
                           "      - unique_model_id: \"m2\"\n"          // line 12
                           "        model_name_in_azure: \"gpt-4o\"\n"  // 13
                           "        deployment_name_in_azure: \"dep2\"\n"
                           "        model_type: \"chat\"\n"
                           "        tokens_per_min: 1000\n"
                           "        # comment\n"
                           "\n"
                           "\n"                           // 19
                           "        req_per_min: abc\n";  // 20
  ASSERT_EQ(line_of(yaml, "abc"), 20);
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].azure_oai_models[1].req_per_min: must be a positive integer "
            "(line 20)");
}

TEST(ConfigErrors, NotPositiveIntegers) {
  for (const char* bad :
       {"abc", "1.5", "0", "-3", "\"\"", "1e3", "0x10", "true", "[1]", "{a: 1}", "12abc", "+"}) {
    SCOPED_TRACE(bad);
    const std::string yaml =
        replace_once(kMinimalAzure, "req_per_min: 10", std::string("req_per_min: ") + bad);
    EXPECT_EQ(parse_error(yaml),
              "azure_open_ai[0].azure_oai_models[0].req_per_min: must be a positive integer "
              "(line 10)");
  }
}

TEST(ConfigErrors, IntegerTooLarge) {
  const std::string yaml =
      replace_once(kMinimalAzure, "tokens_per_min: 1000", "tokens_per_min: 9223372036854775808");
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].azure_oai_models[0].tokens_per_min: is too large (must fit in a "
            "signed 64-bit integer) (line 11)");
}

TEST(ConfigErrors, WeightMustBePositive) {
  for (const char* bad : {"0", "-1", "2.5", "x"}) {
    SCOPED_TRACE(bad);
    const std::string yaml = std::string(kMinimalAzure) + "        weight: " + bad + "\n";
    EXPECT_EQ(parse_error(yaml),
              "azure_open_ai[0].azure_oai_models[0].weight: must be a positive integer (line 12)");
  }
}

TEST(ConfigErrors, BackoffMustBeANonNegativeNumber) {
  for (const char* bad : {"-1", "-0.5", "abc", ".inf", ".nan", "nan", "inf", "[]"}) {
    SCOPED_TRACE(bad);
    const std::string yaml =
        std::string(kMinimalAzure) + "        error_backoff_in_seconds: " + bad + "\n";
    EXPECT_EQ(parse_error(yaml),
              "azure_open_ai[0].azure_oai_models[0].error_backoff_in_seconds: must be a "
              "non-negative number of seconds (line 12)");
  }
  const std::string huge = std::string(kMinimalAzure) + "        error_backoff_in_seconds: 1e10\n";
  EXPECT_EQ(parse_error(huge),
            "azure_open_ai[0].azure_oai_models[0].error_backoff_in_seconds: must be at most "
            "1000000000 seconds (line 12)");
}

TEST(ConfigErrors, UserLimits) {
  const std::string base = std::string(kMinimalAzure) + "user_limits:\n";  // line 12
  EXPECT_EQ(parse_error(base + "  max_num_requests_in_time_window: 0\n"),
            "user_limits.max_num_requests_in_time_window: must be a positive integer (line 13)");
  EXPECT_EQ(parse_error(base + "  time_window_in_seconds: 0\n"),
            "user_limits.time_window_in_seconds: must be a positive number of seconds (line 13)");
  EXPECT_EQ(parse_error(base + "  time_window_in_seconds: 0.0001\n"),
            "user_limits.time_window_in_seconds: must be at least 0.001 seconds (line 13)");
  EXPECT_EQ(parse_error(base + "  time_window_in_seconds: sixty\n"),
            "user_limits.time_window_in_seconds: must be a positive number of seconds (line 13)");
  EXPECT_EQ(parse_error(std::string(kMinimalAzure) + "user_limits: [1, 2]\n"),
            "user_limits: must be a mapping (line 12)");
  EXPECT_EQ(parse_error(std::string(kMinimalAzure) + "user_limits: 5\n"),
            "user_limits: must be a mapping (line 12)");
}

TEST(ConfigErrors, SchedulerLimits) {
  const std::string base = std::string(kMinimalAzure) + "scheduler_limits:\n";  // line 12
  EXPECT_EQ(parse_error(base + "  max_queue_size: -5\n"),
            "scheduler_limits.max_queue_size: must be a positive integer (line 13)");
  EXPECT_EQ(parse_error(base + "  request_timeout_seconds: 0\n"),
            "scheduler_limits.request_timeout_seconds: must be a positive number of seconds "
            "(line 13)");
  EXPECT_EQ(parse_error(base + "  request_timeout_seconds: 1e12\n"),
            "scheduler_limits.request_timeout_seconds: must be at most 1000000000 seconds "
            "(line 13)");
}

TEST(ConfigErrors, ModelType) {
  const std::string yaml = replace_once(kMinimalAzure, "model_type: \"chat\"", "model_type: Chat");
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].azure_oai_models[0].model_type: must be one of completion, chat, "
            "embeddings (line 9)");
  const std::string missing = replace_once(kMinimalAzure, "        model_type: \"chat\"\n", "");
  EXPECT_EQ(parse_error(missing),
            "azure_open_ai[0].azure_oai_models[0].model_type: is required (line 6)");
}

TEST(ConfigErrors, WrongContainerTypes) {
  EXPECT_EQ(parse_error("azure_open_ai:\n  api_key: x\n"),
            "azure_open_ai: must be a list (line 1)");
  EXPECT_EQ(parse_error("azure_open_ai: [1, 2]\n"), "azure_open_ai[0]: must be a mapping (line 1)");
  EXPECT_EQ(parse_error("custom_models: abc\n"), "custom_models: must be a list (line 1)");
  EXPECT_EQ(parse_error("custom_models:\n  - [a, b]\n"),
            "custom_models[0]: must be a mapping (line 2)");

  const std::string models_mapping = replace_once(kMinimalAzure, "      - unique_model_id: \"m1\"",
                                                  "        unique_model_id: \"m1\"");
  EXPECT_EQ(parse_error(models_mapping),
            "azure_open_ai[0].azure_oai_models: must be a list (line 5)");

  const std::string key_list = replace_once(kMinimalAzure, "\"sk-SECRET\"", "[a, b]");
  EXPECT_EQ(parse_error(key_list), "azure_open_ai[0].api_key: must be a string (line 2)");
}

TEST(ConfigErrors, TopLevelMustBeAMapping) {
  EXPECT_EQ(parse_error("- a\n- b\n"), "config: must be a mapping (line 1)");
  EXPECT_EQ(parse_error("just a string"), "config: must be a mapping (line 1)");
}

TEST(ConfigErrors, EmptyDocument) {
  EXPECT_EQ(parse_error(""), "config: the document is empty (line 1)");
  EXPECT_EQ(parse_error("# only a comment\n"), "config: the document is empty (line 1)");
  EXPECT_EQ(parse_error("---\n"), "config: the document is empty (line 1)");
}

TEST(ConfigErrors, SeveralDocuments) {
  const std::string yaml = std::string(kMinimalAzure) + "---\nfoo: 1\n";
  EXPECT_EQ(parse_error(yaml), "config: expected one YAML document, found 2 (line 13)");
}

/// parse_error(yaml); the whole test program fails at once if parse_config does not
/// return within a generous bound (a parser stuck in a loop would hang the suite).
std::string parse_error_or_exit(std::string_view yaml) {
  auto result = std::make_shared<std::promise<std::string>>();
  std::future<std::string> future = result->get_future();
  std::thread([result, text = std::string(yaml)] {
    result->set_value(parse_error(text));
  }).detach();
  if (future.wait_for(30s) != std::future_status::ready) {
    std::fprintf(stderr, "parse_config did not return within 30 s for:\n%s\n",
                 std::string(yaml).c_str());
    std::_Exit(1);
  }
  return future.get();
}

TEST(ConfigErrors, StrayCommaOutsideAFlowCollectionIsASyntaxError) {
  // yaml-cpp's LoadAll starts one empty document after another at such a ',', forever.
  EXPECT_EQ(parse_error_or_exit(","),
            "config: YAML syntax error at column 1: ',' outside a flow collection (line 1)");
  EXPECT_EQ(parse_error_or_exit("- a\n- b\n, c\n"),
            "config: YAML syntax error at column 1: ',' outside a flow collection (line 3)");
  EXPECT_EQ(parse_error_or_exit(std::string(kMinimalAzure) + "---\n- b\n,\n"),
            "config: YAML syntax error at column 1: ',' outside a flow collection (line 14)");
  EXPECT_EQ(parse_error_or_exit("--- \"a\" ,"),
            "config: YAML syntax error at column 9: ',' outside a flow collection (line 1)");
}

TEST(ConfigErrors, SyntaxError) {
  const std::string message = parse_error("azure_open_ai:\n  - api_key: [unclosed\n");
  EXPECT_EQ(message.rfind("config: YAML syntax error at column ", 0), 0u) << message;
  EXPECT_NE(message.find("end of sequence flow not found"), std::string::npos) << message;
  EXPECT_NE(message.find("(line "), std::string::npos) << message;

  EXPECT_EQ(parse_error("a: b: c\n"),
            "config: YAML syntax error at column 5: illegal map value (line 1)");
  EXPECT_EQ(parse_error("a:\n  - b\n  c: d\n"),
            "config: YAML syntax error at column 3: end of map not found (line 3)");
  EXPECT_EQ(parse_error("a: *nope\n"),
            "config: YAML syntax error at column 4: the referenced anchor is not defined (line 1)");
}

TEST(ConfigErrors, DeeplyNestedInputIsAnErrorNotACrash) {
  const std::string sequences = "a: " + std::string(100000, '[');
  EXPECT_EQ(parse_error(sequences).rfind("config: YAML nesting is too deep", 0), 0u);
  std::string mappings = "a: ";
  for (int i = 0; i < 50000; ++i) mappings += "{b: ";
  EXPECT_EQ(parse_error(mappings).rfind("config: YAML nesting is too deep", 0), 0u);
}

TEST(ConfigErrors, DuplicateKeyInAMapping) {
  const std::string yaml = std::string(kMinimalAzure) + "        req_per_min: 20\n";
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].azure_oai_models[0].req_per_min: duplicate key (first given at line "
            "10) (line 12)");
}

TEST(ConfigErrors, DuplicateTopLevelKey) {
  const std::string yaml = std::string(kMinimalAzure) + "user_limits: {}\nuser_limits: {}\n";
  EXPECT_EQ(parse_error(yaml), "user_limits: duplicate key (first given at line 12) (line 13)");
}

TEST(ConfigErrors, NonStringKey) {
  EXPECT_EQ(parse_error("? [a, b]\n: 1\n"), "config: mapping keys must be plain strings (line 1)");
}

// ------------------------------------------------------------------------------------
// Errors: required keys and invariants

TEST(ConfigErrors, NoDeployments) {
  EXPECT_EQ(parse_error("user_limits:\n  max_num_requests_in_time_window: 3\n"),
            "config: at least one deployment is required (in azure_open_ai or custom_models) "
            "(line 1)");
  EXPECT_EQ(parse_error("azure_open_ai: []\ncustom_models: []\n"),
            "config: at least one deployment is required (in azure_open_ai or custom_models) "
            "(line 1)");
}

TEST(ConfigErrors, AzureGroupRequirements) {
  EXPECT_EQ(parse_error(replace_once(kMinimalAzure, "  - api_key: \"sk-SECRET\"\n    api_version",
                                     "  - api_version")),
            "azure_open_ai[0].api_key: is required (line 2)");
  EXPECT_EQ(parse_error(replace_once(kMinimalAzure, "\"sk-SECRET\"", "\"\"")),
            "azure_open_ai[0].api_key: must not be empty (line 2)");
  EXPECT_EQ(parse_error(replace_once(kMinimalAzure, "\"sk-SECRET\"", "")),
            "azure_open_ai[0].api_key: is required (line 2)");
  EXPECT_EQ(parse_error(replace_once(kMinimalAzure, "    api_version: \"2024-06-01\"\n", "")),
            "azure_open_ai[0].api_version: is required (line 2)");
  EXPECT_EQ(parse_error(replace_once(kMinimalAzure, "https://example", "example")),
            "azure_open_ai[0].azure_endpoint: must start with http:// or https:// (line 4)");
  EXPECT_EQ(parse_error(replace_once(
                kMinimalAzure, "    azure_endpoint: \"https://example.openai.azure.com\"\n", "")),
            "azure_open_ai[0].azure_endpoint: is required (line 2)");
}

TEST(ConfigErrors, AzureModelsMustBeANonEmptyList) {
  const std::string head(kMinimalAzure.substr(0, kMinimalAzure.find("      - unique_model_id")));
  EXPECT_EQ(parse_error(head), "azure_open_ai[0].azure_oai_models: is required (line 2)");
  EXPECT_EQ(parse_error(replace_once(head, "azure_oai_models:", "azure_oai_models: []")),
            "azure_open_ai[0].azure_oai_models: must be a non-empty list (line 5)");
}

TEST(ConfigErrors, AzureModelRequiredKeys) {
  for (const char* key : {"unique_model_id", "model_name_in_azure", "deployment_name_in_azure",
                          "req_per_min", "tokens_per_min"}) {
    SCOPED_TRACE(key);
    std::string yaml;
    if (std::string_view(key) == "unique_model_id") {
      // The list item's dash moves to the next key.
      yaml = replace_once(kMinimalAzure, "- unique_model_id: \"m1\"\n        model_name_in_azure",
                          "- model_name_in_azure");
    } else {
      yaml = kMinimalAzure;
      const std::size_t key_pos = yaml.find(std::string(key) + ":");
      ASSERT_NE(key_pos, std::string::npos);
      const std::size_t begin = yaml.rfind('\n', key_pos) + 1;
      yaml.erase(begin, yaml.find('\n', key_pos) - begin + 1);
    }
    EXPECT_EQ(parse_error(yaml), "azure_open_ai[0].azure_oai_models[0]." + std::string(key) +
                                     ": is required (line 6)");
  }
}

TEST(ConfigErrors, DuplicateUniqueModelIdAcrossSections) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "custom_models:\n"               // line 12
                           "  - unique_model_id: \"m1\"\n"  // 13
                           "    base_url: \"http://localhost\"\n"
                           "    model: \"llama\"\n"
                           "    model_type: \"chat\"\n"
                           "    req_per_min: 1\n"
                           "    tokens_per_min: 1\n";
  EXPECT_EQ(parse_error(yaml),
            "custom_models[0].unique_model_id: duplicate unique_model_id 'm1', already used by "
            "azure_open_ai[0].azure_oai_models[0] at line 6 (line 13)");
}

TEST(ConfigErrors, DuplicateUniqueModelIdWithinAzure) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "      - unique_model_id: \"m1\"\n"  // line 12
                           "        model_name_in_azure: \"x\"\n"
                           "        deployment_name_in_azure: \"y\"\n"
                           "        model_type: \"embeddings\"\n"
                           "        req_per_min: 1\n"
                           "        tokens_per_min: 1\n";
  EXPECT_EQ(parse_error(yaml),
            "azure_open_ai[0].azure_oai_models[1].unique_model_id: duplicate unique_model_id "
            "'m1', already used by azure_open_ai[0].azure_oai_models[0] at line 6 (line 12)");
}

TEST(ConfigErrors, DuplicateDefaultedCustomId) {
  const std::string yaml = std::string(kMinimalCustom) +
                           "  - base_url: \"http://other:8000\"\n"  // line 7
                           "    model: \"llama-3\"\n"
                           "    model_type: \"chat\"\n"
                           "    req_per_min: 5\n"
                           "    tokens_per_min: 500\n";
  EXPECT_EQ(parse_error(yaml),
            "custom_models[1].unique_model_id: duplicate unique_model_id 'llama-3', already used "
            "by custom_models[0] at line 2 (line 7)");
}

// ------------------------------------------------------------------------------------
// Unknown keys, gateway

TEST(ConfigWarnings, UnknownKeysAreWarnings) {
  std::string yaml = replace_once(kMinimalAzure, "        tokens_per_min: 1000\n",
                                  "        tokens_per_min: 1000\n        temprature: 0.5\n");
  yaml = replace_once(yaml, "    api_version:", "    colour: blue\n    api_version:");
  yaml += "user_limits:\n  max_num_requests: 4\nextra_section:\n  a: 1\n";
  const CapturedLog log;
  const LLMConfig cfg = parse_config(yaml);
  const std::vector<std::string> expected = {
      "azure_open_ai[0].azure_oai_models[0].temprature: unknown key (line " +
          std::to_string(line_of(yaml, "temprature")) + ")",
      "azure_open_ai[0].colour: unknown key (line 3)",
      "user_limits.max_num_requests: unknown key (line " +
          std::to_string(line_of(yaml, "max_num_requests:")) + ")",
      "extra_section: unknown key (line " + std::to_string(line_of(yaml, "extra_section")) + ")",
  };
  EXPECT_EQ(cfg.warnings, expected);
  EXPECT_EQ(cfg.user_limits.max_num_requests_in_time_window, 40);
  // Each warning was also logged, at warn level.
  std::string logged;
  for (const std::string& w : expected) logged += "warning config: " + w + "\n";
  EXPECT_EQ(log.text(), logged);
}

TEST(ConfigWarnings, KeysAreShownPrintableAndBounded) {
  // A NUL in a key ended the error message there, leaving it empty (the config fuzz
  // target's find, tests/fuzz/corpus/config/nul_in_key.yaml).
  const std::string nul_key(
      "custom_models:\n\n\0"
      "0stom_models:\n s:\n\n\0"
      "0stom_models:\n",
      51);
  try {
    (void)parse_config(nul_key);
    ADD_FAILURE() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("\\x00"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos) << e.what();
  }
  // A long key is cut in the message.
  const LLMConfig cfg = parse_config(std::string(kMinimalAzure) + std::string(200, 'k') + ": 1\n");
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0].rfind(std::string(64, 'k') + "...: unknown key", 0), 0u)
      << cfg.warnings[0];
}

TEST(ConfigWarnings, GatewaySectionIsAcceptedSilently) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "gateway:\n"
                           "  listen: \"0.0.0.0:8080\"\n"
                           "  anything: [1, 2, {x: y}]\n";
  const CapturedLog log;
  const LLMConfig cfg = parse_config(yaml);
  EXPECT_TRUE(cfg.warnings.empty());
  EXPECT_EQ(log.text(), "");
}

// ------------------------------------------------------------------------------------
// Secrets

TEST(ConfigSecrets, ApiKeyNeverAppearsInMessages) {
  const std::string base = std::string(kMinimalAzure) +
                           "custom_models:\n"
                           "  - base_url: \"http://localhost\"\n"
                           "    api_key: \"sk-SECRET-CUSTOM\"\n"
                           "    model: \"llama\"\n"
                           "    model_type: \"chat\"\n"
                           "    req_per_min: 1\n"
                           "    tokens_per_min: 1\n";
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"req_per_min: 10", "req_per_min: -10"},
      {"https://example", "example"},
      {"model_type: \"chat\"", "model_type: chatty"},
      {"\"2024-06-01\"", "\"${LLMQ_TEST_UNSET_VARIABLE}\""},
      {"\"sk-SECRET\"", "\"sk-SECRET${\""},
      {"\"sk-SECRET\"", "\"sk-SECRET${A-sk-SECRET}\""},
      {"\"sk-SECRET\"", "[\"sk-SECRET\"]"},
      {"\"sk-SECRET\"", "{\"sk-SECRET\": 1}"},
      {"\"sk-SECRET\"", "\"sk-SECRET\n"},
      {"\"sk-SECRET-CUSTOM\"", "[\"sk-SECRET-CUSTOM\"]"},
      {"    api_key: \"sk-SECRET-CUSTOM\"\n", "    api_key: \"sk-SECRET-CUSTOM\"\n    x: [\n"},
      {"\"m1\"", "\"llama\""},
  };
  ::unsetenv("LLMQ_TEST_UNSET_VARIABLE");
  for (const auto& [from, to] : edits) {
    SCOPED_TRACE(to);
    const std::string message = parse_error(replace_once(base, from, to));
    EXPECT_FALSE(message.empty());
    EXPECT_EQ(message.find("sk-SECRET"), std::string::npos) << message;
  }

  // Warnings and log lines do not carry values either.
  const CapturedLog log;
  const LLMConfig cfg = parse_config(base + "sk_extra: \"sk-SECRET\"\n");
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0].find("sk-SECRET"), std::string::npos);
  EXPECT_NE(log.text().find("sk_extra"), std::string::npos);
  EXPECT_EQ(log.text().find("sk-SECRET"), std::string::npos) << log.text();

  // validate() on a config built in code.
  LLMConfig built = cfg;
  built.azure_open_ai[0].azure_oai_models[0].req_per_min = 0;
  const std::string message = validate_error(built);
  EXPECT_EQ(message.find("sk-SECRET"), std::string::npos) << message;
}

// ------------------------------------------------------------------------------------
// load_config

class TempFile {
 public:
  explicit TempFile(std::string_view content) {
    path_ =
        std::filesystem::temp_directory_path() / ("llmq_config_test_" + std::to_string(::getpid()) +
                                                  "_" + std::to_string(counter_++) + ".yaml");
    std::ofstream(path_, std::ios::binary) << content;
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

TEST(ConfigLoad, ReadsAFile) {
  const TempFile file(kSeedExample);
  const LLMConfig cfg = llmq::load_config(file.path());
  ASSERT_EQ(cfg.azure_open_ai.size(), 1u);
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models.size(), 2u);
  EXPECT_EQ(cfg.scheduler_limits.request_timeout, 300s);
}

TEST(ConfigLoad, MissingFile) {
  const std::filesystem::path path = "/nonexistent-llmq-dir/llm_config.yaml";
  try {
    (void)llmq::load_config(path);
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent-llmq-dir/llm_config.yaml: cannot read file: No such file or directory");
    EXPECT_EQ(e.http_status(), 500);
  }
}

TEST(ConfigLoad, DirectoryIsNotReadable) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path();
  try {
    (void)llmq::load_config(dir);
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(dir.string() + ": cannot read file: ", 0), 0u)
        << e.what();
  }
}

TEST(ConfigLoad, ErrorsArePrefixedWithThePath) {
  const TempFile file(replace_once(kMinimalAzure, "req_per_min: 10", "req_per_min: 0"));
  try {
    (void)llmq::load_config(file.path());
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              file.path().string() +
                  ": azure_open_ai[0].azure_oai_models[0].req_per_min: must be a positive "
                  "integer (line 10)");
  }
}

// ------------------------------------------------------------------------------------
// validate() on configs built in code

LLMConfig built_config() {
  LLMConfig cfg;
  llmq::AzureOpenAIConfig group;
  group.api_key = "k";
  group.api_version = "2024-06-01";
  group.azure_endpoint = "https://x.openai.azure.com";
  llmq::AzureModelConfig model;
  model.unique_model_id = "a";
  model.model_name_in_azure = "gpt-4o";
  model.deployment_name_in_azure = "a-dep";
  model.req_per_min = 10;
  model.tokens_per_min = 100;
  group.azure_oai_models.push_back(model);
  cfg.azure_open_ai.push_back(group);
  llmq::CustomModelConfig custom;
  custom.base_url = "http://localhost:1234";
  custom.model = "local";  // unique_model_id left empty: defaults to model
  custom.req_per_min = 1;
  custom.tokens_per_min = 1;
  cfg.custom_models.push_back(custom);
  return cfg;
}

TEST(ConfigValidate, AcceptsAValidConfig) {
  const LLMConfig cfg = built_config();
  EXPECT_NO_THROW(cfg.validate());
  const auto deployments = cfg.deployments();
  ASSERT_EQ(deployments.size(), 2u);
  EXPECT_EQ(deployments[0].weight, 10);
  EXPECT_EQ(deployments[1].unique_model_id, "local");
}

TEST(ConfigValidate, RejectsBrokenInvariants) {
  {
    LLMConfig cfg;
    EXPECT_EQ(validate_error(cfg),
              "config: at least one deployment is required (in azure_open_ai or custom_models)");
  }
  {
    LLMConfig cfg = built_config();
    cfg.azure_open_ai[0].azure_oai_models[0].tokens_per_min = -1;
    EXPECT_EQ(validate_error(cfg),
              "azure_open_ai[0].azure_oai_models[0].tokens_per_min: must be a positive integer");
  }
  {
    LLMConfig cfg = built_config();
    cfg.azure_open_ai[0].api_key.clear();
    EXPECT_EQ(validate_error(cfg), "azure_open_ai[0].api_key: must not be empty");
  }
  {
    LLMConfig cfg = built_config();
    cfg.azure_open_ai[0].azure_oai_models.clear();
    EXPECT_EQ(validate_error(cfg), "azure_open_ai[0].azure_oai_models: must be a non-empty list");
  }
  {
    LLMConfig cfg = built_config();
    cfg.custom_models[0].unique_model_id = "a";
    EXPECT_EQ(validate_error(cfg),
              "custom_models[0].unique_model_id: duplicate unique_model_id 'a', already used by "
              "azure_open_ai[0].azure_oai_models[0]");
  }
  {
    LLMConfig cfg = built_config();
    cfg.custom_models[0].base_url = "localhost:1234";
    EXPECT_EQ(validate_error(cfg),
              "custom_models[0].base_url: must start with http:// or https://");
  }
  {
    LLMConfig cfg = built_config();
    cfg.custom_models[0].weight = -2;
    EXPECT_EQ(validate_error(cfg), "custom_models[0].weight: must be a positive integer");
  }
  {
    LLMConfig cfg = built_config();
    cfg.custom_models[0].error_backoff = -1ms;
    EXPECT_EQ(validate_error(cfg),
              "custom_models[0].error_backoff_in_seconds: must be a non-negative number of "
              "seconds");
  }
  {
    LLMConfig cfg = built_config();
    cfg.azure_open_ai[0].azure_oai_models[0].model_type = static_cast<ModelType>(42);
    EXPECT_EQ(validate_error(cfg),
              "azure_open_ai[0].azure_oai_models[0].model_type: must be one of completion, chat, "
              "embeddings");
  }
  {
    LLMConfig cfg = built_config();
    cfg.user_limits.max_num_requests_in_time_window = 0;
    EXPECT_EQ(validate_error(cfg),
              "user_limits.max_num_requests_in_time_window: must be a positive integer");
  }
  {
    LLMConfig cfg = built_config();
    cfg.user_limits.time_window = 0ms;
    EXPECT_EQ(validate_error(cfg),
              "user_limits.time_window_in_seconds: must be a positive number of seconds");
  }
  {
    LLMConfig cfg = built_config();
    cfg.scheduler_limits.max_queue_size = 0;
    EXPECT_EQ(validate_error(cfg), "scheduler_limits.max_queue_size: must be a positive integer");
  }
  {
    LLMConfig cfg = built_config();
    cfg.scheduler_limits.request_timeout = std::chrono::hours(24 * 365 * 40);
    EXPECT_EQ(validate_error(cfg),
              "scheduler_limits.request_timeout_seconds: must be at most 1000000000 seconds");
  }
}

// ------------------------------------------------------------------------------------
// Messages of the errors defined in errors.cpp

TEST(ErrorMessages, UserRateLimitExceeded) {
  const llmq::UserRateLimitExceededError e("u1", 12345678901ns);  // 12.345678901 s
  EXPECT_EQ(std::string(e.what()), "rate limit exceeded for user 'u1'; retry after 12.346 s");
  EXPECT_EQ(e.retry_after(), 12345678901ns);
  EXPECT_EQ(e.http_status(), 429);

  const llmq::UserRateLimitExceededError exact("u2", 2s);
  EXPECT_EQ(std::string(exact.what()), "rate limit exceeded for user 'u2'; retry after 2.000 s");
  const llmq::UserRateLimitExceededError tiny("u3", 1ns);
  EXPECT_EQ(std::string(tiny.what()), "rate limit exceeded for user 'u3'; retry after 0.001 s");
  const llmq::UserRateLimitExceededError zero("u4", 0ns);
  EXPECT_EQ(std::string(zero.what()), "rate limit exceeded for user 'u4'; retry after 0.000 s");
}

TEST(ErrorMessages, SchedulerQueueFull) {
  const llmq::SchedulerQueueFullError e(1000);
  EXPECT_EQ(std::string(e.what()), "scheduler queue is full (max_queue_size 1000)");
  EXPECT_EQ(e.http_status(), 503);
}

TEST(ErrorMessages, QueueTimeout) {
  const llmq::QueueTimeoutError e(300s);
  EXPECT_EQ(std::string(e.what()),
            "request waited 300.000 s in the queue without being dispatched "
            "(request_timeout_seconds)");
  EXPECT_EQ(e.http_status(), 504);
  const llmq::QueueTimeoutError fractional(1500400us);
  EXPECT_EQ(std::string(fractional.what()).substr(0, 21), "request waited 1.500 ");
}

// --- Scheduling: policy, per-user cap, aging, predictive admission, tiers, priorities. ---

TEST(ConfigScheduling, DefaultsWhenAbsent) {
  const LLMConfig cfg = parse_config(kSeedExample);
  EXPECT_EQ(cfg.scheduler_limits.policy, llmq::SchedulingPolicy::fifo);
  EXPECT_EQ(cfg.scheduler_limits.max_queued_per_user, 0u);
  EXPECT_EQ(cfg.scheduler_limits.priority_aging, 30s);
  EXPECT_FALSE(cfg.scheduler_limits.predictive_admission);
  EXPECT_TRUE(cfg.user_tiers.empty());
  for (const llmq::Deployment& d : cfg.deployments()) EXPECT_EQ(d.priority, 0);
}

TEST(ConfigScheduling, ReadsSchedulerKeys) {
  const LLMConfig cfg = parse_config(std::string(kMinimalAzure) +
                                     "scheduler_limits:\n"
                                     "  policy: fair\n"
                                     "  max_queued_per_user: 5\n"
                                     "  priority_aging_seconds: 12.5\n"
                                     "  predictive_admission: true\n");
  EXPECT_EQ(cfg.scheduler_limits.policy, llmq::SchedulingPolicy::fair);
  EXPECT_EQ(cfg.scheduler_limits.max_queued_per_user, 5u);
  EXPECT_EQ(cfg.scheduler_limits.priority_aging, 12500ms);
  EXPECT_TRUE(cfg.scheduler_limits.predictive_admission);
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(ConfigScheduling, SchedulerKeyErrors) {
  const std::string base = std::string(kMinimalAzure) + "scheduler_limits:\n";  // line 12
  EXPECT_EQ(parse_error(base + "  policy: round_robin\n"),
            "scheduler_limits.policy: must be one of fifo, fair (line 13)");
  EXPECT_EQ(parse_error(base + "  policy: FAIR\n"),
            "scheduler_limits.policy: must be one of fifo, fair (line 13)");
  EXPECT_EQ(parse_error(base + "  max_queued_per_user: -1\n"),
            "scheduler_limits.max_queued_per_user: must be a non-negative integer (line 13)");
  EXPECT_EQ(parse_error(base + "  priority_aging_seconds: 0\n"),
            "scheduler_limits.priority_aging_seconds: must be a positive number of seconds "
            "(line 13)");
  EXPECT_EQ(parse_error(base + "  predictive_admission: yes\n"),
            "scheduler_limits.predictive_admission: must be true or false (line 13)");
  EXPECT_EQ(parse_error(base + "  predictive_admission: [true]\n"),
            "scheduler_limits.predictive_admission: must be true or false (line 13)");
}

TEST(ConfigScheduling, DeploymentPriority) {
  const std::string yaml = std::string(kMinimalAzure) + "        priority: 2\n" +
                           "custom_models:\n"
                           "  - model: local\n"
                           "    base_url: http://localhost:8000\n"
                           "    model_type: chat\n"
                           "    req_per_min: 5\n"
                           "    tokens_per_min: 500\n";
  const LLMConfig cfg = parse_config(yaml);
  EXPECT_EQ(cfg.azure_open_ai[0].azure_oai_models[0].priority, 2);
  EXPECT_EQ(cfg.custom_models[0].priority, 0);
  const auto ds = cfg.deployments();
  EXPECT_EQ(ds[0].priority, 2);
  EXPECT_EQ(ds[1].priority, 0);
  EXPECT_EQ(parse_error(std::string(kMinimalAzure) + "        priority: -1\n"),
            "azure_open_ai[0].azure_oai_models[0].priority: must be a non-negative integer "
            "(line 12)");
  EXPECT_EQ(parse_error(std::string(kMinimalAzure) + "        priority: high\n"),
            "azure_open_ai[0].azure_oai_models[0].priority: must be a non-negative integer "
            "(line 12)");
  EXPECT_EQ(parse_error(std::string(kMinimalAzure) + "        weight: 4294967297\n"),
            "azure_open_ai[0].azure_oai_models[0].weight: must be at most 4294967296 (line 12)");
}

TEST(ConfigScheduling, DefaultWeightIsCapped) {
  const LLMConfig cfg =
      parse_config(replace_once(kMinimalAzure, "req_per_min: 10", "req_per_min: 9000000000000"));
  EXPECT_EQ(cfg.deployments()[0].weight, llmq::kMaxDeploymentWeight);
}

TEST(ConfigScheduling, ReadsUserTiers) {
  const std::string yaml = std::string(kMinimalAzure) +
                           "user_tiers:\n"
                           "  premium:\n"
                           "    users: [alice, \"bob\"]\n"
                           "    max_num_requests_in_time_window: 400\n"
                           "    time_window_length_in_seconds: 30\n"
                           "    weight: 4\n"
                           "    priority: high\n"
                           "    max_queued_per_user: 20\n"
                           "  batch:\n"
                           "    users:\n"
                           "      - etl\n"
                           "    priority: low\n"
                           "  empty: {}\n";
  const LLMConfig cfg = parse_config(yaml);
  ASSERT_EQ(cfg.user_tiers.size(), 3u);
  const llmq::UserTier& p = cfg.user_tiers[0];
  EXPECT_EQ(p.name, "premium");
  EXPECT_EQ(p.users, (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(p.max_num_requests_in_time_window, 400);
  EXPECT_EQ(p.time_window, 30s);
  EXPECT_EQ(p.weight, 4u);
  EXPECT_EQ(p.priority, llmq::Priority::high);
  EXPECT_EQ(p.max_queued_per_user, 20u);
  const llmq::UserTier& b = cfg.user_tiers[1];
  EXPECT_EQ(b.name, "batch");
  EXPECT_EQ(b.users, std::vector<std::string>{"etl"});
  EXPECT_FALSE(b.max_num_requests_in_time_window.has_value());
  EXPECT_FALSE(b.time_window.has_value());
  EXPECT_EQ(b.weight, 1u);
  EXPECT_EQ(b.priority, llmq::Priority::low);
  EXPECT_FALSE(b.max_queued_per_user.has_value());
  EXPECT_TRUE(cfg.user_tiers[2].users.empty());
  EXPECT_TRUE(cfg.warnings.empty());
}

TEST(ConfigScheduling, UserTierErrors) {
  const std::string base = std::string(kMinimalAzure) + "user_tiers:\n";  // line 12
  EXPECT_EQ(parse_error(base + "  - premium\n"), "user_tiers: must be a mapping (line 12)");
  EXPECT_EQ(parse_error(base + "  premium: 3\n"),
            "user_tiers.premium: must be a mapping (line 13)");
  EXPECT_EQ(parse_error(base + "  premium:\n    users: alice\n"),
            "user_tiers.premium.users: must be a list of user ids (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    users: [[a]]\n"),
            "user_tiers.premium.users[0]: must be a string (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    users: [\"\"]\n"),
            "user_tiers.premium.users[0]: must not be empty (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    weight: 0\n"),
            "user_tiers.premium.weight: must be a positive integer (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    weight: 1000001\n"),
            "user_tiers.premium.weight: must be an integer from 1 to 1000000 (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    priority: urgent\n"),
            "user_tiers.premium.priority: must be one of high, normal, low (line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    max_num_requests_in_time_window: 0\n"),
            "user_tiers.premium.max_num_requests_in_time_window: must be a positive integer "
            "(line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n    time_window_in_seconds: -3\n"),
            "user_tiers.premium.time_window_in_seconds: must be a positive number of seconds "
            "(line 14)");
  EXPECT_EQ(parse_error(base + "  premium:\n"
                               "    users: [alice]\n"
                               "  batch:\n"
                               "    users: [bob, alice]\n"),
            "user_tiers.batch.users[1]: user 'alice' is already in user_tiers.premium.users[0] "
            "at line 14 (line 16)");
  EXPECT_EQ(parse_error(base + "  premium:\n  premium:\n"),
            "user_tiers.premium: duplicate key (first given at line 13) (line 14)");
}

TEST(ConfigScheduling, UnknownTierKeyIsAWarning) {
  const LLMConfig cfg =
      parse_config(std::string(kMinimalAzure) + "user_tiers:\n  premium:\n    wieght: 3\n");
  ASSERT_EQ(cfg.warnings.size(), 1u);
  EXPECT_EQ(cfg.warnings[0], "user_tiers.premium.wieght: unknown key (line 14)");
}

llmq::UserTier tier(std::string name, std::vector<std::string> users = {}) {
  llmq::UserTier t;
  t.name = std::move(name);
  t.users = std::move(users);
  return t;
}

TEST(ConfigScheduling, ValidateChecksTheNewFields) {
  {
    LLMConfig cfg = built_config();
    cfg.scheduler_limits.priority_aging = 0ms;
    EXPECT_EQ(validate_error(cfg),
              "scheduler_limits.priority_aging_seconds: must be a positive number of seconds");
  }
  {
    LLMConfig cfg = built_config();
    cfg.scheduler_limits.policy = static_cast<llmq::SchedulingPolicy>(9);
    EXPECT_EQ(validate_error(cfg), "scheduler_limits.policy: must be one of fifo, fair");
  }
  {
    LLMConfig cfg = built_config();
    cfg.custom_models[0].priority = -1;
    EXPECT_EQ(validate_error(cfg), "custom_models[0].priority: must be a non-negative integer");
  }
  {
    LLMConfig cfg = built_config();
    cfg.azure_open_ai[0].azure_oai_models[0].weight = llmq::kMaxDeploymentWeight + 1;
    EXPECT_EQ(validate_error(cfg),
              "azure_open_ai[0].azure_oai_models[0].weight: must be at most 4294967296");
  }
  {
    LLMConfig cfg = built_config();
    cfg.user_tiers.push_back(tier("gold", {"u1"}));
    cfg.user_tiers.push_back(tier("silver", {"u2", "u1"}));
    EXPECT_EQ(validate_error(cfg),
              "user_tiers.silver.users[1]: user 'u1' is already in user_tiers.gold.users[0]");
  }
  {
    LLMConfig cfg = built_config();
    cfg.user_tiers.push_back(tier("gold"));
    cfg.user_tiers.push_back(tier("gold"));
    EXPECT_EQ(validate_error(cfg), "user_tiers.gold: duplicate tier name");
  }
  {
    LLMConfig cfg = built_config();
    cfg.user_tiers.push_back(tier(""));
    EXPECT_EQ(validate_error(cfg), "user_tiers: tier names must not be empty");
  }
  {
    LLMConfig cfg = built_config();
    llmq::UserTier t = tier("gold");
    t.weight = 0;
    cfg.user_tiers.push_back(t);
    EXPECT_EQ(validate_error(cfg), "user_tiers.gold.weight: must be an integer from 1 to 1000000");
  }
  {
    LLMConfig cfg = built_config();
    llmq::UserTier t = tier("gold");
    t.priority = static_cast<llmq::Priority>(7);
    cfg.user_tiers.push_back(t);
    EXPECT_EQ(validate_error(cfg), "user_tiers.gold.priority: must be one of high, normal, low");
  }
  {
    LLMConfig cfg = built_config();
    llmq::UserTier t = tier("gold");
    t.max_num_requests_in_time_window = 0;
    t.time_window = 5s;
    cfg.user_tiers.push_back(t);
    EXPECT_EQ(validate_error(cfg),
              "user_tiers.gold.max_num_requests_in_time_window: must be a positive integer");
  }
}

}  // namespace
