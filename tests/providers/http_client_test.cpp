// HttpClient against an in-test loopback server (127.0.0.1, plain and TLS): keep-alive,
// pool bound, reconnects, timeouts, size limits, truncation, cancellation, close, TLS
// verification. Every test runs on its own io_context with a time bound.

#include "loopback_http_server.hpp"

#include <llmq/http_client.hpp>

#include <gtest/gtest.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

namespace asio = boost::asio;
using asio::awaitable;
using llmq::testing::LoopbackServer;
using llmq::testing::ReceivedRequest;
using llmq::testing::Reply;
using llmq::testing::run_bounded;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// What one request ended with.
struct Attempt {
  std::optional<llmq::HttpResponse> response;
  std::optional<llmq::http_errc> error;
  int error_status = 0;
  std::string error_message;
  bool aborted = false;
  std::chrono::milliseconds elapsed{0};
};

llmq::HttpRequest post(std::string url, std::string body = "{\"q\":1}") {
  llmq::HttpRequest r;
  r.url = std::move(url);
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", "application/json");
  return r;
}

awaitable<Attempt> attempt(llmq::HttpClient& client, llmq::HttpRequest req) {
  Attempt a;
  const auto start = Clock::now();
  try {
    a.response = co_await client.request(std::move(req));
  } catch (const llmq::HttpError& e) {
    a.error = e.errc();
    a.error_status = e.http_status();
    a.error_message = e.what();
  } catch (const boost::system::system_error& e) {
    a.aborted = e.code() == asio::error::operation_aborted;
    a.error_message = e.what();
  }
  a.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  co_return a;
}

awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(asio::use_awaitable);
}

/// Polls `done` every 2 ms until it holds or `limit` passes; returns whether it held.
awaitable<bool> wait_until(std::function<bool()> done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = Clock::now() + limit;
  while (!done()) {
    if (Clock::now() >= deadline) co_return false;
    co_await sleep_for(2ms);
  }
  co_return true;
}

/// Starts requests concurrently; results land in `out` (which must outlive them).
void spawn_attempts(asio::io_context& io, llmq::HttpClient& client, const std::string& url,
                    int count, std::vector<std::optional<Attempt>>& out) {
  out.resize(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    auto task = attempt(client, post(url));
    asio::co_spawn(io, std::move(task), [&out, i](std::exception_ptr, Attempt a) {
      out[static_cast<std::size_t>(i)] = std::move(a);
    });
  }
}

bool all_done(const std::vector<std::optional<Attempt>>& v) {
  for (const auto& a : v) {
    if (!a) return false;
  }
  return true;
}

Reply ok(std::string body = "{\"ok\":true}") {
  return llmq::testing::json_reply(200, std::move(body));
}

// ---- basics -----------------------------------------------------------------------------

