// Throughput of the CPU GEMMs on the shapes the project runs, one JSON line per shape:
//   {"op","m","n","k","wdtype","ms","gflops", "gbps","threads","isa"}
// ms is the best time of repeated calls (the machine is shared; the best is the least disturbed), gbps
// the weight/operand bytes read per second (the bound that matters for decode, m <= 16).
// bench/gemm_numpy.py prints the same lines for numpy (OpenBLAS) float32 matmul; compare side by side.
//
// Usage: cpu_gemm_bench [--list] [--filter SUBSTR] [--min-ms MS]
//   --list      print the shapes only (JSON lines without timings), for `gemm_numpy.py --shapes -`
//   --filter    run the shapes whose "op m n k wdtype" text contains SUBSTR
//   --min-ms    time spent per shape (default 300)
//
// ops: sgemm_nn C = A B; sgemm_tn C = A^T B (A stored [k, m]); sgemm_nt C = A B^T (B stored [n, k]);
//      linear  Y = X W^T (W [n, k] in wdtype);
//      linear_t Y = X W[idx] (W [4k, n] in wdtype, k rows gathered; numpy multiplies the gathered copy).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "polar/common.h"
#include "polar/gemm.h"

namespace {

// numpy asks for transparent huge pages on its large arrays (madvise); so do we, or the comparison of
// memory-bound shapes would measure TLB misses (4 KiB pages: one miss per page of a streamed weight).
// The runtime should do the same for weights (polar_advise_hugepages).
template <class T>
struct HugeAlloc {
  using value_type = T;
  HugeAlloc() = default;
  template <class U>
  HugeAlloc(const HugeAlloc<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T), huge = size_t(2) << 20;
    if (bytes < 4 * huge) return static_cast<T*>(::operator new(bytes));
    void* p = std::aligned_alloc(huge, (bytes + huge - 1) / huge * huge);
    if (!p) throw std::bad_alloc();
    polar_advise_hugepages(p, bytes);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < 4 * (size_t(2) << 20)) ::operator delete(p);
    else std::free(p);
  }
  template <class U>
  bool operator==(const HugeAlloc<U>&) const { return true; }
  template <class U>
  bool operator!=(const HugeAlloc<U>&) const { return false; }
};
template <class T>
using Buf = std::vector<T, HugeAlloc<T>>;

struct Shape {
  const char* op;
  int m, n, k;
  polar_dtype wdt;
};

const char* dtname(polar_dtype t) { return t == POLAR_F32 ? "f32" : t == POLAR_F16 ? "f16" : "bf16"; }

std::vector<Shape> shapes() {
  std::vector<Shape> s;
  // Router training products of the TensorFlow.js backend (batch 64), fp32.
  const int r_small[] = {128, 512};
  for (int r : r_small) {
    s.push_back({"sgemm_nn", 64, r, 256, POLAR_F32});    // [64,256] x [256,r]
    s.push_back({"sgemm_nn", 64, 1024, r, POLAR_F32});   // [64,r] x [r,1024]
    s.push_back({"sgemm_nt", 64, r, 1024, POLAR_F32});   // dH = dY W2^T
    s.push_back({"sgemm_tn", 256, r, 64, POLAR_F32});    // dW1 = X^T dH
    s.push_back({"sgemm_tn", r, 1024, 64, POLAR_F32});   // dW2 = H^T dY
  }
  s.push_back({"sgemm_tn", 256, 1024, 64, POLAR_F32});   // [64,256]^T x [64,1024]
  // OPT-6.7B MLP router 4096 -> 1024 -> 16384, batch 64: forward and gradients.
  s.push_back({"sgemm_nn", 64, 1024, 4096, POLAR_F32});
  s.push_back({"sgemm_nn", 64, 16384, 1024, POLAR_F32});
  s.push_back({"sgemm_nt", 64, 1024, 16384, POLAR_F32});
  s.push_back({"sgemm_nt", 64, 4096, 1024, POLAR_F32});
  s.push_back({"sgemm_tn", 4096, 1024, 64, POLAR_F32});
  s.push_back({"sgemm_tn", 1024, 16384, 64, POLAR_F32});
  // Square-ish reference products.
  s.push_back({"sgemm_nn", 512, 1024, 256, POLAR_F32});
  s.push_back({"sgemm_nn", 512, 256, 1024, POLAR_F32});
  s.push_back({"sgemm_nn", 1024, 1024, 1024, POLAR_F32});
  // Model-shaped linears (decode m = 1, 16; prefill / large batch m = 64, 512), every weight dtype.
  struct KN { int k, n; };
  const KN kn[] = {{128, 512}, {512, 128}, {1024, 4096}, {4096, 1024}, {4096, 4096}, {1024, 8192}, {4096, 16384}};
  const int ms[] = {1, 16, 64, 512};
  const polar_dtype dts[] = {POLAR_F32, POLAR_F16, POLAR_BF16};
  for (int m : ms)
    for (const KN& x : kn)
      for (polar_dtype dt : dts) {
        if (m == 512 && x.k * double(x.n) > 4096.0 * 4096.0 && dt != POLAR_F16) continue;  // slow; f16 stands for all
        s.push_back({"linear", m, x.n, x.k, dt});
      }
  // Selective down projection: k kept neurons of 4k, into the hidden size n.
  const KN sel[] = {{512, 256}, {1024, 1024}, {4096, 4096}};
  for (int m : ms)
    for (const KN& x : sel)
      for (polar_dtype dt : dts) s.push_back({"linear_t", m, x.n, x.k, dt});
  return s;
}

