/// @file service.cpp
/// MockService: routing, auth, validation, Azure-style limits, faults, latency and the
/// deterministic response bodies of the mock Azure OpenAI server.
///
/// Request bodies are parsed outside the lock; every decision that touches shared state
/// (counters, rate windows, RNGs, request ids) is made under one mutex; bodies are built
/// after it is released and the usage they report is added under the lock again.

#include <llmq/mock/service.hpp>

#include <llmq/mock/rate_window.hpp>
#include <llmq/token_estimator.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <unordered_map>

namespace llmq::mock {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---- small text helpers ----------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

std::string_view find_header(const std::vector<std::pair<std::string, std::string>>& headers,
                             std::string_view name) noexcept {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool starts_with(std::string_view s, std::string_view prefix) noexcept {
  return s.substr(0, prefix.size()) == prefix;
}

/// Length of the longest prefix of `s` (valid UTF-8) of at most `max_bytes` that ends on
/// a code point boundary.
std::size_t utf8_cut(std::string_view s, std::size_t max_bytes) noexcept {
  if (s.size() <= max_bytes) return s.size();
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0U) == 0x80U) --cut;
  return cut;
}

/// The first `max_chars` code points of `s`.
std::string utf8_prefix(std::string_view s, std::size_t max_chars) {
  std::size_t bytes = 0;
  std::size_t chars = 0;
  while (bytes < s.size() && chars < max_chars) {
    ++bytes;
    while (bytes < s.size() && (static_cast<unsigned char>(s[bytes]) & 0xC0U) == 0x80U) ++bytes;
    ++chars;
  }
  return std::string(s.substr(0, bytes));
}

std::int64_t ceil_div4(std::size_t bytes) noexcept {
  return static_cast<std::int64_t>((bytes + 3) / 4);
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::uint64_t fnv1a(std::string_view s, std::uint64_t h = 1469598103934665603ULL) noexcept {
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::string base64(const unsigned char* data, std::size_t size) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < size; i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            std::uint32_t{data[i + 2]};
    out += kAlphabet[(v >> 18) & 63U];
    out += kAlphabet[(v >> 12) & 63U];
    out += kAlphabet[(v >> 6) & 63U];
    out += kAlphabet[v & 63U];
  }
  if (i < size) {
    std::uint32_t v = std::uint32_t{data[i]} << 16;
    if (i + 1 < size) v |= std::uint32_t{data[i + 1]} << 8;
    out += kAlphabet[(v >> 18) & 63U];
    out += kAlphabet[(v >> 12) & 63U];
    out += i + 1 < size ? kAlphabet[(v >> 6) & 63U] : '=';
    out += '=';
  }
  return out;
}

