#include "soak_checks.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace llmq::soak {
namespace {

using json = nlohmann::json;

std::string shown(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    out += u >= 0x20 && u < 0x7f ? c : '?';
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string fixed(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string count(double v) { return fixed(v, 0); }

/// Digits only, as an unsigned number.
std::optional<std::uint64_t> number_of(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  std::uint64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return n;
}

}  // namespace

std::string prompt_of(std::string_view salt, std::uint64_t n) {
  std::string p = "soak ";
  p += salt;
  p += ':';
  p += std::to_string(n);
  return p;
}

bool expected_error_status(int status) {
  return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

Verdict classify_answer(std::string_view salt, std::uint64_t n, int status, bool has_retry_after,
                        std::string_view body) {
  Verdict v;
  const json j = json::parse(body, nullptr, false);
  if (status == 200) {
    if (!j.is_object()) {
      v.problem = "200 whose body is not a JSON object: " + shown(body);
      return v;
    }
    const json* content = nullptr;
    if (auto c = j.find("choices"); c != j.end() && c->is_array() && !c->empty()) {
      const json& first = (*c)[0];
      if (first.is_object()) {
        if (auto m = first.find("message"); m != first.end() && m->is_object()) {
          if (auto t = m->find("content"); t != m->end() && t->is_string()) content = &*t;
        }
      }
    }
    if (content == nullptr) {
      v.problem = "200 without choices[0].message.content: " + shown(body);
      return v;
    }
    const std::string& text = content->get_ref<const std::string&>();
    if (text == "Echo: " + prompt_of(salt, n)) {
      v.kind = Verdict::Kind::ok;
      return v;
    }
    const std::string ours = "Echo: " + prompt_of(salt, 0);
    const std::string_view prefix(ours.data(), ours.size() - 1);  // without the number
    if (text.size() > prefix.size() && std::string_view(text).substr(0, prefix.size()) == prefix) {
      if (auto other = number_of(std::string_view(text).substr(prefix.size()))) {
        v.kind = Verdict::Kind::crossed;
        v.other = *other;
        return v;
      }
    }
    v.problem = "200 with another content: " + shown(text);
    return v;
  }
  if (!expected_error_status(status)) {
    v.problem = "unexpected status " + std::to_string(status) + ": " + shown(body);
    return v;
  }
  const json* error = nullptr;
  if (j.is_object()) {
    if (auto e = j.find("error"); e != j.end() && e->is_object()) error = &*e;
  }
  if (error == nullptr) {
    v.problem = std::to_string(status) + " without a JSON error body: " + shown(body);
    return v;
  }
  if ((status == 429 || status == 503) && !has_retry_after) {
    v.problem = std::to_string(status) + " without Retry-After";
    return v;
  }
  v.kind = Verdict::Kind::error;
  if (auto c = error->find("code"); c != error->end()) {
    if (c->is_string())
      v.code = c->get<std::string>();
    else if (c->is_number_integer())
      v.code = std::to_string(c->get<std::int64_t>());
  }
  return v;
}

std::string_view to_string(Fate f) {
  switch (f) {
    case Fate::pending:
      return "pending";
    case Fate::answered:
      return "answered";
    case Fate::abandoned:
      return "abandoned";
    case Fate::partial:
      return "partial";
    case Fate::no_answer:
      return "no_answer";
    case Fate::timed_out:
      return "timed_out";
  }
  return "?";
}

std::uint64_t Ledger::open() {
  entries_.emplace_back();
  return entries_.size() - 1;
}

std::uint8_t Ledger::code_index(const std::string& code) {
  constexpr std::size_t kOther = 255;  // every code past the first 254 shares this slot
  for (std::size_t i = 0; i < codes_.size() && i < kOther; ++i)
    if (codes_[i] == code) return static_cast<std::uint8_t>(i);
  if (codes_.size() < kOther) {
    codes_.push_back(code);
    return static_cast<std::uint8_t>(codes_.size() - 1);
  }
  if (codes_.size() == kOther) codes_.emplace_back("(other)");
  return static_cast<std::uint8_t>(kOther);
}

void Ledger::finish(std::uint64_t n, Fate fate, double latency_s, int status,
                    const Verdict* verdict) {
  Entry& e = entries_.at(n);
  if (e.ends < 255) ++e.ends;
  if (e.ends > 1) return;  // the first end stands; check() reports the second
  e.fate = fate;
  e.latency_s = static_cast<float>(latency_s);
  e.status = static_cast<std::uint16_t>(std::clamp(status, 0, 65535));
  if (verdict != nullptr) {
    e.kind = verdict->kind;
    e.code = code_index(verdict->code);
  }
}

std::uint64_t Tally::fate(Fate f) const {
  auto it = fates.find(f);
  return it == fates.end() ? 0 : it->second;
}

std::uint64_t Tally::sent_whole() const {
  return fate(Fate::answered) + fate(Fate::abandoned) + fate(Fate::no_answer) +
         fate(Fate::timed_out);
}

Tally tally(const Ledger& ledger, double bound_s) {
  Tally t;
  t.requests = ledger.size();
  std::vector<float> latencies;
  for (std::uint64_t n = 0; n < ledger.size(); ++n) {
    const Entry& e = ledger.at(n);
    ++t.fates[e.fate];
    if (e.ends > 1) ++t.multiple_ends;
    if (e.fate != Fate::answered) continue;
    ++t.statuses[e.status];
    ++t.kinds[e.kind];
    if (e.kind == Verdict::Kind::error) ++t.codes[ledger.code_name(e.code)];
    latencies.push_back(e.latency_s);
    if (e.latency_s > bound_s) ++t.over_bound;
    t.max_latency_s = std::max(t.max_latency_s, static_cast<double>(e.latency_s));
  }
  if (!latencies.empty()) {
    std::sort(latencies.begin(), latencies.end());
    for (double q : {0.5, 0.99, 0.999, 1.0}) {
      const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(latencies.size())));
      t.latency_quantiles.push_back(latencies[std::clamp<std::size_t>(i, 1, latencies.size()) - 1]);
    }
  }
  return t;
}

Metrics Metrics::parse(std::string_view text) {
  Metrics m;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string_view::npos || space == 0) {
      ++m.unparsed;
      continue;
    }
    const std::string value(line.substr(space + 1));
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || *end != '\0') {
      ++m.unparsed;
      continue;
    }
    m.samples_[std::string(line.substr(0, space))] = v;
  }
  return m;
}

