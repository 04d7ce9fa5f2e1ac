// Shared pieces of the selective GEMM kernels (sel_gemm.cu, sel_gemm_ws.cuh): tile shape, the cp.async tile
// loader (gathered weight rows, activations), programmatic-dependent-launch and K-order helpers, the A
// fragment loads, the wgmma shared-memory descriptor, and the epilogue with its split-K reduction.
// Included only by sel_gemm.cu (the definitions are internal to it).
#pragma once
#include <cstdint>

#include "common.cuh"
#include "sel_gemm.cuh"

namespace polar_cuda {
namespace {
constexpr int BM = 128;  // output features per CTA
constexpr int BK = 64;   // K per pipeline stage (128 bytes per row)
constexpr int SLD = BM + 4;  // fp32 epilogue tile row (floats)

template <int NB, bool WG, int MMA_STAGES = 4, int MINB = 1>
struct Cfg {
  // MINB = 2 (wgmma, two CTAs per SM): 3 stages so that two CTAs' buffers fit one SM
  static constexpr int STAGES = WG ? (MINB == 2 ? 3 : NB >= 256 ? 4 : NB >= 128 ? 5 : 6) : MMA_STAGES;
  static constexpr int A_BYTES = BM * BK * 2;
  static constexpr int B_BYTES = NB * BK * 2;
  static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int SMEM = STAGES * STAGE_BYTES + (WG ? 1024 : 0);
  static_assert(NB * SLD * 4 <= STAGES * STAGE_BYTES, "epilogue tile must fit in the pipeline buffers");
};

// ---- tile loader ------------------------------------------------------------------------------------
// EF: the weight (A) copies carry an L2 evict-first policy (for kernels that read each weight tile once)
// LPR (A_COLS only): lanes per gathered K row's 256-byte piece, see below
template <typename T, int AMODE, int NB, int NT, bool EF = false, int LPR_ = 8>
struct Loader {
  static constexpr int A_ITERS = (BM * BK / 8) / NT;
  static constexpr int B_CHUNKS = NB * BK / 8;
  static constexpr int B_ITERS = (B_CHUNKS + NT - 1) / NT;
  static constexpr int A_PTRS = AMODE == A_ROWS ? A_ITERS : 1;
  // A_COLS: each gathered K row's 256-byte piece (BM features) is copied by LPR lanes, CPR 16-byte chunks each,
  // so a thread computes the address of PASSES rows per stage, not one per chunk. Row of pass h: jj = tid / LPR
  // + h * (NT / LPR); chunk c of it: ch = c * LPR + tid % LPR. With 16 lanes per row (one chunk per thread and
  // row, as before) a thread loaded eight row indices and computed eight addresses per stage; H200
  // read-flush sweep, fc2 ms with 16 / 8 / 4 / 2 lanes per row: OPT-66B batch 64 (mma.sync) at 25% 0.0690 /
  // 0.0618 / 0.0614 / 0.0790, at 50% 0.1153 / 0.1057 / 0.1082 / 0.1380, at 100% 0.2100 / 0.1992 / 0.2002 /
  // 0.2569; batch 256 (warp-specialized) at 25% 0.1181 / 0.1066 / 0.1058 / 0.1213, at 50% 0.1965 / 0.1750 /
  // 0.1734 / 0.1991. Hence 8 in the lock-step kernels and 4 in the warp-specialized one (2: a warp's copy
  // touches 16 rows' lines at once, slower everywhere).
  static constexpr int LPR = LPR_ > NT / BK ? LPR_ : NT / BK;
  static constexpr int CPR = (BM / 8) / LPR;
  static constexpr int PASSES = BK * LPR / NT;
  static_assert(LPR >= 1 && LPR <= BM / 8 && PASSES * CPR == A_ITERS, "A_COLS row mapping");
  __device__ __forceinline__ static int col_row(int t, int h) { return t / LPR + h * (NT / LPR); }
  const T* arow[A_PTRS];
  bool aval[A_PTRS];
  const T* brow[B_ITERS];
  bool bval[B_ITERS];
  int tid, f0;
  uint64_t a_pol = 0;  // EF: the evict-first policy
  // A_COLS: the row indices of the next chunk to load, fetched one main-loop step early (prefetch_rows)
  // so that the copies of that chunk do not wait for an L2 round trip on idx (ncu: fc2's top stall)
  int pre_rows[AMODE == A_COLS ? PASSES : 1];
  int pre_c = -1;

