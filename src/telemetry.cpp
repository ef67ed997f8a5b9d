// Compiles the implementation in <llmq/impl/telemetry-inl.hpp> into llmq::llmq.
#include <llmq/impl/telemetry-inl.hpp>
