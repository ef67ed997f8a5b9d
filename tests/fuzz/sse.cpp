// Fuzz target `sse`: SseParser over a byte stream fed whole and in fuzzer-chosen pieces
// (the events must not depend on the cuts), its events' data into a ChatStreamAssembler
// as the chat provider does. Input: one byte choosing the cuts (fuzz_support.hpp), then
// the stream.

#include "fuzz_support.hpp"

#include <llmq/providers.hpp>
#include <llmq/sse.hpp>

namespace {

using llmq::SseEvent;
using llmq::SseParser;

std::vector<SseEvent> parse(const std::vector<std::string_view>& pieces) {
  SseParser parser;
  std::vector<SseEvent> events;
  for (std::string_view piece : pieces) {
    for (SseEvent& e : parser.feed(piece)) events.push_back(std::move(e));
  }
  for (SseEvent& e : parser.finish()) events.push_back(std::move(e));
  LLMQ_FUZZ_CHECK(parser.buffered_bytes() == 0);
  return events;
}

bool same(const SseEvent& a, const SseEvent& b) {
  return a.type == b.type && a.data == b.data && a.id == b.id && a.retry == b.retry;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view stream = llmq::fuzz::as_text(data + 1, size - 1);
  const std::vector<SseEvent> whole = parse({stream});
  const std::vector<SseEvent> cut = parse(llmq::fuzz::split(stream, data[0]));
  LLMQ_FUZZ_CHECK(whole.size() == cut.size());
  for (std::size_t i = 0; i < whole.size(); ++i) LLMQ_FUZZ_CHECK(same(whole[i], cut[i]));

  llmq::ChatStreamAssembler assembler;
  for (const SseEvent& event : cut) {
    LLMQ_FUZZ_CHECK(!event.type.empty());
    LLMQ_FUZZ_CHECK(!event.retry || event.retry->count() >= 0);
    if (event.is_done()) break;
    if (auto chunk = llmq::fuzz::parse_json(event.data)) assembler.add(*chunk);
  }
  const bool complete = assembler.complete();
  const nlohmann::json body = assembler.result();
  LLMQ_FUZZ_CHECK(body.is_object() && body.at("object") == "chat.completion");
  LLMQ_FUZZ_CHECK(body.at("choices").is_array());
  LLMQ_FUZZ_CHECK(!complete || !body.at("choices").empty());
  for (const nlohmann::json& choice : body.at("choices")) {
    LLMQ_FUZZ_CHECK(choice.at("message").is_object());
    LLMQ_FUZZ_CHECK(!complete || !choice.at("finish_reason").is_null());
  }
  (void)body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}