  __device__ __forceinline__ Loader(const GemmArgs& g, int f0_, int m0, int tid_) : tid(tid_), f0(f0_) {
    if (EF) a_pol = l2_policy_evict_first();
    const T* A = static_cast<const T*>(g.A);
    if (AMODE == A_ROWS) {
      const int ch = tid & 7;
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int r = (tid >> 3) + i * (NT / 8);
        const int f = f0 + r;
        aval[i] = f < g.F;
        const int row = aval[i] ? (g.idx ? __ldg(g.idx + f) : f) : 0;
        arow[i] = A + (int64_t)row * g.lda + ch * 8;
      }
    } else {
      arow[0] = A;
      aval[0] = true;
    }
    const T* B = static_cast<const T*>(g.B);
    const int ch = tid & 7;
#pragma unroll
    for (int i = 0; i < B_ITERS; ++i) {
      const int q = tid + i * NT;
      const int m = m0 + (q >> 3);
      bval[i] = q < B_CHUNKS && m < g.M;
      brow[i] = B + (int64_t)(bval[i] ? m : 0) * g.ldb + ch * 8;
    }
  }

  __device__ __forceinline__ void copy_a(uint32_t dst, const void* src, bool valid) const {
    if (EF) cp_async16_pf256_hint(dst, src, valid, a_pol);
    else cp_async16_pf256(dst, src, valid);
  }
  __device__ __forceinline__ void load(const GemmArgs& g, uint32_t sa, uint32_t sb, int c) const {
    load_a(g, sa, c);
    load_b(g, sb, c);
  }
  __device__ __forceinline__ void load_a(const GemmArgs& g, uint32_t sa, int c) const {
    const int k0 = c * BK;
    const T* A = static_cast<const T*>(g.A);
    if (AMODE == A_ROWS) {
      const int ch = tid & 7;
      const bool kv = k0 + ch * 8 < g.K;
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int r = (tid >> 3) + i * (NT / 8);
        const bool v = aval[i] && kv;
        copy_a(sa + r * 128 + ((ch ^ (r & 7)) << 4), v ? arow[i] + k0 : A, v);
      }
    } else {
      // all of this chunk's row indices first: the copies below are asm volatile with a memory clobber, so a
      // load placed between them would be issued (and waited for) one at a time
      int rows[PASSES];
      if (pre_c == c) {
#pragma unroll
        for (int i = 0; i < PASSES; ++i) rows[i] = pre_rows[i];
      } else {
        fetch_rows(g, c, rows);
      }
      load_a_rows(g, sa, rows);
    }
  }
  // A_COLS: the copies of one chunk whose row indices (rows[h]: K row col_row(tid, h) of the chunk, < 0 past K)
  // are already in registers.
  __device__ __forceinline__ void load_a_rows(const GemmArgs& g, uint32_t sa, const int* rows) const {
    const T* A = static_cast<const T*>(g.A);
    const int l = tid % LPR;
    const bool full = f0 + BM <= g.F;  // every chunk of the tile's features exists (all but a last partial tile)
#pragma unroll
    for (int h = 0; h < PASSES; ++h) {
      const int jj = col_row(tid, h);
      const bool rv = rows[h] >= 0;
      const T* src = A + (int64_t)(rv ? rows[h] : 0) * g.lda + f0 + l * 8;
      const uint32_t dst = sa + jj * 256;
#pragma unroll
      for (int c = 0; c < CPR; ++c) {
        const int ch = c * LPR + l;
        const bool v = rv && (full || f0 + ch * 8 < g.F);
        copy_a(dst + ((ch ^ (jj & 7)) << 4), v ? src + c * LPR * 8 : A, v);
      }
    }
  }
  // A_COLS in the warp-specialized kernel: load_a_rows with the chunk's indices from shared memory (sidx[jj])
  __device__ __forceinline__ void load_a_smem(const GemmArgs& g, uint32_t sa, int c, const int* sidx) const {
    int rows[PASSES];
#pragma unroll
    for (int h = 0; h < PASSES; ++h) {
      const int jj = col_row(tid, h);
      const int j = c * BK + jj;
      rows[h] = j < g.K ? (g.idx ? sidx[jj] : j) : -1;
    }
    load_a_rows(g, sa, rows);
  }
  // A_COLS: the K rows (of a chunk) whose indices lane l < 16 of warp w copies for the warp's threads (each
  // warp of 32 threads reads 16 distinct rows, for any LPR when NT = 128)
  __device__ __forceinline__ static int warp_row(int w, int l) {
    constexpr int RW = 32 / LPR;  // distinct rows per pass in a warp (LPR <= 16)
    return col_row(w * 32 + (l % RW) * LPR, l / RW);
  }
  __device__ __forceinline__ void fetch_rows(const GemmArgs& g, int c, int* rows) const {
    const int k0 = c * BK;
#pragma unroll
    for (int h = 0; h < PASSES; ++h) {
      const int j = k0 + col_row(tid, h);
      rows[h] = j < g.K ? (g.idx ? __ldg(g.idx + j) : j) : -1;
    }
  }
  // A_COLS: start fetching chunk c's row indices now (used by the load_a of c, a main-loop step later)
  __device__ __forceinline__ void prefetch_rows(const GemmArgs& g, int c) {
    if (AMODE != A_COLS) return;
    fetch_rows(g, c, pre_rows);
    pre_c = c;
  }
  __device__ __forceinline__ void load_b(const GemmArgs& g, uint32_t sb, int c) const {
    const int k0 = c * BK;
    const T* B = static_cast<const T*>(g.B);
    const int ch = tid & 7;
    const bool kv = k0 + ch * 8 < g.K;
#pragma unroll
    for (int i = 0; i < B_ITERS; ++i) {
      const int q = tid + i * NT;
      if (B_CHUNKS % NT == 0 || q < B_CHUNKS) {
        const int n = q >> 3;
        const bool v = bval[i] && kv;
        cp_async16(sb + n * 128 + ((ch ^ (n & 7)) << 4), v ? brow[i] + k0 : B, v);
      }
    }
  }
};

