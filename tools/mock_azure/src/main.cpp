/// @file main.cpp
/// llmq-mock-azure: the mock Azure OpenAI server as a program (demos, benchmarks).
///
///   llmq-mock-azure --config mock.yaml [--host 127.0.0.1] [--port 0] [--port-file PATH]
///                   [--threads N] [--allow-any-host] [--verbose]
///
/// Prints "listening on http://HOST:PORT" on stdout once it accepts connections, writes
/// the port to --port-file (atomically, via rename) when given, and exits 0 on SIGINT or
/// SIGTERM. Exit codes: 0 normal, 1 runtime failure (e.g. cannot bind), 2 bad usage or
/// bad configuration. Logs go to stderr; keys are never logged.

#include <llmq/mock/config.hpp>
#include <llmq/mock/server.hpp>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

constexpr std::string_view kUsage =
    "usage: llmq-mock-azure --config FILE [--host ADDR] [--port N] [--port-file PATH]\n"
    "                       [--threads N] [--allow-any-host] [--verbose]\n"
    "  --config FILE     YAML configuration (see tools/mock_azure/README.md)\n"
    "  --host ADDR       listen address (default 127.0.0.1; non-loopback needs\n"
    "                    --allow-any-host)\n"
    "  --port N          listen port (default 0: any free port)\n"
    "  --port-file PATH  write the bound port to PATH\n"
    "  --threads N       io_context threads (default 1)\n"
    "  --allow-any-host  allow a non-loopback --host\n"
    "  --verbose         log every request to stderr\n";

struct Options {
  std::string config;
  std::string host = "127.0.0.1";
  unsigned short port = 0;
  std::string port_file;
  unsigned threads = 1;
  bool allow_any_host = false;
  bool verbose = false;
};

/// Parses the command line; returns nothing after printing why it is unusable.
std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto bad = [](std::string_view why) {
    std::cerr << "llmq-mock-azure: " << why << "\n" << kUsage;
    return std::optional<Options>();
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    auto value = [&](std::string_view& out) {
      if (i + 1 >= args.size()) return false;
      out = args[++i];
      return true;
    };
    auto number = [&](std::string_view text, unsigned long max, unsigned long& out) {
      const auto* end = text.data() + text.size();
      auto [ptr, ec] = std::from_chars(text.data(), end, out);
      return ec == std::errc() && ptr == end && out <= max;
    };
    std::string_view v;
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--config") {
      if (!value(v)) return bad("--config needs a file");
      o.config = std::string(v);
    } else if (a == "--host") {
      if (!value(v)) return bad("--host needs an address");
      o.host = std::string(v);
    } else if (a == "--port") {
      unsigned long p = 0;
      if (!value(v) || !number(v, 65535, p)) return bad("--port needs a number in 0..65535");
      o.port = static_cast<unsigned short>(p);
    } else if (a == "--port-file") {
      if (!value(v)) return bad("--port-file needs a path");
      o.port_file = std::string(v);
    } else if (a == "--threads") {
      unsigned long t = 0;
      if (!value(v) || !number(v, 256, t) || t == 0)
        return bad("--threads needs a number in 1..256");
      o.threads = static_cast<unsigned>(t);
    } else if (a == "--allow-any-host") {
      o.allow_any_host = true;
    } else if (a == "--verbose") {
      o.verbose = true;
    } else {
      return bad("unknown argument " + std::string(a));
    }
  }
  if (o.config.empty()) return bad("--config is required");
  return o;
}

void write_port_file(const std::string& path, unsigned short port) {
  const std::filesystem::path target(path);
  std::filesystem::path tmp = target;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp.string());
  }
  std::filesystem::rename(tmp, target);
}

}  // namespace

int main(int argc, char** argv) {
  const auto opts = parse_args(argc, argv);
  if (!opts) return kExitUsage;

  auto logger = spdlog::stderr_color_mt("llmq-mock-azure");
  spdlog::set_default_logger(logger);
  spdlog::set_level(opts->verbose ? spdlog::level::debug : spdlog::level::info);

  llmq::mock::MockConfig cfg;
  try {
    cfg = llmq::mock::load_mock_config(opts->config);
  } catch (const llmq::mock::MockConfigError& e) {
    std::cerr << "llmq-mock-azure: " << e.what() << "\n";
    return kExitUsage;
  }
  if (opts->allow_any_host) cfg.allow_any_host = true;

  boost::asio::io_context ioc(static_cast<int>(opts->threads));
  try {
    llmq::mock::MockAzureServer server(ioc.get_executor(), std::move(cfg));
    try {
      server.listen(opts->host, opts->port);
    } catch (const std::invalid_argument& e) {
      std::cerr << e.what() << " (pass --allow-any-host)\n";
      return kExitUsage;
    } catch (const std::exception& e) {
      std::cerr << "llmq-mock-azure: cannot listen on " << opts->host << ":" << opts->port << ": "
                << e.what() << "\n";
      return kExitRuntime;
    }
    if (!opts->port_file.empty()) write_port_file(opts->port_file, server.port());
    std::cout << "listening on " << server.base_url() << std::endl;

    boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int signo) {
      if (ec) return;
      spdlog::info("signal {}: stopping", signo);
      server.stop();
      ioc.stop();
    });

    std::vector<std::thread> pool;
    for (unsigned i = 1; i < opts->threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& t : pool) t.join();
  } catch (const std::exception& e) {
    std::cerr << "llmq-mock-azure: " << e.what() << "\n";
    return kExitRuntime;
  }
  return 0;
}
