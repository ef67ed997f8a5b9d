// Compiles the implementation in <llmq/impl/sliding_window_limiter-inl.hpp> into llmq::llmq.
#include <llmq/impl/sliding_window_limiter-inl.hpp>
