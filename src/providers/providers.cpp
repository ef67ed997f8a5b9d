// The ready-made executors: one upstream call per process_request, outcome and usage
// recorded in the telemetry, upstream answers passed through.

#include <llmq/errors.hpp>
#include <llmq/log.hpp>
#include <llmq/providers.hpp>
#include <llmq/queue.hpp>
#include <llmq/rate_limit_headers.hpp>
#include <llmq/request_validation.hpp>
#include <llmq/sse.hpp>
#include "http_url.hpp"

#include <boost/system/system_error.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string_view>

namespace llmq {
namespace {

using nlohmann::json;
using Steady = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;

std::string_view operation_path(UpstreamOperation op) {
  return op == UpstreamOperation::chat_completions ? "chat/completions" : "embeddings";
}

std::string_view operation_name(UpstreamOperation op) {
  return op == UpstreamOperation::chat_completions ? "chat completion" : "embeddings";
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view strip_trailing_slashes(std::string_view s) {
  while (!s.empty() && s.back() == '/') s.remove_suffix(1);
  return s;
}

/// Appends `s` to `out` percent-encoded (everything but RFC 3986's unreserved characters).
void append_percent_encoded(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 0x0f];
    }
  }
}

/// Replaces every occurrence of a secret by "***".
std::string redact(std::string text, std::string_view secret) {
  if (secret.size() < 4) return text;  // too short to matter, and would mangle text
  for (std::size_t pos = text.find(secret); pos != std::string::npos;
       pos = text.find(secret, pos + 3)) {
    text.replace(pos, secret.size(), "***");
  }
  return text;
}

/// The secrets of one call, to keep out of messages built from upstream content.
struct Secrets {
  std::string_view api_key;
  std::string_view token;
  [[nodiscard]] std::string clean(std::string text) const {
    return redact(redact(std::move(text), api_key), token);
  }
};

Response error_response(int status, const std::string& message, std::string_view type,
                        std::string_view code) {
  return Response{make_error_body(message, type, code), status};
}

/// Up to `limit` bytes of a body for a message, control characters replaced.
std::string snippet(std::string_view body, std::size_t limit = 200) {
  std::string out(body.substr(0, limit));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (body.size() > limit) out += "...";
  return out;
}

std::string too_deep_message(std::size_t max_depth) {
  return "upstream returned JSON nested deeper than " + std::to_string(max_depth) + " levels";
}

std::string malformed_json_message(std::string_view body) {
  try {
    const json ignored = json::parse(body);
  } catch (const json::exception& e) {
    return "upstream returned malformed JSON: " + std::string(e.what());
  }
  return "upstream returned malformed JSON";
}

std::int64_t usage_count(const json& usage, const char* key) {
  const auto it = usage.find(key);
  if (it == usage.end() || !it->is_number_integer()) return 0;
  const auto v = it->get<std::int64_t>();
  return v > 0 ? v : 0;
}

/// The members of a `usage` object that the telemetry takes (0 when absent or not a
/// positive integer, as usage_count reads them).
struct UsageCounts {
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t total_tokens = 0;
};

/// One validating pass over a JSON text without building a tree: accepts exactly one
/// JSON object (RFC 8259: strict numbers, escapes and surrogate pairs, UTF-8 checked as
/// nlohmann::json checks it) and reads the integer members of its top-level `usage`
/// object, last occurrence winning as in a parse. It gives up (nullopt) on anything else,
/// and also on what it leaves to the full parser: a byte order mark, escaped member names
/// where it looks for names, nesting deeper than kMaxDepth. A caller then parses.
class JsonObjectScanner {
 public:
  explicit JsonObjectScanner(std::string_view text)
      : p_(text.data()), end_(text.data() + text.size()) {}

  std::optional<UsageCounts> usage_of_object() {
    skip_ws();
    if (!at('{')) return std::nullopt;
    UsageCounts usage;
    if (!top_object(usage)) return std::nullopt;
    skip_ws();
    if (p_ != end_) return std::nullopt;
    return usage;
  }

 private:
  static constexpr int kMaxDepth = 64;

