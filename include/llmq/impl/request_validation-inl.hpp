#pragma once
/// @file request_validation-inl.hpp
/// Compiled once into llmq::llmq by src/request_validation.cpp, or included by
/// <llmq/request_validation.hpp> under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/request_validation.hpp>

#include <llmq/detail/json_walk.hpp>

#include <boost/container/small_vector.hpp>

#include <nlohmann/json.hpp>

#include <limits>
#include <utility>
#include <vector>

namespace llmq {
namespace detail::validation {
using nlohmann::json;

inline RequestProblem problem(std::string param, std::string message, std::string code) {
  RequestProblem p;
  p.param = std::move(param);
  p.message = std::move(message);
  p.code = std::move(code);
  return p;
}

/// The parser's message without its exception prefix and without the `last read: '...'`
/// part, which would echo the client's bytes.
inline std::string parse_error_message(const std::string& what) {
  std::string_view m = what;
  if (m.starts_with("[json.exception.")) {
    const auto close = m.find("] ");
    if (close != std::string_view::npos) m.remove_prefix(close + 2);
  }
  if (const auto last = m.find("; last read:"); last != std::string_view::npos)
    m = m.substr(0, last);
  // Never quote the client's bytes back (e.g. "number overflow parsing '<the number>'",
  // as long as the body): the message ends where a quotation would start.
  if (const auto quote = m.find('\''); quote != std::string_view::npos) {
    m = m.substr(0, quote);
    while (!m.empty() && (m.back() == ' ' || m.back() == ':')) m.remove_suffix(1);
    if (m.ends_with(" parsing")) m.remove_suffix(std::string_view(" parsing").size());
  }
  return "the request body is not valid JSON: " + std::string(m);
}

/// Builds the tree as nlohmann's own DOM parser does, but refuses a container that would
/// be nested deeper than the limit (returning false stops the parser at once).
class BoundedDomBuilder {
 public:
  BoundedDomBuilder(json& root, std::size_t max_depth) : root_(root), max_depth_(max_depth) {
    stack_.reserve(16);
  }

  bool null() {
    value(nullptr);
    return true;
  }
  bool boolean(bool v) {
    value(v);
    return true;
  }
  bool number_integer(json::number_integer_t v) {
    value(v);
    return true;
  }
  bool number_unsigned(json::number_unsigned_t v) {
    value(v);
    return true;
  }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) {
    value(v);
    return true;
  }
  bool string(json::string_t& v) {
    value(std::move(v));
    return true;
  }
  bool binary(json::binary_t& v) {
    value(json::binary(std::move(v)));
    return true;
  }
  bool start_object(std::size_t /*elements*/) { return open(json::value_t::object); }
  bool key(json::string_t& k) {
    if (stack_.size() == 1) top_key_ = k;
    member_ = &(*stack_.back())[std::move(k)];
    return true;
  }
  bool end_object() {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t /*elements*/) { return open(json::value_t::array); }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& e) {
    error_ = parse_error_message(e.what());
    return false;
  }

  [[nodiscard]] bool too_deep() const noexcept { return too_deep_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  /// The top-level member being parsed when the parse stopped (empty at the top).
  [[nodiscard]] const std::string& top_key() const noexcept { return top_key_; }

 private:
  bool open(json::value_t type) {
    if (stack_.size() >= max_depth_) {
      too_deep_ = true;
      return false;
    }
    stack_.push_back(value(json(type)));
    return true;
  }

  template <class V>
  json* value(V&& v) {
    if (stack_.empty()) {
      root_ = json(std::forward<V>(v));
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.emplace_back(std::forward<V>(v));
      return &parent.back();
    }
    *member_ = json(std::forward<V>(v));
    return member_;
  }

  json& root_;
  std::size_t max_depth_;
  std::vector<json*> stack_;
  json* member_ = nullptr;
  bool too_deep_ = false;
  std::string error_;
  std::string top_key_;
};

inline std::string in_quotes(std::string_view field) { return "'" + std::string(field) + "'"; }

/// True for a member name that may be repeated to the client as a field name: 1..64
/// bytes of letters, digits, '_', '-' and '.'. Other names are the client's own text.
inline bool is_field_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

inline std::optional<RequestProblem> check_optional_integer(const json& body, const char* key,
                                                            std::int64_t lo, std::int64_t hi) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  const std::optional<std::int64_t> v = detail::json_integer(*it);
  if (!v || *v < lo || *v > hi)
    return problem(key,
                   in_quotes(key) + " must be an integer in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "]",
                   v ? "invalid_value" : "invalid_type");
  return std::nullopt;
}

inline std::optional<RequestProblem> check_model(const json& body) {
  const auto it = body.find("model");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return problem("model", "'model' must be a string", "invalid_type");
  if (it->get_ref<const std::string&>().size() > kMaxModelNameBytes)
    return problem("model",
                   "'model' must be at most " + std::to_string(kMaxModelNameBytes) + " bytes long",
                   "invalid_value");
  return std::nullopt;
}

inline constexpr std::int64_t kMaxInt32 = std::numeric_limits<std::int32_t>::max();

/// A token array: non-empty, every item a non-negative integer.
inline bool is_token_array(const json& a) {
  if (!a.is_array() || a.empty()) return false;
  for (const json& t : a) {
    const std::optional<std::int64_t> v = detail::json_integer(t);
    if (!v || *v < 0) return false;
  }
  return true;
}