TEST(HttpClient, SendsRequestAndReadsStatusHeadersBody) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r = llmq::testing::json_reply(201, "{\"created\":1}");
    r.headers.emplace_back("X-Custom-Header", "Value 1");
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt a =
      run_bounded(io, attempt(client, post(server.url("/v1/things?x=1"), "{\"q\":2}")));
  ASSERT_TRUE(a.response) << a.error_message;
  EXPECT_EQ(a.response->status, 201);
  EXPECT_EQ(a.response->body, "{\"created\":1}");
  EXPECT_EQ(a.response->header("X-CUSTOM-HEADER"), "Value 1");
  bool lower_cased = false;
  for (const auto& [name, value] : a.response->headers) lower_cased |= name == "x-custom-header";
  EXPECT_TRUE(lower_cased);

  ASSERT_EQ(server.requests().size(), 1u);
  const ReceivedRequest& got = server.requests()[0];
  EXPECT_EQ(got.method, "POST");
  EXPECT_EQ(got.target, "/v1/things?x=1");
  EXPECT_EQ(got.body, "{\"q\":2}");
  EXPECT_EQ(got.header("host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(got.header("content-length"), "7");
  EXPECT_EQ(got.header("content-type"), "application/json");
}

TEST(HttpClient, RequestFramingAndManagedHeaders) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return ok(); });
  llmq::HttpClient client(io.get_executor());
  llmq::HttpRequest get;
  get.method = "GET";
  get.url = server.url("/a");
  get.headers = {
      {"X-First", "1"},         {"HOST", "evil.example"},         {"Connection", "close"},
      {"content-length", "99"}, {"Transfer-Encoding", "chunked"}, {"X-Last", "2"}};
  llmq::HttpRequest empty_post = post(server.url("/b"), "");
  for (llmq::HttpRequest* req : {&get, &empty_post}) {
    const Attempt a = run_bounded(io, attempt(client, *req));
    ASSERT_TRUE(a.response) << a.error_message;
    EXPECT_EQ(a.response->status, 200);
  }
  ASSERT_EQ(server.requests().size(), 2u);
  const ReceivedRequest& g = server.requests()[0];
  EXPECT_EQ(g.method, "GET");
  EXPECT_EQ(g.header("host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(g.header("content-length"), std::nullopt);  // no body, no length
  EXPECT_EQ(g.header("transfer-encoding"), std::nullopt);
  EXPECT_EQ(g.header("connection"), std::nullopt);  // HTTP/1.1 keep-alive by default
  ASSERT_EQ(g.headers.size(), 3u);                  // host, then the caller's in order
  EXPECT_EQ(g.headers[1].first, "x-first");
  EXPECT_EQ(g.headers[2].first, "x-last");
  const ReceivedRequest& p = server.requests()[1];
  EXPECT_EQ(p.header("content-length"), "0");  // POST always states its length
  EXPECT_EQ(p.body, "");
  EXPECT_EQ(p.connection, g.connection);  // the connection was kept
}

TEST(HttpClient, LargeBodyArrivesWhole) {
  asio::io_context io;
  std::string big(200 * 1024, 'x');
  for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  LoopbackServer server(io, [&big](const ReceivedRequest&) { return ok(big); });
  llmq::HttpClient client(io.get_executor());
  for (int i = 0; i < 2; ++i) {
    const Attempt a = run_bounded(io, attempt(client, post(server.url("/big"))));
    ASSERT_TRUE(a.response) << a.error_message;
    EXPECT_EQ(a.response->body, big);
  }
}

TEST(HttpClient, ErrorStatusesAreResultsNotExceptions) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return llmq::testing::json_reply(503, "{\"error\":{}}"); });
  llmq::HttpClient client(io.get_executor());
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.response);
  EXPECT_EQ(a.response->status, 503);
}

TEST(HttpClient, ChunkedBodyIsAssembled) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.chunks = {"{\"a\":", "\"bc\"", "}"};
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.response) << a.error_message;
  EXPECT_EQ(a.response->body, "{\"a\":\"bc\"}");
}

TEST(HttpClient, BodyDelimitedByConnectionCloseIsComplete) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.raw = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it";
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.response) << a.error_message;
  EXPECT_EQ(a.response->body, "all of it");
}

TEST(HttpClient, ZeroTimeoutsDisableThem) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return ok(); });
  llmq::HttpClientOptions options;
  options.request_timeout = 0ms;
  options.connect_timeout = 0ms;
  options.max_connections_per_host = 0;  // counts as one
  llmq::HttpClient client(io.get_executor(), options);
  for (int i = 0; i < 2; ++i) {
    const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
    ASSERT_TRUE(a.response) << a.error_message;
  }
  EXPECT_EQ(server.accepted(), 1u);
}

// ---- pool ---------------------------------------------------------------------------------

TEST(HttpClient, KeepAliveReusesOneConnection) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return ok(); });
  llmq::HttpClient client(io.get_executor());
  const int statuses = run_bounded(io, [&]() -> awaitable<int> {
    int sum = 0;
    for (int i = 0; i < 5; ++i) {
      const llmq::HttpResponse r = co_await client.request(post(server.url("/")));
      sum += r.status;
    }
    co_return sum;
  }());
  EXPECT_EQ(statuses, 5 * 200);
  EXPECT_EQ(server.accepted(), 1u);
  ASSERT_EQ(server.requests().size(), 5u);
  EXPECT_EQ(server.requests()[4].nth_on_connection, 4u);
}