  /// Bytes that stand for themselves inside a string: printable ASCII but '"' and '\\'.
  static constexpr std::array<bool, 256> kPlain = [] {
    std::array<bool, 256> t{};
    for (int c = 0x20; c < 0x80; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
    return t;
  }();

  [[nodiscard]] bool at(char c) const { return p_ != end_ && *p_ == c; }
  bool consume(char c) {
    if (!at(c)) return false;
    ++p_;
    return true;
  }
  void skip_ws() {
    const char* p = p_;
    const char* const end = end_;
    while (p != end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
    p_ = p;
  }

  /// Member name or string value; `raw` gets the bytes between the quotes.
  bool string(std::string_view& raw, bool& escaped) {
    if (!consume('"')) return false;
    const char* begin = p_;
    escaped = false;
    while (p_ != end_) {
      // A local cursor: reads through char pointers may alias the member, which would
      // keep the compiler from holding it in a register.
      const char* p = p_;
      const char* const end = end_;
      while (p != end && kPlain[static_cast<unsigned char>(*p)]) ++p;
      p_ = p;
      if (p_ == end_) break;
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        raw = std::string_view(begin, static_cast<std::size_t>(p_ - begin));
        ++p_;
        return true;
      }
      if (c == '\\') {
        escaped = true;
        ++p_;
        if (!escape()) return false;
      } else if (c < 0x20) {
        return false;
      } else if (c < 0x80) {
        ++p_;
      } else if (!utf8_sequence()) {
        return false;
      }
    }
    return false;
  }

  /// After a backslash.
  bool escape() {
    if (p_ == end_) return false;
    const char c = *p_++;
    switch (c) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        return true;
      case 'u': {
        int unit = hex4();
        if (unit < 0) return false;
        if (unit >= 0xDC00 && unit <= 0xDFFF) return false;  // a lone low surrogate
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          if (!consume('\\') || !consume('u')) return false;
          unit = hex4();
          return unit >= 0xDC00 && unit <= 0xDFFF;
        }
        return true;
      }
      default:
        return false;
    }
  }

  int hex4() {
    if (end_ - p_ < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = *p_++;
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        return -1;
    }
    return v;
  }

  /// One multi-byte UTF-8 sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
  bool utf8_sequence() {
    const auto b0 = static_cast<unsigned char>(*p_);
    int more = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      more = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      more = 2;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      more = 3;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (end_ - p_ <= more) return false;
    ++p_;
    for (int i = 0; i < more; ++i) {
      const auto b = static_cast<unsigned char>(*p_++);
      if (b < lo || b > hi) return false;
      lo = 0x80;
      hi = 0xBF;
    }
    return true;
  }

  /// A number; `positive_integer` gets its value when it is an integer in 1..INT64_MAX.
  bool number(std::int64_t& positive_integer) {
    positive_integer = 0;
    const bool negative = consume('-');
    if (at('0')) {
      ++p_;
    } else if (p_ != end_ && *p_ >= '1' && *p_ <= '9') {
      std::uint64_t v = 0;
      bool overflow = false;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        const auto digit = static_cast<std::uint64_t>(*p_ - '0');
        if (v > (static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) - digit) / 10)
          overflow = true;
        v = v * 10 + digit;
        ++p_;
      }
      if (!negative && !overflow) positive_integer = static_cast<std::int64_t>(v);
    } else {
      return false;
    }
    bool integer = true;
    if (consume('.')) {
      integer = false;
      if (!digits()) return false;
    }
    if (at('e') || at('E')) {
      integer = false;
      ++p_;
      if (!consume('+')) consume('-');
      if (!digits()) return false;
    }
    if (!integer) positive_integer = 0;
    return true;
  }

  bool digits() {
    const char* begin = p_;
    while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    return p_ != begin;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word)
      return false;
    p_ += word.size();
    return true;
  }

  bool skip_value(int depth) {
    if (p_ == end_) return false;
    std::string_view raw;
    bool escaped = false;
    std::int64_t ignored = 0;
    switch (*p_) {
      case '{':
        return skip_object(depth + 1);
      case '[':
        return skip_array(depth + 1);
      case '"':
        return string(raw, escaped);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number(ignored);
    }
  }

  bool skip_object(int depth) {
    if (depth > kMaxDepth) return false;
    return members([&](std::string_view) { return skip_value(depth); }, true);
  }

  bool skip_array(int depth) {
    if (depth > kMaxDepth) return false;
    ++p_;  // '['
    skip_ws();
    if (consume(']')) return true;
    for (;;) {
      if (!skip_value(depth)) return false;
      skip_ws();
      if (consume(',')) {
        skip_ws();
        continue;
      }
      return consume(']');
    }
  }

  /// The members of an object, each handed to `member(name)` positioned at its value.
  /// Unless `escaped_names`, a name with escapes fails the pass (it might spell one we
  /// look for).
  template <class Member>
  bool members(Member&& member, bool escaped_names = false) {
    ++p_;  // '{'
    skip_ws();
    if (consume('}')) return true;
    for (;;) {
      std::string_view name;
      bool escaped = false;
      if (!string(name, escaped)) return false;
      if (escaped && !escaped_names) return false;
      skip_ws();
      if (!consume(':')) return false;
      skip_ws();
      if (!member(name)) return false;
      skip_ws();
      if (consume(',')) {
        skip_ws();
        continue;
      }
      return consume('}');
    }
  }

  bool top_object(UsageCounts& usage) {
    return members([&](std::string_view name) {
      if (name != "usage") return skip_value(1);
      usage = UsageCounts{};
      if (!at('{')) return skip_value(1);
      return members([&](std::string_view key) {
        std::int64_t* field = key == "prompt_tokens"       ? &usage.prompt_tokens
                              : key == "completion_tokens" ? &usage.completion_tokens
                              : key == "total_tokens"      ? &usage.total_tokens
                                                           : nullptr;
        if (field == nullptr) return skip_value(2);
        *field = 0;
        if (at('-') || (p_ != end_ && *p_ >= '0' && *p_ <= '9')) return number(*field);
        return skip_value(2);
      });
    });
  }

  const char* p_;
  const char* end_;
};