/// "00000000-0000-4000-8000-<12 hex digits of n>": a stable, UUID-shaped request id.
std::string request_id(std::uint64_t n) {
  std::array<char, 64> buf{};
  std::snprintf(buf.data(), buf.size(), "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xFFFFFFFFFFFFULL));
  return std::string(buf.data());
}

// ---- request targets -------------------------------------------------------------

struct Target {
  std::string_view path;
  std::string_view query;
};

Target split_target(std::string_view target) noexcept {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (percent_decode(pair.substr(0, eq)) == name)
      return eq == std::string_view::npos ? std::string() : percent_decode(pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

enum class Operation { chat, embeddings };
enum class RouteStyle { classic, v1, openai };

struct Route {
  Operation op = Operation::chat;
  RouteStyle style = RouteStyle::classic;
  std::string deployment;  // classic only
};

std::optional<Route> match_route(std::string_view path) {
  constexpr std::string_view kClassic = "/openai/deployments/";
  auto operation = [](std::string_view rest) -> std::optional<Operation> {
    if (rest == "chat/completions") return Operation::chat;
    if (rest == "embeddings") return Operation::embeddings;
    return std::nullopt;
  };
  if (starts_with(path, kClassic)) {
    std::string_view rest = path.substr(kClassic.size());
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0) return std::nullopt;
    auto op = operation(rest.substr(slash + 1));
    if (!op) return std::nullopt;
    return Route{*op, RouteStyle::classic, percent_decode(rest.substr(0, slash))};
  }
  if (starts_with(path, "/openai/v1/")) {
    if (auto op = operation(path.substr(std::string_view("/openai/v1/").size())))
      return Route{*op, RouteStyle::v1, {}};
    return std::nullopt;
  }
  if (starts_with(path, "/v1/")) {
    if (auto op = operation(path.substr(std::string_view("/v1/").size())))
      return Route{*op, RouteStyle::openai, {}};
  }
  return std::nullopt;
}

// ---- bodies ----------------------------------------------------------------------

json filter_ok() {
  const json safe = {{"filtered", false}, {"severity", "safe"}};
  return {{"hate", safe}, {"self_harm", safe}, {"sexual", safe}, {"violence", safe}};
}

json prompt_filter_results() {
  return json::array({{{"prompt_index", 0}, {"content_filter_results", filter_ok()}}});
}

json azure_error(std::string_view code, std::string_view message) {
  return {{"error", {{"code", code}, {"message", message}}}};
}

json invalid_request(std::string_view message, const json& param) {
  return {{"error",
           {{"code", "BadRequest"},
            {"message", message},
            {"param", param},
            {"type", "invalid_request_error"}}}};
}

std::string_view reason_phrase_code(unsigned status) {
  switch (status) {
    case 400:
      return "BadRequest";
    case 403:
      return "Forbidden";
    case 408:
      return "Timeout";
    case 409:
      return "Conflict";
    case 500:
      return "InternalServerError";
    case 502:
      return "BadGateway";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "GatewayTimeout";
    default:
      return {};
  }
}

json injected_error(unsigned status) {
  switch (status) {
    case 500:
      return azure_error("InternalServerError",
                         "The server had an error while processing your request. Sorry about "
                         "that! (injected by llmq-mock-azure)");
    case 503:
      return azure_error("ServiceUnavailable",
                         "The service is temporarily unable to process your request. Please try "
                         "again later. (injected by llmq-mock-azure)");
    default: {
      std::string code(reason_phrase_code(status));
      if (code.empty()) code = std::to_string(status);
      return azure_error(code, "Injected HTTP " + std::to_string(status) + " (llmq-mock-azure)");
    }
  }
}

std::string_view operation_name(Operation op) {
  return op == Operation::chat ? "ChatCompletions_Create" : "Embeddings_Create";
}

std::int64_t ceil_seconds(std::chrono::nanoseconds d) {
  const auto s = (d.count() + 999'999'999) / 1'000'000'000;
  return s < 1 ? 1 : s;
}

std::int64_t ceil_millis(std::chrono::nanoseconds d) {
  const auto ms = (d.count() + 999'999) / 1'000'000;
  return ms < 1 ? 1 : ms;
}

json rate_limit_error(Operation op, std::string_view api_version, RateLimitReason reason,
                      std::int64_t retry_seconds) {
  std::string msg = "Requests to the ";
  msg.append(operation_name(op))
      .append(" Operation under Azure OpenAI API version ")
      .append(api_version)
      .append(reason == RateLimitReason::requests ? " have exceeded call rate limit"
                                                  : " have exceeded token rate limit")
      .append(" of your current OpenAI S0 pricing tier. Please retry after ")
      .append(std::to_string(retry_seconds))
      .append(
          " seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like "
          "to further increase the default rate limit.");
  return azure_error("429", msg);
}

/// Text of a message's content: a string, or the `text` of each part.
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (content.is_array()) {
    for (const json& part : content) {
      if (!part.is_object()) continue;
      auto text = part.find("text");
      if (text != part.end() && text->is_string()) out += text->get_ref<const std::string&>();
    }
  }
  return out;
}

/// The mock's own prompt count: 3 per message + ceil(content bytes / 4), + 3 for the
/// reply primer. Never above llmq's estimate, which also counts roles and names.
std::int64_t chat_prompt_tokens(const json& messages) {
  std::int64_t n = 3;
  for (const json& m : messages) {
    n += 3;
    if (!m.is_object()) continue;
    if (auto c = m.find("content"); c != m.end()) {
      if (c->is_string() || c->is_array())
        n += ceil_div4(content_text(*c).size());
      else if (!c->is_null())
        n += ceil_div4(c->dump().size());
    }
  }
  return n;
}

std::optional<std::int64_t> positive_int(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_number_integer()) return std::nullopt;
  const auto v = it->get<std::int64_t>();
  if (v <= 0) return std::nullopt;
  return v;
}

/// One word of filler: 4 bytes, so each adds exactly one token to ceil(bytes / 4).
constexpr std::string_view kFillerWord = " tok";
/// Longest answer a request may ask for with `mock_completion_tokens`.
constexpr std::int64_t kMaxAnswerTokens = 100'000;

struct ChatAnswer {
  std::string id;
  std::string model;
  std::int64_t created = 0;
  std::string content;     // the echo; the whole content is this plus `filler` filler words
  std::size_t filler = 0;  // kFillerWord repeated this often after `content`
  std::string finish_reason = "stop";
  std::int64_t choices = 1;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;  // all choices
};

ChatAnswer make_chat_answer(const json& body, const std::string& model, std::uint64_t id) {
  ChatAnswer a;
  a.id = "chatcmpl-" + std::to_string(id);
  a.model = model;
  a.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  const json& messages = body.at("messages");
  std::string last_user;
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->is_object() && it->value("role", "") == "user") {
      last_user = content_text(it->value("content", json()));
      break;
    }
  }
  a.content = "Echo: " + utf8_prefix(last_user, 40);
  const std::int64_t echo_tokens = std::max<std::int64_t>(1, ceil_div4(a.content.size()));
  // A long answer: filler words until the content has the asked-for number of tokens.
  const std::int64_t wanted =
      std::max(echo_tokens, positive_int(body, "mock_completion_tokens").value_or(0));
  std::int64_t per_choice = wanted;
  const auto budget = positive_int(body, "max_completion_tokens")
                          ? positive_int(body, "max_completion_tokens")
                          : positive_int(body, "max_tokens");
  if (budget && *budget < per_choice) {
    if (*budget < echo_tokens)
      a.content.resize(utf8_cut(a.content, static_cast<std::size_t>(*budget) * 4));
    a.finish_reason = "length";
    per_choice = *budget;
  }
  a.filler = static_cast<std::size_t>(std::max<std::int64_t>(0, per_choice - echo_tokens));
  a.choices = positive_int(body, "n").value_or(1);
  a.prompt_tokens = chat_prompt_tokens(messages);
  a.completion_tokens = per_choice * a.choices;
  return a;
}