std::mt19937 rng(7);

Buf<uint16_t> rand_half(size_t n, polar_dtype dt) {
  Buf<uint16_t> v(n);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& h : v) {
    float f = u(rng);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    // bf16 by truncation; f16 built from the same bits (values in [-1, 1] stay normal)
    h = dt == POLAR_BF16 ? uint16_t(b >> 16) : uint16_t(((b >> 16) & 0x8000u) | ((((b >> 23) & 0xff) - 112) << 10) | ((b >> 13) & 0x3ff));
    if (dt == POLAR_F16 && ((b >> 23) & 0xff) < 113) h = 0;
  }
  return v;
}
Buf<float> rand_f32(size_t n) {
  Buf<float> v(n);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& f : v) f = u(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  bool list = false;
  std::string filter;
  double min_ms = 300;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--list")) list = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else if (!std::strcmp(argv[i], "--min-ms") && i + 1 < argc) min_ms = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--list] [--filter SUBSTR] [--min-ms MS]\n", argv[0]);
      return 2;
    }
  }
  for (const Shape& s : shapes()) {
    char key[128];
    std::snprintf(key, sizeof key, "%s %d %d %d %s", s.op, s.m, s.n, s.k, dtname(s.wdt));
    if (!filter.empty() && !std::strstr(key, filter.c_str())) continue;
    if (list) {
      std::printf("{\"op\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"wdtype\":\"%s\"}\n", s.op, s.m, s.n, s.k, dtname(s.wdt));
      continue;
    }
    const std::string op = s.op;
    const int64_t m = s.m, n = s.n, k = s.k;
    const size_t wsize = polar_dtype_size(s.wdt);
    Buf<float> a, b, c(size_t(m * n)), wf;
    Buf<uint16_t> wh;
    std::vector<int32_t> rows;
    double bytes = 0;
    polar_sgemm_params sp{};
    polar_linear_params lp{};
    polar_linear_t_params tp{};
    if (op.rfind("sgemm", 0) == 0) {
      a = rand_f32(size_t(m * k));
      b = rand_f32(size_t(k * n));
      sp.trans_a = op == "sgemm_tn";
      sp.trans_b = op == "sgemm_nt";
      sp.m = s.m; sp.n = s.n; sp.k = s.k; sp.alpha = 1.f; sp.beta = 0.f;
      sp.a = a.data(); sp.lda = sp.trans_a ? m : k;
      sp.b = b.data(); sp.ldb = sp.trans_b ? k : n;
      sp.c = c.data(); sp.ldc = n; sp.batch = 1;
      bytes = 4.0 * (m * k + k * n + m * n);
    } else {
      const int64_t wrows = op == "linear" ? n : 4 * k, wcols = op == "linear" ? k : n;
      a = rand_f32(size_t(m * k));
      if (s.wdt == POLAR_F32) wf = rand_f32(size_t(wrows * wcols));
      else wh = rand_half(size_t(wrows * wcols), s.wdt);
      const void* w = s.wdt == POLAR_F32 ? (const void*)wf.data() : (const void*)wh.data();
      if (op == "linear") {
        lp.m = s.m; lp.n = s.n; lp.k = s.k; lp.x = a.data(); lp.ldx = k; lp.w = w; lp.wdt = s.wdt; lp.ldw = k;
        lp.y = c.data(); lp.ldy = n;
        bytes = double(wsize) * n * k + 4.0 * (m * k + m * n);
      } else {
        std::vector<int32_t> all(static_cast<size_t>(wrows));
        for (int64_t i = 0; i < wrows; ++i) all[size_t(i)] = int32_t(i);
        std::shuffle(all.begin(), all.end(), rng);
        rows.assign(all.begin(), all.begin() + k);
        std::sort(rows.begin(), rows.end());
        tp.m = s.m; tp.n = s.n; tp.k = s.k; tp.x = a.data(); tp.ldx = k; tp.w = w; tp.wdt = s.wdt; tp.ldw = n;
        tp.rows = rows.data(); tp.y = c.data(); tp.ldy = n;
        bytes = double(wsize) * n * k + 4.0 * (m * k + m * n);
      }
    }
    auto call = [&]() -> int {
      if (op.rfind("sgemm", 0) == 0) return polar_sgemm(&sp);
      if (op == "linear") return polar_linear(&lp);
      return polar_linear_t(&tp);
    };
    if (call() != 0) {
      std::fprintf(stderr, "%s: %s\n", key, polar_last_error());
      return 1;
    }
    double best = 1e30, total = 0;
    int reps = 0;
    while ((total < min_ms * 1e-3 || reps < 3) && reps < 100000) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, dt);
      total += dt;
      ++reps;
    }
    const double flops = 2.0 * m * n * k;
    std::printf("{\"op\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"wdtype\":\"%s\",\"ms\":%.4f,\"gflops\":%.2f,\"gbps\":%.2f,"
                "\"threads\":%d,\"isa\":\"%s\"}\n",
                s.op, s.m, s.n, s.k, dtname(s.wdt), best * 1e3, flops / best * 1e-9, bytes / best * 1e-9,
                polar_cpu_threads(), polar_gemm_cpu_isa());
    std::fflush(stdout);
  }
  return 0;
}
