#pragma once
// Implementation of <llmq/stream.hpp>.

#include <llmq/detail/light_strand.hpp>
#include <llmq/stream.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <utility>

namespace llmq {

namespace detail {

LLMQ_INLINE StreamState::StreamState(const boost::asio::any_io_executor& ex, std::size_t capacity,
                                     std::shared_ptr<Clock> clock)
    : strand_(make_light_strand(ex)),
      channel_(strand_, std::max<std::size_t>(1, capacity)),
      clock_(std::move(clock)) {}

LLMQ_INLINE void StreamState::finish(boost::system::error_code ec, Response r) {
  {
    std::lock_guard lock(mutex_);
    if (done_) return;
    done_ = true;
    ec_ = ec;
    result_ = std::move(r);
  }
  // Wakes a reader waiting on an empty buffer (an empty buffer always has room). When the
  // buffer is full the marker does not fit; the reader then drains it and finds done().
  channel_.try_send(boost::asio::error::eof, std::string());
}

LLMQ_INLINE void StreamState::close_reader() {
  if (reader_closed_.exchange(true)) return;
  channel_.cancel();  // a writer waiting for room fails now
  boost::asio::dispatch(strand_, [self = shared_from_this()] {
    self->cancel_.emit(boost::asio::cancellation_type::terminal);
  });
}

LLMQ_INLINE void StreamState::note_write() {
  const Clock::time_point t = clock_ ? clock_->now() : std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  if (!first_at_) first_at_ = t;
  last_at_ = t;
  written_.fetch_add(1);
}

LLMQ_INLINE std::optional<std::pair<Clock::time_point, Clock::time_point>>
StreamState::chunk_times() const {
  std::lock_guard lock(mutex_);
  if (!first_at_) return std::nullopt;
  return std::make_pair(*first_at_, last_at_);
}

LLMQ_INLINE bool StreamState::done() const {
  std::lock_guard lock(mutex_);
  return done_;
}

LLMQ_INLINE boost::system::error_code StreamState::result_code() const {
  std::lock_guard lock(mutex_);
  return ec_;
}

/// What a receive that does not wait found: a chunk, the end marker, or nothing.
enum class Taken { chunk, end, none };

inline Taken try_take(StreamState::Channel& ch, std::string& out) {
  Taken got = Taken::none;
  ch.try_receive([&](boost::system::error_code ec, std::string data) {
    if (ec) {
      got = Taken::end;
    } else {
      got = Taken::chunk;
      out = std::move(data);
    }
  });
  return got;
}

}  // namespace detail

LLMQ_INLINE boost::asio::awaitable<void> StreamWriter::write(std::string chunk) {
  std::shared_ptr<detail::StreamState> s = state_;
  if (s->reader_closed())
    throw boost::system::system_error(boost::asio::error::operation_aborted,
                                      "stream closed by its reader");
  s->note_write();
  auto [ec] = co_await s->channel().async_send(boost::system::error_code(), std::move(chunk),
                                               boost::asio::as_tuple(boost::asio::use_awaitable));
  if (ec)
    throw boost::system::system_error(boost::asio::error::operation_aborted,
                                      "stream closed by its reader");
}

LLMQ_INLINE boost::asio::awaitable<std::optional<std::string>> ResponseStream::next() {
  if (first_) {
    std::optional<std::string> c = std::move(first_);
    first_.reset();
    co_return c;
  }
  if (!state_ || ended_ || closed_) co_return std::nullopt;
  std::shared_ptr<detail::StreamState> s = state_;
  std::string data;
  // Once the answer is decided every write has completed: what is buffered is all there
  // is, so a reader never waits after done().
  const bool decided = s->done();
  const detail::Taken got = detail::try_take(s->channel(), data);
  if (got == detail::Taken::chunk) co_return std::move(data);
  if (got == detail::Taken::end || decided) {
    ended_ = true;
    co_return std::nullopt;
  }
  auto [ec, received] =
      co_await s->channel().async_receive(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (!ec) co_return std::move(received);
  if (ec == boost::asio::error::eof) {
    ended_ = true;
    co_return std::nullopt;
  }
  close();  // cancelled while waiting: the reader gives up
  throw boost::system::system_error(boost::asio::error::operation_aborted,
                                    "reading the stream was cancelled");
}

LLMQ_INLINE boost::asio::awaitable<void> ResponseStream::begin() {
  std::optional<std::string> c = co_await next();
  if (c) {
    first_ = std::move(c);
    streaming_ = true;
  }
}

LLMQ_INLINE const Response& ResponseStream::response() const {
  static const Response none;
  if (!state_ || !state_->done()) return none;
  return state_->result();
}

LLMQ_INLINE const std::string& ResponseStream::request_id() const noexcept {
  static const std::string none;
  return state_ ? state_->request_id() : none;
}

LLMQ_INLINE boost::system::error_code ResponseStream::error() const {
  return state_ ? state_->result_code() : boost::system::error_code();
}

LLMQ_INLINE void ResponseStream::close() noexcept {
  if (!state_ || closed_) return;
  closed_ = true;
  first_.reset();
  if (!state_->done()) state_->close_reader();
}

}  // namespace llmq
