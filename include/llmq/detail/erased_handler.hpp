#pragma once
/// @file detail/erased_handler.hpp
/// The completion handler of one async_execute_request, type-erased so that the queue's
/// compiled code can hold it. A handler of up to kInline bytes (a coroutine's is a
/// pointer or two) is stored in place, not allocated. The answer is posted to the
/// handler's associated executor, which is kept busy (outstanding work) until then.

#include <llmq/request.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace llmq::detail {

class ErasedHandler {
 public:
  ErasedHandler() = default;
  ErasedHandler(const ErasedHandler&) = delete;
  ErasedHandler& operator=(const ErasedHandler&) = delete;
  ErasedHandler(ErasedHandler&& other) noexcept { take(other); }
  ErasedHandler& operator=(ErasedHandler&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  ~ErasedHandler() { reset(); }

  /// Wraps `handler`; its answer will run on its associated executor, else on `fallback`.
  template <class H>
  ErasedHandler(H&& handler, const boost::asio::any_io_executor& fallback) {
    using Impl = Holder<std::decay_t<H>>;
    boost::asio::any_io_executor ex = boost::asio::get_associated_executor(handler, fallback);
    // The queue's own context has work pending (its dispatcher's wait, the executor's
    // operations) for as long as a request is; another context is told explicitly.
    if (&boost::asio::query(ex, boost::asio::execution::context) !=
        &boost::asio::query(fallback, boost::asio::execution::context))
      ex = boost::asio::prefer(ex, boost::asio::execution::outstanding_work.tracked);
    if constexpr (sizeof(Impl) <= kInline && alignof(Impl) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<std::decay_t<H>>)
      impl_ = ::new (static_cast<void*>(inline_)) Impl(std::forward<H>(handler), std::move(ex));
    else
      impl_ = new Impl(std::forward<H>(handler), std::move(ex));
  }

  explicit operator bool() const noexcept { return impl_ != nullptr; }

  /// Posts the answer; the handler is taken out first, so this happens at most once.
  void operator()(boost::system::error_code ec, Response r) {
    Base* impl = std::exchange(impl_, nullptr);
    if (impl == nullptr) return;
    impl->deliver(ec, std::move(r));
    destroy(impl);
  }

 private:
  static constexpr std::size_t kInline = 96;
  struct Base {
    virtual ~Base() = default;
    virtual void deliver(boost::system::error_code ec, Response r) = 0;
    /// Moves this (stored inline) into `where`; returns the new object.
    virtual Base* move_to(void* where) noexcept = 0;
  };
  template <class H>
  struct Holder final : Base {
    Holder(H&& h, boost::asio::any_io_executor e) : handler(std::move(h)), ex(std::move(e)) {}
    Holder(const H& h, boost::asio::any_io_executor e) : handler(h), ex(std::move(e)) {}
    void deliver(boost::system::error_code ec, Response r) override {
      boost::asio::post(ex, [h = std::move(handler), ec, r = std::move(r)]() mutable {
        boost::asio::get_associated_cancellation_slot(h).clear();
        std::move(h)(ec, std::move(r));
      });
    }
    Base* move_to(void* where) noexcept override {
      if constexpr (std::is_nothrow_move_constructible_v<H>)
        return ::new (where) Holder(std::move(handler), std::move(ex));
      else
        return nullptr;  // such holders are never stored inline
    }
    H handler;
    boost::asio::any_io_executor ex;  // tracked: keeps the caller's context running
  };

  bool is_inline(const Base* p) const noexcept {
    return static_cast<const void*>(p) == static_cast<const void*>(inline_);
  }
  void take(ErasedHandler& other) noexcept {
    if (other.impl_ == nullptr) return;
    if (other.is_inline(other.impl_)) {
      impl_ = other.impl_->move_to(inline_);
      other.impl_->~Base();
    } else {
      impl_ = other.impl_;
    }
    other.impl_ = nullptr;
  }
  void destroy(Base* impl) noexcept {
    if (is_inline(impl))
      impl->~Base();
    else
      delete impl;
  }
  void reset() noexcept {
    if (impl_) destroy(std::exchange(impl_, nullptr));
  }

  alignas(std::max_align_t) unsigned char inline_[kInline];
  Base* impl_ = nullptr;
};

}  // namespace llmq::detail
