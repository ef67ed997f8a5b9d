// Compiles the implementation in <llmq/impl/token_estimator-inl.hpp> into llmq::llmq.
#include <llmq/impl/token_estimator-inl.hpp>
