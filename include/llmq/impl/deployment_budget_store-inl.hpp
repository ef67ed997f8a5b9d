#pragma once
/// @file deployment_budget_store-inl.hpp
/// Compiled once into llmq::llmq by src/deployment_budget_store.cpp, or included by
/// <llmq/deployment_budget_store.hpp> under LLMQ_HEADER_ONLY (include/llmq/detail/inline.hpp).

#include <llmq/deployment_budget_store.hpp>
#include <llmq/detail/inline.hpp>

namespace llmq {

LLMQ_INLINE boost::asio::awaitable<void> DeploymentBudgetStore::report_backoff(
    const Deployment&, std::chrono::milliseconds) {
  co_return;
}

LLMQ_INLINE boost::asio::awaitable<void> DeploymentBudgetStore::close() { co_return; }

}  // namespace llmq
