#pragma once
/// @file sliding_window_limiter-inl.hpp
/// Compiled once into llmq::llmq by src/sliding_window_limiter.cpp, or included by
/// <llmq/sliding_window_limiter.hpp> under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/detail/inline.hpp>
#include <llmq/sliding_window_limiter.hpp>

#include <algorithm>
#include <cstring>

namespace llmq {
namespace detail::window {
inline std::int64_t ticks(SlidingWindowLimiter::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace detail::window

LLMQ_INLINE void SlidingWindowLimiter::lru_unlink(User& u) noexcept {
  (u.lru_prev ? u.lru_prev->lru_next : lru_head_) = u.lru_next;
  (u.lru_next ? u.lru_next->lru_prev : lru_tail_) = u.lru_prev;
  u.lru_prev = u.lru_next = nullptr;
}

LLMQ_INLINE void SlidingWindowLimiter::lru_push_back(User& u) noexcept {
  u.lru_prev = lru_tail_;
  u.lru_next = nullptr;
  (lru_tail_ ? lru_tail_->lru_next : lru_head_) = &u;
  lru_tail_ = &u;
}

LLMQ_INLINE std::int64_t SlidingWindowLimiter::newest(const User& u) noexcept {
  return u.ring[(u.start + u.count - 1) % u.capacity];
}

LLMQ_INLINE void SlidingWindowLimiter::push(User& u, std::int64_t t, std::int64_t max_requests) {
  if (u.count == u.capacity) {
    // Grow (doubling, capped at max_requests), unrolling the ring.
    const auto cap = static_cast<std::uint32_t>(
        std::min<std::int64_t>(max_requests, std::max<std::uint32_t>(4, u.capacity * 2)));
    auto ring = std::make_unique<std::int64_t[]>(cap);
    for (std::uint32_t i = 0; i < u.count; ++i) ring[i] = u.ring[(u.start + i) % u.capacity];
    u.ring = std::move(ring);
    u.capacity = cap;
    u.start = 0;
  }
  u.ring[(u.start + u.count) % u.capacity] = t;
  ++u.count;
}

LLMQ_INLINE RateLimitDecision SlidingWindowLimiter::acquire(std::string_view user_id,
                                                            time_point now,
                                                            std::int64_t max_requests,
                                                            clock::duration window) {
  evict_idle(now);
  if (max_requests <= 0) return RateLimitDecision{false, window, 0};
  const std::int64_t t_now = detail::window::ticks(now);
  const std::int64_t w = std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  auto it = users_.find(user_id);
  if (it != users_.end()) {
    lru_unlink(it->second);
  } else if (!spare_.empty()) {
    Map::node_type node = std::move(spare_.back());
    spare_.pop_back();
    node.key().assign(user_id.data(), user_id.size());
    it = users_.insert(std::move(node)).position;
    it->second.key = &it->first;
  } else {
    it = users_.emplace(std::string(user_id), User{}).first;
    it->second.key = &it->first;
  }
  User& u = it->second;
  u.window = w;
  // Keep time monotonic per user so the ring stays sorted.
  const std::int64_t t = u.count > 0 ? std::max(t_now, newest(u)) : t_now;
  while (u.count > 0 && u.ring[u.start] <= t - w) {
    u.start = (u.start + 1) % u.capacity;
    --u.count;
  }
  RateLimitDecision d;
  if (static_cast<std::int64_t>(u.count) >= max_requests) {
    // The oldest entry we must wait for: with more entries than the (possibly lowered)
    // limit, enough must leave for count to drop below max_requests.
    const std::uint32_t must_leave = u.count - static_cast<std::uint32_t>(max_requests);
    const std::int64_t leaves_at = u.ring[(u.start + must_leave) % u.capacity] + w;
    d.allowed = false;
    d.retry_after = std::chrono::nanoseconds(leaves_at - t_now);
    d.remaining = 0;
  } else {
    push(u, t, max_requests);
    d.allowed = true;
    d.remaining = max_requests - static_cast<std::int64_t>(u.count);
  }
  if (u.count == 0) {
    release(it);
  } else {
    lru_push_back(u);
  }
  return d;
}

LLMQ_INLINE void SlidingWindowLimiter::release(Map::iterator it) {
  if (spare_.size() >= kMaxSpareUsers) {
    users_.erase(it);
    return;
  }
  Map::node_type node = users_.extract(it);
  User& u = node.mapped();
  u.start = 0;
  u.count = 0;
  u.lru_prev = u.lru_next = nullptr;
  spare_.push_back(std::move(node));
}

LLMQ_INLINE void SlidingWindowLimiter::evict_idle(time_point now, clock::duration window) {
  const std::int64_t t_now = detail::window::ticks(now);
  const std::int64_t floor = std::chrono::duration_cast<std::chrono::nanoseconds>(window).count();
  while (lru_head_ != nullptr && newest(*lru_head_) <= t_now - std::max(floor, lru_head_->window)) {
    User* u = lru_head_;
    lru_unlink(*u);
    release(users_.find(*u->key));
  }
}

LLMQ_INLINE std::size_t SlidingWindowLimiter::memory_bytes() const noexcept {
  // Node: key + value + hash-node overhead (next pointer, cached hash); plus the bucket
  // array and each key's heap buffer and ring.
  std::size_t bytes = users_.bucket_count() * sizeof(void*);
  for (const auto& [key, u] : users_) {
    bytes += sizeof(std::string) + sizeof(User) + 2 * sizeof(void*);
    if (key.capacity() > 15) bytes += key.capacity() + 1;
    bytes += u.capacity * sizeof(std::int64_t);
  }
  for (const Map::node_type& node : spare_) {
    bytes += sizeof(std::string) + sizeof(User) + 2 * sizeof(void*);
    if (node.key().capacity() > 15) bytes += node.key().capacity() + 1;
    bytes += node.mapped().capacity * sizeof(std::int64_t);
  }
  bytes += spare_.capacity() * sizeof(Map::node_type);
  return bytes;
}

}  // namespace llmq
