#pragma once
/// @file detail/redis_protocol.hpp
/// The I/O-free parts of the Redis client: RESP framing (hiredis's formatter and reader),
/// cluster hash slots, redirect parsing, the CLUSTER SLOTS map. Tested without sockets.

#include <llmq/redis.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace llmq::detail {

/// RESP encoding of one command (`*N\r\n$len\r\narg\r\n...`); binary-safe.
[[nodiscard]] std::string format_redis_command(const std::vector<std::string>& args);

/// The reader threw: the byte stream is not RESP. The reader must be reset() afterwards.
class RedisProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Longest array a reply may announce (`*N`); llmq's largest replies (CLUSTER SLOTS of
/// a 16384-slot cluster) stay far below.
inline constexpr std::int64_t kMaxRedisReplyElements = 1 << 20;
/// Most bytes one reply may take while it is read: its buffered bytes plus what its
/// elements hold so far (each element counts its RedisReply as well as its text).
inline constexpr std::size_t kMaxRedisReplyBytes = std::size_t{64} << 20;

/// Incremental RESP2 parser (hiredis's redisReader, building RedisReply values directly).
/// Feed bytes as they arrive, in any split; take complete replies with next(). A reply
/// over kMaxRedisReplyElements or kMaxRedisReplyBytes, or nested deeper than 7 arrays
/// (hiredis's limit), is a RedisProtocolError. Not thread-safe.
class RedisReplyReader {
 public:
  RedisReplyReader();
  ~RedisReplyReader();
  RedisReplyReader(const RedisReplyReader&) = delete;
  RedisReplyReader& operator=(const RedisReplyReader&) = delete;

  /// Appends received bytes.
  void feed(std::string_view bytes);
  /// The next complete reply, or nullopt when more bytes are needed.
  /// Throws RedisProtocolError on malformed input.
  std::optional<RedisReply> next();
  /// Drops buffered bytes and any error state (used after a reconnect).
  void reset();

  struct State;  ///< what the reply-building callbacks share with the reader

 private:
  std::unique_ptr<State> state_;
  void* reader_ = nullptr;  // redisReader*
};

/// Number of hash slots of a Redis Cluster.
inline constexpr std::uint16_t redis_slot_count = 16384;

/// CRC16 (XMODEM) as Redis Cluster uses it.
[[nodiscard]] std::uint16_t redis_crc16(std::string_view bytes) noexcept;

/// The hash slot of `key`: of its hash tag (the bytes between the first `{` and the next
/// `}`) when that is non-empty, else of the whole key.
[[nodiscard]] std::uint16_t redis_key_slot(std::string_view key) noexcept;

/// A parsed `-MOVED slot host:port` or `-ASK slot host:port` error.
struct RedisRedirect {
  bool ask = false;  ///< ASK (one-time) rather than MOVED (permanent)
  std::uint16_t slot = 0;
  std::string host;  ///< may be empty: "the host you are talking to"
  std::uint16_t port = 0;
};

/// Parses the message of an error reply; nullopt if it is not a redirect.
[[nodiscard]] std::optional<RedisRedirect> parse_redis_redirect(std::string_view error_message);

/// One range of a `CLUSTER SLOTS` reply (its master only).
struct RedisSlotRange {
  std::uint16_t first = 0;
  std::uint16_t last = 0;
  std::string host;
  std::uint16_t port = 0;
};

/// Parses a `CLUSTER SLOTS` reply; ranges that do not parse are skipped.
[[nodiscard]] std::vector<RedisSlotRange> parse_cluster_slots(const RedisReply& reply);

/// SHA-1 of `bytes` as 40 lowercase hex digits (what EVALSHA expects).
[[nodiscard]] std::string sha1_hex(std::string_view bytes);

}  // namespace llmq::detail
