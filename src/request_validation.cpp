// Compiles the implementation in <llmq/impl/request_validation-inl.hpp> into llmq::llmq.
#include <llmq/impl/request_validation-inl.hpp>
