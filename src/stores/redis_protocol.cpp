/// @file redis_protocol.cpp
/// RESP framing through hiredis, hash slots, redirects, CLUSTER SLOTS, SHA-1.

#include "redis_protocol.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <memory>
#include <string>

namespace llmq::detail {
namespace {

redisReader* as_reader(void* p) { return static_cast<redisReader*>(p); }

template <class Int>
bool parse_int(std::string_view s, Int& out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

}  // namespace

std::string format_redis_command(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (args.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::length_error("redis command has too many arguments");
  char* target = nullptr;
  const int len =
      redisFormatCommandArgv(&target, static_cast<int>(args.size()), argv.data(), lens.data());
  if (len < 0 || target == nullptr) throw std::bad_alloc();
  std::string out(target, static_cast<std::size_t>(len));
  redisFreeCommand(target);
  return out;
}

// The reader builds RedisReply values itself (hiredis's reply-object callbacks): hiredis's
// own objects would allocate an announced array's element pointers before any element
// arrived, and would be converted afterwards. The callbacks run inside hiredis (C): they
// never throw; a refusal returns null, which hiredis reports as an error.
struct RedisReplyReader::State {
  std::size_t reply_bytes = 0;  // held by the elements of the reply being read
  std::string refusal;          // why a callback refused, for the error message
};

namespace {

using ReaderState = RedisReplyReader::State;

std::string too_large() {
  return "a reply larger than " + std::to_string(kMaxRedisReplyBytes) + " bytes";
}

ReaderState& state_of(const redisReadTask* task) {
  return *static_cast<ReaderState*>(task->privdata);
}

/// Adds `value` where hiredis reads it: as the root, or as the next element of its array.
void* place(const redisReadTask* task, RedisReply&& value, std::size_t text_bytes) noexcept {
  ReaderState& state = state_of(task);
  const std::size_t bytes = sizeof(RedisReply) + text_bytes;
  if (bytes > kMaxRedisReplyBytes - std::min(state.reply_bytes, kMaxRedisReplyBytes)) {
    state.refusal = too_large();
    return nullptr;
  }
  try {
    RedisReply* node = nullptr;
    if (task->parent == nullptr) {
      node = new RedisReply(std::move(value));
    } else {
      // Elements arrive in order; an array's vector grows only while its own element is
      // being added, so the pointers hiredis holds for unfinished arrays stay valid.
      auto* array = static_cast<RedisReply*>(task->parent->obj);
      if (task->idx < 0 || static_cast<std::size_t>(task->idx) != array->elements.size()) {
        state.refusal = "elements out of order";
        return nullptr;
      }
      array->elements.push_back(std::move(value));
      node = &array->elements.back();
    }
    state.reply_bytes += bytes;
    return node;
  } catch (const std::exception&) {
    state.refusal = "out of memory";
    return nullptr;
  }
}

void* create_string(const redisReadTask* task, char* text, std::size_t len) {
  RedisReply r;
  r.type = task->type == REDIS_REPLY_ERROR    ? RedisReply::Type::error
           : task->type == REDIS_REPLY_STATUS ? RedisReply::Type::status
                                              : RedisReply::Type::string;
  try {
    r.str.assign(text, len);
  } catch (const std::exception&) {
    state_of(task).refusal = "out of memory";
    return nullptr;
  }
  return place(task, std::move(r), len);
}

void* create_array(const redisReadTask* task, int elements) {
  if (elements < 0 || elements > kMaxRedisReplyElements) {
    state_of(task).refusal = "an array of " + std::to_string(elements) + " elements (more than " +
                             std::to_string(kMaxRedisReplyElements) + ")";
    return nullptr;
  }
  RedisReply r;
  r.type = RedisReply::Type::array;
  return place(task, std::move(r), 0);
}

void* create_integer(const redisReadTask* task, long long value) {
  RedisReply r;
  r.type = RedisReply::Type::integer;
  r.integer = value;
  return place(task, std::move(r), 0);
}

void* create_nil(const redisReadTask* task) { return place(task, RedisReply{}, 0); }

/// hiredis frees only roots (an unfinished reply when it fails or is reset).
void free_root(void* root) { delete static_cast<RedisReply*>(root); }

redisReplyObjectFunctions reply_functions = {create_string, create_array, create_integer,
                                             create_nil, free_root};

/// A reader whose callbacks see `state`.
redisReader* make_reader(ReaderState& state) {
  redisReader* r = redisReaderCreateWithFunctions(&reply_functions);
  if (r == nullptr) throw std::bad_alloc();
  r->privdata = &state;
  return r;
}

[[noreturn]] void throw_reader_error(redisReader* r, ReaderState& state) {
  std::string message = "RESP reader: ";
  message += state.refusal.empty() ? std::string(r->errstr) : state.refusal;
  throw RedisProtocolError(message);
}

}  // namespace

RedisReplyReader::RedisReplyReader()
    : state_(std::make_unique<State>()), reader_(make_reader(*state_)) {}

RedisReplyReader::~RedisReplyReader() { redisReaderFree(as_reader(reader_)); }

void RedisReplyReader::feed(std::string_view bytes) {
  if (bytes.empty()) return;
  redisReader* r = as_reader(reader_);
  if (redisReaderFeed(r, bytes.data(), bytes.size()) != REDIS_OK) throw_reader_error(r, *state_);
}

std::optional<RedisReply> RedisReplyReader::next() {
  redisReader* r = as_reader(reader_);
  void* raw = nullptr;
  if (redisReaderGetReply(r, &raw) != REDIS_OK) throw_reader_error(r, *state_);
  if (raw == nullptr) {
    // Incomplete: what is buffered, plus what its elements hold, stays under the bound.
    const std::size_t buffered = r->len - r->pos;
    if (buffered > kMaxRedisReplyBytes - std::min(state_->reply_bytes, kMaxRedisReplyBytes)) {
      state_->refusal = too_large();
      throw_reader_error(r, *state_);
    }
    return std::nullopt;
  }
  state_->reply_bytes = 0;
  std::unique_ptr<RedisReply> owned(static_cast<RedisReply*>(raw));
  return std::move(*owned);
}

void RedisReplyReader::reset() {
  auto fresh_state = std::make_unique<State>();
  redisReader* fresh = make_reader(*fresh_state);
  redisReaderFree(as_reader(reader_));
  reader_ = fresh;
  state_ = std::move(fresh_state);
}

std::uint16_t redis_crc16(std::string_view bytes) noexcept {
  std::uint16_t crc = 0;
  for (char c : bytes) {
    crc = static_cast<std::uint16_t>(
        crc ^ (static_cast<std::uint16_t>(static_cast<unsigned char>(c)) << 8));
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000U) != 0 ? static_cast<std::uint16_t>((crc << 1) ^ 0x1021U)
                                 : static_cast<std::uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::uint16_t redis_key_slot(std::string_view key) noexcept {
  const std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<std::uint16_t>(redis_crc16(key) % redis_slot_count);
}

std::optional<RedisRedirect> parse_redis_redirect(std::string_view msg) {
  RedisRedirect r;
  if (msg.substr(0, 6) == "MOVED ") {
    msg.remove_prefix(6);
  } else if (msg.substr(0, 4) == "ASK ") {
    r.ask = true;
    msg.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const std::size_t space = msg.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  if (!parse_int(msg.substr(0, space), r.slot) || r.slot >= redis_slot_count) return std::nullopt;
  std::string_view endpoint = msg.substr(space + 1);
  const std::size_t colon = endpoint.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  if (!parse_int(endpoint.substr(colon + 1), r.port) || r.port == 0) return std::nullopt;
  std::string_view host = endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  r.host = std::string(host);
  return r;
}

std::vector<RedisSlotRange> parse_cluster_slots(const RedisReply& reply) {
  std::vector<RedisSlotRange> out;
  if (reply.type != RedisReply::Type::array) return out;
  for (const RedisReply& range : reply.elements) {
    if (range.type != RedisReply::Type::array || range.elements.size() < 3) continue;
    const RedisReply& first = range.elements[0];
    const RedisReply& last = range.elements[1];
    const RedisReply& master = range.elements[2];
    if (first.type != RedisReply::Type::integer || last.type != RedisReply::Type::integer ||
        master.type != RedisReply::Type::array || master.elements.size() < 2)
      continue;
    if (first.integer < 0 || last.integer < first.integer || last.integer >= redis_slot_count)
      continue;
    const RedisReply& host = master.elements[0];
    const RedisReply& port = master.elements[1];
    if (host.type != RedisReply::Type::string || port.type != RedisReply::Type::integer ||
        port.integer <= 0 || port.integer > 65535)
      continue;
    RedisSlotRange r;
    r.first = static_cast<std::uint16_t>(first.integer);
    r.last = static_cast<std::uint16_t>(last.integer);
    r.host = host.str;
    r.port = static_cast<std::uint16_t>(port.integer);
    out.push_back(std::move(r));
  }
  return out;
}

// SHA-1 (FIPS 180-4), only used to name the rate-limit script for EVALSHA.
std::string sha1_hex(std::string_view bytes) {
  std::uint32_t h[5] = {0x67452301U, 0xEFCDAB89U, 0x98BADCFEU, 0x10325476U, 0xC3D2E1F0U};
  auto rotl = [](std::uint32_t x, int n) -> std::uint32_t { return (x << n) | (x >> (32 - n)); };
  std::string msg(bytes);
  const std::uint64_t bit_len = static_cast<std::uint64_t>(bytes.size()) * 8U;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bit_len >> (i * 8)) & 0xFFU));
  for (std::size_t chunk = 0; chunk < msg.size(); chunk += 64) {
    std::array<std::uint32_t, 80> w{};
    for (std::size_t i = 0; i < 16; ++i) {
      w[i] = 0;
      for (std::size_t b = 0; b < 4; ++b)
        w[i] = (w[i] << 8) | static_cast<unsigned char>(msg[chunk + i * 4 + b]);
    }
    for (std::size_t i = 16; i < 80; ++i)
      w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (std::size_t i = 0; i < 80; ++i) {
      std::uint32_t f = 0;
      std::uint32_t k = 0;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5A827999U;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ED9EBA1U;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8F1BBCDCU;
      } else {
        f = b ^ c ^ d;
        k = 0xCA62C1D6U;
      }
      const std::uint32_t temp = rotl(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rotl(b, 30);
      b = a;
      a = temp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(40);
  for (std::uint32_t word : h) {
    for (int shift = 28; shift >= 0; shift -= 4) out.push_back(digits[(word >> shift) & 0xFU]);
  }
  return out;
}

}  // namespace llmq::detail
