// The "llmq" error category of http_errc, HttpError, and HttpResponse::header.

#include <llmq/http_client.hpp>

#include <cctype>

namespace llmq {
namespace {

// boost::system::error_category has a protected non-virtual destructor by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class HttpErrorCategory final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "llmq"; }

  [[nodiscard]] std::string message(int ev) const override {
    switch (static_cast<http_errc>(ev)) {
      case http_errc::connect_failed:
        return "could not connect to the server";
      case http_errc::connect_timeout:
        return "connecting to the server timed out";
      case http_errc::request_timeout:
        return "the request timed out";
      case http_errc::connection_reset:
        return "the connection closed before the response was complete";
      case http_errc::response_too_large:
        return "the response exceeds the size limit";
      case http_errc::bad_response:
        return "the server sent an invalid HTTP response";
      case http_errc::tls_failed:
        return "the TLS handshake failed";
      case http_errc::bad_url:
        return "the URL is not a valid http:// or https:// URL";
      case http_errc::bad_request:
        return "the request is malformed";
      case http_errc::client_closed:
        return "the HTTP client was closed";
    }
    return "unknown llmq HTTP error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& http_category() noexcept {
  static const HttpErrorCategory category;
  return category;
}

boost::system::error_code make_error_code(http_errc e) noexcept {
  return {static_cast<int>(e), http_category()};
}

std::string_view to_string(http_errc e) noexcept {
  switch (e) {
    case http_errc::connect_failed:
      return "connect_failed";
    case http_errc::connect_timeout:
      return "connect_timeout";
    case http_errc::request_timeout:
      return "request_timeout";
    case http_errc::connection_reset:
      return "connection_reset";
    case http_errc::response_too_large:
      return "response_too_large";
    case http_errc::bad_response:
      return "bad_response";
    case http_errc::tls_failed:
      return "tls_failed";
    case http_errc::bad_url:
      return "bad_url";
    case http_errc::bad_request:
      return "bad_request";
    case http_errc::client_closed:
      return "client_closed";
  }
  return "unknown";
}

int http_status_of(http_errc e) noexcept {
  switch (e) {
    case http_errc::connect_failed:
    case http_errc::connect_timeout:
    case http_errc::tls_failed:
    case http_errc::client_closed:
      return 503;
    case http_errc::request_timeout:
      return 504;
    case http_errc::connection_reset:
    case http_errc::response_too_large:
    case http_errc::bad_response:
      return 502;
    case http_errc::bad_url:
    case http_errc::bad_request:
      return 500;
  }
  return 502;
}

HttpError::HttpError(http_errc code, const std::string& message)
    : Error(message, http_status_of(code)), errc_(code), code_(make_error_code(code)) {}

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < key.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(key[i])) ==
             std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (same) return value;
  }
  return std::nullopt;
}

}  // namespace llmq
