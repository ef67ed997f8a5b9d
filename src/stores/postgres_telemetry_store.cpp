/// @file postgres_telemetry_store.cpp
/// PostgresTelemetryStore: libpq's non-blocking API driven by Asio descriptor waits.

#include "telemetry_rows.hpp"

#include <llmq/log.hpp>
#include <llmq/postgres_telemetry_store.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <optional>

namespace llmq {

namespace asio = boost::asio;
namespace rows = detail::stores;

namespace {

constexpr std::size_t column_count = rows::column_count;
constexpr std::string_view error_prefix = "postgres telemetry store: ";

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string create_table_sql(const std::string& table) {
  return "CREATE TABLE IF NOT EXISTS " + table +
         " ("
         "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
         "request_id text NOT NULL, user_id text NOT NULL, req_type text NOT NULL, "
         "llm_deployment text NOT NULL, embedding_deployment text NOT NULL, "
         "received_at timestamptz, queued_at timestamptz, dispatched_at timestamptz, "
         "completed_at timestamptz, "
         "queue_wait_us bigint NOT NULL, execution_time_us bigint NOT NULL, "
         "estimated_tokens bigint NOT NULL, prompt_tokens bigint NOT NULL, "
         "completion_tokens bigint NOT NULL, embedding_tokens bigint NOT NULL, "
         "attempts integer NOT NULL, status integer NOT NULL, error text NOT NULL, "
         "payload jsonb, attempt_log jsonb NOT NULL)";
}

/// Adds the columns a table created by an earlier version lacks.
std::string upgrade_table_sql(const std::string& table) {
  std::string sql = "ALTER TABLE " + table;
  bool first = true;
  for (const rows::AddedColumn& c : rows::added_columns) {
    sql += first ? " " : ", ";
    first = false;
    sql += "ADD COLUMN IF NOT EXISTS ";
    sql += c.name;
    sql += ' ';
    sql += c.postgres_type;
  }
  return sql;
}

/// `INSERT ... VALUES (...), (...)` for `n` rows with typed placeholders.
std::string insert_sql(const std::string& table, std::size_t n) {
  // Parameter types, in rows::insert_columns() order.
  static constexpr const char* casts[] = {
      "text",    "text",   "text",   "text",   "text",    "ts",      "ts",     "ts",
      "ts",      "bigint", "bigint", "bigint", "bigint",  "bigint",  "bigint", "integer",
      "integer", "text",   "jsonb",  "jsonb",  "integer", "boolean", "bigint", "bigint"};
  static_assert(std::size(casts) == column_count);
  std::string sql = "INSERT INTO " + table + " " + rows::insert_columns() + " VALUES ";
  std::size_t param = 1;
  for (std::size_t row = 0; row < n; ++row) {
    sql += row == 0 ? "(" : ", (";
    for (std::size_t c = 0; c < column_count; ++c, ++param) {
      if (c > 0) sql += ", ";
      const std::string p = "$" + std::to_string(param);
      if (std::string_view(casts[c]) == "ts") {
        // Exact microseconds (to_timestamp(double) would round).
        sql += "'epoch'::timestamptz + " + p + "::bigint * interval '1 microsecond'";
      } else {
        sql += p + "::" + casts[c];
      }
    }
    sql += ")";
  }
  return sql;
}

/// JSON text with `\u0000` escapes neutralised (jsonb cannot store NUL).
std::string jsonb_safe(std::string text) {
  std::size_t pos = 0;
  while ((pos = text.find("\\u0000", pos)) != std::string::npos) {
    // Only an escape if preceded by an even number of backslashes.
    std::size_t slashes = 0;
    for (std::size_t i = pos; i > 0 && text[i - 1] == '\\'; --i) ++slashes;
    if (slashes % 2 == 0) {
      text.replace(pos, 6, "\\ufffd");
    }
    pos += 6;
  }
  return text;
}

using Param = std::optional<std::string>;

void log_notice(void*, const char* message) {
  std::string m = trimmed(message != nullptr ? message : "");
  logger()->debug("postgres telemetry store: server notice: {}", m);
}

std::optional<std::string> time_param(WallTime t) {
  const std::int64_t us = rows::micros(t);
  if (us == 0) return std::nullopt;
  return std::to_string(us);
}

std::optional<std::string> duration_param(std::optional<std::chrono::microseconds> d) {
  if (!d) return std::nullopt;
  return std::to_string(d->count());
}

/// Appends `t`'s values in rows::insert_columns() order.
void append_row(std::vector<Param>& params, const TelemetryData& t) {
  params.emplace_back(rows::valid_utf8(t.request_id, true));
  params.emplace_back(rows::valid_utf8(t.user_id, true));
  params.emplace_back(rows::valid_utf8(t.req_type, true));
  params.emplace_back(rows::valid_utf8(t.llm_deployment, true));
  params.emplace_back(rows::valid_utf8(t.embedding_deployment, true));
  params.push_back(time_param(t.received_at));
  params.push_back(time_param(t.queued_at));
  params.push_back(time_param(t.dispatched_at));
  params.push_back(time_param(t.completed_at));
  params.emplace_back(std::to_string(t.queue_wait.count()));
  params.emplace_back(std::to_string(t.execution_time.count()));
  params.emplace_back(std::to_string(t.estimated_tokens));
  params.emplace_back(std::to_string(t.prompt_tokens));
  params.emplace_back(std::to_string(t.completion_tokens));
  params.emplace_back(std::to_string(t.embedding_tokens));
  params.emplace_back(std::to_string(t.attempts));
  params.emplace_back(std::to_string(t.status));
  params.emplace_back(rows::valid_utf8(t.error, true));
  if (t.payload) {
    params.emplace_back(jsonb_safe(rows::json_text(*t.payload)));
  } else {
    params.emplace_back(std::nullopt);
  }
  params.emplace_back(jsonb_safe(rows::json_text(to_json(t.attempt_log))));
  params.emplace_back(std::to_string(spillover_count(t)));
  params.emplace_back(t.streamed ? "true" : "false");
  params.push_back(duration_param(t.time_to_first_token));
  params.push_back(duration_param(t.stream_duration));
}

}  // namespace

class PostgresTelemetryStore::Session : public std::enable_shared_from_this<Session> {
 public:
  using strand_type = asio::strand<asio::any_io_executor>;

