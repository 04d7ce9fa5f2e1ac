// Selective (gathered) GEMMs of Polar Sparsity's MLP, and the router GEMMs built on them.
//
//   fc1 (A_ROWS): out[m, f] = epi( sum_k B[m, k] * A[idx[f], k] )      A = W1 [ffn, d], gathered rows
//   fc2 (A_COLS): out[m, f] = epi( sum_j B[m, j] * A[idx[j], f] )      A = W2t [ffn, d], gathered K rows
//
// Both are computed transposed (out^T = A' B^T): the weights are the MMA's "A" operand, 128 output
// features per CTA, and the batch is the MMA's N dimension, so a batch of 1..64 costs the same weight
// stream as one GEMV. Weights stream through a multi-stage cp.async pipeline (16-byte chunks, 128-byte
// XOR swizzle, conflict-free ldmatrix). Two MMA paths:
//   - mma.sync m16n8k16 (sm_80+): 4 warps x 32 features, batch tiles NB = 8/16/32/64;
//   - wgmma m64nNk16 (sm_90a): 2 warpgroups x 64 features, NB = 64/128/256 batch columns from a
//     swizzled shared-memory descriptor, A fragments from registers (ldmatrix).
// Split-K over CTAs (grid.y) when there are too few feature tiles to fill the GPU: partial tiles are
// added into an fp32 workspace tile, and the last CTA of a tile (arrival counter) applies the epilogue
// and leaves the workspace zeroed again.
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "common.cuh"
#include "sel_gemm.cuh"
#include "wgmma_gen.cuh"

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
template <typename T, int AMODE, int NB, int NT>
struct Loader {
  static constexpr int A_ITERS = (BM * BK / 8) / NT;
  static constexpr int B_CHUNKS = NB * BK / 8;
  static constexpr int B_ITERS = (B_CHUNKS + NT - 1) / NT;
  static constexpr int A_PTRS = AMODE == A_ROWS ? A_ITERS : 1;
  const T* arow[A_PTRS];
  bool aval[A_PTRS];
  const T* brow[B_ITERS];
  bool bval[B_ITERS];
  int tid, f0;
  // A_COLS: the row indices of the next chunk to load, fetched one main-loop step early (prefetch_rows)
  // so that the copies of that chunk do not wait for an L2 round trip on idx (ncu: fc2's top stall)
  int pre_rows[AMODE == A_COLS ? A_ITERS : 1];
  int pre_c = -1;

