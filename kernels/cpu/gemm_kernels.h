// Building blocks of the CPU GEMMs: operand views, packing, the register-blocked micro-kernel, and the
// unpacked small-m kernels (dot, broadcast and axpy forms). Internal header of gemm.cc.
#pragma once
#include <algorithm>
#include <cstdint>

#include "gemm_simd.h"

namespace polar {
namespace gemm {

// ---- Blocking table (per ISA) -------------------------------------------------------------------------
// Micro-tile MR x NR. On Zen 4 every AVX-512 shape from 6x32 to 14x32 reaches the same ~116 GFLOP/s per
// core; 8x32 makes the A panels exact 8x8 transposes and divides the model's sizes. With AVX2's 16
// registers, 6x16 (12 accumulators) is the classic best.
#if defined(__AVX512F__)
constexpr int MR = 8, NV = 2;
constexpr int DOT_RM = 4;  // dot tiles: DOT_RM x rows of X against 4 weight rows (16 accumulators)
constexpr int AX_RM = 4;   // axpy tiles: AX_RM rows of X against 4 vectors of columns
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int MR = 6, NV = 2;
constexpr int DOT_RM = 2;
constexpr int AX_RM = 2;
#else
constexpr int MR = 4, NV = 4;
constexpr int DOT_RM = 2;
constexpr int AX_RM = 2;
#endif
constexpr int NR = NV * VW;
constexpr int KC = 256;                 // K block: a B micro-panel (KC x NR) stays in L1
constexpr int MC = (128 / MR) * MR;     // rows of A packed at once (MC x KC in L2)
constexpr int NC = 512;                 // widest column tile of one task (KC x NC packed B in L2)
constexpr int AX_CV = 4;                // vectors of columns per axpy tile
constexpr int AX_CV1 = VW >= 16 ? 16 : VW >= 8 ? 8 : 4;  // the same with one row of X
constexpr int AX_CW = AX_CV * VW;
constexpr int AX_KB_SMALL = 16, AX_KB_LARGE = 64;  // rows of W^T swept together (axpy_driver)
static_assert(NC % NR == 0, "NC must be a multiple of NR");

// ---- Operand views ------------------------------------------------------------------------------------
// An operand is seen as a set of "lines". For A, r indexes rows of op(A); for B, r indexes columns of
// op(B); p indexes K. idx (optional) gathers lines: the row selection of polar_linear / polar_linear_t.
//   KMajor: element (r, p) at base[idx(r) * ld + p]   (K contiguous: X, W of a linear, B^T, A)
//   RMajor: element (r, p) at base[idx(p) * ld + r]   (r contiguous: B, A^T, W^T of linear_t)
template <class T>
struct KMajor {
  using elem = T;
  const T* base;
  int64_t ld;
  const int32_t* idx;
  const T* line(int64_t r) const { return base + (idx ? int64_t(idx[r]) : r) * ld; }
};
template <class T>
struct RMajor {
  using elem = T;
  const T* base;
  int64_t ld;
  const int32_t* idx;
  const T* line(int64_t p) const { return base + (idx ? int64_t(idx[p]) : p) * ld; }
};

// ---- Epilogue -----------------------------------------------------------------------------------------
// out = post( pre(alpha * acc + bias) + beta * C ), where pre/post are optional ReLUs: a linear with
// accumulate applies its activation before adding Y (pre); a K-split block chain applies it after the
// last partial sum was added (post). beta == 0 never reads C (it may hold garbage, as in BLAS).
struct Epi {
  float alpha = 1.f, beta = 0.f;
  const float* bias = nullptr;  // indexed by column
  bool relu_pre = false, relu_post = false;
};

inline float epi_apply(float acc, const float* c, float bias, const Epi& e) {
  float t = e.alpha * acc + bias;
  if (e.relu_pre) t = t > 0.f ? t : 0.f;
  if (e.beta != 0.f) t += e.beta * *c;
  if (e.relu_post) t = t > 0.f ? t : 0.f;
  return t;
}

// Scalar epilogue of an rows x cols block of raw sums (edge tiles, unpacked kernels).
inline void epi_block(const float* acc, int64_t lda, int rows, int cols, float* c, int64_t ldc, const Epi& e) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      c[i * ldc + j] = epi_apply(acc[i * lda + j], c + i * ldc + j, e.bias ? e.bias[j] : 0.f, e);
}

// ---- Micro-kernel -------------------------------------------------------------------------------------
template <int R>
inline void store_tile(vf (&acc)[R][NV], float* __restrict c, int64_t ldc, const Epi& e) {
  const vf va = v_set1(e.alpha), vb = v_set1(e.beta), z = v_zero();
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      float* cp = c + i * ldc + j * VW;
      vf t = v_mul(acc[i][j], va);
      if (e.bias) t = v_add(t, v_load(e.bias + j * VW));
      if (e.relu_pre) t = v_max(t, z);
      if (e.beta != 0.f) t = v_fma(vb, v_load(cp), t);
      if (e.relu_post) t = v_max(t, z);
      v_store(cp, t);
    }
}

