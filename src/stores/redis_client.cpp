/// @file redis_client.cpp
/// RedisClient: one RedisConnection per node, MOVED/ASK redirects, the slot map.

#include <llmq/log.hpp>
#include <llmq/redis.hpp>
#include "redis_protocol.hpp"

#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <mutex>
#include <optional>

namespace llmq {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

namespace detail {

struct RedisClientNode {
  std::string host;
  std::uint16_t port = 0;
  std::shared_ptr<RedisConnection> connection;  // created on first use
};

struct RedisClientState {
  static constexpr std::uint16_t unknown_node = 0xFFFF;

  RedisClientState(asio::any_io_executor executor, RedisConfig cfg)
      : ex(std::move(executor)), config(std::move(cfg)) {
    RedisClientNode seed;
    seed.host = config.host;
    seed.port = config.port;
    // Created now (it does not connect yet) so that a bad TLS file is a ConfigError of
    // the constructor rather than of the first command.
    seed.connection = std::make_shared<RedisConnection>(ex, config);
    nodes.push_back(std::move(seed));
  }

  /// The connection to node `index` (created if needed). Throws closed after close().
  std::shared_ptr<RedisConnection> connection(std::size_t index) {
    std::lock_guard lock(mutex);
    if (closed) throw boost::system::system_error(make_error_code(RedisErrc::closed));
    RedisClientNode& node = nodes.at(index);
    if (!node.connection) {
      RedisConfig node_config = config;
      node_config.host = node.host;
      node_config.port = node.port;
      node.connection = std::make_shared<RedisConnection>(ex, std::move(node_config));
    }
    return node.connection;
  }

  std::size_t node_for_slot(std::uint16_t slot) {
    std::lock_guard lock(mutex);
    if (slots.empty() || slots[slot] == unknown_node) return 0;
    return slots[slot];
  }

  std::string host_of(std::size_t index) {
    std::lock_guard lock(mutex);
    return nodes.at(index).host;
  }

  /// Index of host:port, added if new. Caller holds `mutex`.
  std::size_t node_index_locked(const std::string& host, std::uint16_t port) {
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      if (nodes[i].port == port && nodes[i].host == host) return i;
    }
    if (nodes.size() >= unknown_node) return 0;  // absurd; keep the map representable
    RedisClientNode node;
    node.host = host;
    node.port = port;
    nodes.push_back(std::move(node));
    return nodes.size() - 1;
  }

  std::size_t node_index(const std::string& host, std::uint16_t port) {
    std::lock_guard lock(mutex);
    return node_index_locked(host, port);
  }

  void set_slot(std::uint16_t slot, std::size_t node) {
    std::lock_guard lock(mutex);
    if (slots.empty()) slots.assign(redis_slot_count, unknown_node);
    slots[slot] = static_cast<std::uint16_t>(node);
  }

  /// True (and remembers now) when the last full refresh is at least 1 s old.
  bool refresh_due() {
    std::lock_guard lock(mutex);
    const auto now = steady::now();
    if (refreshed && now - last_refresh < std::chrono::seconds(1)) return false;
    refreshed = true;
    last_refresh = now;
    return true;
  }

  void apply_slots(const std::vector<RedisSlotRange>& ranges, const std::string& fallback_host) {
    std::lock_guard lock(mutex);
    if (slots.empty()) slots.assign(redis_slot_count, unknown_node);
    for (const RedisSlotRange& r : ranges) {
      const std::size_t node = node_index_locked(r.host.empty() ? fallback_host : r.host, r.port);
      for (std::uint32_t s = r.first; s <= r.last; ++s) slots[s] = static_cast<std::uint16_t>(node);
    }
  }