// Pipeline prologue: the first STAGES-1 stages. fc2 (A_COLS) streams its first weight tiles before waiting
// for fc1 (its activations' producer); everything else waits first.
// Each CTA walks its K chunks starting at its own offset (rot): when every CTA read the same activation
// chunk at the same time, those few L2 lines became a hot spot (the per-chunk time grew with the number
// of concurrent CTAs). The sum is the same up to fp32 rounding order.
__device__ __forceinline__ int chunk_of(int i, int c_begin, int nloc, int rot) {
  int t = i + rot;
  if (t >= nloc) t -= nloc;
  return c_begin + t;
}
__device__ __forceinline__ int chunk_rotation(int nloc) {
  return nloc > 0 ? (int)((blockIdx.x * 37u + blockIdx.z * 11u + blockIdx.y * 5u) % (unsigned)nloc) : 0;
}

// fc2 fetches the row indices of all STAGES-1 chunks before the first copy: one idx round trip instead of
// one per stage (ncu at OPT-6.7B batch 64 / 5%: fc2's 32 CTAs were active for 14 us to stream 229 KB each).
template <int AMODE, int STAGES, int STAGE_BYTES, int A_BYTES, typename L>
__device__ __forceinline__ void gemm_prologue(const GemmArgs& g, const L& ld, uint32_t sbase, int c_begin, int nloc, int rot) {
  if (AMODE == A_COLS) {
    if (!g.early_a) griddep_wait_and_release();  // else idx was written before the previous kernel (see above)
    int rows[STAGES - 1][L::PASSES];
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s)
      if (s < nloc) ld.fetch_rows(g, chunk_of(s, c_begin, nloc, rot), rows[s]);
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s)
      if (s < nloc) ld.load_a_rows(g, sbase + s * STAGE_BYTES, rows[s]);
    if (g.early_a) griddep_wait_and_release();
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < nloc) ld.load_b(g, sbase + s * STAGE_BYTES + A_BYTES, chunk_of(s, c_begin, nloc, rot));
      cp_async_commit();
    }
  } else {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < nloc) ld.load(g, sbase + s * STAGE_BYTES, sbase + s * STAGE_BYTES + A_BYTES, chunk_of(s, c_begin, nloc, rot));
      cp_async_commit();
    }
  }
}

