#pragma once
/// @file token_estimator-inl.hpp
/// Compiled once into llmq::llmq by src/token_estimator.cpp, or included by
/// <llmq/token_estimator.hpp> under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/token_estimator.hpp>

#include <llmq/detail/json_walk.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>

namespace llmq {
namespace detail::tokens {
using nlohmann::json;

// Saturating arithmetic on non-negative counts: results stop at kMaxTokenEstimate.
inline std::int64_t clamp_count(std::int64_t v) {
  return std::clamp<std::int64_t>(v, 0, kMaxTokenEstimate);
}
inline std::int64_t add(std::int64_t a, std::int64_t b) {
  return std::min(kMaxTokenEstimate, a + b);
}
inline std::int64_t mul(std::int64_t a, std::int64_t b) {
  if (a == 0 || b == 0) return 0;
  return a > kMaxTokenEstimate / b ? kMaxTokenEstimate : a * b;
}
// add() cannot overflow: both operands are at most kMaxTokenEstimate (2^40).
static_assert(kMaxTokenEstimate <= std::numeric_limits<std::int64_t>::max() / 2);

inline std::uint64_t add_size(std::uint64_t a, std::uint64_t b) {
  return b > std::numeric_limits<std::uint64_t>::max() - a
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

inline std::int64_t tokens_of_size(std::uint64_t bytes) {
  const std::uint64_t t = bytes / 4 + (bytes % 4 != 0 ? 1 : 0);
  return t > static_cast<std::uint64_t>(kMaxTokenEstimate) ? kMaxTokenEstimate
                                                           : static_cast<std::int64_t>(t);
}

/// Bytes of a string as dump() writes it: quotes and escapes included.
inline std::uint64_t quoted_size(const std::string& s) {
  std::uint64_t n = 2 + s.size();
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u == '"' || u == '\\' || u == '\b' || u == '\f' || u == '\n' || u == '\r' || u == '\t')
      n += 1;
    else if (u < 0x20)
      n += 5;  // \u00XX
  }
  return n;
}

inline std::uint64_t integer_size(std::uint64_t magnitude, bool negative) {
  std::uint64_t digits = 1;
  while (magnitude >= 10) {
    magnitude /= 10;
    ++digits;
  }
  return digits + (negative ? 1 : 0);
}

/// The size of `j.dump()`, computed without recursion and without building the text.
inline std::uint64_t json_text_size(const json& j) {
  std::uint64_t total = 0;
  detail::walk_json(
      j,
      [&](const json& v, std::size_t, const std::string* key) {
        std::uint64_t n = 0;
        if (key != nullptr) n += quoted_size(*key) + 1;  // "key":
        switch (v.type()) {
          case json::value_t::object:
          case json::value_t::array:
            n += 2 + (v.empty() ? 0 : v.size() - 1);  // brackets and commas
            break;
          case json::value_t::string:
            n += quoted_size(v.get_ref<const std::string&>());
            break;
          case json::value_t::number_integer: {
            const auto i = v.get<std::int64_t>();
            n += integer_size(
                i < 0 ? 0 - static_cast<std::uint64_t>(i) : static_cast<std::uint64_t>(i), i < 0);
            break;
          }
          case json::value_t::number_unsigned:
            n += integer_size(v.get<std::uint64_t>(), false);
            break;
          case json::value_t::boolean:
            n += v.get<bool>() ? 4 : 5;
            break;
          case json::value_t::null:
          case json::value_t::discarded:
            n += 4;
            break;
          case json::value_t::number_float:
          case json::value_t::binary:
            n += v.dump().size();  // a leaf: no recursion
            break;
        }
        total = add_size(total, n);
        return true;
      },
      [](const json&) {});
  return total;
}

inline std::int64_t json_tokens(const json& j) { return tokens_of_size(json_text_size(j)); }

inline std::int64_t string_tokens(const json& s) {
  return tokens_of_size(s.get_ref<const std::string&>().size());
}

inline std::int64_t content_tokens(const json& content) {
  if (content.is_string()) return string_tokens(content);
  if (content.is_array()) {
    std::int64_t n = 0;
    for (const json& part : content) {
      auto text = part.is_object() ? part.find("text") : part.end();
      if (part.is_object() && text != part.end() && text->is_string())
        n = add(n, string_tokens(*text));
      else
        n = add(n, json_tokens(part));
    }
    return n;
  }
  if (content.is_null()) return 0;
  return json_tokens(content);
}

inline std::int64_t positive_int(const json& body, const char* key, std::int64_t fallback) {
  auto it = body.find(key);
  if (it == body.end()) return fallback;
  const std::optional<std::int64_t> v = detail::json_integer(*it);
  return v && *v > 0 ? clamp_count(*v) : fallback;
}

inline std::int64_t messages_tokens(const json& messages) {
  std::int64_t n = 3;  // reply primer
  for (const json& m : messages) {
    n = add(n, 3);
    if (!m.is_object()) {
      n = add(n, json_tokens(m));
      continue;
    }
    for (const auto& [key, value] : m.items()) {
      if (key == "content") {
        n = add(n, content_tokens(value));
      } else if (value.is_string()) {
        n = add(n, add(string_tokens(value), key == "name" ? 1 : 0));
      } else {
        n = add(n, json_tokens(value));
      }
    }
  }
  return n;
}
}  // namespace detail::tokens

LLMQ_INLINE std::int64_t estimate_text_tokens(std::string_view text) noexcept {
  using namespace detail::tokens;
  return tokens_of_size(text.size());
}

LLMQ_INLINE std::int64_t estimate_chat_tokens(const nlohmann::json& body,
                                              std::int64_t default_max_tokens) {
  using namespace detail::tokens;
  default_max_tokens = clamp_count(default_max_tokens);
  if (!body.is_object()) return add(json_tokens(body), default_max_tokens);
  std::int64_t prompt = 0;
  if (auto m = body.find("messages"); m != body.end() && m->is_array()) {
    prompt = add(prompt, messages_tokens(*m));
  } else if (auto p = body.find("prompt"); p != body.end()) {
    prompt = add(prompt, content_tokens(*p));
  }
  for (const char* key : {"tools", "functions"})
    if (auto t = body.find(key); t != body.end()) prompt = add(prompt, json_tokens(*t));
  const std::int64_t completion = positive_int(
      body, "max_completion_tokens", positive_int(body, "max_tokens", default_max_tokens));
  const std::int64_t choices =
      std::max(positive_int(body, "n", 1), positive_int(body, "best_of", 1));
  return add(prompt, mul(completion, choices));
}

LLMQ_INLINE std::int64_t estimate_embedding_tokens(const nlohmann::json& body) {
  using namespace detail::tokens;
  if (!body.is_object()) return json_tokens(body);
  auto input = body.find("input");
  if (input == body.end()) {
    if (auto m = body.find("messages"); m != body.end() && m->is_array())
      return messages_tokens(*m);
    return json_tokens(body);
  }
  if (input->is_string()) return string_tokens(*input);
  if (!input->is_array()) return json_tokens(*input);
  std::int64_t n = 0;
  for (const json& item : *input) {
    if (item.is_string())
      n = add(n, string_tokens(item));
    else if (item.is_number_integer())
      n = add(n, 1);  // one token id of a single token array
    else if (item.is_array())
      n = add(n, clamp_count(static_cast<std::int64_t>(std::min<std::size_t>(
                     item.size(), static_cast<std::size_t>(kMaxTokenEstimate)))));
    else
      n = add(n, json_tokens(item));
  }
  return std::max<std::int64_t>(n, 1);
}

}  // namespace llmq
