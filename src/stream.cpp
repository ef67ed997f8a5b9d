// Compiles the implementation in <llmq/impl/stream-inl.hpp> into llmq::llmq.
#include <llmq/impl/stream-inl.hpp>