void add_usage(UpstreamOperation op, const UsageCounts& u, TelemetryData& t) {
  if (op == UpstreamOperation::chat_completions) {
    t.prompt_tokens += u.prompt_tokens;
    t.completion_tokens += u.completion_tokens;
  } else {
    t.embedding_tokens += u.prompt_tokens > 0 ? u.prompt_tokens : u.total_tokens;
  }
}

/// The members of a parsed `usage` object that the telemetry takes.
UsageCounts usage_counts(const json& usage) {
  UsageCounts u;
  u.prompt_tokens = usage_count(usage, "prompt_tokens");
  u.completion_tokens = usage_count(usage, "completion_tokens");
  u.total_tokens = usage_count(usage, "total_tokens");
  return u;
}

/// Adds the `usage` of a successful body to the telemetry.
void record_usage(UpstreamOperation op, const json& body, TelemetryData& t) {
  if (!body.is_object()) return;
  const auto usage = body.find("usage");
  if (usage == body.end() || !usage->is_object()) return;
  add_usage(op, usage_counts(*usage), t);
}

UpstreamOutcome& outcome_of(UpstreamOperation op, TelemetryData& t) {
  return op == UpstreamOperation::chat_completions ? t.llm_outcome : t.embedding_outcome;
}

bool is_success(int status) { return status >= 200 && status < 300; }

