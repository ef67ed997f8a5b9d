#pragma once
/// @file sse.hpp
/// An incremental parser of server-sent events (the `text/event-stream` format of the
/// WHATWG HTML standard), as used by streaming chat completions. Part of `llmq::providers`.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmq {

/// One dispatched event.
struct SseEvent {
  /// The `event:` field; "message" when the event set none.
  std::string type = "message";
  /// The `data:` lines joined with '\n' (no trailing newline).
  std::string data;
  /// The last `id:` seen in the stream so far (it persists across events).
  std::string id;
  /// A `retry:` field of this event (reconnection time), if any.
  std::optional<std::chrono::milliseconds> retry;

  /// True for OpenAI's end-of-stream marker `data: [DONE]`.
  [[nodiscard]] bool is_done() const noexcept { return data == "[DONE]"; }
};

/// Feeds bytes in any pieces; returns the events completed by each piece.
///
/// Lines end with CRLF, LF or CR (a CR at the end of one piece followed by LF at the
/// start of the next counts once). `:` lines are comments; `data`, `event`, `id` and
/// `retry` fields are honoured, others ignored; one space after the colon is dropped.
/// A blank line dispatches the event (an event without data lines is not dispatched).
/// A UTF-8 byte order mark at the start is skipped.
///
/// Not thread-safe; one parser per stream.
class SseParser {
 public:
  /// Parses `chunk`; returns the events it completed, in order.
  std::vector<SseEvent> feed(std::string_view chunk);

  /// End of stream. The standard drops an event that no blank line ended; this returns
  /// it anyway (after processing an unterminated last line), for servers that end the
  /// stream without the final blank line. Empty when nothing was pending.
  std::vector<SseEvent> finish();

  /// Bytes held for an unfinished line.
  [[nodiscard]] std::size_t buffered_bytes() const noexcept { return line_.size(); }

 private:
  void process_line(std::string_view line, std::vector<SseEvent>& out);
  void dispatch(std::vector<SseEvent>& out);

  std::string line_;       // current, unfinished line
  bool after_cr_ = false;  // the last byte seen was a CR ending a line
  bool at_start_ = true;   // no line finished yet (BOM check)
  std::string data_;       // data lines of the pending event, each + '\n'
  bool has_data_ = false;
  std::string type_;  // event type of the pending event
  std::string last_id_;
  std::optional<std::chrono::milliseconds> retry_;
};

}  // namespace llmq
