#pragma once
/// @file llmq.hpp
/// Umbrella header: everything an application needs.

#include <llmq/config.hpp>
#include <llmq/deployment_budget_store.hpp>
#include <llmq/errors.hpp>
#include <llmq/executor.hpp>
#include <llmq/fair_scheduler.hpp>
#include <llmq/fifo_scheduler.hpp>
#include <llmq/load_balancer.hpp>
#include <llmq/log.hpp>
#include <llmq/queue.hpp>
#include <llmq/rate_limit_store.hpp>
#include <llmq/request.hpp>
#include <llmq/request_validation.hpp>
#include <llmq/scheduler.hpp>
#include <llmq/sliding_window_limiter.hpp>
#include <llmq/stream.hpp>
#include <llmq/telemetry.hpp>
#include <llmq/token_estimator.hpp>
#include <llmq/user_tiers.hpp>
#include <llmq/wait_predictor.hpp>