json usage_json(std::int64_t prompt, std::int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

/// The JSON text of a string (escaped as dump() escapes it).
std::string quoted(const std::string& s) { return dump(json(s)); }

/// The whole content: the echo and its filler words.
std::string full_content(const ChatAnswer& a) {
  std::string out;
  out.reserve(a.content.size() + a.filler * kFillerWord.size());
  out += a.content;
  for (std::size_t i = 0; i < a.filler; ++i) out += kFillerWord;
  return out;
}

/// dump(chat_body(a)), written out directly: the same bytes (members in the order
/// nlohmann::json sorts them) without building a JSON tree per answer, whose constant
/// parts (content filter results) are most of it. The mock shares the cores with what it
/// is benchmarked against, so its own cost per answer is kept low.
std::string chat_body_text(const ChatAnswer& a) {
  static const std::string filter = dump(filter_ok());
  static const std::string prompt_filter = dump(prompt_filter_results());
  const std::string finish_reason = "\"finish_reason\":" + quoted(a.finish_reason);
  const std::string content = quoted(full_content(a));
  std::string out;
  out.reserve(512 + static_cast<std::size_t>(a.choices) * (filter.size() + content.size() + 96));
  out += "{\"choices\":[";
  for (std::int64_t i = 0; i < a.choices; ++i) {
    if (i > 0) out += ',';
    out += "{\"content_filter_results\":";
    out += filter;
    out += ',';
    out += finish_reason;
    out += ",\"index\":";
    out += std::to_string(i);
    out += ",\"logprobs\":null,\"message\":{\"content\":";
    out += content;
    out += ",\"role\":\"assistant\"}}";
  }
  out += "],\"created\":";
  out += std::to_string(a.created);
  out += ",\"id\":";
  out += quoted(a.id);
  out += ",\"model\":";
  out += quoted(a.model);
  out += ",\"object\":\"chat.completion\",\"prompt_filter_results\":";
  out += prompt_filter;
  out += ",\"system_fingerprint\":\"fp_llmq_mock\",\"usage\":{\"completion_tokens\":";
  out += std::to_string(a.completion_tokens);
  out += ",\"prompt_tokens\":";
  out += std::to_string(a.prompt_tokens);
  out += ",\"total_tokens\":";
  out += std::to_string(a.prompt_tokens + a.completion_tokens);
  out += "}}";
  return out;
}

/// The same body as a JSON tree: the reference debug builds check chat_body_text against.
[[maybe_unused]] json chat_body(const ChatAnswer& a) {
  json choices = json::array();
  for (std::int64_t i = 0; i < a.choices; ++i) {
    choices.push_back({{"index", i},
                       {"message", {{"role", "assistant"}, {"content", full_content(a)}}},
                       {"finish_reason", a.finish_reason},
                       {"logprobs", nullptr},
                       {"content_filter_results", filter_ok()}});
  }
  return {{"id", a.id},
          {"object", "chat.completion"},
          {"created", a.created},
          {"model", a.model},
          {"system_fingerprint", "fp_llmq_mock"},
          {"choices", std::move(choices)},
          {"usage", usage_json(a.prompt_tokens, a.completion_tokens)},
          {"prompt_filter_results", prompt_filter_results()}};
}

json chunk(const ChatAnswer& a, json choices) {
  return {
      {"id", a.id},       {"object", "chat.completion.chunk"},    {"created", a.created},
      {"model", a.model}, {"system_fingerprint", "fp_llmq_mock"}, {"choices", std::move(choices)}};
}

std::string sse(const json& j) { return "data: " + dump(j) + "\n\n"; }

/// Splits text into word-sized deltas ("Echo: ", "hello ", "world").
std::vector<std::string> pieces(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto space = text.find(' ', start);
    const std::size_t end = space == std::string::npos ? text.size() : space + 1;
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

/// The SSE events of a chat answer, as Azure sends them: a first event with the prompt
/// filter results only (empty choices); per choice a role event, one event per word of
/// the echo and per filler word, and an event with finish_reason; a usage event when
/// asked for; `data: [DONE]`. Computed per index: a long answer costs no memory.
class ChatStream final : public StreamEvents {
 public:
  ChatStream(const ChatAnswer& a, bool include_usage)
      : answer_(a), echo_(pieces(a.content)), include_usage_(include_usage) {
    // Content events differ only in their text: keep each choice's JSON around it.
    for (std::int64_t i = 0; i < a.choices; ++i) {
      json delta = {{"content", "\x01"}};
      const std::string text =
          sse(chunk(a, json::array({{{"index", i},
                                     {"delta", std::move(delta)},
                                     {"finish_reason", nullptr},
                                     {"logprobs", nullptr},
                                     {"content_filter_results", filter_ok()}}})));
      constexpr std::string_view kMark = "\"\\u0001\"";
      const auto at = text.find(kMark);
      assert(at != std::string::npos);
      around_.emplace_back(text.substr(0, at), text.substr(at + kMark.size()));
    }
  }

  [[nodiscard]] std::size_t size() const override {
    return 1 + choices() * per_choice() + (include_usage_ ? 1 : 0) + 1;
  }

  [[nodiscard]] std::string at(std::size_t i) const override {
    std::string e = event(i);
    if (malformed_ && *malformed_ == i) e = e.substr(0, e.size() / 2) + "\n\n";
    return e;
  }

  /// Event `i` is sent cut in half (invalid JSON).
  void set_malformed(std::size_t i) { malformed_ = i; }

 private:
  [[nodiscard]] std::size_t choices() const { return static_cast<std::size_t>(answer_.choices); }
  [[nodiscard]] std::size_t per_choice() const { return 2 + echo_.size() + answer_.filler; }

  [[nodiscard]] std::string event(std::size_t i) const {
    if (i == 0) {
      return sse({{"choices", json::array()},
                  {"created", 0},
                  {"id", ""},
                  {"model", ""},
                  {"object", ""},
                  {"prompt_filter_results", prompt_filter_results()}});
    }
    --i;
    if (i < choices() * per_choice()) {
      const std::size_t c = i / per_choice();
      const std::size_t j = i % per_choice();
      const auto index = static_cast<std::int64_t>(c);
      if (j == 0) {
        json role_delta = {{"role", "assistant"}, {"content", ""}};
        return sse(chunk(answer_, json::array({{{"index", index},
                                                {"delta", std::move(role_delta)},
                                                {"finish_reason", nullptr},
                                                {"logprobs", nullptr},
                                                {"content_filter_results", json::object()}}})));
      }
      if (j + 1 == per_choice()) {
        return sse(chunk(answer_, json::array({{{"index", index},
                                                {"delta", json::object()},
                                                {"finish_reason", answer_.finish_reason},
                                                {"logprobs", nullptr},
                                                {"content_filter_results", json::object()}}})));
      }
      const std::string piece =
          j <= echo_.size() ? quoted(echo_[j - 1]) : quoted(std::string(kFillerWord));
      return around_[c].first + piece + around_[c].second;
    }
    if (include_usage_ && i == choices() * per_choice()) {
      json last = chunk(answer_, json::array());
      last["usage"] = usage_json(answer_.prompt_tokens, answer_.completion_tokens);
      return sse(last);
    }
    return "data: [DONE]\n\n";
  }

  ChatAnswer answer_;
  std::vector<std::string> echo_;
  bool include_usage_;
  std::vector<std::pair<std::string, std::string>> around_;
  std::optional<std::size_t> malformed_;
};

/// An embeddings input item: text or token ids.
struct EmbeddingItem {
  std::string key;  // what the vector derives from
  std::int64_t tokens = 0;
};

/// Validates `input`; fills `items` or returns the 400 message.
std::optional<std::string> read_embedding_input(const json& body,
                                                std::vector<EmbeddingItem>& items) {
  auto input = body.find("input");
  if (input == body.end() || input->is_null()) return "'input' is a required property";
  constexpr std::string_view kShape =
      "'input' must be a non-empty string, array of strings or array of token arrays";
  auto token_key = [](const json& arr, EmbeddingItem& item) {
    item.key = "tokens:";
    for (const json& t : arr) {
      if (!t.is_number_integer() || t.get<std::int64_t>() < 0) return false;
      item.key += std::to_string(t.get<std::int64_t>()) + ",";
    }
    item.tokens = static_cast<std::int64_t>(arr.size());
    return !arr.empty();
  };
  if (input->is_string()) {
    const auto& s = input->get_ref<const std::string&>();
    if (s.empty()) return std::string(kShape);
    items.push_back({s, std::max<std::int64_t>(1, ceil_div4(s.size()))});
    return std::nullopt;
  }
  if (!input->is_array() || input->empty()) return std::string(kShape);
  if (input->size() > 2048) return "Too many inputs. The max number of inputs is 2048.";
  if (std::all_of(input->begin(), input->end(), [](const json& t) { return t.is_number(); })) {
    EmbeddingItem item;
    if (!token_key(*input, item)) return std::string(kShape);
    items.push_back(std::move(item));
    return std::nullopt;
  }
  for (const json& v : *input) {
    EmbeddingItem item;
    if (v.is_string() && !v.get_ref<const std::string&>().empty()) {
      item.key = v.get<std::string>();
      item.tokens = std::max<std::int64_t>(1, ceil_div4(item.key.size()));
    } else if (!v.is_array() || !token_key(v, item)) {
      return std::string(kShape);
    }
    items.push_back(std::move(item));
  }
  return std::nullopt;
}

/// Unit-length vector of `dims` values derived from `key`, rounded to 6 decimals.
std::vector<double> embedding_vector(std::string_view key, int dims) {
  std::uint64_t state = fnv1a(key) ^ (static_cast<std::uint64_t>(dims) * 0x9E3779B97F4A7C15ULL);
  std::vector<double> v(static_cast<std::size_t>(dims));
  double norm = 0;
  for (double& x : v) {
    x = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
    norm += x * x;
  }
  norm = norm > 0 ? std::sqrt(norm) : 1.0;
  for (double& x : v) x = std::round(x / norm * 1e6) / 1e6;
  return v;
}

json embeddings_body(const std::vector<EmbeddingItem>& items, const std::string& model, int dims,
                     bool base64_format, std::int64_t& prompt_tokens) {
  json data = json::array();
  prompt_tokens = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::vector<double> v = embedding_vector(items[i].key, dims);
    json embedding;
    if (base64_format) {
      std::vector<unsigned char> bytes(v.size() * 4);
      for (std::size_t k = 0; k < v.size(); ++k) {
        const auto f = static_cast<float>(v[k]);
        std::uint32_t bits = 0;
        std::memcpy(&bits, &f, sizeof bits);
        for (unsigned b = 0; b < 4; ++b)
          bytes[k * 4 + b] = static_cast<unsigned char>((bits >> (8 * b)) & 0xFFU);
      }
      embedding = base64(bytes.data(), bytes.size());
    } else {
      embedding = v;
    }
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
    prompt_tokens += items[i].tokens;
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

/// Returns the 400 message when the chat body is unusable.
std::optional<std::pair<std::string, std::string>> check_chat_body(const json& body) {
  auto m = body.find("messages");
  if (m == body.end() || m->is_null())
    return std::pair<std::string, std::string>{"'messages' is a required property", "messages"};
  if (!m->is_array() || m->empty())
    return std::pair<std::string, std::string>{"'messages' must be a non-empty array", "messages"};
  for (std::size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    auto role = msg.is_object() ? msg.find("role") : msg.end();
    if (!msg.is_object() || role == msg.end() || !role->is_string())
      return std::pair<std::string, std::string>{
          "'messages[" + std::to_string(i) + "]' must be an object with a string 'role'",
          "messages"};
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto it = body.find(key);
    if (it != body.end() && !it->is_null() &&
        (!it->is_number_integer() || it->get<std::int64_t>() < 1))
      return std::pair<std::string, std::string>{
          std::string("'") + key + "' must be a positive integer", key};
  }
  if (auto n = body.find("n"); n != body.end() && !n->is_null()) {
    if (!n->is_number_integer() || n->get<std::int64_t>() < 1 || n->get<std::int64_t>() > 128)
      return std::pair<std::string, std::string>{"'n' must be an integer in [1, 128]", "n"};
  }
  if (auto t = body.find("mock_completion_tokens"); t != body.end() && !t->is_null()) {
    if (!t->is_number_integer() || t->get<std::int64_t>() < 1 ||
        t->get<std::int64_t>() > kMaxAnswerTokens)
      return std::pair<std::string, std::string>{
          "'mock_completion_tokens' must be an integer in [1, " + std::to_string(kMaxAnswerTokens) +
              "]",
          "mock_completion_tokens"};
  }
  if (auto s = body.find("stream"); s != body.end() && !s->is_null() && !s->is_boolean())
    return std::pair<std::string, std::string>{"'stream' must be a boolean", "stream"};
  return std::nullopt;
}

// ---- faults and latency ----------------------------------------------------------

enum class FaultKind {
  none,
  reset,
  stall,
  malformed,
  truncated,
  slow_body,
  stream_break,
  stream_stall,
  stream_malformed,
  error
};

struct FaultPick {
  FaultKind kind = FaultKind::none;
  unsigned status = 0;
};

FaultPick pick_fault(const FaultConfig& f, std::mt19937_64& rng) {
  if (f.total_rate() <= 0) return {};
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  double acc = 0;
  const std::array<std::pair<double, FaultKind>, 8> kinds{
      {{f.reset_rate, FaultKind::reset},
       {f.stall_rate, FaultKind::stall},
       {f.malformed_rate, FaultKind::malformed},
       {f.truncated_rate, FaultKind::truncated},
       {f.slow_body_rate, FaultKind::slow_body},
       {f.stream_break_rate, FaultKind::stream_break},
       {f.stream_stall_rate, FaultKind::stream_stall},
       {f.stream_malformed_rate, FaultKind::stream_malformed}}};
  for (const auto& [rate, kind] : kinds) {
    acc += rate;
    if (u < acc) return {kind, 0};
  }
  for (const auto& [status, rate] : f.error_rate) {
    acc += rate;
    if (u < acc) return {FaultKind::error, status};
  }
  return {};
}

milliseconds sample_latency(const LatencyConfig& l, std::mt19937_64& rng) {
  double ms = 0;
  switch (l.distribution) {
    case LatencyConfig::Distribution::fixed:
      ms = l.ms;
      break;
    case LatencyConfig::Distribution::uniform:
      ms = l.max_ms > l.min_ms ? std::uniform_real_distribution<double>(l.min_ms, l.max_ms)(rng)
                               : l.min_ms;
      break;
    case LatencyConfig::Distribution::lognormal: {
      const double z = std::normal_distribution<double>(0.0, 1.0)(rng);
      ms = l.median_ms * std::exp(l.sigma * z);
      ms = std::max(ms, l.min_ms);
      if (l.max_ms > 0) ms = std::min(ms, l.max_ms);
      break;
    }
  }
  return milliseconds(std::llround(std::clamp(ms, 0.0, 600000.0)));
}

// ---- per-deployment state --------------------------------------------------------

struct DeploymentState {
  DeploymentConfig cfg;
  FaultConfig faults;
  LatencyConfig latency;
  double stream_rate = 0;
  /// Opening of the first 429 burst window: the first request after the faults were set.
  std::optional<Clock::time_point> burst_anchor;
  int dimensions = 8;
  std::uint64_t seed = 0;
  DeploymentRateLimiter limiter;
  PeakRateTracker peak;
  DeploymentCounters counters;
  std::mt19937_64 rng;

  DeploymentState(const DeploymentConfig& d, const MockConfig& server)
      : cfg(d),
        faults(d.faults),
        latency(d.latency.value_or(server.latency)),
        stream_rate(d.stream_tokens_per_second.value_or(server.stream_tokens_per_second)),
        dimensions(d.embedding_dimensions.value_or(server.embedding_dimensions)),
        seed(server.seed ^ fnv1a(d.name)),
        limiter(d.req_per_min, d.tokens_per_min),
        rng(seed) {}

  void set_faults(FaultConfig f) {
    faults = std::move(f);
    burst_anchor.reset();
  }

  /// Inside a 429 burst window at `now`: the time left in it.
  std::optional<Clock::duration> burst_left(Clock::time_point now) {
    if (faults.burst_429_duration.count() <= 0) return std::nullopt;
    if (!burst_anchor) burst_anchor = now;
    Clock::duration phase = std::max(Clock::duration::zero(), now - *burst_anchor);
    if (faults.burst_429_period.count() > 0) phase %= faults.burst_429_period;
    if (phase >= faults.burst_429_duration) return std::nullopt;
    return Clock::duration(faults.burst_429_duration) - phase;
  }

  void count_status(unsigned status) {
    if (status >= 200 && status < 300)
      ++counters.ok;
    else if (status == 429)
      ++counters.rate_limited;
    else if (status >= 400)
      ++counters.errors[status];
  }
};

// ---- responses -------------------------------------------------------------------

/// A JSON answer whose body is already serialised.
MockHttpResponse json_text_response(unsigned status, std::string body, std::uint64_t id) {
  MockHttpResponse r;
  r.status = status;
  r.headers.emplace_back("content-type", "application/json");
  const std::string rid = request_id(id);
  r.headers.emplace_back("x-request-id", rid);
  r.headers.emplace_back("apim-request-id", rid);
  r.headers.emplace_back("x-ms-region", "Mock Region");
  r.body = std::move(body);
  return r;
}

MockHttpResponse json_response(unsigned status, const json& body, std::uint64_t id) {
  return json_text_response(status, dump(body), id);
}

void add_rate_headers(MockHttpResponse& r, const DeploymentRateLimiter& limiter,
                      std::int64_t remaining_requests, std::int64_t remaining_tokens) {
  if (limiter.requests_per_minute() > 0) {
    r.headers.emplace_back("x-ratelimit-limit-requests",
                           std::to_string(limiter.requests_per_minute()));
    r.headers.emplace_back("x-ratelimit-remaining-requests", std::to_string(remaining_requests));
  }
  if (limiter.tokens_per_minute() > 0) {
    r.headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(limiter.tokens_per_minute()));
    r.headers.emplace_back("x-ratelimit-remaining-tokens", std::to_string(remaining_tokens));
  }
}

void add_retry_headers(MockHttpResponse& r, std::chrono::nanoseconds retry_after) {
  r.headers.emplace_back("retry-after", std::to_string(ceil_seconds(retry_after)));
  const std::string ms = std::to_string(ceil_millis(retry_after));
  r.headers.emplace_back("retry-after-ms", ms);
  r.headers.emplace_back("x-ms-retry-after-ms", ms);
}

ResponsePlan respond(MockHttpResponse r) {
  ResponsePlan p;
  p.response = std::move(r);
  return p;
}

json counters_json(const DeploymentCounters& c) {
  json errors = json::object();
  for (const auto& [status, n] : c.errors) errors[std::to_string(status)] = n;
  return {{"requests", c.requests},
          {"ok", c.ok},
          {"rate_limited", c.rate_limited},
          {"errors", std::move(errors)},
          {"resets", c.resets},
          {"stalls", c.stalls},
          {"malformed", c.malformed},
          {"truncated", c.truncated},
          {"slow_bodies", c.slow_bodies},
          {"streams", c.streams},
          {"stream_breaks", c.stream_breaks},
          {"stream_stalls", c.stream_stalls},
          {"stream_malformed", c.stream_malformed},
          {"bursts_429", c.bursts_429},
          {"prompt_tokens", c.prompt_tokens},
          {"completion_tokens", c.completion_tokens},
          {"charged_tokens", c.charged_tokens},
          {"max_requests_in_1s", c.max_requests_in_1s}};
}

json status_json(std::string_view status) { return {{"status", status}}; }

}  // namespace

// ---- MockHttpRequest / MockHttpResponse --------------------------------------------

std::string_view MockHttpRequest::header(std::string_view name) const noexcept {
  return find_header(headers, name);
}

std::string_view MockHttpResponse::header(std::string_view name) const noexcept {
  return find_header(headers, name);
}

std::vector<std::string> StreamEvents::all() const {
  std::vector<std::string> out;
  out.reserve(size());
  for (std::size_t i = 0; i < size(); ++i) out.push_back(at(i));
  return out;
}

// ---- MockService -----------------------------------------------------------------

struct MockService::Impl {
  MockConfig cfg;
  mutable std::mutex mu;
  std::vector<std::unique_ptr<DeploymentState>> deployments;
  std::unordered_map<std::string, DeploymentState*> by_name;
  std::uint64_t next_id = 1;
  std::uint64_t unrouted = 0;
  std::map<unsigned, std::uint64_t> protocol_errors;
  Clock::time_point started = Clock::now();

  explicit Impl(MockConfig c) : cfg(std::move(c)) {
    validate(cfg);
    for (const DeploymentConfig& d : cfg.deployments) {
      deployments.push_back(std::make_unique<DeploymentState>(d, cfg));
      by_name.emplace(d.name, deployments.back().get());
    }
  }

  DeploymentState* find(const std::string& name) const {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  }

  ResponsePlan handle(const MockHttpRequest& req, Clock::time_point now);
  ResponsePlan handle_control(const MockHttpRequest& req, std::string_view path,
                              Clock::time_point now);
  ResponsePlan handle_inference(const MockHttpRequest& req, const Route& route,
                                std::string_view query, Clock::time_point now);
  void reset_locked();
  json stats_locked(Clock::time_point now) const;
};

ResponsePlan MockService::Impl::handle(const MockHttpRequest& req, Clock::time_point now) {
  const Target t = split_target(req.target);
  if (t.path == "/healthz") {
    if (req.method != "GET") {
      auto r = json_response(405, azure_error("405", "Method not allowed"), 0);
      r.headers.emplace_back("allow", "GET");
      return respond(std::move(r));
    }
    return respond(json_response(200, status_json("ok"), 0));
  }
  if (t.path == "/mock" || starts_with(t.path, "/mock/")) return handle_control(req, t.path, now);
  if (auto route = match_route(t.path)) {
    if (req.method != "POST") {
      auto r = json_response(405, azure_error("405", "Method not allowed; use POST"), 0);
      r.headers.emplace_back("allow", "POST");
      return respond(std::move(r));
    }
    return handle_inference(req, *route, t.query, now);
  }
  {
    std::lock_guard lock(mu);
    ++unrouted;
  }
  return respond(json_response(404, azure_error("404", "Resource not found"), 0));
}

ResponsePlan MockService::Impl::handle_control(const MockHttpRequest& req, std::string_view path,
                                               Clock::time_point now) {
  if (!req.remote_is_loopback)
    return respond(json_response(
        403, azure_error("403", "The mock's control endpoints answer loopback clients only"), 0));
  auto method_not_allowed = [](std::string_view allow) {
    auto r = json_response(405, azure_error("405", "Method not allowed"), 0);
    r.headers.emplace_back("allow", std::string(allow));
    return respond(std::move(r));
  };
  if (path == "/mock/stats") {
    if (req.method != "GET") return method_not_allowed("GET");
    std::lock_guard lock(mu);
    return respond(json_response(200, stats_locked(now), 0));
  }
  if (path == "/mock/reset") {
    if (req.method != "POST") return method_not_allowed("POST");
    std::lock_guard lock(mu);
    reset_locked();
    return respond(json_response(200, status_json("reset"), 0));
  }
  constexpr std::string_view kPrefix = "/mock/deployments/";
  constexpr std::string_view kSuffix = "/faults";
  if (starts_with(path, kPrefix) && path.size() > kPrefix.size() + kSuffix.size() &&
      path.substr(path.size() - kSuffix.size()) == kSuffix) {
    const std::string name =
        percent_decode(path.substr(kPrefix.size(), path.size() - kPrefix.size() - kSuffix.size()));
    if (req.method != "PUT" && req.method != "GET") return method_not_allowed("GET, PUT");
    std::lock_guard lock(mu);
    DeploymentState* d = find(name);
    if (d == nullptr)
      return respond(
          json_response(404, azure_error("DeploymentNotFound", "No deployment named " + name), 0));
    if (req.method == "GET") return respond(json_response(200, to_json(d->faults), 0));
    const json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded())
      return respond(json_response(400, invalid_request("Body is not valid JSON", nullptr), 0));
    try {
      d->set_faults(parse_fault_config(body));
    } catch (const MockConfigError& e) {
      return respond(json_response(400, invalid_request(e.what(), nullptr), 0));
    }
    return respond(json_response(200, to_json(d->faults), 0));
  }
  return respond(json_response(404, azure_error("404", "Resource not found"), 0));
}

