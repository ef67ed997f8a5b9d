// Fuzz target `http_url`: the URL split of HttpClient (deployment endpoints come from
// configuration, redirects and proxies could bring others). A URL that parses must give
// parts a request can be built from, and its origin + target must parse to the same parts.

#include "fuzz_support.hpp"

#include "http_url.hpp"

namespace {

bool clean(std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url = llmq::fuzz::as_text(data, size);
  const std::string for_log = llmq::detail::url_for_log(url);
  LLMQ_FUZZ_CHECK(for_log.find_first_of("?#") == std::string::npos);
  LLMQ_FUZZ_CHECK(url.starts_with(for_log));

  const auto parts = llmq::detail::parse_http_url(url);
  if (!parts) return 0;
  LLMQ_FUZZ_CHECK(!parts->host.empty() && clean(parts->host));
  for (char c : parts->host) LLMQ_FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
  LLMQ_FUZZ_CHECK(parts->port != 0);
  LLMQ_FUZZ_CHECK(!parts->target.empty() && parts->target.front() == '/');
  LLMQ_FUZZ_CHECK(clean(parts->target) && parts->target.find('#') == std::string::npos);
  LLMQ_FUZZ_CHECK(clean(parts->host_header));
  LLMQ_FUZZ_CHECK(parts->host_header.find('@') == std::string::npos);

  const auto again = llmq::detail::parse_http_url(parts->origin() + parts->target);
  LLMQ_FUZZ_CHECK(again.has_value());
  LLMQ_FUZZ_CHECK(again->tls == parts->tls && again->host == parts->host);
  LLMQ_FUZZ_CHECK(again->port == parts->port && again->target == parts->target);
  LLMQ_FUZZ_CHECK(again->host_is_ip == parts->host_is_ip);
  LLMQ_FUZZ_CHECK(again->host_header == parts->host_header);
  return 0;
}
