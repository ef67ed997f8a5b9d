// Compiles the implementation in <llmq/impl/load_balancer-inl.hpp> into llmq::llmq.
#include <llmq/impl/load_balancer-inl.hpp>