ResponsePlan MockService::Impl::handle_inference(const MockHttpRequest& req, const Route& route,
                                                 std::string_view query, Clock::time_point now) {
  std::string api_version = "v1";
  if (route.style == RouteStyle::classic) {
    auto v = query_param(query, "api-version");
    if (!v || v->empty()) {
      std::lock_guard lock(mu);
      ++unrouted;
      return respond(json_response(
          404,
          azure_error("DeploymentNotFound",
                      "Resource not found: the api-version query parameter is missing"),
          0));
    }
    api_version = *v;
  }

  // Parse outside the lock; bodies may be large.
  const json body = json::parse(req.body, nullptr, false);
  const bool bad_json = body.is_discarded() || !body.is_object();
  std::string name = route.deployment;
  if (route.style != RouteStyle::classic && !bad_json) {
    auto m = body.find("model");
    if (m != body.end() && m->is_string()) name = m->get<std::string>();
  }
  std::vector<std::string_view> presented;
  if (auto k = trim(req.header("api-key")); !k.empty()) presented.push_back(k);
  if (auto auth = trim(req.header("authorization"));
      auth.size() > 7 && iequals(auth.substr(0, 7), "Bearer ")) {
    presented.push_back(trim(auth.substr(7)));
  }

  bool stream_requested = false;
  if (!bad_json) {
    const auto st = body.find("stream");
    stream_requested = st != body.end() && st->is_boolean() && st->get<bool>();
  }

  std::unique_lock lock(mu);
  DeploymentState* d = find(name);
  const std::uint64_t id = next_id++;
  auto tagged = [&](MockHttpResponse r) {
    ResponsePlan p = respond(std::move(r));
    if (d != nullptr) p.deployment = d->cfg.name;
    return p;
  };
  auto fail = [&](unsigned status, const json& err) {
    if (d != nullptr)
      d->count_status(status);
    else
      ++unrouted;
    return tagged(json_response(status, err, id));
  };
  if (d != nullptr) {
    ++d->counters.requests;
    d->peak.record(now);
    d->counters.max_requests_in_1s = d->peak.peak();
  }

  // Auth: the deployment's key or the server-wide key; none configured: open.
  const std::string& own_key = d != nullptr ? d->cfg.api_key : cfg.api_key;
  if (!own_key.empty() || !cfg.api_key.empty()) {
    const bool ok = std::any_of(presented.begin(), presented.end(), [&](std::string_view k) {
      return (!own_key.empty() && k == own_key) || (!cfg.api_key.empty() && k == cfg.api_key);
    });
    if (!ok)
      return fail(401, azure_error("401",
                                   "Access denied due to invalid subscription key or wrong API "
                                   "endpoint. Make sure to provide a valid key for an active "
                                   "subscription and use a correct regional API endpoint for "
                                   "your resource."));
  }
  if (bad_json)
    return fail(400, invalid_request("We could not parse the JSON body of your request. The "
                                     "body must be a JSON object.",
                                     nullptr));
  if (route.style != RouteStyle::classic && name.empty())
    return fail(400, invalid_request("you must provide a model parameter", "model"));
  if (d == nullptr)
    return fail(404, azure_error("DeploymentNotFound",
                                 "The API deployment for this resource does not exist. If you "
                                 "created the deployment within the last 5 minutes, please "
                                 "wait a moment and try again."));
  const bool wants_chat = route.op == Operation::chat;
  if (wants_chat != (d->cfg.type == DeploymentType::chat)) {
    return fail(
        400, azure_error("OperationNotSupported",
                         std::string("The ") + (wants_chat ? "chatCompletion" : "embeddings") +
                             " operation does not work with the specified model, " + d->cfg.model +
                             ". Please choose different model and try again."));
  }

  // Validation.
  std::vector<EmbeddingItem> items;
  int dims = d->dimensions;
  bool base64_format = false;
  if (wants_chat) {
    if (auto problem = check_chat_body(body))
      return fail(400, invalid_request(problem->first, problem->second));
  } else {
    if (auto problem = read_embedding_input(body, items))
      return fail(400, invalid_request(*problem, "input"));
    if (auto it = body.find("dimensions"); it != body.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 4096)
        return fail(400,
                    invalid_request("'dimensions' must be an integer in [1, 4096]", "dimensions"));
      dims = static_cast<int>(it->get<std::int64_t>());
    }
    if (auto it = body.find("encoding_format"); it != body.end() && !it->is_null()) {
      if (*it == "base64")
        base64_format = true;
      else if (*it != "float")
        return fail(400, invalid_request("'encoding_format' must be 'float' or 'base64'",
                                         "encoding_format"));
    }
  }

  // Rate limits.
  if (d->faults.force_429) {
    auto r = json_response(429,
                           rate_limit_error(route.op, api_version, RateLimitReason::tokens,
                                            ceil_seconds(d->faults.force_429_retry_after)),
                           id);
    add_retry_headers(r, d->faults.force_429_retry_after);
    add_rate_headers(r, d->limiter, d->limiter.remaining_requests(now),
                     d->limiter.remaining_tokens(now));
    d->count_status(429);
    return tagged(std::move(r));
  }
  if (const auto left = d->burst_left(now)) {
    auto r = json_response(
        429,
        rate_limit_error(route.op, api_version, RateLimitReason::requests, ceil_seconds(*left)),
        id);
    add_retry_headers(r, *left);
    add_rate_headers(r, d->limiter, d->limiter.remaining_requests(now),
                     d->limiter.remaining_tokens(now));
    d->count_status(429);
    ++d->counters.bursts_429;
    return tagged(std::move(r));
  }
  const std::int64_t estimate =
      wants_chat ? llmq::estimate_chat_tokens(body) : llmq::estimate_embedding_tokens(body);
  const RateDecision decision = d->limiter.try_acquire(now, estimate);
  if (!decision.allowed) {
    auto r = json_response(429,
                           rate_limit_error(route.op, api_version, decision.reason,
                                            ceil_seconds(decision.retry_after)),
                           id);
    add_retry_headers(r, decision.retry_after);
    add_rate_headers(r, d->limiter, decision.remaining_requests, decision.remaining_tokens);
    d->count_status(429);
    return tagged(std::move(r));
  }
  d->counters.charged_tokens += static_cast<std::uint64_t>(estimate);

  FaultPick fault = pick_fault(d->faults, d->rng);
  const milliseconds delay = sample_latency(d->latency, d->rng);
  const milliseconds slow_body = d->faults.slow_body_ms;
  const std::size_t stream_fault_after = d->faults.stream_fault_after;
  const double stream_rate = d->stream_rate;
  const std::string model = d->cfg.model;
  const bool streamed = wants_chat && stream_requested;

  ResponsePlan plan;
  plan.deployment = d->cfg.name;
  plan.delay = delay;
  switch (fault.kind) {
    case FaultKind::reset:
      ++d->counters.resets;
      plan.action = ResponsePlan::Action::reset;
      return plan;
    case FaultKind::stall:
      ++d->counters.stalls;
      plan.action = ResponsePlan::Action::stall;
      plan.delay = milliseconds(0);
      return plan;
    case FaultKind::error: {
      plan.response =
          json_response(fault.status,
                        fault.status == 429
                            ? rate_limit_error(route.op, api_version, RateLimitReason::requests, 1)
                            : injected_error(fault.status),
                        id);
      if (fault.status == 429) add_retry_headers(plan.response, std::chrono::seconds(1));
      add_rate_headers(plan.response, d->limiter, decision.remaining_requests,
                       decision.remaining_tokens);
      d->count_status(fault.status);
      return plan;
    }
    case FaultKind::malformed:
      ++d->counters.malformed;
      break;
    case FaultKind::truncated:
      ++d->counters.truncated;
      break;
    case FaultKind::slow_body:
      ++d->counters.slow_bodies;
      break;
    case FaultKind::stream_break:
    case FaultKind::stream_stall:
    case FaultKind::stream_malformed:
      if (!streamed) {
        fault.kind = FaultKind::none;  // mid-stream faults spare plain answers
        break;
      }
      ++(fault.kind == FaultKind::stream_break   ? d->counters.stream_breaks
         : fault.kind == FaultKind::stream_stall ? d->counters.stream_stalls
                                                 : d->counters.stream_malformed);
      break;
    case FaultKind::none:
      break;
  }
  lock.unlock();

  // Build the answer without holding the lock.
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::shared_ptr<ChatStream> stream;
  if (wants_chat) {
    const ChatAnswer answer = make_chat_answer(body, model, id);
    prompt_tokens = answer.prompt_tokens;
    completion_tokens = answer.completion_tokens;
    if (streamed) {
      bool include_usage = false;
      if (auto so = body.find("stream_options"); so != body.end() && so->is_object()) {
        auto iu = so->find("include_usage");
        include_usage = iu != so->end() && iu->is_boolean() && iu->get<bool>();
      }
      stream = std::make_shared<ChatStream>(answer, include_usage);
      plan.action = ResponsePlan::Action::stream;
      plan.response = json_response(200, json::object(), id);
      plan.response.body.clear();
      plan.response.headers.front().second = "text/event-stream";
      plan.response.headers.emplace_back("cache-control", "no-cache");
      if (stream_rate > 0)
        plan.event_gap = std::chrono::microseconds(std::llround(1e6 / stream_rate));
    } else {
      plan.response = json_text_response(200, chat_body_text(answer), id);
      assert(plan.response.body == dump(chat_body(answer)));
    }
  } else {
    plan.response =
        json_response(200, embeddings_body(items, model, dims, base64_format, prompt_tokens), id);
  }
  add_rate_headers(plan.response, d->limiter, decision.remaining_requests,
                   decision.remaining_tokens);

  // Events before a mid-stream fault, so that a break or stall never reaches [DONE] and
  // a malformed event is never [DONE] itself.
  const std::size_t events = stream ? stream->size() : 0;
  const std::size_t last_intact = events > 0 ? std::min(stream_fault_after, events - 1) : 0;
  switch (fault.kind) {
    case FaultKind::malformed:
      if (stream) {
        stream->set_malformed(1);  // the role event
      } else {
        // A prefix of a JSON object (its closing brace cut) is never valid JSON.
        plan.response.body.resize(plan.response.body.size() / 2);
      }
      break;
    case FaultKind::truncated:
      if (stream) {
        plan.cut = ResponsePlan::StreamCut::close;
        plan.cut_after = events / 2;
      } else {
        plan.truncate = true;
      }
      plan.close = true;
      break;
    case FaultKind::slow_body:
      plan.slow_body = slow_body;
      break;
    case FaultKind::stream_break:
      plan.cut = ResponsePlan::StreamCut::close;
      plan.cut_after = last_intact;
      plan.close = true;
      break;
    case FaultKind::stream_stall:
      plan.cut = ResponsePlan::StreamCut::stall;
      plan.cut_after = last_intact;
      plan.close = true;
      break;
    case FaultKind::stream_malformed:
      stream->set_malformed(std::min(stream_fault_after, events - 2));
      break;
    default:
      break;
  }
  plan.events = std::move(stream);

  const bool complete = fault.kind != FaultKind::malformed && fault.kind != FaultKind::truncated &&
                        fault.kind != FaultKind::stream_break &&
                        fault.kind != FaultKind::stream_stall &&
                        fault.kind != FaultKind::stream_malformed;
  lock.lock();
  if (complete) {
    d->count_status(200);
    if (streamed) ++d->counters.streams;
    d->counters.prompt_tokens += static_cast<std::uint64_t>(prompt_tokens);
    d->counters.completion_tokens += static_cast<std::uint64_t>(completion_tokens);
  }
  return plan;
}