bool is_streaming(const json& body) {
  const auto it = body.find("stream");
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

/// Whether upstream_body changes `body` (else it is sent as given, without a copy).
bool rewrites_body(const Deployment& d, UpstreamOperation op, const json& body,
                   const ProviderOptions& options) {
  if (!body.is_object()) return false;
  if (d.provider == Provider::openai_compatible || options.azure_url_style == AzureUrlStyle::v1)
    return true;
  return op == UpstreamOperation::chat_completions && is_streaming(body) &&
         options.request_stream_usage && !body.contains("stream_options");
}

/// The Response (and outcome, usage) of a complete upstream answer. With `raw`, a 2xx
/// JSON object comes back as a raw body (ProviderOptions::raw_success_body).
Response response_from_http(const HttpResponse& resp, UpstreamOperation op, TelemetryData& t,
                            UpstreamOutcome& outcome, const Secrets& secrets, std::size_t max_depth,
                            bool raw = false) {
  if (raw && is_success(resp.status)) {
    if (const std::optional<UsageCounts> usage = JsonObjectScanner(resp.body).usage_of_object()) {
      outcome = outcome_from_response(resp, json(), SysClock::now());
      add_usage(op, *usage, t);
      json::binary_t::container_type bytes(resp.body.begin(), resp.body.end());
      return Response{json::binary(std::move(bytes)), resp.status};
    }
  }
  json parsed;
  const std::optional<RequestProblem> problem = parse_json_bounded(resp.body, max_depth, parsed);
  outcome = outcome_from_response(resp, problem ? json() : parsed, SysClock::now());
  if (problem && problem->code == "json_too_deep") {
    outcome.status = 502;  // a deployment answering absurd nesting is failing
    return error_response(502, too_deep_message(max_depth), "upstream_error",
                          "bad_upstream_response");
  }
  if (problem) {
    if (is_success(resp.status)) {
      outcome.status = 502;  // a deployment answering garbage is failing
      return error_response(502, secrets.clean(malformed_json_message(resp.body)), "upstream_error",
                            "bad_upstream_response");
    }
    return error_response(resp.status,
                          secrets.clean("upstream returned HTTP " + std::to_string(resp.status) +
                                        " with a non-JSON body: " + snippet(resp.body)),
                          "upstream_error", "bad_upstream_response");
  }
  if (is_success(resp.status)) record_usage(op, parsed, t);
  return Response{std::move(parsed), resp.status};
}

/// What the two readers of a streamed chat answer share: the head (an event stream, or
/// an answer to collect whole), the SSE parser, and the checks of each event.
class SseAnswer {
 public:
  void on_head(const HttpResponse& head) {
    head_ = head;
    const std::string type = head.header("content-type").value_or("");
    sse_ = is_success(head.status) && type.find("text/event-stream") != std::string::npos;
  }

 protected:
  SseAnswer(const Secrets& secrets, std::size_t max_depth)
      : secrets_(secrets), max_depth_(max_depth) {}

  /// The JSON of one event to take in; nullopt for the end marker, an empty event, or an
  /// event that ended the stream (malformed, too deep, an error event: then error_ is set).
  std::optional<json> take_event(const SseEvent& event) {
    if (done_ || error_) return std::nullopt;
    if (event.is_done()) {
      done_ = true;
      return std::nullopt;
    }
    if (event.data.empty()) return std::nullopt;
    json chunk;
    if (const auto problem = parse_json_bounded(event.data, max_depth_, chunk)) {
      const std::string message = problem->code == "json_too_deep"
                                      ? too_deep_message(max_depth_)
                                      : secrets_.clean(malformed_json_message(event.data));
      error_ = error_response(502, message + " (in the event stream)", "upstream_error",
                              "bad_upstream_response");
      return std::nullopt;
    }
    if (chunk.is_object() && chunk.contains("error") && !chunk.contains("choices")) {
      error_ = Response{std::move(chunk), 502};  // an error event inside the stream
      return std::nullopt;
    }
    return chunk;
  }

  /// The answer of an upstream that did not stream (an error before any event).
  Response whole_answer(TelemetryData& t, UpstreamOutcome& outcome) {
    HttpResponse full = head_;
    full.body = std::move(raw_);
    return response_from_http(full, UpstreamOperation::chat_completions, t, outcome, secrets_,
                              max_depth_);
  }

  /// The end of an event stream: the error that ended it, or a 502 for one cut short.
  std::optional<Response> stream_problem(UpstreamOutcome& outcome, bool complete) {
    outcome = outcome_from_response(head_, json(), SysClock::now());
    if (error_) {
      outcome.status = 502;
      return std::move(*error_);
    }
    if (!done_ && !complete) {
      outcome.status = 502;
      return error_response(502, "upstream stream ended before [DONE] (the answer is incomplete)",
                            "upstream_error", "bad_upstream_response");
    }
    return std::nullopt;
  }

  Secrets secrets_;
  std::size_t max_depth_;
  HttpResponse head_;
  bool sse_ = false;
  std::string raw_;
  SseParser parser_;
  bool done_ = false;
  std::optional<Response> error_;
};

/// Collects a streamed chat answer: SSE events into a ChatStreamAssembler, or the raw
/// body when the upstream answered without an event stream (an error, or no streaming).
class StreamCollector : public SseAnswer {
 public:
  StreamCollector(const Secrets& secrets, std::size_t max_depth) : SseAnswer(secrets, max_depth) {}

  void on_chunk(std::string_view chunk) {
    if (!sse_) {
      raw_.append(chunk);
      return;
    }
    for (const SseEvent& event : parser_.feed(chunk))
      if (std::optional<json> c = take_event(event)) assembler_.add(*c);
  }

  Response finish(TelemetryData& t, UpstreamOutcome& outcome) {
    if (!sse_) return whole_answer(t, outcome);
    for (const SseEvent& event : parser_.finish())
      if (std::optional<json> c = take_event(event)) assembler_.add(*c);
    if (std::optional<Response> problem = stream_problem(outcome, assembler_.complete()))
      return std::move(*problem);
    json body = assembler_.result();
    record_usage(UpstreamOperation::chat_completions, body, t);
    return Response{std::move(body), head_.status};
  }

 private:
  ChatStreamAssembler assembler_;
};

/// Thrown from the relay's chunk handler to stop reading a stream that went wrong (the
/// HTTP client then closes the connection).
struct StopReading {};

/// Relays a streamed chat answer to a StreamWriter event by event, as the upstream sends
/// them: the `data:` text of each `chat.completion.chunk` unchanged, except that the
/// usage-only chunk llmq asked for on the caller's behalf is dropped. Records the usage.
/// An answer that is not an event stream (an error before any byte) is collected whole.
class StreamRelay : public SseAnswer {
 public:
  StreamRelay(const Secrets& secrets, std::size_t max_depth, bool pass_usage, StreamWriter& out)
      : SseAnswer(secrets, max_depth), pass_usage_(pass_usage), out_(out) {}

  boost::asio::awaitable<void> on_chunk(std::string_view chunk) {
    if (!sse_) {
      raw_.append(chunk);
      co_return;
    }
    for (SseEvent& event : parser_.feed(chunk)) {
      co_await handle(event);
      if (error_) throw StopReading{};
    }
  }

  /// The stream ended (or was stopped).
  boost::asio::awaitable<Response> finish(TelemetryData& t, UpstreamOutcome& outcome) {
    if (!sse_) co_return whole_answer(t, outcome);
    for (SseEvent& event : parser_.finish()) co_await handle(event);
    if (usage_) add_usage(UpstreamOperation::chat_completions, *usage_, t);
    const bool complete = !seen_.empty() && seen_.size() == finished_.size();
    if (std::optional<Response> problem = stream_problem(outcome, complete))
      co_return std::move(*problem);
    json body = json::object();
    body["object"] = "chat.completion.stream";
    body["usage"] = usage_json_;
    co_return Response{std::move(body), head_.status};
  }

 private:
  boost::asio::awaitable<void> handle(SseEvent& event) {
    std::optional<json> parsed = take_event(event);
    if (!parsed || !parsed->is_object()) co_return;
    const json& chunk = *parsed;
    const auto choices = chunk.find("choices");
    bool usage_only = false;
    if (const auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
      usage_ = usage_counts(*u);
      usage_json_ = *u;
      usage_only = choices == chunk.end() || (choices->is_array() && choices->empty());
    }
    if (choices != chunk.end() && choices->is_array()) {
      for (const json& c : *choices) {
        if (!c.is_object()) continue;
        const auto index = c.find("index");
        const std::int64_t i =
            index != c.end() && index->is_number_integer() ? index->get<std::int64_t>() : 0;
        if (seen_.size() < kMaxChoices) seen_.insert(i);
        const auto reason = c.find("finish_reason");
        if (reason != c.end() && reason->is_string() && seen_.contains(i)) finished_.insert(i);
      }
    }
    if (usage_only && !pass_usage_) co_return;  // asked for by llmq, not by the caller
    co_await out_.write(std::move(event.data));
  }

  static constexpr std::size_t kMaxChoices = 128;  // `n` is at most 128

  bool pass_usage_;
  StreamWriter& out_;
  std::optional<UsageCounts> usage_;
  json usage_json_;
  std::set<std::int64_t> seen_;
  std::set<std::int64_t> finished_;
};

/// The answer to a transport failure. HttpError messages name hosts and ports: those go
/// to the log (log_failure); the answer says only what happened.
Response transport_error_response(const Deployment& d, const HttpError& e) {
  return error_response(
      e.http_status(),
      "upstream request to deployment '" + d.unique_model_id + "' failed: " + e.code().message(),
      "upstream_error", to_string(e.errc()));
}

Response invalid_body_response(UpstreamOperation op) {
  return error_response(
      400, "the " + std::string(operation_name(op)) + " request body must be a JSON object",
      "invalid_request_error", "invalid_body");
}

Response missing_deployment_response(UpstreamOperation op, const std::string& req_type) {
  const bool chat = op == UpstreamOperation::chat_completions;
  return error_response(400,
                        "request type '" + req_type + "' needs " +
                            (chat ? std::string("an LLM deployment (require_llm_model)")
                                  : std::string("an embeddings deployment "
                                                "(require_embedding_model)")),
                        "invalid_request_error", "missing_deployment");
}

Response wrong_provider_response(const Deployment& d, Provider wanted) {
  const std::string kind =
      wanted == Provider::azure ? std::string("Azure") : std::string("OpenAI-compatible");
  return error_response(500,
                        "deployment '" + d.unique_model_id + "' is not an " + kind +
                            " deployment; this executor serves only those",
                        "configuration_error", "wrong_provider");
}

void log_call(const Deployment& d, UpstreamOperation op, const std::string& url, int status,
              Steady::time_point started) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - started).count();
  logger()->debug("upstream {} {} ({}) -> {} in {} ms", d.unique_model_id, operation_name(op), url,
                  status, ms);
}

