// Compiles the implementation in <llmq/impl/log-inl.hpp> into llmq::llmq.
#include <llmq/impl/log-inl.hpp>
