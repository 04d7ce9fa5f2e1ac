// CPU GEMMs (polar/gemm.h): polar_sgemm, polar_linear, polar_linear_t.
//
// Four ways to compute one product, chosen by the rows m of op(A) and the layout of the weights:
//  - packed (larger m): Goto/BLIS blocking. C is cut into tiles (tasks for the thread pool); a task packs
//    its KC x nt slice of B and MC x KC blocks of A into contiguous fp32 panels (packing absorbs
//    transposes, fp16/bf16 widening and the row gather) and runs the MR x NR micro-kernel over them.
//  - dot (m <= kSmallMDot, K-contiguous weights: polar_linear, sgemm with trans_b): decode is memory
//    bound, so stream every weight row once, widen in registers, FMA against the few rows of X.
//  - broadcast (kSmallMDot < m <= kSmallMBcast, K-contiguous weights): one vector lane per row of X, one
//    broadcast weight per FMA; weights are copied/widened but never transposed.
//  - axpy (m <= kSmallMAxpy, K-indexed weight rows: polar_linear_t, sgemm without trans_b): the rows of
//    W^T are streamed (gathered) and column strips of Y accumulate in registers.
#include "polar/gemm.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "gemm_kernels.h"
#include "polar/common.h"
#include "threadpool.h"

namespace polar {
namespace gemm {
namespace {

// Below this many flops a product runs on the calling thread: waking a worker costs more than it saves.
constexpr double kParMinFlops = 1.5e6;
// Up to this many rows of op(A), the unpacked forms beat packing (measured on Zen 4): the dot form pays
// horizontal sums per output, the axpy form only the C traffic of its short row blocks.
constexpr int64_t kSmallMDot = 8, kSmallMAxpy = 4 * AX_RM;
constexpr int64_t kSmallMBcast = std::min(16, 2 * VW);  // broadcast form, above kSmallMDot

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t rup(int64_t a, int64_t b) { return cdiv(a, b) * b; }

int threads_for(double flops) {
  if (flops < kParMinFlops) return 1;
  return polar_parallel_width();
}

// Runs body(t) for t in [0, n) on `threads` threads (inline when 1).
template <class F>
void run_tasks(int64_t n, int threads, const F& body) {
  if (threads <= 1 || n <= 1) {
    for (int64_t t = 0; t < n; ++t) body(t);
    return;
  }
  polar_parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) body(t);
  });
}

// Per-thread packing buffers, kept across calls (allocation would dominate small products).
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t need) {
    if (need > n) {
      std::free(p);
      p = nullptr;
      n = 0;
      const size_t bytes = rup(int64_t(need * sizeof(float)), 64);
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      n = need;
    }
    return p;
  }
};
thread_local Scratch tl_pack_a, tl_pack_b;
// Slack after packed panels: partial transposed stores may run 8 floats past a panel.
constexpr size_t kSlack = 64;

// Epilogue of K block kb of nkb, given the whole product's epilogue (see Epi). Callers never split K
// when a ReLU must come before adding beta * C (it could not be applied to partial sums).
Epi block_epi(const Epi& whole, bool relu, int64_t kb, int64_t nkb) {
  Epi e;
  e.alpha = whole.alpha;
  if (nkb == 1) {
    e = whole;
    e.relu_pre = relu;
    return e;
  }
  if (kb == 0) {
    e.beta = whole.beta;
    e.bias = whole.bias;
  } else {
    e.beta = 1.f;
  }
  if (kb == nkb - 1) e.relu_post = relu;
  return e;
}

// C = epilogue(0): the k == 0 or alpha == 0 product.
void epilogue_only(int64_t M, int64_t N, float* c, int64_t ldc, Epi e, bool relu) {
  e.relu_pre = relu;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = epi_apply(0.f, c + i * ldc + j, e.bias ? e.bias[j] : 0.f, e);
}

// ---- packed -------------------------------------------------------------------------------------------
struct Tiling {
  int64_t mt, nt, tm, tn;
};