/// The URL for log_call: only worth a copy per call when the debug level is on.
std::string url_for_debug_log(const std::string& url) {
  if (!logger()->should_log(spdlog::level::debug)) return std::string();
  return detail::url_for_log(url);
}

void log_failure(const Deployment& d, UpstreamOperation op, const HttpError& e) {
  static LogThrottle throttle;  // an unreachable upstream fails every request sent to it
  if (auto held = throttle.admit())
    logger()->warn("upstream {} {} failed: {}{}", d.unique_model_id, operation_name(op), e.what(),
                   held_back_note(*held));
}

/// One upstream call ready to send: the request (auth, the request id), and what its
/// answer is checked and logged with.
struct UpstreamCall {
  HttpRequest request;
  std::optional<std::string> token;  // the Entra ID token, when one is used
  std::string log_url;
  Steady::time_point started;
  /// The call's secrets, kept out of messages built from upstream content.
  [[nodiscard]] Secrets secrets(const Deployment& d) const {
    return Secrets{d.api_key, token ? std::string_view(*token) : std::string_view()};
  }
};

/// Builds the call of `body` (sent as given) to `d`. `body` and `options` must outlive
/// the awaitable (the callers await it at once).
boost::asio::awaitable<UpstreamCall> begin_call(const Deployment& d, UpstreamOperation op,
                                                const json& body, const TelemetryData& t,
                                                const ProviderOptions& options) {
  UpstreamCall call;
  if (d.provider == Provider::azure && options.azure_token_provider) {
    std::string fresh = co_await options.azure_token_provider();
    call.token = std::move(fresh);
  }
  call.request = build_upstream_request(d, op, body, options, call.token);
  // The request's id (1-128 printable ASCII, checked at admission) goes upstream, so that
  // the provider's logs and ours can be joined.
  if (!t.request_id.empty()) {
    call.request.headers.emplace_back("x-request-id", t.request_id);
    if (d.provider == Provider::azure)
      call.request.headers.emplace_back("x-ms-client-request-id", t.request_id);
  }
  call.log_url = url_for_debug_log(call.request.url);
  call.started = Steady::now();
  co_return call;
}

