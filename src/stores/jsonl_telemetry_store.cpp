/// @file jsonl_telemetry_store.cpp
/// JsonlTelemetryStore: JSON lines appended on a one-thread pool.

#include "telemetry_rows.hpp"

#include <llmq/jsonl_telemetry_store.hpp>

#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace llmq {

namespace asio = boost::asio;
namespace rows = detail::stores;

struct JsonlTelemetryStore::Impl {
  explicit Impl(JsonlTelemetryOptions o) : options(std::move(o)) {}

  ~Impl() {
    pool.join();
    close_file();
  }

  // Everything below runs on the worker thread only.

  [[noreturn]] void fail(const char* what, int err) const {
    throw Error("jsonl telemetry store (" + options.path.string() + "): " + what + ": " +
                    std::strerror(err),
                503);
  }

  void open_file() {
    if (fd >= 0) return;
    fd = ::open(options.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) fail("open", errno);
  }

  void write(std::span<const TelemetryData> batch) {
    open_file();
    std::string buf;
    for (const TelemetryData& t : batch) {
      buf += rows::json_text(to_json(t));
      buf += '\n';
    }
    std::size_t off = 0;
    while (off < buf.size()) {
      const ssize_t n = ::write(fd, buf.data() + off, buf.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write", errno);
      }
      off += static_cast<std::size_t>(n);
    }
    if (options.fsync && ::fsync(fd) != 0) fail("fsync", errno);
    rows_written += batch.size();
  }

  void close_file() {
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
    }
  }

  JsonlTelemetryOptions options;
  int fd = -1;
  std::atomic<std::uint64_t> rows_written{0};
  asio::thread_pool pool{1};
};

JsonlTelemetryStore::JsonlTelemetryStore(asio::any_io_executor ex, JsonlTelemetryOptions options)
    : ex_(std::move(ex)), impl_(std::make_unique<Impl>(std::move(options))) {}

JsonlTelemetryStore::~JsonlTelemetryStore() = default;

asio::awaitable<void> JsonlTelemetryStore::connect() {
  Impl* impl = impl_.get();
  co_await rows::run_blocking(impl->pool.get_executor(), [impl] { impl->open_file(); });
}

asio::awaitable<void> JsonlTelemetryStore::insert_batch(std::span<TelemetryData> batch) {
  Impl* impl = impl_.get();
  // The records outlive this call (see TelemetryStore::insert_batch).
  co_await rows::run_blocking(impl->pool.get_executor(), [impl, batch] { impl->write(batch); });
}

asio::awaitable<void> JsonlTelemetryStore::close() {
  Impl* impl = impl_.get();
  co_await rows::run_blocking(impl->pool.get_executor(), [impl] { impl->close_file(); });
}

std::uint64_t JsonlTelemetryStore::rows_written() const noexcept {
  return impl_->rows_written.load();
}

}  // namespace llmq