template <class S>
struct is_rmajor : std::false_type {};
template <class T>
struct is_rmajor<RMajor<T>> : std::true_type {};

// Tiles of C, one per task. Enough tasks for dynamic balance across the pool (a core may be busy with
// another process), but tiles stay large: each task repacks its A rows and B columns, so thin tiles pay
// packing again and again.
Tiling make_tiling(int64_t M, int64_t N, int64_t K, int threads) {
  int64_t tn = cdiv(N, NC), tm = 1;
  // Up to 4 tasks per thread, but no task under ~4 MFLOP unless that leaves a thread idle.
  const double flops = 2.0 * double(M) * double(N) * double(K);
  const int64_t target =
      threads <= 1 ? 1 : std::min<int64_t>(4 * int64_t(threads), std::max<int64_t>(threads, int64_t(flops / 4e6)));
  while (tm * tn < target) {
    const double wn = double(N) / double(tn), wm = double(M) / double(tm);
    if (wn >= 256 && wn >= wm) ++tn;
    else if (wm >= 128) ++tm;
    else if (wn >= 2 * NR) ++tn;
    else if (wm >= 2 * MR) ++tm;
    else break;
  }
  Tiling t;
  t.nt = rup(cdiv(N, tn), NR);
  t.tn = cdiv(N, t.nt);
  t.mt = rup(cdiv(M, tm), MR);
  t.tm = cdiv(M, t.mt);
  return t;
}

template <class AS, class BS>
void packed(const AS& A, const BS& B, int64_t M, int64_t N, int64_t K, float* C, int64_t ldc, const Epi& whole,
            bool relu) {
  const int threads = threads_for(2.0 * double(M) * double(N) * double(K));
  const Tiling tl = make_tiling(M, N, K, threads);
  const int64_t nkb = cdiv(K, KC), kcs = cdiv(K, nkb);
  Epi raw;

  // r-contiguous fp16/bf16 B: full panels are packed by the first row panel's micro_pack as it computes
  // (measured on Zen 4: +10% for linear_t at m = 64; for fp32 sources, whose rows are twice as long per
  // panel, the separate pass reading whole rows was faster).
  constexpr bool kFuse = is_rmajor<BS>::value && sizeof(typename BS::elem) == 2;
  auto task = [&](int64_t t) {
    const int64_t ti = t / tl.tn, tj = t % tl.tn;
    const int64_t i0 = ti * tl.mt, i1 = std::min(M, i0 + tl.mt);
    const int64_t j0 = tj * tl.nt, j1 = std::min(N, j0 + tl.nt);
    const int64_t jfull = kFuse ? j0 + (j1 - j0) / NR * NR : j0;
    float* bp = tl_pack_b.get(size_t(rup(j1 - j0, NR) * kcs) + kSlack);
    float* ap = tl_pack_a.get(size_t(MC * kcs) + kSlack);
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t p0 = kb * kcs, kc = std::min(kcs, K - p0);
      const Epi e = block_epi(whole, relu, kb, nkb);
      if (jfull < j1) pack_block<NR>(B, jfull, j1, p0, kc, bp + (jfull - j0) * kc);
      for (int64_t ic = i0; ic < i1; ic += MC) {
        const int64_t mc = std::min<int64_t>(MC, i1 - ic);
        pack_block<MR>(A, ic, ic + mc, p0, kc, ap);
        for (int64_t jp = j0; jp < j1; jp += NR) {
          const int nr = int(std::min<int64_t>(NR, j1 - jp));
          float* bq = bp + (jp - j0) * kc;
          Epi ej = e;
          if (e.bias) ej.bias = e.bias + jp;
          for (int64_t ip = 0; ip < mc; ip += MR) {
            const int r = int(std::min<int64_t>(MR, mc - ip));
            float* cp = C + (ic + ip) * ldc + jp;
            if constexpr (kFuse) {
              if (ic == i0 && ip == 0 && jp < jfull) {
                micro_pack_rows(r, kc, ap, B, p0, jp, bq, cp, ldc, ej);
                continue;
              }
            }
            if (nr == NR) {
              micro_rows(r, kc, ap + ip * kc, bq, cp, ldc, ej);
            } else {
              // Written by micro_rows before epi_block reads it (GCC cannot see that through beta).
              alignas(64) float tmp[MR * NR] = {};
              micro_rows(r, kc, ap + ip * kc, bq, tmp, NR, raw);
              epi_block(tmp, NR, r, nr, cp, ldc, ej);
            }
          }
        }
      }
    }
  };
  run_tasks(tl.tm * tl.tn, threads, task);
}

