// llmq-demo: drives a realistic burst through llmq-gateway in front of llmq-mock-azure and
// prints what happened. Started by scripts/demo.sh, which starts both servers.
//
//   llmq-demo --gateway http://127.0.0.1:PORT --mock http://127.0.0.1:PORT [--seconds 16]
//             [--plot FILE.svg]
//
// Twelve users send a mix of chat, embeddings and RAG (embeddings, then chat) requests;
// two of them send far more than their limit. Halfway through, one deployment starts
// answering 429 (the mock is told to); the gateway backs off from it and moves its work
// to the others. While it runs it names the gateway's live dashboard; every second it
// reads the gateway's /stats, and at the end it writes a plot of the run (queue depth,
// each deployment's share of requests over time) to an SVG file. Exit code 0 when every
// request got an HTTP answer.

#include "run_plot.hpp"

#include <llmq/http_client.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <sstream>

namespace asio = boost::asio;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  std::string gateway;
  std::string mock;
  int seconds = 16;
  std::string throttle = "gpt-4o-west";
  std::string plot = "demo-plot.svg";
};

struct UserStats {
  int sent = 0;
  int ok = 0;
  int limited = 0;  // 429 from the user's own limit
  int other = 0;    // any other non-200
};

struct Totals {
  std::map<std::string, UserStats> users;
  std::vector<double> latency_ms;
  int sent = 0, ok = 0, limited = 0, upstream_429 = 0, other = 0, transport = 0, in_flight = 0;
  bool throttled = false;
};

json chat_body(const std::string& text) {
  return json{{"model", "gpt-4o"},
              {"messages", json::array({{{"role", "system"}, {"content", "You answer briefly."}},
                                        {{"role", "user"}, {"content", text}}})},
              {"max_tokens", 64}};
}

json embeddings_body(const std::string& text) {
  return json{{"model", "text-embedding-3-small"}, {"input", json::array({text, text + " (2)"})}};
}

llmq::HttpRequest make_post(const std::string& url, const std::string& user, const json& body) {
  llmq::HttpRequest r;
  r.method = "POST";
  r.url = url;
  r.headers = {{"content-type", "application/json"}, {"x-user-id", user}};
  r.body = body.dump();
  return r;
}

llmq::HttpRequest make_request(const std::string& method, const std::string& url,
                               std::string body) {
  llmq::HttpRequest r;
  r.method = method;
  r.url = url;
  r.headers = {{"content-type", "application/json"}};
  r.body = std::move(body);
  return r;
}

std::string throttle_faults() {
  return json{{"force_429", true}, {"force_429_retry_after_ms", 3000}}.dump();
}

std::vector<std::string> demo_users() {
  return {"alice", "bob",   "carol", "dave", "erin",    "frank",
          "grace", "heidi", "ivan",  "judy", "mallory", "niaj"};
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

/// One call through the gateway; classifies the answer.
asio::awaitable<int> call(llmq::HttpClient& client, Totals& t, const std::string& user,
                          const std::string& url, json body) {
  ++t.sent;
  ++t.users[user].sent;
  ++t.in_flight;
  const auto start = Clock::now();
  int status = 0;
  try {
    llmq::HttpResponse r = co_await client.request(make_post(url, user, body));
    status = r.status;
    if (status == 429) {
      // The gateway's own refusal says so in its error code; an upstream 429 is passed through.
      const json j = json::parse(r.body, nullptr, false);
      const bool user_limit = j.is_object() && j.contains("error") && j["error"].is_object() &&
                              j["error"].value("code", "") == "user_rate_limit_exceeded";
      if (user_limit) {
        ++t.limited;
        ++t.users[user].limited;
      } else {
        ++t.upstream_429;
        ++t.users[user].other;
      }
    } else if (status == 200) {
      ++t.ok;
      ++t.users[user].ok;
      t.latency_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    } else {
      ++t.other;
      ++t.users[user].other;
    }
  } catch (const std::exception& e) {
    ++t.transport;
    std::cerr << "transport error: " << e.what() << "\n";
  }
  --t.in_flight;
  co_return status;
}

/// One request of the mix: chat, embeddings, or RAG (embeddings, then chat).
asio::awaitable<void> one_request(llmq::HttpClient& client, Totals& t, const Args& a,
                                  std::string user, std::string text, double kind) {
  // Note: each co_await stands alone in its statement (g++ 12 mishandles co_await inside
  // conditions with temporaries).
  const std::string chat_url = a.gateway + "/v1/chat/completions";
  const std::string embeddings_url = a.gateway + "/v1/embeddings";
  if (kind < 0.6) {
    co_await call(client, t, user, chat_url, chat_body(text));
    co_return;
  }
  const int status = co_await call(client, t, user, embeddings_url, embeddings_body(text));
  if (kind >= 0.85 && status == 200) {  // RAG: the chat call uses what was retrieved
    co_await call(client, t, user, chat_url, chat_body(text + " [context]"));
  }
}

/// A user sending requests at `per_second` on average. A batch user fires without waiting
/// for answers (so it can exceed its limit); an interactive user waits for each answer.
asio::awaitable<void> user_loop(llmq::HttpClient& client, Totals& t, const Args& a,
                                std::string user, double per_second, bool batch, unsigned seed,
                                Clock::time_point end) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::exponential_distribution<double> gap(per_second);
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex);
  int n = 0;
  while (Clock::now() < end) {
    timer.expires_after(std::chrono::microseconds(static_cast<long>(gap(rng) * 1e6)));
    co_await timer.async_wait(asio::use_awaitable);
    std::string text = "Question " + std::to_string(++n) + " from " + user;
    const double kind = u(rng);
    if (batch) {
      asio::co_spawn(ex, one_request(client, t, a, user, std::move(text), kind), asio::detached);
    } else {
      co_await one_request(client, t, a, user, std::move(text), kind);
    }
  }
}

