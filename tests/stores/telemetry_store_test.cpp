// The durable telemetry stores: JSON lines and SQLite in a temporary directory,
// PostgreSQL on loopback (skipped when not reachable), outages through a TCP proxy.

#include "store_test_support.hpp"

#include <llmq/errors.hpp>
#include <llmq/jsonl_telemetry_store.hpp>
#include <llmq/postgres_telemetry_store.hpp>
#include <llmq/sqlite_telemetry_store.hpp>

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <fstream>
#include <map>
#include <thread>

namespace llmq {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr std::int64_t base_us = 1'732'800'000'123'456LL;
const std::string odd_user(
    "us\xff"
    "er\0x",
    7);
// In SQL databases (no NUL, valid UTF-8) and in JSON (NUL allowed, escaped).
const std::string odd_user_clean =
    "us\xEF\xBF\xBD"
    "er\xEF\xBF\xBDx";
const std::string odd_user_json(
    "us\xEF\xBF\xBD"
    "er\0x",
    9);

bool rejected(int i) { return i % 10 == 9; }
/// req-2, req-7, req-12, ...: a streamed answer (never a rejection).
bool streamed(int i) { return i % 5 == 2; }
std::int64_t first_token_us(int i) { return 1500 + i; }
std::int64_t stream_us(int i) { return 30'000 + i; }

/// A record with every field set; every 7th has an invalid-UTF-8 user id, every 3rd a
/// payload (with a NUL in it), every 10th is a rejection (no queue/dispatch times), every
/// 5th (from req-2) a streamed answer.
TelemetryData record(int i) {
  TelemetryData t;
  t.request_id = "req-" + std::to_string(i);
  t.user_id = i % 7 == 0 ? odd_user : "user-" + std::to_string(i % 5);
  t.req_type = "chat";
  t.llm_deployment = rejected(i) ? "" : "gpt-4o-east";
  t.embedding_deployment = i % 2 == 1 ? "ada-west" : "";
  const WallTime base{std::chrono::microseconds(base_us + i)};
  t.received_at = base;
  if (!rejected(i)) {
    t.queued_at = base + 10us;
    t.dispatched_at = base + 1000us;
    t.queue_wait = 990us;
    t.execution_time = 249'000us;
  }
  t.completed_at = base + 250'000us;
  t.estimated_tokens = 100 + i;
  t.prompt_tokens = 80 + i;
  t.completion_tokens = 20;
  t.embedding_tokens = i % 2 == 1 ? 5 : 0;
  t.attempts = rejected(i) ? 0 : 1 + i % 3;
  for (int a = 0; a < t.attempts; ++a) {
    AttemptRecord r;
    r.llm_deployment = "gpt-4o-east";
    r.status = a + 1 == t.attempts ? 200 : 429;
    r.duration = std::chrono::microseconds(1000 * (a + 1));
    r.spilled = a == 0 && i % 4 == 1;  // req-21: its only attempt spilled over
    t.attempt_log.push_back(r);
  }
  if (streamed(i)) {
    t.streamed = true;
    t.time_to_first_token = std::chrono::microseconds(first_token_us(i));
    t.stream_duration = std::chrono::microseconds(stream_us(i));
  }
  t.status = rejected(i) ? 429 : 200;
  t.error = rejected(i) ? "rate limit exceeded for user" : "";
  if (i % 3 == 0) {
    nlohmann::json msg = nlohmann::json::object();
    msg["role"] = "user";
    msg["content"] = std::string("hi \0 there", 10);
    nlohmann::json body = nlohmann::json::object();
    body["messages"] = nlohmann::json::array({msg});
    t.payload = body;
  }
  return t;
}

std::vector<TelemetryData> records(int from, int to) {
  std::vector<TelemetryData> v;
  for (int i = from; i < to; ++i) v.push_back(record(i));
  return v;
}

/// insert_batch takes a span: a temporary batch lives to the end of the full expression
/// that runs the call, e.g. `test::run(pool, store.insert_batch(lvalue(records(0, 3))))`.
std::vector<TelemetryData>& lvalue(std::vector<TelemetryData>&& v) { return v; }

// --- JSON lines ------------------------------------------------------------------------

std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(JsonlTelemetryStore, AppendsOneParsableObjectPerRecord) {
  test::TempDir dir;
  const auto path = dir.path() / "telemetry.jsonl";
  asio::thread_pool pool(2);
  JsonlTelemetryOptions o;
  o.path = path;
  o.fsync = true;
  JsonlTelemetryStore store(pool.get_executor(), o);
  test::run(pool, store.connect());
  test::run(pool, store.insert_batch(lvalue(records(0, 3))));
  test::run(pool, store.insert_batch(lvalue(records(3, 10))));
  test::run(pool, store.close());
  test::run(pool, store.insert_batch(lvalue(records(10, 11))));  // reopens after close
  test::run(pool, store.close());
  EXPECT_EQ(store.rows_written(), 11U);

  const std::vector<std::string> lines = read_lines(path);
  ASSERT_EQ(lines.size(), 11U);
  for (int i = 0; i < 11; ++i) {
    const std::string& line = lines[static_cast<std::size_t>(i)];
    EXPECT_EQ(line.find("api_key"), std::string::npos);
    const nlohmann::json j = nlohmann::json::parse(line);  // throws if not JSON
    const TelemetryData t = record(i);
    EXPECT_EQ(j.at("request_id"), t.request_id);
    EXPECT_EQ(j.at("user_id"), i % 7 == 0 ? odd_user_json : t.user_id);
    EXPECT_EQ(j.at("received_at_us"), base_us + i);
    EXPECT_EQ(j.at("queued_at_us"), rejected(i) ? 0 : base_us + i + 10);
    EXPECT_EQ(j.at("execution_time_us"), t.execution_time.count());
    EXPECT_EQ(j.at("prompt_tokens"), t.prompt_tokens);
    EXPECT_EQ(j.at("status"), t.status);
    EXPECT_EQ(j.at("error"), t.error);
    EXPECT_EQ(j.at("attempt_log").size(), t.attempt_log.size());
    EXPECT_EQ(j.at("spillovers"), i % 4 == 1 && !t.attempt_log.empty() ? 1 : 0);
    EXPECT_EQ(j.at("streamed"), streamed(i));
    EXPECT_EQ(j.at("time_to_first_token_us"),
              streamed(i) ? nlohmann::json(first_token_us(i)) : nlohmann::json(nullptr));
    EXPECT_EQ(j.at("stream_duration_us"),
              streamed(i) ? nlohmann::json(stream_us(i)) : nlohmann::json(nullptr));
    if (!t.attempt_log.empty()) {
      EXPECT_EQ(j.at("attempt_log").at(0).at("spilled"), i % 4 == 1);
    }
    EXPECT_EQ(j.contains("payload"), t.payload.has_value());
    if (t.payload) {
      EXPECT_EQ(j.at("payload").at("messages").at(0).at("content"), std::string("hi \0 there", 10));
    }
  }
}

TEST(JsonlTelemetryStore, UnwritablePathThrows503) {
  asio::thread_pool pool(1);
  JsonlTelemetryOptions o;
  o.path = "/nonexistent-dir/telemetry.jsonl";
  JsonlTelemetryStore store(pool.get_executor(), o);
  try {
    test::run(pool, store.insert_batch(lvalue(records(0, 1))));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.http_status(), 503);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/telemetry.jsonl"), std::string::npos);
  }
}

// --- SQLite ----------------------------------------------------------------------------

struct SqliteDb {
  explicit SqliteDb(const std::filesystem::path& p, bool create = false) {
    const int flags = create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(p.c_str(), &db, flags, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + p.string());
  }
  ~SqliteDb() { sqlite3_close(db); }
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  /// Rows of `sql` as strings ("NULL" for NULL).
  std::vector<std::vector<std::string>> query(const std::string& sql) const {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db));
    std::vector<std::vector<std::string>> rows;
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int c = 0; c < sqlite3_column_count(st); ++c) {
        if (sqlite3_column_type(st, c) == SQLITE_NULL) {
          row.emplace_back("NULL");
        } else {
          const auto* text = sqlite3_column_text(st, c);
          row.emplace_back(reinterpret_cast<const char*>(text),
                           static_cast<std::size_t>(sqlite3_column_bytes(st, c)));
        }
      }
      rows.push_back(std::move(row));
    }
    sqlite3_finalize(st);
    return rows;
  }

  sqlite3* db = nullptr;
};