// ---- dot ----------------------------------------------------------------------------------------------
// out[i * 8 + q] for i < rm rows of X and q < 8 weight lines.
template <int RM, class T>
inline void dot_block(int64_t K, const float* const* x, const T* const* w, int nj, float* out) {
  if constexpr (RM == 1) {
    float o[1][8];
    dot_tile<1, 8>(K, x, w, o);
    for (int q = 0; q < 8; ++q) out[q] = o[0][q];
  } else {
    float o[RM][8];
    dot_tile<RM, 4>(K, x, w, o);
    for (int i = 0; i < RM; ++i)
      for (int q = 0; q < 4; ++q) out[i * 8 + q] = o[i][q];
    if (nj > 4) {
      dot_tile<RM, 4>(K, x, w + 4, o);
      for (int i = 0; i < RM; ++i)
        for (int q = 0; q < 4; ++q) out[i * 8 + 4 + q] = o[i][q];
    }
  }
}

template <int RM = DOT_RM, class T>
inline void dot_block_rows(int rm, int64_t K, const float* const* x, const T* const* w, int nj, float* out) {
  if (rm == RM) return dot_block<RM>(K, x, w, nj, out);
  if constexpr (RM > 1) dot_block_rows<RM - 1>(rm, K, x, w, nj, out);
}

// C[i * csi + j * csj] = epilogue(sum_p x[i, p] * w(j, p)) for i < M, j < N.
template <class T>
void dot_driver(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const KMajor<T>& w, float* c,
                int64_t csi, int64_t csj, const Epi& e) {
  const int threads = threads_for(2.0 * double(M) * double(N) * double(K));
  auto lines = [&](int64_t g0, int64_t g1) {
    const float* xp[DOT_RM];
    const T* wp[8];
    float out[DOT_RM * 8];
    for (int64_t j = g0 * 8; j < std::min(N, g1 * 8); j += 8) {
      const int nj = int(std::min<int64_t>(8, N - j));
      // Short last group: repeat the last line; its sums are computed and dropped.
      for (int q = 0; q < 8; ++q) wp[q] = w.line(j + std::min(q, nj - 1));
      for (int64_t i = 0; i < M; i += DOT_RM) {
        const int rm = int(std::min<int64_t>(DOT_RM, M - i));
        for (int r = 0; r < rm; ++r) xp[r] = x + (i + r) * ldx;
        dot_block_rows(rm, K, xp, wp, nj, out);
        for (int r = 0; r < rm; ++r)
          for (int q = 0; q < nj; ++q) {
            float* cp = c + (i + r) * csi + (j + q) * csj;
            *cp = epi_apply(out[r * 8 + q], cp, e.bias ? e.bias[j + q] : 0.f, e);
          }
      }
    }
  };
  const int64_t groups = cdiv(N, 8);
  if (threads <= 1) return lines(0, groups);
  // At least ~64K FMAs per range so that claiming a range stays cheap next to running it.
  const int64_t grain = std::max<int64_t>(1, cdiv(65536, 8 * M * std::max<int64_t>(K, 1)));
  polar_parallel_for(groups, lines, grain);
}

