// Load client for concurrent open streams (bench/gateway/streams.sh): opens N connections,
// each sending one streamed chat completion ("stream": true) to URL, reads the
// server-sent events as they arrive and reports
//
//   streams completed / failed (with the reasons), the most streams open at once,
//   connect time, time to first event and inter-event gap (p50 / p99), events, wall time.
//
//   llmq_bench_streams --url http://127.0.0.1:PORT/PATH [--streams N] [--tokens T]
//                      [--model M] [--api-key K] [--user-prefix P] [--connect-parallel C]
//                      [--timeout S] [--idle-timeout S] [--threads T] [--include-usage 0|1]
//                      [--trace-first 0|1]
//
// --include-usage 1 asks for the usage chunk (stream_options.include_usage) before [DONE];
// --trace-first 1 prints stream 0's events with their times (to stderr).
// Each stream is one connection (`connection: close`) with its own `x-user-id: P-i`.
// Time to first event is measured from the request's first byte written (after the
// connection was established) to the first complete `data:` event; a gap is the time
// between two consecutive events of one stream (events read in one receive are 0 apart).
// A stream is completed when its answer was 200 text/event-stream and ended with
// `data: [DONE]` and the terminating chunk. Everything is bounded: N <= 100 000, at most C
// connects in flight, each read or write within the idle timeout, the whole run within
// --timeout (then every open stream is cut and counted as failed). The last line is
// machine-readable:
//
//   RESULT streams N completed X failed Y max_open M events E connect_p50_us .. ttfe_p50_us ..
//          ttfe_p99_us .. gap_p50_us .. gap_p99_us .. gap_max_us .. wall_s ..

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxStreams = 100'000;

struct Args {
  std::string url;
  std::size_t streams = 100;
  std::size_t tokens = 150;
  std::string model = "bench-chat-1";
  std::string api_key = "bench-upstream-key";
  std::string user_prefix = "stream-user";
  std::size_t connect_parallel = 256;
  double timeout_s = 120;
  double idle_timeout_s = 30;
  unsigned threads = 1;
  bool trace_first = false;
  bool include_usage = false;
};

[[noreturn]] void usage(int code) {
  std::fprintf(code == 0 ? stdout : stderr,
               "usage: llmq_bench_streams --url http://HOST:PORT/PATH [--streams N] [--tokens T]\n"
               "         [--model M] [--api-key K] [--user-prefix P] [--connect-parallel C]\n"
               "         [--timeout S] [--idle-timeout S] [--threads T] [--include-usage 0|1]\n"
               "         [--trace-first 0|1]\n");
  std::exit(code);
}

std::size_t to_count(const std::string& v, std::size_t lo, std::size_t hi) {
  const unsigned long long n = std::stoull(v);
  if (n < lo || n > hi) throw std::out_of_range("out of range");
  return static_cast<std::size_t>(n);
}

