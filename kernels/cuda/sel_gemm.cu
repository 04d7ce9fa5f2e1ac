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
// and leaves the workspace zeroed again; where 2-8 splits fit on the GPU as thread-block clusters, they are
// summed through distributed shared memory instead (no workspace). At batch tiles of 256 with large gathers,
// a third kernel (sel_gemm_ws.cuh): warp-specialized, TMA for the activations, a stream-K grid.
// Files: sel_gemm_tile.cuh (loader, epilogue, helpers shared by the kernels), sel_gemm_ws.cuh (that kernel),
// this file (the mma.sync and lock-step wgmma kernels, planning, the C API).
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common.cuh"
#include "sel_gemm.cuh"
#include "sel_gemm_tile.cuh"
#include "sel_gemm_ws.cuh"
#include "wgmma_gen.cuh"

namespace polar_cuda {

namespace {
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
  tile_epilogue<T, NB, NW * 32>(g, S, f0, m0);
}

// ---- wgmma path (sm_90a) ---------------------------------------------------------------------------

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
  tile_epilogue<T, NB, NWG * 128>(g, S, f0, m0);
#else
  __trap();  // launched only where wgmma_usable()
#endif
}

// ---- host side --------------------------------------------------------------------------------------
struct KInfo {
  const void* fn;
  int smem, nt, nb;
  bool wg;
  int stages;
  bool tma_b = false;  // reads B through the TMA map g.tmb
  const void* fn_whole = nullptr;  // the warp-specialized kernel without stream-K's shared tiles (its SK = false)
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
        case 64: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 64, true>, WsSmem<64>::BYTES, 384, 64, true, Cfg<64, true>::STAGES, true,
                         (const void*)sel_gemm_ws_kernel<T, AMODE, 64, false>};
        case 128: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 128, true>, WsSmem<128>::BYTES, 384, 128, true, Cfg<128, true>::STAGES, true,
                          (const void*)sel_gemm_ws_kernel<T, AMODE, 128, false>};
        default: return {(const void*)sel_gemm_ws_kernel<T, AMODE, 256, true>, WsSmem<256>::BYTES, 384, 256, true, Cfg<256, true>::STAGES, true,
                         (const void*)sel_gemm_ws_kernel<T, AMODE, 256, false>};
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

// Cost of a split-K grid in chunk-equivalents: waves x (chunks per CTA + 2 fixed + the split charge).
// A split CTA also adds its [nb x 128] fp32 tile into the workspace and the last one re-reads it: charged as
// nb/4 chunk-equivalents, at most 16, times pen (H100 sweep: at nb >= 64 a charge of 16 chose fewer splits
// that were up to 40% faster, e.g. opt-6.7b fc2 at batch 256 and 5%; at nb = 8 the same charge left 32
// one-split CTAs streaming opt-6.7b's fc2 at 5% in 19 us instead of 12).
// cap: the charge's upper bound before pen (PlanProfile::fc2_nb64_charge for fc2 at nb = 64, else 16).
double split_cost(int tiles, int s, int cps, int slots, int nb, double pen, double cap = 16.0) {
  const double waves = (double)cdiv(tiles * s, slots);
  return waves * (cps + 2.0 + (s > 1 ? pen * std::min(cap, nb / 4.0) : 0.0));
}

int choose_splits(int tiles, int nchunks, int slots, int nb, double pen, int max_splits, double* cost_out, double cap = 16.0) {
  int best_s = 1;
  double best = 1e30;
  const int maxs = std::min(nchunks, max_splits);
  for (int s = 1; s <= maxs; ++s) {
    const int cps = cdiv(nchunks, s);
    if (cdiv(nchunks, cps) != s) continue;
    const double cost = split_cost(tiles, s, cps, slots, nb, pen, cap);
    if (cost < best - 1e-9) {
      best = cost;
      best_s = s;
    }
  }
  if (cost_out) *cost_out = best;
  return best_s;
}