/// A call that failed in transport: the outcome recorded, the failure logged, its answer.
Response failed_call(const Deployment& d, UpstreamOperation op, const HttpError& e,
                     UpstreamOutcome& outcome) {
  outcome = outcome_from_error(e);
  log_failure(d, op, e);
  return transport_error_response(d, e);
}

/// `body` and `options` must outlive the awaitable (the callers await it at once).
boost::asio::awaitable<Response> call_upstream(HttpClient& client, const Deployment& d,
                                               UpstreamOperation op, const json& body,
                                               TelemetryData& t, const ProviderOptions& options) {
  UpstreamOutcome& outcome = outcome_of(op, t);
  if (!body.is_object()) co_return invalid_body_response(op);
  UpstreamCall call = co_await begin_call(d, op, body, t, options);
  const Secrets secrets = call.secrets(d);
  const bool streaming = op == UpstreamOperation::chat_completions && is_streaming(body);
  HttpRequest& request = call.request;

  std::optional<Response> result;
  std::optional<HttpError> failure;
  try {
    if (streaming) {
      StreamCollector collector(secrets, options.max_json_depth);
      std::function<void(const HttpResponse&)> on_head = [&collector](const HttpResponse& head) {
        collector.on_head(head);
      };
      std::function<void(std::string_view)> on_chunk = [&collector](std::string_view chunk) {
        collector.on_chunk(chunk);
      };
      co_await client.request_streaming(std::move(request), std::move(on_head),
                                        std::move(on_chunk));
      result = collector.finish(t, outcome);
    } else {
      HttpResponse response = co_await client.request(std::move(request));
      result = response_from_http(response, op, t, outcome, secrets, options.max_json_depth,
                                  options.raw_success_body);
    }
  } catch (const HttpError& e) {
    failure = e;
  }
  if (failure) co_return failed_call(d, op, *failure, outcome);
  log_call(d, op, call.log_url, result->status, call.started);
  co_return std::move(*result);
}

