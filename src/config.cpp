// Compiles the implementation in <llmq/impl/config-inl.hpp> into llmq::llmq.
#include <llmq/impl/config-inl.hpp>
