#pragma once
/// @file sqlite_telemetry_store.hpp
/// Telemetry in a local SQLite database (WAL mode). Link target: llmq::sqlite.

#include <llmq/telemetry.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace llmq {

/// Tunables of SqliteTelemetryStore, each with its default.
struct SqliteTelemetryOptions {
  /// Database file, created if missing. Default "llmq_telemetry.sqlite3".
  std::filesystem::path path = "llmq_telemetry.sqlite3";
  /// Table, created if missing: `[schema.]name` of letters, digits and `_`.
  /// Default "llmq_telemetry".
  std::string table = "llmq_telemetry";
  /// How long a write waits for another writer's lock (`busy_timeout`). Default 5 s.
  std::chrono::milliseconds busy_timeout{std::chrono::seconds(5)};
  /// `PRAGMA synchronous=FULL` (each batch durable on power loss) instead of NORMAL (in
  /// WAL mode: the database stays consistent, the last batches may be lost). Default false.
  bool synchronous_full = false;
};

/// Writes telemetry to SQLite: one row per record, one transaction and one prepared
/// statement per batch. Timestamps are INTEGER microseconds since the Unix epoch (NULL
/// when unset), `payload` and `attempt_log` JSON text. All SQLite calls run on a worker
/// thread owned by the store; the awaitables resume on the awaiting coroutine's
/// executor. Columns: see docs/stores.md.
///
/// Errors: llmq::Error (http_status 503) naming the path and SQLite's message.
/// Thread safety: calls are serialised on the worker; any thread may call.
/// Cancellation: not supported (a batch, once started, is written or rolled back).
class SqliteTelemetryStore : public TelemetryStore {
 public:
  /// `ex` is the executor of the application (kept for symmetry with the other stores;
  /// completions go to the awaiting coroutine's executor). Throws ConfigError for a bad
  /// table name. Opens nothing until connect().
  SqliteTelemetryStore(boost::asio::any_io_executor ex, SqliteTelemetryOptions options);
  /// Waits for a running batch, then closes the database.
  ~SqliteTelemetryStore() override;
  SqliteTelemetryStore(const SqliteTelemetryStore&) = delete;
  SqliteTelemetryStore& operator=(const SqliteTelemetryStore&) = delete;

  /// Opens the database, switches it to WAL and creates the table if missing.
  boost::asio::awaitable<void> connect() override;
  /// Inserts the batch in one transaction (opening the database first if needed).
  boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) override;
  /// Closes the database (a later connect() or insert_batch() reopens it).
  boost::asio::awaitable<void> close() override;

  /// Rows written since construction.
  [[nodiscard]] std::uint64_t rows_written() const noexcept;

 private:
  struct Impl;
  boost::asio::any_io_executor ex_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmq
