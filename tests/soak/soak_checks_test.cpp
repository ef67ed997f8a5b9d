// The fault soak's bookkeeping and checks (soak_checks.hpp), without processes.
#include "soak_checks.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace {

using llmq::soak::Fate;
using llmq::soak::Verdict;

std::string chat(const std::string& content) {
  return R"({"choices":[{"index":0,"message":{"role":"assistant","content":")" + content +
         R"("}}],"usage":{"prompt_tokens":3}})";
}

bool has(const std::vector<std::string>& v, const std::string& part) {
  return std::any_of(v.begin(), v.end(),
                     [&](const std::string& s) { return s.find(part) != std::string::npos; });
}

TEST(SoakChecks, PromptFitsTheMockEcho) {
  const std::string p = llmq::soak::prompt_of("abcdefgh", 18446744073709551615ULL);
  EXPECT_LE(p.size(), 40U);  // the mock echoes the first 40 characters
  EXPECT_EQ(llmq::soak::prompt_of("s", 7), "soak s:7");
}

TEST(SoakChecks, ClassifiesAnswers) {
  using K = Verdict::Kind;
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 200, false, chat("Echo: soak s:7")).kind, K::ok);
  const Verdict crossed = llmq::soak::classify_answer("s", 7, 200, false, chat("Echo: soak s:12"));
  EXPECT_EQ(crossed.kind, K::crossed);
  EXPECT_EQ(crossed.other, 12U);
  // Another run's answer, a cut echo, invalid JSON: bad, not crossed.
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 200, false, chat("Echo: soak t:7")).kind, K::bad);
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 200, false, chat("Echo: soak s:")).kind, K::bad);
  EXPECT_EQ(llmq::soak::classify_answer("s", 70, 200, false, chat("Echo: soak s:7")).kind,
            K::crossed);
  const Verdict cut = llmq::soak::classify_answer("s", 7, 200, false, R"({"choices":[{"mess)");
  EXPECT_EQ(cut.kind, K::bad);
  EXPECT_NE(cut.problem.find("not a JSON object"), std::string::npos);

  const Verdict err = llmq::soak::classify_answer(
      "s", 7, 502, false, R"({"error":{"message":"m","type":"upstream_error","code":"x"}})");
  EXPECT_EQ(err.kind, K::error);
  EXPECT_EQ(err.code, "x");
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 429, false, R"({"error":{"code":"429"}})").kind,
            K::bad);  // no Retry-After
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 429, true, R"({"error":{"code":"429"}})").code,
            "429");
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 400, false, R"({"error":{}})").kind, K::bad);
  EXPECT_EQ(llmq::soak::classify_answer("s", 7, 500, false, "Internal Server Error").kind, K::bad);
}

TEST(SoakChecks, LedgerTalliesFromTheEntries) {
  llmq::soak::Ledger l;
  for (int i = 0; i < 6; ++i) (void)l.open();
  Verdict ok;
  ok.kind = Verdict::Kind::ok;
  Verdict err;
  err.kind = Verdict::Kind::error;
  err.code = "queue_timeout";
  l.finish(0, Fate::answered, 0.5, 200, &ok);
  l.finish(1, Fate::answered, 2.0, 504, &err);
  l.finish(2, Fate::abandoned);
  l.finish(3, Fate::partial);
  l.finish(4, Fate::timed_out, 30);
  l.finish(0, Fate::no_answer);  // a second end of request 0
  const llmq::soak::Tally t = llmq::soak::tally(l, 1.0);
  EXPECT_EQ(t.requests, 6U);
  EXPECT_EQ(t.multiple_ends, 1U);
  EXPECT_EQ(t.fate(Fate::answered), 2U);  // the first end of request 0 stands
  EXPECT_EQ(t.fate(Fate::pending), 1U);
  EXPECT_EQ(t.sent_whole(), 4U);  // answered 2, abandoned, timed out
  EXPECT_EQ(t.statuses.at(200), 1U);
  EXPECT_EQ(t.codes.at("queue_timeout"), 1U);
  EXPECT_EQ(t.over_bound, 1U);
  ASSERT_EQ(t.latency_quantiles.size(), 4U);
  EXPECT_FLOAT_EQ(static_cast<float>(t.latency_quantiles.back()), 2.0F);
  const auto v = llmq::soak::check(t, llmq::soak::Observed{});
  EXPECT_TRUE(has(v, "1 requests ended more than once"));
  EXPECT_TRUE(has(v, "1 requests never ended"));
  EXPECT_TRUE(has(v, "later than the bound"));
  EXPECT_TRUE(has(v, "within the client's limit"));
}

