#pragma once
// Internal: a strand whose any_io_executor copies do not allocate.
//
// any_io_executor keeps executors of up to 24 bytes inline. A strand over an
// any_io_executor is larger, so every copy of it (co_spawn, post, timers, the executor
// queries inside each co_await) costs a heap allocation. A strand over the io_context's
// own executor fits; it is used whenever the executor handed in is an io_context's.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include <memory>

namespace llmq::detail {

inline boost::asio::any_io_executor make_light_strand(const boost::asio::any_io_executor& ex) {
  namespace asio = boost::asio;
  using io_strand = asio::strand<asio::io_context::executor_type>;
  static_assert(sizeof(io_strand) <= sizeof(std::shared_ptr<void>) + sizeof(void*),
                "a strand over io_context::executor_type must fit any_io_executor's buffer");
  if (const auto* io = ex.target<asio::io_context::executor_type>())
    return asio::any_io_executor(asio::make_strand(*io));
  return asio::any_io_executor(asio::make_strand(ex));
}

}  // namespace llmq::detail
