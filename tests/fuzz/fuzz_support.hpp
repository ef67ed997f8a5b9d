#pragma once
// Shared pieces of the fuzz targets: a property check that aborts (libFuzzer then reports
// the input), fuzzer-chosen cuts of a byte stream, a logger that discards, and a
// depth-bounded JSON parse.

#include <llmq/log.hpp>
#include <llmq/request_validation.hpp>

#include <spdlog/logger.h>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

/// A property the target checks: when it does not hold, print it and abort.
#define LLMQ_FUZZ_CHECK(condition)                                                            \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)

namespace llmq::fuzz {

/// The input as text.
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Cuts `stream` into pieces whose lengths `seed` picks: seed 0 gives single bytes, other
/// seeds pseudo-random lengths of 1 up to 4 * (seed % 64) + 1 bytes. Deterministic, so a
/// reproducer replays the same cuts; the targets take the seed from the input's first byte.
inline std::vector<std::string_view> split(std::string_view stream, std::uint8_t seed) {
  std::vector<std::string_view> pieces;
  const std::size_t longest = 4 * (seed % 64U) + 1;
  std::uint32_t state = (seed + 1U) * 2654435761U;
  while (!stream.empty()) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    const std::size_t length = seed == 0 ? 1 : 1 + state % longest;
    pieces.push_back(stream.substr(0, length));
    stream.remove_prefix(pieces.back().size());
  }
  return pieces;
}

/// Routes llmq's log lines nowhere (a logger without sinks): config warnings and gateway
/// errors would otherwise fill the fuzzer's output.
inline void quiet_logs() { llmq::set_logger(std::make_shared<spdlog::logger>("llmq-fuzz")); }

/// Parses `text` with the library's depth-bounded parser (nlohmann's own accepts any
/// depth, and dump(), copies and comparisons of what it returns recurse): nullopt for
/// invalid JSON and for nesting deeper than kDefaultMaxJsonDepth.
inline std::optional<nlohmann::json> parse_json(std::string_view text) {
  nlohmann::json j;
  if (llmq::parse_json_bounded(text, llmq::kDefaultMaxJsonDepth, j)) return std::nullopt;
  return j;
}

}  // namespace llmq::fuzz