  __device__ __forceinline__ Loader(const GemmArgs& g, int f0_, int m0, int tid_) : tid(tid_), f0(f0_) {
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
        cp_async16_pf256(sa + r * 128 + ((ch ^ (r & 7)) << 4), v ? arow[i] + k0 : A, v);
      }
    } else {
      const int ch = tid & 15;
      const bool fv = f0 + ch * 8 < g.F;
      // all of this chunk's row indices first: the copies below are asm volatile with a memory clobber, so a
      // load placed between them would be issued (and waited for) one at a time
      int rows[A_ITERS];
      if (pre_c == c) {
#pragma unroll
        for (int i = 0; i < A_ITERS; ++i) rows[i] = pre_rows[i];
      } else {
        fetch_rows(g, c, rows);
      }
#pragma unroll
      for (int i = 0; i < A_ITERS; ++i) {
        const int jj = (tid >> 4) + i * (NT / 16);
        const bool v = fv && rows[i] >= 0;
        cp_async16_pf256(sa + jj * 256 + ((ch ^ (jj & 7)) << 4), v ? A + (int64_t)rows[i] * g.lda + f0 + ch * 8 : A, v);
      }
    }
  }
  __device__ __forceinline__ void fetch_rows(const GemmArgs& g, int c, int* rows) const {
    const int k0 = c * BK;
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) {
      const int j = k0 + (tid >> 4) + i * (NT / 16);
      rows[i] = j < g.K ? (g.idx ? __ldg(g.idx + j) : j) : -1;
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

// Programmatic dependent launch (sm_90): a kernel may start while the previous one in the stream finishes.
// griddepcontrol.wait returns once the previous grid completed and its writes are visible; every kernel
// here lets its own dependents launch only after that wait, so a dependent that starts early may still
// read what the kernel before this one wrote (fc2 reads the router's idx before waiting for fc1).
__device__ __forceinline__ void griddep_wait_and_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

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

template <int AMODE, int STAGES, int STAGE_BYTES, int A_BYTES, typename L>
__device__ __forceinline__ void gemm_prologue(const GemmArgs& g, const L& ld, uint32_t sbase, int c_begin, int nloc, int rot) {
  if (AMODE == A_COLS && g.early_a) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s)
      if (s < nloc) ld.load_a(g, sbase + s * STAGE_BYTES, chunk_of(s, c_begin, nloc, rot));
    griddep_wait_and_release();
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < nloc) ld.load_b(g, sbase + s * STAGE_BYTES + A_BYTES, chunk_of(s, c_begin, nloc, rot));
      cp_async_commit();
    }
  } else {
    if (AMODE == A_COLS) griddep_wait_and_release();
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
// tile: the tile's workspace / arrival-counter slot; ns: how many CTAs add into it (1: none, no workspace);
// split: this CTA's index among them (the plain-store reduction's partial slot).
template <typename T, int NB, int NT, int BAR = 0>
__device__ __forceinline__ void gemm_epilogue(const GemmArgs& g, float* S, int f0, int m0, int tile, int ns, int split) {
  const int tid = threadIdx.x;
  const int mval = min(NB, g.M - m0), fval = min(BM, g.F - f0);
  if (ns > 1) {
    __shared__ int s_last;
    const float4 z = make_float4(0.f, 0.f, 0.f, 0.f);
    if (g.reduce_atomic) {  // every split adds into one fp32 tile
      float* acc = g.ws + (size_t)tile * NB * BM;
      for (int e = tid; e < mval * (BM / 4); e += NT) {
        const int n = e / (BM / 4), f = (e % (BM / 4)) * 4;
        if (f < fval) atomic_add4(acc + n * BM + f, *reinterpret_cast<const float4*>(S + n * SLD + f));
      }
      __threadfence();
      epi_sync<BAR, NT>();
      if (tid == 0) s_last = atomicAdd(g.counters + tile, 1u) == ns - 1;
      epi_sync<BAR, NT>();
      if (!s_last) return;
      __threadfence();
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
      __threadfence();
      epi_sync<BAR, NT>();
      if (tid == 0) s_last = atomicAdd(g.counters + tile, 1u) == ns - 1;
      epi_sync<BAR, NT>();
      if (!s_last) return;
      __threadfence();
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
  const T* bias = static_cast<const T*>(g.bias);
  if (g.epi == EPI_COLSUM) {
    for (int f = tid; f < fval; f += NT) {
      const int fi = f0 + f;
      const float bv = bias ? Dt<T>::f(bias[g.bias_gather && g.idx ? g.idx[fi] : fi]) : 0.f;
      float s = 0.f;
      for (int n = 0; n < mval; ++n) {
        float v = S[n * SLD + f] + bv;
        if (g.act == POLAR_ACT_RELU) v = fmaxf(v, 0.f);
        s += g.colsum_sigmoid ? 1.f / (1.f + __expf(-v)) : v;
      }
      atomicAdd(g.colsum + fi, s);
    }
    return;
  }
  for (int e = tid; e < mval * (BM / 8); e += NT) {
    const int n = e / (BM / 8), f = (e % (BM / 8)) * 8;
    if (f >= fval) continue;
    const int fi = f0 + f, m = m0 + n;
    const int nv = min(8, fval - f);  // 8 except at the tail of an fp32 output (T outputs need F % 8 == 0)
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = S[n * SLD + f + j];
    if (bias) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (j < nv) v[j] += Dt<T>::f(bias[g.bias_gather && g.idx ? g.idx[fi + j] : fi + j]);
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

// ---- mma.sync path ---------------------------------------------------------------------------------
// NW = 4 warps x 32 features (2 m-tiles each) or 8 warps x 16 features (more warps to hide the per-chunk
// latencies: ncu showed ~0.4 eligible warps per scheduler at batch 64)
template <typename T, int AMODE, int NB, int ST, int NW = 4>
__global__ void __launch_bounds__(NW * 32) sel_gemm_mma_kernel(const GemmArgs g) {
  using C = Cfg<NB, false, ST>;
  constexpr int MT = 8 / NW;  // 16-feature m-tiles per warp
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int f0 = blockIdx.x * BM, m0 = blockIdx.z * NB;
  const int c_begin = blockIdx.y * g.cps;
  const int c_end = min(g.nchunks, c_begin + g.cps);
  const uint32_t sbase = smem_u32(smem);

  constexpr int NT8 = NB / 8;
  float acc[MT][NT8][4];
#pragma unroll
  for (int a = 0; a < MT; ++a)
#pragma unroll
    for (int b = 0; b < NT8; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;

  if (AMODE == A_ROWS) griddep_wait_and_release();  // the loader reads idx
  Loader<T, AMODE, NB, NW * 32> ld(g, f0, m0, tid);
  const int nloc = c_end - c_begin, rot = chunk_rotation(nloc);
  gemm_prologue<AMODE, C::STAGES, C::STAGE_BYTES, C::A_BYTES>(g, ld, sbase, c_begin, nloc, rot);
  if (C::STAGES - 1 < nloc) ld.prefetch_rows(g, chunk_of(C::STAGES - 1, c_begin, nloc, rot));
  for (int i = 0; i < nloc; ++i) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();
    {
      const int in = i + C::STAGES - 1;
      if (in < nloc) {
        const uint32_t st = sbase + (in % C::STAGES) * C::STAGE_BYTES;
        ld.load(g, st, st + C::A_BYTES, chunk_of(in, c_begin, nloc, rot));
      }
      cp_async_commit();
      if (in + 1 < nloc) ld.prefetch_rows(g, chunk_of(in + 1, c_begin, nloc, rot));
    }
    const uint32_t sa = sbase + (i % C::STAGES) * C::STAGE_BYTES;
    const uint32_t sb = sa + C::A_BYTES;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) load_afrag<AMODE>(sa, warp * (16 * MT) + mt * 16, ks, lane, af[mt]);
      if (NB == 8) {
        const int n = lane & 7;
        const int ch = ks * 2 + ((lane >> 3) & 1);
        uint32_t b0, b1;
        ldsm_x2(sb + n * 128 + ((ch ^ (n & 7)) << 4), b0, b1);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma16816<T>(acc[mt][0], af[mt], b0, b1);
      } else {
#pragma unroll
        for (int np = 0; np < NB / 16; ++np) {
          const int mat = lane >> 3;
          const int n = np * 16 + (mat >> 1) * 8 + (lane & 7);
          const int ch = ks * 2 + (mat & 1);
          uint32_t b0, b1, b2, b3;
          ldsm_x4(sb + n * 128 + ((ch ^ (n & 7)) << 4), b0, b1, b2, b3);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma16816<T>(acc[mt][2 * np], af[mt], b0, b1);
            mma16816<T>(acc[mt][2 * np + 1], af[mt], b2, b3);
          }
        }
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  float* S = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int f = warp * (16 * MT) + mt * 16 + (lane >> 2) + ((i >> 1) << 3);
        const int n = nt * 8 + (lane & 3) * 2 + (i & 1);
        S[n * SLD + f] = acc[mt][nt][i];
      }
  __syncthreads();
  gemm_epilogue<T, NB, NW * 32>(g, S, f0, m0, blockIdx.z * gridDim.x + blockIdx.x, gridDim.y, blockIdx.y);
}

// ---- wgmma path (sm_90a) ---------------------------------------------------------------------------
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  // K-major, 128-byte swizzle: start >> 4 | LBO (unused, 1) << 16 | SBO = 1024 B (8 rows) >> 4 << 32 | mode 1 << 62
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

// MINB = 2: two CTAs per SM (registers capped at 128, 3 stages), so that one CTA's barrier / copy-issue
// phase overlaps the other's MMAs; used with interleaved batch tiles (g.m_inner), so that the CTAs that
// share a weight tile run together and the second read of it hits L2.
// NWG = 4 (nb = 256 only): four warpgroups, each 64 features x 128 batch columns (m64n128), instead of two
// with 64 x 256: twice the warps to hide the per-chunk latencies, half the copies per thread.
template <typename T, int AMODE, int NB, int MINB = 1, int NWG = 2>
__global__ void __launch_bounds__(NWG * 128, MINB) sel_gemm_wgmma_kernel(const GemmArgs g) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Cfg<NB, true, 4, MINB>;
  extern __shared__ __align__(1024) char smem_raw[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  constexpr int WN = NB * 2 / NWG;  // batch columns per warpgroup
  static_assert(NWG == 2 || (NWG == 4 && NB == 256), "four warpgroups only with nb = 256");
  const int wg = warp >> 2, w4 = warp & 3;
  const int wf = (wg & 1) * 64, wn = (wg >> 1) * WN;  // this warpgroup's features and batch columns
  const int f0 = (g.m_inner ? (int)blockIdx.x / g.m_inner : (int)blockIdx.x) * BM;
  const int m0 = (g.m_inner ? (int)blockIdx.x % g.m_inner : (int)blockIdx.z) * NB;
  const int c_begin = blockIdx.y * g.cps;
  const int c_end = min(g.nchunks, c_begin + g.cps);
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sbase = (raw + 1023) & ~1023u;  // the swizzle atoms need 1024-byte alignment
  char* smem = smem_raw + (sbase - raw);

  float acc[WN / 2];
#pragma unroll
  for (int i = 0; i < WN / 2; ++i) acc[i] = 0.f;

  if (AMODE == A_ROWS) griddep_wait_and_release();
  Loader<T, AMODE, NB, NWG * 128> ld(g, f0, m0, tid);
  const int nloc = c_end - c_begin, rot = chunk_rotation(nloc);
  gemm_prologue<AMODE, C::STAGES, C::STAGE_BYTES, C::A_BYTES>(g, ld, sbase, c_begin, nloc, rot);
  if (C::STAGES - 1 < nloc) ld.prefetch_rows(g, chunk_of(C::STAGES - 1, c_begin, nloc, rot));
  for (int i = 0; i < nloc; ++i) {
    cp_async_wait<C::STAGES - 2>();
    // cp.async wrote through the generic proxy; wgmma reads through the async proxy
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const uint32_t sa = sbase + (i % C::STAGES) * C::STAGE_BYTES;
    const uint32_t sb = sa + C::A_BYTES;
    uint32_t af[BK / 16][4];
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) load_afrag<AMODE>(sa, wf + w4 * 16, ks, lane, af[ks]);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) Wgmma<T, WN>::mma(acc, af[ks], sw128_desc(sb + wn * 128 + ks * 32));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    {  // refill the slot of step i-1 (free since the barrier above) while the tensor cores work
      const int in = i + C::STAGES - 1;
      if (in < nloc) {
        const uint32_t st = sbase + (in % C::STAGES) * C::STAGE_BYTES;
        ld.load(g, st, st + C::A_BYTES, chunk_of(in, c_begin, nloc, rot));
      }
      cp_async_commit();
      if (in + 1 < nloc) ld.prefetch_rows(g, chunk_of(in + 1, c_begin, nloc, rot));
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  }
  cp_async_wait<0>();
  __syncthreads();
  float* S = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < WN / 8; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int f = wf + w4 * 16 + (lane >> 2) + ((j >> 1) << 3);
      const int n = wn + i * 8 + (lane & 3) * 2 + (j & 1);
      S[n * SLD + f] = acc[i * 4 + j];
    }
  __syncthreads();
  gemm_epilogue<T, NB, NWG * 128>(g, S, f0, m0, blockIdx.z * gridDim.x + blockIdx.x, gridDim.y, blockIdx.y);
#else
  __trap();  // launched only where wgmma_usable()
#endif
}

// ---- warp-specialized, persistent wgmma path (sm_90a; nb = 256 by default, 64/128 for experiments) ------
// Warpgroups 0-1 consume (wgmma m64nNB, 64 features each), warpgroup 2 produces: it fills a ring of
// stage buffers, the gathered weight rows with cp.async (each producer thread arrives on the stage's "full"
// mbarrier when its copies have landed: cp.async.mbarrier.arrive.noinc) and the activation tile with one
// TMA box (its bytes complete the same barrier's transaction count); each consumer warp arrives on the
// stage's "empty" mbarrier once its wgmma group on that stage has completed. The main loop has no CTA-wide
// barrier, so the copy issue of later stages, the MMAs of one warpgroup and the MMA wait of the other
// overlap (ncu on the lock-step kernels at batch 256: 0.25-0.46 eligible warps per scheduler).
// Stream-K: one CTA per SM walks an equal share of all (tile, K chunk) steps, so there is no partial last
// wave (at batch 256 the grids were 2.2-3.3 waves: fc1 of OPT-66B at 100%, 288 tiles on 132 SMs). A tile
// that two or more CTAs share is summed through the fp32 workspace (atomics, as split-K). A fix-up in which
// the tile's first CTA waited on flags for the others' plain-stored partials measured slower (H100 sweep at
// batch 256: OPT-66B at 50% 0.457 -> 0.698 ms), so it was not kept.
__device__ __forceinline__ int sk_cta_of(int64_t step, int64_t total, int G) { return (int)(((step + 1) * G - 1) / total); }

template <typename T, int AMODE, int NB>
__global__ void __launch_bounds__(384, 1) sel_gemm_ws_kernel(const __grid_constant__ GemmArgs g) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Cfg<NB, true>;
  constexpr int ST = C::STAGES;
  extern __shared__ __align__(1024) char smem_raw[];
  __shared__ __align__(8) uint64_t bars[2 * ST];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tilesF = (g.F + BM - 1) / BM, nc = g.nchunks, G = gridDim.x;
  const int64_t total = (int64_t)tilesF * ((g.M + NB - 1) / NB) * nc;
  const int64_t s_begin = (int64_t)blockIdx.x * total / G, s_end = (int64_t)(blockIdx.x + 1) * total / G;
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sbase = (raw + 1023) & ~1023u;  // the swizzle atoms need 1024-byte alignment
  float* S = reinterpret_cast<float*>(smem_raw + (sbase - raw));
  const uint32_t full = smem_u32(&bars[0]), empty = smem_u32(&bars[ST]);
  if (tid == 0) {
    for (int s = 0; s < ST; ++s) {
      mbar_init(full + 8 * s, 129);  // one cp.async arrival per producer thread + the TMA issuer's
      mbar_init(empty + 8 * s, 8);   // one arrival per consumer warp
    }
  }
  __syncthreads();
  const bool early = AMODE == A_COLS && g.early_a;
  // One tile's share of this CTA's steps: K chunks [cb, cb + nloc) of tile t.
  struct Seg {
    int t, cb, nloc, f0, m0;
  };
  auto seg_at = [&](int64_t step) {
    Seg q;
    q.t = (int)(step / nc);
    q.cb = (int)(step - (int64_t)q.t * nc);
    q.nloc = (int)(min(s_end, (int64_t)(q.t + 1) * nc) - step);
    q.f0 = (q.t % tilesF) * BM;
    q.m0 = (q.t / tilesF) * NB;
    return q;
  };
  // The two roles run separate loops: setmaxnreg applies only where no register is shared between them.
  if (warp >= 8) {  // producer: few registers, so that the consumers can hold 128 accumulators each
    if (NB == 256) asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n" ::: "memory");
    if (!early) griddep_wait_and_release();  // fc1's loader reads idx, written by the router
    int ring = 0;  // stages filled so far (ring slot and mbarrier parity)
    for (int64_t step = s_begin; step < s_end;) {
      const Seg q = seg_at(step);
      Loader<T, AMODE, NB, 128> ld(g, q.f0, q.m0, tid - 256);
      auto load_b = [&](int s, int c) {
        if (tid == 256) {
          mbar_arrive_expect_tx(full + 8 * s, C::B_BYTES);
          tma_load_2d(sbase + s * C::STAGE_BYTES + C::A_BYTES, &g.tmb, c * BK, q.m0, full + 8 * s);
        }
      };
      int i = 0;
      if (early && step == s_begin) {  // fc2: its first weight stages stream while fc1 finishes
        for (int j = 0; j < ST && j < q.nloc; ++j) ld.load_a(g, sbase + j * C::STAGE_BYTES, q.cb + j);
        griddep_wait_and_release();
        for (; i < ST && i < q.nloc; ++i) {
          mbar_arrive_cp_async(full + 8 * i);
          load_b(i, q.cb + i);
        }
      }
      if (i < q.nloc) ld.prefetch_rows(g, q.cb + i);
      for (; i < q.nloc; ++i) {
        const int r = ring + i, s = r % ST;
        if (r >= ST) mbar_wait(empty + 8 * s, ((r / ST) & 1) ^ 1);
        ld.load_a(g, sbase + s * C::STAGE_BYTES, q.cb + i);
        mbar_arrive_cp_async(full + 8 * s);
        load_b(s, q.cb + i);
        if (i + 1 < q.nloc) ld.prefetch_rows(g, q.cb + i + 1);
      }
      // the next tile's copies would overwrite the ring, which holds the fp32 tile during the epilogue
      asm volatile("bar.sync 2, 384;\n" ::: "memory");
      ring += q.nloc;
      step += q.nloc;
    }
    cp_async_wait<0>();
  } else {  // consumers
    if (NB == 256) asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
    griddep_wait_and_release();  // the epilogue reads what earlier kernels wrote (y when accumulating)
    const int wf = (warp >> 2) * 64 + (warp & 3) * 16;  // this warp's 16 features of the A fragments
    int ring = 0;
    for (int64_t step = s_begin; step < s_end;) {
      const Seg q = seg_at(step);
      float acc[NB / 2];
#pragma unroll
      for (int j = 0; j < NB / 2; ++j) acc[j] = 0.f;
      for (int i = 0; i < q.nloc; ++i) {
        const int r = ring + i, s = r % ST;
        mbar_wait(full + 8 * s, (r / ST) & 1);
        // the stage's weights were written through the generic proxy (cp.async); wgmma reads through the async one
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        const uint32_t sa = sbase + s * C::STAGE_BYTES;
        const uint32_t sb = sa + C::A_BYTES;
        uint32_t af[BK / 16][4];
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) load_afrag<AMODE>(sa, wf, ks, lane, af[ks]);
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) Wgmma<T, NB>::mma(acc, af[ks], sw128_desc(sb + ks * 32));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        if (lane == 0) mbar_arrive(empty + 8 * s);
      }
      // both consumer warpgroups are done with every stage of this tile, and every copy landed (each full
      // phase was seen), so the fp32 tile may overwrite the ring
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
#pragma unroll
      for (int i = 0; i < NB / 8; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int f = wf + (lane >> 2) + ((j >> 1) << 3);
          const int n = i * 8 + (lane & 3) * 2 + (j & 1);
          S[n * SLD + f] = acc[i * 4 + j];
        }
      asm volatile("bar.sync 1, 256;\n" ::: "memory");
      const int first = sk_cta_of((int64_t)q.t * nc, total, G), last = sk_cta_of((int64_t)q.t * nc + nc - 1, total, G);
      // a shared tile: every CTA adds its part into the fp32 slot of the tile's last CTA (unique: a CTA that
      // is the last of two tiles covers the second one whole); the last to arrive applies the epilogue
      gemm_epilogue<T, NB, 256, 1>(g, S, q.f0, q.m0, last, last - first + 1, (int)blockIdx.x - first);
      asm volatile("bar.sync 2, 384;\n" ::: "memory");  // the ring is free again
      ring += q.nloc;
      step += q.nloc;
    }
  }