// Tuning knobs for experiments (polar_cuda_set_tuning), initial values from the environment:
// POLAR_CUDA_MMA_STAGES = 3 (default: 4 CTAs/SM at small batch) or 4 (mma.sync pipeline depth),
// POLAR_CUDA_SPLIT_PENALTY (scale of the chunk-equivalents charged per split-K CTA for its partial tile),
// POLAR_CUDA_MMA_WARPS, POLAR_CUDA_WG_PAIR, POLAR_CUDA_NB256 (kernel shapes, see gemm_plan),
// POLAR_CUDA_STORE_REDUCE (plain-store split-K reduction), POLAR_CUDA_NO_PDL (no programmatic dependent
// launch), POLAR_CUDA_ROUTER_SPLITS (the head router's split-K count), POLAR_CUDA_CLUSTER_REDUCE=0 (split-K
// always through the workspace), POLAR_CUDA_PLAN=h100|h200 (the per-GPU planner choices, see PlanProfile),
// POLAR_CUDA_ROUTER_FUSED=1 (the MLP router's LOGIT path as one cooperative kernel, router_fused.cuh),
// POLAR_CUDA_HEAD_ROUTER_FUSED=0 (the head router as split-K GEMM + top-k kernel instead of head_router.cuh's),
// POLAR_CUDA_SELECT_CAP (the multi-CTA top-k's two-barrier limit, router_select.cuh; 0 = always three passes),
// POLAR_CUDA_ROUTER_FOLD_SUM=0 (the MLP router's token sum as its own kernel before the first GEMV),
// POLAR_CUDA_ROUTER_HIST_IN_GEMV=0 (the multi-CTA select makes its first-pass histogram itself), POLAR_CUDA_ATTN_STAGES=2|3
// (the decode attention's pipeline depth instead of the planner's).
namespace {
int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}
double env_double(const char* name, double dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : dflt;
}
polar_cuda_tuning& tune() {
  static polar_cuda_tuning t = [] {
    polar_cuda_tuning d;
    d.mma_stages = env_int("POLAR_CUDA_MMA_STAGES", 3) == 4 ? 4 : 3;
    d.split_penalty = std::max(0.0, env_double("POLAR_CUDA_SPLIT_PENALTY", 1.0));
    const int w = env_int("POLAR_CUDA_MMA_WARPS", 0);  // 0 = by batch tile (see gemm_plan)
    d.mma_warps = w == 4 || w == 8 ? w : 0;
    const int pr = env_int("POLAR_CUDA_WG_PAIR", 2);  // 0 never, 1 at every batch > 64, else batch 65-128
    d.wgmma_pair = pr == 0 || pr == 1 ? pr : 2;
    // kernel at nb = 256: 0 two warpgroups, 1 four, 2 by size (default, see gemm_plan), 3 warp-specialized.
    // Four warpgroups against two, H100 sweep at batch 256: opt-6.7b at 25% fc1 0.067 -> 0.057 ms and fc2
    // 0.068 -> 0.058, at 100% 0.093/0.131 -> 0.088/0.122; opt-66b at 50% 0.303/0.301 -> 0.298/0.298; opt-66b
    // at 100% 2% slower
    const int v = env_int("POLAR_CUDA_NB256", 2);
    d.nb256 = v >= 0 && v <= 3 ? v : 2;
    // split-K reduction: fp32 atomics into one tile (default), or plain partial stores summed by the last CTA
    // (measured 2-3x slower on H100 at batch 64-256: the last CTA's serial sum dominates)
    d.reduce_atomic = std::getenv("POLAR_CUDA_STORE_REDUCE") == nullptr;
    d.pdl = std::getenv("POLAR_CUDA_NO_PDL") == nullptr;
    d.router_splits = std::max(0, env_int("POLAR_CUDA_ROUTER_SPLITS", 0));
    d.cluster_reduce = env_int("POLAR_CUDA_CLUSTER_REDUCE", 1) ? 1 : 0;
    const char* pp = std::getenv("POLAR_CUDA_PLAN");
    d.plan_profile = pp && !std::strcmp(pp, "h100") ? 1 : pp && !std::strcmp(pp, "h200") ? 2 : 0;
    d.router_fused = env_int("POLAR_CUDA_ROUTER_FUSED", 0) ? 1 : 0;
    d.head_router_fused = env_int("POLAR_CUDA_HEAD_ROUTER_FUSED", 1) ? 1 : 0;
    d.select_cap = std::min(8192, std::max(0, env_int("POLAR_CUDA_SELECT_CAP", 8192)));  // 8192: MT_CAP (router_select.cuh)
    d.router_fold_sum = env_int("POLAR_CUDA_ROUTER_FOLD_SUM", 1) ? 1 : 0;
    d.router_hist_in_gemv = env_int("POLAR_CUDA_ROUTER_HIST_IN_GEMV", 1) ? 1 : 0;
    const int as = env_int("POLAR_CUDA_ATTN_STAGES", 0);
    d.attn_stages = as == 2 || as == 3 ? as : 0;
    d.sk_partial = std::max(0, env_int("POLAR_CUDA_SK_PARTIAL", 0));
    return d;
  }();
  return t;
}
}  // namespace