// ---- broadcast ----------------------------------------------------------------------------------------
// C[i * csi + j * csj] = epilogue(sum_p x[i, p] * w(j, p)) for M <= 2 * VW rows of X.
template <int MV, class T>
void bcast_driver(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const KMajor<T>& w, float* c,
                  int64_t csi, int64_t csj, const Epi& e) {
  constexpr int XW = MV * VW, R = BC_R;
  const int threads = threads_for(2.0 * double(M) * double(N) * double(K));
  // X^T, zero lanes past M; K-chunks of at most KC (the packer's padding lines hold KC elements).
  std::vector<float> xt(size_t(K * XW) + kSlack);
  for (int64_t p0 = 0; p0 < K; p0 += KC)
    pack_block<XW>(KMajor<float>{x, ldx, nullptr}, 0, M, p0, std::min<int64_t>(KC, K - p0), xt.data() + p0 * XW);
  auto groups = [&](int64_t g0, int64_t g1) {
    alignas(64) float acc[R * XW];
    float* wbuf = tl_pack_b.get(size_t(R * KC));
    for (int64_t j0 = g0 * R; j0 < std::min(N, g1 * R); j0 += R) {
      const int nr = int(std::min<int64_t>(R, N - j0));
      for (int64_t p0 = 0; p0 < K; p0 += KC) {
        const int64_t kc = std::min<int64_t>(KC, K - p0);
        // Short last group: repeat the last line; its sums are dropped.
        for (int r = 0; r < R; ++r) widen(w.line(j0 + std::min(r, nr - 1)) + p0, wbuf + r * KC, kc);
        bcast_tile<R, MV>(kc, wbuf, xt.data() + p0 * XW, acc, p0 == 0);
      }
      for (int64_t i = 0; i < M; ++i)
        for (int r = 0; r < nr; ++r) {
          float* cp = c + i * csi + (j0 + r) * csj;
          *cp = epi_apply(acc[r * XW + i], cp, e.bias ? e.bias[j0 + r] : 0.f, e);
        }
    }
  };
  const int64_t ngroups = cdiv(N, R);
  if (threads <= 1) return groups(0, ngroups);
  const int64_t grain = std::max<int64_t>(1, cdiv(65536, int64_t(R) * M * std::max<int64_t>(K, 1)));
  polar_parallel_for(ngroups, groups, grain);
}

// Unpacked product against K-contiguous weight lines for M <= kSmallMBcast: dot form up to kSmallMDot,
// broadcast form above.
template <class T>
void rowdot(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const KMajor<T>& w, float* c, int64_t csi,
            int64_t csj, const Epi& e) {
  if (M <= kSmallMDot) return dot_driver<T>(M, N, K, x, ldx, w, c, csi, csj, e);
  if (M <= VW) return bcast_driver<1, T>(M, N, K, x, ldx, w, c, csi, csj, e);
  return bcast_driver<2, T>(M, N, K, x, ldx, w, c, csi, csj, e);
}

// ---- axpy ---------------------------------------------------------------------------------------------
template <int CV, int RM, class T>
inline void axpy_rows(int rm, int64_t p0, int64_t p1, int64_t pe, const float* x, int64_t ldx, const RMajor<T>& w,
                      int64_t col, float* c, int64_t ldc, const Epi& e) {
  if (rm == RM) return axpy_tile<RM, CV>(p0, p1, pe, x, ldx, w, col, c, ldc, e);
  if constexpr (RM > 1) axpy_rows<CV, RM - 1>(rm, p0, p1, pe, x, ldx, w, col, c, ldc, e);
}

template <int RMAX, int CV, class T>
inline void axpy_cols(int cv, int rm, int64_t p0, int64_t p1, int64_t pe, const float* x, int64_t ldx,
                      const RMajor<T>& w, int64_t col, float* c, int64_t ldc, const Epi& e) {
  if (cv == CV) return axpy_rows<CV, RMAX>(rm, p0, p1, pe, x, ldx, w, col, c, ldc, e);
  if constexpr (CV > 1) axpy_cols<RMAX, CV - 1>(cv, rm, p0, p1, pe, x, ldx, w, col, c, ldc, e);
}