#else
  __trap();  // launched only where wgmma_usable()
#endif
}

// Grid of the warp-specialized kernel (at most one CTA per resident slot): among one CTA per tile, s CTAs per
// tile (split-K) and one per slot (stream-K), the one with the least per-CTA time, counted in K steps: the
// steps of the busiest CTA plus SK_PARTIAL_STEPS for each of its segments that shares a tile with another CTA
// (H100 sweep at batch 256: OPT-6.7B fc1 at 100%, 128 tiles of 64 steps, took 0.079 ms on 128 CTAs and 0.125
// on 132, whose CTAs have two shared tiles each: ~20 steps of 1.2 us per shared tile; the fp32 atomic adds of
// all CTAs reach L2 at once). *split: some tile is shared (the workspace is needed).
constexpr int SK_PARTIAL_STEPS = 20;
int sk_cost(int64_t total, int nchunks, int G, bool* split) {
  int64_t worst = 0;
  *split = false;
  for (int c = 0; c < G; ++c) {
    const int64_t b = (int64_t)c * total / G, e = (int64_t)(c + 1) * total / G;
    int64_t cost = e - b;
    for (int64_t x = b; x < e;) {  // this CTA's segments, one per tile
      const int64_t t = x / nchunks, te = std::min(e, (t + 1) * nchunks);
      if (x != t * nchunks || te != (t + 1) * nchunks) {
        cost += SK_PARTIAL_STEPS;
        *split = true;
      }
      x = te;
    }
    worst = std::max(worst, cost);
  }
  return (int)std::min<int64_t>(worst, INT32_MAX);
}
int sk_grid(int tiles, int nchunks, int slots, bool* split) {
  const int64_t total = (int64_t)tiles * nchunks;
  const int maxg = (int)std::max<int64_t>(1, std::min<int64_t>(slots, (total + 3) / 4));  // >= 4 steps per CTA
  int best_g = maxg, best = INT32_MAX;
  auto consider = [&](int G) {
    bool sp;
    const int c = sk_cost(total, nchunks, G, &sp);
    if (c < best) {
      best = c;
      best_g = G;
    }
  };
  for (int s = 1; (int64_t)tiles * s <= maxg; ++s) consider(tiles * s);
  consider(maxg);
  sk_cost(total, nchunks, best_g, split);
  return best_g;
}

