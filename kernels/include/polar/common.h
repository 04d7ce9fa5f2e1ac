// Shared plain-C types of the kernels' API: dtypes and error reporting. No Node, no CUDA here.
#pragma once
#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { POLAR_F32 = 0, POLAR_F16 = 1, POLAR_BF16 = 2 } polar_dtype;

static inline size_t polar_dtype_size(polar_dtype t) { return t == POLAR_F32 ? 4 : 2; }

// Every kernel entry point returns 0 on success, non-zero on failure; the message of the last failure on
// this thread is in polar_last_error() (the glue turns it into a JS exception: kernels never abort).
const char* polar_last_error(void);
int polar_set_error(const char* fmt, ...);

// Worker threads used by the CPU backend (default: hardware concurrency; POLAR_THREADS overrides).
int polar_cpu_threads(void);
void polar_set_cpu_threads(int n);

// Asks the OS to back [p, p + bytes) with transparent huge pages (Linux madvise(MADV_HUGEPAGE); a no-op
// returning 0 elsewhere). Memory-bound kernels streaming large weights (decode GEMVs) lose a large part
// of their bandwidth to TLB misses on 4 KiB pages; numpy does the same for its large arrays. Only whole
// 2 MiB-aligned ranges inside the region can be promoted. Returns 0, or -1 with polar_last_error().
int polar_advise_hugepages(void* p, size_t bytes);

#ifdef __cplusplus
}
#endif
