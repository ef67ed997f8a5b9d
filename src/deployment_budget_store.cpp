// Compiles the implementation in <llmq/impl/deployment_budget_store-inl.hpp> into llmq::llmq.
#include <llmq/impl/deployment_budget_store-inl.hpp>