// Tiles of up to RMAX rows x CVMAX vectors of columns.
template <int RMAX, int CVMAX, class T>
void axpy_sweep(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const RMajor<T>& w, float* c,
                int64_t ldc, const Epi& whole, bool relu, int threads, int64_t kbr) {
  constexpr int CW = CVMAX * VW;
  const int64_t nkb = cdiv(K, kbr);
  // Column ranges: wide enough that each gathered weight row is read in long runs (DRAM pages, TLB),
  // a few per thread for balance.
  const int64_t cr = std::min<int64_t>(2048, std::max<int64_t>(CW, rup(cdiv(N, 2 * int64_t(threads)), CW)));
  auto range = [&](int64_t c0, int64_t c1) {
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t p0 = kb * kbr, p1 = std::min(K, p0 + kbr);
      const Epi e = block_epi(whole, relu, kb, nkb);
      for (int64_t col = c0; col < c1; col += CW) {
        const int ncol = int(std::min<int64_t>(CW, c1 - col));
        const int cv = ncol / VW;
        Epi ec = e;
        if (e.bias) ec.bias = e.bias + col;
        for (int64_t i = 0; i < M; i += RMAX) {
          const int rm = int(std::min<int64_t>(RMAX, M - i));
          if (cv > 0) axpy_cols<RMAX, CVMAX>(cv, rm, p0, p1, K, x + i * ldx, ldx, w, col, c + i * ldc + col, ldc, ec);
          for (int64_t j = col + int64_t(cv) * VW; j < col + ncol; ++j)
            for (int r = 0; r < rm; ++r) {
              const float* xr = x + (i + r) * ldx;
              float s = 0.f;
              for (int64_t p = p0; p < p1; ++p) s += xr[p] * to_f32(w.line(p)[j]);
              float* cp = c + (i + r) * ldc + j;
              *cp = epi_apply(s, cp, e.bias ? e.bias[j] : 0.f, e);
            }
        }
      }
    }
  };
  const int64_t nr = cdiv(N, cr);
  run_tasks(nr, threads, [&](int64_t t) { range(t * cr, std::min(N, (t + 1) * cr)); });
}

// C[i, j] = epilogue(sum_p x[i, p] * w(p, j)) for i < M, j < N.
template <class T>
void axpy_driver(int64_t M, int64_t N, int64_t K, const float* x, int64_t ldx, const RMajor<T>& w, float* c,
                 int64_t ldc, const Epi& whole, bool relu) {
  const int threads = threads_for(2.0 * double(M) * double(N) * double(K));
  // One row of X: each weight element feeds a single FMA, so the tile is as wide as the registers allow
  // (fewer tile calls and epilogues per weight row). Rows swept per block: with several rows of X,
  // longer blocks amortize the C traffic between blocks; with one, shorter blocks keep the gathered
  // rows' prefetch close to their use (measured on Zen 4).
  if (M == 1) return axpy_sweep<1, AX_CV1>(M, N, K, x, ldx, w, c, ldc, whole, relu, threads, AX_KB_SMALL);
  axpy_sweep<AX_RM, AX_CV>(M, N, K, x, ldx, w, c, ldc, whole, relu, threads, M >= 8 ? AX_KB_LARGE : AX_KB_SMALL);
}

