// Incremental server-sent events parser.

#include <llmq/sse.hpp>

namespace llmq {

std::vector<SseEvent> SseParser::feed(std::string_view chunk) {
  std::vector<SseEvent> out;
  if (chunk.empty()) return out;
  std::size_t i = 0;
  if (after_cr_ && !chunk.empty() && chunk.front() == '\n') i = 1;  // the LF of a CRLF
  after_cr_ = false;
  while (i < chunk.size()) {
    // Take everything up to the next line end in one go.
    std::size_t end = i;
    while (end < chunk.size() && chunk[end] != '\n' && chunk[end] != '\r') ++end;
    line_.append(chunk.substr(i, end - i));
    if (end == chunk.size()) break;
    const bool cr = chunk[end] == '\r';
    i = end + 1;
    if (cr) {
      if (i < chunk.size()) {
        if (chunk[i] == '\n') ++i;
      } else {
        after_cr_ = true;
      }
    }
    std::string line = std::move(line_);
    line_.clear();
    process_line(line, out);
  }
  return out;
}

std::vector<SseEvent> SseParser::finish() {
  std::vector<SseEvent> out;
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    process_line(line, out);
  }
  after_cr_ = false;
  dispatch(out);
  return out;
}

void SseParser::process_line(std::string_view line, std::vector<SseEvent>& out) {
  if (at_start_) {
    at_start_ = false;
    if (line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
  }
  if (line.empty()) {
    dispatch(out);
    return;
  }
  if (line.front() == ':') return;  // comment
  std::string_view name = line;
  std::string_view value;
  const std::size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    name = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (name == "data") {
    data_.append(value);
    data_ += '\n';
    has_data_ = true;
  } else if (name == "event") {
    type_ = std::string(value);
  } else if (name == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_ = std::string(value);
  } else if (name == "retry") {
    bool digits = !value.empty() && value.size() <= 15;
    for (char c : value) digits = digits && c >= '0' && c <= '9';
    if (digits) retry_ = std::chrono::milliseconds(std::stoll(std::string(value)));
  }
}

void SseParser::dispatch(std::vector<SseEvent>& out) {
  if (has_data_) {
    SseEvent event;
    if (!type_.empty()) event.type = std::move(type_);
    data_.pop_back();  // the last '\n'
    event.data = std::move(data_);
    event.id = last_id_;
    event.retry = retry_;
    out.push_back(std::move(event));
  }
  data_.clear();
  has_data_ = false;
  type_.clear();
  retry_.reset();
}

}  // namespace llmq
