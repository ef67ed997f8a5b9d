// Fuzz target `redis_reply`: RedisReplyReader over the bytes a Redis server sends, fed
// whole and in fuzzer-chosen pieces (the replies must not depend on the cuts), then what
// the client reads out of replies: MOVED/ASK redirects and CLUSTER SLOTS maps. Input:
// one byte choosing the cuts (fuzz_support.hpp), then the stream.

#include "fuzz_support.hpp"

#include "redis_protocol.hpp"

namespace {

using llmq::RedisReply;
using llmq::detail::RedisProtocolError;
using llmq::detail::RedisReplyReader;

struct Replies {
  std::vector<RedisReply> replies;
  bool failed = false;  // the reader threw RedisProtocolError
};

Replies read_all(const std::vector<std::string_view>& pieces) {
  RedisReplyReader reader;
  Replies out;
  try {
    for (std::string_view piece : pieces) {
      reader.feed(piece);
      while (auto reply = reader.next()) out.replies.push_back(std::move(*reply));
    }
  } catch (const RedisProtocolError&) {
    out.failed = true;
    reader.reset();
    LLMQ_FUZZ_CHECK(!reader.next().has_value());  // usable again after reset()
  }
  return out;
}

void inspect(const RedisReply& reply) {
  if (reply.is_error()) {
    if (const auto redirect = llmq::detail::parse_redis_redirect(reply.str)) {
      LLMQ_FUZZ_CHECK(redirect->slot < llmq::detail::redis_slot_count);
      LLMQ_FUZZ_CHECK(redirect->port != 0);
    }
  }
  for (const llmq::detail::RedisSlotRange& range : llmq::detail::parse_cluster_slots(reply)) {
    LLMQ_FUZZ_CHECK(range.first <= range.last && range.last < llmq::detail::redis_slot_count);
    LLMQ_FUZZ_CHECK(range.port != 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view stream = llmq::fuzz::as_text(data + 1, size - 1);
  const Replies whole = read_all({stream});
  const Replies cut = read_all(llmq::fuzz::split(stream, data[0]));
  LLMQ_FUZZ_CHECK(whole.failed == cut.failed);
  LLMQ_FUZZ_CHECK(whole.replies.size() == cut.replies.size());
  for (std::size_t i = 0; i < whole.replies.size(); ++i) {
    LLMQ_FUZZ_CHECK(whole.replies[i] == cut.replies[i]);
    inspect(whole.replies[i]);
  }
  return 0;
}