const polar_cuda_tuning& tuning() { return tune(); }

// Path choice on sm_90 (POLAR_IMPL_AUTO), from per-fc times measured on an H100 (docs/benchmarks.md):
// wgmma (1 CTA/SM, 6 stages, nb = 64) beat mma.sync (3-4 CTAs/SM) for fc1 at batch 17-64 up to ~150 MB of
// gathered weights (opt-6.7b batch 64, density 1: 0.064 vs 0.085 ms) and at batch 9-16 up to ~50 MB, and
// for fc2 at batch 17-64 up to ~40 MB; above that mma.sync streamed better. Batch > 64 takes wgmma
// (nb = 128/256) except for small gathers (opt-6.7b batch 256 at 5%: mma.sync 0.035 + 0.023 ms vs wgmma
// 0.045 + 0.033, where each wgmma split CTA adds a 128 KB fp32 tile). A wgmma loop that kept one MMA group
// in flight (A from shared memory) measured the same as this one at batch 256 (the loop is not bound by the
// MMA wait there), so it was not kept.
// With cluster split-K (read-flush sweep): fc1 at batch 256 takes wgmma from ~10 MB (opt-6.7b at 10%, 13.6 MB:
// 0.025 ms vs 0.036 for mma.sync; at 5%, 7.3 MB, mma.sync 0.023 vs 0.024), fc2 keeps mma.sync up to 16 MB
// (opt-6.7b at 10%: mma.sync with 2 clustered splits 0.029 vs wgmma 0.043).
//
// PlanProfile: the choices that measured differently on the two GPUs this was tuned on. The H100's (80 GB HBM3,
// 5120-bit bus, 3.35 TB/s) are the ones above. On an H200 (141 GB HBM3e, 6144-bit bus, 4.8 TB/s; read-flush
// sweep of every batch-16/64/256 point, fifth session, docs/benchmarks.md):
//  - mma.sync with 4 warps beat 8 at every nb = 64 point (OPT-66B batch 64 at 25%: fc1 0.0705 -> 0.0634 ms,
//    fc2 0.0771 -> 0.0692; at 5% fc2 0.0253 -> 0.0236), where the H100 had 8 ahead by 2-5%;
//  - fc2 at batch 17-64 keeps wgmma only up to 16 MB (OPT-6.7B batch 64 at 25%, 33.5 MB: mma.sync 0.0235 vs
//    wgmma 0.0253; OPT-66B at 5%, 35 MB: 0.0236 vs 0.0284; at 10%, 13.6 MB, wgmma 0.0157 vs 0.0158);
//  - fc2 at batch > 64 takes wgmma from 10 MB like fc1 (OPT-6.7B batch 256 at 10%: 0.0242 vs 0.0260);
//  - fc1 at batch 33-64 from 150 MB takes the warp-specialized stream-K kernel (nb = 64, one CTA per SM):
//    OPT-66B batch 64 at 50% 0.1315 -> 0.1011 ms, at 100% 0.2482 -> 0.1861; at 25% (170 MB) mma.sync stayed
//    ahead (0.0634 vs 0.0677) until the kernel's shared tiles left through registers (fourteenth session:
//    0.0639 vs 0.0541; at or below 150 MB the lock-step wgmma kernel is ahead: OPT-6.7B batch 64 at 100%, 134
//    MB, 0.0403 vs 0.0424), and for fc2 the kernel was slower everywhere (0.1526 vs 0.1171 at 50%; with its
//    row indices through shared memory, tenth session, still 0.126 vs 0.118; fourteenth session 0.1153 vs
//    0.1071 for mma.sync).
//  - batch tiles of 256 take the warp-specialized kernel at every size (eleventh session, read-flush sweep, with
//    its cluster split-K and the tenth session's fc2 row-index ring), where the H100 profile keeps it from
//    100 MB: OPT-66B at 5% fc1 0.0334 -> 0.0274 ms (8 CTAs per tile in clusters), fc2 0.0452 -> 0.0368 (72
//    tiles, one CTA each), at 10% fc1 0.0504 -> 0.0383, fc2 0.0720 -> 0.0616; OPT-6.7B at 25% fc1 0.0360 ->
//    0.0290, fc2 0.0402 -> 0.0339, at 50% fc2 0.0663 -> 0.0531, at 5% fc1 (7.3 MB, mma.sync before) 0.0216 ->
//    0.0199.
//  - fc2 at batch tiles of 64 charges a workspace split-K CTA 11 chunk-steps instead of 16 (thirteenth session,
//    after fc2's copies got cheaper, Loader::LPR): OPT-6.7B batch 64 at 100% then takes 32 x 12 CTAs through the
//    workspace instead of 32 x 8 in clusters, fc1 + fc2 0.0963 -> 0.0890 ms (three runs each, one call); the one
//    other plan it moves, OPT-66B batch 64 at 25% (72 x 5 instead of 72 x 4), measured the same (0.1220 / 0.1222).
//    A charge of 11 for fc1 as well moved that point's fc1 too, which measured 3% slower in the sequence.
// A GPU whose name has "H200" in it (H200, GH200) gets the H200's, any other the H100's (the one measured most).
struct PlanProfile {
  const char* name;
  int mma_warps_nb64;     // mma.sync warps at batch tiles of 64
  double fc2_wgmma_max;   // fc2 at batch 17-64: wgmma up to this many bytes of gathered weights
  double wide_wgmma_min;  // fc2 at batch > 64: wgmma from this many bytes (fc1: 10 MB on both)
  double fc1_ws_min;      // fc1 at batch 33-64: the warp-specialized stream-K kernel from this many bytes (0: never)
  double ws256_min;       // batch tiles of 256: the warp-specialized kernel from this many bytes (0: at every size)
  double fc2_nb64_charge;  // fc2 at batch tiles of 64: split_cost's charge per workspace split-K CTA (fc1: 16)
};
constexpr PlanProfile kPlanH100 = {"h100", 8, 40e6, 16e6, 0, 100e6, 16};
constexpr PlanProfile kPlanH200 = {"h200", 4, 16e6, 10e6, 150e6, 0, 11};
const PlanProfile& plan_profile(const DevProps& p, const polar_cuda_tuning& tu) {
  if (tu.plan_profile == 1) return kPlanH100;
  if (tu.plan_profile == 2) return kPlanH200;
  return p.h200 ? kPlanH200 : kPlanH100;
}