  Session(const asio::any_io_executor& ex, PostgresTelemetryOptions o)
      : strand_(asio::make_strand(ex)),
        options_(std::move(o)),
        table_(rows::quoted_table_name(options_.table, "postgres telemetry store")),
        socket_(strand_),
        resolver_(strand_),
        deadline_(strand_),
        pause_(strand_) {
    if (options_.rows_per_statement == 0 || options_.rows_per_statement > 3000)
      throw ConfigError("postgres telemetry store: rows_per_statement must be 1..3000");
  }

  ~Session() { drop(); }

  [[nodiscard]] const strand_type& strand() const noexcept { return strand_; }

  static asio::awaitable<void> connect_op(std::shared_ptr<Session> self) {
    std::exception_ptr failure;
    try {
      co_await self->open();
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      self->drop();
      std::rethrow_exception(failure);
    }
  }

  static asio::awaitable<void> insert_op(std::shared_ptr<Session> self,
                                         std::span<const TelemetryData> batch) {
    std::exception_ptr failure;
    self->final_sent_ = false;
    try {
      if (!self->healthy()) co_await self->open();  // one reconnect attempt
      co_await self->insert_rows(batch);
    } catch (...) {
      failure = std::current_exception();
    }
    if (!failure) co_return;
    self->drop();  // whatever broke, the next batch starts on a fresh connection
    // The connection broke after the statement that commits the batch was sent: the
    // server may have committed it. Find out, so that a written batch is not reported
    // lost (nor, by a retry, written twice).
    if (self->final_sent_ && !is_cancellation(failure) &&
        co_await self->committed_after_all(batch.back().request_id)) {
      self->rows_written_ += batch.size();
      self->resolved_ += 1;
      co_return;
    }
    std::rethrow_exception(failure);
  }

  static bool is_cancellation(const std::exception_ptr& e) {
    try {
      std::rethrow_exception(e);
    } catch (const boost::system::system_error& se) {
      return se.code() == asio::error::operation_aborted;
    } catch (...) {
    }
    return false;
  }

