// The access log's join of the gateway's half and the queue's half of a request, its
// bounds and its line format.
#include <access_log.hpp>

#include <llmq/errors.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using llmq::gateway::AccessLog;
using llmq::gateway::AccessLogOptions;
using llmq::gateway::AccessRecord;
using nlohmann::json;

namespace {

class AccessLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("llmq-access-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log");
    std::filesystem::remove(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }

  std::unique_ptr<AccessLog> open(std::size_t max_pending = 100) {
    AccessLogOptions o;
    o.path = path_.string();
    o.join_wait = 5s;
    o.max_pending = max_pending;
    return std::make_unique<AccessLog>(o);
  }

  std::vector<json> lines() const {
    std::vector<json> out;
    std::ifstream in(path_);
    for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
    return out;
  }

  static AccessRecord answer(const std::string& id, bool queued = true) {
    AccessRecord r;
    r.time = llmq::WallTime(1'764'670'272'123'456us);  // 2025-12-02T10:11:12.123456Z
    r.request_id = id;
    r.method = "POST";
    r.route = "/v1/chat/completions";
    r.user = "alice";
    r.model = "gpt-4o";
    r.status = 200;
    r.bytes_in = 120;
    r.bytes_out = 480;
    r.duration = 2500us;
    r.queued = queued;
    return r;
  }

  static llmq::TelemetryData record(const std::string& id) {
    llmq::TelemetryData t;
    t.request_id = id;
    t.llm_deployment = "gpt-4o-east";
    t.queue_wait = 1500us;
    t.execution_time = 42'000us;
    t.attempts = 2;
    t.prompt_tokens = 11;
    t.completion_tokens = 7;
    return t;
  }

  std::filesystem::path path_;
  const std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::time_point{} + 1h;
};

TEST_F(AccessLogTest, JoinsTheAnswerAndTheQueueRecordWhicheverComesFirst) {
  {
    auto log = open();
    log->answered(answer("a"), t0_);
    log->recorded(record("a"), t0_ + 10ms);
    log->recorded(record("b"), t0_ + 20ms);  // the record first
    log->answered(answer("b"), t0_ + 30ms);
    log->flush(t0_ + 40ms);
    EXPECT_EQ(log->counters().lines, 2u);
    EXPECT_EQ(log->counters().unjoined, 0u);
  }
  const auto l = lines();
  ASSERT_EQ(l.size(), 2u);
  for (const json& j : l) {
    EXPECT_EQ(j["time"], "2025-12-02T10:11:12.123456Z");
    EXPECT_EQ(j["method"], "POST");
    EXPECT_EQ(j["route"], "/v1/chat/completions");
    EXPECT_EQ(j["user"], "alice");
    EXPECT_EQ(j["model"], "gpt-4o");
    EXPECT_EQ(j["deployment"], "gpt-4o-east");
    EXPECT_EQ(j["status"], 200);
    EXPECT_DOUBLE_EQ(j["queue_wait_ms"].get<double>(), 1.5);
    EXPECT_DOUBLE_EQ(j["upstream_ms"].get<double>(), 42.0);
    EXPECT_EQ(j["attempts"], 2);
    EXPECT_EQ(j["prompt_tokens"], 11);
    EXPECT_EQ(j["completion_tokens"], 7);
    EXPECT_EQ(j["total_tokens"], 18);
    EXPECT_EQ(j["bytes_in"], 120);
    EXPECT_EQ(j["bytes_out"], 480);
    EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 2.5);
  }
  EXPECT_EQ(l[0]["request_id"], "a");
  EXPECT_EQ(l[1]["request_id"], "b");
}

TEST_F(AccessLogTest, AnAnswerTheGatewayGaveItselfIsWrittenAtOnceWithoutQueueFields) {
  auto log = open();
  AccessRecord r = answer("x", /*queued=*/false);
  r.status = 401;
  r.user.clear();
  log->answered(r, t0_);
  log->flush(t0_);
  const auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["status"], 401);
  EXPECT_TRUE(l[0]["user"].is_null());
  EXPECT_TRUE(l[0]["deployment"].is_null());
  EXPECT_TRUE(l[0]["queue_wait_ms"].is_null());
  EXPECT_TRUE(l[0]["total_tokens"].is_null());
}

TEST_F(AccessLogTest, AnAnswerWhoseRecordNeverComesIsWrittenAfterTheJoinWait) {
  auto log = open();
  log->answered(answer("late"), t0_);
  log->flush(t0_ + 4s);
  EXPECT_TRUE(lines().empty());
  log->flush(t0_ + 5s);
  const auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["request_id"], "late");
  EXPECT_TRUE(l[0]["deployment"].is_null());
  EXPECT_EQ(log->counters().unjoined, 1u);
  // A record for nobody is dropped after the wait, not written.
  log->recorded(record("nobody"), t0_ + 6s);
  log->flush(t0_ + 12s);
  EXPECT_EQ(lines().size(), 1u);
  EXPECT_EQ(log->counters().orphans, 1u);
}

TEST_F(AccessLogTest, PendingHalvesAreBounded) {
  auto log = open(/*max_pending=*/3);
  for (int i = 0; i < 10; ++i) log->answered(answer("id" + std::to_string(i)), t0_);
  log->flush(t0_);
  // Beyond three waiting, the oldest are written at once without their queue half.
  EXPECT_EQ(lines().size(), 7u);
  EXPECT_EQ(log->counters().unjoined, 7u);
  log->recorded(record("id9"), t0_);
  log->flush(t0_);
  const auto l = lines();
  ASSERT_EQ(l.size(), 8u);
  EXPECT_EQ(l.back()["request_id"], "id9");
  EXPECT_EQ(l.back()["deployment"], "gpt-4o-east");
}

TEST_F(AccessLogTest, TwoRequestsWithTheSameClientIdEachGetALine) {
  auto log = open();
  log->answered(answer("dup"), t0_);
  log->answered(answer("dup"), t0_);
  log->recorded(record("dup"), t0_);
  log->recorded(record("dup"), t0_);
  log->flush(t0_);
  EXPECT_EQ(lines().size(), 2u);
  EXPECT_EQ(log->counters().unjoined, 0u);
}

TEST_F(AccessLogTest, BytesThatAreNotUtf8AreReplacedNotCopied) {
  auto log = open();
  AccessRecord r = answer("u", false);
  r.model = std::string("bad\xff\xfe", 5);
  log->answered(r, t0_);
  log->flush(t0_);
  const auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["model"].get<std::string>().substr(0, 3), "bad");
}

TEST_F(AccessLogTest, ReopenStartsANewFileAfterARotation) {
  auto log = open();
  log->answered(answer("before", false), t0_);
  log->flush(t0_);
  const auto rotated = path_.string() + ".1";
  std::filesystem::rename(path_, rotated);
  log->reopen();
  log->answered(answer("after", false), t0_);
  log->flush(t0_);
  const auto l = lines();
  ASSERT_EQ(l.size(), 1u);
  EXPECT_EQ(l[0]["request_id"], "after");
  std::filesystem::remove(rotated);
}

TEST(AccessLogOpen, AnUnwritablePathIsAConfigErrorNamingIt) {
  AccessLogOptions o;
  o.path = "/nonexistent-dir/llmq/access.log";
  try {
    AccessLog log(o);
    FAIL() << "opened";
  } catch (const llmq::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.access_log"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/llmq/access.log"), std::string::npos);
  }
}

}  // namespace
