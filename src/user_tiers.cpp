// Compiles the implementation in <llmq/impl/user_tiers-inl.hpp> into llmq::llmq.
#include <llmq/impl/user_tiers-inl.hpp>
