// ChatStreamAssembler: chat.completion.chunk deltas -> one chat.completion body.

#include <llmq/providers.hpp>

#include <limits>

namespace llmq {
namespace {

using nlohmann::json;

/// Appends a string delta to `target[key]` (creating it; null counts as empty).
void append_string(json& target, const char* key, const json& delta) {
  if (!delta.is_string()) return;
  json& slot = target[key];
  if (!slot.is_string()) slot = std::string();
  slot.get_ref<std::string&>() += delta.get_ref<const std::string&>();
}

std::int64_t index_of(const json& obj, std::int64_t fallback) {
  const auto it = obj.find("index");
  if (it != obj.end() && it->is_number_integer()) return it->get<std::int64_t>();
  return fallback;
}

json new_choice(std::int64_t index) {
  json choice = json::object();
  choice["index"] = index;
  json message = json::object();
  message["role"] = "assistant";
  message["content"] = nullptr;
  choice["message"] = std::move(message);
  choice["finish_reason"] = nullptr;
  return choice;
}

}  // namespace

void ChatStreamAssembler::add(const json& chunk) {
  if (!chunk.is_object()) return;
  for (const char* key : {"id", "created", "model", "system_fingerprint", "service_tier"}) {
    const auto it = chunk.find(key);
    if (it == chunk.end() || it->is_null()) continue;
    if (it->is_string() && it->get_ref<const std::string&>().empty()) continue;
    if (!meta_.contains(key)) meta_[key] = *it;
  }
  if (const auto pfr = chunk.find("prompt_filter_results"); pfr != chunk.end() && pfr->is_array()) {
    for (const json& entry : *pfr) prompt_filter_results_.push_back(entry);
  }
  if (const auto usage = chunk.find("usage"); usage != chunk.end() && usage->is_object()) {
    usage_ = *usage;
  }
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return;
  std::int64_t position = 0;
  for (const json& c : *choices) {
    if (!c.is_object()) continue;
    const std::int64_t index = index_of(c, position++);
    auto [slot, inserted] = choices_.try_emplace(index);
    if (inserted) slot->second = new_choice(index);
    json& choice = slot->second;
    json& message = choice["message"];

    if (const auto delta = c.find("delta"); delta != c.end() && delta->is_object()) {
      if (const auto role = delta->find("role"); role != delta->end() && role->is_string()) {
        message["role"] = *role;
      }
      if (const auto content = delta->find("content"); content != delta->end()) {
        append_string(message, "content", *content);
      }
      if (const auto refusal = delta->find("refusal"); refusal != delta->end()) {
        append_string(message, "refusal", *refusal);
      }
      if (const auto fc = delta->find("function_call"); fc != delta->end() && fc->is_object()) {
        json& target = message["function_call"];
        if (!target.is_object()) target = json::object();
        if (const auto name = fc->find("name"); name != fc->end()) {
          append_string(target, "name", *name);
        }
        if (const auto args = fc->find("arguments"); args != fc->end()) {
          append_string(target, "arguments", *args);
        }
      }
      if (const auto calls = delta->find("tool_calls");
          calls != delta->end() && calls->is_array()) {
        std::int64_t call_position = 0;
        for (const json& call : *calls) {
          if (!call.is_object()) continue;
          const std::int64_t call_index = index_of(call, call_position++);
          json& target = tool_calls_[{index, call_index}];
          if (!target.is_object()) target = json::object();
          if (const auto id = call.find("id"); id != call.end() && id->is_string()) {
            target["id"] = *id;
          }
          if (const auto type = call.find("type"); type != call.end() && type->is_string()) {
            target["type"] = *type;
          }
          if (const auto fn = call.find("function"); fn != call.end() && fn->is_object()) {
            json& function = target["function"];
            if (!function.is_object()) function = json::object();
            if (const auto name = fn->find("name"); name != fn->end()) {
              append_string(function, "name", *name);
            }
            if (const auto args = fn->find("arguments"); args != fn->end()) {
              append_string(function, "arguments", *args);
            }
          }
        }
      }
    }
    if (const auto finish = c.find("finish_reason"); finish != c.end() && !finish->is_null()) {
      choice["finish_reason"] = *finish;
    }
    if (const auto logprobs = c.find("logprobs"); logprobs != c.end() && logprobs->is_object()) {
      json& target = choice["logprobs"];
      if (!target.is_object()) target = json::object();
      for (const char* key : {"content", "refusal"}) {
        const auto part = logprobs->find(key);
        if (part == logprobs->end() || !part->is_array()) continue;
        json& list = target[key];
        if (!list.is_array()) list = json::array();
        for (const json& entry : *part) list.push_back(entry);
      }
    }
    if (const auto cfr = c.find("content_filter_results"); cfr != c.end() && cfr->is_object()) {
      json& target = choice["content_filter_results"];
      if (!target.is_object()) target = json::object();
      for (const auto& [key, value] : cfr->items()) target[key] = value;
    }
  }
}

bool ChatStreamAssembler::complete() const {
  if (choices_.empty()) return false;
  for (const auto& [index, choice] : choices_) {
    if (choice["finish_reason"].is_null()) return false;
  }
  return true;
}

json ChatStreamAssembler::result() const {
  json body = json::object();
  body["id"] = meta_.value("id", json(""));
  body["object"] = "chat.completion";
  body["created"] = meta_.value("created", json(0));
  body["model"] = meta_.value("model", json(""));
  for (const char* key : {"system_fingerprint", "service_tier"}) {
    if (meta_.contains(key)) body[key] = meta_[key];
  }
  json choices = json::array();
  for (const auto& [index, stored] : choices_) {
    json choice = stored;
    json& message = choice["message"];
    json calls = json::array();
    for (auto it = tool_calls_.lower_bound({index, std::numeric_limits<std::int64_t>::min()});
         it != tool_calls_.end() && it->first.first == index; ++it) {
      calls.push_back(it->second);
    }
    if (!calls.empty()) message["tool_calls"] = std::move(calls);
    // No content and no tool call: an empty answer rather than null.
    if (message["content"].is_null() && !message.contains("tool_calls") &&
        !message.contains("function_call")) {
      message["content"] = "";
    }
    choices.push_back(std::move(choice));
  }
  body["choices"] = std::move(choices);
  if (!usage_.is_null()) body["usage"] = usage_;
  if (!prompt_filter_results_.empty()) body["prompt_filter_results"] = prompt_filter_results_;
  return body;
}

}  // namespace llmq
