#pragma once
/// @file deployment_budget_store.hpp
/// Shares deployments' request and token budgets among processes (several gateway
/// replicas or services calling the same Azure deployments).

#include <llmq/config.hpp>
#include <llmq/load_balancer.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>

namespace llmq {

/// Outcome of a shared budget check.
struct BudgetDecision {
  bool allowed = true;
  /// When refused: how long until the shared windows could have room.
  std::chrono::milliseconds retry_after{0};
};

/// A deployment budget shared by every process that uses the same store. When
/// QueueOptions::deployment_budget_store is set, the queue first grants a request from its
/// own (local) balancer, then asks the store to charge the same calls and tokens against
/// the deployment's shared windows (the same 60 s RPM / TPM and 1 s / 10 s pacing
/// windows). Refused: the deployment is held locally for `retry_after` and the request
/// goes back to the front of the queue, to another deployment or a later time.
///
/// Implementations must be safe to call from several threads and must not block.
class DeploymentBudgetStore {
 public:
  virtual ~DeploymentBudgetStore() = default;

  /// Charges `need` to `deployment` if its shared windows have room (with `limits`, the
  /// deployment's configured limits and pacing). Throws on store failure; the queue then
  /// applies QueueOptions::budget_store_fail_open.
  virtual boost::asio::awaitable<BudgetDecision> try_charge(const Deployment& deployment,
                                                            const DeploymentLimits& limits,
                                                            DeploymentNeed need) = 0;

  /// The deployment failed (429 / 5xx) and should be skipped by every process for
  /// `duration`; later try_charge calls for it are refused until then. Default: ignored.
  virtual boost::asio::awaitable<void> report_backoff(const Deployment& deployment,
                                                      std::chrono::milliseconds duration);

  /// Releases connections; called by LLMQueue::graceful_shutdown().
  virtual boost::asio::awaitable<void> close();
};

}  // namespace llmq

#ifdef LLMQ_HEADER_ONLY
#include <llmq/impl/deployment_budget_store-inl.hpp>
#endif