TEST(HttpClient, PoolBoundIsRespected) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r = ok();
    r.delay = 60ms;
    return r;
  });
  llmq::HttpClientOptions options;
  options.max_connections_per_host = 2;
  llmq::HttpClient client(io.get_executor(), options);
  std::vector<std::optional<Attempt>> results;
  spawn_attempts(io, client, server.url("/"), 6, results);
  ASSERT_TRUE(run_bounded(io, wait_until([&] { return all_done(results); })));
  for (const auto& a : results) {
    ASSERT_TRUE(a->response) << a->error_message;
    EXPECT_EQ(a->response->status, 200);
  }
  EXPECT_LE(server.max_open(), 2u);
  EXPECT_EQ(server.accepted(), 2u);
  EXPECT_EQ(server.requests().size(), 6u);
}

TEST(HttpClient, WaitingForAFreeConnectionIsBoundedByRequestTimeout) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  llmq::HttpClientOptions options;
  options.max_connections_per_host = 1;
  options.request_timeout = 300ms;
  llmq::HttpClient client(io.get_executor(), options);
  std::vector<std::optional<Attempt>> results;
  spawn_attempts(io, client, server.url("/"), 2, results);
  ASSERT_TRUE(run_bounded(io, wait_until([&] { return all_done(results); })));
  for (const auto& a : results) {
    ASSERT_TRUE(a->error);
    EXPECT_EQ(*a->error, llmq::http_errc::request_timeout) << a->error_message;
    EXPECT_EQ(a->error_status, 504);
    EXPECT_LT(a->elapsed, 3s);
  }
  // Never two connections at once. (The waiter may open one after the first request's
  // timeout frees the slot, if its own timeout has not fired yet: a loaded machine.)
  EXPECT_EQ(server.max_open(), 1u);
  EXPECT_LE(server.accepted(), 2u);
}

TEST(HttpClient, ServerClosingBetweenRequestsIsTransparent) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r = ok();
    r.close_silently = true;  // keep-alive answer, then the server closes anyway
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt first = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(first.response) << first.error_message;
  // Let the close reach the client before the next request (the stale-check path).
  run_bounded(io, wait_until([&] { return server.open() == 0; }));
  const Attempt second = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(second.response) << second.error_message;
  EXPECT_EQ(second.response->status, 200);
  EXPECT_EQ(server.accepted(), 2u);
}

TEST(HttpClient, ServerClosingTheIdleConnectionsIsTransparent) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return ok(); });
  llmq::HttpClient client(io.get_executor());
  for (int round = 0; round < 3; ++round) {
    const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
    ASSERT_TRUE(a.response) << a.error_message;
    server.close_connections();  // between requests, as an idle timeout on the server would
  }
  EXPECT_EQ(server.accepted(), 3u);
  EXPECT_EQ(server.requests().size(), 3u);
}

TEST(HttpClient, ReusedConnectionFailingBeforeTheResponseIsRetriedOnce) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    Reply r = ok();
    r.drop = req.nth_on_connection == 1;  // the second request on a connection dies unanswered
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt first = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(first.response) << first.error_message;
  const Attempt second = run_bounded(io, attempt(client, post(server.url("/"), "{\"n\":2}")));
  ASSERT_TRUE(second.response) << second.error_message;
  EXPECT_EQ(second.response->status, 200);
  EXPECT_EQ(server.accepted(), 2u);
  ASSERT_EQ(server.requests().size(), 3u);  // sent twice: dropped, then on a new connection
  EXPECT_EQ(server.requests()[2].body, "{\"n\":2}");
  EXPECT_EQ(server.requests()[2].connection, 2u);
}

