#include <llmq/token_estimator.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>

namespace llmq {
namespace {
using nlohmann::json;

std::int64_t json_tokens(const json& j) { return estimate_text_tokens(j.dump()); }

std::int64_t content_tokens(const json& content) {
  if (content.is_string()) return estimate_text_tokens(content.get_ref<const std::string&>());
  if (content.is_array()) {
    std::int64_t n = 0;
    for (const json& part : content) {
      auto text = part.is_object() ? part.find("text") : part.end();
      if (part.is_object() && text != part.end() && text->is_string())
        n += estimate_text_tokens(text->get_ref<const std::string&>());
      else
        n += json_tokens(part);
    }
    return n;
  }
  if (content.is_null()) return 0;
  return json_tokens(content);
}

std::int64_t positive_int(const json& body, const char* key, std::int64_t fallback) {
  auto it = body.find(key);
  if (it == body.end() || !it->is_number_integer()) return fallback;
  const auto v = it->get<std::int64_t>();
  return v > 0 ? v : fallback;
}

std::int64_t messages_tokens(const json& messages) {
  std::int64_t n = 3;  // reply primer
  for (const json& m : messages) {
    n += 3;
    if (!m.is_object()) {
      n += json_tokens(m);
      continue;
    }
    for (const auto& [key, value] : m.items()) {
      if (key == "content") {
        n += content_tokens(value);
      } else if (value.is_string()) {
        n += estimate_text_tokens(value.get_ref<const std::string&>()) + (key == "name" ? 1 : 0);
      } else {
        n += json_tokens(value);
      }
    }
  }
  return n;
}
}  // namespace

std::int64_t estimate_text_tokens(std::string_view text) noexcept {
  return static_cast<std::int64_t>((text.size() + 3) / 4);
}

std::int64_t estimate_chat_tokens(const json& body, std::int64_t default_max_tokens) {
  if (!body.is_object()) return json_tokens(body) + default_max_tokens;
  std::int64_t prompt = 0;
  if (auto m = body.find("messages"); m != body.end() && m->is_array()) {
    prompt += messages_tokens(*m);
  } else if (auto p = body.find("prompt"); p != body.end()) {
    prompt += content_tokens(*p);
  }
  for (const char* key : {"tools", "functions"})
    if (auto t = body.find(key); t != body.end()) prompt += json_tokens(*t);
  std::int64_t completion = positive_int(body, "max_completion_tokens",
                                         positive_int(body, "max_tokens", default_max_tokens));
  const std::int64_t choices =
      std::max(positive_int(body, "n", 1), positive_int(body, "best_of", 1));
  return prompt + completion * choices;
}

std::int64_t estimate_embedding_tokens(const json& body) {
  if (!body.is_object()) return json_tokens(body);
  auto input = body.find("input");
  if (input == body.end()) {
    if (auto m = body.find("messages"); m != body.end() && m->is_array())
      return messages_tokens(*m);
    return json_tokens(body);
  }
  if (input->is_string()) return estimate_text_tokens(input->get_ref<const std::string&>());
  if (!input->is_array()) return json_tokens(*input);
  std::int64_t n = 0;
  for (const json& item : *input) {
    if (item.is_string())
      n += estimate_text_tokens(item.get_ref<const std::string&>());
    else if (item.is_number_integer())
      n += 1;  // one token id of a single token array
    else if (item.is_array())
      n += static_cast<std::int64_t>(item.size());
    else
      n += json_tokens(item);
  }
  return std::max<std::int64_t>(n, 1);
}

}  // namespace llmq