bool fc1_ws_m64(int M, double a_bytes, const PlanProfile& pp) {
  return M > 32 && M <= 64 && pp.fc1_ws_min > 0 && a_bytes >= pp.fc1_ws_min;
}
bool auto_wgmma(int amode, int M, double a_bytes, const PlanProfile& pp) {
  if (M > 128 && pp.ws256_min <= 0) return true;  // the warp-specialized kernel at every size
  if (M > 64) return a_bytes > (amode == A_ROWS ? 10e6 : pp.wide_wgmma_min);  // small gathers: mma.sync (nb = 64 x 4 tiles)
  if (M <= 8) return false;
  if (amode == A_ROWS) return a_bytes <= (M > 16 ? 150e6 : 50e6) || fc1_ws_m64(M, a_bytes, pp);
  return M > 16 && a_bytes <= pp.fc2_wgmma_max;
}

struct GemmPlan {
  KInfo k;
  int occ, tilesF, tilesM, splits;
  int sk_ctas;  // > 0: the stream-K kernel's grid
  int cluster;  // > 0: launched as clusters of (1, cluster, 1), the splits of a tile
  bool pdl;  // programmatic dependent launch (sm_90+)
  size_t cnt_bytes, bytes;
  const char* profile;  // PlanProfile::name
};

