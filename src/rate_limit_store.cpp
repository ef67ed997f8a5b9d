// Compiles the implementation in <llmq/impl/rate_limit_store-inl.hpp> into llmq::llmq.
#include <llmq/impl/rate_limit_store-inl.hpp>
