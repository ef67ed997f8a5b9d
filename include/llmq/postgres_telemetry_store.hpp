#pragma once
/// @file postgres_telemetry_store.hpp
/// Telemetry in PostgreSQL through libpq's asynchronous API. Link target: llmq::postgres.

#include <llmq/telemetry.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmq {

/// Tunables of PostgresTelemetryStore, each with its default.
struct PostgresTelemetryOptions {
  /// libpq connection string, `key=value ...` or a `postgresql://` URI. A host name is
  /// resolved asynchronously by the store (libpq is handed `hostaddr`), so no blocking
  /// DNS lookup happens; multi-host lists and Unix sockets are passed to libpq as they are.
  /// Default "host=127.0.0.1 port=5432 dbname=postgres".
  std::string conninfo = "host=127.0.0.1 port=5432 dbname=postgres";
  /// Table, created if missing: `[schema.]name` of letters, digits and `_` (quoted, so
  /// case-sensitive). Default "llmq_telemetry".
  std::string table = "llmq_telemetry";
  /// Bound on resolve + connect + authentication + session setup. Zero disables.
  /// Default 5 s.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(5)};
  /// Server-side `statement_timeout` of the session, and (plus 1 s) the client-side bound
  /// on one statement's round trip, after which the connection is dropped. Zero
  /// disables both. Default 10 s.
  std::chrono::milliseconds statement_timeout{std::chrono::seconds(10)};
  /// When the connection breaks after a batch's commit was sent, how long to keep trying
  /// to reconnect and look whether the batch was committed after all (then it counts as
  /// written, not lost). Long enough for a server restart: meanwhile new records wait in
  /// the queue's telemetry buffer (those past its capacity are counted as dropped, as
  /// they would fail against a server that is down). 0: do not look; the batch is
  /// reported failed.
  std::chrono::milliseconds commit_check_timeout{std::chrono::seconds(30)};
  /// Run `CREATE TABLE IF NOT EXISTS` after connecting. Default true.
  bool create_table = true;
  /// Rows per INSERT statement; a larger batch is split into several statements inside
  /// one transaction. 1..3000. Default 1000.
  std::size_t rows_per_statement = 1000;
};

/// Writes telemetry to PostgreSQL with libpq's non-blocking API (PQconnectStartParams /
/// PQconnectPoll, PQsendQueryParams, PQconsumeInput / PQisBusy / PQgetResult), waiting on
/// the socket with Asio; no libpq call ever blocks the io_context thread. One row per
/// record; one multi-row parameterised INSERT per batch (or per `rows_per_statement`
/// rows, in one transaction). Timestamps are `timestamptz` (microseconds; NULL when
/// unset); text is made valid UTF-8 (invalid bytes and NUL become U+FFFD). Columns: see
/// docs/stores.md.
///
/// Failures: connect() throws if the server is unreachable (the queue logs it and goes
/// on). insert_batch() on a dropped connection reconnects once first; if that or the
/// insert fails it throws (the queue counts the batch as lost), and a broken
/// connection is dropped so the next batch reconnects.
///
/// Errors: llmq::Error (http_status 503) with libpq's message (never a password).
/// Thread safety: calls are serialised on an internal strand; any thread may call.
/// Cancellation: cancelling an operation drops the connection (its state is unknown)
/// and completes with operation_aborted.
class PostgresTelemetryStore : public TelemetryStore {
 public:
  /// Throws ConfigError for a bad table name or rows_per_statement. Connects in connect().
  PostgresTelemetryStore(boost::asio::any_io_executor ex, PostgresTelemetryOptions options);
  ~PostgresTelemetryStore() override;
  PostgresTelemetryStore(const PostgresTelemetryStore&) = delete;
  PostgresTelemetryStore& operator=(const PostgresTelemetryStore&) = delete;

  /// Connects, sets statement_timeout and creates the table if missing.
  boost::asio::awaitable<void> connect() override;
  /// Inserts the batch (reconnecting once first if disconnected).
  boost::asio::awaitable<void> insert_batch(std::span<TelemetryData> batch) override;
  /// Closes the connection (a later connect() or insert_batch() reopens it).
  boost::asio::awaitable<void> close() override;

  /// True while connected (a snapshot).
  [[nodiscard]] bool is_connected() const noexcept;
  /// Rows written since construction.
  [[nodiscard]] std::uint64_t rows_written() const noexcept;
  /// Batches whose connection broke while their commit was in flight and that were found
  /// committed afterwards (counted in rows_written, not reported as failed).
  [[nodiscard]] std::uint64_t batches_committed_despite_errors() const noexcept;

 private:
  class Session;
  std::shared_ptr<Session> session_;
};

}  // namespace llmq