std::string bar(double share) {
  return std::string(static_cast<std::size_t>(share * 40 + 0.5), '#');
}

double number_in(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

/// What the run's plot keeps of one /stats document (docs/dashboard.md), taken `seconds`
/// into the run: the queue's depth and in-flight count, and the requests each deployment
/// got since the previous sample (`seen`: the counts then, by deployment).
void record_sample(llmq::demo::RunPlot& plot, std::map<std::string, double>& seen,
                   const std::string& stats_body, double seconds) {
  const json doc = json::parse(stats_body, nullptr, false);
  if (!doc.is_object() || !doc.contains("queue") || !doc.contains("deployments") ||
      !doc["deployments"].is_array())
    return;
  llmq::demo::RunSample s;
  s.seconds = seconds;
  s.depth = number_in(doc["queue"], "depth");
  s.in_flight = number_in(doc["queue"], "in_flight");
  for (const json& d : doc["deployments"]) {
    const std::string name = d.is_object() ? d.value("name", std::string()) : std::string();
    if (name.empty()) continue;
    if (std::find(plot.deployments.begin(), plot.deployments.end(), name) == plot.deployments.end())
      plot.deployments.push_back(name);
    const double requests = number_in(d, "requests");
    const auto before = seen.find(name);
    s.requests.push_back(before == seen.end() ? 0.0 : requests - before->second);
    seen[name] = requests;
  }
  plot.samples.push_back(std::move(s));
}

/// Requests dispatched after waiting for a deployment's window, summed over deployments.
double paced_total(const std::string& stats_body) {
  const json doc = json::parse(stats_body, nullptr, false);
  double n = 0;
  if (doc.is_object() && doc.contains("deployments") && doc["deployments"].is_array())
    for (const json& d : doc["deployments"]) n += number_in(d, "paced");
  return n;
}

/// GET /stats, or an empty body when the gateway does not answer.
asio::awaitable<std::string> read_stats(llmq::HttpClient& client, const std::string& gateway) {
  try {
    llmq::HttpResponse r = co_await client.request(make_request("GET", gateway + "/stats", ""));
    if (r.status == 200) co_return std::move(r.body);
  } catch (const std::exception&) {
  }
  co_return std::string();
}

asio::awaitable<int> run(Args a) {
  auto ex = co_await asio::this_coro::executor;
  llmq::HttpClientOptions options;
  options.max_connections_per_host = 64;
  options.request_timeout = std::chrono::seconds(60);
  llmq::HttpClient client(ex, options);
  Totals t;

  // Reset the mock so its counters describe this run only.
  co_await client.request(make_request("POST", a.mock + "/mock/reset", ""));

  const auto start = Clock::now();
  const auto end = start + std::chrono::seconds(a.seconds);
  int users_done = 0;
  const std::vector<std::string> names = demo_users();
  for (std::size_t i = 0; i < names.size(); ++i) {
    // alice and bob are batch jobs sending about 6 requests/s, far over a 40-per-minute
    // limit; the others are interactive.
    const bool batch = i < 2;
    const double rate = batch ? 6.0 : 1.4;
    asio::co_spawn(
        ex, user_loop(client, t, a, names[i], rate, batch, 1000 + static_cast<unsigned>(i), end),
        [&](std::exception_ptr) { ++users_done; });
  }

  asio::steady_timer tick(ex);
  llmq::demo::RunPlot plot;
  plot.title = "llmq demo: " + std::to_string(names.size()) + " users for " +
               std::to_string(a.seconds) + " s";
  std::map<std::string, double> seen;
  const std::string first_stats = co_await read_stats(client, a.gateway);
  record_sample(plot, seen, first_stats, 0.0);
  std::printf("llmq demo: %zu users for %d s against %s\n", names.size(), a.seconds,
              a.gateway.c_str());
  std::printf("  live dashboard while it runs: %s/dashboard\n", a.gateway.c_str());
  while (users_done < static_cast<int>(names.size()) || t.in_flight > 0) {
    tick.expires_after(std::chrono::seconds(1));
    co_await tick.async_wait(asio::use_awaitable);
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - start).count();
    const double since_start = std::chrono::duration<double>(Clock::now() - start).count();
    const std::string stats_now = co_await read_stats(client, a.gateway);
    record_sample(plot, seen, stats_now, since_start);
    if (!t.throttled && elapsed >= a.seconds / 2) {
      t.throttled = true;
      co_await client.request(make_request(
          "PUT", a.mock + "/mock/deployments/" + a.throttle + "/faults", throttle_faults()));
      std::printf("  t=%2llds  >>> deployment %s starts answering 429 <<<\n",
                  static_cast<long long>(elapsed), a.throttle.c_str());
    }
    std::printf(
        "  t=%2llds  sent %4d  ok %4d  user-limited %3d  upstream-429 %2d  other %2d  in flight "
        "%2d\n",
        static_cast<long long>(elapsed), t.sent, t.ok, t.limited, t.upstream_429, t.other,
        t.in_flight);
    std::fflush(stdout);
  }

  const json stats =
      json::parse((co_await client.request(make_request("GET", a.mock + "/mock/stats", ""))).body,
                  nullptr, false);
  const std::string final_stats = co_await read_stats(client, a.gateway);

  std::printf("\nPer user (limit: 40 requests per 60 s)\n");
  std::printf("  %-9s %6s %9s %9s %7s\n", "user", "sent", "admitted", "rejected", "errors");
  for (const auto& [name, u] : t.users)
    std::printf("  %-9s %6d %9d %9d %7d\n", name.c_str(), u.sent, u.sent - u.limited, u.limited,
                u.other);

  std::printf("\nPer deployment (as the mock Azure server counted)\n");
  std::printf("  %-24s %8s %7s %6s %7s %9s\n", "deployment", "requests", "share", "429s", "max/1s",
              "tokens");
  double total_requests = 0;
  int upstream_429s = 0;
  const json deployments =
      stats.is_object() && stats.contains("deployments") ? stats["deployments"] : json::object();
  auto get = [](const json& d, const char* k) {
    return d.contains(k) && d[k].is_number() ? d[k].get<double>() : 0.0;
  };
  for (const auto& [name, d] : deployments.items()) total_requests += get(d, "requests");
  for (const auto& [name, d] : deployments.items()) {
    const double req = get(d, "requests");
    const double share = total_requests > 0 ? req / total_requests : 0;
    upstream_429s += static_cast<int>(get(d, "rate_limited"));
    std::printf("  %-24s %8.0f %6.1f%% %6.0f %7.0f %9.0f  %s\n", name.c_str(), req, share * 100,
                get(d, "rate_limited"), get(d, "max_requests_in_1s"),
                get(d, "prompt_tokens") + get(d, "completion_tokens"), bar(share).c_str());
  }

  const double paced = paced_total(final_stats);
  std::printf("\n429s\n");
  std::printf(
      "  received from upstream: %d (all after %s was told to throttle; each was retried\n"
      "    on another deployment while it backed off)\n",
      upstream_429s, a.throttle.c_str());
  std::printf(
      "  avoided by pacing: %.0f requests waited in the queue for a deployment's\n"
      "    1 s / 10 s / 60 s window instead of being sent into a 429\n",
      paced);
  std::printf("  returned to callers over their own limit: %d\n", t.limited);
  std::printf(
      "\nLatency of successful requests (client side): p50 %.1f ms  p90 %.1f ms  p99 %.1f ms\n",
      percentile(t.latency_ms, 0.5), percentile(t.latency_ms, 0.9), percentile(t.latency_ms, 0.99));
  std::printf(
      "Requests: %d sent, %d ok, %d user-limited, %d upstream 429 passed on, %d other, %d "
      "transport errors\n",
      t.sent, t.ok, t.limited, t.upstream_429, t.other, t.transport);
  if (llmq::demo::write_svg(plot, a.plot))
    std::printf("\nPlot of the run (queue depth, each deployment's share of requests): %s\n",
                a.plot.c_str());
  else
    std::fprintf(stderr, "llmq-demo: could not write the plot to %s\n", a.plot.c_str());
  client.close();
  co_return t.transport == 0 && t.sent > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--gateway")
      a.gateway = argv[i + 1];
    else if (k == "--mock")
      a.mock = argv[i + 1];
    else if (k == "--seconds")
      a.seconds = std::max(4, std::stoi(argv[i + 1]));
    else if (k == "--throttle")
      a.throttle = argv[i + 1];
    else if (k == "--plot")
      a.plot = argv[i + 1];
    else {
      std::cerr << "unknown option " << k << "\n";
      return 2;
    }
  }
  if (a.gateway.empty() || a.mock.empty()) {
    std::cerr << "usage: llmq-demo --gateway URL --mock URL [--seconds N] [--plot FILE.svg]\n";
    return 2;
  }
  asio::io_context io(1);
  int rc = 1;
  asio::co_spawn(io, run(a), [&](std::exception_ptr ep, int code) {
    if (ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        std::cerr << "llmq-demo: " << e.what() << "\n";
      }
      return;
    }
    rc = code;
  });
  io.run();
  return rc;
}