std::optional<double> Metrics::get(std::string_view name, std::string_view labels) const {
  std::string key(name);
  if (!labels.empty()) {
    key += '{';
    key += labels;
    key += '}';
  }
  auto it = samples_.find(key);
  if (it == samples_.end()) return std::nullopt;
  return it->second;
}

double Metrics::value(std::string_view name, std::string_view labels) const {
  return get(name, labels).value_or(0);
}

std::map<std::string, double> Metrics::family(std::string_view name) const {
  std::map<std::string, double> out;
  for (const auto& [key, v] : samples_) {
    std::string_view k(key);
    if (k == name) {
      out[""] = v;
    } else if (k.size() > name.size() + 1 && k.substr(0, name.size()) == name &&
               k[name.size()] == '{' && k.back() == '}') {
      out[std::string(k.substr(name.size() + 1, k.size() - name.size() - 2))] = v;
    }
  }
  return out;
}

double queue_seen(const Metrics& m) {
  return m.value("llmq_admitted_total") + m.value("llmq_rejected_total", "reason=\"user_limit\"") +
         m.value("llmq_rejected_total", "reason=\"queue_full\"") +
         m.value("llmq_rejected_total", "reason=\"invalid\"");
}

double telemetry_lost(const Metrics& m) {
  return m.value("llmq_telemetry_dropped_total") + m.value("llmq_telemetry_failed_total");
}

Flatness flatness(const std::vector<ResourceSample>& samples, double duration_s,
                  const FlatnessLimits& limits) {
  Flatness f;
  for (const ResourceSample& s : samples) {
    if (s.t_s < duration_s / 4) {
      f.q1_rss_kib += s.rss_kib;
      f.q1_fds += s.fds;
      ++f.q1_samples;
    } else if (s.t_s >= duration_s * 3 / 4 && s.t_s <= duration_s) {
      f.q4_rss_kib += s.rss_kib;
      f.q4_fds += s.fds;
      ++f.q4_samples;
    }
  }
  if (f.q1_samples == 0 || f.q4_samples == 0) return f;  // not flat: nothing to compare
  f.q1_rss_kib /= static_cast<double>(f.q1_samples);
  f.q1_fds /= static_cast<double>(f.q1_samples);
  f.q4_rss_kib /= static_cast<double>(f.q4_samples);
  f.q4_fds /= static_cast<double>(f.q4_samples);
  f.rss_flat =
      f.q4_rss_kib <= f.q1_rss_kib + std::max(limits.rss_rel * f.q1_rss_kib, limits.rss_abs_kib);
  f.fds_flat = f.q4_fds <= f.q1_fds + std::max(limits.fds_rel * f.q1_fds, limits.fds_abs);
  return f;
}

