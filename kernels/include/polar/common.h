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

#ifdef __cplusplus
}
#endif
