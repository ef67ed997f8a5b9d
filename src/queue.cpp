// Compiles the implementation in <llmq/impl/queue-inl.hpp> into llmq::llmq.
#include <llmq/impl/queue-inl.hpp>
