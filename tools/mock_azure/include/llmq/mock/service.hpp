#pragma once
/// @file service.hpp
/// The mock's behaviour without I/O: routing, auth, validation, Azure-style rate limits,
/// fault selection, latency sampling and the response bodies. `MockService::handle`
/// turns one parsed HTTP request into a ResponsePlan that the network layer
/// (MockAzureServer) carries out. Time is passed in, so tests drive it with a fake clock.

#include <llmq/mock/config.hpp>

#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmq::mock {

/// One HTTP request as the service sees it.
struct MockHttpRequest {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< origin-form: path plus optional query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool remote_is_loopback = true;  ///< control endpoints answer only loopback peers

  /// First header with this name (ASCII case-insensitive), or "".
  [[nodiscard]] std::string_view header(std::string_view name) const noexcept;
};

/// One HTTP response (status, headers in order, body).
struct MockHttpResponse {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// First header with this name (ASCII case-insensitive), or "".
  [[nodiscard]] std::string_view header(std::string_view name) const noexcept;
};

/// The events of a streamed answer, each "data: ...\n\n", made on demand so that a long
/// answer is never held in memory whole. Immutable; safe to read from any thread.
class StreamEvents {
 public:
  virtual ~StreamEvents() = default;
  [[nodiscard]] virtual std::size_t size() const = 0;
  /// Event `i` (< size()).
  [[nodiscard]] virtual std::string at(std::size_t i) const = 0;
  /// Every event in order (for tests; a long answer makes this large).
  [[nodiscard]] std::vector<std::string> all() const;
};

/// What the network layer does with one request.
struct ResponsePlan {
  enum class Action {
    respond,  ///< send `response` (Content-Length = body size)
    stream,   ///< send `response` headers with chunked encoding, then each of `events`
    reset,    ///< after `delay`, close the connection with a TCP RST, sending nothing
    stall,    ///< send nothing; keep reading until the peer closes or the server stops
  };
  /// How a stream ends before its last event (Action::stream only).
  enum class StreamCut {
    none,   ///< every event, then the terminating chunk
    close,  ///< after `cut_after` events, close the connection (no terminating chunk)
    stall,  ///< after `cut_after` events, send nothing; read until the peer closes
  };
  Action action = Action::respond;
  MockHttpResponse response;
  std::shared_ptr<const StreamEvents> events;  ///< stream: the SSE events
  std::chrono::milliseconds delay{0};          ///< wait before the first byte
  /// respond: announce the full Content-Length but send only half the body, then close.
  bool truncate = false;
  StreamCut cut = StreamCut::none;
  std::size_t cut_after = 0;  ///< events sent before the cut
  /// Spread the body over 8 chunks (the events, one by one) over this time. 0: at once.
  std::chrono::milliseconds slow_body{0};
  /// stream: pause before each event after the first (the token rate). 0: none.
  std::chrono::microseconds event_gap{0};
  bool close = false;      ///< close the connection after answering
  std::string deployment;  ///< the deployment the request was routed to ("" if none)
};

/// Counters of one deployment since start or the last reset.
struct DeploymentCounters {
  std::uint64_t requests = 0;      ///< requests routed to it (every outcome)
  std::uint64_t ok = 0;            ///< complete 2xx answers (incl. streams and slow bodies)
  std::uint64_t rate_limited = 0;  ///< 429 answers (limits, force_429, injected 429)
  std::map<unsigned, std::uint64_t> errors;  ///< other answers >= 400, by status
  std::uint64_t resets = 0;                  ///< connections reset instead of answering
  std::uint64_t stalls = 0;                  ///< requests never answered
  std::uint64_t malformed = 0;               ///< 200 answers with an invalid JSON body
  std::uint64_t truncated = 0;               ///< answers cut short
  std::uint64_t slow_bodies = 0;             ///< answers sent slowly (also counted in ok)
  std::uint64_t streams = 0;                 ///< SSE answers (also counted in ok)
  std::uint64_t stream_breaks = 0;           ///< streams closed after some events
  std::uint64_t stream_stalls = 0;           ///< streams that stopped sending after some events
  std::uint64_t stream_malformed = 0;        ///< streams with one cut (invalid JSON) event
  std::uint64_t bursts_429 = 0;              ///< 429s of a burst window (also in rate_limited)
  std::uint64_t prompt_tokens = 0;           ///< usage.prompt_tokens of complete answers
  std::uint64_t completion_tokens = 0;       ///< usage.completion_tokens of complete answers
  std::uint64_t charged_tokens = 0;          ///< estimates charged to the token window
  std::uint64_t max_requests_in_1s = 0;      ///< peak arrivals in any sliding 1 s window
};

/// Thread-safe: every public member may be called concurrently (one internal mutex).
class MockService {
 public:
  using clock = std::chrono::steady_clock;

  /// Validates `cfg`; throws MockConfigError.
  explicit MockService(MockConfig cfg);
  ~MockService();
  MockService(const MockService&) = delete;
  MockService& operator=(const MockService&) = delete;

  /// Decides the answer to `req` arriving at `now` and updates counters and windows.
  [[nodiscard]] ResponsePlan handle(const MockHttpRequest& req, clock::time_point now);

  /// Records an answer the network layer produced itself (400 malformed HTTP, 413, 431).
  void note_protocol_error(unsigned status);

  /// Counters of one deployment. Throws std::out_of_range for an unknown name.
  [[nodiscard]] DeploymentCounters counters(const std::string& deployment) const;

  /// Replaces a deployment's faults. Throws std::out_of_range / MockConfigError.
  void set_faults(const std::string& deployment, FaultConfig faults);
  /// Current faults of a deployment. Throws std::out_of_range.
  [[nodiscard]] FaultConfig faults(const std::string& deployment) const;

  /// Zeroes counters, empties the rate windows and re-seeds every RNG.
  void reset();

  /// The body of GET /mock/stats (see README.md).
  [[nodiscard]] nlohmann::json stats(clock::time_point now) const;

  /// Names of the configured deployments, in config order.
  [[nodiscard]] std::vector<std::string> deployment_names() const;

  [[nodiscard]] const MockConfig& config() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmq::mock