// ---- fp32 GEMM (polar_sgemm) --------------------------------------------------------------------------
void sgemm_one(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  Epi e;
  e.alpha = alpha;
  e.beta = beta;
  if (K == 0 || alpha == 0.f) {
    e.alpha = 0.f;
    return epilogue_only(M, N, c, ldc, e, false);
  }
  // Few columns, many rows: C^T = op(B)^T op(A)^T has few rows, which the unpacked forms handle without
  // padding N up to a whole micro-tile.
  if (N <= 4 && M > kSmallMDot && M >= 8 * N) {
    std::vector<float> t(size_t(N * M));
    sgemm_one(!tb, !ta, N, M, K, 1.f, b, ldb, a, lda, 0.f, t.data(), M);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = epi_apply(t[size_t(j * M + i)], c + i * ldc + j, 0.f, e);
    return;
  }
  if (M <= (tb ? kSmallMBcast : kSmallMAxpy)) {
    std::vector<float> at;
    const float* x = a;
    int64_t ldx = lda;
    if (ta) {  // the unpacked forms want rows of op(A) contiguous
      at.resize(size_t(M * K));
      for (int64_t p = 0; p < K; ++p)
        for (int64_t i = 0; i < M; ++i) at[size_t(i * K + p)] = a[p * lda + i];
      x = at.data();
      ldx = K;
    }
    if (tb) return rowdot<float>(M, N, K, x, ldx, KMajor<float>{b, ldb, nullptr}, c, ldc, 1, e);
    return axpy_driver<float>(M, N, K, x, ldx, RMajor<float>{b, ldb, nullptr}, c, ldc, e, false);
  }
  if (ta) {
    const RMajor<float> A{a, lda, nullptr};
    if (tb) return packed(A, KMajor<float>{b, ldb, nullptr}, M, N, K, c, ldc, e, false);
    return packed(A, RMajor<float>{b, ldb, nullptr}, M, N, K, c, ldc, e, false);
  }
  const KMajor<float> A{a, lda, nullptr};
  if (tb) return packed(A, KMajor<float>{b, ldb, nullptr}, M, N, K, c, ldc, e, false);
  return packed(A, RMajor<float>{b, ldb, nullptr}, M, N, K, c, ldc, e, false);
}

// ---- linear / linear_t --------------------------------------------------------------------------------
template <class T>
void linear_impl(const polar_linear_params& p, const float* bias) {
  const int64_t M = p.m, N = p.n, K = p.k;
  const bool relu = p.act == 1;
  Epi e;
  e.beta = p.accumulate ? 1.f : 0.f;
  e.bias = bias;
  if (K == 0) return epilogue_only(M, N, p.y, p.ldy, e, relu);
  const KMajor<T> W{static_cast<const T*>(p.w), p.ldw, p.rows};
  if (M <= kSmallMBcast) {
    e.relu_pre = relu;
    return rowdot<T>(M, N, K, p.x, p.ldx, W, p.y, p.ldy, 1, e);
  }
  if (relu && p.accumulate && K > KC) {
    // act(XW^T + b) must be complete before Y is added, and K is split: compute it apart, then add.
    std::vector<float> t(size_t(M * N));
    Epi et = e;
    et.beta = 0.f;
    packed(KMajor<float>{p.x, p.ldx, nullptr}, W, M, N, K, t.data(), N, et, true);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) p.y[i * p.ldy + j] += t[size_t(i * N + j)];
    return;
  }
  packed(KMajor<float>{p.x, p.ldx, nullptr}, W, M, N, K, p.y, p.ldy, e, relu);
}

template <class T>
void linear_t_impl(const polar_linear_t_params& p, const float* bias) {
  const int64_t M = p.m, N = p.n, K = p.k;
  Epi e;
  e.beta = p.accumulate ? 1.f : 0.f;
  e.bias = bias;
  if (K == 0) return epilogue_only(M, N, p.y, p.ldy, e, false);
  const RMajor<T> W{static_cast<const T*>(p.w), p.ldw, p.rows};
  if (M <= kSmallMAxpy) return axpy_driver<T>(M, N, K, p.x, p.ldx, W, p.y, p.ldy, e, false);
  packed(KMajor<float>{p.x, p.ldx, nullptr}, W, M, N, K, p.y, p.ldy, e, false);
}

// Bias as fp32, gathered through rows when given (polar_linear's bias follows the weight rows).
std::vector<float> bias_f32(const void* bias, polar_dtype dt, int64_t n, const int32_t* rows) {
  std::vector<float> out;
  if (!bias) return out;
  out.resize(size_t(n));
  for (int64_t j = 0; j < n; ++j) {
    const int64_t r = rows ? rows[j] : j;
    switch (dt) {
      case POLAR_F32: out[size_t(j)] = static_cast<const float*>(bias)[r]; break;
      case POLAR_F16: out[size_t(j)] = to_f32(static_cast<const f16*>(bias)[r]); break;
      case POLAR_BF16: out[size_t(j)] = to_f32(static_cast<const bf16*>(bias)[r]); break;
    }
  }
  return out;
}