// A fragment (16 features x 16 k) of k-step ks for the features [fb, fb+16) of the stage at sa.
template <int AMODE>
__device__ __forceinline__ void load_afrag(uint32_t sa, int fb, int ks, int lane, uint32_t* a) {
  if (AMODE == A_ROWS) {
    const int row = fb + (lane & 15);
    const int ch = ks * 2 + (lane >> 4);
    ldsm_x4(sa + row * 128 + ((ch ^ (row & 7)) << 4), a[0], a[1], a[2], a[3]);
  } else {
    const int mat = lane >> 3;
    const int jj = ks * 16 + (mat >> 1) * 8 + (lane & 7);
    const int fch = (fb >> 3) + (mat & 1);
    ldsm_x4_t(sa + jj * 256 + ((fch ^ (jj & 7)) << 4), a[0], a[1], a[2], a[3]);
  }
}

// ---- epilogue (shared by both paths): S = fp32 tile [NB][SLD] in shared memory -----------------------
// BAR: the barrier among the NT epilogue threads (0: the whole CTA; else named barrier BAR of NT threads).
template <int BAR, int NT>
__device__ __forceinline__ void epi_sync() {
  if (BAR == 0) __syncthreads();
  else asm volatile("bar.sync %0, %1;\n" ::"n"(BAR), "n"(NT) : "memory");
}
// Split-K arrival: after this CTA's partial tile is in the workspace, count it on the tile's counter; true in
// the last of the ns CTAs to arrive (which then sums and stores the tile), with every partial visible to it.
template <int BAR, int NT>
__device__ __forceinline__ bool split_arrive_last(const GemmArgs& g, int tile, int ns) {
  __shared__ int s_last;
  __threadfence();
  epi_sync<BAR, NT>();
  if (threadIdx.x == 0) s_last = atomicAdd(g.counters + tile, 1u) == ns - 1;
  epi_sync<BAR, NT>();
  if (!s_last) return false;
  __threadfence();
  return true;
}
// tile: the tile's workspace / arrival-counter slot; ns: how many CTAs add into it (1: none, no workspace);
// split: this CTA's index among them (the plain-store reduction's partial slot).
// [n_lo, n_hi): the batch rows of the tile this CTA writes (a cluster reduction splits them among its CTAs).
template <typename T, int NB, int NT, int BAR = 0>
__device__ __forceinline__ void gemm_epilogue(const GemmArgs& g, float* S, int f0, int m0, int tile, int ns, int split,
                                              int n_lo = 0, int n_hi = NB) {
  const int tid = threadIdx.x;
  const int mval = min(NB, g.M - m0), fval = min(BM, g.F - f0);
  const int r0 = max(0, n_lo), r1 = min(mval, n_hi);
  // The bias of the 8 features this thread stores below (the store loop's feature group is tid % 16 in every
  // iteration, as NT is a multiple of 16), loaded first: its idx -> bias round trips then overlap the split-K
  // reduction instead of following it (they were two dependent cold loads per store-loop iteration).
  static_assert(NT % (BM / 8) == 0, "the store loop's feature group must not depend on the iteration");
  const T* bias = static_cast<const T*>(g.bias);
  const int bf = (tid % (BM / 8)) * 8;
  float bv[8];
  if (bias && g.epi != EPI_COLSUM) {
    int bi[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) bi[j] = bf + j < fval ? (g.bias_gather && g.idx ? g.idx[f0 + bf + j] : f0 + bf + j) : -1;
#pragma unroll
    for (int j = 0; j < 8; ++j) bv[j] = bi[j] >= 0 ? Dt<T>::f(bias[bi[j]]) : 0.f;
  }
  if (ns > 1) {
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    if (g.reduce_atomic) {  // every split adds into one fp32 tile
      float* acc = g.ws + (size_t)tile * NB * BM;
      for (int e = tid; e < mval * (BM / 4); e += NT) {
        const int n = e / (BM / 4), f = (e % (BM / 4)) * 4;
        if (f < fval) atomic_add4(acc + n * BM + f, *reinterpret_cast<const float4*>(S + n * SLD + f));
      }
      if (!split_arrive_last<BAR, NT>(g, tile, ns)) return;
      for (int e = tid; e < mval * (BM / 4); e += NT) {
        const int n = e / (BM / 4), f = (e % (BM / 4)) * 4;
        if (f < fval) {
          float4* p = reinterpret_cast<float4*>(acc + n * BM + f);
          *reinterpret_cast<float4*>(S + n * SLD + f) = __ldcg(p);
          __stcg(p, z);
        }
      }
    } else {  // every split stores its own partial tile (plain stores); the last one sums them
      float* part = g.ws + (size_t)tile * ns * NB * BM;
      float* mine = part + (size_t)split * NB * BM;
      for (int e = tid; e < mval * (BM / 4); e += NT) {
        const int n = e / (BM / 4), f = (e % (BM / 4)) * 4;
        if (f < fval) __stcg(reinterpret_cast<float4*>(mine + n * BM + f), *reinterpret_cast<const float4*>(S + n * SLD + f));
      }
      if (!split_arrive_last<BAR, NT>(g, tile, ns)) return;
      for (int e = tid; e < mval * (BM / 4); e += NT) {
        const int n = e / (BM / 4), f = (e % (BM / 4)) * 4;
        if (f < fval) {
          float4 a = *reinterpret_cast<const float4*>(S + n * SLD + f);
          for (int sp = 0; sp < ns; ++sp) {
            float4* q = reinterpret_cast<float4*>(part + (size_t)sp * NB * BM + n * BM + f);
            if (sp != split) {
              const float4 v = __ldcg(q);
              a.x += v.x;
              a.y += v.y;
              a.z += v.z;
              a.w += v.w;
            }
            __stcg(q, z);  // leave the workspace zero-filled
          }
          *reinterpret_cast<float4*>(S + n * SLD + f) = a;
        }
      }
    }
    if (tid == 0) g.counters[tile] = 0;
    epi_sync<BAR, NT>();
  }
  if (g.epi == EPI_COLSUM) {
    for (int f = tid; f < fval; f += NT) {
      const int fi = f0 + f;
      const float bv = bias ? Dt<T>::f(bias[g.bias_gather && g.idx ? g.idx[fi] : fi]) : 0.f;
      float s = 0.f;
      for (int n = r0; n < r1; ++n) {
        float v = S[n * SLD + f] + bv;
        if (g.act == POLAR_ACT_RELU) v = fmaxf(v, 0.f);
        s += g.colsum_sigmoid ? 1.f / (1.f + __expf(-v)) : v;
      }
      atomicAdd(g.colsum + fi, s);
    }
    return;
  }
  for (int e = tid; e < (r1 - r0) * (BM / 8); e += NT) {
    const int n = r0 + e / (BM / 8), f = (e % (BM / 8)) * 8;
    if (f >= fval) continue;
    const int fi = f0 + f, m = m0 + n;
    const int nv = min(8, fval - f);  // 8 except at the tail of an fp32 output (T outputs need F % 8 == 0)
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = S[n * SLD + f + j];
    if (bias) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] += bv[j];  // f == bf here
    }
    if (g.act == POLAR_ACT_RELU) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = fmaxf(v[j], 0.f);
    }
    if (g.c_f32) {
      float* c = static_cast<float*>(g.C) + (int64_t)m * g.ldc + fi;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < nv) c[j] = g.accumulate ? c[j] + v[j] : v[j];
    } else {
      V8* c = reinterpret_cast<V8*>(static_cast<T*>(g.C) + (int64_t)m * g.ldc + fi);
      if (g.accumulate) {
        const V8 old = *c;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 o = Dt<T>::unpack(old.u[j]);
          v[2 * j] += o.x;
          v[2 * j + 1] += o.y;
        }
      }
      V8 out;