/// Decodes one UTF-8 sequence at `s[i]` (RFC 3629: no overlongs, no surrogates, at most
/// U+10FFFF); advances `i`. Returns the code point, or -1 when the bytes are not UTF-8.
inline long next_code_point(std::string_view s, std::size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int more = 0;
  long cp = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    more = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    more = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    more = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return -1;
  }
  if (s.size() - i <= static_cast<std::size_t>(more)) return -1;
  for (int k = 1; k <= more; ++k) {
    const auto b = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
    if (b < lo || b > hi) return -1;
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
  }
  i += static_cast<std::size_t>(more) + 1;
  return cp;
}

}  // namespace detail::validation

LLMQ_INLINE std::optional<RequestProblem> parse_json_bounded(std::string_view text,
                                                             std::size_t max_depth,
                                                             nlohmann::json& out) {
  using namespace detail::validation;
  out = json();
  BoundedDomBuilder builder(out, max_depth);
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder);
  if (ok) return std::nullopt;
  out = json();  // a partial tree (bounded by max_depth) is discarded
  if (builder.too_deep()) {
    const std::string field = is_field_name(builder.top_key()) ? builder.top_key() : "";
    return problem(field,
                   "the request body nests JSON deeper than " + std::to_string(max_depth) +
                       " levels" +
                       (field.empty() ? std::string() : " (in " + in_quotes(field) + ")"),
                   "json_too_deep");
  }
  return problem(
      "",
      builder.error().empty() ? std::string("the request body is not valid JSON") : builder.error(),
      "invalid_json");
}

LLMQ_INLINE bool json_within_depth(const nlohmann::json& value, std::size_t max_depth) {
  // Called for every request, so it is cheap: the containers still to look into, each
  // with its depth, and the members read straight from the map or vector (nlohmann's
  // generic iterators cost several times more). The root is at depth 0; a container at
  // depth d opens level d + 1. Memory: one entry per container not yet looked into, at
  // most the body's own container count; the first 32 in place.
  if (!value.is_structured()) return true;
  struct Pending {
    const nlohmann::json* container;
    std::size_t depth;
  };
  boost::container::small_vector<Pending, 32> pending;
  pending.push_back(Pending{&value, 0});
  while (!pending.empty()) {
    const Pending p = pending.back();
    pending.pop_back();
    if (p.depth >= max_depth) return false;
    if (p.container->is_object()) {
      for (const auto& member : p.container->get_ref<const nlohmann::json::object_t&>())
        if (member.second.is_structured()) pending.push_back(Pending{&member.second, p.depth + 1});
    } else {
      for (const nlohmann::json& item : p.container->get_ref<const nlohmann::json::array_t&>())
        if (item.is_structured()) pending.push_back(Pending{&item, p.depth + 1});
    }
  }
  return true;
}

LLMQ_INLINE std::optional<RequestProblem> validate_chat_body(const nlohmann::json& body) {
  using namespace detail::validation;
  if (!body.is_object())
    return problem("", "the request body must be a JSON object", "invalid_body");
  const auto m = body.find("messages");
  if (m == body.end() || m->is_null())
    return problem("messages", "'messages' is a required property", "missing_field");
  if (!m->is_array())
    return problem("messages", "'messages' must be an array of message objects", "invalid_type");
  if (m->empty()) return problem("messages", "'messages' must not be empty", "invalid_value");
  std::size_t i = 0;
  for (const json& message : *m) {
    const auto role = message.is_object() ? message.find("role") : message.end();
    if (!message.is_object() || role == message.end() || !role->is_string())
      return problem("messages",
                     "'messages[" + std::to_string(i) + "]' must be an object with a string 'role'",
                     "invalid_type");
    ++i;
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (auto p = check_optional_integer(body, key, 1, kMaxInt32)) return p;
  for (const char* key : {"n", "best_of"})
    if (auto p = check_optional_integer(body, key, 1, 128)) return p;
  if (const auto s = body.find("stream"); s != body.end() && !s->is_null() && !s->is_boolean())
    return problem("stream", "'stream' must be a boolean", "invalid_type");
  return check_model(body);
}

LLMQ_INLINE std::optional<RequestProblem> validate_embeddings_body(const nlohmann::json& body) {
  using namespace detail::validation;
  if (!body.is_object())
    return problem("", "the request body must be a JSON object", "invalid_body");
  const auto input = body.find("input");
  if (input == body.end() || input->is_null())
    return problem("input", "'input' is a required property", "missing_field");
  const auto shape = [] {
    return problem("input",
                   "'input' must be a non-empty string, array of strings, token array or array "
                   "of token arrays",
                   "invalid_type");
  };
  if (input->is_string()) {
    if (input->get_ref<const std::string&>().empty()) return shape();
  } else if (!input->is_array() || input->empty()) {
    return shape();
  } else if (input->size() > kMaxEmbeddingInputs) {
    return problem("input",
                   "'input' must have at most " + std::to_string(kMaxEmbeddingInputs) + " items",
                   "invalid_value");
  } else if (!is_token_array(*input)) {
    for (const json& item : *input) {
      const bool text = item.is_string() && !item.get_ref<const std::string&>().empty();
      if (!text && !is_token_array(item)) return shape();
    }
  }
  if (auto p = check_optional_integer(body, "dimensions", 1, kMaxInt32)) return p;
  return check_model(body);
}

LLMQ_INLINE std::optional<RequestProblem> validate_user_id(std::string_view user_id) {
  using namespace detail::validation;
  if (user_id.empty() || user_id.size() > kMaxUserIdBytes)
    return problem("", "the user id must be 1 to " + std::to_string(kMaxUserIdBytes) + " bytes",
                   "invalid_user_id");
  for (std::size_t i = 0; i < user_id.size();) {
    const long cp = next_code_point(user_id, i);
    if (cp < 0) return problem("", "the user id must be UTF-8", "invalid_user_id");
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
      return problem("", "the user id must not contain control characters", "invalid_user_id");
  }
  return std::nullopt;
}

}  // namespace llmq