bool valid_dtype(polar_dtype t) { return t == POLAR_F32 || t == POLAR_F16 || t == POLAR_BF16; }

}  // namespace
}  // namespace gemm
}  // namespace polar

using namespace polar::gemm;

extern "C" const char* polar_gemm_cpu_isa(void) { return POLAR_GEMM_ISA; }

extern "C" int polar_sgemm(const polar_sgemm_params* p) {
  if (!p) return polar_set_error("polar_sgemm: expected a params pointer, received NULL");
  if (p->m < 0 || p->n < 0 || p->k < 0)
    return polar_set_error("polar_sgemm: expected m, n, k >= 0, received m=%d n=%d k=%d", p->m, p->n, p->k);
  if (p->batch < 1) return polar_set_error("polar_sgemm: expected batch >= 1, received %d", p->batch);
  if (p->m == 0 || p->n == 0) return 0;
  const int64_t M = p->m, N = p->n, K = p->k;
  const bool ta = p->trans_a != 0, tb = p->trans_b != 0;
  if (!p->c) return polar_set_error("polar_sgemm: expected c != NULL for a %dx%d product", p->m, p->n);
  const bool reads_ab = K > 0 && p->alpha != 0.f;
  if (reads_ab && (!p->a || !p->b)) return polar_set_error("polar_sgemm: expected a and b != NULL when k > 0");
  if (reads_ab && p->lda < (ta ? M : K))
    return polar_set_error("polar_sgemm: expected lda >= %lld (trans_a=%d), received %lld", (long long)(ta ? M : K),
                           int(ta), (long long)p->lda);
  if (reads_ab && p->ldb < (tb ? K : N))
    return polar_set_error("polar_sgemm: expected ldb >= %lld (trans_b=%d), received %lld", (long long)(tb ? K : N),
                           int(tb), (long long)p->ldb);
  if (p->ldc < N) return polar_set_error("polar_sgemm: expected ldc >= n = %d, received %lld", p->n, (long long)p->ldc);
  try {
    auto one = [&](int64_t i) {
      sgemm_one(ta, tb, M, N, K, p->alpha, p->a ? p->a + i * p->stride_a : nullptr, p->lda,
                p->b ? p->b + i * p->stride_b : nullptr, p->ldb, p->beta, p->c + i * p->stride_c, p->ldc);
    };
    const double flops = 2.0 * double(M) * double(N) * double(K);
    // Small products of a batch run side by side, one thread each, when their outputs are disjoint.
    const bool disjoint = p->stride_c >= (M - 1) * p->ldc + N;
    if (p->batch > 1 && disjoint && flops < 8 * kParMinFlops && flops * p->batch >= kParMinFlops) {
      polar_parallel_for(p->batch, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) one(i);
      });
    } else {
      for (int64_t i = 0; i < p->batch; ++i) one(i);
    }
  } catch (const std::bad_alloc&) {
    return polar_set_error("polar_sgemm: out of memory (m=%d n=%d k=%d)", p->m, p->n, p->k);
  } catch (const std::exception& ex) {
    return polar_set_error("polar_sgemm: %s", ex.what());
  }
  return 0;
}