// ---- host side --------------------------------------------------------------------------------------
struct KInfo {
  const void* fn;
  int smem, nt, nb;
  bool wg;
  int stages;
  bool tma_b = false;  // reads B through the TMA map g.tmb
};

template <typename T, int AMODE, int ST, int NW>
KInfo pick_mma(int nb) {
  constexpr int NT = NW * 32;
  switch (nb) {
    case 8: return {(const void*)sel_gemm_mma_kernel<T, AMODE, 8, ST, NW>, Cfg<8, false, ST>::SMEM, NT, 8, false, ST};
    case 16: return {(const void*)sel_gemm_mma_kernel<T, AMODE, 16, ST, NW>, Cfg<16, false, ST>::SMEM, NT, 16, false, ST};
    case 32: return {(const void*)sel_gemm_mma_kernel<T, AMODE, 32, ST, NW>, Cfg<32, false, ST>::SMEM, NT, 32, false, ST};
    default: return {(const void*)sel_gemm_mma_kernel<T, AMODE, 64, ST, NW>, Cfg<64, false, ST>::SMEM, NT, 64, false, ST};
  }
}

// Kernel shapes of the wgmma path (chosen in gemm_plan). WG_TWO: two warpgroups (m64 x nb each); WG_PAIR:
// nb = 128, two CTAs per SM; WG_FOUR: nb = 256, four warpgroups of m64n128; WG_WS: nb = 256, warp-specialized
enum WgShape { WG_TWO = 0, WG_PAIR = 1, WG_FOUR = 2, WG_WS = 3 };