// C[R, NR] = epilogue(A panel (stride MR per k) x B panel (NR per k)). R < MR serves the last rows of a
// block without computing padding rows.
template <int R>
inline void micro(int64_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
                  int64_t ldc, const Epi& e) {
  vf acc[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = v_zero();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p) {
    vf bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = v_load(b + j * VW);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const vf av = v_set1(a[i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] = v_fma(av, bv[j], acc[i][j]);
    }
    a += MR;
    b += NR;
  }
  store_tile<R>(acc, c, ldc, e);
}

template <int R = MR>
inline void micro_rows(int r, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const Epi& e) {
  if (r == R) return micro<R>(kc, a, b, c, ldc, e);
  if constexpr (R > 1) micro_rows<R - 1>(r, kc, a, b, c, ldc, e);
}

// micro() for the first row panel of a block whose B is r-contiguous (B of sgemm without trans_b, W^T of
// linear_t): reads the NR columns straight from the source rows (widening) and writes the packed panel
// for the other row panels as it goes. A separate packing pass would stall on every source row it
// fetches from DRAM (gathered rows defeat the prefetcher); here the FMAs overlap those loads.
template <int R, class T>
inline void micro_pack(int64_t kc, const float* __restrict a, const RMajor<T>& src, int64_t p0, int64_t col,
                       float* __restrict bp, float* __restrict c, int64_t ldc, const Epi& e) {
  constexpr int64_t kAhead = 16;  // rows
  vf acc[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = v_zero();
  for (int64_t p = 0; p < kc; ++p) {
    const T* s = src.line(p0 + p) + col;
    if (p + kAhead < kc) {
      const char* pf = reinterpret_cast<const char*>(src.line(p0 + p + kAhead) + col);
#pragma GCC unroll 4
      for (size_t off = 0; off < NR * sizeof(T); off += 64) __builtin_prefetch(pf + off);
    }
    vf bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      bv[j] = v_loadw(s + j * VW);
      v_store(bp + j * VW, bv[j]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const vf av = v_set1(a[i]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] = v_fma(av, bv[j], acc[i][j]);
    }
    a += MR;
    bp += NR;
  }
  store_tile<R>(acc, c, ldc, e);
}

template <int R = MR, class T>
inline void micro_pack_rows(int r, int64_t kc, const float* a, const RMajor<T>& src, int64_t p0, int64_t col,
                            float* bp, float* c, int64_t ldc, const Epi& e) {
  if (r == R) return micro_pack<R>(kc, a, src, p0, col, bp, c, ldc, e);
  if constexpr (R > 1) micro_pack_rows<R - 1>(r, kc, a, src, p0, col, bp, c, ldc, e);
}

// ---- Packing ------------------------------------------------------------------------------------------
// A panel of width W (MR for A, NR for B) is stored k-major: out[p * W + r], lines >= nvalid zero.

// Zero source lines for the padding of partial panels (kc <= KC elements of any dtype).
alignas(64) inline const float kZeroLine[KC + 16] = {};

#if defined(__AVX__)
template <class T>
inline __m256 load8(const T* p);
template <>
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
template <>
inline __m256 load8(const bf16* p) {
#if defined(__AVX2__)
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
#else
  alignas(32) float t[8];
  for (int i = 0; i < 8; ++i) t[i] = to_f32(p[i]);
  return _mm256_load_ps(t);
#endif
}
template <>
inline __m256 load8(const f16* p) {
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
#else
  alignas(32) float t[8];
  for (int i = 0; i < 8; ++i) t[i] = to_f32(p[i]);
  return _mm256_load_ps(t);
#endif
}

__attribute__((always_inline)) inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// Packs lines [r0, r1) into consecutive panels of width W (the last one zero-padded), K range
// [p0, p0 + kc). Panel q starts at out + q * W * kc.
//
// K-contiguous lines: a transpose, 8x8 at a time, widening on load. One group of 8 lines is walked along
// K before the next: lines ld apart often share an L1 set (ld a multiple of 1 KiB), and touching more of
// them at once than the cache has ways would refetch every line twice.
// W < 8 (AVX2's MR = 6) stores 8 floats per k and lets the next k overwrite the 2 extra: the caller's
// buffer has slack and panels are packed in increasing address order.
template <int W, class T>
inline void pack_block(const KMajor<T>& s, int64_t r0, int64_t r1, int64_t p0, int64_t kc, float* __restrict out) {
  for (int64_t rq = r0; rq < r1; rq += W, out += W * kc) {
    const int nvalid = int(std::min<int64_t>(W, r1 - rq));
    const T* src[W];
    for (int r = 0; r < W; ++r) src[r] = r < nvalid ? s.line(rq + r) + p0 : reinterpret_cast<const T*>(kZeroLine);
    int64_t pv = 0;
#if defined(__AVX__)
    static_assert(W % 8 == 0 || W < 8, "panel width");
    pv = kc & ~int64_t(7);
#pragma GCC unroll 1
    for (int g = 0; g < W; g += 8) {
      for (int64_t p = 0; p < pv; p += 8) {
        __m256 v[8];
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) v[q] = g + q < W ? load8(src[g + q] + p) : _mm256_setzero_ps();
        transpose8(v);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(out + (p + q) * W + g, v[q]);
      }
    }
#endif
    for (int64_t p = pv; p < kc; ++p)
      for (int r = 0; r < W; ++r) out[p * W + r] = to_f32(src[r][p]);
  }
}