#pragma unroll
      for (int j = 0; j < 4; ++j) out.u[j] = Dt<T>::pack(v[2 * j], v[2 * j + 1]);
      *c = out;
    }
  }
}

// ---- split-K over a thread-block cluster (sm_90) -----------------------------------------------------
// The splits of one tile run as one cluster (dims (1, splits, 1)); each CTA holds its fp32 partial tile in
// S. CTA r sums rows [lo, hi) of every CTA's S into its own S through distributed shared memory and then
// writes those rows: no workspace, no global atomics (the fp32 atomics of all split CTAs meeting in L2 cost
// ~20 K steps of time per tile at batch 256).
template <int NT>
__device__ __forceinline__ void cluster_sum_rows(float* S, int mval, int fval, int* lo, int* hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t r, n;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
  cluster_sync_all();  // every CTA's partial tile is in its shared memory
  const int per = (mval + (int)n - 1) / (int)n;
  *lo = min(mval, (int)r * per);
  *hi = min(mval, *lo + per);
  const uint32_t base = smem_u32(S);
  for (int e = threadIdx.x; e < (*hi - *lo) * (BM / 4); e += NT) {
    const int row = *lo + e / (BM / 4), f = (e % (BM / 4)) * 4;
    if (f >= fval) continue;
    float4* mine = reinterpret_cast<float4*>(S + row * SLD + f);
    float4 a = *mine;
    const uint32_t off = base + (uint32_t)(row * SLD + f) * 4u;
    for (uint32_t q = 0; q < n; ++q) {
      if (q == r) continue;
      uint32_t ra;
      float4 v;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(ra) : "r"(off), "r"(q));
      asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(ra) : "memory");
      a.x += v.x;
      a.y += v.y;
      a.z += v.z;
      a.w += v.w;
    }
    *mine = a;
  }
  // no CTA leaves while another still reads its tile; the release/acquire cluster barrier also orders this
  // CTA's own threads (the epilogue reads the summed rows that other threads wrote)
  cluster_sync_all();