  asio::any_io_executor ex;
  RedisConfig config;
  mutable std::mutex mutex;
  std::vector<RedisClientNode> nodes;  // [0] is the seed
  std::vector<std::uint16_t> slots;    // node per slot; empty until a redirect was seen
  steady::time_point last_refresh{};
  bool refreshed = false;
  bool closed = false;
  std::atomic<std::uint64_t> redirects{0};
};

namespace {

std::vector<std::vector<std::string>> with_asking(const std::vector<std::string>& args) {
  std::vector<std::vector<std::string>> commands;
  commands.push_back(std::vector<std::string>{std::string("ASKING")});
  commands.push_back(args);
  return commands;
}

std::vector<std::string> cluster_slots_command() {
  return std::vector<std::string>{std::string("CLUSTER"), std::string("SLOTS")};
}

/// Refreshes the slot map from `node`; failures only cost the optimisation.
asio::awaitable<void> refresh_slots(std::shared_ptr<RedisClientState> st, std::size_t node) {
  std::shared_ptr<RedisConnection> conn = st->connection(node);
  std::optional<RedisReply> reply;
  std::string failure;
  try {
    reply = co_await conn->exec(cluster_slots_command());
  } catch (const boost::system::system_error& e) {
    if (e.code() == asio::error::operation_aborted) throw;
    failure = e.what();
  }
  if (!reply) {
    logger()->debug("redis CLUSTER SLOTS failed: {}", failure);
    co_return;
  }
  if (reply->is_error()) {
    logger()->debug("redis CLUSTER SLOTS: {}", reply->str);
    co_return;
  }
  st->apply_slots(parse_cluster_slots(*reply), st->host_of(node));
}

/// Sends `args` to the owner of `slot` (or the seed), following redirects.
asio::awaitable<RedisReply> route(std::shared_ptr<RedisClientState> st,
                                  std::optional<std::uint16_t> slot,
                                  std::vector<std::string> args) {
  std::size_t node = slot ? st->node_for_slot(*slot) : 0;
  bool asking = false;
  for (int hop = 0;; ++hop) {
    std::shared_ptr<RedisConnection> conn = st->connection(node);
    RedisReply reply;
    if (asking) {
      std::vector<RedisReply> replies = co_await conn->exec_pipeline(with_asking(args));
      reply = std::move(replies.back());
    } else {
      reply = co_await conn->exec(args);
    }
    if (!reply.is_error()) co_return reply;
    std::optional<RedisRedirect> redirect = parse_redis_redirect(reply.str);
    if (!redirect) co_return reply;
    if (hop >= st->config.max_redirects) {
      throw boost::system::system_error(make_error_code(RedisErrc::too_many_redirects),
                                        "last: " + reply.str);
    }
    ++st->redirects;
    const std::string host = redirect->host.empty() ? st->host_of(node) : redirect->host;
    const std::size_t target = st->node_index(host, redirect->port);
    if (redirect->ask) {
      asking = true;
    } else {
      asking = false;
      st->set_slot(redirect->slot, target);
      if (st->refresh_due()) co_await refresh_slots(st, target);
    }
    node = target;
  }
}

}  // namespace
}  // namespace detail

RedisClient::RedisClient(asio::any_io_executor ex, RedisConfig config)
    : state_(std::make_shared<detail::RedisClientState>(std::move(ex), std::move(config))) {}

RedisClient::~RedisClient() = default;

asio::awaitable<RedisReply> RedisClient::exec_for_key(std::string key,
                                                      std::vector<std::string> args) {
  const std::uint16_t slot = detail::redis_key_slot(key);
  RedisReply reply = co_await detail::route(state_, slot, std::move(args));
  co_return reply;
}

asio::awaitable<RedisReply> RedisClient::exec(std::vector<std::string> args) {
  RedisReply reply = co_await detail::route(state_, std::nullopt, std::move(args));
  co_return reply;
}

asio::awaitable<void> RedisClient::close() {
  std::vector<std::shared_ptr<RedisConnection>> connections;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    for (const auto& node : state_->nodes) {
      if (node.connection) connections.push_back(node.connection);
    }
  }
  for (const auto& c : connections) co_await c->close();
}

std::size_t RedisClient::node_count() const {
  std::lock_guard lock(state_->mutex);
  return state_->nodes.size();
}

std::uint64_t RedisClient::redirects() const noexcept { return state_->redirects.load(); }

const RedisConfig& RedisClient::config() const noexcept { return state_->config; }

}  // namespace llmq