/// Whether a chat body asks for the usage chunk itself (`stream_options.include_usage`).
bool asks_for_usage(const json& body) {
  const auto so = body.find("stream_options");
  if (so == body.end() || !so->is_object()) return false;
  const auto iu = so->find("include_usage");
  return iu != so->end() && iu->is_boolean() && iu->get<bool>();
}

/// The body of a streamed call: `"stream": true`, and the usage chunk asked for when the
/// options say so.
json streaming_body(const json& body, const ProviderOptions& options) {
  json out = body;
  out["stream"] = true;
  if (options.request_stream_usage && !asks_for_usage(body)) {
    auto so = out.find("stream_options");
    if (so == out.end() || !so->is_object()) {
      out["stream_options"] = json::object();
      so = out.find("stream_options");
    }
    (*so)["include_usage"] = true;
  }
  return out;
}

std::map<std::string, std::shared_ptr<RequestExecutor>> make_default_executors(
    const std::shared_ptr<HttpClient>& client, const ProviderOptions& options) {
  if (!client) throw ConfigError("the default executors need an HttpClient (got null)");
  std::map<std::string, std::shared_ptr<RequestExecutor>> executors;
  executors["chat_completion"] = std::make_shared<ChatCompletionExecutor>(client, options);
  executors["embeddings"] = std::make_shared<EmbeddingsExecutor>(client, options);
  return executors;
}

}  // namespace

std::string upstream_url(const Deployment& d, UpstreamOperation op,
                         const ProviderOptions& options) {
  std::string_view base = strip_trailing_slashes(d.endpoint);
  std::string url;
  if (d.provider == Provider::azure) {
    if (ends_with(base, "/openai/v1")) base.remove_suffix(10);
    base = strip_trailing_slashes(base);
    if (ends_with(base, "/openai")) base.remove_suffix(7);
    base = strip_trailing_slashes(base);
    const std::string& version =
        d.api_version.empty() ? options.default_api_version : d.api_version;
    // One allocation per request: room for the path and the encoded names' usual size.
    url.reserve(base.size() + d.deployment_name_in_azure.size() + version.size() + 64);
    url = base;
    if (options.azure_url_style == AzureUrlStyle::v1) {
      url += "/openai/v1/";
      url += operation_path(op);
      return url;
    }
    url += "/openai/deployments/";
    append_percent_encoded(url, d.deployment_name_in_azure);
    url += '/';
    url += operation_path(op);
    url += "?api-version=";
    append_percent_encoded(url, version);
    return url;
  }
  url.reserve(base.size() + 32);
  url = base;
  url += ends_with(base, "/v1") ? "/" : "/v1/";
  url += operation_path(op);
  return url;
}

json upstream_body(const Deployment& d, UpstreamOperation op, json body,
                   const ProviderOptions& options) {
  if (!body.is_object()) return body;
  if (d.provider == Provider::openai_compatible) {
    body["model"] =
        d.model_name_in_azure.empty() ? d.deployment_name_in_azure : d.model_name_in_azure;
  } else if (options.azure_url_style == AzureUrlStyle::v1) {
    body["model"] = d.deployment_name_in_azure;
  }
  if (op == UpstreamOperation::chat_completions && is_streaming(body) &&
      options.request_stream_usage && !body.contains("stream_options")) {
    json stream_options = json::object();
    stream_options["include_usage"] = true;
    body["stream_options"] = std::move(stream_options);
  }
  return body;
}