double to_seconds(const std::string& v) {
  const double s = std::stod(v);
  if (!(s > 0 && s <= 3600)) throw std::out_of_range("out of range");
  return s;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") usage(0);
    if (i + 1 >= argc) usage(2);
    const std::string v = argv[++i];
    try {
      if (k == "--url")
        a.url = v;
      else if (k == "--streams")
        a.streams = to_count(v, 1, kMaxStreams);
      else if (k == "--tokens")
        a.tokens = to_count(v, 1, 100'000);
      else if (k == "--model")
        a.model = v;
      else if (k == "--api-key")
        a.api_key = v;
      else if (k == "--user-prefix")
        a.user_prefix = v;
      else if (k == "--connect-parallel")
        a.connect_parallel = to_count(v, 1, 100'000);
      else if (k == "--timeout")
        a.timeout_s = to_seconds(v);
      else if (k == "--idle-timeout")
        a.idle_timeout_s = to_seconds(v);
      else if (k == "--include-usage")
        a.include_usage = v == "1";
      else if (k == "--trace-first")
        a.trace_first = v == "1";
      else if (k == "--threads")
        a.threads = static_cast<unsigned>(to_count(v, 1, 64));
      else
        usage(2);
    } catch (const std::exception&) {
      std::fprintf(stderr, "llmq_bench_streams: bad value for %s: %s\n", k.c_str(), v.c_str());
      std::exit(2);
    }
  }
  if (a.url.empty()) usage(2);
  return a;
}

struct Target {
  tcp::endpoint endpoint;
  std::string host;  // for the Host header
  std::string target;
};

bool parse_url(const std::string& url, Target& t) {
  const std::string_view prefix = "http://";
  if (url.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string rest = url.substr(prefix.size());
  const auto slash = rest.find('/');
  t.host = rest.substr(0, slash);
  t.target = slash == std::string::npos ? "/" : rest.substr(slash);
  const auto colon = t.host.rfind(':');
  if (colon == std::string::npos) return false;
  std::string addr = t.host.substr(0, colon);
  if (addr == "localhost") addr = "127.0.0.1";
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(addr, ec);
  if (ec) return false;
  try {
    t.endpoint = tcp::endpoint(
        ip, static_cast<unsigned short>(to_count(t.host.substr(colon + 1), 1, 65535)));
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

std::string make_request(const Args& a, const Target& t, std::size_t i) {
  const std::string body = "{\"model\":\"" + a.model + "\",\"stream\":true," +
                           (a.include_usage ? "\"stream_options\":{\"include_usage\":true}," : "") +
                           "\"mock_completion_tokens\":" + std::to_string(a.tokens) +
                           ",\"messages\":[{\"role\":\"user\",\"content\":\"stream " +
                           std::to_string(i) + "\"}]}";
  std::string r = "POST " + t.target + " HTTP/1.1\r\nhost: " + t.host +
                  "\r\ncontent-type: application/json\r\naccept: text/event-stream\r\n"
                  "connection: close\r\napi-key: " +
                  a.api_key + "\r\nx-user-id: " + a.user_prefix + "-" + std::to_string(i) +
                  "\r\ncontent-length: " + std::to_string(body.size()) + "\r\n\r\n";
  r += body;
  return r;
}

struct StreamResult {
  bool completed = false;
  std::string failure;  // empty when completed
  std::int64_t connect_us = -1;
  std::int64_t ttfe_us = -1;
  std::vector<std::int32_t> gaps_us;
  std::size_t events = 0;
};

struct Shared {
  const Args* args = nullptr;
  Target target;
  Clock::time_point deadline;
  std::atomic<std::size_t> connecting{0};
  std::atomic<std::size_t> open{0};
  std::atomic<std::size_t> max_open{0};
  std::atomic<std::size_t> finished{0};
  std::vector<StreamResult> results;

  void opened() {
    const std::size_t now = open.fetch_add(1) + 1;
    std::size_t seen = max_open.load();
    while (now > seen && !max_open.compare_exchange_weak(seen, now)) {
    }
  }
};

std::int64_t micros(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

std::string describe(const char* what, const boost::system::error_code& ec) {
  std::string s = what;
  s += ": ";
  s += ec == beast::error::timeout ? std::string("timeout") : ec.message();
  return s;
}

void arm(beast::tcp_stream& stream, const Shared& sh) {
  const auto idle = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(sh.args->idle_timeout_s));
  stream.expires_at(std::min(Clock::now() + idle, sh.deadline));
}

awaitable<void> run_stream(Shared& sh, std::size_t i, std::string request) {
  StreamResult& r = sh.results[i];
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  const auto t_connect = Clock::now();
  arm(stream, sh);
  auto [cec] =
      co_await stream.async_connect(sh.target.endpoint, asio::as_tuple(asio::use_awaitable));
  sh.connecting.fetch_sub(1);
  if (cec) {
    r.failure = describe("connect", cec);
    sh.finished.fetch_add(1);
    co_return;
  }
  r.connect_us = micros(Clock::now() - t_connect);

  const auto t0 = Clock::now();
  arm(stream, sh);
  const asio::const_buffer request_bytes = asio::buffer(request);
  auto [wec, wn] =
      co_await asio::async_write(stream, request_bytes, asio::as_tuple(asio::use_awaitable));
  (void)wn;
  if (wec) {
    r.failure = describe("write", wec);
    sh.finished.fetch_add(1);
    co_return;
  }

  // Events: the decoded chunk bodies, split at blank lines, each timed as it completes.
  std::string pending;
  std::size_t scan = 0;
  bool done_event = false;
  bool counted_open = false;
  Clock::time_point last_event{};
  auto on_chunk = [&](std::uint64_t, std::string_view data, boost::system::error_code&) {
    pending.append(data.data(), data.size());
    const auto now = Clock::now();
    for (;;) {
      const auto end = pending.find("\n\n", scan);
      if (end == std::string::npos) break;
      if (r.events == 0)
        r.ttfe_us = micros(now - t0);
      else
        r.gaps_us.push_back(static_cast<std::int32_t>(micros(now - last_event)));
      last_event = now;
      ++r.events;
      if (i == 0 && sh.args->trace_first)
        std::fprintf(stderr, "stream 0 event %zu at %.3f ms: %.*s\n", r.events,
                     static_cast<double>(micros(now - t0)) / 1e3,
                     static_cast<int>(std::min<std::size_t>(end, 70)), pending.data());
      if (std::string_view(pending.data(), end).find("data: [DONE]") != std::string_view::npos)
        done_event = true;
      pending.erase(0, end + 2);
      scan = 0;
    }
    scan = pending.empty() ? 0 : pending.size() - 1;
    return data.size();
  };
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t{1} << 32);
  parser.on_chunk_body(on_chunk);
  beast::flat_buffer buf;
  boost::system::error_code rec;
  while (!parser.is_done()) {
    arm(stream, sh);
    auto [ec, n] =
        co_await http::async_read_some(stream, buf, parser, asio::as_tuple(asio::use_awaitable));
    (void)n;
    if (ec) {
      rec = ec;
      break;
    }
    if (!counted_open && parser.is_header_done()) {
      counted_open = true;
      sh.opened();
    }
  }
  if (counted_open) sh.open.fetch_sub(1);
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.socket().close(ignored);

  if (rec) {
    r.failure = describe(parser.is_header_done() ? "read body" : "read head", rec);
  } else if (parser.get().result_int() != 200) {
    r.failure = "status " + std::to_string(parser.get().result_int());
  } else if (parser.get()[http::field::content_type].find("text/event-stream") ==
             std::string_view::npos) {
    r.failure = "not text/event-stream";
  } else if (!done_event) {
    r.failure = "no data: [DONE]";
  } else {
    r.completed = true;
  }
  sh.finished.fetch_add(1);
}

awaitable<void> launch(Shared& sh, asio::io_context& ioc, std::vector<std::string>& requests) {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    while (sh.connecting.load() >= sh.args->connect_parallel && Clock::now() < sh.deadline) {
      pause.expires_after(std::chrono::milliseconds(1));
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    sh.connecting.fetch_add(1);
    asio::co_spawn(asio::make_strand(ioc), run_stream(sh, i, std::move(requests[i])),
                   asio::detached);
  }
}

double percentile(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

std::string us_text(double us) {
  char b[64];
  if (us >= 1e6)
    std::snprintf(b, sizeof b, "%.2f s", us / 1e6);
  else if (us >= 1e3)
    std::snprintf(b, sizeof b, "%.2f ms", us / 1e3);
  else
    std::snprintf(b, sizeof b, "%.0f us", us);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse(argc, argv);
  Shared sh;
  sh.args = &args;
  if (!parse_url(args.url, sh.target)) {
    std::fprintf(stderr, "llmq_bench_streams: --url must be http://IP:PORT/PATH (got %s)\n",
                 args.url.c_str());
    return 2;
  }

  // One descriptor per stream plus a few: raise the soft limit to the hard one, and refuse
  // a run that cannot fit instead of failing half of it.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
    getrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur != RLIM_INFINITY && args.streams + 64 > lim.rlim_cur) {
    std::fprintf(stderr,
                 "llmq_bench_streams: %zu streams need %zu file descriptors, the limit is %llu "
                 "(raise ulimit -n)\n",
                 args.streams, args.streams + 64, static_cast<unsigned long long>(lim.rlim_cur));
    return 3;
  }

  std::vector<std::string> requests;
  requests.reserve(args.streams);
  for (std::size_t i = 0; i < args.streams; ++i)
    requests.push_back(make_request(args, sh.target, i));
  sh.results.resize(args.streams);

  asio::io_context ioc(static_cast<int>(args.threads));
  const auto start = Clock::now();
  sh.deadline = start + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(args.timeout_s));
  asio::co_spawn(ioc, launch(sh, ioc, requests), asio::detached);
  std::vector<std::thread> extra;
  for (unsigned t = 1; t < args.threads; ++t) extra.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : extra) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();

  std::size_t completed = 0;
  std::size_t events = 0;
  std::map<std::string, std::size_t> failures;
  std::vector<std::int64_t> connect_us, ttfe_us, gaps_us;
  for (const auto& r : sh.results) {
    events += r.events;
    if (r.completed) {
      ++completed;
    } else {
      ++failures[r.failure.empty() ? std::string("not started") : r.failure];
    }
    if (r.connect_us >= 0) connect_us.push_back(r.connect_us);
    if (r.ttfe_us >= 0) ttfe_us.push_back(r.ttfe_us);
    gaps_us.insert(gaps_us.end(), r.gaps_us.begin(), r.gaps_us.end());
  }
  const std::size_t failed = args.streams - completed;
  const double c50 = percentile(connect_us, 50), c99 = percentile(connect_us, 99);
  const double t50 = percentile(ttfe_us, 50), t99 = percentile(ttfe_us, 99);
  const double g50 = percentile(gaps_us, 50), g99 = percentile(gaps_us, 99);
  const double gmax = percentile(gaps_us, 100);

  std::printf("streams %zu: completed %zu, failed %zu, most open at once %zu, events %zu, %.2f s\n",
              args.streams, completed, failed, sh.max_open.load(), events, wall_s);
  std::printf("  connect p50 %s p99 %s; first event p50 %s p99 %s; gap p50 %s p99 %s max %s\n",
              us_text(c50).c_str(), us_text(c99).c_str(), us_text(t50).c_str(),
              us_text(t99).c_str(), us_text(g50).c_str(), us_text(g99).c_str(),
              us_text(gmax).c_str());
  for (const auto& [why, n] : failures) std::printf("  failed: %zu x %s\n", n, why.c_str());
  std::printf(
      "RESULT streams %zu completed %zu failed %zu max_open %zu events %zu connect_p50_us %.0f "
      "connect_p99_us %.0f ttfe_p50_us %.0f ttfe_p99_us %.0f gap_p50_us %.0f gap_p99_us %.0f "
      "gap_max_us %.0f wall_s %.2f\n",
      args.streams, completed, failed, sh.max_open.load(), events, c50, c99, t50, t99, g50, g99,
      gmax, wall_s);
  std::fflush(stdout);
  return failed == 0 ? 0 : 1;
}
