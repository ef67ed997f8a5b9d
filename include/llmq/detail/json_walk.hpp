#pragma once
// Reading client- and upstream-supplied JSON trees without recursion: a depth-first walk
// with an explicit stack, and integer members read without wrapping.

#include <boost/container/small_vector.hpp>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace llmq::detail {

/// Visits every value below and including `root` in document order, iteratively. For each
/// value `visit(value, depth, key)` is called: `depth` 0 for the root, `key` the member
/// name inside an object, else null. A container's members are visited after it, then
/// `leave(container)` is called. `visit` returns false to skip a container's members.
/// Memory: one stack frame per open container (the first sixteen without allocating).
template <class Visit, class Leave>
void walk_json(const nlohmann::json& root, Visit&& visit, Leave&& leave) {
  using nlohmann::json;
  if (!visit(root, std::size_t{0}, static_cast<const std::string*>(nullptr)) ||
      !root.is_structured()) {
    if (root.is_structured()) leave(root);
    return;
  }
  struct Frame {
    const json* container;
    json::const_iterator it;
    json::const_iterator end;
  };
  // Sixteen levels in place: the walk of an ordinary request body allocates nothing.
  boost::container::small_vector<Frame, 16> stack;
  stack.push_back(Frame{&root, root.cbegin(), root.cend()});
  while (!stack.empty()) {
    Frame& top = stack.back();
    if (top.it == top.end) {
      leave(*top.container);
      stack.pop_back();
      continue;
    }
    const std::string* key = top.container->is_object() ? &top.it.key() : nullptr;
    const json& child = *top.it;
    ++top.it;
    const bool enter = visit(child, stack.size(), key);
    if (!child.is_structured()) continue;
    if (!enter) {
      leave(child);
      continue;
    }
    stack.push_back(Frame{&child, child.cbegin(), child.cend()});
  }
}

/// The value of an integer JSON number; an unsigned one above INT64_MAX reads as INT64_MAX
/// (nlohmann's get<std::int64_t>() would wrap it to a negative number). Nullopt for
/// anything else (floats included).
[[nodiscard]] inline std::optional<std::int64_t> json_integer(const nlohmann::json& j) noexcept {
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return static_cast<std::int64_t>(u > kMax ? kMax : u);
  }
  if (j.is_number_integer()) return j.get<std::int64_t>();
  return std::nullopt;
}

}  // namespace llmq::detail