HttpRequest build_upstream_request(const Deployment& d, UpstreamOperation op, const json& body,
                                   const ProviderOptions& options,
                                   const std::optional<std::string>& azure_token) {
  HttpRequest r;
  r.method = "POST";
  r.url = upstream_url(d, op, options);
  const bool streaming = op == UpstreamOperation::chat_completions && is_streaming(body);
  if (rewrites_body(d, op, body, options)) {
    r.body =
        upstream_body(d, op, body, options).dump(-1, ' ', false, json::error_handler_t::replace);
  } else {
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  r.headers.emplace_back("content-type", "application/json");
  r.headers.emplace_back("accept", streaming ? "text/event-stream" : "application/json");
  if (d.provider == Provider::azure) {
    if (azure_token) {
      r.headers.emplace_back("authorization", "Bearer " + *azure_token);
    } else if (!d.api_key.empty()) {
      r.headers.emplace_back("api-key", d.api_key);
    }
  } else if (!d.api_key.empty()) {
    r.headers.emplace_back("authorization", "Bearer " + d.api_key);
  }
  if (!options.user_agent.empty()) r.headers.emplace_back("user-agent", options.user_agent);
  for (const auto& header : options.extra_headers) r.headers.push_back(header);
  return r;
}

boost::asio::awaitable<Response> call_chat(HttpClient& client, const Deployment& deployment,
                                           json body, TelemetryData& telemetry,
                                           ProviderOptions options) {
  Response r = co_await call_upstream(client, deployment, UpstreamOperation::chat_completions, body,
                                      telemetry, options);
  co_return r;
}

boost::asio::awaitable<Response> call_embeddings(HttpClient& client, const Deployment& deployment,
                                                 json body, TelemetryData& telemetry,
                                                 ProviderOptions options) {
  Response r = co_await call_upstream(client, deployment, UpstreamOperation::embeddings, body,
                                      telemetry, options);
  co_return r;
}

boost::asio::awaitable<Response> call_chat_streaming(HttpClient& client,
                                                     const Deployment& deployment, json body,
                                                     TelemetryData& telemetry,
                                                     ProviderOptions options, StreamWriter& out) {
  const Deployment& d = deployment;
  UpstreamOutcome& outcome = telemetry.llm_outcome;
  if (!body.is_object()) co_return invalid_body_response(UpstreamOperation::chat_completions);
  const bool pass_usage = asks_for_usage(body);
  const json sent = streaming_body(body, options);
  UpstreamCall call =
      co_await begin_call(d, UpstreamOperation::chat_completions, sent, telemetry, options);
  StreamRelay relay(call.secrets(d), options.max_json_depth, pass_usage, out);
  std::optional<HttpError> failure;
  try {
    std::function<void(const HttpResponse&)> on_head = [&relay](const HttpResponse& head) {
      relay.on_head(head);
    };
    std::function<boost::asio::awaitable<void>(std::string_view)> on_chunk =
        [&relay](std::string_view chunk) { return relay.on_chunk(chunk); };
    co_await client.request_streaming_paced(std::move(call.request), std::move(on_head),
                                            std::move(on_chunk));
  } catch (const HttpError& e) {
    failure = e;
  } catch (const StopReading&) {
    // the relay holds the error; the connection is closed
  }
  if (failure) co_return failed_call(d, UpstreamOperation::chat_completions, *failure, outcome);
  Response r = co_await relay.finish(telemetry, outcome);
  log_call(d, UpstreamOperation::chat_completions, call.log_url, r.status, call.started);
  co_return r;
}

UpstreamExecutor::UpstreamExecutor(std::shared_ptr<HttpClient> client, UpstreamOperation op,
                                   std::optional<Provider> only, ProviderOptions options)
    : client_(std::move(client)), op_(op), only_(only), options_(std::move(options)) {
  if (!client_) throw ConfigError("an upstream executor needs an HttpClient (got null)");
}

boost::asio::awaitable<Response> UpstreamExecutor::process_request(const Request& req,
                                                                   const ChosenDeployments& chosen,
                                                                   TelemetryData& telemetry) {
  const Deployment* d = op_ == UpstreamOperation::chat_completions ? chosen.llm : chosen.embedding;
  if (d == nullptr) co_return missing_deployment_response(op_, req.req_type);
  if (only_ && d->provider != *only_) co_return wrong_provider_response(*d, *only_);
  Response r = co_await call_upstream(*client_, *d, op_, req.body, telemetry, options_);
  co_return r;
}

boost::asio::awaitable<Response> UpstreamExecutor::process_streaming_request(
    const Request& req, const ChosenDeployments& chosen, TelemetryData& telemetry,
    StreamWriter& out) {
  if (op_ != UpstreamOperation::chat_completions) {
    Response whole = co_await process_request(req, chosen, telemetry);
    co_return whole;
  }
  const Deployment* d = chosen.llm;
  if (d == nullptr) co_return missing_deployment_response(op_, req.req_type);
  if (only_ && d->provider != *only_) co_return wrong_provider_response(*d, *only_);
  Response r = co_await call_chat_streaming(*client_, *d, req.body, telemetry, options_, out);
  co_return r;
}

std::map<std::string, std::shared_ptr<RequestExecutor>> default_executors(
    std::shared_ptr<HttpClient> client, ProviderOptions options) {
  return make_default_executors(client, options);
}

void register_default_executors(LLMQueue& queue, std::shared_ptr<HttpClient> client,
                                ProviderOptions options) {
  for (auto& [name, executor] : make_default_executors(client, options)) {
    queue.register_request_executor(name, std::move(executor));
  }
}

}  // namespace llmq