template <typename T, int AMODE>
KInfo pick_kernel(bool wg, int nb, int wg_shape, int mma_stages, int mma_warps) {
  if (wg) {
    if (wg_shape == WG_PAIR)
      return {(const void*)sel_gemm_wgmma_kernel<T, AMODE, 128, 2>, Cfg<128, true, 4, 2>::SMEM, 256, 128, true, Cfg<128, true, 4, 2>::STAGES};
    if (wg_shape == WG_WS) switch (nb) {
        case 64: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 64>, Cfg<64, true>::SMEM, 384, 64, true, Cfg<64, true>::STAGES, true};
        case 128: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 128>, Cfg<128, true>::SMEM, 384, 128, true, Cfg<128, true>::STAGES, true};
        default: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 256>, Cfg<256, true>::SMEM, 384, 256, true, Cfg<256, true>::STAGES, true};
      }
    if (wg_shape == WG_FOUR)
      return {(const void*)sel_gemm_wgmma_kernel<T, AMODE, 256, 1, 4>, Cfg<256, true>::SMEM, 512, 256, true, Cfg<256, true>::STAGES};
    switch (nb) {
      case 64: return {(const void*)sel_gemm_wgmma_kernel<T, AMODE, 64>, Cfg<64, true>::SMEM, 256, 64, true, Cfg<64, true>::STAGES};
      case 128: return {(const void*)sel_gemm_wgmma_kernel<T, AMODE, 128>, Cfg<128, true>::SMEM, 256, 128, true, Cfg<128, true>::STAGES};
      default: return {(const void*)sel_gemm_wgmma_kernel<T, AMODE, 256>, Cfg<256, true>::SMEM, 256, 256, true, Cfg<256, true>::STAGES};
    }
  }
  if (mma_stages == 4) return pick_mma<T, AMODE, 4, 4>(nb);
  return mma_warps == 8 ? pick_mma<T, AMODE, 3, 8>(nb) : pick_mma<T, AMODE, 3, 4>(nb);
}

template <typename T>
KInfo pick_t(int amode, bool wg, int nb, int wg_shape, int mma_stages, int mma_warps) {
  return amode == A_ROWS ? pick_kernel<T, A_ROWS>(wg, nb, wg_shape, mma_stages, mma_warps)
                         : pick_kernel<T, A_COLS>(wg, nb, wg_shape, mma_stages, mma_warps);
}

}  // namespace

bool wgmma_kernels_built() {
  cudaFuncAttributes a;
  if (cudaFuncGetAttributes(&a, (const void*)sel_gemm_wgmma_kernel<__half, A_ROWS, 256>) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.binaryVersion == 90 && a.ptxVersion >= 90;
}

int choose_splits(int tiles, int nchunks, int slots, int nb, double pen) {
  int best_s = 1;
  double best = 1e30;
  const int maxs = std::min(nchunks, 128);
  for (int s = 1; s <= maxs; ++s) {
    const int cps = cdiv(nchunks, s);
    if (cdiv(nchunks, cps) != s) continue;
    const double waves = (double)cdiv(tiles * s, slots);
    // a split CTA also adds its [nb x 128] fp32 tile into the workspace and the last one re-reads it:
    // charged as nb/4 chunk-equivalents, at most 16 (H100 sweep: at nb >= 64 a charge of 16 chose fewer
    // splits that were up to 40% faster, e.g. opt-6.7b fc2 at batch 256 and 5%; at nb = 8 the same charge
    // left 32 one-split CTAs streaming opt-6.7b's fc2 at 5% in 19 us instead of 12)
    const double cost = waves * (cps + 2.0 + (s > 1 ? pen * std::min(16.0, nb / 4.0) : 0.0));
    if (cost < best - 1e-9) {
      best = cost;
      best_s = s;
    }
  }
  return best_s;
}

// Tuning knobs for experiments (polar_cuda_set_tuning; initial values from the environment):
// POLAR_CUDA_MMA_STAGES = 3 (default: 4 CTAs/SM at small batch) or 4 (mma.sync pipeline depth), POLAR_CUDA_SPLIT_PENALTY (scale of
// the chunk-equivalents charged per split-K CTA for its partial tile), POLAR_CUDA_STORE_REDUCE (plain-store
// split-K reduction), POLAR_CUDA_NO_PDL (no programmatic dependent launch).
namespace {
int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}
double env_double(const char* name, double dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : dflt;
}
int g_mma_stages = -1;
int g_mma_warps = -1;
int g_wg_pair = -1;
int g_nb256 = -1;
double g_split_pen = -1;
bool g_pdl = std::getenv("POLAR_CUDA_NO_PDL") == nullptr;
// split-K reduction: fp32 atomics into one tile (default), or plain partial stores summed by the last CTA
// (measured 2-3x slower on H100 at batch 64-256: the last CTA's serial sum dominates)
int g_reduce_atomic = std::getenv("POLAR_CUDA_STORE_REDUCE") == nullptr;
void tuning_init() {
  if (g_mma_stages < 0) g_mma_stages = env_int("POLAR_CUDA_MMA_STAGES", 3) == 4 ? 4 : 3;
  if (g_split_pen < 0) g_split_pen = env_double("POLAR_CUDA_SPLIT_PENALTY", 1.0);
  // kernel at nb = 256 (POLAR_CUDA_NB256: 0 two warpgroups, 1 four, 2 by size (default, see gemm_plan), 3
  // warp-specialized). Four warpgroups against two, H100 sweep at batch 256: opt-6.7b at 25% fc1 0.067 ->
  // 0.057 ms and fc2 0.068 -> 0.058, at 100% 0.093/0.131 -> 0.088/0.122; opt-66b at 50% 0.303/0.301 ->
  // 0.298/0.298; opt-66b at 100% 2% slower
  if (g_nb256 < 0) {
    const int v = env_int("POLAR_CUDA_NB256", 2);
    g_nb256 = v >= 0 && v <= 3 ? v : 2;
  }
  if (g_wg_pair < 0) {  // POLAR_CUDA_WG_PAIR: 0 never, 1 at every batch > 64, unset/other: batch 65-128
    const int v = env_int("POLAR_CUDA_WG_PAIR", 2);
    g_wg_pair = v == 0 || v == 1 ? v : 2;
  }
  if (g_mma_warps < 0) {  // 0 = by batch tile (see gemm_plan)
    const int w = env_int("POLAR_CUDA_MMA_WARPS", 0);
    g_mma_warps = w == 4 || w == 8 ? w : 0;
  }
}
}  // namespace