int gemm_plan(polar_dtype dt, int amode, GemmArgs& g, int impl, int splits_req, GemmPlan* pl, const char* who) {
  DevProps p;
  if (dev_props(&p)) return -1;
  const bool can_wg = wgmma_usable();
  if (impl == POLAR_IMPL_WGMMA && !can_wg)
    return polar_set_error("%s: the wgmma path needs an sm_90 GPU and a build with sm_90a; device is %d.%d", who,
                           p.major, p.minor);
  const polar_cuda_tuning& tu = tune();
  const PlanProfile& pp = plan_profile(p, tu);
  const double a_bytes = (double)g.F * g.K * 2;
  const bool wg = impl == POLAR_IMPL_WGMMA || (impl == POLAR_IMPL_AUTO && can_wg && auto_wgmma(amode, g.M, a_bytes, pp));
  // wgmma pair: batch tiles of nb = 128, two CTAs per SM (3 stages each), batch tiles interleaved. Default
  // (wgmma_pair = 2) at batch 65-128, where it replaced one 5-stage CTA per SM: opt-66b batch 128 at 50%,
  // fc1 0.209 -> 0.186 ms, fc2 0.215 -> 0.176 (H100 sweep). At batch 256 it was mixed (opt-6.7b at 25%
  // 8-14% faster, opt-66b at 100% 26% slower than the nb = 256 CTA), so batch > 128 keeps that one.
  const bool pair = wg && g.M > 64 && (tu.wgmma_pair == 1 || (tu.wgmma_pair == 2 && g.M <= 128));
  const int nb = wg ? (g.M <= 64 ? 64 : (g.M <= 128 || pair) ? 128 : 256) : (g.M <= 8 ? 8 : g.M <= 16 ? 16 : g.M <= 32 ? 32 : 64);
  const int mma_stages = tu.mma_stages;
  // nb = 256: the warp-specialized stream-K kernel from 100 MB of gathered weights (on the H200 at every size:
  // PlanProfile; H100 sweep at batch 256: OPT-66B at 50% 0.597 -> 0.457 ms for fc1 + fc2, at 100% 1.018 ->
  // 0.820; OPT-6.7B at 100% fc1 0.089 -> 0.079), four lock-step warpgroups below (OPT-6.7B at 25%, 34 MB: 0.116
  // vs 0.127). It needs K > 0 (with no K step it would write nothing).
  // POLAR_CUDA_NB256=3 (experiments): the warp-specialized kernel at every batch tile of the wgmma path. At
  // nb = 64 / 128 it measured no gain (H100 sweep: OPT-66B batch 64 at 50% 0.336 ms vs 0.304 for mma.sync;
  // batch 128 at 50% 0.372 vs 0.369 for the wgmma pair), so the default keeps it at nb = 256.
  // (PlanProfile: on the H200 also fc1 at batch 33-64 from 150 MB, chosen by auto only)
  const bool ws = g.K > 0 && (tu.nb256 == 3 || (tu.nb256 == 2 && nb == 256 && a_bytes >= pp.ws256_min) ||
                              (tu.nb256 == 2 && impl == POLAR_IMPL_AUTO && wg && amode == A_ROWS && fc1_ws_m64(g.M, a_bytes, pp)));
  const bool pair_k = pair && !ws;
  const int wg_shape = ws ? WG_WS : pair_k ? WG_PAIR : nb != 256 ? WG_TWO : tu.nb256 == 0 ? WG_TWO : WG_FOUR;
  // mma.sync: on the H100 8 warps where a warp's 64-column batch tile leaves few warps to hide latencies (nb = 64:
  // 2-5% faster at batch 64, up to 25% at batch 256), 4 warps below (8 were ~1% slower at batch 16); on the H200
  // 4 everywhere (PlanProfile)
  const int mma_warps = tu.mma_warps > 0 ? tu.mma_warps : (nb >= 64 ? pp.mma_warps_nb64 : 4);
  // the kernel of a wgmma shape (the mma.sync ones by nb / warps) and how many of its CTAs fit on an SM
  auto pick = [&](int shape, KInfo* out, int* o) {
    if (with_dtype(dt, who, [&](auto t) {
          *out = pick_t<decltype(t)>(amode, wg, nb, shape, mma_stages, mma_warps);
          return 0;
        }))
      return -1;
    return kernel_occupancy(out->fn, out->nt, out->smem, o);
  };
  KInfo k{};
  int occ = 1;
  if (pick(wg_shape, &k, &occ)) return -1;
  if (occ < 1) return polar_set_error("%s: selective GEMM kernel (%d threads, %d B shared memory) cannot run on this GPU", who, k.nt, k.smem);
  const int tilesF = cdiv(g.F, BM), tilesM = cdiv(g.M, nb), tiles = tilesF * tilesM;
  g.nchunks = cdiv(g.K, BK);
  // cluster split-K (tuning cluster_reduce, on by default): the mma.sync and lock-step wgmma kernels with 2-8 splits, where
  // the clusters that fit at once (GPC sizes: fewer CTAs than SMs x occupancy) take no more waves than the
  // separate CTAs would (H100 sweep without this check: OPT-6.7B fc2 at batch 256 / 100%, 32 clusters of 4,
  // 0.124 -> 0.193 ms; with it never slower, and OPT-66B fc1 at batch 256 / 10% 0.085 -> 0.062, at 5% 0.061
  // -> 0.042, OPT-6.7B fc1 at batch 256 / 50% 0.080 -> 0.054)
  const bool cl_kernel = tu.cluster_reduce && !k.tma_b && p.major >= 9;
  auto cluster_fits = [&](const KInfo& kk, int sc, bool* fits) {
    int nclu = 0;
    if (cluster_occupancy(kk.fn, kk.nt, kk.smem, sc, &nclu)) return -1;
    *fits = nclu > 0 && cdiv(tiles, nclu) <= cdiv(tiles * sc, occ * p.sms);
    return 0;
  };
  int s = 1;
  if (g.nchunks > 1 && !k.tma_b) {  // (the stream-K kernel sizes its grid below)
    const double pen = tu.split_penalty;
    double cost = 0;
    const double cap = amode == A_COLS && nb == 64 ? pp.fc2_nb64_charge : 16.0;
    s = splits_req > 0 ? std::min(splits_req, g.nchunks) : choose_splits(tiles, g.nchunks, occ * p.sms, nb, pen, 128, &cost, cap);
    if (splits_req <= 0 && cl_kernel) {
      // a cluster's partial tiles are summed in shared memory, not through the fp32 workspace: charged a quarter
      // (H100 sweep, OPT-66B fc2 at batch 256 / 10%: 3 splits in clusters 0.088 -> 0.079 ms), the cheapest split
      // count of 2-8 whose clusters fit (OPT-6.7B fc2 at batch 256 / 10%: 2 in clusters 0.029 ms, where 3 did not
      // fit and went through the workspace, 0.043)
      for (int sc = 2; sc <= std::min(8, g.nchunks); ++sc) {
        const int cps = cdiv(g.nchunks, sc);
        if (cdiv(g.nchunks, cps) != sc) continue;
        const double c = split_cost(tiles, sc, cps, occ * p.sms, nb, pen * 0.25);
        if (c >= cost - 1e-9) continue;
        bool fits = false;
        if (cluster_fits(k, sc, &fits)) return -1;
        if (fits) {
          cost = c;
          s = sc;
        }
      }
    }
  }
  g.cps = g.nchunks > 0 ? cdiv(g.nchunks, s) : 0;
  if (g.nchunks > 0) s = cdiv(g.nchunks, g.cps);
  pl->sk_ctas = 0;
  int ws_cluster = 0;  // > 0: the warp-specialized kernel with cluster split-K (this many CTAs per tile)
  if (k.tma_b) {  // stream-K (splits_req > 0: at most that many CTAs per tile, e.g. 1 = one CTA per tile)
    bool split = false;
    const int slots = splits_req > 0 ? std::min(occ * p.sms, tiles * splits_req) : occ * p.sms;
    int sk_best = 0;
    pl->sk_ctas = sk_grid(tiles, g.nchunks, slots, tu.sk_partial, &split, &sk_best);
    // 2-8 CTAs per tile as one cluster each (all clusters at once), where cheaper than stream-K's grid (with
    // splits_req: that many, if they fit)
    if (tu.cluster_reduce && p.major >= 9 && splits_req != 1) {
      const int lo = splits_req > 1 ? splits_req : 2, hi = std::min(splits_req > 1 ? splits_req : 8, g.nchunks);
      int best = splits_req > 1 ? INT32_MAX : sk_best;
      for (int sc = lo; sc <= hi && tiles * sc <= occ * p.sms; ++sc) {
        const int c = cdiv(g.nchunks, sc) + WS_CLUSTER_STEPS;
        if (c >= best) continue;
        bool fits = false;  // (one wave: tiles * sc <= slots, so all clusters at once)
        if (cluster_fits(k, sc, &fits)) return -1;
        if (!fits) continue;
        best = c;
        ws_cluster = sc;
      }
    }
    s = 1;
    if (ws_cluster) {
      pl->sk_ctas = tiles * ws_cluster;
      pl->cnt_bytes = pl->bytes = 0;
    } else {
      pl->cnt_bytes = align_up((size_t)pl->sk_ctas * 4, 256);
      // one fp32 partial tile per CTA (the first segment of a CTA that starts inside a tile; sel_gemm_ws.cuh)
      pl->bytes = split ? pl->cnt_bytes + (size_t)pl->sk_ctas * nb * BM * 4 : 0;
    }
    // a shared tile's first CTA spins until the tile's other CTAs have stored their parts, so every CTA of such a
    // grid must be resident at once (sk_grid keeps it within the slots; this guards that against later changes)
    if (split && !ws_cluster && pl->sk_ctas > occ * p.sms)
      return polar_set_error("%s: stream-K grid of %d CTAs exceeds the %d CTAs the GPU holds at once (internal planner error)",
                             who, pl->sk_ctas, occ * p.sms);
    // no tile shared through the workspace: the instance without that code (the one with it measured 1-2% slower
    // on such plans, fourteenth session; correct for both)
    if (k.fn_whole && (ws_cluster || !split)) {
      int o2 = 0;
      if (kernel_occupancy(k.fn_whole, k.nt, k.smem, &o2)) return -1;
      if (o2 == occ) k.fn = k.fn_whole;
    }
  }
  // programmatic launch, except for fc2 right after an fc1 on the persistent stream-K kernel where fc2 runs
  // on another kernel: fc2's CTAs then started as fc1's left the SMs and measured slower than a plain launch
  // (H200, OPT-66B batch 64 at 50%: fc1 + fc2 0.2203 ms vs 0.2148, at 100% 0.4064 vs 0.4048; at every point
  // without that pairing the programmatic launch was ahead, 4% in the geometric mean)
  const bool after_ws_fc1 = amode == A_COLS && g.early_a && can_wg && fc1_ws_m64(g.M, a_bytes, pp) && !k.tma_b;
  pl->pdl = pdl_on(p) && !after_ws_fc1;
  pl->profile = pp.name;
  pl->occ = occ;
  pl->tilesF = tilesF;
  pl->tilesM = tilesM;
  pl->splits = s;
  g.m_inner = pair_k ? tilesM : 0;
  g.cluster_reduce = ws_cluster > 0;
  if (cl_kernel && s >= 2 && s <= 8) {
    bool fits = false;
    if (cluster_fits(k, s, &fits)) return -1;
    g.cluster_reduce = fits;
  }
  // nb = 256 without workspace traffic (one CTA per tile, or the splits in clusters): two warpgroups of
  // m64n256 beat four of m64n128 (read-flush sweep, OPT-66B at batch 256 / 5%: fc1 0.039 -> 0.036 ms, fc2
  // 0.048 -> 0.046; at 10% fc1 0.058 -> 0.053); with workspace split-K four stayed ahead (OPT-6.7B at 25%,
  // 4 splits: 0.053 vs 0.059)
  if (wg_shape == WG_FOUR && tu.nb256 == 2 && (s == 1 || g.cluster_reduce)) {
    KInfo k2{};
    int occ2 = 0;
    if (pick(WG_TWO, &k2, &occ2)) return -1;
    bool fits = true;
    if (g.cluster_reduce && cluster_fits(k2, s, &fits)) return -1;
    if (occ2 == occ && fits) k = k2;
  }
  pl->k = k;
  pl->cluster = ws_cluster ? ws_cluster : g.cluster_reduce ? s : 0;
  if (!k.tma_b) {
    pl->cnt_bytes = align_up((size_t)tiles * 4, 256);
    pl->bytes = s > 1 && !g.cluster_reduce ? pl->cnt_bytes + (size_t)tiles * nb * BM * 4 * (tu.reduce_atomic ? 1 : s) : 0;
  }
  g.reduce_atomic = tu.reduce_atomic;  // (the stream-K kernel's shared tiles have their own scheme)
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
  cfg.gridDim = pl.sk_ctas  ? (pl.cluster ? dim3(pl.sk_ctas / pl.cluster, pl.cluster) : dim3(pl.sk_ctas))
                : g.m_inner ? dim3(pl.tilesF * pl.tilesM, pl.splits, 1)
                            : dim3(pl.tilesF, pl.splits, pl.tilesM);
  cfg.blockDim = dim3(pl.k.nt);
  cfg.dynamicSmemBytes = (size_t)pl.k.smem;
  cfg.stream = st;
  cudaLaunchAttribute at[3];
  cfg.attrs = at;
  cfg.numAttrs = launch_attrs(at, pl.pdl, false, pl.cluster);
  POLAR_CU(cudaLaunchKernelExC(&cfg, pl.k.fn, args));
  return 0;
}