std::string Bound::describe() const {
  return "request_timeout_seconds " + fixed(request_timeout_s) + " s + " +
         std::to_string(max_attempts) + " attempts x upstream_timeout_seconds " +
         fixed(upstream_timeout_s) + " s + slack " + fixed(slack_s) + " s = " + fixed(seconds()) +
         " s";
}

std::vector<std::string> check(const Tally& t, const Observed& o) {
  std::vector<std::string> v;
  auto kind = [&](Verdict::Kind k) {
    auto it = t.kinds.find(k);
    return it == t.kinds.end() ? std::uint64_t{0} : it->second;
  };
  auto code = [&](const std::string& c) {
    auto it = t.codes.find(c);
    return it == t.codes.end() ? std::uint64_t{0} : it->second;
  };

  // One answer per request, its own.
  if (t.multiple_ends > 0)
    v.push_back(count(static_cast<double>(t.multiple_ends)) + " requests ended more than once");
  if (t.fate(Fate::pending) > 0)
    v.push_back(count(static_cast<double>(t.fate(Fate::pending))) +
                " requests never ended (driver bookkeeping)");
  if (kind(Verdict::Kind::crossed) > 0)
    v.push_back(count(static_cast<double>(kind(Verdict::Kind::crossed))) +
                " answers carried another request's echo (crossed)");
  if (kind(Verdict::Kind::bad) > 0)
    v.push_back(count(static_cast<double>(kind(Verdict::Kind::bad))) +
                " answers were neither the request's echo nor an expected error");
  if (t.fate(Fate::no_answer) > 0)
    v.push_back(count(static_cast<double>(t.fate(Fate::no_answer))) +
                " requests got no answer (connection closed or failed first)");
  if (t.fate(Fate::timed_out) > 0)
    v.push_back(count(static_cast<double>(t.fate(Fate::timed_out))) +
                " requests got no answer within the client's limit (bound + grace)");
  if (t.over_bound > 0)
    v.push_back(count(static_cast<double>(t.over_bound)) + " answers came later than the bound");

  // The gateway at rest.
  if (!o.idle)
    v.push_back("the gateway was not idle at the end: " + count(o.queue_depth) + " queued, " +
                count(o.in_flight) + " in flight");
  if (o.metrics.unparsed > 0)
    v.push_back(count(static_cast<double>(o.metrics.unparsed)) + " /metrics lines did not parse");

  // /metrics against the clients.
  const std::uint64_t sent = t.sent_whole();
  const std::uint64_t unanswered =
      t.fate(Fate::abandoned) + t.fate(Fate::no_answer) + t.fate(Fate::timed_out);
  std::map<int, double> http;
  for (const auto& [labels, value] : o.metrics.family("llmq_gateway_http_responses_total")) {
    const std::string_view l(labels);
    const std::string_view prefix = "status=\"";
    if (l.substr(0, prefix.size()) != prefix || l.size() < prefix.size() + 2) continue;
    http[std::atoi(std::string(l.substr(prefix.size())).c_str())] += value;
  }
  for (const auto& [status, n] : o.own_http) http[status] -= static_cast<double>(n);
  double counted_expected = 0;
  double counted_other = 0;
  for (const auto& [status, n] : http) {
    if (status == 200 || expected_error_status(status))
      counted_expected += n;
    else
      counted_other += n;
  }
  for (const auto& [status, n] : t.statuses) {
    const double g = http.count(status) != 0 ? http.at(status) : 0;
    if (g < static_cast<double>(n))
      v.push_back("/metrics counts " + count(g) + " answers with status " + std::to_string(status) +
                  ", the clients got " + count(static_cast<double>(n)));
  }
  if (counted_expected > static_cast<double>(sent))
    v.push_back("/metrics counts " + count(counted_expected) + " answers, but only " +
                count(static_cast<double>(sent)) + " requests were sent whole");
  if (counted_other > static_cast<double>(t.fate(Fate::partial)))
    v.push_back("/metrics counts " + count(counted_other) +
                " answers of a status no whole request got, more than the " +
                count(static_cast<double>(t.fate(Fate::partial))) + " half-sent requests");

  const double admitted = o.metrics.value("llmq_admitted_total");
  const double seen = queue_seen(o.metrics);
  const double waited_for = static_cast<double>(t.fate(Fate::answered) + t.fate(Fate::no_answer) +
                                                t.fate(Fate::timed_out));
  if (seen < waited_for || seen > static_cast<double>(sent))
    v.push_back("the queue saw " + count(seen) + " requests (admitted + rejected); " +
                count(waited_for) + " were waited for and " + count(static_cast<double>(sent)) +
                " sent whole");
  // A request cancelled while running (its client left) is counted as cancelled and, once
  // its executor has unwound, as completed too: `ended` may exceed `admitted` by at most
  // the cancelled ones.
  const double cancelled = o.metrics.value("llmq_rejected_total", "reason=\"cancelled\"");
  const double ended = o.metrics.value("llmq_completed_total") +
                       o.metrics.value("llmq_rejected_total", "reason=\"queue_timeout\"") +
                       cancelled;
  if (ended < admitted || ended > admitted + cancelled)
    v.push_back("admitted " + count(admitted) + " != completed + queue_timeout + cancelled " +
                count(ended) + " (less those cancelled while running)");
  struct Reason {
    const char* reason;
    const char* code;
  };
  for (const Reason& r :
       {Reason{"user_limit", "user_rate_limit_exceeded"}, Reason{"queue_full", "queue_full"},
        Reason{"queue_timeout", "queue_timeout"}}) {
    const double g =
        o.metrics.value("llmq_gateway_rejected_total", "reason=\"" + std::string(r.reason) + "\"");
    const auto c = static_cast<double>(code(r.code));
    if (g < c || g > c + static_cast<double>(unanswered))
      v.push_back("/metrics counts " + count(g) + " " + r.reason + " rejections; the clients got " +
                  count(c) + " (" + count(static_cast<double>(unanswered)) + " unanswered)");
  }
  if (auto d = o.metrics.get("llmq_gateway_client_disconnects_total")) {
    const auto most = static_cast<double>(unanswered + t.fate(Fate::partial));
    if (*d > most)
      v.push_back("/metrics counts " + count(*d) + " client disconnects, more than the " +
                  count(most) + " requests the clients left");
  }

  // PostgreSQL: one row per request that ended in the queue, minus the records it counted
  // as lost. The requests that ended are those it saw (admitted or refused) plus those
  // cancelled before admission (a client that left while the user limit was being
  // decided, e.g. with Redis paused): llmq_telemetry_records_total counts them all.
  const double lost = telemetry_lost(o.metrics);
  const double records = o.metrics.get("llmq_telemetry_records_total").value_or(seen);
  if (records < seen)
    v.push_back("the queue counted " + count(records) + " records for the " + count(seen) +
                " requests it saw");
  if (!o.pg_rows) {
    v.push_back("the telemetry rows could not be counted");
  } else {
    const auto rows = static_cast<double>(*o.pg_rows);
    if (rows != records - lost)
      v.push_back("PostgreSQL holds " + count(rows) + " rows; the queue ended " + count(records) +
                  " requests (" + count(seen) + " admitted or refused) and counted " + count(lost) +
                  " records lost");
    if (o.pg_rows_200) {
      const auto ok = static_cast<double>(t.statuses.count(200) != 0 ? t.statuses.at(200) : 0);
      const auto rows200 = static_cast<double>(*o.pg_rows_200);
      if (rows200 < ok - lost || rows200 > ok + static_cast<double>(unanswered))
        v.push_back("PostgreSQL holds " + count(rows200) +
                    " rows with status 200; the clients got " + count(ok) + " (" + count(lost) +
                    " records lost, " + count(static_cast<double>(unanswered)) + " unanswered)");
    }
  }

  // Resources.
  const Flatness& f = o.flatness;
  if (f.q1_samples == 0 || f.q4_samples == 0) {
    v.push_back("too few /proc samples to compare the first and last quarter");
  } else {
    if (!f.rss_flat)
      v.push_back("RSS grew from " + fixed(f.q1_rss_kib / 1024) + " MiB (first quarter) to " +
                  fixed(f.q4_rss_kib / 1024) + " MiB (last quarter)");
    if (!f.fds_flat)
      v.push_back("open descriptors grew from " + fixed(f.q1_fds) + " (first quarter) to " +
                  fixed(f.q4_fds) + " (last quarter)");
  }
  return v;
}

}  // namespace llmq::soak
