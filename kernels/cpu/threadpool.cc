// Persistent thread pool of the CPU backend. Kernels are called at a high rate with small shapes (the
// TensorFlow.js backend issues many GEMMs per training step), so a parallel call must cost a few
// microseconds: no thread creation per call, workers spin briefly before sleeping, and work is claimed
// through one atomic word.
#include "threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "polar/common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#elif defined(__aarch64__)
static inline void cpu_relax() { asm volatile("yield"); }
#else
static inline void cpu_relax() {}
#endif

namespace {

using Fn = std::function<void(int64_t, int64_t)>;

// The job ticket packs generation, chunk count and next unclaimed chunk into one word so that a worker
// can never claim a chunk of one job while reading the chunk count of another.
constexpr int kNextBits = 20, kCountBits = 20;
constexpr uint64_t kNextMask = (uint64_t(1) << kNextBits) - 1;
constexpr uint64_t kCountMask = (uint64_t(1) << kCountBits) - 1;
constexpr int64_t kMaxChunks = int64_t(kNextMask);
inline uint64_t t_next(uint64_t t) { return t & kNextMask; }
inline uint64_t t_count(uint64_t t) { return (t >> kNextBits) & kCountMask; }
inline uint64_t t_gen(uint64_t t) { return t >> (kNextBits + kCountBits); }
inline bool t_claimable(uint64_t t) { return t_next(t) < t_count(t); }

// How long an idle worker polls before it sleeps: long enough to bridge the gap between back-to-back
// kernel calls, short enough not to steal a shared core for long.
constexpr auto kSpin = std::chrono::microseconds(150);

thread_local bool tl_in_parallel = false;

int default_threads() {
  if (const char* s = std::getenv("POLAR_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (end != s && *end == '\0' && v > 0 && v <= 1024) return int(v);
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? int(hc) : 1;
}

class Pool {
 public:
  Pool() { start(default_threads()); }

  int threads() const { return nthreads_.load(std::memory_order_relaxed); }

  void resize(int n) {
    if (n <= 0) n = default_threads();
    std::lock_guard<std::mutex> owner(call_mu_);
    if (n == threads()) return;
    stop_workers();
    start(n);
  }

  void run(int64_t n, const Fn& fn, int64_t grain) {
    if (grain < 1) grain = 1;
    const int nt = threads();
    if (n <= grain || nt <= 1 || tl_in_parallel) return run_inline(n, fn);
    std::unique_lock<std::mutex> owner(call_mu_, std::try_to_lock);
    if (!owner.owns_lock()) return run_inline(n, fn);

    int64_t chunk = (n + int64_t(nt) * 8 - 1) / (int64_t(nt) * 8);
    if (chunk < grain) chunk = grain;
    int64_t nchunks = (n + chunk - 1) / chunk;
    if (nchunks > kMaxChunks) {
      chunk = (n + kMaxChunks - 1) / kMaxChunks;
      nchunks = (n + chunk - 1) / chunk;
    }
    job_fn_.store(&fn, std::memory_order_relaxed);
    job_n_.store(n, std::memory_order_relaxed);
    job_chunk_.store(chunk, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    gen_ = (gen_ + 1) & ((uint64_t(1) << (64 - kNextBits - kCountBits)) - 1);
    const uint64_t t0 = (gen_ << (kNextBits + kCountBits)) | (uint64_t(nchunks) << kNextBits);
    ticket_.store(t0, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lk(sleep_mu_); }
      sleep_cv_.notify_all();
    }

    tl_in_parallel = true;
    work();
    tl_in_parallel = false;
    // Wait for chunks claimed by workers; workers that never woke up are not waited for.
    for (int spins = 0; done_.load(std::memory_order_acquire) < uint64_t(nchunks); ++spins) {
      if (spins < 4096) cpu_relax();
      else std::this_thread::yield();
    }
    std::exception_ptr err = error_;
    error_ = nullptr;
    owner.unlock();
    if (err) std::rethrow_exception(err);
  }

 private:
  static void run_inline(int64_t n, const Fn& fn) {
    if (n <= 0) return;
    const bool outer = tl_in_parallel;
    tl_in_parallel = true;
    try {
      fn(0, n);
    } catch (...) {
      tl_in_parallel = outer;
      throw;
    }
    tl_in_parallel = outer;
  }

  void start(int n) {
    stop_.store(false);
    nthreads_.store(n, std::memory_order_relaxed);
    for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_main(); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(sleep_mu_);
      stop_.store(true);
    }
    sleep_cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  // Claims and runs chunks of the current job until none is left.
  void work() {
    uint64_t t = ticket_.load(std::memory_order_acquire);
    while (t_claimable(t)) {
      if (!ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      // The claimed chunk keeps this job's fields alive: its caller waits for the chunk to complete.
      const int64_t c = int64_t(t_next(t));
      const int64_t n = job_n_.load(std::memory_order_relaxed);
      const int64_t chunk = job_chunk_.load(std::memory_order_relaxed);
      const Fn* fn = job_fn_.load(std::memory_order_relaxed);
      const int64_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu_);
        if (!error_) error_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_acq_rel);
      t = ticket_.load(std::memory_order_acquire);
    }
  }

  void worker_main() {
    tl_in_parallel = true;  // nested polar_parallel_for calls from a worker run inline
    for (;;) {
      auto claimable = [this] {
        return stop_.load(std::memory_order_relaxed) || t_claimable(ticket_.load(std::memory_order_acquire));
      };
      if (!claimable()) {
        const auto until = std::chrono::steady_clock::now() + kSpin;
        bool found = false;
        for (int i = 1; !(found = claimable()); ++i) {
          cpu_relax();
          if ((i & 63) == 0) {
            if (std::chrono::steady_clock::now() > until) break;
            // On an oversubscribed machine the caller may be waiting for this core: hand it over.
            std::this_thread::yield();
          }
        }
        if (!found) {
          std::unique_lock<std::mutex> lk(sleep_mu_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          sleep_cv_.wait(lk, claimable);
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      if (stop_.load()) return;
      work();
    }
  }

  std::mutex call_mu_;  // held by the caller that owns the workers for one job
  std::vector<std::thread> workers_;
  std::atomic<int> nthreads_{1};
  uint64_t gen_ = 0;

  std::atomic<uint64_t> ticket_{0};
  std::atomic<const Fn*> job_fn_{nullptr};
  std::atomic<int64_t> job_n_{0}, job_chunk_{1};
  std::atomic<uint64_t> done_{0};
  std::mutex err_mu_;
  std::exception_ptr error_;

  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex sleep_mu_;
  std::condition_variable sleep_cv_;
};

// Never destroyed: workers may still sleep in it while static destructors run at exit.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void polar_parallel_for(int64_t n, const Fn& fn, int64_t grain) { pool().run(n, fn, grain); }

int polar_parallel_width() { return tl_in_parallel ? 1 : pool().threads(); }

extern "C" int polar_cpu_threads(void) { return pool().threads(); }

extern "C" void polar_set_cpu_threads(int n) {
  // Resizing joins the workers; from inside a parallel region that would wait on ourselves.
  if (tl_in_parallel) return;
  pool().resize(n);
}