void MockService::Impl::reset_locked() {
  for (auto& d : deployments) {
    d->counters = DeploymentCounters{};
    d->limiter.reset();
    d->peak.reset();
    d->burst_anchor.reset();
    d->rng.seed(d->seed);
  }
  unrouted = 0;
  protocol_errors.clear();
}

json MockService::Impl::stats_locked(Clock::time_point now) const {
  json deps = json::object();
  for (const auto& d : deployments) {
    json entry = counters_json(d->counters);
    entry["type"] = std::string(to_string(d->cfg.type));
    entry["model"] = d->cfg.model;
    entry["limits"] = {{"req_per_min", d->cfg.req_per_min},
                       {"tokens_per_min", d->cfg.tokens_per_min},
                       {"requests_per_1s", d->limiter.per_second_cap()},
                       {"requests_per_10s", d->limiter.per_10_seconds_cap()}};
    entry["window"] = {{"requests_last_1s", d->limiter.requests_in(now, std::chrono::seconds(1))},
                       {"requests_last_10s", d->limiter.requests_in(now, std::chrono::seconds(10))},
                       {"requests_last_60s", d->limiter.requests_in(now, std::chrono::seconds(60))},
                       {"tokens_last_60s", d->limiter.tokens_in_minute(now)}};
    entry["faults"] = to_json(d->faults);
    deps[d->cfg.name] = std::move(entry);
  }
  json protocol = json::object();
  for (const auto& [status, n] : protocol_errors) protocol[std::to_string(status)] = n;
  return {{"deployments", std::move(deps)},
          {"unrouted", unrouted},
          {"protocol_errors", std::move(protocol)},
          {"uptime_ms", std::chrono::duration_cast<milliseconds>(Clock::now() - started).count()}};
}

