#pragma once
/// @file telemetry_rows.hpp
/// Private helpers shared by the durable telemetry stores: the column set, text
/// sanitising, JSON rendering, and running blocking work off the io_context thread.

#include <llmq/errors.hpp>
#include <llmq/telemetry.hpp>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

namespace llmq::detail::stores {

/// Microseconds since the Unix epoch.
inline std::int64_t micros(WallTime t) noexcept { return t.time_since_epoch().count(); }

/// `s` with every invalid UTF-8 sequence (and, if `replace_nul`, every NUL byte)
/// replaced by U+FFFD, so that a database with a UTF-8 text type accepts it.
inline std::string valid_utf8(std::string_view s, bool replace_nul) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c == 0 && replace_nul) {
        out += replacement;
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1FU;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0FU;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07U;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0U) != 0x80U) {
        ok = false;
      } else {
        cp = (cp << 6) | (cc & 0x3FU);
      }
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if (ok && ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
               (cp >= 0xD800 && cp <= 0xDFFF)))
      ok = false;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += replacement;
      ++i;
    }
  }
  return out;
}

/// JSON text; invalid UTF-8 in strings is replaced rather than thrown on.
inline std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// Columns added to the telemetry table after its first version. The stores create the
/// table with the first version's columns and then add each of these that is missing, so
/// a table made by an earlier llmq is upgraded in place (its rows get the default) and a
/// new one takes the same path.
struct AddedColumn {
  std::string_view name;
  std::string_view postgres_type;
  std::string_view sqlite_type;
};
inline constexpr AddedColumn added_columns[] = {
    {"spillovers", "integer NOT NULL DEFAULT 0", "INTEGER NOT NULL DEFAULT 0"},
    {"streamed", "boolean NOT NULL DEFAULT false", "INTEGER NOT NULL DEFAULT 0"},
    {"time_to_first_token_us", "bigint", "INTEGER"},
    {"stream_duration_us", "bigint", "INTEGER"},
};

/// The columns of the first version's table that the stores insert (all but `id`), in
/// the order they bind them; added_columns follow, in their order.
inline constexpr std::string_view first_version_columns =
    "request_id, user_id, req_type, llm_deployment, embedding_deployment, "
    "received_at, queued_at, dispatched_at, completed_at, queue_wait_us, "
    "execution_time_us, estimated_tokens, prompt_tokens, completion_tokens, "
    "embedding_tokens, attempts, status, error, payload, attempt_log";

/// Values an insert binds per row.
inline constexpr std::size_t column_count =
    1 + static_cast<std::size_t>(std::ranges::count(first_version_columns, ',')) +
    std::size(added_columns);

/// `(request_id, ..., <added columns>)`: the column list of the stores' INSERT.
inline std::string insert_columns() {
  std::string out = "(";
  out += first_version_columns;
  for (const AddedColumn& c : added_columns) {
    out += ", ";
    out += c.name;
  }
  out += ')';
  return out;
}

/// Checks `[schema.]table` (letters, digits, `_`; not starting with a digit; at most 63
/// bytes a part) and returns it double-quoted per part. Throws ConfigError.
inline std::string quoted_table_name(std::string_view name, std::string_view store) {
  auto bad = [&] {
    return ConfigError(std::string(store) + ": table name '" + std::string(name) +
                       "' must be [schema.]name of letters, digits and '_'");
  };
  std::string out;
  std::size_t start = 0;
  int parts = 0;
  for (;;) {
    const std::size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (part.empty() || part.size() > 63 || (part[0] >= '0' && part[0] <= '9')) throw bad();
    for (char c : part) {
      const bool ok =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
      if (!ok) throw bad();
    }
    if (++parts > 2) throw bad();
    if (!out.empty()) out += '.';
    out += '"';
    out += part;
    out += '"';
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return out;
}

/// Completion side of run_blocking(): posts `fn` to the pool, then hands the outcome to
/// the handler's own executor (keeping it busy meanwhile).
template <class PoolExecutor>
struct RunBlockingInitiation {
  PoolExecutor pool;

  template <class Handler, class Function>
  void operator()(Handler handler, Function fn) const {
    auto home = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                    boost::asio::execution::outstanding_work.tracked);
    boost::asio::post(pool, [h = std::move(handler), f = std::move(fn), home]() mutable {
      std::exception_ptr failure;
      try {
        f();
      } catch (...) {
        failure = std::current_exception();
      }
      boost::asio::dispatch(home,
                            [h2 = std::move(h), failure]() mutable { std::move(h2)(failure); });
    });
  }
};

/// Runs `fn` on `pool` (a thread-pool executor) and resumes the awaiting coroutine on its
/// own executor; an exception thrown by `fn` is rethrown there. Not cancellable: `fn`
/// runs to completion. (A plain function, not a coroutine: nothing of the caller's
/// full-expression lives in a frame of its own.)
template <class PoolExecutor, class Function>
boost::asio::awaitable<void> run_blocking(PoolExecutor pool, Function fn) {
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>,
                                     void(std::exception_ptr)>(
      RunBlockingInitiation<PoolExecutor>{pool}, boost::asio::use_awaitable, std::move(fn));
}

}  // namespace llmq::detail::stores
