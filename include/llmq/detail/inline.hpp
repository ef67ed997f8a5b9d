#pragma once
/// @file inline.hpp
/// The one switch between llmq's two builds of its core. With LLMQ_HEADER_ONLY defined
/// (target llmq::llmq_header_only), every core header includes its implementation
/// (include/llmq/impl/*-inl.hpp) and the functions there are `inline`: nothing to link.
/// Without it (target llmq::llmq), the same -inl.hpp files are compiled once, by src/*.cpp.

#ifdef LLMQ_HEADER_ONLY
#define LLMQ_INLINE inline
#else
#define LLMQ_INLINE
#endif
