// Compiles the implementation in <llmq/impl/request-inl.hpp> into llmq::llmq.
#include <llmq/impl/request-inl.hpp>
