// Compiles the implementation in <llmq/impl/errors-inl.hpp> into llmq::llmq.
#include <llmq/impl/errors-inl.hpp>