int gemm_describe(polar_dtype dt, int amode, GemmArgs g, int impl, int splits_req, char* buf, size_t n, const char* who) {
  GemmPlan pl;
  if (gemm_plan(dt, amode, g, impl, splits_req, &pl, who)) return -1;
  if (pl.sk_ctas) {
    const double steps = (double)pl.tilesF * pl.tilesM * g.nchunks / pl.sk_ctas;
    std::snprintf(buf, n, "wgmma-ws nb=%d stages=%d %s ctas=%d tiles=%d steps/cta=%.1f ws=%zu plan=%s", pl.k.nb,
                  pl.k.stages, pl.cluster ? "cluster-k" : "stream-k", pl.sk_ctas, pl.tilesF * pl.tilesM, steps, pl.bytes, pl.profile);
    return 0;
  }
  std::snprintf(buf, n, "%s%s nb=%d stages=%d grid=%dx%dx%d chunks/cta=%d ctas/sm=%d ws=%zu reduce=%s plan=%s", pl.k.wg ? "wgmma" : "mma", !pl.k.wg && pl.k.nt == 256 ? "-8w" : g.m_inner ? "-pair" : pl.k.nt == 512 ? "-4wg" : "",
                pl.k.nb, pl.k.stages, pl.tilesF, pl.splits, pl.tilesM, g.cps, pl.occ, pl.bytes, g.cluster_reduce ? "cluster" : g.reduce_atomic ? "atomic" : "store", pl.profile);
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

extern "C" void polar_cuda_get_tuning(polar_cuda_tuning* t) {
  if (t) *t = polar_cuda::tune();
}
extern "C" void polar_cuda_set_tuning(const polar_cuda_tuning* t) {
  if (!t) return;
  polar_cuda_tuning& c = polar_cuda::tune();
  if (t->mma_stages == 3 || t->mma_stages == 4) c.mma_stages = t->mma_stages;
  if (t->split_penalty >= 0) c.split_penalty = t->split_penalty;
  if (t->mma_warps == 0 || t->mma_warps == 4 || t->mma_warps == 8) c.mma_warps = t->mma_warps;
  if (t->wgmma_pair >= 0 && t->wgmma_pair <= 2) c.wgmma_pair = t->wgmma_pair;
  if (t->nb256 >= 0 && t->nb256 <= 3) c.nb256 = t->nb256;
  if (t->reduce_atomic == 0 || t->reduce_atomic == 1) c.reduce_atomic = t->reduce_atomic;
  if (t->pdl == 0 || t->pdl == 1) c.pdl = t->pdl;
  if (t->router_splits >= 0) c.router_splits = t->router_splits;
  if (t->cluster_reduce == 0 || t->cluster_reduce == 1) c.cluster_reduce = t->cluster_reduce;
  if (t->plan_profile >= 0 && t->plan_profile <= 2) c.plan_profile = t->plan_profile;
  if (t->router_fused == 0 || t->router_fused == 1) c.router_fused = t->router_fused;
  if (t->head_router_fused == 0 || t->head_router_fused == 1) c.head_router_fused = t->head_router_fused;
  if (t->select_cap >= 0 && t->select_cap <= 8192) c.select_cap = t->select_cap;
  if (t->router_fold_sum == 0 || t->router_fold_sum == 1) c.router_fold_sum = t->router_fold_sum;
  if (t->router_hist_in_gemv == 0 || t->router_hist_in_gemv == 1) c.router_hist_in_gemv = t->router_hist_in_gemv;
  if (t->attn_stages == 0 || t->attn_stages == 2 || t->attn_stages == 3) c.attn_stages = t->attn_stages;
  if (t->sk_partial >= 0) c.sk_partial = t->sk_partial;
}
