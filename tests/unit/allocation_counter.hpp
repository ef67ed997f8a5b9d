#pragma once
// Counts calls of the global operator new on the calling thread (the unit test
// executable replaces it), so a test can assert that a code path does not allocate.
#include <cstddef>

namespace llmq::test {
/// operator new calls on this thread since the program started.
[[nodiscard]] std::size_t allocations_on_this_thread() noexcept;
}  // namespace llmq::test