TEST(HttpClient, FreshConnectionFailureIsNotRetried) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.drop = true;
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::connection_reset) << a.error_message;
  EXPECT_EQ(a.error_status, 502);
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(HttpClient, IdleConnectionsPastIdleTimeoutAreReplaced) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) { return ok(); });
  llmq::HttpClientOptions options;
  options.idle_timeout = 50ms;
  llmq::HttpClient client(io.get_executor(), options);
  ASSERT_TRUE(run_bounded(io, attempt(client, post(server.url("/")))).response);
  run_bounded(io, sleep_for(120ms));
  ASSERT_TRUE(run_bounded(io, attempt(client, post(server.url("/")))).response);
  EXPECT_EQ(server.accepted(), 2u);
  EXPECT_TRUE(run_bounded(io, wait_until([&] { return server.open() == 1; })));  // old one closed
}

awaitable<void> hammer(std::shared_ptr<llmq::HttpClient> client, std::string url, int count,
                       std::atomic<int>& succeeded, std::atomic<int>& failed) {
  for (int i = 0; i < count; ++i) {
    try {
      const llmq::HttpResponse r = co_await client->request(post(url));
      (r.status == 200 ? succeeded : failed).fetch_add(1);
    } catch (const std::exception&) {
      failed.fetch_add(1);
    }
  }
}

TEST(HttpClient, ConcurrentUseFromSeveralThreadsAndStrands) {
  asio::io_context server_io;
  LoopbackServer server(server_io, [](const ReceivedRequest&) {
    Reply r = ok();
    r.delay = 1ms;
    return r;
  });
  std::thread server_thread([&server_io] { server_io.run(); });

  asio::io_context client_io;
  auto work = asio::make_work_guard(client_io);
  llmq::HttpClientOptions options;
  options.max_connections_per_host = 4;
  auto client = std::make_shared<llmq::HttpClient>(client_io.get_executor(), options);
  std::atomic<int> succeeded{0};
  std::atomic<int> failed{0};
  constexpr int kTasks = 16;
  constexpr int kEach = 10;
  for (int i = 0; i < kTasks; ++i) {
    asio::co_spawn(asio::make_strand(client_io),
                   hammer(client, server.url("/"), kEach, succeeded, failed), asio::detached);
  }
  std::thread a([&client_io] { client_io.run(); });
  std::thread b([&client_io] { client_io.run(); });
  const auto deadline = Clock::now() + 20s;
  while (succeeded + failed < kTasks * kEach && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  client->close();
  work.reset();
  client.reset();
  a.join();
  b.join();
  asio::post(server_io, [&server] { server.stop(); });
  server_io.stop();
  server_thread.join();

  EXPECT_EQ(succeeded.load(), kTasks * kEach);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_LE(server.max_open(), 4u);
  EXPECT_LE(server.accepted(), 4u);
}

// ---- failures -----------------------------------------------------------------------------

TEST(HttpClient, ConnectionRefusedIsConnectFailed) {
  asio::io_context io;
  unsigned short port = 0;
  {
    asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
    port = probe.local_endpoint().port();
  }  // closed: nothing listens there now
  llmq::HttpClient client(io.get_executor());
  const Attempt a =
      run_bounded(io, attempt(client, post("http://127.0.0.1:" + std::to_string(port) + "/x")));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::connect_failed) << a.error_message;
  EXPECT_EQ(a.error_status, 503);
  EXPECT_NE(a.error_message.find(std::to_string(port)), std::string::npos);
}

TEST(HttpClient, StallingServerHitsRequestTimeout) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  llmq::HttpClientOptions options;
  options.request_timeout = 200ms;
  llmq::HttpClient client(io.get_executor(), options);
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::request_timeout) << a.error_message;
  EXPECT_EQ(a.error_status, 504);
  EXPECT_GE(a.elapsed, 150ms);
  EXPECT_LT(a.elapsed, 3s);
  EXPECT_TRUE(run_bounded(io, wait_until([&] { return server.open() == 0; })));
}

TEST(HttpClient, SlowChunksHitRequestTimeoutMidBody) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.chunks = {"a", "b", "c", "d"};
    r.chunk_delay = 150ms;
    return r;
  });
  llmq::HttpClientOptions options;
  options.request_timeout = 250ms;
  llmq::HttpClient client(io.get_executor(), options);
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::request_timeout) << a.error_message;
}