TEST(SoakChecks, ParsesPrometheusText) {
  const auto m = llmq::soak::Metrics::parse(
      "# HELP llmq_in_flight x\n# TYPE llmq_in_flight gauge\nllmq_in_flight 3\n\n"
      "llmq_gateway_http_responses_total{status=\"200\"} 10\r\n"
      "llmq_gateway_http_responses_total{status=\"502\"} 2\n"
      "llmq_x_bucket{le=\"+Inf\"} +Inf\nbroken\nllmq_y abc\n");
  EXPECT_EQ(m.value("llmq_in_flight"), 3);
  EXPECT_EQ(m.value("llmq_gateway_http_responses_total", "status=\"502\""), 2);
  EXPECT_FALSE(m.get("llmq_absent").has_value());
  const auto family = m.family("llmq_gateway_http_responses_total");
  ASSERT_EQ(family.size(), 2U);
  EXPECT_EQ(family.at("status=\"200\""), 10);
  EXPECT_EQ(m.unparsed, 2U);
}

TEST(SoakChecks, FlatnessComparesTheQuarters) {
  std::vector<llmq::soak::ResourceSample> flat;
  std::vector<llmq::soak::ResourceSample> growing;
  for (int i = 0; i < 100; ++i) {
    flat.push_back({static_cast<double>(i), 50'000.0 + (i % 3) * 100, 100.0 + i % 5});
    growing.push_back({static_cast<double>(i), 50'000.0 + i * 600.0, 100.0 + i});
  }
  const auto f = llmq::soak::flatness(flat, 100);
  EXPECT_TRUE(f.rss_flat);
  EXPECT_TRUE(f.fds_flat);
  EXPECT_EQ(f.q1_samples, 25U);
  EXPECT_EQ(f.q4_samples, 25U);
  const auto g = llmq::soak::flatness(growing, 100);
  EXPECT_FALSE(g.rss_flat);  // +45 MiB
  EXPECT_FALSE(g.fds_flat);  // +75
  EXPECT_FALSE(llmq::soak::flatness({}, 100).rss_flat);
}

/// A run whose counts all agree: 8 answered (6 x 200, 1 x 502, 1 user-limit 429), 1
/// abandoned, 1 half-sent.
struct Consistent {
  llmq::soak::Ledger ledger;
  llmq::soak::Observed observed;

  Consistent() {
    Verdict ok;
    ok.kind = Verdict::Kind::ok;
    Verdict bad_gateway;
    bad_gateway.kind = Verdict::Kind::error;
    Verdict user_limit;
    user_limit.kind = Verdict::Kind::error;
    user_limit.code = "user_rate_limit_exceeded";
    for (int i = 0; i < 10; ++i) (void)ledger.open();
    for (int i = 0; i < 6; ++i) ledger.finish(i, Fate::answered, 0.1, 200, &ok);
    ledger.finish(6, Fate::answered, 0.1, 502, &bad_gateway);
    ledger.finish(7, Fate::answered, 0.1, 429, &user_limit);
    ledger.finish(8, Fate::abandoned);
    ledger.finish(9, Fate::partial);
    set_metrics(7, 0);
    observed.own_http[200] = 3;  // the driver's own GETs
    observed.pg_rows = 9;
    observed.pg_rows_200 = 7;  // the abandoned request was answered 200 too
    observed.idle = true;
    for (int i = 0; i < 40; ++i) samples.push_back({static_cast<double>(i), 40'000, 80});
    observed.flatness = llmq::soak::flatness(samples, 40);
  }

  void set_metrics(int ok_answers, int lost) {
    observed.metrics = llmq::soak::Metrics::parse(
        "llmq_gateway_http_responses_total{status=\"200\"} " + std::to_string(ok_answers + 3) +
        "\nllmq_gateway_http_responses_total{status=\"502\"} 1\n"
        "llmq_gateway_http_responses_total{status=\"429\"} 1\n"
        "llmq_gateway_http_responses_total{status=\"400\"} 1\n"
        "llmq_admitted_total 8\nllmq_completed_total 8\n"
        "llmq_rejected_total{reason=\"user_limit\"} 1\n"
        "llmq_rejected_total{reason=\"queue_timeout\"} 0\n"
        "llmq_gateway_rejected_total{reason=\"user_limit\"} 1\n"
        "llmq_telemetry_dropped_total " +
        std::to_string(lost) + "\nllmq_queue_depth 0\nllmq_in_flight 0\n");
  }

  std::vector<std::string> violations() const {
    return llmq::soak::check(llmq::soak::tally(ledger, 10), observed);
  }

  std::vector<llmq::soak::ResourceSample> samples;
};

TEST(SoakChecks, AConsistentRunPasses) {
  Consistent c;
  const auto v = c.violations();
  EXPECT_TRUE(v.empty()) << v.front();
}

TEST(SoakChecks, EachDisagreementIsAViolation) {
  {
    Consistent c;  // the gateway lost an answer a client got
    c.set_metrics(5, 0);
    EXPECT_TRUE(has(c.violations(), "answers with status 200, the clients got 6"));
  }
  {
    Consistent c;  // more answers than whole requests
    c.set_metrics(9, 0);
    EXPECT_TRUE(has(c.violations(), "only 9 requests were sent whole"));
  }
  {
    Consistent c;  // a row missing without a counted loss
    c.observed.pg_rows = 8;
    EXPECT_TRUE(has(c.violations(), "PostgreSQL holds 8 rows"));
  }
  {
    Consistent c;  // ... but a counted loss explains it
    c.observed.pg_rows = 8;
    c.observed.pg_rows_200 = 6;
    c.set_metrics(7, 1);
    EXPECT_TRUE(c.violations().empty()) << c.violations().front();
  }
  {
    Consistent c;
    c.observed.pg_rows.reset();
    EXPECT_TRUE(has(c.violations(), "could not be counted"));
  }
  {
    Consistent c;
    c.observed.idle = false;
    EXPECT_TRUE(has(c.violations(), "not idle"));
  }
  {
    Consistent c;  // RSS doubled in the last quarter
    for (auto& s : c.samples)
      if (s.t_s >= 30) s.rss_kib *= 2;
    c.observed.flatness = llmq::soak::flatness(c.samples, 40);
    EXPECT_TRUE(has(c.violations(), "RSS grew"));
  }
  {
    Consistent c;  // a crossed answer
    Verdict crossed;
    crossed.kind = Verdict::Kind::crossed;
    crossed.other = 3;
    const auto n = c.ledger.open();
    c.ledger.finish(n, Fate::answered, 0.1, 200, &crossed);
    EXPECT_TRUE(has(c.violations(), "1 answers carried another request's echo"));
  }
  {
    Consistent c;  // the queue saw fewer requests than were waited for
    c.observed.metrics = llmq::soak::Metrics::parse(
        "llmq_gateway_http_responses_total{status=\"200\"} 10\n"
        "llmq_gateway_http_responses_total{status=\"502\"} 1\n"
        "llmq_gateway_http_responses_total{status=\"429\"} 1\n"
        "llmq_admitted_total 6\nllmq_completed_total 6\n"
        "llmq_rejected_total{reason=\"user_limit\"} 1\n"
        "llmq_gateway_rejected_total{reason=\"user_limit\"} 1\n");
    c.observed.pg_rows = 7;
    EXPECT_TRUE(has(c.violations(), "the queue saw 7 requests"));
  }
  for (const auto& [completed, bad] : {std::pair<int, bool>{8, false}, {7, false}, {6, true}}) {
    // One request cancelled (its client left): while queued it is not completed (7);
    // while running it is completed too (8); fewer than that is a loss.
    Consistent c;
    c.observed.metrics = llmq::soak::Metrics::parse(
        "llmq_gateway_http_responses_total{status=\"200\"} 10\n"
        "llmq_gateway_http_responses_total{status=\"502\"} 1\n"
        "llmq_gateway_http_responses_total{status=\"429\"} 1\n"
        "llmq_gateway_http_responses_total{status=\"400\"} 1\n"
        "llmq_admitted_total 8\nllmq_completed_total " +
        std::to_string(completed) +
        "\nllmq_rejected_total{reason=\"cancelled\"} 1\n"
        "llmq_rejected_total{reason=\"user_limit\"} 1\n"
        "llmq_gateway_rejected_total{reason=\"user_limit\"} 1\n"
        "llmq_queue_depth 0\nllmq_in_flight 0\n");
    EXPECT_EQ(has(c.violations(), "admitted 8 != completed + queue_timeout + cancelled"), bad)
        << completed;
  }
}

}  // namespace