// Path choice on sm_90 (POLAR_IMPL_AUTO), from per-fc times measured on an H100 (docs/benchmarks.md):
// wgmma (1 CTA/SM, 6 stages, nb = 64) beat mma.sync (3-4 CTAs/SM) for fc1 at batch 17-64 up to ~150 MB of
// gathered weights (opt-6.7b batch 64, density 1: 0.064 vs 0.085 ms) and at batch 9-16 up to ~50 MB, and
// for fc2 at batch 17-64 up to ~40 MB; above that mma.sync streamed better. Batch > 64 takes wgmma
// (nb = 128/256) except for small gathers (opt-6.7b batch 256 at 5%: mma.sync 0.035 + 0.023 ms vs wgmma
// 0.045 + 0.033, where each wgmma split CTA adds a 128 KB fp32 tile). A wgmma loop that kept one MMA group
// in flight (A from shared memory) measured the same as this one at batch 256 (the loop is not bound by the
// MMA wait there), so it was not kept.
bool auto_wgmma(int amode, int M, double a_bytes) {
  if (M > 64) return a_bytes > 16e6;  // small gathers at batch > 64: mma.sync (8 warps, nb = 64 x 4 tiles)
  if (M <= 8) return false;
  if (amode == A_ROWS) return a_bytes <= (M > 16 ? 150e6 : 50e6);
  return M > 16 && a_bytes <= 40e6;
}

struct GemmPlan {
  KInfo k;
  int occ, tilesF, tilesM, splits;
  int sk_ctas;  // > 0: the stream-K kernel's grid
  bool pdl;  // programmatic dependent launch (sm_90+)
  size_t cnt_bytes, bytes;
};

int gemm_plan(polar_dtype dt, int amode, GemmArgs& g, int impl, int splits_req, GemmPlan* pl, const char* who) {
  DevProps p;
  if (dev_props(&p)) return -1;
  const bool can_wg = wgmma_usable();
  if (impl == POLAR_IMPL_WGMMA && !can_wg)
    return polar_set_error("%s: the wgmma path needs an sm_90 GPU and a build with sm_90a; device is %d.%d", who,
                           p.major, p.minor);
  const bool wg = impl == POLAR_IMPL_WGMMA || (impl == POLAR_IMPL_AUTO && can_wg && auto_wgmma(amode, g.M, (double)g.F * g.K * 2));
  tuning_init();
  // wgmma pair: batch tiles of nb = 128, two CTAs per SM (3 stages each), batch tiles interleaved. Default
  // (g_wg_pair = 2) at batch 65-128, where it replaced one 5-stage CTA per SM: opt-66b batch 128 at 50%,
  // fc1 0.209 -> 0.186 ms, fc2 0.215 -> 0.176 (H100 sweep). At batch 256 it was mixed (opt-6.7b at 25%
  // 8-14% faster, opt-66b at 100% 26% slower than the nb = 256 CTA), so batch > 128 keeps that one.
  const bool pair = wg && g.M > 64 && (g_wg_pair == 1 || (g_wg_pair == 2 && g.M <= 128));
  const int nb = wg ? (g.M <= 64 ? 64 : (g.M <= 128 || pair) ? 128 : 256) : (g.M <= 8 ? 8 : g.M <= 16 ? 16 : g.M <= 32 ? 32 : 64);
  const int mma_stages = g_mma_stages;
  // nb = 256: the warp-specialized stream-K kernel from 100 MB of gathered weights (H100 sweep at batch 256:
  // OPT-66B at 50% 0.597 -> 0.457 ms for fc1 + fc2, at 100% 1.018 -> 0.820; OPT-6.7B at 100% fc1 0.089 ->
  // 0.079), four lock-step warpgroups below (OPT-6.7B at 25%, 34 MB: 0.116 vs 0.127). It needs K > 0 (with no
  // K step it would write nothing).
  // POLAR_CUDA_NB256=3 (experiments): the warp-specialized kernel at every batch tile of the wgmma path. At
  // nb = 64 / 128 it measured no gain (H100 sweep: OPT-66B batch 64 at 50% 0.336 ms vs 0.304 for mma.sync;
  // batch 128 at 50% 0.372 vs 0.369 for the wgmma pair), so the default keeps it at nb = 256.
  const bool ws = g.K > 0 && (g_nb256 == 3 || (g_nb256 == 2 && nb == 256 && (double)g.F * g.K * 2 >= 100e6));
  const bool pair_k = pair && !ws;
  const int wg_shape = ws ? WG_WS : pair_k ? WG_PAIR : nb != 256 ? WG_TWO : g_nb256 == 0 ? WG_TWO : WG_FOUR;
  // mma.sync: 8 warps where a warp's 64-column batch tile leaves few warps to hide latencies (nb = 64: 2-5%
  // faster on the H100 at batch 64, up to 25% at batch 256); 4 warps below (8 were ~1% slower at batch 16)
  const int mma_warps = g_mma_warps > 0 ? g_mma_warps : (nb >= 64 ? 8 : 4);
  KInfo k{};
  if (with_dtype(dt, who, [&](auto t) {
        k = pick_t<decltype(t)>(amode, wg, nb, wg_shape, mma_stages, mma_warps);
        return 0;
      }))
    return -1;
  int occ = 1;
  if (kernel_occupancy(k.fn, k.nt, k.smem, &occ)) return -1;
  if (occ < 1) return polar_set_error("%s: selective GEMM kernel (%d threads, %d B shared memory) cannot run on this GPU", who, k.nt, k.smem);
  const int tilesF = cdiv(g.F, BM), tilesM = cdiv(g.M, nb), tiles = tilesF * tilesM;
  g.nchunks = cdiv(g.K, BK);
  int s = 1;
  if (g.nchunks > 1) {
    const double pen = g_split_pen;
    s = splits_req > 0 ? std::min(splits_req, g.nchunks) : choose_splits(tiles, g.nchunks, occ * p.sms, nb, pen);
  }
  g.cps = g.nchunks > 0 ? cdiv(g.nchunks, s) : 0;
  if (g.nchunks > 0) s = cdiv(g.nchunks, g.cps);
  pl->sk_ctas = 0;
  if (k.tma_b) {  // stream-K (splits_req > 0: at most that many CTAs per tile, e.g. 1 = one CTA per tile)
    bool split = false;
    const int slots = splits_req > 0 ? std::min(occ * p.sms, tiles * splits_req) : occ * p.sms;
    pl->sk_ctas = sk_grid(tiles, g.nchunks, slots, &split);
    s = 1;
    pl->cnt_bytes = align_up((size_t)pl->sk_ctas * 4, 256);
    pl->bytes = split ? pl->cnt_bytes + (size_t)pl->sk_ctas * nb * BM * 4 : 0;
  }
  pl->k = k;
  pl->pdl = p.major >= 9 && g_pdl;
  pl->occ = occ;
  pl->tilesF = tilesF;
  pl->tilesM = tilesM;
  pl->splits = s;
  g.m_inner = pair_k ? tilesM : 0;
  if (!k.tma_b) {
    pl->cnt_bytes = align_up((size_t)tiles * 4, 256);
    pl->bytes = s > 1 ? pl->cnt_bytes + (size_t)tiles * nb * BM * 4 * (g_reduce_atomic ? 1 : s) : 0;
  }
  g.reduce_atomic = k.tma_b ? 1 : g_reduce_atomic;  // the stream-K kernel's workspace holds one tile per slot
  return 0;
}

