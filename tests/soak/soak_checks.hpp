#pragma once
// The fault soak's bookkeeping and checks, without I/O (unit-tested in soak_checks_test.cpp):
// what one answer means, the per-request ledger, Prometheus text, resource samples, and
// the final verdict. The driver (soak_driver.cpp) only feeds these.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmq::soak {

/// The prompt of request `n` of run `salt`: the mock echoes its first 40 characters, so
/// it is kept shorter than that.
[[nodiscard]] std::string prompt_of(std::string_view salt, std::uint64_t n);

/// What one HTTP answer to request `n` is.
struct Verdict {
  enum class Kind {
    ok,       ///< 200 with request n's own echo
    error,    ///< an expected error status with a JSON error body
    crossed,  ///< 200 with the echo of another request of this run (`other`)
    bad,      ///< anything else (`problem` says what)
  };
  Kind kind = Kind::bad;
  std::uint64_t other = 0;  ///< crossed: the request whose answer this is
  std::string code;         ///< error: error.code of the body ("" when absent)
  std::string problem;      ///< bad: what is wrong
};

/// Statuses a valid request may get through a faulty upstream: 429 (upstream bursts, user
/// limit), 500, 502, 503, 504 (upstream failures after the retries, queue timeouts).
[[nodiscard]] bool expected_error_status(int status);

/// Judges one answer. `has_retry_after`: whether the answer carried Retry-After (429 and
/// 503 must).
[[nodiscard]] Verdict classify_answer(std::string_view salt, std::uint64_t n, int status,
                                      bool has_retry_after, std::string_view body);

/// How a request ended, from the client's side.
enum class Fate : std::uint8_t {
  pending,    ///< not finished (a bug of the driver if left at the end)
  answered,   ///< one complete HTTP answer was read
  abandoned,  ///< sent whole, then the client closed without reading the answer
  partial,    ///< half sent, then closed (never a whole request)
  no_answer,  ///< the connection closed or failed before a whole answer
  timed_out,  ///< no whole answer within the client's limit (the bound plus a grace)
};

[[nodiscard]] std::string_view to_string(Fate f);

/// One request as the ledger keeps it.
struct Entry {
  Fate fate = Fate::pending;
  Verdict::Kind kind = Verdict::Kind::bad;
  std::uint16_t status = 0;
  std::uint8_t code = 0;  ///< index into Ledger::codes
  std::uint8_t ends = 0;  ///< how often the request was finished (must be 1)
  float latency_s = 0;    ///< from the first byte sent to the last byte read
};

/// Every request of the run, by number. Single-threaded. The totals are computed from the
/// entries at the end, not kept on the side.
class Ledger {
 public:
  /// A new request; returns its number (0, 1, ...).
  std::uint64_t open();
  /// Ends request `n`. A second end of the same request is recorded (ends > 1) and
  /// reported as a violation by check().
  void finish(std::uint64_t n, Fate fate, double latency_s = 0, int status = 0,
              const Verdict* verdict = nullptr);

  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  [[nodiscard]] const Entry& at(std::uint64_t n) const { return entries_.at(n); }
  [[nodiscard]] const std::string& code_name(std::uint8_t i) const { return codes_.at(i); }

 private:
  std::uint8_t code_index(const std::string& code);
  std::vector<Entry> entries_;
  std::vector<std::string> codes_{""};
};

/// Counts derived from a Ledger.
struct Tally {
  std::uint64_t requests = 0;  ///< every request opened
  std::map<Fate, std::uint64_t> fates;
  std::map<int, std::uint64_t> statuses;         ///< answered requests by status
  std::map<std::string, std::uint64_t> codes;    ///< answered errors by error.code
  std::map<Verdict::Kind, std::uint64_t> kinds;  ///< answered requests by verdict
  std::uint64_t multiple_ends = 0;               ///< requests finished more than once
  std::uint64_t over_bound = 0;                  ///< answers later than the bound
  double max_latency_s = 0;
  std::vector<double> latency_quantiles;  ///< p50, p99, p99.9, max of answered requests

  /// Requests whose bytes all reached the gateway (answered, abandoned, no answer, timed out).
  [[nodiscard]] std::uint64_t sent_whole() const;
  [[nodiscard]] std::uint64_t fate(Fate f) const;
};

[[nodiscard]] Tally tally(const Ledger& ledger, double bound_s);

/// One scrape of /metrics: `name{labels}` (as written) -> value.
class Metrics {
 public:
  /// Parses the Prometheus text format (comments and blank lines skipped). Lines that do
  /// not parse are counted in `unparsed`.
  static Metrics parse(std::string_view text);
  /// The sample with exactly these labels (e.g. `status="200"`; "" for none).
  [[nodiscard]] std::optional<double> get(std::string_view name,
                                          std::string_view labels = {}) const;
  /// 0 when absent.
  [[nodiscard]] double value(std::string_view name, std::string_view labels = {}) const;
  /// Every sample of `name`, by its label text.
  [[nodiscard]] std::map<std::string, double> family(std::string_view name) const;
  std::size_t unparsed = 0;

 private:
  std::map<std::string, double, std::less<>> samples_;
};

/// Requests the queue saw: admitted, or rejected for the user limit, a full queue or as
/// invalid (queue timeouts and cancellations are among the admitted).
[[nodiscard]] double queue_seen(const Metrics& m);
/// Telemetry records the queue counted as lost: dropped (buffer full) or failed (store).
[[nodiscard]] double telemetry_lost(const Metrics& m);

/// A /proc sample of the gateway.
struct ResourceSample {
  double t_s = 0;  ///< seconds since the load started
  double rss_kib = 0;
  double fds = 0;
};

/// First-quarter vs last-quarter means of the samples taken during the load.
struct Flatness {
  double q1_rss_kib = 0, q4_rss_kib = 0, q1_fds = 0, q4_fds = 0;
  std::size_t q1_samples = 0, q4_samples = 0;
  bool rss_flat = false, fds_flat = false;
};

/// Flat: last-quarter mean at most max(rel x first-quarter mean, abs) above it.
struct FlatnessLimits {
  double rss_rel = 0.10;
  double rss_abs_kib = 16 * 1024;
  double fds_rel = 0.25;
  double fds_abs = 32;
};

[[nodiscard]] Flatness flatness(const std::vector<ResourceSample>& samples, double duration_s,
                                const FlatnessLimits& limits = {});

/// The time every answer must come within: the queue wait (request_timeout_seconds), each
/// attempt's upstream timeout, and a slack for the shared-limit store's command timeouts
/// and the machine.
struct Bound {
  double request_timeout_s = 0;
  double upstream_timeout_s = 0;
  int max_attempts = 0;
  double slack_s = 0;
  [[nodiscard]] double seconds() const {
    return request_timeout_s + max_attempts * upstream_timeout_s + slack_s;
  }
  [[nodiscard]] std::string describe() const;
};

/// What the end of the run saw outside the ledger.
struct Observed {
  Metrics metrics;                        ///< the final scrape (gateway idle)
  std::map<int, std::uint64_t> own_http;  ///< the driver's own GETs answered before it
  std::optional<std::uint64_t> pg_rows;   ///< rows in the telemetry table (none: unknown)
  std::optional<std::uint64_t> pg_rows_200;
  bool idle = false;                      ///< queue depth and in-flight 0 at the end
  double queue_depth = 0, in_flight = 0;  ///< at the end
  Flatness flatness;
};

/// The checks; each violation is one line. Empty: the run passed.
[[nodiscard]] std::vector<std::string> check(const Tally& t, const Observed& o);

}  // namespace llmq::soak