TEST(HttpClient, TruncatedBodyIsAnError) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    Reply r;
    if (req.target == "/length") {
      r.raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
    } else {
      r.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    }
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  for (const char* path : {"/length", "/chunked"}) {
    SCOPED_TRACE(path);
    const Attempt a = run_bounded(io, attempt(client, post(server.url(path))));
    ASSERT_TRUE(a.error) << (a.response ? a.response->body : std::string());
    EXPECT_TRUE(*a.error == llmq::http_errc::connection_reset ||
                *a.error == llmq::http_errc::bad_response)
        << a.error_message;
    EXPECT_EQ(a.error_status, 502);
  }
}

TEST(HttpClient, GarbageResponseIsBadResponse) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.raw = "SMTP ready\r\n\r\n";
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::bad_response) << a.error_message;
}

TEST(HttpClient, OversizeBodyIsResponseTooLarge) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    Reply r;
    if (req.target == "/length") {
      r.body = std::string(5000, 'x');
    } else {
      r.chunks = std::vector<std::string>(10, std::string(300, 'y'));
    }
    return r;
  });
  llmq::HttpClientOptions options;
  options.max_response_bytes = 1000;
  llmq::HttpClient client(io.get_executor(), options);
  for (const char* path : {"/length", "/chunked"}) {
    SCOPED_TRACE(path);
    const Attempt a = run_bounded(io, attempt(client, post(server.url(path))));
    ASSERT_TRUE(a.error);
    EXPECT_EQ(*a.error, llmq::http_errc::response_too_large) << a.error_message;
  }
  // Within the limit is fine.
  options.max_response_bytes = 5000;
  llmq::HttpClient roomy(io.get_executor(), options);
  const Attempt fits = run_bounded(io, attempt(roomy, post(server.url("/length"))));
  ASSERT_TRUE(fits.response) << fits.error_message;
  EXPECT_EQ(fits.response->body.size(), 5000u);
}

TEST(HttpClient, BadUrlsAndHeadersAreRejectedWithoutLeakingValues) {
  asio::io_context io;
  llmq::HttpClient client(io.get_executor());
  for (const char* url : {"ftp://127.0.0.1/", "http://", "127.0.0.1:80/x", "http://h:99999/"}) {
    const Attempt a = run_bounded(io, attempt(client, post(url)));
    ASSERT_TRUE(a.error) << url;
    EXPECT_EQ(*a.error, llmq::http_errc::bad_url);
  }
  llmq::HttpRequest req = post("http://127.0.0.1:1/");
  req.headers.emplace_back("api-key", "SECRET-VALUE\r\nX-Injected: 1");
  const Attempt a = run_bounded(io, attempt(client, req));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::bad_request);
  EXPECT_EQ(a.error_message.find("SECRET"), std::string::npos) << a.error_message;
}

// ---- cancellation and close --------------------------------------------------------------

/// Runs a request with a cancellation slot; cancels it after `after`; returns the attempt
/// and how long the cancellation took to complete it.
awaitable<std::pair<Attempt, std::chrono::milliseconds>> cancel_after(
    llmq::HttpClient& client, llmq::HttpRequest req, std::chrono::milliseconds after) {
  auto ex = co_await asio::this_coro::executor;
  asio::cancellation_signal signal;
  std::optional<Attempt> result;
  auto task = attempt(client, std::move(req));
  asio::co_spawn(
      ex, std::move(task),
      asio::bind_cancellation_slot(
          signal.slot(), [&result](std::exception_ptr, Attempt a) { result = std::move(a); }));
  co_await sleep_for(after);
  const auto cancelled_at = Clock::now();
  signal.emit(asio::cancellation_type::terminal);
  const bool finished = co_await wait_until([&] { return result.has_value(); });
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - cancelled_at);
  if (!finished) throw std::runtime_error("cancelled request never completed");
  co_return std::make_pair(std::move(*result), took);
}