// r-contiguous lines: row copies (widening), K outermost so that each source row is read as one run.
template <int W, class T>
inline void pack_block(const RMajor<T>& s, int64_t r0, int64_t r1, int64_t p0, int64_t kc, float* __restrict out) {
  const int64_t full = r0 + (r1 - r0) / W * W;
  constexpr int kAhead = 16;  // rows; gathered rows are out of the hardware prefetcher's reach
  const size_t run = size_t(r1 - r0) * sizeof(T);
  for (int64_t p = 0; p < kc; ++p) {
    const T* src = s.line(p0 + p);
    if (p + kAhead < kc) {
      const char* pf = reinterpret_cast<const char*>(s.line(p0 + p + kAhead) + r0);
      for (size_t off = 0; off < run; off += 64) __builtin_prefetch(pf + off);
    }
    float* o = out + p * W;
    int64_t rq = r0;
    for (; rq < full; rq += W, o += W * kc) {
      if constexpr (W % VW == 0) {
#pragma GCC unroll 4
        for (int r = 0; r < W; r += VW) v_store(o + r, v_loadw(src + rq + r));
      } else {
#if defined(__AVX__)
        if constexpr (W % 8 == 0) {
#pragma GCC unroll 4
          for (int r = 0; r < W; r += 8) _mm256_storeu_ps(o + r, load8(src + rq + r));
          continue;
        }
#endif
        for (int r = 0; r < W; ++r) o[r] = to_f32(src[rq + r]);
      }
    }
    if (rq < r1) {
      int r = 0;
      for (; rq + r < r1; ++r) o[r] = to_f32(src[rq + r]);
      for (; r < W; ++r) o[r] = 0.f;
    }
  }
}