  // (Outside the coroutine: g++ 12 rejects some initializers inside coroutine bodies.)
  [[nodiscard]] std::string find_row_sql() const {
    return "SELECT 1 FROM " + table_ + " WHERE request_id = $1 LIMIT 1";
  }
  static std::vector<Param> find_row_params(const std::string& request_id) {
    std::vector<Param> params;
    params.emplace_back(rows::valid_utf8(request_id, true));
    return params;
  }
  static void log_committed_after_all() {
    logger()->info(
        "postgres telemetry store: a batch whose commit was cut off by a lost connection was "
        "committed after all");
  }

  /// After a connection that broke while a batch's commit was in flight: reconnects
  /// (every 200 ms, within `commit_check_timeout`) and looks for the batch's last row.
  /// True when it is there; false when it is not or the server stays unreachable.
  asio::awaitable<bool> committed_after_all(const std::string& last_request_id) {
    const auto deadline = std::chrono::steady_clock::now() + options_.commit_check_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      std::optional<bool> found;
      try {
        co_await open();
        std::size_t tuples = 0;
        co_await query(find_row_sql(), find_row_params(last_request_id), true, &tuples);
        found = tuples > 0;
      } catch (const boost::system::system_error& e) {
        if (e.code() == asio::error::operation_aborted) throw;
        drop();
      } catch (const std::exception&) {
        drop();
      }
      if (found) {
        if (*found) log_committed_after_all();
        co_return *found;
      }
      pause_.expires_after(std::chrono::milliseconds(200));
      co_await pause_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    co_return false;
  }

  static asio::awaitable<void> close_op(std::shared_ptr<Session> self) {
    self->drop();
    co_return;
  }

  [[nodiscard]] bool connected() const noexcept { return connected_.load(); }
  [[nodiscard]] std::uint64_t rows_written() const noexcept { return rows_written_.load(); }
  [[nodiscard]] std::uint64_t batches_resolved() const noexcept { return resolved_.load(); }

 private:
  /// True if the connection looks usable. Reading what arrived while idle (libpq's socket
  /// is non-blocking) notices a server that closed the connection meanwhile, so a batch
  /// after a server restart goes to a fresh connection instead of failing.
  [[nodiscard]] bool healthy() const {
    return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK && PQconsumeInput(conn_) != 0 &&
           PQstatus(conn_) == CONNECTION_OK;
  }

  [[noreturn]] void fail(const std::string& what) const {
    std::string msg = std::string(error_prefix) + what;
    if (conn_ != nullptr) {
      const std::string pq = trimmed(PQerrorMessage(conn_));
      if (!pq.empty()) msg += ": " + pq;
    }
    throw Error(msg, 503);
  }

  void arm(std::chrono::milliseconds d, const char* what) {
    timed_out_ = false;
    timeout_what_ = what;
    timeout_length_ = d;
    const std::uint64_t gen = ++guard_gen_;
    if (d.count() <= 0) return;
    deadline_.expires_after(d);
    deadline_.async_wait([weak = weak_from_this(), gen](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!self || ec || gen != self->guard_gen_) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.cancel(ignored);
      self->resolver_.cancel();
    });
  }

  void disarm() {
    ++guard_gen_;
    deadline_.cancel();
  }

  [[noreturn]] void throw_timeout() const {
    throw Error(std::string(error_prefix) + timeout_what_ + " timed out after " +
                    std::to_string(timeout_length_.count()) + " ms",
                503);
  }

  asio::awaitable<void> wait(asio::posix::descriptor_base::wait_type w) {
    if (timed_out_) throw_timeout();
    auto [ec] = co_await socket_.async_wait(w, asio::as_tuple(asio::use_awaitable));
    if (timed_out_) throw_timeout();
    if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
    if (ec) fail("socket wait: " + ec.message());
  }

  void attach_socket() {
    boost::system::error_code ignored;
    if (socket_.is_open()) (void)socket_.release();
    const int fd = PQsocket(conn_);
    if (fd < 0) fail("connection has no socket");
    socket_.assign(fd, ignored);
    if (ignored) fail("cannot watch the socket: " + ignored.message());
  }