TEST(HttpClient, CallerCancellationAbortsPromptlyAndClosesTheConnection) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  const auto [a, took] = run_bounded(io, cancel_after(client, post(server.url("/")), 100ms));
  EXPECT_TRUE(a.aborted) << a.error_message;
  EXPECT_FALSE(a.response);
  EXPECT_LT(took, 500ms);
  EXPECT_TRUE(run_bounded(io, wait_until([&] { return server.open() == 0; })));
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(HttpClient, CancellingAWaiterForAPooledConnection) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest& req) {
    Reply r = ok();
    r.stall = req.body == "{\"stall\":1}";
    return r;
  });
  llmq::HttpClientOptions options;
  options.max_connections_per_host = 1;
  llmq::HttpClient client(io.get_executor(), options);
  // The first request holds the only connection until it is cancelled.
  std::vector<std::optional<Attempt>> holder;
  asio::cancellation_signal holder_signal;
  holder.resize(1);
  asio::co_spawn(
      io, attempt(client, post(server.url("/"), "{\"stall\":1}")),
      asio::bind_cancellation_slot(holder_signal.slot(), [&holder](std::exception_ptr, Attempt a) {
        holder[0] = std::move(a);
      }));
  const auto [waiter, took] = run_bounded(io, cancel_after(client, post(server.url("/")), 100ms));
  EXPECT_TRUE(waiter.aborted) << waiter.error_message;
  EXPECT_LT(took, 500ms);
  EXPECT_EQ(server.requests().size(), 1u);  // the waiter never got to send
  holder_signal.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(run_bounded(io, wait_until([&] { return all_done(holder); })));
  EXPECT_TRUE(holder[0]->aborted);
  // The slot is free again.
  const Attempt after = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(after.response) << after.error_message;
}

TEST(HttpClient, CloseFailsInFlightAndLaterRequests) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.stall = true;
    return r;
  });
  auto client = std::make_unique<llmq::HttpClient>(io.get_executor());
  std::vector<std::optional<Attempt>> results;
  spawn_attempts(io, *client, server.url("/"), 1, results);
  ASSERT_TRUE(run_bounded(io, wait_until([&] { return server.requests().size() == 1; })));
  client->close();
  ASSERT_TRUE(run_bounded(io, wait_until([&] { return all_done(results); })));
  ASSERT_TRUE(results[0]->error);
  EXPECT_EQ(*results[0]->error, llmq::http_errc::client_closed);
  const Attempt later = run_bounded(io, attempt(*client, post(server.url("/"))));
  ASSERT_TRUE(later.error);
  EXPECT_EQ(*later.error, llmq::http_errc::client_closed);
  EXPECT_TRUE(run_bounded(io, wait_until([&] { return server.open() == 0; })));
  client.reset();  // destroying a closed client is fine
}

// ---- streaming ------------------------------------------------------------------------------

TEST(HttpClient, StreamingDeliversTheHeadThenPiecesAsTheyArrive) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.headers.emplace_back("Content-Type", "text/event-stream");
    r.chunks = {"data: 1\n\n", "data: 2\n\n", "data: [DONE]\n\n"};
    r.chunk_delay = 30ms;
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  int heads = 0;
  int status = 0;
  bool head_first = true;
  std::vector<std::string> pieces;
  run_bounded(io, client.request_streaming(
                      post(server.url("/stream")),
                      [&](const llmq::HttpResponse& head) {
                        ++heads;
                        status = head.status;
                        EXPECT_TRUE(head.body.empty());
                        EXPECT_EQ(head.header("content-type"), "text/event-stream");
                      },
                      [&](std::string_view piece) {
                        head_first = head_first && heads == 1;
                        pieces.emplace_back(piece);
                      }));
  EXPECT_EQ(heads, 1);
  EXPECT_EQ(status, 200);
  EXPECT_TRUE(head_first);
  EXPECT_GE(pieces.size(), 3u);  // the delays keep the pieces apart
  std::string all;
  for (const auto& p : pieces) all += p;
  EXPECT_EQ(all, "data: 1\n\ndata: 2\n\ndata: [DONE]\n\n");
  // The connection went back to the pool.
  ASSERT_TRUE(run_bounded(io, attempt(client, post(server.url("/")))).response);
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClient, ExceptionFromAStreamingCallbackAbortsTheRequest) {
  asio::io_context io;
  LoopbackServer server(io, [](const ReceivedRequest&) {
    Reply r;
    r.chunks = {"one", "two"};
    r.chunk_delay = 20ms;
    return r;
  });
  llmq::HttpClient client(io.get_executor());
  EXPECT_THROW(run_bounded(io, client.request_streaming(
                                   post(server.url("/")), nullptr,
                                   [](std::string_view) { throw std::logic_error("stop"); })),
               std::logic_error);
  EXPECT_TRUE(run_bounded(io, wait_until([&] { return server.open() == 0; })));
}

