// Error reporting and memory advice of the kernels' C API (see polar/common.h).
#include "polar/common.h"

#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace {
// Thread-local so that concurrent AsyncWorkers each read back their own failure.
thread_local char g_last_error[1024] = "";
}  // namespace

extern "C" const char* polar_last_error(void) { return g_last_error; }

// Returns -1 so that entry points can write `return polar_set_error(...)`.
extern "C" int polar_set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return -1;
}

extern "C" int polar_advise_hugepages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (!p || bytes == 0) return 0;
  // madvise wants a page-aligned start; the partial page in front is not worth advising anyway.
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(p) + page - 1) & ~(page - 1), end = uintptr_t(p) + bytes;
  if (end <= begin) return 0;
  if (madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE) != 0)
    return polar_set_error("polar_advise_hugepages: madvise(%p, %zu) failed: %s", reinterpret_cast<void*>(begin),
                           size_t(end - begin), std::strerror(errno));
#else
  (void)p;
  (void)bytes;
#endif
  return 0;
}
