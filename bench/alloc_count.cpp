// Allocation counter for the benchmarks' programs, loaded with LD_PRELOAD: counts every
// call to malloc, calloc, realloc and the aligned allocators (operator new calls malloc)
// and, when the process exits normally, writes "allocations N" to the file named by
// LLMQ_ALLOC_COUNT_FILE. bench/gateway/run.sh divides the count by the requests served,
// less the count of the same program started and stopped with no requests.
// The calls are forwarded to glibc's own entry points (__libc_*), so no dlsym at start-up.
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t n, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void __libc_free(void* p);
}

namespace {

std::atomic<unsigned long long> g_allocations{0};

void count() noexcept { g_allocations.fetch_add(1, std::memory_order_relaxed); }

struct Report {
  Report() = default;
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;
  ~Report() {
    const char* path = std::getenv("LLMQ_ALLOC_COUNT_FILE");
    if (path == nullptr || *path == '\0') return;
    if (std::FILE* f = std::fopen(path, "w")) {
      std::fprintf(f, "allocations %llu\n", g_allocations.load());
      std::fclose(f);
    }
  }
};
const Report g_report;

}  // namespace

extern "C" {

void* malloc(std::size_t size) {
  count();
  return __libc_malloc(size);
}

void* calloc(std::size_t n, std::size_t size) {
  count();
  return __libc_calloc(n, size);
}

void* realloc(void* p, std::size_t size) {
  count();
  return __libc_realloc(p, size);
}

void free(void* p) { __libc_free(p); }

void* memalign(std::size_t alignment, std::size_t size) {
  count();
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(std::size_t alignment, std::size_t size) {
  count();
  return __libc_memalign(alignment, size);
}

int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  count();
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr && size != 0) return ENOMEM;
  *out = p;
  return 0;
}

}  // extern "C"