TEST(SqliteTelemetryStore, WritesRowsInWalMode) {
  test::TempDir dir;
  const auto path = dir.path() / "telemetry.sqlite3";
  asio::thread_pool pool(2);
  SqliteTelemetryOptions o;
  o.path = path;
  SqliteTelemetryStore store(pool.get_executor(), o);
  test::run(pool, store.connect());
  test::run(pool, store.insert_batch(lvalue(records(0, 100))));
  test::run(pool, store.insert_batch({}));
  test::run(pool, store.close());
  test::run(pool, store.insert_batch(lvalue(records(100, 110))));  // reopens after close
  test::run(pool, store.close());
  EXPECT_EQ(store.rows_written(), 110U);

  SqliteDb db(path);
  EXPECT_EQ(db.query("PRAGMA journal_mode").at(0).at(0), "wal");
  EXPECT_EQ(db.query("SELECT count(*) FROM llmq_telemetry").at(0).at(0), "110");
  const auto rows = db.query(
      "SELECT request_id, user_id, received_at, queued_at, completed_at, execution_time_us, "
      "attempts, status, error, payload, attempt_log, embedding_deployment, spillovers, "
      "streamed, time_to_first_token_us, stream_duration_us "
      "FROM llmq_telemetry WHERE request_id IN ('req-7', 'req-9', 'req-21') ORDER BY id");
  ASSERT_EQ(rows.size(), 3U);
  // req-7: odd user id, made valid UTF-8
  EXPECT_EQ(rows[0][0], "req-7");
  EXPECT_EQ(rows[0][1], odd_user_clean);
  EXPECT_EQ(rows[0][2], std::to_string(base_us + 7));
  EXPECT_EQ(rows[0][3], std::to_string(base_us + 7 + 10));
  EXPECT_EQ(rows[0][4], std::to_string(base_us + 7 + 250'000));
  EXPECT_EQ(rows[0][5], "249000");
  EXPECT_EQ(rows[0][6], "2");
  EXPECT_EQ(rows[0][9], "NULL");
  EXPECT_EQ(nlohmann::json::parse(rows[0][10]).size(), 2U);
  EXPECT_EQ(rows[0][11], "ada-west");
  // req-7 was streamed
  EXPECT_EQ(rows[0][13], "1");
  EXPECT_EQ(rows[0][14], "1507");
  EXPECT_EQ(rows[0][15], "30007");
  // req-9: a rejection: no queue time, status and error kept
  EXPECT_EQ(rows[1][3], "NULL");
  EXPECT_EQ(rows[1][7], "429");
  EXPECT_EQ(rows[1][8], "rate limit exceeded for user");
  EXPECT_EQ(rows[0][12], "0");
  // req-21: a payload, and its attempt spilled over
  EXPECT_EQ(nlohmann::json::parse(rows[2][9]).at("messages").at(0).at("role"), "user");
  EXPECT_EQ(rows[2][12], "1");
  EXPECT_EQ(nlohmann::json::parse(rows[2][10]).at(0).at("spilled"), true);
  // req-9 and req-21 were not streamed: no durations
  for (std::size_t r : {1U, 2U}) {
    EXPECT_EQ(rows[r][13], "0");
    EXPECT_EQ(rows[r][14], "NULL");
    EXPECT_EQ(rows[r][15], "NULL");
  }
}

/// The telemetry table as the first llmq versions created it (no spillovers column).
constexpr const char* first_version_sqlite_table =
    "CREATE TABLE llmq_telemetry (id INTEGER PRIMARY KEY, "
    "request_id TEXT NOT NULL, user_id TEXT NOT NULL, req_type TEXT NOT NULL, "
    "llm_deployment TEXT NOT NULL, embedding_deployment TEXT NOT NULL, "
    "received_at INTEGER, queued_at INTEGER, dispatched_at INTEGER, completed_at INTEGER, "
    "queue_wait_us INTEGER NOT NULL, execution_time_us INTEGER NOT NULL, "
    "estimated_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, "
    "completion_tokens INTEGER NOT NULL, embedding_tokens INTEGER NOT NULL, "
    "attempts INTEGER NOT NULL, status INTEGER NOT NULL, error TEXT NOT NULL, "
    "payload TEXT, attempt_log TEXT NOT NULL)";
/// The table as the version before the stream columns left it (spillovers added).
const std::string spillovers_version_sqlite_table =
    std::string(first_version_sqlite_table) +
    "; ALTER TABLE llmq_telemetry ADD COLUMN spillovers INTEGER NOT NULL DEFAULT 0";

/// Rows of an upgraded table: a row written before the upgrade reads the defaults.
const std::vector<std::vector<std::string>> upgraded_rows = {{"old-1", "0", "0", "NULL", "NULL"},
                                                             {"req-20", "0", "0", "NULL", "NULL"},
                                                             {"req-21", "1", "0", "NULL", "NULL"},
                                                             {"req-22", "0", "1", "1522", "30022"}};

TEST(SqliteTelemetryStore, UpgradesATableMadeByAnEarlierVersionInPlace) {
  for (const std::string& create :
       {std::string(first_version_sqlite_table), spillovers_version_sqlite_table}) {
    SCOPED_TRACE(create);
    test::TempDir dir;
    const auto path = dir.path() / "old.sqlite3";
    {
      SqliteDb old(path, true);
      if (sqlite3_exec(old.db, create.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
        FAIL() << sqlite3_errmsg(old.db);
      old.query(
          "INSERT INTO llmq_telemetry (request_id, user_id, req_type, llm_deployment, "
          "embedding_deployment, queue_wait_us, execution_time_us, estimated_tokens, "
          "prompt_tokens, completion_tokens, embedding_tokens, attempts, status, error, "
          "attempt_log) VALUES ('old-1', 'u', 'chat', 'd', '', 0, 0, 0, 0, 0, 0, 1, 200, '', "
          "'[]')");
    }
    asio::thread_pool pool(2);
    SqliteTelemetryOptions o;
    o.path = path;
    SqliteTelemetryStore store(pool.get_executor(), o);
    test::run(pool, store.insert_batch(lvalue(records(20, 22))));
    test::run(pool, store.close());
    // Opening again finds the columns and adds nothing.
    test::run(pool, store.insert_batch(lvalue(records(22, 23))));
    test::run(pool, store.close());

    SqliteDb db(path);
    EXPECT_EQ(db.query("SELECT request_id, spillovers, streamed, time_to_first_token_us, "
                       "stream_duration_us FROM llmq_telemetry ORDER BY id"),
              upgraded_rows);
    // name, type, NOT NULL, default of the added columns
    EXPECT_EQ(
        db.query("SELECT name, type, \"notnull\", dflt_value FROM "
                 "pragma_table_info('llmq_telemetry') WHERE cid >= 21 ORDER BY cid"),
        (std::vector<std::vector<std::string>>{{"spillovers", "INTEGER", "1", "0"},
                                               {"streamed", "INTEGER", "1", "0"},
                                               {"time_to_first_token_us", "INTEGER", "0", "NULL"},
                                               {"stream_duration_us", "INTEGER", "0", "NULL"}}));
  }
}

asio::awaitable<bool> insert_and_check_thread(SqliteTelemetryStore& store, std::thread::id caller) {
  std::vector<TelemetryData> batch = records(0, 5);
  co_await store.insert_batch(batch);
  co_return std::this_thread::get_id() == caller;
}

TEST(SqliteTelemetryStore, RunsOffTheCallerThreadAndResumesOnTheCallersExecutor) {
  test::TempDir dir;
  asio::io_context io;
  SqliteTelemetryOptions o;
  o.path = dir.path() / "t.sqlite3";
  SqliteTelemetryStore store(io.get_executor(), o);
  bool resumed_on_caller = false;
  asio::co_spawn(io, insert_and_check_thread(store, std::this_thread::get_id()),
                 [&](std::exception_ptr e, bool same) {
                   EXPECT_FALSE(e);
                   resumed_on_caller = same;
                 });
  io.run();  // returns once the insert is done: the store keeps io busy meanwhile
  EXPECT_TRUE(resumed_on_caller);
  EXPECT_EQ(store.rows_written(), 5U);
}

TEST(SqliteTelemetryStore, BadTableNameIsAConfigError) {
  asio::io_context io;
  SqliteTelemetryOptions o;
  o.table = "t; DROP TABLE x";
  EXPECT_THROW(SqliteTelemetryStore(io.get_executor(), o), ConfigError);
}

// --- PostgreSQL ------------------------------------------------------------------------

class PostgresTest : public test::PostgresFixture {
 protected:
  PostgresTest() : PostgresFixture("llmq_test_") {}

  asio::thread_pool pool_{2};
};

TEST_F(PostgresTest, CreatesTypedTableAndInsertsBatches) {
  PostgresTelemetryStore store(pool_.get_executor(), store_options());
  test::run(pool_, store.connect());
  EXPECT_TRUE(store.is_connected());
  test::run(pool_, store.insert_batch(lvalue(records(0, 2500))));  // 3 INSERTs, one transaction
  test::run(pool_, store.insert_batch(lvalue(records(2500, 2503))));
  test::run(pool_, store.insert_batch({}));
  EXPECT_EQ(store.rows_written(), 2503U);
  test::run(pool_, store.close());
  EXPECT_FALSE(store.is_connected());

  test::PgConnection pg(conninfo_);
  std::map<std::string, std::string> types;
  for (const auto& row : pg.query("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = '" +
                                  table_ + "'"))
    types[row[0]] = row[1];
  const std::map<std::string, std::string> expected = {
      {"id", "bigint"},
      {"request_id", "text"},
      {"user_id", "text"},
      {"req_type", "text"},
      {"llm_deployment", "text"},
      {"embedding_deployment", "text"},
      {"received_at", "timestamp with time zone"},
      {"queued_at", "timestamp with time zone"},
      {"dispatched_at", "timestamp with time zone"},
      {"completed_at", "timestamp with time zone"},
      {"queue_wait_us", "bigint"},
      {"execution_time_us", "bigint"},
      {"estimated_tokens", "bigint"},
      {"prompt_tokens", "bigint"},
      {"completion_tokens", "bigint"},
      {"embedding_tokens", "bigint"},
      {"attempts", "integer"},
      {"status", "integer"},
      {"error", "text"},
      {"payload", "jsonb"},
      {"attempt_log", "jsonb"},
      {"spillovers", "integer"},
      {"streamed", "boolean"},
      {"time_to_first_token_us", "bigint"},
      {"stream_duration_us", "bigint"}};
  EXPECT_EQ(types, expected);

  EXPECT_EQ(pg.query("SELECT count(*), count(DISTINCT request_id) FROM " + table_).at(0),
            (std::vector<std::string>{"2503", "2503"}));
  const auto rows = pg.query(
      "SELECT request_id, user_id, (extract(epoch FROM received_at) * 1000000)::bigint, "
      "queued_at IS NULL, (extract(epoch FROM completed_at) * 1000000)::bigint, "
      "execution_time_us, attempts, status, error, payload->'messages'->0->>'content', "
      "jsonb_array_length(attempt_log), attempt_log->0->>'status', prompt_tokens, spillovers, "
      "attempt_log->0->>'spilled', streamed, time_to_first_token_us, stream_duration_us FROM " +
      table_ + " WHERE request_id IN ('req-7', 'req-9', 'req-21') ORDER BY id");
  ASSERT_EQ(rows.size(), 3U);
  EXPECT_EQ(rows[0][0], "req-7");
  EXPECT_EQ(rows[0][1], odd_user_clean);
  EXPECT_EQ(rows[0][2], std::to_string(base_us + 7));  // exact microseconds
  EXPECT_EQ(rows[0][3], "f");
  EXPECT_EQ(rows[0][4], std::to_string(base_us + 7 + 250'000));
  EXPECT_EQ(rows[0][5], "249000");
  EXPECT_EQ(rows[0][6], "2");
  EXPECT_EQ(rows[0][9], "NULL");
  EXPECT_EQ(rows[0][10], "2");
  EXPECT_EQ(rows[0][11], "429");
  EXPECT_EQ(rows[0][12], "87");
  EXPECT_EQ(rows[1][3], "t");  // rejected: never queued
  EXPECT_EQ(rows[1][7], "429");
  EXPECT_EQ(rows[1][8], "rate limit exceeded for user");
  EXPECT_EQ(rows[1][10], "0");
  EXPECT_EQ(rows[2][9], "hi \xEF\xBF\xBD there");  // jsonb cannot hold NUL
  EXPECT_EQ(rows[0][13], "0");
  EXPECT_EQ(rows[0][14], "false");
  EXPECT_EQ(rows[2][13], "1");
  EXPECT_EQ(rows[2][14], "true");
  // req-7 was streamed; req-9 and req-21 were not: no durations
  EXPECT_EQ(rows[0][15], "t");
  EXPECT_EQ(rows[0][16], "1507");
  EXPECT_EQ(rows[0][17], "30007");
  for (std::size_t r : {1U, 2U}) {
    EXPECT_EQ(rows[r][15], "f");
    EXPECT_EQ(rows[r][16], "NULL");
    EXPECT_EQ(rows[r][17], "NULL");
  }
}

TEST_F(PostgresTest, UpgradesATableMadeByAnEarlierVersionInPlace) {
  // The first version's table, then the one before the stream columns (spillovers added).
  for (const bool with_spillovers : {false, true}) {
    SCOPED_TRACE(with_spillovers ? "spillovers version" : "first version");
    {
      test::PgConnection pg(conninfo_);
      pg.query("DROP TABLE IF EXISTS " + table_);
      pg.query("CREATE TABLE " + table_ +
               " (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
               "request_id text NOT NULL, user_id text NOT NULL, req_type text NOT NULL, "
               "llm_deployment text NOT NULL, embedding_deployment text NOT NULL, "
               "received_at timestamptz, queued_at timestamptz, dispatched_at timestamptz, "
               "completed_at timestamptz, queue_wait_us bigint NOT NULL, "
               "execution_time_us bigint NOT NULL, estimated_tokens bigint NOT NULL, "
               "prompt_tokens bigint NOT NULL, completion_tokens bigint NOT NULL, "
               "embedding_tokens bigint NOT NULL, attempts integer NOT NULL, "
               "status integer NOT NULL, error text NOT NULL, payload jsonb, "
               "attempt_log jsonb NOT NULL)");
      if (with_spillovers)
        pg.query("ALTER TABLE " + table_ + " ADD COLUMN spillovers integer NOT NULL DEFAULT 0");
      pg.query("INSERT INTO " + table_ +
               " (request_id, user_id, req_type, llm_deployment, embedding_deployment, "
               "queue_wait_us, execution_time_us, estimated_tokens, prompt_tokens, "
               "completion_tokens, embedding_tokens, attempts, status, error, attempt_log) "
               "VALUES ('old-1', 'u', 'chat', 'd', '', 0, 0, 0, 0, 0, 0, 1, 200, '', '[]')");
    }
    for (int round = 0; round < 2; ++round) {  // the second connect finds the columns
      PostgresTelemetryStore store(pool_.get_executor(), store_options());
      test::run(pool_, store.insert_batch(lvalue(records(20 + round * 2, 22 + round * 2))));
      test::run(pool_, store.close());
    }
    test::PgConnection pg(conninfo_);
    EXPECT_EQ(pg.query("SELECT request_id, spillovers, streamed, time_to_first_token_us, "
                       "stream_duration_us FROM " +
                       table_ + " ORDER BY id"),
              (std::vector<std::vector<std::string>>{{"old-1", "0", "f", "NULL", "NULL"},
                                                     {"req-20", "0", "f", "NULL", "NULL"},
                                                     {"req-21", "1", "f", "NULL", "NULL"},
                                                     {"req-22", "0", "t", "1522", "30022"},
                                                     {"req-23", "0", "f", "NULL", "NULL"}}));
    // type, NOT NULL and default of the added columns
    EXPECT_EQ(
        pg.query("SELECT column_name, data_type, is_nullable, column_default FROM "
                 "information_schema.columns WHERE table_name = '" +
                 table_ + "' AND ordinal_position > 21 ORDER BY ordinal_position"),
        (std::vector<std::vector<std::string>>{{"spillovers", "integer", "NO", "0"},
                                               {"streamed", "boolean", "NO", "false"},
                                               {"time_to_first_token_us", "bigint", "YES", "NULL"},
                                               {"stream_duration_us", "bigint", "YES", "NULL"}}));
  }
}

/// The http_status() of the llmq::Error `f` throws; 0 when it throws none.
template <class F>
int error_status(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.http_status();
  }
  return 0;
}

/// A store connected through `proxy`, statement timeouts short, and its first rows in.
PostgresTelemetryOptions proxied(const std::string& conninfo, const test::TcpProxy& proxy,
                                 PostgresTelemetryOptions o) {
  o.conninfo = conninfo + " host=127.0.0.1 port=" + std::to_string(proxy.port());
  o.connect_timeout = 1s;
  o.statement_timeout = 1s;
  return o;
}

TEST_F(PostgresTest, ABatchCommittedWhileTheConnectionBrokeCountsAsWrittenOnce) {
  const std::string port = test::pg_conninfo_value(conninfo_, "port");
  if (port.empty()) GTEST_SKIP() << "the proxy test needs a port in LLMQ_TEST_PG_CONNINFO";
  test::TcpProxy proxy(static_cast<std::uint16_t>(std::stoi(port)));
  PostgresTelemetryStore store(pool_.get_executor(), proxied(conninfo_, proxy, store_options()));
  test::run(pool_, store.connect());
  test::run(pool_, store.insert_batch(lvalue(records(0, 5))));
  // The server gets the INSERT (and commits it); its answer never arrives.
  proxy.drop_on_open_connections(false, true);
  test::run(pool_, store.insert_batch(lvalue(records(5, 10))), 15s);  // no error: it was written
  EXPECT_EQ(store.rows_written(), 10U);
  EXPECT_EQ(store.batches_committed_despite_errors(), 1U);
  test::run(pool_, store.close());
  test::PgConnection pg(conninfo_);
  EXPECT_EQ(pg.query("SELECT count(*) FROM " + table_).at(0).at(0), "10");
}

TEST_F(PostgresTest, ABatchTheServerNeverGotIsReportedLost) {
  const std::string port = test::pg_conninfo_value(conninfo_, "port");
  if (port.empty()) GTEST_SKIP() << "the proxy test needs a port in LLMQ_TEST_PG_CONNINFO";
  test::TcpProxy proxy(static_cast<std::uint16_t>(std::stoi(port)));
  PostgresTelemetryStore store(pool_.get_executor(), proxied(conninfo_, proxy, store_options()));
  test::run(pool_, store.connect());
  test::run(pool_, store.insert_batch(lvalue(records(0, 5))));
  proxy.drop_on_open_connections(true, false);  // the INSERT never reaches the server
  EXPECT_EQ(
      error_status([&] { test::run(pool_, store.insert_batch(lvalue(records(5, 10))), 15s); }),
      503);
  EXPECT_EQ(store.rows_written(), 5U);
  EXPECT_EQ(store.batches_committed_despite_errors(), 0U);
  test::PgConnection pg(conninfo_);
  EXPECT_EQ(pg.query("SELECT count(*) FROM " + table_).at(0).at(0), "5");
}

TEST_F(PostgresTest, ReconnectsAfterTheServerGoesAwayAndNothingHangs) {
  const std::string host = test::pg_conninfo_value(conninfo_, "host");
  const std::string port = test::pg_conninfo_value(conninfo_, "port");
  if ((host != "127.0.0.1" && host != "localhost") || port.empty())
    GTEST_SKIP() << "the proxy test needs host=127.0.0.1 and a port in LLMQ_TEST_PG_CONNINFO";
  test::TcpProxy proxy(static_cast<std::uint16_t>(std::stoi(port)));
  PostgresTelemetryOptions o = store_options();
  o.conninfo = conninfo_ + " host=127.0.0.1 port=" + std::to_string(proxy.port());
  o.connect_timeout = 1s;
  o.statement_timeout = 1s;
  PostgresTelemetryStore store(pool_.get_executor(), o);
  test::run(pool_, store.connect());
  test::run(pool_, store.insert_batch(lvalue(records(0, 5))));

  // A restart while idle: the next batch notices the closed connection and reconnects.
  proxy.stop();
  proxy.start();
  std::this_thread::sleep_for(50ms);
  test::run(pool_, store.insert_batch(lvalue(records(5, 10))));
  EXPECT_TRUE(store.is_connected());

  proxy.stop();  // the server "goes away": connection cut, port refuses
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto t0 = steady::now();
    bool threw = false;
    try {
      test::run(pool_, store.insert_batch(lvalue(records(100, 110))), 10s);
    } catch (const Error& e) {
      threw = true;
      EXPECT_EQ(e.http_status(), 503);
    }
    EXPECT_TRUE(threw) << "attempt " << attempt;
    EXPECT_LT(steady::now() - t0, 3s) << "attempt " << attempt;
    EXPECT_FALSE(store.is_connected());
  }

  proxy.start();  // back
  test::run(pool_, store.insert_batch(lvalue(records(10, 20))));
  EXPECT_TRUE(store.is_connected());
  EXPECT_EQ(store.rows_written(), 20U);
  test::run(pool_, store.close());
  EXPECT_EQ(test::PgConnection(conninfo_).query("SELECT count(*) FROM " + table_).at(0).at(0),
            "20");
}

TEST_F(PostgresTest, ServerThatNeverAnswersTimesOut) {
  test::TcpProxy black_hole(std::nullopt);
  PostgresTelemetryOptions o = store_options();
  o.conninfo = "host=127.0.0.1 port=" + std::to_string(black_hole.port()) +
               " user=postgres dbname=postgres sslmode=disable gssencmode=disable";
  o.connect_timeout = 500ms;
  PostgresTelemetryStore store(pool_.get_executor(), o);
  const auto t0 = steady::now();
  std::string message;
  try {
    test::run(pool_, store.connect(), 10s);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("timed out"), std::string::npos) << message;
  EXPECT_GE(steady::now() - t0, 450ms);
  EXPECT_LT(steady::now() - t0, 2s);
  EXPECT_FALSE(store.is_connected());
}

TEST(PostgresTelemetryStore, DeadPortFailsFastAndResolvesHostNamesAsynchronously) {
  asio::thread_pool pool(2);
  PostgresTelemetryOptions o;
  o.conninfo = "host=localhost port=" + std::to_string(test::free_port()) +
               " user=postgres dbname=postgres connect_timeout=30";
  o.connect_timeout = 2s;
  PostgresTelemetryStore store(pool.get_executor(), o);
  const auto t0 = steady::now();
  EXPECT_EQ(error_status([&] { test::run(pool, store.insert_batch(lvalue(records(0, 1))), 10s); }),
            503);
  EXPECT_LT(steady::now() - t0, 1500ms);
}

TEST(PostgresTelemetryStore, RejectsBadOptions) {
  asio::io_context io;
  PostgresTelemetryOptions o;
  o.table = "x y";
  EXPECT_THROW(PostgresTelemetryStore(io.get_executor(), o), ConfigError);
  o.table = "ok";
  o.rows_per_statement = 0;
  EXPECT_THROW(PostgresTelemetryStore(io.get_executor(), o), ConfigError);
  o.rows_per_statement = 10;
  o.conninfo = "this is = not valid '";
  PostgresTelemetryStore bad(io.get_executor(), o);
  bool threw = false;
  asio::co_spawn(io, bad.connect(), [&](std::exception_ptr e) {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const ConfigError&) {
      threw = true;
    } catch (...) {
    }
  });
  io.run();
  EXPECT_TRUE(threw);
}

}  // namespace
}  // namespace llmq