  void drop() {
    disarm();
    if (socket_.is_open()) (void)socket_.release();  // libpq owns the descriptor
    if (conn_ != nullptr) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    connected_ = false;
  }

  asio::awaitable<void> open() {
    drop();
    arm(options_.connect_timeout, "connect");

    char* parse_error = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(options_.conninfo.c_str(), &parse_error);
    if (parsed == nullptr) {
      const std::string why = parse_error != nullptr ? trimmed(parse_error) : "out of memory";
      if (parse_error != nullptr) PQfreemem(parse_error);
      throw ConfigError(std::string(error_prefix) + "invalid conninfo: " + why);
    }
    std::vector<std::string> keys;
    std::vector<std::string> values;
    for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
      if (o->val != nullptr && o->val[0] != '\0') {
        keys.emplace_back(o->keyword);
        values.emplace_back(o->val);
      }
    }
    PQconninfoFree(parsed);
    auto find = [&](std::string_view k) -> std::ptrdiff_t {
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (keys[i] == k) return static_cast<std::ptrdiff_t>(i);
      }
      return -1;
    };

    // Resolve a host name here, asynchronously, so libpq never calls getaddrinfo.
    const std::ptrdiff_t host_at = find("host");
    if (host_at >= 0 && find("hostaddr") < 0) {
      const std::string host = values[static_cast<std::size_t>(host_at)];
      boost::system::error_code not_ip;
      (void)asio::ip::make_address(host, not_ip);
      if (not_ip && !host.empty() && host[0] != '/' && host.find(',') == std::string::npos) {
        auto [ec, results] = co_await resolver_.async_resolve(host, std::string(),
                                                              asio::as_tuple(asio::use_awaitable));
        if (timed_out_) throw_timeout();
        if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
        if (ec || results.empty()) fail("cannot resolve '" + host + "': " + ec.message());
        keys.emplace_back("hostaddr");
        values.push_back(results.begin()->endpoint().address().to_string());
      }
    }
    if (find("fallback_application_name") < 0) {
      keys.emplace_back("fallback_application_name");
      values.emplace_back("llmq");
    }
    std::vector<const char*> k;
    std::vector<const char*> v;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      k.push_back(keys[i].c_str());
      v.push_back(values[i].c_str());
    }
    k.push_back(nullptr);
    v.push_back(nullptr);

    conn_ = PQconnectStartParams(k.data(), v.data(), 0);
    if (conn_ == nullptr) throw std::bad_alloc();
    if (PQstatus(conn_) == CONNECTION_BAD) fail("connect");
    PostgresPollingStatusType status = PGRES_POLLING_WRITING;
    while (status != PGRES_POLLING_OK) {
      if (status == PGRES_POLLING_FAILED) fail("connect");
      attach_socket();  // libpq may switch sockets while it tries addresses
      co_await wait(status == PGRES_POLLING_READING ? asio::posix::descriptor_base::wait_read
                                                    : asio::posix::descriptor_base::wait_write);
      status = PQconnectPoll(conn_);
    }
    attach_socket();
    if (PQsetnonblocking(conn_, 1) != 0) fail("cannot make the connection non-blocking");
    PQsetNoticeProcessor(conn_, &log_notice, nullptr);  // not libpq's stderr printer
    if (options_.statement_timeout.count() > 0) {
      co_await query(
          "SET statement_timeout = " + std::to_string(options_.statement_timeout.count()), {},
          false);
    }
    if (options_.create_table) {
      co_await query(create_table_sql(table_), {}, false);
      co_await query(upgrade_table_sql(table_), {}, false);
    }
    disarm();
    connected_ = true;
  }

  /// Sends one statement and reads all its results. `guard`: bound it by
  /// statement_timeout + 1 s (false while the connect deadline is armed).
  asio::awaitable<void> query(const std::string& sql, const std::vector<Param>& params, bool guard,
                              std::size_t* tuples = nullptr) {
    if (guard && options_.statement_timeout.count() > 0)
      arm(options_.statement_timeout + std::chrono::seconds(1), "statement");
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const Param& p : params) values.push_back(p ? p->c_str() : nullptr);
    if (PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                          values.empty() ? nullptr : values.data(), nullptr, nullptr, 0) == 0)
      fail("send");
    for (;;) {
      const int flushed = PQflush(conn_);
      if (flushed == 0) break;
      if (flushed < 0) fail("send");
      co_await wait(asio::posix::descriptor_base::wait_write);
    }
    std::string error;
    for (;;) {
      if (PQconsumeInput(conn_) == 0) fail("receive");
      bool finished = false;
      while (PQisBusy(conn_) == 0) {
        PGresult* r = PQgetResult(conn_);
        if (r == nullptr) {
          finished = true;
          break;
        }
        const ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error.empty())
          error = trimmed(PQresultErrorMessage(r));
        if (st == PGRES_TUPLES_OK && tuples != nullptr)
          *tuples += static_cast<std::size_t>(PQntuples(r));
        PQclear(r);
      }
      if (finished) break;
      co_await wait(asio::posix::descriptor_base::wait_read);
    }
    if (guard) disarm();
    if (!error.empty()) throw Error(std::string(error_prefix) + error, 503);
  }

  asio::awaitable<void> insert_rows(std::span<const TelemetryData> batch) {
    if (batch.empty()) co_return;
    const std::size_t per = options_.rows_per_statement;
    const bool several = batch.size() > per;
    if (several) co_await query("BEGIN", {}, true);
    for (std::size_t start = 0; start < batch.size(); start += per) {
      // Without BEGIN the last (only) INSERT commits the batch by itself.
      if (!several) final_sent_ = true;
      const std::size_t n = std::min(per, batch.size() - start);
      std::vector<Param> params;
      params.reserve(n * column_count);
      for (std::size_t i = start; i < start + n; ++i) append_row(params, batch[i]);
      if (n != cached_rows_) {
        cached_sql_ = insert_sql(table_, n);
        cached_rows_ = n;
      }
      co_await query(cached_sql_, params, true);
    }
    if (several) {
      final_sent_ = true;
      co_await query("COMMIT", {}, true);
    }
    rows_written_ += batch.size();
  }

  strand_type strand_;
  PostgresTelemetryOptions options_;
  std::string table_;  // quoted
  asio::posix::stream_descriptor socket_;
  asio::ip::tcp::resolver resolver_;
  asio::steady_timer deadline_;
  asio::steady_timer pause_;  // between the reconnects of committed_after_all
  PGconn* conn_ = nullptr;
  std::uint64_t guard_gen_ = 0;
  bool timed_out_ = false;
  const char* timeout_what_ = "";
  std::chrono::milliseconds timeout_length_{0};
  std::string cached_sql_;
  std::size_t cached_rows_ = 0;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> rows_written_{0};
  std::atomic<std::uint64_t> resolved_{0};
  bool final_sent_ = false;  // this batch's committing statement went out
};

