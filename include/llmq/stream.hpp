#pragma once
/// @file stream.hpp
/// Streamed answers: the two ends of one request's stream of chunks. The executor writes
/// (StreamWriter), the caller of LLMQueue::execute_streaming_request reads
/// (ResponseStream). A bounded buffer sits between them: a reader that lags behind holds
/// the writer (and so the upstream read) back instead of letting chunks pile up.

#include <llmq/clock.hpp>
#include <llmq/detail/inline.hpp>
#include <llmq/request.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace llmq {

/// Chunks a stream buffers between its writer and its reader unless told otherwise.
inline constexpr std::size_t kDefaultStreamBufferChunks = 16;

namespace detail {

/// The state the two ends share. Thread-safe: the writer and the reader may run on
/// different threads.
class StreamState : public std::enable_shared_from_this<StreamState> {
 public:
  using Channel =
      boost::asio::experimental::concurrent_channel<void(boost::system::error_code, std::string)>;
  /// `capacity`: chunks buffered (at least one). `clock`: where chunk times are read
  /// (null: the steady clock).
  StreamState(const boost::asio::any_io_executor& ex, std::size_t capacity,
              std::shared_ptr<Clock> clock = {});

  /// The request's answer is decided (`ec` and `r` as async_execute_request gives them):
  /// the reader gets what is still buffered, then the end. Call once.
  void finish(boost::system::error_code ec, Response r);

  /// The reader is gone: pending and later writes fail, and the request is cancelled
  /// (terminal) through cancel_signal().
  void close_reader();

  /// Bound to the request's completion handler; emitted on strand() only.
  [[nodiscard]] boost::asio::cancellation_signal& cancel_signal() noexcept { return cancel_; }
  /// Serialises the request's completion (which clears the slot) with close_reader's emit.
  [[nodiscard]] const boost::asio::any_io_executor& strand() const noexcept { return strand_; }

  [[nodiscard]] bool reader_closed() const noexcept { return reader_closed_.load(); }
  [[nodiscard]] std::size_t written() const noexcept { return written_.load(); }
  /// When the first and the latest chunk were written (by `clock`), if any was.
  [[nodiscard]] std::optional<std::pair<Clock::time_point, Clock::time_point>> chunk_times() const;

  Channel& channel() noexcept { return channel_; }
  /// Counts a chunk about to be written and notes its time.
  void note_write();

  /// The request's id (set before the request starts, read-only afterwards).
  void set_request_id(std::string id) { request_id_ = std::move(id); }
  [[nodiscard]] const std::string& request_id() const noexcept { return request_id_; }

  [[nodiscard]] bool done() const;
  [[nodiscard]] boost::system::error_code result_code() const;
  /// The final Response; valid once done().
  [[nodiscard]] const Response& result() const noexcept { return result_; }

 private:
  boost::asio::any_io_executor strand_;
  Channel channel_;
  std::shared_ptr<Clock> clock_;
  boost::asio::cancellation_signal cancel_;
  std::atomic<bool> reader_closed_{false};
  std::atomic<std::size_t> written_{0};
  mutable std::mutex mutex_;
  bool done_ = false;
  boost::system::error_code ec_;
  Response result_;
  std::string request_id_;
  std::optional<Clock::time_point> first_at_;
  Clock::time_point last_at_{};
};

}  // namespace detail

/// The executor's end of a streamed answer (RequestExecutor::process_streaming_request).
/// Use it from the executor's coroutine only; it stays valid until that coroutine ends.
class StreamWriter {
 public:
  explicit StreamWriter(std::shared_ptr<detail::StreamState> state) : state_(std::move(state)) {}

  /// Hands one chunk to the reader (for chat: the JSON text of one `chat.completion.chunk`,
  /// without the `data: ` framing). Completes once the chunk is buffered; with the buffer
  /// full, once the reader has taken one. Throws `boost::system::system_error` with
  /// `operation_aborted` when the reader has closed the stream (or the request was
  /// cancelled while waiting): stop then, and release the upstream call.
  boost::asio::awaitable<void> write(std::string chunk);

  /// Chunks written so far. Once one was, the request is no longer retried elsewhere.
  [[nodiscard]] std::size_t written() const noexcept { return state_->written(); }
  /// The reader has closed the stream.
  [[nodiscard]] bool reader_closed() const noexcept { return state_->reader_closed(); }

 private:
  std::shared_ptr<detail::StreamState> state_;
};

/// The caller's end of a streamed answer, from LLMQueue::execute_streaming_request.
///
/// - streaming(): the executor began a stream; next() yields its chunks in order, then
///   nullopt; then response() tells how it ended: status 200 when the stream completed,
///   else the error that cut it short (e.g. 502 `upstream_stream_error` when the upstream
///   broke off, 504 execution_timeout), never a silent truncation.
/// - not streaming(): the request ended before any chunk (the executor answered whole, or
///   every attempt failed before its first byte); response() holds that answer and next()
///   returns nullopt.
///
/// Closing (close(), the destructor, or cancelling next()) before the end cancels the
/// request: the upstream call is aborted, its connection closed, and the request is
/// recorded with status 499. Move-only; one reader at a time.
class ResponseStream {
 public:
  ResponseStream() = default;
  explicit ResponseStream(std::shared_ptr<detail::StreamState> state) : state_(std::move(state)) {}
  ~ResponseStream() { close(); }
  ResponseStream(ResponseStream&& other) noexcept = default;
  ResponseStream& operator=(ResponseStream&& other) noexcept {
    if (this != &other) {
      close();
      state_ = std::move(other.state_);
      first_ = std::move(other.first_);
      ended_ = other.ended_;
      streaming_ = other.streaming_;
      closed_ = other.closed_;
    }
    return *this;
  }
  ResponseStream(const ResponseStream&) = delete;
  ResponseStream& operator=(const ResponseStream&) = delete;

  [[nodiscard]] bool streaming() const noexcept { return streaming_; }

  /// The next chunk, or nullopt at the end. Throws `system_error(operation_aborted)` when
  /// the awaiting coroutine is cancelled (the stream is closed then).
  boost::asio::awaitable<std::optional<std::string>> next();

  /// How the request ended. Valid when not streaming(), and after next() returned nullopt.
  [[nodiscard]] const Response& response() const;
  /// The request's id (Request::id), known from the start.
  [[nodiscard]] const std::string& request_id() const noexcept;
  /// The error_code of the end (an llmq::errc, operation_aborted, or none).
  [[nodiscard]] boost::system::error_code error() const;

  /// Stops reading; see the class comment. Harmless when already closed or ended.
  void close() noexcept;

  /// Waits for the first chunk or the end (used by execute_streaming_request).
  boost::asio::awaitable<void> begin();

 private:
  std::shared_ptr<detail::StreamState> state_;
  std::optional<std::string> first_;
  bool ended_ = false;
  bool streaming_ = false;
  bool closed_ = false;
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/stream-inl.hpp>
#endif