// TMA map of B ([M rows][K], row stride ldb) in boxes of [nb rows][64 k] with the 128-byte swizzle of the
// wgmma descriptors; rows and k outside the matrix are zero-filled. The encoder is a driver function, fetched
// once through the runtime (no link against libcuda).
using EncodeTiled = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                 const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                 CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
int encode_b_map(GemmArgs* g, int nb, const char* who) {
  static EncodeTiled enc = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<EncodeTiled>(fn);
  }();
  if (!enc) return polar_set_error("%s: the CUDA driver has no cuTensorMapEncodeTiled (needed by the batch-256 kernel)", who);
  const cuuint64_t dims[2] = {(cuuint64_t)g->K, (cuuint64_t)g->M};
  const cuuint64_t strides[1] = {(cuuint64_t)g->ldb * 2};
  const cuuint32_t box[2] = {BK, (cuuint32_t)nb}, es[2] = {1, 1};
  const CUresult r = enc(&g->tmb, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(g->B), dims, strides, box, es,
                         CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                         CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return polar_set_error("%s: cuTensorMapEncodeTiled failed (error %d) for B of %d x %d, row stride %lld", who, (int)r, g->M,
                           g->K, (long long)g->ldb);
  return 0;
}

int gemm_run(polar_dtype dt, int amode, GemmArgs g, int impl, int splits_req, cudaStream_t st, void* ws,
             size_t ws_bytes, size_t* need, const char* who) {
  GemmPlan pl;
  if (gemm_plan(dt, amode, g, impl, splits_req, &pl, who)) return -1;
  if (need) {
    *need = pl.bytes;
    return 0;
  }
  if (g.M <= 0 || g.F <= 0) return 0;
  if (pl.bytes > 0) {  // split-K, or stream-K with a shared tile
    POLAR_REQ(ws != nullptr && ws_bytes >= pl.bytes, "%s: expected a workspace of at least %zu bytes, received %zu%s", who,
              pl.bytes, ws_bytes, ws ? "" : " (NULL)");
    g.counters = static_cast<unsigned*>(ws);
    g.ws = reinterpret_cast<float*>(static_cast<char*>(ws) + pl.cnt_bytes);
  }
  if (pl.k.tma_b && encode_b_map(&g, pl.k.nb, who)) return -1;
  void* args[] = {&g};
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = pl.sk_ctas  ? dim3(pl.sk_ctas)
                : g.m_inner ? dim3(pl.tilesF * pl.tilesM, pl.splits, 1)
                            : dim3(pl.tilesF, pl.splits, pl.tilesM);
  cfg.blockDim = dim3(pl.k.nt);
  cfg.dynamicSmemBytes = (size_t)pl.k.smem;
  cfg.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = pl.pdl ? 1 : 0;
  POLAR_CU(cudaLaunchKernelExC(&cfg, pl.k.fn, args));
  return 0;
}

int gemm_describe(polar_dtype dt, int amode, GemmArgs g, int impl, int splits_req, char* buf, size_t n, const char* who) {
  GemmPlan pl;
  if (gemm_plan(dt, amode, g, impl, splits_req, &pl, who)) return -1;
  if (pl.sk_ctas) {
    const double steps = (double)pl.tilesF * pl.tilesM * g.nchunks / pl.sk_ctas;
    std::snprintf(buf, n, "wgmma-ws nb=%d stages=%d stream-k ctas=%d tiles=%d steps/cta=%.1f ws=%zu", pl.k.nb, pl.k.stages,
                  pl.sk_ctas, pl.tilesF * pl.tilesM, steps, pl.bytes);
    return 0;
  }
  std::snprintf(buf, n, "%s%s nb=%d stages=%d grid=%dx%dx%d chunks/cta=%d ctas/sm=%d ws=%zu reduce=%s", pl.k.wg ? "wgmma" : "mma", !pl.k.wg && pl.k.nt == 256 ? "-8w" : g.m_inner ? "-pair" : pl.k.nt == 512 ? "-4wg" : "",
                pl.k.nb, pl.k.stages, pl.tilesF, pl.splits, pl.tilesM, g.cps, pl.occ, pl.bytes, g_reduce_atomic ? "atomic" : "store");
  return 0;
}

}  // namespace polar_cuda

// ---- C API --------------------------------------------------------------------------------------------
using namespace polar_cuda;

namespace {
int check_fc1(const polar_cuda_sel_fc1_params* p, GemmArgs* g) {
  const char* who = "polar_cuda_sel_fc1";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->m >= 0 && p->d >= 0 && p->k >= 0, "%s: expected m, d, k >= 0, received %d, %d, %d", who, p->m, p->d, p->k);
  POLAR_REQ(p->d % 8 == 0, "%s: expected d a multiple of 8, received %d", who, p->d);
  POLAR_REQ(p->k % 8 == 0, "%s: expected k a multiple of 8, received %d", who, p->k);
  POLAR_REQ(p->ldx >= p->d && p->ldx % 8 == 0, "%s: expected ldx >= d and a multiple of 8, received %lld", who, (long long)p->ldx);
  POLAR_REQ(p->ldw1 >= p->d && p->ldw1 % 8 == 0, "%s: expected ldw1 >= d and a multiple of 8, received %lld", who, (long long)p->ldw1);
  POLAR_REQ(p->ldh >= p->k && p->ldh % 8 == 0, "%s: expected ldh >= k and a multiple of 8, received %lld", who, (long long)p->ldh);
  POLAR_REQ(p->m == 0 || p->k == 0 || (p->x && p->w1 && p->h), "%s: expected x, w1 and h, received NULL", who);
  POLAR_REQ(aligned16(p->x) && aligned16(p->w1) && aligned16(p->h), "%s: expected 16-byte aligned x, w1 and h", who);
  POLAR_REQ(p->act == POLAR_ACT_NONE || p->act == POLAR_ACT_RELU, "%s: expected act 0 or 1, received %d", who, p->act);
  *g = GemmArgs{};
  g->A = p->w1; g->lda = p->ldw1; g->idx = p->idx;
  g->B = p->x; g->ldb = p->ldx;
  g->bias = p->b1; g->bias_gather = 1;
  g->C = p->h; g->ldc = p->ldh;
  g->act = p->act; g->epi = EPI_STORE;
  g->M = p->m; g->F = p->k; g->K = p->d;
  return 0;
}
int check_fc2(const polar_cuda_sel_fc2_params* p, GemmArgs* g) {
  const char* who = "polar_cuda_sel_fc2";
  POLAR_REQ(p != nullptr, "%s: expected a params struct, received NULL", who);
  POLAR_REQ(p->m >= 0 && p->d >= 0 && p->k >= 0, "%s: expected m, d, k >= 0, received %d, %d, %d", who, p->m, p->d, p->k);
  POLAR_REQ(p->d % 8 == 0, "%s: expected d a multiple of 8, received %d", who, p->d);
  POLAR_REQ(p->k % 8 == 0, "%s: expected k a multiple of 8, received %d", who, p->k);
  POLAR_REQ(p->ldh >= p->k && p->ldh % 8 == 0, "%s: expected ldh >= k and a multiple of 8, received %lld", who, (long long)p->ldh);
  POLAR_REQ(p->ldw2t >= p->d && p->ldw2t % 8 == 0, "%s: expected ldw2t >= d and a multiple of 8, received %lld", who, (long long)p->ldw2t);
  POLAR_REQ(p->ldy >= p->d && p->ldy % 8 == 0, "%s: expected ldy >= d and a multiple of 8, received %lld", who, (long long)p->ldy);
  POLAR_REQ(p->m == 0 || p->d == 0 || (p->h && p->w2t && p->y), "%s: expected h, w2t and y, received NULL", who);
  POLAR_REQ(aligned16(p->h) && aligned16(p->w2t) && aligned16(p->y), "%s: expected 16-byte aligned h, w2t and y", who);
  *g = GemmArgs{};
  g->A = p->w2t; g->lda = p->ldw2t; g->idx = p->idx;
  g->B = p->h; g->ldb = p->ldh;
  g->bias = p->b2; g->bias_gather = 0;
  g->C = p->y; g->ldc = p->ldy; g->accumulate = p->accumulate ? 1 : 0;
  g->early_a = p->after_fc1 ? 1 : 0;
  g->act = POLAR_ACT_NONE; g->epi = EPI_STORE;
  g->M = p->m; g->F = p->d; g->K = p->k;
  return 0;
}
}  // namespace

extern "C" size_t polar_cuda_sel_fc1_workspace(const polar_cuda_sel_fc1_params* p) {
  GemmArgs g;
  size_t need = 0;
  if (check_fc1(p, &g) || gemm_run(p->dtype, A_ROWS, g, p->impl, p->splits, nullptr, nullptr, 0, &need, "polar_cuda_sel_fc1"))
    return 0;
  return need;
}
extern "C" int polar_cuda_sel_fc1(const polar_cuda_sel_fc1_params* p) {
  GemmArgs g;
  if (check_fc1(p, &g)) return -1;
  return gemm_run(p->dtype, A_ROWS, g, p->impl, p->splits, (cudaStream_t)p->stream, p->workspace, p->workspace_bytes,
                  nullptr, "polar_cuda_sel_fc1");
}
extern "C" size_t polar_cuda_sel_fc2_workspace(const polar_cuda_sel_fc2_params* p) {
  GemmArgs g;
  size_t need = 0;
  if (check_fc2(p, &g) || gemm_run(p->dtype, A_COLS, g, p->impl, p->splits, nullptr, nullptr, 0, &need, "polar_cuda_sel_fc2"))
    return 0;
  return need;
}
extern "C" int polar_cuda_sel_fc2(const polar_cuda_sel_fc2_params* p) {
  GemmArgs g;
  if (check_fc2(p, &g)) return -1;
  return gemm_run(p->dtype, A_COLS, g, p->impl, p->splits, (cudaStream_t)p->stream, p->workspace, p->workspace_bytes,
                  nullptr, "polar_cuda_sel_fc2");
}

extern "C" int polar_cuda_sel_fc1_describe(const polar_cuda_sel_fc1_params* p, char* buf, size_t n) {
  GemmArgs g;
  if (check_fc1(p, &g)) return -1;
  return gemm_describe(p->dtype, A_ROWS, g, p->impl, p->splits, buf, n, "polar_cuda_sel_fc1");
}
extern "C" int polar_cuda_sel_fc2_describe(const polar_cuda_sel_fc2_params* p, char* buf, size_t n) {
  GemmArgs g;
  if (check_fc2(p, &g)) return -1;
  return gemm_describe(p->dtype, A_COLS, g, p->impl, p->splits, buf, n, "polar_cuda_sel_fc2");
}

extern "C" void polar_cuda_set_reduce_atomic(int on) { polar_cuda::g_reduce_atomic = on ? 1 : 0; }
extern "C" void polar_cuda_set_wgmma_nb256(int shape) {
  polar_cuda::tuning_init();
  if (shape >= 0 && shape <= 3) polar_cuda::g_nb256 = shape;
}
extern "C" void polar_cuda_set_wgmma_pair(int on) {
  polar_cuda::tuning_init();
  polar_cuda::g_wg_pair = on == 0 || on == 1 ? on : 2;
}
extern "C" void polar_cuda_set_mma_warps(int warps) {
  polar_cuda::tuning_init();
  polar_cuda::g_mma_warps = warps == 4 || warps == 8 ? warps : 0;
}
extern "C" void polar_cuda_set_tuning(int mma_stages, double split_penalty) {
  polar_cuda::tuning_init();
  if (mma_stages == 3 || mma_stages == 4) polar_cuda::g_mma_stages = mma_stages;
  if (split_penalty >= 0) polar_cuda::g_split_pen = split_penalty;
}
