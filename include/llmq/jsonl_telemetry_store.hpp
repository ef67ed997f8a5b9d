#pragma once
/// @file jsonl_telemetry_store.hpp
/// Telemetry appended to a JSON-lines file. Link target: llmq::jsonl.

#include <llmq/telemetry.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

namespace llmq {

/// Tunables of JsonlTelemetryStore, each with its default.
struct JsonlTelemetryOptions {
  /// File appended to (created with mode 0640 if missing). Default "llmq_telemetry.jsonl".
  std::filesystem::path path = "llmq_telemetry.jsonl";
  /// fsync() after every batch: durable on power loss, slower. Default false.
  bool fsync = false;
};

/// Appends one JSON object per record (llmq::to_json, plus `attempt_log`) and a newline;
/// a batch is written with as few write() calls as possible on an O_APPEND descriptor,
/// so several processes may share a file without interleaving records. Invalid UTF-8 in
/// strings is replaced by U+FFFD. File I/O runs on a worker thread owned by the store;
/// the awaitables resume on the awaiting coroutine's executor.
///
/// Errors: llmq::Error (http_status 503) naming the path and errno's message.
/// Thread safety: calls are serialised on the worker; any thread may call.
/// Cancellation: not supported.
class JsonlTelemetryStore : public TelemetryStore {
 public:
  JsonlTelemetryStore(boost::asio::any_io_executor ex, JsonlTelemetryOptions options);
  /// Waits for a running batch, then closes the file.
  ~JsonlTelemetryStore() override;
  JsonlTelemetryStore(const JsonlTelemetryStore&) = delete;
  JsonlTelemetryStore& operator=(const JsonlTelemetryStore&) = delete;

  /// Opens (creates) the file.
  boost::asio::awaitable<void> connect() override;
  /// Appends the batch (opening the file first if needed).
  boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) override;
  /// Closes the file (a later call reopens it).
  boost::asio::awaitable<void> close() override;

  /// Records written since construction.
  [[nodiscard]] std::uint64_t rows_written() const noexcept;

 private:
  struct Impl;
  boost::asio::any_io_executor ex_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmq
