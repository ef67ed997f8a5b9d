/// @file sqlite_telemetry_store.cpp
/// SqliteTelemetryStore: SQLite on a one-thread pool, one transaction per batch.

#include "telemetry_rows.hpp"

#include <llmq/log.hpp>
#include <llmq/sqlite_telemetry_store.hpp>

#include <boost/asio/thread_pool.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <atomic>

namespace llmq {

namespace asio = boost::asio;
namespace rows = detail::stores;

namespace {

constexpr int column_count = static_cast<int>(rows::column_count);

std::string create_table_sql(const std::string& table) {
  return "CREATE TABLE IF NOT EXISTS " + table +
         " ("
         "id INTEGER PRIMARY KEY, "
         "request_id TEXT NOT NULL, user_id TEXT NOT NULL, req_type TEXT NOT NULL, "
         "llm_deployment TEXT NOT NULL, embedding_deployment TEXT NOT NULL, "
         "received_at INTEGER, queued_at INTEGER, dispatched_at INTEGER, completed_at INTEGER, "
         "queue_wait_us INTEGER NOT NULL, execution_time_us INTEGER NOT NULL, "
         "estimated_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, "
         "completion_tokens INTEGER NOT NULL, embedding_tokens INTEGER NOT NULL, "
         "attempts INTEGER NOT NULL, status INTEGER NOT NULL, error TEXT NOT NULL, "
         "payload TEXT, attempt_log TEXT NOT NULL)";
}

std::string insert_sql(const std::string& table) {
  std::string sql = "INSERT INTO " + table + " " + rows::insert_columns() + " VALUES (";
  for (int i = 1; i <= column_count; ++i) {
    if (i > 1) sql += ", ";
    sql += "?" + std::to_string(i);
  }
  sql += ")";
  return sql;
}

}  // namespace

struct SqliteTelemetryStore::Impl {
  explicit Impl(SqliteTelemetryOptions o)
      : options(std::move(o)),
        table(rows::quoted_table_name(options.table, "sqlite telemetry store")) {}

  ~Impl() {
    pool.join();
    close_db();
  }

  // Everything below runs on the worker thread only.

  [[noreturn]] void fail(const std::string& what) const {
    std::string msg = "sqlite telemetry store (" + options.path.string() + "): " + what;
    if (db != nullptr) msg += ": " + std::string(sqlite3_errmsg(db));
    throw Error(msg, 503);
  }

  void exec(const std::string& sql) const {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : "unknown error";
      sqlite3_free(err);
      throw Error("sqlite telemetry store (" + options.path.string() + "): " + msg, 503);
    }
  }

  void open() {
    if (db != nullptr) return;
    const int rc =
        sqlite3_open_v2(options.path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      const std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      close_db();
      throw Error("sqlite telemetry store (" + options.path.string() + "): open: " + why, 503);
    }
    try {
      sqlite3_busy_timeout(db, static_cast<int>(options.busy_timeout.count()));
      std::string mode = journal_mode_wal();
      if (mode != "wal")
        logger()->warn("sqlite telemetry store ({}): journal_mode is '{}', not wal",
                       options.path.string(), mode);
      exec(options.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      exec(create_table_sql(table));
      upgrade_table();
      const std::string sql = insert_sql(table);
      if (sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &insert, nullptr) !=
          SQLITE_OK)
        fail("prepare insert");
    } catch (...) {
      close_db();
      throw;
    }
  }

  /// Adds the columns a table created by an earlier version lacks.
  void upgrade_table() const {
    std::vector<std::string> present;
    sqlite3_stmt* st = nullptr;
    // `"schema"."name"` becomes `PRAGMA "schema".table_info("name")`.
    const std::size_t dot = table.find("\".\"");
    const std::string info =
        dot == std::string::npos
            ? "PRAGMA table_info(" + table + ")"
            : "PRAGMA " + table.substr(0, dot + 1) + ".table_info(" + table.substr(dot + 2) + ")";
    if (sqlite3_prepare_v2(db, info.c_str(), -1, &st, nullptr) != SQLITE_OK)
      fail("PRAGMA table_info");
    while (sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char* name = sqlite3_column_text(st, 1);
      if (name != nullptr) present.emplace_back(reinterpret_cast<const char*>(name));
    }
    sqlite3_finalize(st);
    for (const rows::AddedColumn& c : rows::added_columns) {
      if (std::find(present.begin(), present.end(), c.name) != present.end()) continue;
      exec("ALTER TABLE " + table + " ADD COLUMN " + std::string(c.name) + " " +
           std::string(c.sqlite_type));
    }
  }

