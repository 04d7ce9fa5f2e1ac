// Internal C++ API of the CPU backend's thread pool, for the kernel files under kernels/cpu/ (the C
// surface is polar_cpu_threads / polar_set_cpu_threads in polar/common.h).
//
// One process-wide pool of persistent workers, created on first use. polar_cpu_threads() counts the
// caller too: a pool of T threads has T-1 workers and the calling thread does its share of the work.
// Default T: POLAR_THREADS if set (1..1024), else std::thread::hardware_concurrency().
//
// Cost: a call whose workers are awake (they poll ~150 us after each job) costs ~0.2 us; after a longer
// idle period the workers sleep and the caller starts alone while they wake (~5-50 us later, depending
// on the machine's load), so size ranges to be worth at least a few microseconds each (see grain).
#pragma once
#include <cstdint>
#include <functional>

// Runs fn(begin, end) over disjoint ranges that cover [0, n), on the caller and the pool's workers, and
// returns when all of them are done. Ranges hold at least `grain` items (the last may hold fewer); they
// are handed out dynamically (up to 8 per thread), so a core stolen by another process only delays its
// own ranges. Ranges may run in any order and on any thread: fn must not assume either, and per-thread
// scratch belongs in thread_local storage.
//
// Runs inline (a single fn(0, n) call on the calling thread) when n <= grain, when the pool has one
// thread, when called from inside another polar_parallel_for (any thread, so kernels may nest freely),
// or when another thread currently owns the pool: concurrent callers (several AsyncWorkers) never wait
// for each other and never deadlock. The GEMMs of polar/gemm.h use this pool, so a GEMM called inside a
// polar_parallel_for body runs single-threaded on that thread.
// An exception thrown by fn is rethrown in the caller after all ranges finished (the first one wins).
void polar_parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                        int64_t grain = 1);

// Threads a polar_parallel_for issued now from this thread could use (1 inside a parallel region).
// For sizing work: whether splitting pays off, how many tasks to cut.
int polar_parallel_width();