extern "C" int polar_linear(const polar_linear_params* p) {
  if (!p) return polar_set_error("polar_linear: expected a params pointer, received NULL");
  if (p->m < 0 || p->n < 0 || p->k < 0)
    return polar_set_error("polar_linear: expected m, n, k >= 0, received m=%d n=%d k=%d", p->m, p->n, p->k);
  if (!valid_dtype(p->wdt)) return polar_set_error("polar_linear: expected wdt f32/f16/bf16, received %d", int(p->wdt));
  if (p->bias && !valid_dtype(p->bdt))
    return polar_set_error("polar_linear: expected bdt f32/f16/bf16, received %d", int(p->bdt));
  if (p->act != 0 && p->act != 1) return polar_set_error("polar_linear: expected act 0 (none) or 1 (ReLU), received %d", p->act);
  if (p->m == 0 || p->n == 0) return 0;
  if (!p->y) return polar_set_error("polar_linear: expected y != NULL");
  if (p->k > 0 && (!p->x || !p->w)) return polar_set_error("polar_linear: expected x and w != NULL when k > 0");
  if (p->k > 0 && p->ldx < p->k)
    return polar_set_error("polar_linear: expected ldx >= k = %d, received %lld", p->k, (long long)p->ldx);
  if (p->k > 0 && p->ldw < p->k)
    return polar_set_error("polar_linear: expected ldw >= k = %d, received %lld", p->k, (long long)p->ldw);
  if (p->ldy < p->n) return polar_set_error("polar_linear: expected ldy >= n = %d, received %lld", p->n, (long long)p->ldy);
  try {
    const std::vector<float> bias = bias_f32(p->bias, p->bdt, p->n, p->rows);
    const float* b = p->bias ? bias.data() : nullptr;
    switch (p->wdt) {
      case POLAR_F32: linear_impl<float>(*p, b); break;
      case POLAR_F16: linear_impl<f16>(*p, b); break;
      case POLAR_BF16: linear_impl<bf16>(*p, b); break;
    }
  } catch (const std::bad_alloc&) {
    return polar_set_error("polar_linear: out of memory (m=%d n=%d k=%d)", p->m, p->n, p->k);
  } catch (const std::exception& ex) {
    return polar_set_error("polar_linear: %s", ex.what());
  }
  return 0;
}

extern "C" int polar_linear_t(const polar_linear_t_params* p) {
  if (!p) return polar_set_error("polar_linear_t: expected a params pointer, received NULL");
  if (p->m < 0 || p->n < 0 || p->k < 0)
    return polar_set_error("polar_linear_t: expected m, n, k >= 0, received m=%d n=%d k=%d", p->m, p->n, p->k);
  if (!valid_dtype(p->wdt)) return polar_set_error("polar_linear_t: expected wdt f32/f16/bf16, received %d", int(p->wdt));
  if (p->bias && !valid_dtype(p->bdt))
    return polar_set_error("polar_linear_t: expected bdt f32/f16/bf16, received %d", int(p->bdt));
  if (p->m == 0 || p->n == 0) return 0;
  if (!p->y) return polar_set_error("polar_linear_t: expected y != NULL");
  if (p->k > 0 && (!p->x || !p->w)) return polar_set_error("polar_linear_t: expected x and w != NULL when k > 0");
  if (p->k > 0 && p->ldx < p->k)
    return polar_set_error("polar_linear_t: expected ldx >= k = %d, received %lld", p->k, (long long)p->ldx);
  if (p->k > 0 && p->ldw < p->n)
    return polar_set_error("polar_linear_t: expected ldw >= n = %d, received %lld", p->n, (long long)p->ldw);
  if (p->ldy < p->n) return polar_set_error("polar_linear_t: expected ldy >= n = %d, received %lld", p->n, (long long)p->ldy);
  try {
    const std::vector<float> bias = bias_f32(p->bias, p->bdt, p->n, nullptr);
    const float* b = p->bias ? bias.data() : nullptr;
    switch (p->wdt) {
      case POLAR_F32: linear_t_impl<float>(*p, b); break;
      case POLAR_F16: linear_t_impl<f16>(*p, b); break;
      case POLAR_BF16: linear_t_impl<bf16>(*p, b); break;
    }
  } catch (const std::bad_alloc&) {
    return polar_set_error("polar_linear_t: out of memory (m=%d n=%d k=%d)", p->m, p->n, p->k);
  } catch (const std::exception& ex) {
    return polar_set_error("polar_linear_t: %s", ex.what());
  }
  return 0;
}