  std::string journal_mode_wal() const {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, nullptr) != SQLITE_OK)
      fail("PRAGMA journal_mode");
    std::string mode;
    if (sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(st, 0);
      if (text != nullptr) mode = reinterpret_cast<const char*>(text);
    }
    sqlite3_finalize(st);
    return mode;
  }

  void bind_text(int index, std::string_view s) const {
    const std::string clean = rows::valid_utf8(s, true);
    if (sqlite3_bind_text(insert, index, clean.data(), static_cast<int>(clean.size()),
                          SQLITE_TRANSIENT) != SQLITE_OK)
      fail("bind");
  }

  void bind_int(int index, std::int64_t v) const {
    if (sqlite3_bind_int64(insert, index, v) != SQLITE_OK) fail("bind");
  }

  void bind_time(int index, WallTime t) const {
    const std::int64_t us = rows::micros(t);
    if (us == 0) {
      if (sqlite3_bind_null(insert, index) != SQLITE_OK) fail("bind");
    } else {
      bind_int(index, us);
    }
  }

  void bind_duration(int index, std::optional<std::chrono::microseconds> d) const {
    if (d) {
      bind_int(index, d->count());
    } else if (sqlite3_bind_null(insert, index) != SQLITE_OK) {
      fail("bind");
    }
  }

  /// Binds `t`'s values in rows::insert_columns() order.
  void bind_row(const TelemetryData& t) const {
    bind_text(1, t.request_id);
    bind_text(2, t.user_id);
    bind_text(3, t.req_type);
    bind_text(4, t.llm_deployment);
    bind_text(5, t.embedding_deployment);
    bind_time(6, t.received_at);
    bind_time(7, t.queued_at);
    bind_time(8, t.dispatched_at);
    bind_time(9, t.completed_at);
    bind_int(10, t.queue_wait.count());
    bind_int(11, t.execution_time.count());
    bind_int(12, t.estimated_tokens);
    bind_int(13, t.prompt_tokens);
    bind_int(14, t.completion_tokens);
    bind_int(15, t.embedding_tokens);
    bind_int(16, t.attempts);
    bind_int(17, t.status);
    bind_text(18, t.error);
    if (t.payload) {
      bind_text(19, rows::json_text(*t.payload));
    } else if (sqlite3_bind_null(insert, 19) != SQLITE_OK) {
      fail("bind");
    }
    bind_text(20, rows::json_text(to_json(t.attempt_log)));
    bind_int(21, spillover_count(t));
    bind_int(22, t.streamed ? 1 : 0);
    bind_duration(23, t.time_to_first_token);
    bind_duration(24, t.stream_duration);
    static_assert(column_count == 24, "bind every column");
  }

  void write(std::span<const TelemetryData> batch) {
    open();
    if (batch.empty()) return;
    exec("BEGIN IMMEDIATE");
    try {
      for (const TelemetryData& t : batch) {
        sqlite3_reset(insert);
        sqlite3_clear_bindings(insert);
        bind_row(t);
        if (sqlite3_step(insert) != SQLITE_DONE) fail("insert");
      }
      sqlite3_reset(insert);
      exec("COMMIT");
    } catch (...) {
      sqlite3_reset(insert);
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    rows_written += batch.size();
  }

  void close_db() {
    if (insert != nullptr) {
      sqlite3_finalize(insert);
      insert = nullptr;
    }
    if (db != nullptr) {
      sqlite3_close_v2(db);
      db = nullptr;
    }
  }

  SqliteTelemetryOptions options;
  std::string table;
  sqlite3* db = nullptr;
  sqlite3_stmt* insert = nullptr;
  std::atomic<std::uint64_t> rows_written{0};
  asio::thread_pool pool{1};  // last: joined first
};

SqliteTelemetryStore::SqliteTelemetryStore(asio::any_io_executor ex, SqliteTelemetryOptions options)
    : ex_(std::move(ex)), impl_(std::make_unique<Impl>(std::move(options))) {}

SqliteTelemetryStore::~SqliteTelemetryStore() = default;

asio::awaitable<void> SqliteTelemetryStore::connect() {
  Impl* impl = impl_.get();
  co_await rows::run_blocking(impl->pool.get_executor(), [impl] { impl->open(); });
}

asio::awaitable<void> SqliteTelemetryStore::insert_batch(std::span<TelemetryData> batch) {
  Impl* impl = impl_.get();
  // The records outlive this call (see TelemetryStore::insert_batch).
  co_await rows::run_blocking(impl->pool.get_executor(), [impl, batch] { impl->write(batch); });
}

asio::awaitable<void> SqliteTelemetryStore::close() {
  Impl* impl = impl_.get();
  co_await rows::run_blocking(impl->pool.get_executor(), [impl] { impl->close_db(); });
}

std::uint64_t SqliteTelemetryStore::rows_written() const noexcept {
  return impl_->rows_written.load();
}

}  // namespace llmq