#else
  *lo = 0;
  *hi = mval;
#endif
}

// Epilogue of the lock-step kernels (grid (f tiles, splits, batch tiles), or (f x batch tiles, splits) with
// interleaved batch tiles): the fp32 tile S of this CTA's split, summed over the tile's cluster when the
// splits are one (g.cluster_reduce), else through the workspace (gemm_epilogue).
// The cluster branch alone (also the warp-specialized kernel's, whose NT epilogue threads sync on named barrier BAR).
template <typename T, int NB, int NT, int BAR = 0>
__device__ __forceinline__ void cluster_tile_epilogue(const GemmArgs& g, float* S, int f0, int m0) {
  int lo, hi;
  cluster_sum_rows<NT>(S, min(NB, g.M - m0), min(BM, g.F - f0), &lo, &hi);
  gemm_epilogue<T, NB, NT, BAR>(g, S, f0, m0, 0, 1, 0, lo, hi);
}
template <typename T, int NB, int NT>
__device__ __forceinline__ void tile_epilogue(const GemmArgs& g, float* S, int f0, int m0) {
  if (g.cluster_reduce) {
    cluster_tile_epilogue<T, NB, NT>(g, S, f0, m0);
    return;
  }
  gemm_epilogue<T, NB, NT>(g, S, f0, m0, blockIdx.z * gridDim.x + blockIdx.x, gridDim.y, blockIdx.y);
}

// ---- wgmma shared-memory descriptor ------------------------------------------------------------------
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  // K-major, 128-byte swizzle: start >> 4 | LBO (unused, 1) << 16 | SBO = 1024 B (8 rows) >> 4 << 32 | mode 1 << 62
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

}  // namespace
}  // namespace polar_cuda