MockService::MockService(MockConfig cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}

MockService::~MockService() = default;

ResponsePlan MockService::handle(const MockHttpRequest& req, clock::time_point now) {
  return impl_->handle(req, now);
}

void MockService::note_protocol_error(unsigned status) {
  std::lock_guard lock(impl_->mu);
  ++impl_->protocol_errors[status];
}

DeploymentCounters MockService::counters(const std::string& deployment) const {
  std::lock_guard lock(impl_->mu);
  const DeploymentState* d = impl_->find(deployment);
  if (d == nullptr) throw std::out_of_range("llmq-mock-azure: no deployment named " + deployment);
  return d->counters;
}

void MockService::set_faults(const std::string& deployment, FaultConfig faults) {
  // Validate through the same checks as the config file.
  const FaultConfig checked = parse_fault_config(to_json(faults));
  std::lock_guard lock(impl_->mu);
  DeploymentState* d = impl_->find(deployment);
  if (d == nullptr) throw std::out_of_range("llmq-mock-azure: no deployment named " + deployment);
  d->set_faults(checked);
}

FaultConfig MockService::faults(const std::string& deployment) const {
  std::lock_guard lock(impl_->mu);
  const DeploymentState* d = impl_->find(deployment);
  if (d == nullptr) throw std::out_of_range("llmq-mock-azure: no deployment named " + deployment);
  return d->faults;
}

void MockService::reset() {
  std::lock_guard lock(impl_->mu);
  impl_->reset_locked();
}

nlohmann::json MockService::stats(clock::time_point now) const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats_locked(now);
}

std::vector<std::string> MockService::deployment_names() const {
  std::vector<std::string> out;
  for (const auto& d : impl_->deployments) out.push_back(d->cfg.name);
  return out;
}

const MockConfig& MockService::config() const noexcept { return impl_->cfg; }

}  // namespace llmq::mock