// ---- Dot form (small m, K-contiguous weights) ---------------------------------------------------------
// out[i][j] = sum_p x_i[p] * w_j[p] for RM rows of X and RN weight lines, accumulated along K in vectors:
// each weight element is loaded and widened once for all RM rows; no packing, so the decode case streams
// the weights once.
template <int RM, int RN, class T>
inline void dot_tile(int64_t k, const float* const* x, const T* const* w, float out[][8]) {
  vf acc[RM][RN];
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < RN; ++j) acc[i][j] = v_zero();
  int64_t p = 0;
  for (; p + VW <= k; p += VW) {
    vf wv[RN];
#pragma GCC unroll 8
    for (int j = 0; j < RN; ++j) wv[j] = v_loadw(w[j] + p);
#pragma GCC unroll 8
    for (int i = 0; i < RM; ++i) {
      const vf xv = v_load(x[i] + p);
#pragma GCC unroll 8
      for (int j = 0; j < RN; ++j) acc[i][j] = v_fma(xv, wv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < RN; ++j) out[i][j] = v_hsum(acc[i][j]);
  for (; p < k; ++p)
    for (int j = 0; j < RN; ++j) {
      const float wj = to_f32(w[j][p]);
      for (int i = 0; i < RM; ++i) out[i][j] += x[i][p] * wj;
    }
}

// ---- Broadcast form (9..16 rows of X, K-contiguous weights) -------------------------------------------
// C^T tile: acc[r][:] (+)= sum_p w[r * KC + p] * xt[p][:], with X transposed once into xt (K x XW,
// XW = MV * VW lanes, one lane per row of X). Each weight element costs one broadcast and MV FMAs, and the
// weights are only copied (widened), not transposed: at m = 16, packing W for the micro-kernel would cost
// as much as the FMAs. The rows sit KC apart in a buffer so that the tile addresses all of them from one
// register (with R separate row pointers the loop ran out of registers and lost a third of its speed).
constexpr int BC_R = VW >= 16 ? 12 : 6;  // weight rows per tile (accumulators R x MV)

template <int R, int MV>
inline void bcast_tile(int64_t kc, const float* __restrict w, const float* __restrict xt, float* __restrict acc_out,
                       bool first) {
  vf acc[R][MV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < MV; ++v) acc[r][v] = first ? v_zero() : v_load(acc_out + (r * MV + v) * VW);
  for (int64_t p = 0; p < kc; ++p) {
    vf xv[MV];
#pragma GCC unroll 2
    for (int v = 0; v < MV; ++v) xv[v] = v_load(xt + (p * MV + v) * VW);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vf b = v_set1(w[r * KC + p]);
#pragma GCC unroll 2
      for (int v = 0; v < MV; ++v) acc[r][v] = v_fma(b, xv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < MV; ++v) v_store(acc_out + (r * MV + v) * VW, acc[r][v]);
}

// ---- Axpy form (small m, K-indexed weight rows) -------------------------------------------------------
// C[RM, CV*VW] (+)= sum_{p in [p0, p1)} x[i, p] * w(p, cols): weight rows are streamed and widened once
// for all RM rows of X. The driver sweeps a short block of rows across all its columns before moving
// on, so every row is read as one long run; the rows are gathered (selective down projection), which the
// hardware prefetcher cannot follow across rows, so each tile prefetches its columns of the next block.
template <int RM, int CV, class T>
inline void axpy_tile(int64_t p0, int64_t p1, int64_t pnext_end, const float* x, int64_t ldx, const RMajor<T>& w,
                      int64_t col, float* c, int64_t ldc, const Epi& e) {
  vf acc[RM][CV];
#pragma GCC unroll 16
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < CV; ++j) acc[i][j] = v_zero();
  const int64_t span = p1 - p0;
  for (int64_t p = p0; p < p1; ++p) {
    const T* wr = w.line(p) + col;
    if (p + span < pnext_end) {
      const char* pf = reinterpret_cast<const char*>(w.line(p + span) + col);
#pragma GCC unroll 4
      for (size_t off = 0; off < CV * VW * sizeof(T); off += 64) __builtin_prefetch(pf + off, 0, 2);
    }
    vf wv[CV];
#pragma GCC unroll 16
    for (int j = 0; j < CV; ++j) wv[j] = v_loadw(wr + j * VW);
#pragma GCC unroll 16
    for (int i = 0; i < RM; ++i) {
      const vf xv = v_set1(x[i * ldx + p]);
#pragma GCC unroll 16
      for (int j = 0; j < CV; ++j) acc[i][j] = v_fma(xv, wv[j], acc[i][j]);
    }
  }
  const vf va = v_set1(e.alpha), vb = v_set1(e.beta), z = v_zero();
#pragma GCC unroll 16
  for (int i = 0; i < RM; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < CV; ++j) {
      float* cp = c + i * ldc + j * VW;
      vf t = v_mul(acc[i][j], va);
      if (e.bias) t = v_add(t, v_load(e.bias + j * VW));
      if (e.relu_pre) t = v_max(t, z);
      if (e.beta != 0.f) t = v_fma(vb, v_load(cp), t);
      if (e.relu_post) t = v_max(t, z);
      v_store(cp, t);
    }
}

}  // namespace gemm
}  // namespace polar