// ---- TLS --------------------------------------------------------------------------------------

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("llmq-provider-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
             ".pem");
    std::ofstream(path_) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  [[nodiscard]] std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

class HttpClientTls : public ::testing::Test {
 protected:
  void SetUp() override {
    server_cert_ = llmq::testing::make_test_certificate("llmq test server", "IP:127.0.0.1");
    server_tls_ = llmq::testing::make_server_tls_context(server_cert_);
  }

  llmq::testing::TestCertificate server_cert_;
  std::unique_ptr<asio::ssl::context> server_tls_;
};

TEST_F(HttpClientTls, TrustedCertificateWorksAndConnectionIsReused) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return ok(); }, server_tls_.get());
  const TempFile ca(server_cert_.cert_pem);
  llmq::HttpClientOptions options;
  options.ca_file = ca.path();
  llmq::HttpClient client(io.get_executor(), options);
  for (int i = 0; i < 2; ++i) {
    const Attempt a = run_bounded(io, attempt(client, post(server.url("/tls"))));
    ASSERT_TRUE(a.response) << a.error_message;
    EXPECT_EQ(a.response->body, "{\"ok\":true}");
  }
  EXPECT_EQ(server.accepted(), 1u);
  EXPECT_EQ(server.requests()[1].target, "/tls");
}

TEST_F(HttpClientTls, VerificationIsOnByDefault) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return ok(); }, server_tls_.get());
  llmq::HttpClient client(io.get_executor());  // system trust store: self-signed is untrusted
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::tls_failed) << a.error_message;
  EXPECT_EQ(a.error_status, 503);
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(HttpClientTls, WrongCaFileFails) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return ok(); }, server_tls_.get());
  const auto other = llmq::testing::make_test_certificate("someone else", "IP:127.0.0.1");
  const TempFile ca(other.cert_pem);
  llmq::HttpClientOptions options;
  options.ca_file = ca.path();
  llmq::HttpClient client(io.get_executor(), options);
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::tls_failed) << a.error_message;
}

TEST_F(HttpClientTls, HostNameMismatchFails) {
  asio::io_context io;
  const auto misnamed = llmq::testing::make_test_certificate("other", "DNS:other.example");
  auto tls = llmq::testing::make_server_tls_context(misnamed);
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return ok(); }, tls.get());
  const TempFile ca(misnamed.cert_pem);  // trusted, but not for 127.0.0.1
  llmq::HttpClientOptions options;
  options.ca_file = ca.path();
  llmq::HttpClient client(io.get_executor(), options);
  const Attempt a = run_bounded(io, attempt(client, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::tls_failed) << a.error_message;
}

TEST_F(HttpClientTls, MissingCaFileFailsAndVerifyPeerOffAcceptsAnything) {
  asio::io_context io;
  LoopbackServer server(
      io, [](const ReceivedRequest&) { return ok(); }, server_tls_.get());
  llmq::HttpClientOptions missing;
  missing.ca_file = "/nonexistent/llmq-ca.pem";
  llmq::HttpClient strict(io.get_executor(), missing);
  const Attempt a = run_bounded(io, attempt(strict, post(server.url("/"))));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(*a.error, llmq::http_errc::tls_failed) << a.error_message;

  llmq::HttpClientOptions lax;
  lax.verify_peer = false;
  llmq::HttpClient trusting(io.get_executor(), lax);
  const Attempt b = run_bounded(io, attempt(trusting, post(server.url("/"))));
  ASSERT_TRUE(b.response) << b.error_message;
}

}  // namespace