PostgresTelemetryStore::PostgresTelemetryStore(asio::any_io_executor ex,
                                               PostgresTelemetryOptions options)
    : session_(std::make_shared<Session>(ex, std::move(options))) {}

PostgresTelemetryStore::~PostgresTelemetryStore() = default;

asio::awaitable<void> PostgresTelemetryStore::connect() {
  std::shared_ptr<Session> s = session_;
  co_await asio::co_spawn(s->strand(), Session::connect_op(s), asio::use_awaitable);
}

asio::awaitable<void> PostgresTelemetryStore::insert_batch(std::span<TelemetryData> batch) {
  std::shared_ptr<Session> s = session_;
  co_await asio::co_spawn(s->strand(), Session::insert_op(s, batch), asio::use_awaitable);
}

asio::awaitable<void> PostgresTelemetryStore::close() {
  std::shared_ptr<Session> s = session_;
  co_await asio::co_spawn(s->strand(), Session::close_op(s), asio::use_awaitable);
}

bool PostgresTelemetryStore::is_connected() const noexcept { return session_->connected(); }

std::uint64_t PostgresTelemetryStore::rows_written() const noexcept {
  return session_->rows_written();
}

std::uint64_t PostgresTelemetryStore::batches_committed_despite_errors() const noexcept {
  return session_->batches_resolved();
}

}  // namespace llmq
